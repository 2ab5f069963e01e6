/*
 * vmbusprobe: VMBus end to end on whatever host is there (Hyper-V, or hvsim under QEMU): connects,
 * prints the device listing, then opens and closes a channel on every offer, opens the sub-channels
 * of hvsim's test device, signals both ways on an open channel, moves its interrupts to another CPU,
 * measures open and close, and leaves with UNLOAD at power-off.
 *
 * Then kmcl on the test device (hvsim's VSP on kmcl's server endpoints; its protocol is
 * hv/vmbus/proto/testdev.h): in-band echoes, a synchronous request, 10,000 host packets in order, a
 * GPA-direct buffer checksummed by the host, and the round trip of a request and its completion.
 *
 * Command line: vmbus=X.Y (the newest version to ask for, default the newest known), cycles=N
 * (open/close cycles measured per channel, default 20), kmcl=0 (skip the kmcl checks), selftest=0
 * (listing only).
 * Exit status: 0 all checks passed, 1 some failed, 3 no Hyper-V and no hvsim, 4 no VMBus.
 */
#include "arch-x86_64/irql.h"
#include "arch-x86_64/paging.h"
#include "arch-x86_64/tsc.h"
#include "kernel/mm.h"
#include "hv/hv.h"
#include "hv/vmbus/proto/testdev.h"
#include "hv/vmbus/vmbus.h"
#include "kmcl/channel.h"
#include "kernel/app.h"
#include "kernel/cmdline.h"
#include "kernel/log.h"
#include "kernel/percpu.h"
#include "kernel/selfcheck.h"
#include "kernel/string.h"
#include "kernel/sync.h"
#include "kernel/thread.h"

const char *const app_name = "vmbusprobe";
const char *const app_cmdline_keys[] = { "vmbus", "cycles", "selftest", "kmcl", NULL };

#define MAX_CHANNELS 64

struct probe_channel {
    struct vmbus_channel *ch;
    volatile uint32_t interrupts;
    volatile int32_t last_cpu;
    struct event got;
};
static struct probe_channel chans[MAX_CHANNELS];
static uint32_t nchans;

static void collect(struct vmbus_channel *ch, void *ctx)
{
    (void)ctx;
    if (nchans < MAX_CHANNELS && !vmbus_channel_rescinded(ch)) {
        vmbus_channel_hold(ch); /* kept past the callback, for the app's life */
        chans[nchans++].ch = ch;
    }
}

static void on_interrupt(struct vmbus_channel *ch, void *ctx)
{
    (void)ch;
    struct probe_channel *p = ctx;
    p->last_cpu = (int32_t)this_cpu()->id;
    __atomic_add_fetch(&p->interrupts, 1, __ATOMIC_RELEASE);
    event_set(&p->got);
}

static uint32_t online_cpus(void)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < MAX_CPUS; i++)
        n += cpus[i] && cpus[i]->online;
    return n;
}

static status_t open_one(struct probe_channel *p, uint32_t cpu)
{
    struct vmbus_open_params o = { .out_ring_bytes = 4 * 4096, .in_ring_bytes = 4 * 4096, .target_cpu = cpu,
                                   .on_interrupt = on_interrupt, .ctx = p };
    return vmbus_channel_open(p->ch, &o);
}

/* Open and close every offer once; then `cycles` more on each, timed. */
static void check_open_close_all(uint32_t cycles)
{
    uint64_t open_ns = 0, close_ns = 0, n = 0;
    for (uint32_t i = 0; i < nchans; i++) {
        struct probe_channel *p = &chans[i];
        event_init(&p->got, EVENT_SYNCHRONIZATION, false);
        uint32_t cpu = i % online_cpus();
        status_t s = open_one(p, cpu);
        status_t c = s == STATUS_OK ? vmbus_channel_close(p->ch) : s;
        CHECK(s == STATUS_OK && c == STATUS_OK, "relid %u (%s, sub-channel %u): opened on cpu%u and closed: %s / %s",
              vmbus_channel_relid(p->ch), vmbus_channel_type_name(p->ch), vmbus_channel_sub_index(p->ch), cpu,
              status_name(s), status_name(c));
        for (uint32_t k = 0; k < cycles && s == STATUS_OK && c == STATUS_OK; k++) {
            uint64_t t0 = rdtsc();
            s = open_one(p, cpu);
            uint64_t t1 = rdtsc();
            c = s == STATUS_OK ? vmbus_channel_close(p->ch) : s;
            uint64_t t2 = rdtsc();
            open_ns += tsc_to_ns(t1 - t0);
            close_ns += tsc_to_ns(t2 - t1);
            n++;
        }
        if (cycles)
            CHECK(s == STATUS_OK && c == STATUS_OK, "relid %u: %u more open/close cycles", vmbus_channel_relid(p->ch),
                  cycles);
    }
    if (n)
        kprintf("  measured: open %llu us, close %llu us (mean of %llu cycles, GPADL + OPENCHANNEL / CLOSECHANNEL "
                "+ GPADL_TEARDOWN)\n",
                (unsigned long long)(open_ns / n / 1000), (unsigned long long)(close_ns / n / 1000),
                (unsigned long long)n);
}

static struct probe_channel *find(struct vmbus_guid type)
{
    for (uint32_t i = 0; i < nchans; i++)
        if (vmbus_guid_equal(&vmbus_channel_offer(chans[i].ch)->if_type, &type) && !vmbus_channel_sub_index(chans[i].ch))
            return &chans[i];
    return NULL;
}

/* Signals the channel and waits (2 s) for the interrupt the test device sends back. */
static status_t signal_and_wait(struct probe_channel *p, bool low_latency)
{
    uint32_t before = __atomic_load_n(&p->interrupts, __ATOMIC_ACQUIRE);
    event_reset(&p->got);
    vmbus_channel_set_low_latency(p->ch, low_latency);
    vmbus_channel_signal(p->ch);
    for (int i = 0; i < 20; i++) {
        if (__atomic_load_n(&p->interrupts, __ATOMIC_ACQUIRE) > before)
            return STATUS_OK;
        status_t s = event_wait(&p->got, 100000000ull);
        (void)s; /* re-checked above: the count says whether it came */
    }
    return STATUS_TIMEOUT;
}

/* hvsim's test device: sub-channels, signals both ways, MODIFYCHANNEL. */
static void check_test_device(void)
{
    struct probe_channel *p = find((struct vmbus_guid)VMBUS_GUID_HVSIM_TEST);
    if (!p) {
        kprintf("  (no hvsim test device: sub-channel and signalling checks skipped)\n");
        return;
    }
    status_t s = open_one(p, 0);
    CHECK(s == STATUS_OK, "test device relid %u open: %s", vmbus_channel_relid(p->ch), status_name(s));
    if (s != STATUS_OK)
        return;
    struct vmbus_channel *subs[2];
    s = vmbus_channel_wait_sub_channels(p->ch, 2, subs);
    CHECK(s == STATUS_OK, "test device offered its 2 sub-channels: %s", status_name(s));
    if (s == STATUS_OK) {
        for (int i = 0; i < 2; i++) {
            struct probe_channel sp = { .ch = subs[i] };
            event_init(&sp.got, EVENT_SYNCHRONIZATION, false);
            status_t o = open_one(&sp, (uint32_t)(i + 1) % online_cpus());
            status_t c = o == STATUS_OK ? vmbus_channel_close(subs[i]) : o;
            CHECK(o == STATUS_OK && c == STATUS_OK, "sub-channel %u (relid %u) opened and closed: %s / %s",
                  vmbus_channel_sub_index(subs[i]), vmbus_channel_relid(subs[i]), status_name(o), status_name(c));
            vmbus_channel_release(subs[i]); /* held for us by the wait */
        }
    }
    /* Guest -> host: the test device answers every signal by signalling back. */
    status_t e = signal_and_wait(p, true);
    CHECK(e == STATUS_OK && p->last_cpu == 0, "signal by HvSignalEvent answered by an interrupt on cpu%d (%s)",
          p->last_cpu, status_name(e));
    e = signal_and_wait(p, false);
    CHECK(e == STATUS_OK, "signal through the monitor page answered (%s)", status_name(e));
    if (online_cpus() > 1 && vmbus_version() >= VMBUS_VERSION_WIN10_RS3) {
        s = vmbus_channel_set_target_cpu(p->ch, 1);
        CHECK(s == STATUS_OK, "MODIFYCHANNEL moved relid %u to cpu1: %s", vmbus_channel_relid(p->ch), status_name(s));
        e = signal_and_wait(p, true);
        CHECK(e == STATUS_OK && p->last_cpu == 1, "its interrupts now arrive on cpu%d (%s)", p->last_cpu,
              status_name(e));
    }
    s = vmbus_channel_close(p->ch);
    CHECK(s == STATUS_OK, "test device closed: %s", status_name(s));
}


/* ---- kmcl on the test device ---- */

static struct {
    volatile uint32_t packets, data, order_errors, wrong_irql, batches;
    uint32_t next_seq;
} kseen;

static void kmcl_packet_in(struct kmcl_channel *ch, struct kmcl_incoming *pkt, const void *buf, uint32_t len,
                           uint32_t flags)
{
    (void)ch;
    (void)flags;
    if (irql_current() != IRQL_DISPATCH)
        kseen.wrong_irql++;
    uint32_t hdr[2] = { 0, 0 };
    if (len >= 8)
        memcpy(hdr, buf, 8);
    if (hdr[0] == HVSIM_VSP_TEST_OP_DATA) {
        if (hdr[1] != kseen.next_seq)
            kseen.order_errors++;
        kseen.next_seq = hdr[1] + 1;
        __atomic_add_fetch(&kseen.data, 1, __ATOMIC_RELEASE);
    }
    __atomic_add_fetch(&kseen.packets, 1, __ATOMIC_RELEASE);
    kmcl_channel_packet_complete(pkt, NULL, 0);
}

static void kmcl_batch_done(struct kmcl_channel *ch, uint32_t n)
{
    (void)ch;
    (void)n;
    kseen.batches++;
}

static bool wait_count(volatile uint32_t *v, uint32_t want, uint64_t ns)
{
    uint64_t end = rdtsc() + ns_to_tsc(ns);
    while (__atomic_load_n(v, __ATOMIC_ACQUIRE) < want)
        if (rdtsc() > end)
            return false;
        else
            thread_sleep_ns(100000);
    return true;
}

static void check_kmcl(void)
{
    struct probe_channel *p = find((struct vmbus_guid)VMBUS_GUID_HVSIM_TEST);
    if (!p) {
        kprintf("  (no hvsim test device: kmcl checks skipped)\n");
        return;
    }
    struct kmcl_channel *ch;
    status_t s = kmcl_channel_allocate(p->ch, &ch);
    if (s == STATUS_OK)
        s = kmcl_channel_init_set_process_packet_callbacks(ch, kmcl_packet_in, kmcl_batch_done);
    if (s == STATUS_OK)
        s = kmcl_channel_init_set_target_cpu(ch, online_cpus() - 1);
    if (s == STATUS_OK)
        s = kmcl_channel_enable(ch);
    CHECK(s == STATUS_OK, "kmcl channel on the test device enabled (interrupts and DPC on cpu%u): %s",
          online_cpus() - 1, status_name(s));
    if (s != STATUS_OK)
        return;
    /* Echoes. */
    struct kmcl_packet *pkt;
    s = kmcl_packet_allocate(ch, &pkt);
    uint8_t buf[256];
    uint32_t op = HVSIM_VSP_TEST_OP_ECHO;
    memset(buf, 0x5a, sizeof buf);
    memcpy(buf, &op, 4);
    for (int i = 0; s == STATUS_OK && i < 100; i++)
        s = kmcl_packet_send(pkt, buf, sizeof buf, NULL, 0, 0);
    CHECK(s == STATUS_OK && wait_count(&kseen.packets, 100, 2000000000ull),
          "100 in-band echoes came back through process-packet (%u), at DISPATCH (%u elsewhere), %u batches",
          kseen.packets, kseen.wrong_irql, kseen.batches);
    kmcl_packet_free(pkt);
    /* A synchronous request, timed: the round trip of a request and its completion. */
    op = HVSIM_VSP_TEST_OP_ECHO_COMPLETION;
    memcpy(buf, &op, 4);
    uint8_t resp[64];
    uint64_t best = UINT64_MAX, total = 0;
    int ok = 0;
    for (int i = 0; i < 50; i++) {
        uint32_t resp_len = sizeof resp;
        uint64_t t0 = rdtsc();
        s = kmcl_channel_send_synchronous_request(ch, buf, 32, NULL, 0, resp, &resp_len, 2000000000ull);
        uint64_t t = rdtsc() - t0;
        if (s == STATUS_OK && resp_len == 32 && memcmp(resp, buf, 32) == 0) {
            ok++;
            total += t;
            if (t < best)
                best = t;
        }
    }
    CHECK(ok == 50, "50 synchronous requests answered with their payload: %d", ok);
    if (ok)
        kprintf("  measured: request + completion round trip mean %llu us, best %llu us (hvsim under QEMU)\n",
                (unsigned long long)tsc_to_ns(total / (uint64_t)ok) / 1000, (unsigned long long)tsc_to_ns(best) / 1000);
    /* 10,000 host packets in order. */
    struct hvsim_vsp_test_send_n n = { HVSIM_VSP_TEST_OP_SEND_N, 10000, 64 };
    uint32_t rl = sizeof resp;
    uint64_t t0 = rdtsc();
    s = kmcl_channel_send_synchronous_request(ch, &n, sizeof n, NULL, 0, resp, &rl, 30000000000ull);
    bool all = s == STATUS_OK && wait_count(&kseen.data, 10000, 10000000000ull);
    uint64_t ns = tsc_to_ns(rdtsc() - t0);
    CHECK(all && kseen.order_errors == 0, "10,000 host packets arrived in order (%u, %u out of order) in %llu ms",
          kseen.data, kseen.order_errors, (unsigned long long)(ns / 1000000));
    /* GPA direct: the host checksums a guest buffer. */
    uint8_t *page = page_alloc(2);
    if (page) {
        uint32_t fnv = HVSIM_VSP_TEST_FNV_BASIS;
        for (int i = 0; i < 6000; i++) {
            page[i] = (uint8_t)(i * 31);
            fnv = (fnv ^ page[i]) * HVSIM_VSP_TEST_FNV_PRIME;
        }
        uint64_t pfns[2] = { virt_to_phys(page) >> 12, (virt_to_phys(page) >> 12) + 1 };
        struct kmcl_page_range r = { .byte_count = 6000, .byte_offset = 0, .pfns = pfns };
        uint64_t hdr = 0;
        struct hvsim_vsp_test_gpa_result res = { 1, 0, 0 };
        rl = sizeof resp;
        s = kmcl_channel_send_synchronous_request(ch, &hdr, sizeof hdr, &r, 1, resp, &rl, 2000000000ull);
        if (s == STATUS_OK && rl >= sizeof res)
            memcpy(&res, resp, sizeof res);
        CHECK(s == STATUS_OK && res.status == 0 && res.byte_count == 6000 && res.checksum == fnv,
              "GPA direct: the host read 6000 bytes of guest pages and its checksum matches (%s)", status_name(s));
        page_free(page, 2);
    }
    kmcl_channel_cleanup(ch);
}

static uint32_t parse_version(const char *v)
{
    static const struct { const char *text; uint32_t v; } known[] = {
        { "6.0", VMBUS_VERSION_COPPER }, { "5.3", VMBUS_VERSION_WIN10_V5_3 }, { "5.2", VMBUS_VERSION_WIN10_V5_2 },
        { "5.1", VMBUS_VERSION_WIN10_V5_1 }, { "5.0", VMBUS_VERSION_WIN10_V5 }, { "4.1", VMBUS_VERSION_WIN10_RS3 },
        { "4.0", VMBUS_VERSION_WIN10 }, { "3.0", VMBUS_VERSION_WIN8_1 },
    };
    for (unsigned i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(v, known[i].text) == 0)
            return known[i].v;
    return 0;
}

int app_main(void)
{
    const struct cmdline *cl = kernel_cmdline();
    status_t s = hv_init();
    if (s != STATUS_OK) {
        kprintf("vmbusprobe: needs Hyper-V or hvsim (%s): run it with `make run APP=vmbusprobe`\n", status_name(s));
        return 3;
    }
    const char *want = cmdline_str(cl, "vmbus", "");
    uint32_t max = want[0] ? parse_version(want) : 0;
    if (want[0] && !max) {
        kprintf("vmbusprobe: vmbus=%s: expected one of 6.0 5.3 5.2 5.1 5.0 4.1 4.0 3.0\n", want);
        return 4;
    }
    kprintf("\n== VMBus ==\n");
    s = vmbus_init(max);
    if (s != STATUS_OK) {
        kprintf("vmbusprobe: VMBus did not come up: %s\n", status_name(s));
        return 4;
    }
    vmbus_for_each_channel(collect, NULL);
    kprintf("vmbusprobe: VMBus %u.%u, %u offers\n", VMBUS_VERSION_MAJOR(vmbus_version()),
            VMBUS_VERSION_MINOR(vmbus_version()), nchans);
    if (!cmdline_bool(cl, "selftest", true))
        return 0;
    kprintf("\n== self-checks ==\n");
    CHECK(nchans > 0, "the host offered %u channels", nchans);
    check_open_close_all((uint32_t)cmdline_u64(cl, "cycles", 20, 0, 100000));
    check_test_device();
    if (cmdline_bool(cl, "kmcl", true)) {
        kprintf("\n== kmcl ==\n");
        check_kmcl();
    }
    struct vmbus_stats st;
    vmbus_get_stats(&st);
    CHECK(st.gpadls_live == 0 && st.leaked_gpadls == 0, "no GPADL left (%u live, %u leaked)", st.gpadls_live,
          st.leaked_gpadls);
    kprintf("  vmbus: %llu messages, %llu dropped (bad), %llu dropped (unasked), %llu opens, %llu closes, %llu "
            "interrupts, %llu timeouts\n",
            (unsigned long long)st.messages, (unsigned long long)st.dropped_bad, (unsigned long long)st.dropped_unasked,
            (unsigned long long)st.opens, (unsigned long long)st.closes, (unsigned long long)st.interrupts,
            (unsigned long long)st.timeouts);
    kprintf("\nvmbusprobe: %u checks passed, %u failed\n", selfcheck_passed, selfcheck_failed);
    return selfcheck_failed ? 1 : 0;
}
