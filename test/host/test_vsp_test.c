/*
 * Unit tests for the test device's VSP (sim/vsp/vsp_test.h) behind hvsim's VMBus server.
 *
 * Each test builds an hvsim model over 32 MiB of guest RAM with the VMBus server on top (the default
 * devices; the test device served by an instance of its own, so the counters are the test's), and
 * plays the guest on the test thread: the SynIC set up through hvsim_wrmsr, channel messages posted
 * with HvCallPostMessage and read from the SINT's message slot (as test_vmbus_server.c does), the
 * rings allocated and initialised in guest RAM, and kmcl endpoints as the GUEST side of both rings:
 * a writer on the guest -> host ring and a reader on the host -> guest ring. The guest signals the
 * host with HvSignalEvent on the channel's connection id (or the monitor page) when its writer or
 * reader says so, and waits for the host's signal (the relid's SIEF bit) when it has nothing to do:
 * a lost signal on either side shows as a wait that times out, not as a slow pass.
 * Waits are bounded and generous (the suite also runs under ASan/UBSan and TSan).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hv/proto/hvdefs.h"
#include "hv/vmbus/proto/vmbus_proto.h"
#include "kmcl/core/packet.h"
#include "kmcl/core/ring.h"
#include "kmcl/core/xact.h"
#include "sim/hvsim.h"
#include "sim/vmbus_server.h"
#include "sim/vsp/vsp_test.h"
#include "test/lib/test_util.h"

#define RAM_SIZE (32u << 20)
#define HYPERCALL_GPA 0x1000u
#define SIMP_GPA 0x100000u
#define SIEFP_GPA 0x101000u
#define INPUT_GPA 0x200000u
#define MON1_GPA 0x211000u
#define MON2_GPA 0x212000u
#define ARENA_GPA 0x400000u /* pages handed out for rings and buffers */
#define SINT VMBUS_MESSAGE_SINT
#define GUEST_OS_ID (HV_GUEST_OS_ID_OPEN_SOURCE | (0x7full << 56))
#define WAIT_MS 5000
#define MAX_OFFERS 64
#define TEST_RELID 7 /* the test device on a fresh server (the 7th default device) */
#define SUB1_RELID 8 /* its sub-channels, offered when the primary opens */
#define SUB2_RELID 9

/* A channel message as received (payload of the SynIC message). */
struct msg {
    uint32_t type, size;
    union {
        uint8_t bytes[HV_MESSAGE_PAYLOAD_MAX + 16];
        struct vmbus_msg_header hdr;
        struct vmbus_msg_offer_channel offer;
        struct vmbus_msg_relid relid;
        struct vmbus_msg_version_response2 version;
        struct vmbus_msg_gpadl_created created;
        struct vmbus_msg_open_result open;
    } u;
};

struct fixture {
    uint8_t *ram;
    struct hvsim *sim;
    struct hvsim_vmbus *vb;
    struct hvsim_vsp_test *vsp; /* NULL: the default table as is (the default instance) */
    struct hvsim_vmbus_device *devs;
    pthread_mutex_t lock;       /* the log record: lines come from the server's thread */
    struct reports logs;
    unsigned failed_lines;      /* log lines saying a ring failed */
    char failed_line[REPORT_LEN];
    /* The guest's side (test thread only). */
    uint32_t msg_conn;
    struct vmbus_msg_offer_channel offers[MAX_OFFERS];
    unsigned offer_count;
    uint64_t next_page;
    uint32_t next_gpadl;
};

/* A channel as the guest holds it. */
struct gch {
    uint32_t relid;
    uint64_t gpa;             /* the ring pages: guest -> host ring, then host -> guest ring */
    uint32_t tx_pages, rx_pages;
    struct kmcl_ring tx, rx;  /* guest endpoints: writer of the guest -> host ring, reader of the other */
    uint8_t *bounce;
    uint32_t bounce_size;
    uint64_t bounced;         /* packets the guest read through its bounce buffer */
};

static struct fixture *current; /* freed by teardown, also after a failed assertion */

static uint32_t round8(uint32_t n)
{
    return (n + 7u) & ~7u;
}

static uint32_t fnv1a(uint32_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * HVSIM_VSP_TEST_FNV_PRIME;
    return h;
}

/* ---- callbacks (hvsim's raise and log) ---- */

static void ignore_irq(void *ctx, uint32_t vp, uint8_t vector)
{
    (void)ctx;
    (void)vp;
    (void)vector;
}

static void record_log(void *ctx, const char *line)
{
    struct fixture *f = ctx;
    pthread_mutex_lock(&f->lock);
    reports_record(&f->logs, line);
    if (strstr(line, "ring failed")) {
        f->failed_lines++;
        snprintf(f->failed_line, sizeof f->failed_line, "%s", line);
    }
    pthread_mutex_unlock(&f->lock);
}

static unsigned failed_lines(struct fixture *f, char *last, size_t size)
{
    pthread_mutex_lock(&f->lock);
    unsigned n = f->failed_lines;
    if (last)
        snprintf(last, size, "%s", f->failed_line);
    pthread_mutex_unlock(&f->lock);
    return n;
}

static void dump_logs(struct fixture *f)
{
    pthread_mutex_lock(&f->lock);
    reports_dump(&f->logs);
    pthread_mutex_unlock(&f->lock);
}

/* ---- fixture ---- */

static void wrmsr_ok(struct fixture *f, uint32_t msr, uint64_t v)
{
    if (!hvsim_wrmsr(f->sim, 0, msr, v))
        fail_msg("wrmsr 0x%x = 0x%llx faulted", msr, (unsigned long long)v);
}

static struct hvsim_vsp_test_stats vstats(struct fixture *f)
{
    struct hvsim_vsp_test_stats s;
    hvsim_vsp_test_get_stats(f->vsp, &s);
    return s;
}

static void flush(struct fixture *f)
{
    if (!hvsim_vmbus_flush(f->vb, WAIT_MS)) {
        dump_logs(f);
        fail_msg("the server did not go idle");
    }
}

/* ---- the guest's side: messages ---- */

static uint8_t *slot(struct fixture *f)
{
    return f->ram + SIMP_GPA + SINT * HV_MESSAGE_SIZE;
}

static uint16_t post_once(struct fixture *f, uint32_t conn, const void *msg, uint32_t size)
{
    struct hv_input_post_message in = { .connection_id = conn, .message_type = HV_MESSAGE_VMBUS, .payload_size = size };
    memcpy(in.payload, msg, size);
    memcpy(f->ram + INPUT_GPA, &in, sizeof in);
    return HV_HYPERCALL_STATUS(hvsim_hypercall(f->sim, 0, HV_CALL_POST_MESSAGE, INPUT_GPA, 0));
}

static void post_on(struct fixture *f, uint32_t conn, const void *msg, uint32_t size)
{
    for (int tries = 0; tries < 100000; tries++) {
        uint16_t s = post_once(f, conn, msg, size);
        if (s == HV_STATUS_SUCCESS)
            return;
        assert_int_equal(s, HV_STATUS_INSUFFICIENT_BUFFERS); /* transient: try again */
        sleep_us(100);
    }
    fail_msg("HvPostMessage kept failing");
}

static void post(struct fixture *f, const void *msg, uint32_t size)
{
    post_on(f, f->msg_conn, msg, size);
}

static bool recv_msg(struct fixture *f, struct msg *m, int timeout_ms)
{
    int64_t deadline = now_ns() + (int64_t)timeout_ms * 1000000;
    for (;;) {
        if (__atomic_load_n((uint32_t *)slot(f), __ATOMIC_ACQUIRE) != HV_MESSAGE_NONE) {
            const uint8_t *s = slot(f);
            memset(m, 0, sizeof *m);
            m->size = s[offsetof(struct hv_message_header, payload_size)];
            memcpy(m->u.bytes, s + offsetof(struct hv_message, payload),
                   m->size < HV_MESSAGE_PAYLOAD_MAX ? m->size : HV_MESSAGE_PAYLOAD_MAX);
            m->type = m->size >= 4 ? m->u.hdr.type : VMBUS_MSG_INVALID;
            __atomic_store_n((uint32_t *)slot(f), HV_MESSAGE_NONE, __ATOMIC_SEQ_CST);
            if (__atomic_load_n(slot(f) + offsetof(struct hv_message_header, message_flags), __ATOMIC_SEQ_CST) &
                HV_MESSAGE_FLAG_PENDING)
                wrmsr_ok(f, HV_MSR_EOM, 0);
            return true;
        }
        if (now_ns() > deadline)
            return false;
        sleep_us(20);
    }
}

/* The next message of `type`; offers (sub-channels) and rescinds on the way are recorded / skipped. */
static void expect(struct fixture *f, uint32_t type, struct msg *m)
{
    for (;;) {
        if (!recv_msg(f, m, WAIT_MS)) {
            dump_logs(f);
            fail_msg("no %s within %d ms", vmbus_msg_name(type), WAIT_MS);
        }
        if (m->type == type)
            return;
        if (m->type == VMBUS_MSG_OFFERCHANNEL && f->offer_count < MAX_OFFERS) {
            f->offers[f->offer_count++] = m->u.offer;
            continue;
        }
        if (m->type == VMBUS_MSG_RESCIND_CHANNELOFFER)
            continue;
        dump_logs(f);
        fail_msg("expected %s, got %s (%u bytes)", vmbus_msg_name(type), vmbus_msg_name(m->type), m->size);
    }
}

static const struct vmbus_msg_offer_channel *offer_of(struct fixture *f, uint32_t relid)
{
    for (unsigned i = f->offer_count; i-- > 0;)
        if (f->offers[i].child_relid == relid)
            return &f->offers[i];
    return NULL;
}

/* Waits for the offer of relid (the sub-channels come after the primary's open result). */
static void wait_offer(struct fixture *f, uint32_t relid)
{
    int64_t deadline = now_ns() + (int64_t)WAIT_MS * 1000000;
    struct msg m;
    while (!offer_of(f, relid)) {
        if (now_ns() > deadline || !recv_msg(f, &m, WAIT_MS))
            fail_msg("no offer of relid %u", relid);
        if (m.type == VMBUS_MSG_OFFERCHANNEL && f->offer_count < MAX_OFFERS)
            f->offers[f->offer_count++] = m.u.offer;
    }
}

/* A model (1 VP, SynIC on) and a server with the default devices, connected at 6.0 with the
 * offers taken. own_instance: the test device gets an instance of the test's own. */
static struct fixture *fx_new(uint32_t hazards, bool own_instance)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    current = f;
    pthread_mutex_init(&f->lock, NULL);
    f->ram = aligned_alloc(4096, RAM_SIZE);
    assert_non_null(f->ram);
    memset(f->ram, 0, RAM_SIZE);
    struct hvsim_config hc = { .vp_count = 1, .log = record_log, .log_ctx = f };
    f->sim = hvsim_create(&hc, f->ram, RAM_SIZE, ignore_irq, f);
    assert_non_null(f->sim);
    wrmsr_ok(f, HV_MSR_GUEST_OS_ID, GUEST_OS_ID);
    wrmsr_ok(f, HV_MSR_HYPERCALL, HYPERCALL_GPA | HV_HYPERCALL_ENABLE);
    wrmsr_ok(f, HV_MSR_SIMP, SIMP_GPA | HV_PAGE_ENABLE);
    wrmsr_ok(f, HV_MSR_SIEFP, SIEFP_GPA | HV_PAGE_ENABLE);
    for (uint32_t s = 0; s < HV_SINT_COUNT; s++)
        wrmsr_ok(f, HV_MSR_SINT0 + s, 0x30u + s);
    wrmsr_ok(f, HV_MSR_SCONTROL, HV_SCONTROL_ENABLE);

    struct hvsim_vmbus_config cfg = { .hazards = hazards };
    if (own_instance) {
        f->vsp = hvsim_vsp_test_create();
        assert_non_null(f->vsp);
        f->devs = calloc(hvsim_vmbus_default_device_count, sizeof *f->devs);
        assert_non_null(f->devs);
        for (uint32_t i = 0; i < hvsim_vmbus_default_device_count; i++)
            f->devs[i] = hvsim_vmbus_default_devices[i];
        f->devs[TEST_RELID - 1] = hvsim_vsp_test_device(f->vsp);
        assert_string_equal(f->devs[TEST_RELID - 1].name, "hvsim-test");
        assert_ptr_equal(f->devs[TEST_RELID - 1].ctx, f->vsp);
        cfg.devices = f->devs;
    } else {
        cfg.devices = hvsim_vmbus_default_devices;
    }
    cfg.device_count = hvsim_vmbus_default_device_count;
    f->vb = hvsim_vmbus_create(f->sim, &cfg);
    assert_non_null(f->vb);

    struct vmbus_msg_initiate_contact ic = { .hdr.type = VMBUS_MSG_INITIATE_CONTACT, .version = VMBUS_VERSION_COPPER,
                                             .target_vcpu = 0, .target_info = VMBUS_TARGET_INFO(SINT, 0, 0),
                                             .monitor_page1 = MON1_GPA, .monitor_page2 = MON2_GPA };
    post_on(f, VMBUS_CONN_MESSAGE_MULTICLIENT, &ic, sizeof ic);
    struct msg m;
    expect(f, VMBUS_MSG_VERSION_RESPONSE, &m);
    assert_int_equal(m.u.version.v1.version_supported, 1);
    f->msg_conn = m.u.version.v1.msg_conn_id;
    struct vmbus_msg_header req = { .type = VMBUS_MSG_REQUESTOFFERS };
    post(f, &req, sizeof req);
    expect(f, VMBUS_MSG_ALLOFFERS_DELIVERED, &m);
    assert_int_equal(f->offer_count, hvsim_vmbus_default_device_count);
    assert_non_null(offer_of(f, TEST_RELID));
    f->next_page = ARENA_GPA;
    f->next_gpadl = 0x100;
    return f;
}

static void fx_free(struct fixture *f)
{
    if (!f)
        return;
    hvsim_vmbus_destroy(f->vb); /* closes what is open: on_close for each */
    if (f->vsp) {
        struct hvsim_vsp_test_stats s;
        hvsim_vsp_test_get_stats(f->vsp, &s);
        if (s.channels != 0 || s.opens != s.closes || s.backlog != 0)
            fprintf(stderr, "vsp state left after the server's destruction: %llu channels, %llu opens, %llu closes\n",
                    (unsigned long long)s.channels, (unsigned long long)s.opens, (unsigned long long)s.closes);
        hvsim_vsp_test_destroy(f->vsp);
    }
    hvsim_destroy(f->sim);
    free(f->devs);
    free(f->ram);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

static int teardown(void **state)
{
    (void)state;
    struct fixture *f = current;
    current = NULL;
    fx_free(f);
    return 0;
}

/* ---- the guest's side: channels and signals ---- */

static uint64_t alloc_pages(struct fixture *f, uint32_t n)
{
    uint64_t gpa = f->next_page;
    f->next_page += (uint64_t)n * 4096;
    assert_true(f->next_page <= RAM_SIZE);
    memset(f->ram + gpa, 0, (size_t)n * 4096);
    return gpa;
}

/* GPADL_HEADER (+ GPADL_BODYs) for n contiguous pages at gpa; waits for GPADL_CREATED. */
static uint32_t create_gpadl(struct fixture *f, uint32_t relid, uint64_t gpa, uint32_t n)
{
    uint32_t handle = f->next_gpadl++;
    uint8_t buf[HV_MESSAGE_PAYLOAD_MAX];
    struct vmbus_msg_gpadl_header h = { .hdr.type = VMBUS_MSG_GPADL_HEADER, .child_relid = relid, .gpadl = handle,
                                        .range_buflen = (uint16_t)(8 + 8 * n), .range_count = 1,
                                        .byte_count = n * 4096, .byte_offset = 0 };
    uint32_t here = n < VMBUS_GPADL_HEADER_PFNS ? n : (uint32_t)VMBUS_GPADL_HEADER_PFNS;
    memcpy(buf, &h, sizeof h);
    for (uint32_t i = 0; i < here; i++) {
        uint64_t pfn = (gpa >> 12) + i;
        memcpy(buf + sizeof h + i * 8, &pfn, 8);
    }
    post(f, buf, (uint32_t)sizeof h + here * 8);
    for (uint32_t done = here, number = 1; done < n; number++) {
        uint32_t k = n - done < VMBUS_GPADL_BODY_PFNS ? n - done : (uint32_t)VMBUS_GPADL_BODY_PFNS;
        struct vmbus_msg_gpadl_body b = { .hdr.type = VMBUS_MSG_GPADL_BODY, .msg_number = number, .gpadl = handle };
        memcpy(buf, &b, sizeof b);
        for (uint32_t i = 0; i < k; i++) {
            uint64_t pfn = (gpa >> 12) + done + i;
            memcpy(buf + sizeof b + i * 8, &pfn, 8);
        }
        post(f, buf, (uint32_t)sizeof b + k * 8);
        done += k;
    }
    struct msg m;
    expect(f, VMBUS_MSG_GPADL_CREATED, &m);
    assert_int_equal(m.u.created.gpadl, handle);
    assert_int_equal(m.u.created.status, 0);
    return handle;
}

/* Allocates and initialises the rings (as the guest does, before OPENCHANNEL) and attaches the
 * guest's endpoints. */
static void gch_rings(struct fixture *f, struct gch *g, uint32_t relid, uint32_t tx_pages, uint32_t rx_pages)
{
    memset(g, 0, sizeof *g);
    g->relid = relid;
    g->tx_pages = tx_pages;
    g->rx_pages = rx_pages;
    g->gpa = alloc_pages(f, tx_pages + rx_pages);
    assert_int_equal(kmcl_ring_attach_pages(&g->tx, KMCL_RING_WRITER, f->ram + g->gpa, tx_pages * 4096,
                                            KMCL_RING_ATTACH_INIT),
                     STATUS_OK);
    assert_int_equal(kmcl_ring_attach_pages(&g->rx, KMCL_RING_READER, f->ram + g->gpa + (uint64_t)tx_pages * 4096,
                                            rx_pages * 4096, KMCL_RING_ATTACH_INIT),
                     STATUS_OK);
    g->bounce_size = (rx_pages - 1) * 4096;
    g->bounce = malloc(g->bounce_size);
    assert_non_null(g->bounce);
}

static struct kmcl_ring_control *tx_control(struct fixture *f, struct gch *g)
{
    return (struct kmcl_ring_control *)(f->ram + g->gpa);
}

static struct kmcl_ring_control *rx_control(struct fixture *f, struct gch *g)
{
    return (struct kmcl_ring_control *)(f->ram + g->gpa + (uint64_t)g->tx_pages * 4096);
}

/* GPADL over both rings and OPENCHANNEL (target VP 0); the result must be success. */
static void gch_open_rings(struct fixture *f, struct gch *g)
{
    uint32_t handle = create_gpadl(f, g->relid, g->gpa, g->tx_pages + g->rx_pages);
    struct vmbus_msg_open_channel o = { .hdr.type = VMBUS_MSG_OPENCHANNEL, .child_relid = g->relid,
                                        .open_id = g->relid + 100, .ring_gpadl = handle, .target_vp = 0,
                                        .downstream_ring_page_offset = g->tx_pages };
    post(f, &o, sizeof o);
    struct msg m;
    expect(f, VMBUS_MSG_OPENCHANNEL_RESULT, &m);
    assert_int_equal(m.u.open.child_relid, g->relid);
    assert_int_equal(m.u.open.status, 0);
}

static void gch_open(struct fixture *f, struct gch *g, uint32_t relid, uint32_t tx_pages, uint32_t rx_pages)
{
    gch_rings(f, g, relid, tx_pages, rx_pages);
    gch_open_rings(f, g);
}

static void gch_close(struct fixture *f, struct gch *g)
{
    struct vmbus_msg_relid m = { .hdr.type = VMBUS_MSG_CLOSECHANNEL, .child_relid = g->relid };
    post(f, &m, sizeof m);
    flush(f);
}

static void gch_free(struct gch *g)
{
    free(g->bounce);
    g->bounce = NULL;
}

/* HvSignalEvent on the channel's connection id. */
static void guest_signal(struct fixture *f, uint32_t relid)
{
    uint64_t r = hvsim_hypercall(f->sim, 0, HV_CALL_SIGNAL_EVENT | HV_HYPERCALL_FAST,
                                 HVSIM_VMBUS_CONN_CHANNEL_BASE + relid, 0);
    assert_int_equal(HV_HYPERCALL_STATUS(r), HV_STATUS_SUCCESS);
}

/* Takes the host's signal for relid (its SIEF bit), if set. */
static bool take_signal(struct fixture *f, uint32_t relid)
{
    uint64_t *w = (uint64_t *)(f->ram + SIEFP_GPA + SINT * 256u) + relid / 64;
    uint64_t bit = 1ull << (relid % 64);
    return __atomic_fetch_and(w, ~bit, __ATOMIC_SEQ_CST) & bit;
}

static bool wait_signal(struct fixture *f, uint32_t relid, int timeout_ms)
{
    int64_t deadline = now_ns() + (int64_t)timeout_ms * 1000000;
    for (;;) {
        if (take_signal(f, relid))
            return true;
        if (now_ns() > deadline)
            return false;
        sleep_us(10);
    }
}

typedef void (*pkt_fn)(void *ctx, const struct kmcl_ring_packet *p);

/* Reads up to max packets that are there now (fn for each), publishing as a guest does and
 * signalling the host when the reader says so. Returns how many were read. */
static unsigned rx_drain(struct fixture *f, struct gch *g, unsigned max, pkt_fn fn, void *ctx)
{
    unsigned n = 0;
    bool more;
    do {
        kmcl_ring_begin_read(&g->rx);
        struct kmcl_ring_packet p;
        status_t s = STATUS_NOT_FOUND;
        while (n < max && (s = kmcl_ring_peek(&g->rx, &p, g->bounce, g->bounce_size)) == STATUS_OK) {
            g->bounced += p.bounced;
            fn(ctx, &p);
            kmcl_ring_consume(&g->rx);
            n++;
        }
        if (n < max && s != STATUS_NOT_FOUND) {
            const struct kmcl_ring_failure *why = kmcl_ring_failure(&g->rx);
            fail_msg("guest reader of relid %u: peek status %d: %s", g->relid, s,
                     why && why->reason ? why->reason : "-");
        }
        bool signal_writer = false;
        more = kmcl_ring_end_read(&g->rx, &signal_writer);
        if (signal_writer)
            guest_signal(f, g->relid);
    } while (more && n < max);
    return n;
}

/* Writes a packet into the guest -> host ring, signalling as the writer says; while the ring is
 * full, reads the host's packets (fn) and waits for the host's signal (a lost one fails). */
static void tx_write(struct fixture *f, struct gch *g, const struct kmcl_ring_out *out, pkt_fn fn, void *ctx)
{
    for (;;) {
        bool signal = false;
        status_t s = kmcl_ring_write(&g->tx, out, 0, &signal);
        if (signal)
            guest_signal(f, g->relid);
        if (s == STATUS_OK)
            return;
        assert_int_equal(s, STATUS_NO_SPACE);
        if (rx_drain(f, g, ~0u, fn, ctx))
            continue;
        /* Nothing to read: the host must signal once it has made the room pending_send_sz asks for
         * (or written to us). No polling here, so a signal the host forgets fails the test. */
        if (!wait_signal(f, g->relid, WAIT_MS)) {
            dump_logs(f);
            fail_msg("relid %u: the guest -> host ring full and no signal from the host for %d ms", g->relid,
                     WAIT_MS);
        }
    }
}

static void tx_inband(struct fixture *f, struct gch *g, uint64_t trans, uint16_t flags, const void *payload,
                      uint32_t len, pkt_fn fn, void *ctx)
{
    struct kmcl_iov iov = { .base = payload, .len = len };
    struct kmcl_ring_out out = { .type = KMCL_PKT_DATA_INBAND, .flags = flags, .trans_id = trans, .iov = &iov,
                                 .iov_count = len ? 1 : 0 };
    tx_write(f, g, &out, fn, ctx);
}

static void tx_op(struct fixture *f, struct gch *g, uint64_t trans, uint16_t flags, uint32_t op, pkt_fn fn, void *ctx)
{
    uint32_t words[2] = { op, 0 };
    tx_inband(f, g, trans, flags, words, sizeof words, fn, ctx);
}

/* Reads what is there (fn for each packet); if nothing, waits for the host's signal: false if none
 * came within WAIT_MS. */
static bool rx_more(struct fixture *f, struct gch *g, pkt_fn fn, void *ctx)
{
    return rx_drain(f, g, ~0u, fn, ctx) || wait_signal(f, g->relid, WAIT_MS);
}

/* A packet copied out, for tests that look at one answer at a time. */
struct copy {
    unsigned count;
    struct kmcl_pkt_desc desc;
    uint32_t len;
    uint8_t payload[16384];
};

static void copy_pkt(void *ctx, const struct kmcl_ring_packet *p)
{
    struct copy *c = ctx;
    c->count++;
    c->desc = p->desc;
    c->len = kmcl_pkt_payload_len(p);
    assert_true(c->len <= sizeof c->payload);
    memcpy(c->payload, kmcl_pkt_payload(p), c->len);
}

static void no_pkt(void *ctx, const struct kmcl_ring_packet *p)
{
    (void)ctx;
    fail_msg("unexpected packet: type %u, trans 0x%llx", p->desc.type, (unsigned long long)p->desc.trans_id);
}

/* The next packet from the host (waits for it, WAIT_MS). */
static void rx_one(struct fixture *f, struct gch *g, struct copy *c)
{
    unsigned before = c->count;
    while (c->count == before) {
        if (rx_drain(f, g, 1, copy_pkt, c))
            break;
        if (!wait_signal(f, g->relid, WAIT_MS)) {
            dump_logs(f);
            fail_msg("relid %u: no packet from the host for %d ms", g->relid, WAIT_MS);
        }
    }
}

/* The host has nothing for us: idle server, empty ring. */
static void expect_no_packet(struct fixture *f, struct gch *g)
{
    flush(f);
    assert_int_equal(rx_drain(f, g, ~0u, no_pkt, NULL), 0);
}

/* ECHO of `len` bytes on g, answer checked. */
static void echo_once(struct fixture *f, struct gch *g, uint64_t trans, uint32_t len)
{
    uint8_t buf[256] = { 0 };
    assert_true(len >= 4 && len <= sizeof buf);
    uint32_t op = HVSIM_VSP_TEST_OP_ECHO;
    memcpy(buf, &op, 4);
    for (uint32_t k = 4; k < len; k++)
        buf[k] = (uint8_t)(trans * 3 + k);
    tx_inband(f, g, trans, 0, buf, len, no_pkt, NULL);
    struct copy c = { 0 };
    rx_one(f, g, &c);
    assert_int_equal(c.desc.type, KMCL_PKT_DATA_INBAND);
    assert_int_equal(c.desc.trans_id, trans);
    assert_int_equal(c.desc.flags, 0);
    assert_int_equal(c.len, round8(len));
    assert_memory_equal(c.payload, buf, len);
}

/* ---- tests ---- */

/* In-band echo of every size class from 8 to 4000 bytes through 4 KiB rings (each packet fills
 * most of a ring): thousands of wrap-arounds both ways, wrapped packets on both sides, and the
 * guest's writer waiting for the host to make room (pending_send_sz) while it reads the echoes. */
#define ECHO_COUNT 2000u

struct echo_check {
    unsigned received;
    uint64_t bytes;
};

static uint32_t echo_size(unsigned i)
{
    return 8u + (i * 997u) % 3993u; /* 8 .. 4000 */
}

static void echo_fill(uint8_t *buf, unsigned i, uint32_t len)
{
    uint32_t head[2] = { HVSIM_VSP_TEST_OP_ECHO, i };
    memcpy(buf, head, sizeof head);
    for (uint32_t k = sizeof head; k < len; k++)
        buf[k] = (uint8_t)(i * 7u + k);
}

static void echo_check_pkt(void *ctx, const struct kmcl_ring_packet *p)
{
    struct echo_check *e = ctx;
    unsigned i = e->received++;
    uint32_t len = echo_size(i);
    static uint8_t want[4096];
    echo_fill(want, i, len);
    assert_int_equal(p->desc.type, KMCL_PKT_DATA_INBAND);
    assert_int_equal(p->desc.trans_id, 1000000u + i);
    assert_int_equal(p->desc.flags, 0);
    assert_int_equal(kmcl_pkt_payload_len(p), round8(len));
    assert_memory_equal(kmcl_pkt_payload(p), want, len);
    for (uint32_t k = len; k < round8(len); k++)
        assert_int_equal(kmcl_pkt_payload(p)[k], 0); /* the writer's padding */
    e->bytes += p->len;
}

static void test_echo_sizes_wrap(void **state)
{
    (void)state;
    struct fixture *f = fx_new(0, true);
    struct gch g;
    gch_open(f, &g, TEST_RELID, 2, 2); /* 4 KiB of data each way */
    struct echo_check e = { 0 };
    static uint8_t buf[4096];
    for (unsigned i = 0; i < ECHO_COUNT; i++) {
        uint32_t len = echo_size(i);
        echo_fill(buf, i, len);
        tx_inband(f, &g, 1000000u + i, 0, buf, len, echo_check_pkt, &e);
    }
    while (e.received < ECHO_COUNT)
        if (!rx_more(f, &g, echo_check_pkt, &e))
            fail_msg("echo %u of %u did not come", e.received, ECHO_COUNT);
    expect_no_packet(f, &g);
    assert_true(e.bytes / 4096 > 500); /* that many laps of the host -> guest ring */
    assert_true(g.bounced > 100);      /* wrapped packets read through the guest's bounce buffer */
    struct hvsim_vsp_test_stats s = vstats(f);
    assert_int_equal(s.echoes, ECHO_COUNT);
    assert_int_equal(s.packets_in[KMCL_PKT_DATA_INBAND], ECHO_COUNT);
    assert_int_equal(s.packets_out[KMCL_PKT_DATA_INBAND], ECHO_COUNT);
    assert_int_equal(s.failures, 0);
    assert_int_equal(s.too_big, 0);
    assert_int_equal(s.channels, 1);
    assert_true(s.signals_out > 0);
    assert_int_equal(failed_lines(f, NULL, 0), 0);
    gch_free(&g);
}

/* Completions: ECHO_COMPLETION with the flag gets a completion with its trans_id and payload;
 * without it, nothing; ECHO with the flag gets the echo, then the completion. The ids come from a
 * kmcl transaction table, so a wrong or duplicated trans_id fails kmcl_xact_complete. */
struct xact_check {
    struct kmcl_xact_table t;
    unsigned completions, echoes;
    uint64_t last_echo; /* trans_id of the last echo, whose completion must follow it */
};

static void xact_pkt(void *ctx, const struct kmcl_ring_packet *p)
{
    struct xact_check *x = ctx;
    uint32_t words[2];
    assert_true(kmcl_pkt_payload_len(p) >= sizeof words);
    memcpy(words, kmcl_pkt_payload(p), sizeof words);
    void *context;
    if (p->desc.type == KMCL_PKT_DATA_INBAND) {
        assert_int_equal(words[0], HVSIM_VSP_TEST_OP_ECHO);
        assert_int_equal(kmcl_xact_lookup(&x->t, p->desc.trans_id, &context), STATUS_OK);
        assert_int_equal((uintptr_t)context, words[1]);
        x->echoes++;
        x->last_echo = p->desc.trans_id;
        return;
    }
    assert_int_equal(p->desc.type, KMCL_PKT_COMPLETION);
    if (words[0] == HVSIM_VSP_TEST_OP_ECHO) {
        assert_int_equal(p->desc.trans_id, x->last_echo); /* right after its echo */
        x->last_echo = 0;
    } else {
        assert_int_equal(words[0], HVSIM_VSP_TEST_OP_ECHO_COMPLETION);
    }
    assert_int_equal(kmcl_xact_complete(&x->t, p->desc.trans_id, &context), STATUS_OK);
    assert_int_equal((uintptr_t)context, words[1]); /* the request's own payload */
    x->completions++;
}

static void test_completion_echo(void **state)
{
    (void)state;
    struct fixture *f = fx_new(0, true);
    struct gch g;
    gch_open(f, &g, TEST_RELID, 8, 2); /* room for every request; 4 KiB for the answers */
    struct kmcl_xact_slot slots[32];
    struct xact_check x = { 0 };
    assert_int_equal(kmcl_xact_init(&x.t, slots, 32), STATUS_OK);
    unsigned want_completions = 0, want_echoes = 0, unrequested = 0;
    for (uint32_t i = 1; i <= 300; i++) {
        uint32_t kind = i % 3;
        /* 400 bytes: the answers of the 32 requests the guest sends before it reads (its
         * transaction table is full) need several times the 4 KiB ring: the host waits for room. */
        uint32_t words[100] = { kind == 1 ? HVSIM_VSP_TEST_OP_ECHO : HVSIM_VSP_TEST_OP_ECHO_COMPLETION, i, ~i, i * 5 };
        if (kind == 2) { /* no completion asked: dropped */
            tx_inband(f, &g, 0xabc00000u + i, 0, words, sizeof words, xact_pkt, &x);
            unrequested++;
            continue;
        }
        uint64_t id;
        while (kmcl_xact_alloc(&x.t, (void *)(uintptr_t)i, &id) == STATUS_NO_SPACE) { /* wait for completions */
            flush(f); /* the host has taken what it can: its ring is full of answers, the rest queued */
            assert_true(rx_more(f, &g, xact_pkt, &x));
        }
        tx_inband(f, &g, id, KMCL_PKT_FLAG_COMPLETION_REQUESTED, words, sizeof words, xact_pkt, &x);
        want_completions++;
        want_echoes += kind == 1;
    }
    while (kmcl_xact_outstanding(&x.t))
        if (!rx_more(f, &g, xact_pkt, &x))
            fail_msg("%u completions outstanding", kmcl_xact_outstanding(&x.t));
    expect_no_packet(f, &g);
    assert_int_equal(x.completions, want_completions);
    assert_int_equal(x.echoes, want_echoes);
    struct hvsim_vsp_test_stats s = vstats(f);
    assert_int_equal(s.completions_out, want_completions);
    assert_int_equal(s.packets_out[KMCL_PKT_COMPLETION], want_completions);
    assert_int_equal(s.echoes, want_echoes);
    assert_int_equal(s.completion_unrequested, unrequested);
    assert_int_equal(s.packets_in[KMCL_PKT_DATA_INBAND], 300);
    assert_true(s.ring_full > 0);

    /* An echo that fits the ring with room for its completion only once the guest has read it:
     * the host stops between the two and, on the guest's signal, sends the completion, not the
     * echo again. */
    static uint8_t big[2500];
    uint32_t op = HVSIM_VSP_TEST_OP_ECHO;
    memcpy(big, &op, sizeof op);
    tx_inband(f, &g, 0xb16, KMCL_PKT_FLAG_COMPLETION_REQUESTED, big, sizeof big, no_pkt, NULL);
    flush(f);
    uint64_t full_before = s.ring_full;
    s = vstats(f);
    assert_int_equal(s.ring_full, full_before + 1);
    assert_int_equal(s.echoes, want_echoes + 1);
    struct copy c = { 0 };
    rx_one(f, &g, &c);
    assert_int_equal(c.desc.type, KMCL_PKT_DATA_INBAND);
    assert_int_equal(c.desc.trans_id, 0xb16);
    assert_int_equal(c.len, round8(sizeof big));
    rx_one(f, &g, &c);
    assert_int_equal(c.desc.type, KMCL_PKT_COMPLETION);
    assert_int_equal(c.desc.trans_id, 0xb16);
    assert_memory_equal(c.payload, big, sizeof big);
    expect_no_packet(f, &g);
    s = vstats(f);
    assert_int_equal(s.echoes, want_echoes + 1);
    assert_int_equal(s.completions_out, want_completions + 1);
    assert_int_equal(s.packets_in[KMCL_PKT_DATA_INBAND], 301);
    gch_free(&g);
}

/* SEND_N of 10,000 packets into a 4 KiB ring whose reader takes a few packets at a time: the host
 * stops each time the ring is full and resumes on the guest's signal (pending_send_sz). The
 * completion comes after the last packet, and an ECHO sent behind the SEND_N after that. */
#define SEND_N_COUNT 10000u
#define SEND_N_SIZE 100u

struct send_n_check {
    uint32_t next_seq;
    bool completed, echoed;
};

static void send_n_pkt(void *ctx, const struct kmcl_ring_packet *p)
{
    struct send_n_check *c = ctx;
    const uint8_t *b = kmcl_pkt_payload(p);
    if (p->desc.type == KMCL_PKT_COMPLETION) {
        assert_false(c->completed);
        assert_int_equal(c->next_seq, SEND_N_COUNT);
        assert_int_equal(p->desc.trans_id, 0x5e4du);
        struct hvsim_vsp_test_send_n_result r;
        assert_int_equal(kmcl_pkt_payload_len(p), round8(sizeof r));
        memcpy(&r, b, sizeof r);
        assert_int_equal(r.status, HVSIM_VSP_TEST_STATUS_OK);
        assert_int_equal(r.count, SEND_N_COUNT);
        c->completed = true;
        return;
    }
    assert_int_equal(p->desc.type, KMCL_PKT_DATA_INBAND);
    if (p->desc.trans_id == 0xec0u) {
        assert_true(c->completed); /* answers keep their order */
        c->echoed = true;
        return;
    }
    assert_int_equal(p->desc.trans_id, 0x5e4du);
    assert_int_equal(kmcl_pkt_payload_len(p), round8(SEND_N_SIZE));
    struct hvsim_vsp_test_data_header h;
    memcpy(&h, b, sizeof h);
    assert_int_equal(h.op, HVSIM_VSP_TEST_OP_DATA);
    assert_int_equal(h.seq, c->next_seq);
    for (uint32_t k = sizeof h; k < SEND_N_SIZE; k++)
        if (b[k] != (uint8_t)(h.seq + k))
            fail_msg("seq %u byte %u: 0x%02x", h.seq, k, b[k]);
    c->next_seq++;
}

static void test_send_n_backpressure(void **state)
{
    (void)state;
    struct fixture *f = fx_new(0, true);
    struct gch g;
    gch_open(f, &g, TEST_RELID, 2, 2);
    struct send_n_check c = { 0 };
    struct hvsim_vsp_test_send_n req = { .op = HVSIM_VSP_TEST_OP_SEND_N, .count = SEND_N_COUNT, .size = SEND_N_SIZE };
    tx_inband(f, &g, 0x5e4du, KMCL_PKT_FLAG_COMPLETION_REQUESTED, &req, sizeof req, send_n_pkt, &c);
    tx_op(f, &g, 0xec0u, 0, HVSIM_VSP_TEST_OP_ECHO, send_n_pkt, &c);
    uint32_t peak_backlog = 0;
    while (!c.echoed) {
        unsigned n = rx_drain(f, &g, 7, send_n_pkt, &c); /* a slow reader: 7 packets, then a pause */
        if (n) {
            if (c.next_seq % 1000 < 7) {
                uint64_t b = vstats(f).backlog;
                peak_backlog = b > peak_backlog ? (uint32_t)b : peak_backlog;
            }
            sleep_us(5);
            continue;
        }
        if (!wait_signal(f, g.relid, WAIT_MS)) { /* strict: a lost signal fails */
            dump_logs(f);
            fail_msg("SEND_N stalled at seq %u: no signal for %d ms", c.next_seq, WAIT_MS);
        }
    }
    expect_no_packet(f, &g);
    assert_int_equal(c.next_seq, SEND_N_COUNT);
    struct hvsim_vsp_test_stats s = vstats(f);
    assert_int_equal(s.send_n_requests, 1);
    assert_int_equal(s.send_n_packets, SEND_N_COUNT);
    assert_int_equal(s.backlog, 0);
    assert_true(peak_backlog > 0);
    assert_true(s.ring_full > 10); /* it really waited for room, many times */
    assert_int_equal(s.packets_out[KMCL_PKT_DATA_INBAND], SEND_N_COUNT + 1);
    assert_int_equal(s.packets_out[KMCL_PKT_COMPLETION], 1);
    assert_int_equal(s.failures, 0);
    gch_free(&g);
}

/* GPA direct: the checksum of a buffer of several pages in two ranges, a range outside RAM, a pfn
 * whose address overflows, and a request without the completion flag (no answer). */
static void test_gpa_checksum(void **state)
{
    (void)state;
    struct fixture *f = fx_new(0, true);
    struct gch g;
    gch_open(f, &g, TEST_RELID, 4, 2);
    uint64_t buf = alloc_pages(f, 6);
    struct rng r;
    rng_seed(&r, 42);
    for (uint32_t i = 0; i < 6 * 4096; i++)
        f->ram[buf + i] = (uint8_t)rng_next(&r);
    /* Range 1: 12,788 bytes from offset 100 of page 0 (4 pages); range 2: 1 byte at page 5's end;
     * the pages of range 1 given out of order to check that they are followed as listed. */
    uint64_t pfn1[4] = { (buf >> 12) + 0, (buf >> 12) + 2, (buf >> 12) + 1, (buf >> 12) + 3 };
    uint64_t pfn2[1] = { (buf >> 12) + 5 };
    struct kmcl_page_range ranges[2] = { { .byte_count = 3 * 4096 + 500, .byte_offset = 100, .pfns = pfn1 },
                                         { .byte_count = 1, .byte_offset = 4095, .pfns = pfn2 } };
    uint32_t want = HVSIM_VSP_TEST_FNV_BASIS;
    want = fnv1a(want, f->ram + buf + 100, 4096 - 100);
    want = fnv1a(want, f->ram + buf + 2 * 4096, 4096);
    want = fnv1a(want, f->ram + buf + 1 * 4096, 4096);
    want = fnv1a(want, f->ram + buf + 3 * 4096, 500 + 100);
    want = fnv1a(want, f->ram + buf + 5 * 4096 + 4095, 1);
    uint32_t tag = 0x77;
    struct kmcl_iov payload = { .base = &tag, .len = sizeof tag };
    bool signal = false;
    assert_int_equal(kmcl_pkt_send_gpa_direct(&g.tx, 0x9a0, KMCL_PKT_FLAG_COMPLETION_REQUESTED, ranges, 2, &payload,
                                              1, 0, &signal),
                     STATUS_OK);
    if (signal)
        guest_signal(f, g.relid);
    struct copy c = { 0 };
    rx_one(f, &g, &c);
    assert_int_equal(c.desc.type, KMCL_PKT_COMPLETION);
    assert_int_equal(c.desc.trans_id, 0x9a0);
    struct hvsim_vsp_test_gpa_result res;
    assert_int_equal(c.len, round8(sizeof res));
    memcpy(&res, c.payload, sizeof res);
    assert_int_equal(res.status, HVSIM_VSP_TEST_STATUS_OK);
    assert_int_equal(res.byte_count, 3 * 4096 + 500 + 1);
    assert_int_equal(res.checksum, want);

    /* A page past the end of RAM, and one whose address overflows 64 bits. */
    uint64_t bad[2] = { RAM_SIZE / 4096 + 10, 1ull << 60 };
    for (int i = 0; i < 2; i++) {
        struct kmcl_page_range br[2] = { ranges[1], { .byte_count = 64, .byte_offset = 0, .pfns = &bad[i] } };
        assert_int_equal(kmcl_pkt_send_gpa_direct(&g.tx, 0x9b0 + i, KMCL_PKT_FLAG_COMPLETION_REQUESTED, br, 2, NULL, 0,
                                                  0, &signal),
                         STATUS_OK);
        if (signal)
            guest_signal(f, g.relid);
        rx_one(f, &g, &c);
        assert_int_equal(c.desc.type, KMCL_PKT_COMPLETION);
        assert_int_equal(c.desc.trans_id, 0x9b0 + i);
        memcpy(&res, c.payload, sizeof res);
        assert_int_equal(res.status, HVSIM_VSP_TEST_STATUS_BAD_RANGE);
        assert_int_equal(res.byte_count, 0);
        assert_int_equal(res.checksum, 0);
    }
    /* Without the flag: checksummed, no answer. */
    assert_int_equal(kmcl_pkt_send_gpa_direct(&g.tx, 0x9c0, 0, ranges, 1, NULL, 0, 0, &signal), STATUS_OK);
    if (signal)
        guest_signal(f, g.relid);
    expect_no_packet(f, &g);
    struct hvsim_vsp_test_stats s = vstats(f);
    assert_int_equal(s.packets_in[KMCL_PKT_DATA_GPA_DIRECT], 4);
    assert_int_equal(s.gpa_requests, 4);
    assert_int_equal(s.gpa_bad_ranges, 2);
    assert_int_equal(s.gpa_bytes, (3 * 4096 + 500 + 1) + (3 * 4096 + 500));
    assert_int_equal(s.completions_out, 3);
    assert_int_equal(s.failures, 0);
    gch_free(&g);
}

/* SIGNAL_ONLY: a signal, no packet. A guest signal with nothing in the ring: answered by a signal,
 * through HvSignalEvent and through the monitor page (the raw-VMBus probe's check). */
static void test_signal_only_and_idle(void **state)
{
    (void)state;
    struct fixture *f = fx_new(0, true);
    struct gch g;
    gch_open(f, &g, TEST_RELID, 2, 2);
    flush(f);
    (void)take_signal(f, g.relid);
    tx_op(f, &g, 0x51, 0, HVSIM_VSP_TEST_OP_SIGNAL_ONLY, no_pkt, NULL);
    assert_true(wait_signal(f, g.relid, WAIT_MS));
    expect_no_packet(f, &g);
    struct hvsim_vsp_test_stats s = vstats(f);
    assert_int_equal(s.signal_only, 1);
    assert_int_equal(s.idle_signals, 0);
    assert_false(take_signal(f, g.relid)); /* exactly one */

    guest_signal(f, g.relid); /* nothing in the ring */
    assert_true(wait_signal(f, g.relid, WAIT_MS));
    assert_int_equal(vstats(f).idle_signals, 1);

    /* The monitor page: the test device is monitored. */
    const struct vmbus_msg_offer_channel *o = offer_of(f, TEST_RELID);
    assert_int_equal(o->monitor_allocated & 1, 1);
    uint32_t *pending = (uint32_t *)(f->ram + MON2_GPA + offsetof(struct vmbus_monitor_page, trigger_group) +
                                     (o->monitor_id / 32) * sizeof(struct vmbus_monitor_trigger_group) +
                                     offsetof(struct vmbus_monitor_trigger_group, pending));
    __atomic_fetch_or(pending, 1u << (o->monitor_id % 32), __ATOMIC_SEQ_CST);
    assert_true(wait_signal(f, g.relid, WAIT_MS));
    flush(f);
    assert_int_equal(vstats(f).idle_signals, 2);
    expect_no_packet(f, &g);
    gch_free(&g);
}

/* Unknown opcodes, transfer-page packets and malformed requests: counted, refused with a status
 * completion when one was asked for (every packet is completed), nothing else; the channel keeps
 * working. */
static void test_unknown_and_bad_requests(void **state)
{
    (void)state;
    struct fixture *f = fx_new(0, true);
    struct gch g;
    gch_open(f, &g, TEST_RELID, 2, 2);
    struct {
        uint64_t trans;
        uint32_t status;
    } refusals[] = { { 1, HVSIM_VSP_TEST_STATUS_UNKNOWN_OPCODE }, { 3, HVSIM_VSP_TEST_STATUS_BAD_REQUEST },
                     { 6, HVSIM_VSP_TEST_STATUS_BAD_REQUEST } };
    tx_op(f, &g, 1, KMCL_PKT_FLAG_COMPLETION_REQUESTED, 99, no_pkt, NULL);  /* unknown opcode */
    tx_op(f, &g, 2, 0, 0, no_pkt, NULL);                                    /* opcode 0, no flag */
    tx_inband(f, &g, 3, KMCL_PKT_FLAG_COMPLETION_REQUESTED, NULL, 0, no_pkt, NULL); /* no opcode */
    uint32_t short_send_n[2] = { HVSIM_VSP_TEST_OP_SEND_N, 5 };             /* no size, no flag */
    tx_inband(f, &g, 4, 0, short_send_n, sizeof short_send_n, no_pkt, NULL);
    uint32_t done = 0;
    struct kmcl_iov iov = { .base = &done, .len = sizeof done };
    struct kmcl_xfer_range xr = { .byte_count = 8, .byte_offset = 0 };
    bool signal = false;
    assert_int_equal(kmcl_pkt_send_xfer(&g.tx, 5, 0, 1, 0, &xr, 1, &iov, 1, 0, &signal), STATUS_OK); /* type 7 */
    if (signal)
        guest_signal(f, g.relid);
    assert_int_equal(kmcl_pkt_send_xfer(&g.tx, 6, KMCL_PKT_FLAG_COMPLETION_REQUESTED, 1, 0, &xr, 1, &iov, 1, 0,
                                        &signal),
                     STATUS_OK);
    if (signal)
        guest_signal(f, g.relid);
    for (unsigned i = 0; i < sizeof refusals / sizeof refusals[0]; i++) {
        struct copy c = { 0 };
        rx_one(f, &g, &c);
        assert_int_equal(c.desc.type, KMCL_PKT_COMPLETION);
        assert_int_equal(c.desc.trans_id, refusals[i].trans);
        uint32_t status;
        assert_true(c.len >= sizeof status);
        memcpy(&status, c.payload, sizeof status);
        assert_int_equal(status, refusals[i].status);
    }
    expect_no_packet(f, &g);
    /* SEND_N with sizes that cannot be sent: no packets; with the flag, a BAD_REQUEST completion. */
    struct hvsim_vsp_test_send_n bad_sizes[3] = { { HVSIM_VSP_TEST_OP_SEND_N, 3, 4 },
                                                  { HVSIM_VSP_TEST_OP_SEND_N, 3, 4096 },
                                                  { HVSIM_VSP_TEST_OP_SEND_N, 3, 0xFFFFFFFFu } };
    for (int i = 0; i < 3; i++) {
        tx_inband(f, &g, 10 + i, KMCL_PKT_FLAG_COMPLETION_REQUESTED, &bad_sizes[i], sizeof bad_sizes[i], no_pkt, NULL);
        struct copy c = { 0 };
        rx_one(f, &g, &c);
        assert_int_equal(c.desc.type, KMCL_PKT_COMPLETION);
        assert_int_equal(c.desc.trans_id, 10 + i);
        struct hvsim_vsp_test_send_n_result r;
        memcpy(&r, c.payload, sizeof r);
        assert_int_equal(r.status, HVSIM_VSP_TEST_STATUS_BAD_REQUEST);
        assert_int_equal(r.count, 0);
    }
    /* The largest size this 4 KiB ring takes works (4096 - 8 free - 16 descriptor - 8 trailer). */
    struct hvsim_vsp_test_send_n big = { HVSIM_VSP_TEST_OP_SEND_N, 2, 4064 };
    tx_inband(f, &g, 20, 0, &big, sizeof big, no_pkt, NULL);
    struct copy c = { 0 };
    rx_one(f, &g, &c);
    rx_one(f, &g, &c);
    assert_int_equal(c.count, 2);
    assert_int_equal(c.len, 4064);
    echo_once(f, &g, 30, 24);
    expect_no_packet(f, &g);
    struct hvsim_vsp_test_stats s = vstats(f);
    assert_int_equal(s.unknown_opcodes, 2);
    assert_int_equal(s.bad_requests, 2 + 3);
    assert_int_equal(s.unknown_types, 2);
    assert_int_equal(s.packets_in[KMCL_PKT_DATA_XFER_PAGES], 2);
    assert_int_equal(s.send_n_requests, 4);
    assert_int_equal(s.send_n_packets, 2);
    assert_int_equal(s.failures, 0);
    assert_int_equal(failed_lines(f, NULL, 0), 0);
    gch_free(&g);
}

/* Packets that get no answer (ECHO_COMPLETION and unknown opcodes without the completion flag),
 * many times the guest -> host ring. The guest writes deferred (KMCL_RING_WRITE_DEFER): nothing is published, so the host
 * does not run, until the ring is full; then kmcl publishes the batch, asks for room
 * (pending_send_sz) and says to signal. Each round the host drains the ring and only its "room
 * again" signal wakes the guest: a host that forgets it fails here. */
static void test_flood_without_answers(void **state)
{
    (void)state;
    struct fixture *f = fx_new(0, true);
    struct gch g;
    gch_open(f, &g, TEST_RELID, 2, 2);
    static uint8_t body[400];
    unsigned waits = 0;
    for (uint32_t i = 0; i < 2000; i++) {
        uint32_t op = i % 2 ? 1000 + i : HVSIM_VSP_TEST_OP_ECHO_COMPLETION;
        memcpy(body, &op, sizeof op);
        struct kmcl_iov iov = { .base = body, .len = 8 + (i * 56) % sizeof body };
        struct kmcl_ring_out out = { .type = KMCL_PKT_DATA_INBAND, .trans_id = i, .iov = &iov, .iov_count = 1 };
        for (;;) {
            bool signal = false;
            status_t st = kmcl_ring_write(&g.tx, &out, KMCL_RING_WRITE_DEFER, &signal);
            if (signal)
                guest_signal(f, g.relid);
            if (st == STATUS_OK)
                break;
            assert_int_equal(st, STATUS_NO_SPACE);
            waits++;
            if (!wait_signal(f, g.relid, WAIT_MS)) {
                dump_logs(f);
                fail_msg("packet %u: no \"room again\" signal from the host for %d ms", i, WAIT_MS);
            }
        }
    }
    if (kmcl_ring_flush(&g.tx))
        guest_signal(f, g.relid);
    expect_no_packet(f, &g);
    assert_true(waits > 50); /* about 460 KB through a 4 KiB ring */
    struct hvsim_vsp_test_stats s = vstats(f);
    assert_int_equal(s.completion_unrequested, 1000);
    assert_int_equal(s.unknown_opcodes, 1000);
    assert_int_equal(s.packets_out[KMCL_PKT_DATA_INBAND] + s.packets_out[KMCL_PKT_COMPLETION], 0);
    assert_true(s.signals_out >= waits);
    gch_free(&g);
}

/* HVSIM_VMBUS_SEND_ON_OPEN: a HELLO is in the ring when the open result arrives (primary and
 * sub-channel), the channel is signalled, and the channel works as usual afterwards. */
static void test_send_on_open(void **state)
{
    (void)state;
    struct fixture *f = fx_new(HVSIM_VMBUS_SEND_ON_OPEN, true);
    struct gch g[2];
    uint32_t relids[2] = { TEST_RELID, SUB1_RELID };
    for (int i = 0; i < 2; i++) {
        if (i)
            wait_offer(f, relids[i]);
        gch_open(f, &g[i], relids[i], 2, 2);
        /* Right at the open result, before any signal or read of ours: the packet is there. */
        assert_true(kmcl_ring_read_available(&g[i].rx) > 0);
        assert_true(wait_signal(f, relids[i], WAIT_MS)); /* the server's signal after the result */
        struct copy c = { 0 };
        rx_one(f, &g[i], &c);
        assert_int_equal(c.desc.type, KMCL_PKT_DATA_INBAND);
        assert_int_equal(c.desc.trans_id, 0);
        struct hvsim_vsp_test_hello h;
        assert_int_equal(c.len, sizeof h);
        memcpy(&h, c.payload, sizeof h);
        assert_int_equal(h.op, HVSIM_VSP_TEST_OP_HELLO);
        assert_int_equal(h.relid, relids[i]);
    }
    echo_once(f, &g[0], 1, 16);
    echo_once(f, &g[1], 2, 200);
    expect_no_packet(f, &g[0]);
    expect_no_packet(f, &g[1]);
    assert_int_equal(vstats(f).hellos, 2);
    gch_free(&g[0]);
    gch_free(&g[1]);
}

/* Hostile rings: each failure is one log line, the channel is no longer served (no answers, no
 * signals), the others go on, nothing crashes. (a) the guest -> host write index outside the data
 * area; (b) a packet whose length exceeds what was published; (c) indices already bad at open;
 * (d) a bad read index in the host -> guest ring, found when the host waits for room. */
static void test_garbage_rings_fail(void **state)
{
    (void)state;
    struct fixture *f = fx_new(0, true);
    struct gch a, b, c, d;
    char line[REPORT_LEN];
    gch_open(f, &a, TEST_RELID, 2, 2);
    wait_offer(f, SUB1_RELID);
    wait_offer(f, SUB2_RELID);
    gch_open(f, &b, SUB1_RELID, 2, 2);

    /* (a) */
    echo_once(f, &a, 1, 8);
    __atomic_store_n(&tx_control(f, &a)->write_index, 0x7ffffff8u, __ATOMIC_RELEASE);
    guest_signal(f, a.relid);
    flush(f);
    assert_int_equal(failed_lines(f, line, sizeof line), 1);
    assert_non_null(strstr(line, "hvsim-test relid 7: guest -> host ring failed: write index outside the data area"));
    assert_non_null(strstr(line, "channel no longer served"));
    (void)take_signal(f, a.relid);
    guest_signal(f, a.relid); /* no idle answer from a failed channel */
    flush(f);
    assert_false(take_signal(f, a.relid));
    assert_int_equal(vstats(f).failures, 1);

    /* (b): written deferred, then its length made to exceed the ring's contents, then published. */
    echo_once(f, &b, 2, 8);
    uint32_t words[2] = { HVSIM_VSP_TEST_OP_ECHO, 0 };
    bool signal = false;
    uint32_t at = b.tx.pos;
    assert_int_equal(kmcl_ring_write_buf(&b.tx, KMCL_PKT_DATA_INBAND, 0, 3, words, sizeof words, KMCL_RING_WRITE_DEFER,
                                         &signal),
                     STATUS_OK);
    struct kmcl_pkt_desc *desc = (struct kmcl_pkt_desc *)(f->ram + b.gpa + 4096 + at);
    desc->len8 = 200;
    if (kmcl_ring_flush(&b.tx))
        guest_signal(f, b.relid);
    flush(f);
    assert_int_equal(failed_lines(f, line, sizeof line), 2);
    assert_non_null(strstr(line, "relid 8: guest -> host ring failed: packet length"));
    expect_no_packet(f, &b);

    /* (c) */
    gch_rings(f, &c, SUB2_RELID, 2, 2);
    __atomic_store_n(&tx_control(f, &c)->read_index, 13u, __ATOMIC_RELEASE);
    gch_open_rings(f, &c);
    flush(f);
    assert_int_equal(failed_lines(f, line, sizeof line), 3);
    assert_non_null(strstr(line, "relid 9: guest -> host ring failed: read index"));
    guest_signal(f, c.relid);
    expect_no_packet(f, &c);

    /* (d): the same relid again, fresh rings; the host fills the guest's ring and waits. */
    gch_close(f, &c);
    gch_free(&c);
    gch_open(f, &d, SUB2_RELID, 2, 2);
    struct hvsim_vsp_test_send_n req = { HVSIM_VSP_TEST_OP_SEND_N, 1000, 1000 };
    tx_inband(f, &d, 4, 0, &req, sizeof req, no_pkt, NULL);
    flush(f);
    struct hvsim_vsp_test_stats s = vstats(f);
    assert_true(s.backlog > 900);
    __atomic_store_n(&rx_control(f, &d)->read_index, 5u, __ATOMIC_RELEASE);
    guest_signal(f, d.relid);
    flush(f);
    assert_int_equal(failed_lines(f, line, sizeof line), 4);
    assert_non_null(strstr(line, "relid 9: host -> guest ring failed: read index"));
    /* Its guest -> host ring is still sound, but a failed channel is not read any more. */
    (void)take_signal(f, d.relid);
    uint64_t inband_before = vstats(f).packets_in[KMCL_PKT_DATA_INBAND];
    tx_op(f, &d, 5, 0, HVSIM_VSP_TEST_OP_SIGNAL_ONLY, no_pkt, NULL);
    flush(f);
    assert_false(take_signal(f, d.relid));
    s = vstats(f);
    assert_int_equal(s.packets_in[KMCL_PKT_DATA_INBAND], inband_before);
    assert_int_equal(s.failures, 4);
    assert_int_equal(s.backlog, 0); /* the batch of a failed channel is dropped */
    assert_true(s.backlog_dropped > 900);
    assert_int_equal(s.channels, 3);
    gch_free(&a);
    gch_free(&b);
    gch_free(&d);
}

/* A channel closed while a SEND_N batch is owed and requests wait behind it: the state goes at
 * on_close (batch counted as dropped), and the relid opened again on fresh rings starts clean. */
static void test_close_with_backlog(void **state)
{
    (void)state;
    struct fixture *f = fx_new(0, true);
    struct gch g;
    gch_open(f, &g, TEST_RELID, 2, 2);
    struct hvsim_vsp_test_send_n req = { HVSIM_VSP_TEST_OP_SEND_N, 100000, 64 };
    tx_inband(f, &g, 1, KMCL_PKT_FLAG_COMPLETION_REQUESTED, &req, sizeof req, no_pkt, NULL);
    flush(f);
    for (uint32_t i = 0; i < 10; i++) /* queued behind the batch: the host does not read them */
        tx_op(f, &g, 100 + i, KMCL_PKT_FLAG_COMPLETION_REQUESTED, HVSIM_VSP_TEST_OP_ECHO, no_pkt, NULL);
    guest_signal(f, g.relid);
    flush(f);
    struct hvsim_vsp_test_stats s = vstats(f);
    assert_int_equal(s.packets_in[KMCL_PKT_DATA_INBAND], 1);
    uint64_t owed = s.backlog;
    assert_true(owed > 99000);
    assert_int_equal(s.send_n_packets + owed, 100000);
    gch_close(f, &g);
    s = vstats(f);
    assert_int_equal(s.closes, 1);
    assert_int_equal(s.channels, 0);
    assert_int_equal(s.backlog, 0);
    assert_int_equal(s.backlog_dropped, owed);
    /* A signal on the closed channel's connection: nobody is served, nothing breaks. */
    (void)hvsim_hypercall(f->sim, 0, HV_CALL_SIGNAL_EVENT | HV_HYPERCALL_FAST,
                          HVSIM_VMBUS_CONN_CHANNEL_BASE + TEST_RELID, 0);
    flush(f);
    gch_free(&g);

    struct gch again;
    gch_open(f, &again, TEST_RELID, 2, 2);
    echo_once(f, &again, 7, 40);
    expect_no_packet(f, &again);
    s = vstats(f);
    assert_int_equal(s.channels, 1);
    assert_int_equal(s.opens, 2);
    assert_int_equal(s.echoes, 1);
    assert_int_equal(s.failures, 0);
    gch_free(&again);
}

/* The primary and both sub-channels served at once, each its own rings and answers; then the server
 * destroyed with them open and a batch owed: every channel gets its on_close. */
static void test_sub_channels_and_destroy(void **state)
{
    (void)state;
    struct fixture *f = fx_new(0, true);
    struct gch g[3];
    uint32_t relids[3] = { TEST_RELID, SUB1_RELID, SUB2_RELID };
    gch_open(f, &g[0], relids[0], 2, 3);
    wait_offer(f, SUB1_RELID);
    wait_offer(f, SUB2_RELID);
    gch_open(f, &g[1], relids[1], 3, 2);
    gch_open(f, &g[2], relids[2], 2, 2);
    for (uint32_t round = 0; round < 50; round++)
        for (int i = 0; i < 3; i++)
            echo_once(f, &g[i], relids[i] * 1000 + round, 8 + (round * 8 + (uint32_t)i * 24) % 200);
    struct hvsim_vsp_test_send_n req = { HVSIM_VSP_TEST_OP_SEND_N, 5000, 256 };
    tx_inband(f, &g[1], 1, 0, &req, sizeof req, no_pkt, NULL);
    flush(f);
    struct hvsim_vsp_test_stats s = vstats(f);
    assert_int_equal(s.channels, 3);
    assert_int_equal(s.echoes, 150);
    assert_true(s.backlog > 0);
    hvsim_vmbus_destroy(f->vb);
    f->vb = NULL;
    s = vstats(f);
    assert_int_equal(s.channels, 0);
    assert_int_equal(s.closes, 3);
    assert_int_equal(s.backlog, 0);
    assert_true(s.backlog_dropped > 0);
    for (int i = 0; i < 3; i++)
        gch_free(&g[i]);
}

/* The default device table as hvsim uses it (ctx NULL: the process's default instance): the test
 * device echoes, and answers a signal on an empty ring by a signal. */
static void test_default_table(void **state)
{
    (void)state;
    struct hvsim_vsp_test_stats before, after;
    hvsim_vsp_test_get_stats(NULL, &before);
    struct fixture *f = fx_new(0, false);
    struct gch g;
    gch_open(f, &g, TEST_RELID, 2, 2);
    flush(f);
    (void)take_signal(f, g.relid);
    guest_signal(f, g.relid);
    assert_true(wait_signal(f, g.relid, WAIT_MS));
    echo_once(f, &g, 0x77, 64);
    expect_no_packet(f, &g);
    hvsim_vsp_test_get_stats(NULL, &after);
    assert_int_equal(after.opens - before.opens, 1);
    assert_int_equal(after.idle_signals - before.idle_signals, 1);
    assert_int_equal(after.echoes - before.echoes, 1);
    assert_int_equal(after.channels - before.channels, 1);
    gch_free(&g);
    current = NULL;
    fx_free(f);
    hvsim_vsp_test_get_stats(NULL, &after);
    assert_int_equal(after.channels, before.channels);
    assert_int_equal(after.closes - before.closes, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_echo_sizes_wrap, teardown),
        cmocka_unit_test_teardown(test_completion_echo, teardown),
        cmocka_unit_test_teardown(test_send_n_backpressure, teardown),
        cmocka_unit_test_teardown(test_gpa_checksum, teardown),
        cmocka_unit_test_teardown(test_signal_only_and_idle, teardown),
        cmocka_unit_test_teardown(test_unknown_and_bad_requests, teardown),
        cmocka_unit_test_teardown(test_flood_without_answers, teardown),
        cmocka_unit_test_teardown(test_send_on_open, teardown),
        cmocka_unit_test_teardown(test_garbage_rings_fail, teardown),
        cmocka_unit_test_teardown(test_close_with_backlog, teardown),
        cmocka_unit_test_teardown(test_sub_channels_and_destroy, teardown),
        cmocka_unit_test_teardown(test_default_table, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
