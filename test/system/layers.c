/*
 * layers: the machine and the layers of the hostile-host system tests (contract in layers.h).
 */
#include "test/system/layers.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "drivers/netvsc/netvsc.h"
#include "hv/hv.h"
#include "hv/vmbus/vmbus.h"
#include "kernel/app.h"
#include "kernel/cmdline.h"
#include "kernel/devreg.h"
#include "kernel/netdev.h"
#include "kernel/thread.h"
#include "kmcl/channel.h"
#include "test/hosted/hosted.h"
#include "test/lib/test_util.h"

#define PAGE 4096u
#define LD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define ST(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)
#define BUMP(x) __atomic_add_fetch(&(x), 1, __ATOMIC_ACQ_REL)

/* ---- failures ---- */

static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;
static char fail_text[8192];
static size_t fail_len;
static uint32_t fail_count;
void (*layer_on_fail)(const char *line);

void layer_fail(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&fail_lock);
    size_t n = strlen(line);
    if (fail_len + n + 2 < sizeof fail_text) {
        memcpy(fail_text + fail_len, line, n);
        fail_len += n;
        fail_text[fail_len++] = '\n';
        fail_text[fail_len] = '\0';
    }
    fail_count++;
    pthread_mutex_unlock(&fail_lock);
    if (layer_on_fail)
        layer_on_fail(line);
}

uint32_t layer_failures(void)
{
    pthread_mutex_lock(&fail_lock);
    uint32_t n = fail_count;
    pthread_mutex_unlock(&fail_lock);
    return n;
}

const char *layer_failure_text(void)
{
    return fail_text;
}

static void default_hung(const char *step, unsigned limit_ms)
{
    fprintf(stderr, "%s: the guest's wait did not end in %u ms\n", step, limit_ms);
    _exit(3);
}
void (*layer_hung)(const char *step, unsigned limit_ms) = default_hung;

/* A guest call's result is OK or a clear error: one of kernel/status.h's statuses. Test thread. */
static void clear_status(const char *what, status_t s)
{
    if ((unsigned)s >= STATUS__COUNT)
        layer_fail("%s returned %d: not a status", what, (int)s);
}

/* ---- guest jobs under a deadline ---- */

/* Once the host has rescinded a channel, the guest's waits must end promptly: sends fail at once
 * (issue 13 item 5), nothing waits for an answer a rescinded channel never gets. */
#define AFTER_RESCIND_MS 2000u

struct jobw {
    void (*fn)(void *);
    void *arg;
    int done;
};

static void jobw_main(void *a)
{
    struct jobw *w = a;
    w->fn(w->arg);
    __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
}

static uint64_t host_rescinds(void)
{
    if (!machine.vb)
        return 0;
    struct hvsim_vmbus_stats h;
    hvsim_vmbus_get_stats(machine.vb, &h);
    return h.rescinds;
}

void guest_run(const char *step, void (*fn)(void *arg), void *arg, unsigned limit_ms)
{
    struct jobw w = { fn, arg, 0 };
    struct thread *t;
    if (thread_create(step, jobw_main, &w, 0, &t) != STATUS_OK) {
        layer_fail("%s: no job", step);
        return;
    }
    int64_t t0 = now_ns(), end = t0 + (int64_t)limit_ms * 1000000;
    while (!__atomic_load_n(&w.done, __ATOMIC_ACQUIRE)) {
        int64_t now = now_ns();
        if (!machine.rescind_seen_ns && host_rescinds() != 0)
            machine.rescind_seen_ns = now;
        int64_t since = machine.rescind_seen_ns > t0 ? machine.rescind_seen_ns : t0;
        if (now > end)
            layer_hung(step, limit_ms);
        if (machine.rescind_seen_ns && now - since > (int64_t)AFTER_RESCIND_MS * 1000000) {
            char what[160];
            snprintf(what, sizeof what, "%s (after the host's rescind, every wait ends within 2 s)", step);
            layer_hung(what, AFTER_RESCIND_MS);
        }
        sleep_us(500);
    }
    thread_join(t);
}

/* ---- the machine ---- */

struct machine machine;
struct device_faults layer_faults;
bool layer_honest_ranges = true;

/* The VSPs' callbacks, wrapped: device-level faults on the server's thread. */
struct dev_wrap {
    struct hvsim_vmbus_device real;
    uint32_t signals; /* server thread */
};
#define MAX_DEVS 16
static struct hvsim_vmbus_device devs[MAX_DEVS];
static struct dev_wrap wraps[MAX_DEVS];

static void w_open(void *ctx, struct hvsim_vmbus_channel *ch, void *in_ring, uint32_t in_bytes, void *out_ring,
                   uint32_t out_bytes)
{
    struct dev_wrap *w = ctx;
    w->real.on_open(w->real.ctx, ch, in_ring, in_bytes, out_ring, out_bytes);
}

static void w_close(void *ctx, struct hvsim_vmbus_channel *ch)
{
    struct dev_wrap *w = ctx;
    w->real.on_close(w->real.ctx, ch);
}

static void w_signal(void *ctx, struct hvsim_vmbus_channel *ch)
{
    struct dev_wrap *w = ctx;
    if (LD(layer_faults.stop_reading))
        return;
    uint32_t every = LD(layer_faults.stall_every);
    if (every && ++w->signals % every == 0)
        sleep_us((long)LD(layer_faults.stall_ms) * 1000);
    w->real.on_signal(w->real.ctx, ch);
}

static struct hvsim_vmbus_device wrap(uint32_t i, struct hvsim_vmbus_device d)
{
    if (!d.on_open || !d.on_close || !d.on_signal)
        return d;
    wraps[i] = (struct dev_wrap){ .real = d };
    d.on_open = w_open;
    d.on_close = w_close;
    d.on_signal = w_signal;
    d.ctx = &wraps[i];
    return d;
}

struct init_call {
    status_t status;
};

/* netvsc is a vmbus_driver linked into the test (VMBUS_DRIVER): vmbus_init probes the NIC. The
 * layers bring the NIC up themselves, under the cell's hazards, after the bus is up and its pages
 * counted (layer_netvsc's up: vmbus_driver_register); so the probe at vmbus_init is made to fail at
 * its first step, before it says anything to the host: a one-page ring, which kmcl refuses
 * (kmcl_channel_init_set_ring_buffer_page_count). The NIC stays offered and unbound, as it was
 * before netvsc was a driver; the failed probe frees what it took. */
static const struct netvsc_config nv_parked = { .ring_pages = 1 };

/* The kernel command line netvsc reads when unconfigured (the image's comes from the loader): empty. */
static struct cmdline layers_cmdline;
const struct cmdline *kernel_cmdline(void) { return &layers_cmdline; }

static void init_job(void *arg)
{
    netvsc_configure(&nv_parked);
    ((struct init_call *)arg)->status = vmbus_init(0);
}

static void netvsp_log(void *ctx, const char *line)
{
    (void)ctx;
    if (getenv("VERBOSE"))
        fprintf(stderr, "hvsim: %s\n", line);
}

static void peer_sink(void *ctx, const uint8_t *f, uint32_t len);

bool machine_start(const struct machine_config *cfg)
{
    hosted_log_quiet(!getenv("VERBOSE"));
    struct hvsim_config hc = { .queue_depth = cfg->queue_depth };
    machine.rescind_seen_ns = 0;
    hosted_start(LAYERS_VPS, LAYERS_RAM, &hc);
    hosted_log_clear();
    if (hv_init() != STATUS_OK) {
        layer_fail("hv_init failed");
        return false;
    }
    machine.vsp = hvsim_vsp_test_create();
    struct hvsim_netvsp_config nc = { .queues = 2, .log = netvsp_log };
    machine.nvsp = hvsim_netvsp_create(&nc);
    if (!machine.vsp || !machine.nvsp) {
        layer_fail("no VSP instances");
        return false;
    }
    hvsim_netvsp_set_backend(machine.nvsp, peer_sink, NULL);
    uint32_t n = hvsim_vmbus_default_device_count < MAX_DEVS ? hvsim_vmbus_default_device_count : MAX_DEVS;
    for (uint32_t i = 0; i < n; i++) {
        struct hvsim_vmbus_device d = hvsim_vmbus_default_devices[i];
        if (vmbus_guid_equal(&d.type, &(struct vmbus_guid)VMBUS_GUID_NIC))
            d = hvsim_netvsp_device(machine.nvsp);
        else if (vmbus_guid_equal(&d.type, &(struct vmbus_guid)VMBUS_GUID_HVSIM_TEST))
            d = hvsim_vsp_test_device(machine.vsp);
        devs[i] = wrap(i, d);
    }
    struct hvsim_vmbus_config c = { .hazards = cfg->vmbus_hazards, .response_delay_us = cfg->response_delay_us,
                                    .devices = devs, .device_count = n, .rescind_device = cfg->rescind_device,
                                    .rescind_after_ms = cfg->rescind_after_ms };
    machine.vb = hvsim_vmbus_create(hosted_sim(), &c);
    if (!machine.vb) {
        layer_fail("no VMBus server");
        return false;
    }
    struct init_call ic = { STATUS_OK };
    guest_run("vmbus_init", init_job, &ic, 30000);
    if (ic.status != STATUS_OK) {
        layer_fail("vmbus_init: %s", status_name(ic.status));
        return false;
    }
    machine.pages_at_start = hosted_pages_in_use();
    return true;
}

void machine_stop(void)
{
    hosted_power_off();
    if (machine.vb)
        hvsim_vmbus_destroy(machine.vb);
    machine.vb = NULL;
    hvsim_netvsp_destroy(machine.nvsp);
    machine.nvsp = NULL;
    hvsim_vsp_test_destroy(machine.vsp);
    machine.vsp = NULL;
    hosted_stop();
}

/* ---- finding channels (any thread: the bus lock orders it with the DPCs) ---- */

struct find {
    struct vmbus_guid type;
    bool sub;
    uint32_t relid;
    struct vmbus_channel *ch;
};

static void find_one(struct vmbus_channel *ch, void *ctx)
{
    struct find *f = ctx;
    if (f->relid || !vmbus_guid_equal(&vmbus_channel_offer(ch)->if_type, &f->type) || vmbus_channel_rescinded(ch))
        return;
    if ((vmbus_channel_sub_index(ch) != 0) != f->sub)
        return;
    f->relid = vmbus_channel_relid(ch);
    f->ch = ch;
}

static struct vmbus_channel *find_channel(struct vmbus_guid type, bool sub, uint32_t *relid)
{
    struct find f = { .type = type, .sub = sub };
    vmbus_for_each_channel(find_one, &f);
    if (relid)
        *relid = f.relid;
    return f.ch;
}

uint32_t layer_primary_relid(const struct layer *l)
{
    uint32_t relid = 0;
    (void)find_channel(l->type, false, &relid);
    return relid;
}

uint32_t layer_sub_relid(const struct layer *l)
{
    uint32_t relid = 0;
    (void)find_channel(l->type, true, &relid);
    return relid;
}

/* Every byte of a delivery is read: ASan sees a read past a heap copy. */
static void touch(const void *buf, uint32_t len)
{
    const volatile uint8_t *p = buf;
    uint8_t x = 0;
    for (uint32_t i = 0; i < len; i++)
        x ^= p[i];
    (void)x;
}

/* ---- kmcl: the test device's primary and one sub-channel ---- */

#define KL_CHANNELS 2
#define KL_ECHOES 16
#define KL_DATA 100
#define KL_MAX_ECHO 480u

struct kl_echo {
    struct kmcl_packet *pkt;
    struct kl_chan *c;
    uint32_t tag, len;
    int busy; /* sent, its routine has not run */
    uint8_t buf[KL_MAX_ECHO];
};

struct kl_chan {
    struct kmcl_channel *ch;
    struct vmbus_channel *vch;
    struct kmcl_channel *rescind_to; /* under kl_lock: what the driver's rescind hands the rescind to */
    status_t up, sync;
    uint32_t cpu;
    const uint8_t *ring_lo, *ring_hi; /* the inbound ring's data area */
    struct kl_echo echo[KL_ECHOES];
    uint32_t sent, data_want;
    uint32_t taken_after_rescind, waited_after_rescind_ms; /* issue 13 item 5: sends fail at once */
    status_t odd_status; /* a send's result that is no status (0: none) */
    bool tried_after_rescind; /* once is enough: later rounds leave the channel alone */
    /* from the callbacks (atomics) */
    uint32_t answers, done_ok, cancelled, other_status, bad, range, data, order, hello, unknown, next_seq;
};

static struct kl_chan kl[KL_CHANNELS];
static bool kl_content = true;
static struct layer_stats kl_errors;

static uint8_t kl_byte(uint32_t tag, uint32_t k)
{
    return (uint8_t)(tag * 31u + k * 7u);
}

static bool echo_matches(const struct kl_echo *e, const uint8_t *b, uint32_t len)
{
    return len >= e->len && len <= ((e->len + 7) & ~7u) && memcmp(b, e->buf, e->len) == 0;
}

static void kl_on_packet(struct kmcl_channel *ch, struct kmcl_incoming *pkt, const void *buf, uint32_t len,
                         uint32_t flags)
{
    (void)flags;
    struct kl_chan *c = *(struct kl_chan **)kmcl_channel_get_pointer_to_client_context(ch);
    const uint8_t *b = buf, *lo = __atomic_load_n(&c->ring_lo, __ATOMIC_ACQUIRE), *hi = LD(c->ring_hi);
    if (lo && b >= lo && b < hi && (size_t)(hi - b) < len)
        BUMP(c->range); /* in place, but running off the ring */
    if (lo && len > (size_t)(hi - lo))
        BUMP(c->range);
    else
        touch(b, len);
    uint32_t op = 0, arg = 0;
    if (len >= 8) {
        memcpy(&op, b, 4);
        memcpy(&arg, b + 4, 4);
    }
    if (op == HVSIM_VSP_TEST_OP_ECHO) {
        uint32_t slot = arg & 0xffff;
        bool ok = slot < KL_ECHOES && c->echo[slot].tag == arg && echo_matches(&c->echo[slot], b, len);
        BUMP(*(ok || !kl_content ? &c->answers : &c->bad));
    } else if (op == HVSIM_VSP_TEST_OP_DATA) {
        uint32_t want = LD(c->next_seq);
        bool ok = arg == want || (arg == 0 && want == KL_DATA); /* each batch counts from 0 */
        if (!ok && kl_content)
            BUMP(c->order);
        ST(c->next_seq, arg + 1);
        for (uint32_t k = 8; ok && k < len; k++)
            ok = b[k] == (uint8_t)(arg + k);
        if (!ok && kl_content)
            BUMP(c->bad);
        BUMP(c->data);
    } else if (op == HVSIM_VSP_TEST_OP_HELLO) {
        BUMP(c->hello);
    } else if (kl_content) {
        BUMP(c->unknown);
    }
    kmcl_channel_packet_complete(pkt, NULL, 0);
}

static void kl_routine(struct kmcl_packet *pkt, status_t status, const void *buf, uint32_t len)
{
    struct kl_echo *e = kmcl_packet_get_context(pkt);
    struct kl_chan *c = e->c;
    if (status == STATUS_OK) {
        bool ok = echo_matches(e, buf, len);
        if (len)
            touch(buf, len);
        BUMP(*(ok || !kl_content ? &c->done_ok : &c->bad));
    } else if (status == STATUS_CANCELLED) {
        BUMP(c->cancelled);
    } else {
        BUMP(c->other_status);
    }
    ST(e->busy, 0);
}

/* The layer's VMBus driver for the test device, bound while the layer is up, so that a rescind
 * reaches kmcl (kmcl_channel_rescind, what a real driver's rescind does): the bus calls rescind()
 * at DISPATCH for the primary and for each sub-channel. kl_lock orders it with the publishing of
 * kl[i].ch and its cleanup (kmcl's rule: no cleanup while a rescind is being handed over). */
static spinlock_t kl_lock = SPINLOCK_INIT;
static uint32_t kl_driver_rescinds;

static status_t kl_drv_probe(struct vmbus_channel *ch)
{
    (void)ch;
    return STATUS_OK; /* kl_up_job opens the channels itself */
}

static void kl_drv_rescind(struct vmbus_channel *vch)
{
    BUMP(kl_driver_rescinds);
    irql_t old = spin_lock(&kl_lock);
    for (uint32_t i = 0; i < KL_CHANNELS; i++)
        if (kl[i].vch == vch && kl[i].rescind_to)
            kmcl_channel_rescind(kl[i].rescind_to);
    spin_unlock(&kl_lock, old);
}

static const struct vmbus_driver kl_driver = { .name = "layers-kmcl", .type = VMBUS_GUID_HVSIM_TEST,
                                               .probe = kl_drv_probe, .rescind = kl_drv_rescind };

static void kl_publish(struct kl_chan *c, struct vmbus_channel *vch, struct kmcl_channel *ch)
{
    irql_t old = spin_lock(&kl_lock);
    c->vch = vch;
    c->ch = c->rescind_to = ch;
    spin_unlock(&kl_lock, old);
}

static status_t kl_open(struct kl_chan *c, struct vmbus_channel *vch)
{
    struct kmcl_channel *ch = NULL;
    status_t s = kmcl_channel_allocate(vch, &ch);
    if (s != STATUS_OK)
        return s;
    kl_publish(c, vch, ch);
    s = kmcl_channel_init_set_client_context_size(ch, sizeof c);
    if (s == STATUS_OK) {
        *(struct kl_chan **)kmcl_channel_get_pointer_to_client_context(ch) = c;
        s = kmcl_channel_init_set_process_packet_callbacks(ch, kl_on_packet, NULL);
    }
    if (s == STATUS_OK)
        s = kmcl_channel_init_set_target_cpu(ch, c->cpu);
    if (s == STATUS_OK) /* a one-page outbound ring: the echoes queue on the send backlog */
        s = kmcl_channel_init_set_ring_buffer_page_count(ch, 2, 8);
    if (s == STATUS_OK)
        s = kmcl_channel_enable(ch);
    if (s != STATUS_OK) {
        kl_publish(c, NULL, NULL);
        kmcl_channel_cleanup(ch);
        return s;
    }
    uint32_t bytes = 0;
    const uint8_t *ring = vmbus_channel_in_ring(vch, &bytes);
    __atomic_store_n(&c->ring_hi, ring + bytes, __ATOMIC_RELEASE);
    __atomic_store_n(&c->ring_lo, ring + PAGE, __ATOMIC_RELEASE);
    for (uint32_t i = 0; i < KL_ECHOES; i++) {
        struct kl_echo *e = &c->echo[i];
        e->c = c;
        if ((s = kmcl_packet_allocate(ch, &e->pkt)) != STATUS_OK)
            return s;
        kmcl_packet_set_context(e->pkt, e);
        kmcl_packet_set_completion_routine(e->pkt, kl_routine);
    }
    return STATUS_OK;
}

static void kl_up_job(void *arg)
{
    (void)arg;
    uint32_t relid;
    struct vmbus_channel *primary = find_channel((struct vmbus_guid)VMBUS_GUID_HVSIM_TEST, false, &relid);
    kl[0].up = kl[1].up = STATUS_NOT_FOUND;
    if (!primary)
        return;
    /* Bound (the probe does nothing) before the channels open: a rescind from now reaches kmcl. */
    if ((kl[0].up = vmbus_driver_register(&kl_driver)) != STATUS_OK)
        return;
    kl[0].up = kl_open(&kl[0], primary);
    if (kl[0].up != STATUS_OK)
        return; /* primary may be gone (rescinded and released): not touched again */
    struct vmbus_channel *sub[1];
    kl[1].up = vmbus_channel_wait_sub_channels(primary, 1, sub);
    if (kl[1].up == STATUS_OK) {
        kl[1].up = kl_open(&kl[1], sub[0]);
        vmbus_channel_release(sub[0]); /* the wait's reference: kmcl holds its own */
    }
}

static bool kl_up(const struct expect *e)
{
    memset(kl, 0, sizeof kl);
    memset(&kl_errors, 0, sizeof kl_errors);
    kl[0].cpu = 2;
    kl[1].cpu = 3;
    guest_run("kmcl up", kl_up_job, NULL, 30000);
    for (uint32_t i = 0; i < KL_CHANNELS; i++)
        clear_status("kmcl: enabling a channel", kl[i].up);
    for (uint32_t i = 0; i < KL_CHANNELS; i++)
        if (kl[i].up != STATUS_OK) {
            if (e->strict && (i == 0 || !e->primary_only))
                layer_fail("kmcl: channel %u not enabled: %s", i, status_name(kl[i].up));
            else
                kl_errors.errors++;
        }
    return kl[0].up == STATUS_OK;
}

struct kl_round {
    uint32_t r;
    const struct expect *e;
};

static bool kl_round_done(void)
{
    for (uint32_t i = 0; i < KL_CHANNELS; i++) {
        struct kl_chan *c = &kl[i];
        if (!c->ch || vmbus_channel_rescinded(c->vch))
            continue; /* nothing more comes */
        for (uint32_t k = 0; k < KL_ECHOES; k++)
            if (LD(c->echo[k].busy))
                return false;
        if (LD(c->answers) + LD(c->bad) < c->sent || LD(c->data) < c->data_want)
            return false;
    }
    return true;
}

static void kl_round_job(void *arg)
{
    struct kl_round *x = arg;
    uint64_t timeout_ns = x->e->strict ? 10000000000ull : 500000000ull;
    for (uint32_t i = 0; i < KL_CHANNELS; i++) {
        struct kl_chan *c = &kl[i];
        if (!c->ch)
            continue;
        /* An open channel is not freed before its close: ch->vch stays valid. */
        bool gone = vmbus_channel_rescinded(c->vch);
        if (gone && c->tried_after_rescind)
            continue;
        c->tried_after_rescind = gone;
        for (uint32_t k = 0; k < KL_ECHOES; k++) {
            struct kl_echo *e = &c->echo[k];
            if (LD(e->busy))
                continue; /* still owed by the host: not sent again */
            e->tag = (x->r << 24) | (i << 16) | k;
            e->len = 8 + (k * 29 + x->r * 61) % (KL_MAX_ECHO - 8);
            uint32_t op = HVSIM_VSP_TEST_OP_ECHO;
            memcpy(e->buf, &op, 4);
            memcpy(e->buf + 4, &e->tag, 4);
            for (uint32_t j = 8; j < e->len; j++)
                e->buf[j] = kl_byte(e->tag, j);
            ST(e->busy, 1);
            status_t s = kmcl_packet_send(e->pkt, e->buf, e->len, NULL, 0, KMCL_SEND_WAIT_FOR_COMPLETION);
            if (s != STATUS_OK) {
                ST(e->busy, 0);
                kl_errors.errors++;
                c->odd_status = (unsigned)s >= STATUS__COUNT ? s : c->odd_status;
            } else {
                c->sent++;
                c->taken_after_rescind += gone;
            }
        }
        struct hvsim_vsp_test_send_n n = { HVSIM_VSP_TEST_OP_SEND_N, KL_DATA, 24 + 40 * (x->r % 4) };
        uint32_t resp[4] = { 0 }, resp_len = sizeof resp;
        gone = vmbus_channel_rescinded(c->vch);
        int64_t t0 = now_ns();
        c->sync = kmcl_channel_send_synchronous_request(c->ch, &n, sizeof n, NULL, 0, resp, &resp_len, timeout_ns);
        uint32_t waited_ms = (uint32_t)((now_ns() - t0) / 1000000);
        if (gone && (c->sync == STATUS_OK || waited_ms > 100) && waited_ms > c->waited_after_rescind_ms)
            c->waited_after_rescind_ms = waited_ms;
        if (c->sync == STATUS_OK && (resp_len < 8 || resp[0] != HVSIM_VSP_TEST_STATUS_OK || resp[1] != KL_DATA))
            BUMP(c->bad);
        if (c->sync == STATUS_OK)
            c->data_want += KL_DATA;
        else
            kl_errors.errors++;
    }
    int64_t end = now_ns() + (int64_t)timeout_ns;
    while (!kl_round_done() && now_ns() < end)
        thread_sleep_ns(200000);
}

static void kl_round(uint32_t r, const struct expect *e)
{
    struct kl_round x = { r, e };
    guest_run("kmcl round", kl_round_job, &x, 30000);
    for (uint32_t i = 0; i < KL_CHANNELS; i++) {
        struct kl_chan *c = &kl[i];
        clear_status("kmcl: a synchronous request", c->sync);
        clear_status("kmcl: a send", c->odd_status);
        if (c->taken_after_rescind || c->waited_after_rescind_ms) {
            layer_fail("kmcl: channel %u round %u: after the rescind reached the guest %u sends were taken and a "
                       "request waited %u ms (issue 13 item 5: they fail at once)", i, r, c->taken_after_rescind,
                       c->waited_after_rescind_ms);
            c->taken_after_rescind = c->waited_after_rescind_ms = 0;
        }
        if (!c->ch || !e->strict || (i && e->primary_only))
            continue;
        if (c->sync != STATUS_OK)
            layer_fail("kmcl: channel %u round %u: SEND_N request: %s", i, r, status_name(c->sync));
        if (LD(c->answers) != c->sent || LD(c->done_ok) != c->sent || LD(c->data) != c->data_want)
            layer_fail("kmcl: channel %u round %u: %u echoes sent, %u answered, %u completed; %u of %u data packets", i,
                       r, c->sent, LD(c->answers), LD(c->done_ok), LD(c->data), c->data_want);
    }
}

static void kl_check(const struct expect *e)
{
    for (uint32_t i = 0; i < KL_CHANNELS; i++) {
        struct kl_chan *c = &kl[i];
        bool strict = e->strict && !(i && e->primary_only);
        if (LD(c->bad) || LD(c->order) || LD(c->unknown) || LD(c->range))
            layer_fail("kmcl: channel %u took bad packets: %u wrong bytes, %u out of order, %u unknown, %u outside "
                       "the ring", i, LD(c->bad), LD(c->order), LD(c->unknown), LD(c->range));
        if (strict && c->ch && (kmcl_channel_failed(c->ch) || LD(c->cancelled) || LD(c->other_status)))
            layer_fail("kmcl: channel %u: failed %d, %u sends cancelled, %u other statuses", i,
                       kmcl_channel_failed(c->ch), LD(c->cancelled), LD(c->other_status));
        if (LD(c->other_status))
            layer_fail("kmcl: channel %u: %u completion routines with a status other than ok or cancelled", i,
                       LD(c->other_status));
    }
}

static void kl_down_job(void *arg)
{
    (void)arg;
    for (uint32_t i = KL_CHANNELS; i-- > 0;) {
        struct kl_chan *c = &kl[i];
        if (!c->ch)
            continue;
        kmcl_channel_disable(c->ch); /* routines still owed run now, cancelled */
        for (uint32_t k = 0; k < KL_ECHOES; k++)
            if (c->echo[k].pkt && !LD(c->echo[k].busy))
                kmcl_packet_free(c->echo[k].pkt);
        irql_t old = spin_lock(&kl_lock);
        c->rescind_to = NULL; /* no rescind is handed to it any more */
        spin_unlock(&kl_lock, old);
        kmcl_channel_cleanup(c->ch);
    }
    vmbus_driver_unregister(&kl_driver); /* unbinds what is still bound (its relid goes back if rescinded) */
}

static void kl_down(void)
{
    guest_run("kmcl down", kl_down_job, NULL, 30000);
    for (uint32_t i = 0; i < KL_CHANNELS; i++)
        for (uint32_t k = 0; kl[i].ch && k < KL_ECHOES; k++)
            if (LD(kl[i].echo[k].busy))
                layer_fail("kmcl: channel %u: a send's completion routine never ran (not even at disable)", i);
    memset(kl, 0, sizeof kl);
}

static void kl_get_stats(struct layer_stats *out)
{
    *out = kl_errors;
    for (uint32_t i = 0; i < KL_CHANNELS; i++) {
        out->sent += kl[i].sent;
        out->answered += LD(kl[i].answers);
        out->bad += LD(kl[i].bad) + LD(kl[i].order) + LD(kl[i].unknown);
        out->range_errors += LD(kl[i].range);
    }
}

static void kl_set_content(bool on)
{
    kl_content = on;
}

static bool kl_failed(void)
{
    for (uint32_t i = 0; i < KL_CHANNELS; i++)
        if (kl[i].ch && kmcl_channel_failed(kl[i].ch))
            return true;
    return false;
}

const struct layer layer_kmcl = {
    .name = "kmcl", .device = "hvsim-test", .type = VMBUS_GUID_HVSIM_TEST, .up = kl_up, .round = kl_round,
    .down = kl_down, .check = kl_check, .get_stats = kl_get_stats, .set_content_checks = kl_set_content,
    .failed = kl_failed,
};

/* ---- netvsc: two queues, raw UDP/IPv4 frames echoed by the guest ---- */

#define NV_PAYLOAD_AT 42u /* Ethernet 14 + IPv4 20 + UDP 8 */
#define NV_EXPECT 4096u
#define NV_ROUND 150u
#define NV_WINDOW 16u

static const uint8_t peer_mac[6] = { 0x02, 0, 0, 0, 0, 0x01 };

static struct {
    struct netdev *dev;  /* the network device netvsc's probe registered, found and opened */
    struct netvsc *nic;  /* netvsc's extras behind it (valid as long as dev is held) */
    status_t up;
    uint8_t mac[6];
    uint32_t mtu;
    const uint8_t *rx_lo, *rx_hi; /* the receive buffer, once the host has it */
    uint32_t rx_sub;                /* its sub-allocations' size */
    uint32_t seq;
    /* guest side (atomics) */
    uint32_t echoed, tx_busy, tx_failed, range, links;
    /* the peer: by sequence number mod NV_EXPECT, the length sent (0: none) */
    uint32_t expect[NV_EXPECT];
    uint32_t replies, bad;
    struct layer_stats st;
    bool content;
} nv = { .content = true };

static void nv_receive(void *ctx, uint32_t queue, const void *frame, uint32_t len)
{
    (void)ctx;
    const uint8_t *f = frame, *lo = __atomic_load_n(&nv.rx_lo, __ATOMIC_ACQUIRE), *hi = LD(nv.rx_hi);
    if (lo && (f < lo || f > hi || (size_t)(hi - f) < len))
        BUMP(nv.range);
    else if (lo && len && LD(layer_honest_ranges) && (f - lo) / nv.rx_sub != (f + len - 1 - lo) / nv.rx_sub)
        BUMP(nv.range); /* the host's range is one sub-allocation: the frame is inside it */
    if (len < 14 || len > nv.mtu + 14)
        BUMP(nv.range);
    else
        touch(f, len);
    struct netdev *dev = __atomic_load_n(&nv.dev, __ATOMIC_ACQUIRE);
    if (!dev || len < 14)
        return; /* still attaching */
    uint8_t *p = netdev_tx_begin(dev, queue, len);
    if (!p) {
        BUMP(nv.tx_busy);
        return;
    }
    memcpy(p, f + 6, 6); /* back to the sender */
    memcpy(p + 6, nv.mac, 6);
    memcpy(p + 12, f + 12, len - 12);
    if (netdev_tx_end(dev, queue, p, len) != STATUS_OK)
        BUMP(nv.tx_failed);
    else
        BUMP(nv.echoed);
}

static void nv_link(void *ctx, bool up)
{
    (void)ctx;
    (void)up;
    BUMP(nv.links);
}

/* The device went (a rescind): transmits fail from now; nv_down closes it. */
static void nv_gone(void *ctx)
{
    (void)ctx;
}

static uint8_t nv_byte(uint32_t seq, uint32_t k)
{
    return (uint8_t)(seq * 13u + k);
}

static void put_be16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* An IPv4/UDP frame (checksums left 0: nothing on the path looks at them; the host hashes the
 * addresses and ports to pick the queue). */
static uint32_t nv_frame(uint8_t *f, uint32_t seq, uint32_t flow, uint32_t len)
{
    memset(f, 0, NV_PAYLOAD_AT);
    memcpy(f, nv.mac, 6);
    memcpy(f + 6, peer_mac, 6);
    put_be16(f + 12, 0x0800);
    uint8_t *ip = f + 14;
    ip[0] = 0x45;
    put_be16(ip + 2, len - 14);
    ip[8] = 64;
    ip[9] = 17;
    static const uint8_t src[4] = { 10, 0, 0, 1 }, dst[4] = { 10, 0, 0, 2 };
    memcpy(ip + 12, src, 4);
    memcpy(ip + 16, dst, 4);
    put_be16(ip + 20, 1024 + flow);
    put_be16(ip + 22, 7);
    put_be16(ip + 24, len - 34);
    memcpy(f + NV_PAYLOAD_AT, &seq, 4);
    for (uint32_t k = NV_PAYLOAD_AT + 4; k < len; k++)
        f[k] = nv_byte(seq, k);
    return len;
}

/* The netvsp's backend (server thread): what the guest sent, checked byte for byte. */
static void peer_sink(void *ctx, const uint8_t *f, uint32_t len)
{
    (void)ctx;
    uint32_t seq = 0;
    if (len >= NV_PAYLOAD_AT + 4)
        memcpy(&seq, f + NV_PAYLOAD_AT, 4);
    uint32_t want = len >= NV_PAYLOAD_AT + 4 ? __atomic_exchange_n(&nv.expect[seq % NV_EXPECT], 0, __ATOMIC_ACQ_REL) : 0;
    bool ok = want == len && memcmp(f, peer_mac, 6) == 0 && memcmp(f + 6, nv.mac, 6) == 0;
    for (uint32_t k = NV_PAYLOAD_AT + 4; ok && k < len; k++)
        ok = f[k] == nv_byte(seq, k);
    BUMP(*(ok || (!nv.content && want) ? &nv.replies : &nv.bad));
}

struct nv_up {
    status_t status;
};

static const struct netdev_client nv_client = { .receive = nv_receive, .link = nv_link, .gone = nv_gone };

/* The bring-up: netvsc configured, then bound (vmbus_driver_register probes the offered NIC: the
 * whole handshake, then a network device registered), the device found and opened. A probe that
 * failed (its reason is in the log) leaves no device: STATUS_NOT_FOUND. */
static void nv_up_job(void *arg)
{
    struct nv_up *u = arg;
    if (!find_channel((struct vmbus_guid)VMBUS_GUID_NIC, false, NULL)) {
        u->status = STATUS_NOT_FOUND;
        return;
    }
    struct netvsc_config cfg = { .queues = 2, .recv_buf_bytes = 1u << 20, .send_buf_bytes = 512u << 10,
                                 .ring_pages = 16, .first_cpu = 1 };
    netvsc_configure(&cfg);
    u->status = vmbus_driver_register(&netvsc_driver);
    netvsc_configure(&nv_parked);
    if (u->status != STATUS_OK)
        return;
    struct netdev *dev = netdev_first();
    struct netvsc *nic = netvsc_from_netdev(dev);
    if (!nic) {
        if (dev)
            netdev_put(dev);
        u->status = STATUS_NOT_FOUND;
        return;
    }
    memcpy(nv.mac, dev->mac, 6);
    nv.mtu = dev->mtu;
    nv.nic = nic;
    __atomic_store_n(&nv.dev, dev, __ATOMIC_RELEASE); /* before the open: the first frame is echoed */
    u->status = netdev_open(dev, &nv_client);
    if (u->status != STATUS_OK) {
        __atomic_store_n(&nv.dev, NULL, __ATOMIC_RELEASE);
        nv.nic = NULL;
        netdev_put(dev);
    }
}

static bool nv_up(const struct expect *e)
{
    bool content = nv.content;
    memset(&nv, 0, sizeof nv);
    nv.content = content;
    nv.mtu = 1500;
    struct nv_up u = { STATUS_OK };
    guest_run("netvsc attach", nv_up_job, &u, 60000);
    nv.up = u.status;
    clear_status("netvsc bring-up", u.status);
    if (u.status != STATUS_OK) {
        if (e->strict)
            layer_fail("netvsc: attach: %s", status_name(u.status));
        nv.st.errors++;
        return false;
    }
    if (e->strict && !e->primary_only && netvsc_queue_count(nv.nic) != 2)
        layer_fail("netvsc: %u queues, not 2", netvsc_queue_count(nv.nic));
    void *base;
    uint32_t bytes, sub;
    if (hvsim_netvsp_rx_buffer(machine.nvsp, &base, &bytes, &sub) && sub) {
        nv.rx_sub = sub;
        __atomic_store_n(&nv.rx_hi, (const uint8_t *)base + bytes, __ATOMIC_RELEASE);
        __atomic_store_n(&nv.rx_lo, (const uint8_t *)base, __ATOMIC_RELEASE);
    } else {
        layer_fail("netvsc: the host has no receive buffer in one piece");
    }
    return true;
}

/* Sends NV_ROUND datagrams over 8 flows, at most NV_WINDOW unanswered. Lost frames (a lossy or
 * hostile host) are written off after a quiet 200 ms. */
static void nv_round(uint32_t r, const struct expect *e)
{
    static uint8_t f[1514];
    bool strict = e->strict && !e->primary_only; /* a queue that goes away takes its flows' frames */
    uint32_t base_r = LD(nv.replies), base_b = LD(nv.bad), base = base_r + base_b, sent = 0, lost = 0;
    int64_t end = now_ns() + (strict ? 20000000000ll : 2000000000ll), quiet_since = now_ns(), progress = now_ns();
    uint32_t last = base;
    while (now_ns() < end) {
        uint32_t done = LD(nv.replies) + LD(nv.bad);
        if (done != last) {
            last = done;
            quiet_since = progress = now_ns();
        }
        if (!strict && now_ns() - progress > 600000000ll)
            break; /* the device is gone or silent: nothing more to learn from this round */
        if (done - base + lost >= NV_ROUND && sent == NV_ROUND)
            break;
        if (sent < NV_ROUND && sent - (done - base) - lost < NV_WINDOW) {
            uint32_t seq = nv.seq++, len = 60 + (seq * 97 + r * 13) % (1514 - 60 + 1);
            nv_frame(f, seq, seq % 8, len);
            ST(nv.expect[seq % NV_EXPECT], len);
            if (hvsim_netvsp_deliver(machine.nvsp, f, len)) {
                sent++;
                continue;
            }
            ST(nv.expect[seq % NV_EXPECT], 0);
            nv.seq--;
            sleep_us(50); /* no receive buffer free: the guest is behind */
            continue;
        }
        if (!strict && now_ns() - quiet_since > 200000000ll) {
            lost = sent - (done - base);
            quiet_since = now_ns();
        }
        sched_yield();
    }
    uint32_t right = LD(nv.replies) - base_r, wrong = LD(nv.bad) - base_b;
    nv.st.sent += sent;
    if (strict && (sent != NV_ROUND || right != NV_ROUND))
        layer_fail("netvsc: round %u: %u datagrams sent, %u echoed right, %u wrong", r, sent, right, wrong);
}

static void nv_check(const struct expect *e)
{
    if ((nv.content && LD(nv.bad)) || LD(nv.range))
        layer_fail("netvsc: %u echoes with wrong bytes, %u frames outside their receive-buffer range or of a bad "
                   "length", nv.content ? LD(nv.bad) : 0, LD(nv.range));
    if (!e->strict || !nv.nic)
        return;
    struct netvsc_stats vs;
    netvsc_get_stats(nv.nic, &vs);
    struct hvsim_netvsp_stats hs;
    hvsim_netvsp_get_stats(machine.nvsp, &hs);
    if (!e->host_lies && vs.rx_bad_range + vs.rx_bad_rndis + vs.rx_bad_nvsp + vs.rx_bad_frame + vs.tx_host_errors)
        layer_fail("netvsc: refused host input from an honest host: %llu ranges, %llu RNDIS, %llu NVSP, %llu frames, "
                   "%llu tx errors", (unsigned long long)vs.rx_bad_range, (unsigned long long)vs.rx_bad_rndis,
                   (unsigned long long)vs.rx_bad_nvsp, (unsigned long long)vs.rx_bad_frame,
                   (unsigned long long)vs.tx_host_errors);
    if (hs.channel_failures + hs.nvsp_errors + hs.tx_bad_rndis + hs.tx_bad_section + hs.tx_bad_range)
        layer_fail("netvsp: the guest broke the protocol: %llu channel failures, %llu NVSP errors, %llu bad RNDIS, "
                   "%llu bad sections, %llu bad ranges", (unsigned long long)hs.channel_failures,
                   (unsigned long long)hs.nvsp_errors, (unsigned long long)hs.tx_bad_rndis,
                   (unsigned long long)hs.tx_bad_section, (unsigned long long)hs.tx_bad_range);
}

/* The teardown: the device closed (no upcall runs after) and its reference put (after a rescind
 * the last one: its release tears the NIC down there), then the driver removed (a NIC still bound
 * is halted, its buffers revoked and its channels closed). */
static void nv_down_job(void *arg)
{
    (void)arg;
    struct netdev *dev = __atomic_exchange_n(&nv.dev, NULL, __ATOMIC_ACQ_REL);
    nv.nic = NULL;
    if (dev) {
        netdev_close(dev);
        netdev_put(dev);
    }
    devreg_reap(); /* a NIC gone while nobody held it is released first */
    vmbus_driver_unregister(&netvsc_driver);
}

static void nv_down(void)
{
    guest_run("netvsc detach", nv_down_job, NULL, 60000);
}

static void nv_get_stats(struct layer_stats *out)
{
    *out = nv.st;
    out->answered = LD(nv.replies);
    out->bad = LD(nv.bad);
    out->range_errors = LD(nv.range);
    struct netvsc *nic = nv.nic;
    if (nic) {
        struct netvsc_stats vs;
        netvsc_get_stats(nic, &vs);
        out->refused = vs.rx_bad_range + vs.rx_bad_rndis + vs.rx_bad_nvsp + vs.rx_bad_frame;
    }
}

static void nv_set_content(bool on)
{
    nv.content = on;
}

/* netvsc does not say whether its channels failed; kmcl's one line for it does. */
static bool nv_failed(void)
{
    return hosted_log_contains("kmcl: netvsc") && hosted_log_contains("channel failed, not read again");
}

const struct layer layer_netvsc = {
    .name = "netvsc", .device = "netvsc", .type = VMBUS_GUID_NIC, .up = nv_up, .round = nv_round, .down = nv_down,
    .check = nv_check, .get_stats = nv_get_stats, .set_content_checks = nv_set_content, .failed = nv_failed,
};

const struct layer *const layer_table[] = { &layer_kmcl, &layer_netvsc };
const uint32_t layer_count = sizeof layer_table / sizeof layer_table[0];

/* ---- after the teardown ---- */

void layer_check_clean(const struct expect *e)
{
    if (!machine.vb)
        return;
    (void)hvsim_vmbus_flush(machine.vb, 3000);
    struct vmbus_stats g;
    struct hvsim_vmbus_stats h;
    uint64_t pages;
    bool ok;
    int64_t end = now_ns() + 3000000000ll;
    for (;;) {
        vmbus_get_stats(&g);
        hvsim_vmbus_get_stats(machine.vb, &h);
        pages = hosted_pages_in_use();
        /* A GPADL the guest left to the host (no answer to its teardown) is one the host still has
         * (or, answering late, had); an honest host answers everything, so then none is. */
        bool accounted = (e->late_answers ? h.gpadls <= g.leaked_gpadls : h.gpadls == g.leaked_gpadls) &&
                         (g.leaked_gpadls || pages == machine.pages_at_start);
        /* Live for the guest: created and not torn down; after a teardown's timeout that is one it
         * left to the host. */
        ok = h.channels_open == 0 && g.gpadls_live <= g.leaked_gpadls && h.offers == g.channels && accounted &&
             (!e->strict || e->late_answers || g.leaked_gpadls == 0);
        if (ok || now_ns() > end)
            break;
        sleep_us(1000);
    }
    if (!ok)
        layer_fail("left after the teardown: host: %u channels open, %u GPADLs, %u relids in use; guest: %u channels, "
                   "%u GPADLs live, %u left to the host, %+lld pages", h.channels_open, h.gpadls, h.offers, g.channels,
                   g.gpadls_live, g.leaked_gpadls, (long long)(pages - machine.pages_at_start));
}

/* ---- shared memory, for the flip test ---- */

void *layer_in_ring(const struct layer *l, uint32_t *bytes)
{
    struct vmbus_channel *ch = find_channel(l->type, false, NULL);
    return ch && vmbus_channel_is_open(ch) ? vmbus_channel_in_ring(ch, bytes) : NULL;
}

void *layer_rx_buffer(uint32_t *bytes, uint32_t *sub_size)
{
    void *base;
    return machine.nvsp && hvsim_netvsp_rx_buffer(machine.nvsp, &base, bytes, sub_size) ? base : NULL;
}
