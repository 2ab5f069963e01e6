/*
 * Unit tests for kmcl's server endpoint (sim/kmcl/server.h): the host/VSP side of a channel.
 *
 * The guest is played with the ring layer directly: each test owns two rings in ordinary memory
 * (control page + data area, malloc'ed with the exact size so that ASan sees any access outside),
 * initialised as the guest does (KMCL_RING_ATTACH_INIT); the test attaches as WRITER of the
 * guest -> host ring and READER of the host -> guest ring, and the server channel is enabled on the
 * same memory. The transport counts signal_guest calls, maps a fake "guest RAM" and records log
 * lines. Hostile guests are played by writing into the ring memory.
 *
 * One test per rule of the header; each asserts the outcome the rule promises (and was checked to
 * fail against a server that breaks it). Then a three-thread stress test: a guest thread writing
 * requests of random sizes and reading everything, a server thread running the executor when
 * signalled, and a third thread sending unsolicited packets with WAIT_FOR_COMPLETION; every thread
 * waits only on "doorbells" rung when the ring says to signal, so a lost wake-up hangs and is
 * reported after 20 s. Built with ASan/UBSan (test_kmcl_server) and ThreadSanitizer
 * (test_kmcl_server_tsan). KMCL_SERVER_STRESS=<n> sets the number of requests (default 1,000,000,
 * 200,000 under TSan);
 * KMCL_SERVER_TEST=<pattern> runs only the tests whose names match.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmcl/core/packet.h"
#include "kmcl/core/ring.h"
#include "kmcl/core/ring_format.h"
#include "sim/kmcl/server.h"
#include "test/lib/test_util.h"

#define PAD8(n) (((n) + 7u) & ~7u)
#define RING_BYTES(payload) ((uint32_t)kmcl_ring_packet_bytes(0, (payload)))

/* ---- the fixture: rings, transport, channel, what the callbacks saw ---- */

#define MAX_RECS 12000
#define REC_DATA 256
#define MAX_PKTS 2048
#define RAM_BASE 0x10000ull /* fake guest RAM: pfns 16 .. 16 + RAM_PAGES - 1 */
#define RAM_PAGES 8u

struct rec {
    struct kmcl_server_incoming *in;
    uint64_t trans_id;
    uint16_t type;
    bool creq;
    uint32_t flags, len;
    uint8_t data[REC_DATA];
    pthread_t thread;
};

struct fx {
    /* guest side */
    uint8_t *g2h, *h2g; /* ring memory: control page + data area */
    uint32_t g2h_bytes, h2g_bytes;
    struct kmcl_ring gw;  /* the guest: writer of guest -> host */
    struct kmcl_ring gr;  /* the guest: reader of host -> guest */
    unsigned guest_signals; /* the guest's ring said "signal the host" */
    /* transport */
    struct kmcl_server_transport t;
    unsigned host_signals; /* signal_guest calls */
    bool signal_undelivered; /* signal_guest returns false */
    struct reports log;
    uint8_t *ram;
    /* the channel */
    struct kmcl_server_channel *ch;
    struct kmcl_server_packet *pkts[MAX_PKTS]; /* freed by the teardown */
    uint8_t *snap_g, *snap_h;                  /* snapshots of the rings (freed by the teardown) */
    unsigned npkts;
    /* what the callbacks saw */
    char ev[16384];
    unsigned nrec;
    unsigned pc_calls;
    uint32_t pc_last;
    void (*on_pp)(struct kmcl_server_incoming *in, const uint8_t *buf, uint32_t len, uint32_t flags);
    void (*on_pc)(uint32_t n);
    void (*on_queue)(void);
};

static struct fx F;
static struct rec RECS[MAX_RECS];

static void ev(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void ev(const char *fmt, ...)
{
    size_t n = strlen(F.ev);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(F.ev + n, sizeof F.ev - n, fmt, ap);
    va_end(ap);
    n = strlen(F.ev);
    if (n + 1 < sizeof F.ev) {
        F.ev[n] = ' ';
        F.ev[n + 1] = '\0';
    }
}

static void ev_clear(void)
{
    F.ev[0] = '\0';
}

/* transport */
static bool t_signal(void *ctx)
{
    assert_ptr_equal(ctx, &F);
    __atomic_fetch_add(&F.host_signals, 1, __ATOMIC_RELAXED);
    return !F.signal_undelivered;
}

static void *t_memory(void *ctx, uint64_t gpa, uint32_t len)
{
    (void)ctx;
    uint64_t end = RAM_BASE + (uint64_t)RAM_PAGES * KMCL_PAGE_SIZE;
    if (gpa < RAM_BASE || gpa >= end || len > end - gpa)
        return NULL;
    return F.ram + (gpa - RAM_BASE);
}

static void t_log(void *ctx, const char *line)
{
    assert_ptr_equal(ctx, &F);
    reports_record(&F.log, line);
}

static uint8_t ram_byte(uint64_t gpa)
{
    return (uint8_t)(gpa * 7 + (gpa >> 12));
}

/* channel callbacks: record, then the test's hook */
static void cb_pp(struct kmcl_server_channel *ch, struct kmcl_server_incoming *in, const void *buf, uint32_t len,
                  uint32_t flags)
{
    if (ch != F.ch || kmcl_server_incoming_channel(in) != ch)
        ev("wrong-channel");
    if (F.nrec < MAX_RECS) {
        struct rec *r = &RECS[F.nrec];
        r->in = in;
        r->trans_id = kmcl_server_incoming_trans_id(in);
        r->type = kmcl_server_incoming_type(in);
        r->creq = kmcl_server_incoming_completion_requested(in);
        r->flags = flags;
        r->len = len;
        memcpy(r->data, buf, len < REC_DATA ? len : REC_DATA);
        r->thread = pthread_self();
    }
    F.nrec++;
    ev("pp%llu", (unsigned long long)kmcl_server_incoming_trans_id(in));
    if (F.on_pp)
        F.on_pp(in, buf, len, flags);
}

static void cb_pc(struct kmcl_server_channel *ch, uint32_t n)
{
    if (ch != F.ch)
        ev("wrong-channel");
    F.pc_calls++;
    F.pc_last = n;
    ev("pc%u", n);
    if (F.on_pc)
        F.on_pc(n);
}

static void cb_opened(struct kmcl_server_channel *ch) { ev(ch == F.ch ? "opened" : "opened-wrong"); }
static void cb_started(struct kmcl_server_channel *ch) { ev(ch == F.ch ? "started" : "started-wrong"); }
static void cb_post(struct kmcl_server_channel *ch) { ev(ch == F.ch ? "post_started" : "post_started-wrong"); }
static void cb_suspend(struct kmcl_server_channel *ch) { ev(ch == F.ch ? "suspend" : "suspend-wrong"); }
static void cb_closed(struct kmcl_server_channel *ch) { ev(ch == F.ch ? "closed" : "closed-wrong"); }

static const struct kmcl_server_state_callbacks STATE_CBS = {
    .opened = cb_opened, .closed = cb_closed, .started = cb_started, .suspend = cb_suspend, .post_started = cb_post,
};

static void cb_queue(struct kmcl_server_channel *ch)
{
    ev(ch == F.ch ? "queue" : "queue-wrong");
    if (F.on_queue)
        F.on_queue();
}

static uint8_t *ring_mem(uint32_t data)
{
    uint8_t *m = malloc(KMCL_PAGE_SIZE + data); /* exact: ASan catches any access past the data area */
    assert_non_null(m);
    memset(m, 0xA5, KMCL_PAGE_SIZE + data);
    return m;
}

/* Rings of these data sizes, the guest attached (fresh memory), a channel allocated (not enabled). */
static void fx_init(uint32_t g2h_data, uint32_t h2g_data)
{
    memset(&F, 0, sizeof F);
    F.g2h_bytes = KMCL_PAGE_SIZE + g2h_data;
    F.h2g_bytes = KMCL_PAGE_SIZE + h2g_data;
    F.g2h = ring_mem(g2h_data);
    F.h2g = ring_mem(h2g_data);
    assert_int_equal(kmcl_ring_attach_pages(&F.gw, KMCL_RING_WRITER, F.g2h, F.g2h_bytes, KMCL_RING_ATTACH_INIT),
                     STATUS_OK);
    assert_int_equal(kmcl_ring_attach_pages(&F.gr, KMCL_RING_READER, F.h2g, F.h2g_bytes, KMCL_RING_ATTACH_INIT),
                     STATUS_OK);
    F.ram = malloc(RAM_PAGES * KMCL_PAGE_SIZE);
    assert_non_null(F.ram);
    for (uint32_t i = 0; i < RAM_PAGES * KMCL_PAGE_SIZE; i++)
        F.ram[i] = ram_byte(RAM_BASE + i);
    F.t = (struct kmcl_server_transport){ .ctx = &F, .signal_guest = t_signal, .guest_memory = t_memory, .log = t_log };
    assert_int_equal(kmcl_server_channel_allocate("test", &F.ch), STATUS_OK);
}

static void fx_callbacks(void)
{
    assert_int_equal(kmcl_server_channel_init_set_process_packet_callbacks(F.ch, cb_pp, cb_pc), STATUS_OK);
    assert_int_equal(kmcl_server_channel_init_set_state_change_callbacks(F.ch, &STATE_CBS), STATUS_OK);
}

static void fx_enable(void)
{
    assert_int_equal(kmcl_server_channel_enable(F.ch, &F.t, F.g2h, F.g2h_bytes, F.h2g, F.h2g_bytes), STATUS_OK);
}

/* The usual start: rings, callbacks, enabled, events cleared. */
static void fx_start(uint32_t g2h_data, uint32_t h2g_data)
{
    fx_init(g2h_data, h2g_data);
    fx_callbacks();
    fx_enable();
    ev_clear();
}

static int fx_teardown(void **state)
{
    (void)state;
    if (F.ch)
        kmcl_server_channel_cleanup(F.ch);
    F.ch = NULL;
    for (unsigned i = 0; i < F.npkts; i++)
        kmcl_server_packet_free(F.pkts[i]);
    F.npkts = 0;
    free(F.g2h);
    free(F.h2g);
    free(F.ram);
    free(F.snap_g);
    free(F.snap_h);
    F.snap_g = F.snap_h = NULL;
    F.g2h = F.h2g = F.ram = NULL;
    return 0;
}

/* A packet freed by the teardown. */
static struct kmcl_server_packet *fx_packet(kmcl_server_completion_routine_fn fn, void *ctx)
{
    struct kmcl_server_packet *p;
    assert_true(F.npkts < MAX_PKTS);
    assert_int_equal(kmcl_server_packet_allocate(F.ch, &p), STATUS_OK);
    kmcl_server_packet_set_completion_routine(p, fn);
    kmcl_server_packet_set_context(p, ctx);
    F.pkts[F.npkts++] = p;
    return p;
}

static struct kmcl_server_channel_stats stats(void)
{
    struct kmcl_server_channel_stats s;
    kmcl_server_channel_get_stats(F.ch, &s);
    return s;
}

static struct kmcl_ring_control *ctrl(uint8_t *mem)
{
    return (struct kmcl_ring_control *)mem;
}

/* Snapshots of both rings' memory, to check later that nothing touched them. */
static void snapshot(void)
{
    if (!F.snap_g)
        F.snap_g = malloc(F.g2h_bytes);
    if (!F.snap_h)
        F.snap_h = malloc(F.h2g_bytes);
    assert_non_null(F.snap_g);
    assert_non_null(F.snap_h);
    memcpy(F.snap_g, F.g2h, F.g2h_bytes);
    memcpy(F.snap_h, F.h2g, F.h2g_bytes);
}

static void expect_untouched(void)
{
    assert_memory_equal(F.snap_g, F.g2h, F.g2h_bytes);
    assert_memory_equal(F.snap_h, F.h2g, F.h2g_bytes);
}

/* ---- the guest ---- */

static status_t g_send(uint64_t id, uint16_t flags, const void *buf, uint32_t len)
{
    struct kmcl_iov iov = { buf, len };
    bool sig = false;
    status_t s = kmcl_pkt_send_inband(&F.gw, id, flags, &iov, 1, 0, &sig);
    if (sig)
        F.guest_signals++;
    return s;
}

/* An in-band request of `len` bytes: the id in its first 8 bytes (when it fits), then a pattern. */
static void g_send_ok(uint64_t id, uint16_t flags, uint32_t len)
{
    uint8_t buf[4096];
    assert_true(len <= sizeof buf);
    for (uint32_t k = 0; k < len; k++)
        buf[k] = (uint8_t)(id * 31 + k);
    assert_int_equal(g_send(id, flags, buf, len), STATUS_OK);
}

static void g_complete(uint64_t id, const void *buf, uint32_t len)
{
    struct kmcl_iov iov = { buf, len };
    bool sig = false;
    assert_int_equal(kmcl_pkt_send_completion(&F.gw, id, &iov, 1, 0, &sig), STATUS_OK);
    if (sig)
        F.guest_signals++;
}

/* A packet the guest read from the host -> guest ring. */
struct got {
    uint16_t type, flags;
    uint64_t trans_id;
    uint32_t len; /* payload bytes (padded to 8 by the ring) */
    uint8_t data[8192];
    struct kmcl_xfer_range ranges[16];
    struct kmcl_pkt_xfer xfer;
};

static uint8_t g_bounce[1 << 18];

/* Reads one packet (copied, consumed, published). STATUS_NOT_FOUND when the ring is empty. Counts
 * the guest's signal when publishing says so. */
static status_t g_recv(struct got *g)
{
    struct kmcl_ring_packet p;
    status_t s = kmcl_ring_peek(&F.gr, &p, g_bounce, sizeof g_bounce);
    if (s != STATUS_OK)
        return s;
    memset(g, 0, offsetof(struct got, data));
    g->type = p.desc.type;
    g->flags = p.desc.flags;
    g->trans_id = p.desc.trans_id;
    g->len = kmcl_pkt_payload_len(&p);
    assert_true(g->len <= sizeof g->data);
    memcpy(g->data, kmcl_pkt_payload(&p), g->len);
    if (p.desc.type == KMCL_PKT_DATA_XFER_PAGES) {
        struct kmcl_ring_failure why;
        g->xfer.ranges = g->ranges;
        g->xfer.max_ranges = 16;
        assert_int_equal(kmcl_pkt_parse_xfer(&p, 0, &g->xfer, &why), STATUS_OK);
    }
    kmcl_ring_consume(&F.gr);
    if (kmcl_ring_publish_read(&F.gr))
        F.guest_signals++;
    return STATUS_OK;
}

static void g_recv_ok(struct got *g)
{
    assert_int_equal(g_recv(g), STATUS_OK);
}

static void g_expect_empty(void)
{
    assert_int_equal(kmcl_ring_read_available(&F.gr), 0);
}

/* Runs the executor as the VMBus server does when the guest signals, if the guest's ring said to. */
static bool g_signal_if_told(unsigned *seen)
{
    if (F.guest_signals == *seen)
        return false;
    *seen = F.guest_signals;
    (void)kmcl_server_channel_interrupt(F.ch);
    return true;
}

/* ---- recording routines ---- */

struct rt {
    const char *name;
    unsigned calls;
    status_t status;
    uint32_t len;
    uint8_t data[64];
    bool in_ring; /* the packet was readable by the guest when the routine ran */
};

/* A routine owed STATUS_CANCELLED (the channel failed or is being disabled): never called with
 * anything else, at most once; with `done` (disable returned) exactly once. */
static void expect_cancelled(const struct rt *r, bool done)
{
    assert_true(r->calls <= 1);
    if (r->calls || done) {
        assert_int_equal(r->calls, 1);
        assert_int_equal(r->status, STATUS_CANCELLED);
    }
}

static void rt_record(struct kmcl_server_packet *pkt, status_t status, const void *buf, uint32_t len)
{
    struct rt *r = kmcl_server_packet_get_context(pkt);
    r->calls++;
    r->status = status;
    r->len = len;
    if (len)
        memcpy(r->data, buf, len < sizeof r->data ? len : sizeof r->data);
    r->in_ring = kmcl_ring_read_available(&F.gr) > 0;
    ev("rt:%s:%s", r->name, status_name(status));
}

/* ---- life cycle ---- */

static void dummy_queue(struct kmcl_server_channel *ch)
{
    (void)ch;
}

static void test_init_set_only_while_initializing(void **state)
{
    (void)state;
    fx_init(4096, 4096);
    struct kmcl_server_channel *ch = F.ch;
    assert_string_equal(kmcl_server_channel_name(ch), "test");
    assert_null(kmcl_server_channel_transport_context(ch));

    /* NULL channel and bad arguments */
    assert_int_equal(kmcl_server_channel_allocate("x", NULL), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_channel_init_set_client_context_size(NULL, 8), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_channel_init_set_maximum_packet_size(NULL, 64), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_channel_init_set_maximum_packet_size(ch, 7), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_channel_init_set_maximum_packet_size(ch, KMCL_PKT_MAX_LEN + 1),
                     STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_channel_init_set_flags(NULL, 0), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_channel_init_set_flags(ch, 0x2), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_channel_init_set_process_packet_callbacks(NULL, cb_pp, cb_pc),
                     STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_channel_init_set_process_packet_callbacks(ch, NULL, cb_pc), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_channel_init_set_queue_callback(NULL, dummy_queue), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_channel_init_set_queue_callback(ch, NULL), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_channel_init_set_state_change_callbacks(NULL, &STATE_CBS), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_channel_init_set_state_change_callbacks(ch, NULL), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_channel_set_transaction_quota(ch, 0), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_channel_set_transaction_quota(NULL, 1), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_channel_set_transaction_quota(ch, 4 * KMCL_SERVER_DEFAULT_QUOTA + 1),
                     STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_channel_set_transaction_quota(ch, 4 * KMCL_SERVER_DEFAULT_QUOTA), STATUS_OK);

    /* INITIALIZING: every init_set works */
    assert_int_equal(kmcl_server_channel_init_set_client_context_size(ch, 64), STATUS_OK);
    uint8_t *cc = kmcl_server_channel_get_pointer_to_client_context(ch);
    assert_non_null(cc);
    for (int i = 0; i < 64; i++)
        assert_int_equal(cc[i], 0);
    memset(cc, 0x5A, 64); /* ASan: really 64 bytes */
    assert_int_equal(kmcl_server_channel_init_set_maximum_packet_size(ch, 1024), STATUS_OK);
    assert_int_equal(kmcl_server_channel_init_set_flags(ch, 0), STATUS_OK);
    assert_int_equal(kmcl_server_channel_init_set_queue_callback(ch, dummy_queue), STATUS_OK);
    assert_int_equal(kmcl_server_channel_set_transaction_quota(ch, 16), STATUS_OK);
    fx_callbacks();
    fx_enable();
    assert_ptr_equal(kmcl_server_channel_transport_context(ch), &F);
    assert_ptr_equal(kmcl_server_channel_get_pointer_to_client_context(ch), cc);
    assert_false(kmcl_server_channel_failed(ch));

    /* ENABLED: refused, the settings unchanged */
    assert_int_equal(kmcl_server_channel_init_set_client_context_size(ch, 8), STATUS_INVALID_PARAMETER);
    assert_ptr_equal(kmcl_server_channel_get_pointer_to_client_context(ch), cc);
    assert_int_equal(kmcl_server_channel_init_set_maximum_packet_size(ch, 64), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_channel_init_set_flags(ch, KMCL_SERVER_FLAG_SUPPRESS_QUEUE_MANAGEMENT),
                     STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_channel_init_set_process_packet_callbacks(ch, cb_pp, NULL), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_channel_init_set_queue_callback(ch, dummy_queue), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_channel_init_set_state_change_callbacks(ch, &STATE_CBS), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_channel_enable(ch, &F.t, F.g2h, F.g2h_bytes, F.h2g, F.h2g_bytes),
                     STATUS_INVALID_PARAMETER);
    /* the quota may be set at any time */
    assert_int_equal(kmcl_server_channel_set_transaction_quota(ch, 5), STATUS_OK);
    /* the maximum packet size set before enable holds */
    struct kmcl_server_packet *p = fx_packet(NULL, NULL);
    static uint8_t big[1032];
    assert_int_equal(kmcl_server_packet_send(p, big, 1032, 0), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_packet_send(p, big, 1024, 0), STATUS_OK);

    /* DISABLED: refused too */
    kmcl_server_channel_disable(ch);
    assert_int_equal(kmcl_server_channel_init_set_flags(ch, 0), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_channel_init_set_process_packet_callbacks(ch, cb_pp, cb_pc), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_channel_enable(ch, &F.t, F.g2h, F.g2h_bytes, F.h2g, F.h2g_bytes),
                     STATUS_INVALID_PARAMETER);
    assert_int_equal(F.log.count, 0);
}

static void test_enable_requires_its_callbacks(void **state)
{
    (void)state;
    fx_init(4096, 4096);
    assert_int_equal(kmcl_server_channel_init_set_state_change_callbacks(F.ch, &STATE_CBS), STATUS_OK);
    /* no process_packet: refused, nothing called, still INITIALIZING */
    assert_int_equal(kmcl_server_channel_enable(F.ch, &F.t, F.g2h, F.g2h_bytes, F.h2g, F.h2g_bytes),
                     STATUS_INVALID_PARAMETER);
    assert_string_equal(F.ev, "");
    assert_null(kmcl_server_channel_transport_context(F.ch));
    /* no transport */
    assert_int_equal(kmcl_server_channel_init_set_process_packet_callbacks(F.ch, cb_pp, NULL), STATUS_OK);
    assert_int_equal(kmcl_server_channel_enable(F.ch, NULL, F.g2h, F.g2h_bytes, F.h2g, F.h2g_bytes),
                     STATUS_INVALID_PARAMETER);
    /* suppressed queue management needs the queue callback instead */
    assert_int_equal(kmcl_server_channel_init_set_flags(F.ch, KMCL_SERVER_FLAG_SUPPRESS_QUEUE_MANAGEMENT), STATUS_OK);
    assert_int_equal(kmcl_server_channel_enable(F.ch, &F.t, F.g2h, F.g2h_bytes, F.h2g, F.h2g_bytes),
                     STATUS_INVALID_PARAMETER);
    assert_string_equal(F.ev, "");
    assert_int_equal(kmcl_server_channel_init_set_flags(F.ch, 0), STATUS_OK);
    /* with process_packet (processing_complete optional): enabled */
    fx_enable();
    assert_string_equal(F.ev, "opened started post_started ");
    ev_clear();
    g_send_ok(1, 0, 8);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_string_equal(F.ev, "pp1 "); /* no processing_complete set: nothing else */
}

static void test_enable_with_queue_callback_only(void **state)
{
    (void)state;
    fx_init(4096, 4096);
    assert_int_equal(kmcl_server_channel_init_set_flags(F.ch, KMCL_SERVER_FLAG_SUPPRESS_QUEUE_MANAGEMENT), STATUS_OK);
    assert_int_equal(kmcl_server_channel_init_set_queue_callback(F.ch, cb_queue), STATUS_OK);
    fx_enable(); /* no process_packet needed */
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_string_equal(F.ev, "queue ");
}

static void test_state_callbacks_in_order(void **state)
{
    (void)state;
    fx_init(4096, 4096);
    fx_callbacks();
    assert_string_equal(F.ev, "");
    fx_enable();
    assert_string_equal(F.ev, "opened started post_started ");
    g_send_ok(1, 0, 16);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_string_equal(F.ev, "opened started post_started pp1 pc1 ");
    ev_clear();
    kmcl_server_channel_disable(F.ch);
    assert_string_equal(F.ev, "suspend closed ");
    kmcl_server_channel_disable(F.ch); /* a second disable does nothing */
    kmcl_server_channel_cleanup(F.ch);
    F.ch = NULL;
    assert_string_equal(F.ev, "suspend closed ");
}

static void test_cleanup_disables_first(void **state)
{
    (void)state;
    fx_start(4096, 4096);
    kmcl_server_channel_cleanup(F.ch);
    F.ch = NULL;
    assert_string_equal(F.ev, "suspend closed ");
    kmcl_server_channel_cleanup(NULL); /* harmless */
}

static void test_cleanup_frees_everything(void **state)
{
    (void)state;
    /* A channel never enabled, with a client context (ASan's leak check at exit sees the rest). */
    struct kmcl_server_channel *c;
    assert_int_equal(kmcl_server_channel_allocate(NULL, &c), STATUS_OK);
    assert_string_equal(kmcl_server_channel_name(c), "channel");
    assert_int_equal(kmcl_server_channel_init_set_client_context_size(c, 100), STATUS_OK);
    assert_int_equal(kmcl_server_channel_init_set_client_context_size(c, 200), STATUS_OK); /* replaces */
    kmcl_server_channel_cleanup(c);

    /* An enabled channel with everything outstanding: queued packets and completions, a packet
     * waiting for its completion, an incoming packet not completed. */
    fx_start(4096, 256);
    g_send_ok(1, KMCL_PKT_FLAG_COMPLETION_REQUESTED, 8);
    g_send_ok(2, KMCL_PKT_FLAG_COMPLETION_REQUESTED, 8);
    g_send_ok(3, KMCL_PKT_FLAG_COMPLETION_REQUESTED, 8);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_int_equal(F.nrec, 3);
    struct rt r1 = { .name = "a" }, r2 = { .name = "b" }, r3 = { .name = "c" };
    static uint8_t buf[200];
    assert_int_equal(kmcl_server_packet_send(fx_packet(rt_record, &r1), buf, 8, KMCL_SERVER_SEND_WAIT_FOR_COMPLETION),
                     STATUS_OK);
    assert_int_equal(kmcl_server_packet_send(fx_packet(rt_record, &r2), buf, 160, 0), STATUS_OK); /* fills */
    assert_int_equal(kmcl_server_packet_send(fx_packet(rt_record, &r3), buf, 100, 0), STATUS_OK); /* queued */
    kmcl_server_packet_complete(RECS[0].in, buf, 64);                                              /* queued */
    kmcl_server_packet_complete(RECS[1].in, buf, 8);                                               /* queued */
    assert_int_equal(stats().queued_now, 3);
    assert_int_equal(r1.calls + r2.calls + r3.calls, 1);
    ev_clear();
    kmcl_server_channel_cleanup(F.ch);
    F.ch = NULL;
    assert_int_equal(r1.calls, 1);
    assert_int_equal(r1.status, STATUS_CANCELLED);
    assert_int_equal(r2.calls, 1);
    assert_int_equal(r2.status, STATUS_OK);
    assert_int_equal(r3.calls, 1);
    assert_int_equal(r3.status, STATUS_CANCELLED);
}

static void test_enable_with_bad_indices_fails_the_channel(void **state)
{
    (void)state;
    fx_init(4096, 4096);
    fx_callbacks();
    __atomic_store_n(&ctrl(F.g2h)->write_index, 12, __ATOMIC_RELAXED); /* not 8-aligned */
    fx_enable();
    /* still enabled (the guest sees a silent host), callbacks called, one line logged */
    assert_string_equal(F.ev, "opened started post_started ");
    assert_true(kmcl_server_channel_failed(F.ch));
    assert_int_equal(F.log.count, 1);
    assert_int_equal(reports_matching(&F.log, "guest -> host", "write index not 8-byte aligned"), 1);
    snapshot();
    assert_false(kmcl_server_channel_interrupt(F.ch));
    assert_int_equal(kmcl_server_packet_send(fx_packet(NULL, NULL), "12345678", 8, 0), STATUS_INVALID_STATE);
    assert_false(kmcl_server_channel_signal(F.ch));
    expect_untouched();
    assert_int_equal(F.host_signals, 0);
    assert_int_equal(F.log.count, 1);
    ev_clear();
    kmcl_server_channel_disable(F.ch);
    assert_string_equal(F.ev, "suspend closed ");

    /* the host -> guest ring's indices are checked too */
    fx_teardown(NULL);
    fx_init(4096, 4096);
    fx_callbacks();
    __atomic_store_n(&ctrl(F.h2g)->read_index, 4096, __ATOMIC_RELAXED); /* outside the data area */
    fx_enable();
    assert_true(kmcl_server_channel_failed(F.ch));
    assert_int_equal(reports_matching(&F.log, "host -> guest", "read index outside the data area"), 1);
    assert_int_equal(F.log.count, 1);
}

/* ---- incoming packets ---- */

static void test_process_packet_once_per_packet_in_order(void **state)
{
    (void)state;
    fx_start(8192, 4096);
    static const uint32_t sizes[] = { 8, 13, 0, 100, 256, 1 };
    const unsigned n = sizeof sizes / sizeof sizes[0];
    for (unsigned i = 0; i < n; i++)
        g_send_ok(i + 1, i % 2 ? KMCL_PKT_FLAG_COMPLETION_REQUESTED : 0, sizes[i]);
    assert_int_equal(F.guest_signals, 1); /* empty -> non-empty once */
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_string_equal(F.ev, "pp1 pp2 pp3 pp4 pp5 pp6 pc6 ");
    assert_int_equal(F.nrec, n);
    for (unsigned i = 0; i < n; i++) {
        struct rec *r = &RECS[i];
        assert_int_equal(r->trans_id, i + 1);
        assert_int_equal(r->type, KMCL_PKT_DATA_INBAND);
        assert_int_equal(r->flags, 0);
        assert_int_equal(r->creq, i % 2 == 1);
        assert_int_equal(r->len, PAD8(sizes[i])); /* the ring pads payloads to 8 */
        for (uint32_t k = 0; k < sizes[i]; k++)
            assert_int_equal(r->data[k], (uint8_t)((i + 1) * 31 + k));
        for (uint32_t k = sizes[i]; k < r->len; k++)
            assert_int_equal(r->data[k], 0);
    }
    /* distinct completion contexts while in flight */
    for (unsigned i = 0; i < n; i++)
        for (unsigned j = i + 1; j < n; j++)
            assert_ptr_not_equal(RECS[i].in, RECS[j].in);
    /* the ring was consumed and published: the guest's ring is empty */
    assert_true(kmcl_ring_is_empty(&F.gw));
    /* nothing new: nothing done */
    ev_clear();
    assert_false(kmcl_server_channel_interrupt(F.ch));
    assert_string_equal(F.ev, "");
    assert_int_equal(stats().packets_in, n);
    assert_int_equal(stats().interrupts, 2);
    for (unsigned i = 0; i < n; i++)
        kmcl_server_packet_complete(RECS[i].in, NULL, 0);
    /* completions without payload, for the three that asked */
    struct got g;
    for (unsigned i = 1; i < n; i += 2) {
        g_recv_ok(&g);
        assert_int_equal(g.type, KMCL_PKT_COMPLETION);
        assert_int_equal(g.trans_id, i + 1);
        assert_int_equal(g.len, 0);
    }
    g_expect_empty();
}

static unsigned pc_inject_left;

static void pc_injects(uint32_t n)
{
    (void)n;
    if (pc_inject_left) { /* the guest writes while the host finishes a batch */
        pc_inject_left--;
        g_send_ok(100 + pc_inject_left, 0, 8);
    }
}

static void test_processing_complete_each_time_the_ring_empties(void **state)
{
    (void)state;
    fx_start(65536, 4096);
    for (int i = 1; i <= 3; i++)
        g_send_ok(i, 0, 8);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_string_equal(F.ev, "pp1 pp2 pp3 pc3 ");
    ev_clear();
    g_send_ok(4, 0, 8);
    g_send_ok(5, 0, 24);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_string_equal(F.ev, "pp4 pp5 pc2 ");
    assert_int_equal(F.pc_calls, 2);

    /* a packet that arrives while processing_complete runs makes a new batch */
    ev_clear();
    F.on_pc = pc_injects;
    pc_inject_left = 2;
    g_send_ok(6, 0, 8);
    g_send_ok(7, 0, 8);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_string_equal(F.ev, "pp6 pp7 pc2 pp101 pc1 pp100 pc1 ");
    F.on_pc = NULL;

    /* a batch longer than the drain budget is still one batch */
    ev_clear();
    unsigned n = 3 * KMCL_SERVER_DRAIN_BUDGET + 5;
    for (unsigned i = 0; i < n; i++)
        g_send_ok(1000 + i, 0, 16);
    unsigned before = F.nrec;
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_int_equal(F.nrec - before, n);
    for (unsigned i = 0; i < n; i++)
        assert_int_equal(RECS[before + i].trans_id, 1000 + i);
    assert_int_equal(F.pc_last, n);
    assert_int_equal(stats().processing_complete_calls, F.pc_calls);
    assert_int_equal(F.pc_calls, 6);
    for (unsigned i = 0; i < F.nrec; i++)
        kmcl_server_packet_complete(RECS[i].in, NULL, 0);
}

/* Completions from the guest are not packets for process_packet: no processing_complete either. */
static void test_completions_from_the_guest_are_not_a_batch(void **state)
{
    (void)state;
    fx_start(4096, 4096);
    struct rt r = { .name = "w" };
    assert_int_equal(kmcl_server_packet_send(fx_packet(rt_record, &r), "abcdefgh", 8,
                                             KMCL_SERVER_SEND_WAIT_FOR_COMPLETION),
                     STATUS_OK);
    struct got g;
    g_recv_ok(&g);
    g_complete(g.trans_id, "ok", 2);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_string_equal(F.ev, "rt:w:ok ");
    assert_int_equal(F.pc_calls, 0);
    assert_int_equal(F.nrec, 0);
}

/* External data: the flag, get_external_data inside process_packet, and outside it. */
struct ext_seen {
    status_t gpa_s, gpa_small_s, gpa_wrong_s, xfer_s, xfer_small_s, inband_s;
    struct kmcl_gpa_range ranges[4];
    uint64_t pfns[8];
    struct kmcl_pkt_gpa gpa, gpa_small;
    struct kmcl_xfer_range xr[4];
    struct kmcl_pkt_xfer xfer, xfer_small;
    uint8_t payload[3][64];
    uint32_t payload_len[3];
};
static struct ext_seen EXT;

static void pp_external(struct kmcl_server_incoming *in, const uint8_t *buf, uint32_t len, uint32_t flags)
{
    (void)flags;
    unsigned i = F.nrec - 1;
    memcpy(EXT.payload[i], buf, len < 64 ? len : 64);
    EXT.payload_len[i] = len;
    uint16_t type = kmcl_server_incoming_type(in);
    if (type == KMCL_PKT_DATA_GPA_DIRECT) {
        EXT.gpa = (struct kmcl_pkt_gpa){ .ranges = EXT.ranges, .max_ranges = 4, .pfns = EXT.pfns, .max_pfns = 8 };
        EXT.gpa_s = kmcl_server_packet_get_external_data(in, &EXT.gpa, NULL);
        uint64_t pfn1[1];
        struct kmcl_gpa_range r1[4];
        EXT.gpa_small = (struct kmcl_pkt_gpa){ .ranges = r1, .max_ranges = 4, .pfns = pfn1, .max_pfns = 1 };
        EXT.gpa_small_s = kmcl_server_packet_get_external_data(in, &EXT.gpa_small, NULL);
        EXT.gpa_small.ranges = NULL;
        EXT.gpa_small.pfns = NULL;
        struct kmcl_pkt_xfer x = { .ranges = EXT.xr, .max_ranges = 4 };
        EXT.gpa_wrong_s = kmcl_server_packet_get_external_data(in, NULL, &x);
    } else if (type == KMCL_PKT_DATA_XFER_PAGES) {
        EXT.xfer = (struct kmcl_pkt_xfer){ .ranges = EXT.xr, .max_ranges = 4 };
        EXT.xfer_s = kmcl_server_packet_get_external_data(in, NULL, &EXT.xfer);
        struct kmcl_xfer_range one[1];
        EXT.xfer_small = (struct kmcl_pkt_xfer){ .ranges = one, .max_ranges = 1 };
        EXT.xfer_small_s = kmcl_server_packet_get_external_data(in, NULL, &EXT.xfer_small);
        EXT.xfer_small.ranges = NULL;
    } else {
        struct kmcl_gpa_range r[4];
        uint64_t p[8];
        struct kmcl_pkt_gpa g = { .ranges = r, .max_ranges = 4, .pfns = p, .max_pfns = 8 };
        struct kmcl_pkt_xfer x = { .ranges = EXT.xr, .max_ranges = 4 };
        EXT.inband_s = kmcl_server_packet_get_external_data(in, &g, &x);
    }
}

static void g_send_gpa(uint64_t id, uint16_t flags, const struct kmcl_page_range *ranges, uint32_t n,
                       const void *payload, uint32_t len)
{
    struct kmcl_iov iov = { payload, len };
    bool sig = false;
    assert_int_equal(kmcl_pkt_send_gpa_direct(&F.gw, id, flags, ranges, n, &iov, 1, 0, &sig), STATUS_OK);
    if (sig)
        F.guest_signals++;
}

static void test_external_data(void **state)
{
    (void)state;
    fx_start(8192, 4096);
    memset(&EXT, 0, sizeof EXT);
    F.on_pp = pp_external;
    static const uint64_t pf0[] = { 16, 17 }, pf1[] = { 19 };
    const struct kmcl_page_range gr[] = { { 5000, 100, pf0 }, { 100, 0, pf1 } };
    g_send_gpa(1, KMCL_PKT_FLAG_COMPLETION_REQUESTED, gr, 2, "gpa-payload", 11);
    const struct kmcl_xfer_range xr[] = { { 100, 0 }, { 200, 4096 } };
    struct kmcl_iov iov = { "xfer-payload", 12 };
    bool sig;
    assert_int_equal(kmcl_pkt_send_xfer(&F.gw, 2, 0, 7, 1, xr, 2, &iov, 1, 0, &sig), STATUS_OK);
    g_send(3, 0, "inband!!", 8);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_int_equal(F.nrec, 3);

    assert_int_equal(RECS[0].type, KMCL_PKT_DATA_GPA_DIRECT);
    assert_int_equal(RECS[0].flags, KMCL_SERVER_PROCESS_EXTERNAL_DATA);
    assert_true(RECS[0].creq);
    assert_int_equal(EXT.payload_len[0], 16);
    assert_memory_equal(EXT.payload[0], "gpa-payload", 11);
    assert_int_equal(EXT.gpa_s, STATUS_OK);
    assert_int_equal(EXT.gpa.range_count, 2);
    assert_int_equal(EXT.gpa.pfn_total, 3);
    assert_int_equal(EXT.ranges[0].byte_count, 5000);
    assert_int_equal(EXT.ranges[0].byte_offset, 100);
    assert_int_equal(EXT.ranges[1].byte_count, 100);
    assert_int_equal(EXT.pfns[EXT.ranges[0].pfn_first], 16);
    assert_int_equal(EXT.pfns[EXT.ranges[0].pfn_first + 1], 17);
    assert_int_equal(EXT.pfns[EXT.ranges[1].pfn_first], 19);
    assert_int_equal(EXT.gpa_small_s, STATUS_NO_SPACE); /* counts tell the need */
    assert_int_equal(EXT.gpa_small.pfn_total, 3);
    assert_int_equal(EXT.gpa_wrong_s, STATUS_NOT_FOUND); /* no GPA storage given */

    assert_int_equal(RECS[1].type, KMCL_PKT_DATA_XFER_PAGES);
    assert_int_equal(RECS[1].flags, KMCL_SERVER_PROCESS_EXTERNAL_DATA);
    assert_false(RECS[1].creq);
    assert_memory_equal(EXT.payload[1], "xfer-payload", 12);
    assert_int_equal(EXT.xfer_s, STATUS_OK);
    assert_int_equal(EXT.xfer.pageset_id, 7);
    assert_int_equal(EXT.xfer.sender_owns, 1);
    assert_int_equal(EXT.xfer.range_count, 2);
    assert_int_equal(EXT.xr[1].byte_count, 200);
    assert_int_equal(EXT.xr[1].byte_offset, 4096);
    assert_int_equal(EXT.xfer_small_s, STATUS_NO_SPACE);
    assert_int_equal(EXT.xfer_small.range_count, 2);

    assert_int_equal(RECS[2].type, KMCL_PKT_DATA_INBAND);
    assert_int_equal(RECS[2].flags, 0);
    assert_int_equal(EXT.inband_s, STATUS_NOT_FOUND);

    /* outside process_packet: refused, even before the packet is completed */
    struct kmcl_gpa_range r[4];
    uint64_t p[8];
    struct kmcl_pkt_gpa g = { .ranges = r, .max_ranges = 4, .pfns = p, .max_pfns = 8 };
    struct kmcl_pkt_xfer x = { .ranges = EXT.xr, .max_ranges = 4 };
    assert_int_equal(kmcl_server_packet_get_external_data(RECS[0].in, &g, NULL), STATUS_INVALID_STATE);
    assert_int_equal(kmcl_server_packet_get_external_data(RECS[1].in, NULL, &x), STATUS_INVALID_STATE);
    for (int i = 0; i < 3; i++)
        kmcl_server_packet_complete(RECS[i].in, NULL, 0);
    assert_int_equal(kmcl_server_packet_get_external_data(RECS[0].in, &g, NULL), STATUS_INVALID_STATE);
}

/* kmcl_server_gpa_for_each over the fake guest RAM. */
struct collect {
    uint8_t bytes[3 * KMCL_PAGE_SIZE];
    uint32_t total, pieces, stop_at; /* stop_at: return false on that piece (1-based), 0: never */
};

static bool collect_fn(void *arg, const uint8_t *p, uint32_t n)
{
    struct collect *c = arg;
    c->pieces++;
    assert_true(c->total + n <= sizeof c->bytes);
    memcpy(c->bytes + c->total, p, n); /* ASan: the pointer is good for n bytes */
    c->total += n;
    return c->pieces != c->stop_at;
}

static struct {
    status_t all, limited, stopped, outside;
    struct collect c_all, c_limited, c_stopped, c_outside;
} GFE;

static void pp_gpa_for_each(struct kmcl_server_incoming *in, const uint8_t *buf, uint32_t len, uint32_t flags)
{
    (void)buf;
    (void)len;
    assert_int_equal(flags, KMCL_SERVER_PROCESS_EXTERNAL_DATA);
    struct kmcl_gpa_range r[4];
    uint64_t p[8];
    struct kmcl_pkt_gpa g = { .ranges = r, .max_ranges = 4, .pfns = p, .max_pfns = 8 };
    assert_int_equal(kmcl_server_packet_get_external_data(in, &g, NULL), STATUS_OK);
    struct kmcl_server_channel *ch = kmcl_server_incoming_channel(in);
    if (kmcl_server_incoming_trans_id(in) == 1) {
        GFE.all = kmcl_server_gpa_for_each(ch, &g, UINT64_MAX, collect_fn, &GFE.c_all);
        GFE.limited = kmcl_server_gpa_for_each(ch, &g, 4000, collect_fn, &GFE.c_limited);
        GFE.c_stopped.stop_at = 2;
        GFE.stopped = kmcl_server_gpa_for_each(ch, &g, UINT64_MAX, collect_fn, &GFE.c_stopped);
    } else {
        GFE.outside = kmcl_server_gpa_for_each(ch, &g, UINT64_MAX, collect_fn, &GFE.c_outside);
    }
    kmcl_server_packet_complete(in, NULL, 0);
}

static void test_gpa_for_each(void **state)
{
    (void)state;
    fx_start(8192, 4096);
    memset(&GFE, 0, sizeof GFE);
    F.on_pp = pp_gpa_for_each;
    static const uint64_t pf0[] = { 16, 17 }, pf1[] = { 19 };
    const struct kmcl_page_range gr[] = { { 5000, 100, pf0 }, { 100, 0, pf1 } };
    g_send_gpa(1, 0, gr, 2, "x", 1);
    static const uint64_t pfo[] = { 23, 24 }; /* 24: one past the end of guest RAM */
    const struct kmcl_page_range go[] = { { 4096, 2048, pfo } };
    g_send_gpa(2, 0, go, 1, "y", 1);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_int_equal(F.nrec, 2);

    /* everything, in order: pfn 16 from byte 100 (3996 bytes), pfn 17 (1004), pfn 19 (100) */
    assert_int_equal(GFE.all, STATUS_OK);
    assert_int_equal(GFE.c_all.pieces, 3);
    assert_int_equal(GFE.c_all.total, 5100);
    for (uint32_t k = 0; k < 5000; k++)
        assert_int_equal(GFE.c_all.bytes[k], ram_byte(16 * KMCL_PAGE_SIZE + 100 + k));
    for (uint32_t k = 0; k < 100; k++)
        assert_int_equal(GFE.c_all.bytes[5000 + k], ram_byte(19 * KMCL_PAGE_SIZE + k));
    /* at most `limit` bytes */
    assert_int_equal(GFE.limited, STATUS_OK);
    assert_int_equal(GFE.c_limited.total, 4000);
    assert_int_equal(GFE.c_limited.pieces, 2);
    assert_memory_equal(GFE.c_limited.bytes, GFE.c_all.bytes, 4000);
    /* fn returning false stops */
    assert_int_equal(GFE.stopped, STATUS_CANCELLED);
    assert_int_equal(GFE.c_stopped.pieces, 2);
    /* a page outside guest RAM: the earlier piece was handed over, then STATUS_BAD_DATA */
    assert_int_equal(GFE.outside, STATUS_BAD_DATA);
    assert_int_equal(GFE.c_outside.pieces, 1);
    assert_int_equal(GFE.c_outside.total, 2048);
    for (uint32_t k = 0; k < 2048; k++)
        assert_int_equal(GFE.c_outside.bytes[k], ram_byte(23 * KMCL_PAGE_SIZE + 2048 + k));
    /* the guest's mistake is the VSP's business: the channel is fine */
    assert_false(kmcl_server_channel_failed(F.ch));
    assert_int_equal(F.log.count, 0);
}

static void pp_gpa_no_memory(struct kmcl_server_incoming *in, const uint8_t *buf, uint32_t len, uint32_t flags)
{
    (void)buf;
    (void)len;
    (void)flags;
    struct kmcl_gpa_range r[4];
    uint64_t p[8];
    struct kmcl_pkt_gpa g = { .ranges = r, .max_ranges = 4, .pfns = p, .max_pfns = 8 };
    assert_int_equal(kmcl_server_packet_get_external_data(in, &g, NULL), STATUS_OK);
    struct collect c = { 0 };
    GFE.all = kmcl_server_gpa_for_each(kmcl_server_incoming_channel(in), &g, UINT64_MAX, collect_fn, &c);
    GFE.c_all.pieces = c.pieces;
    kmcl_server_packet_complete(in, NULL, 0);
}

static void test_gpa_for_each_without_guest_memory(void **state)
{
    (void)state;
    fx_init(8192, 4096);
    fx_callbacks();
    F.t.guest_memory = NULL;
    fx_enable();
    memset(&GFE, 0, sizeof GFE);
    F.on_pp = pp_gpa_no_memory;
    static const uint64_t pf0[] = { 16 };
    const struct kmcl_page_range gr[] = { { 10, 0, pf0 } };
    g_send_gpa(1, 0, gr, 1, "x", 1);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_int_equal(GFE.all, STATUS_NOT_SUPPORTED);
    assert_int_equal(GFE.c_all.pieces, 0);
}

/* ---- completions of incoming packets ---- */

static void test_complete_writes_a_completion_packet(void **state)
{
    (void)state;
    fx_start(4096, 4096);
    g_send_ok(42, KMCL_PKT_FLAG_COMPLETION_REQUESTED, 40);
    g_send_ok(43, KMCL_PKT_FLAG_COMPLETION_REQUESTED, 8);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_int_equal(F.nrec, 2);
    assert_int_equal(F.host_signals, 0);
    kmcl_server_packet_complete(RECS[0].in, "result:13bytes", 13);
    assert_int_equal(F.host_signals, 1); /* the ring was empty and the guest not reading */
    kmcl_server_packet_complete(RECS[1].in, NULL, 0);
    assert_int_equal(F.host_signals, 1); /* not empty: no second signal */
    struct got g;
    g_recv_ok(&g);
    assert_int_equal(g.type, KMCL_PKT_COMPLETION);
    assert_int_equal(g.flags, 0);
    assert_int_equal(g.trans_id, 42);
    assert_int_equal(g.len, 16);
    assert_memory_equal(g.data, "result:13bytes", 13);
    assert_int_equal(g.data[13], 0);
    g_recv_ok(&g);
    assert_int_equal(g.type, KMCL_PKT_COMPLETION);
    assert_int_equal(g.trans_id, 43);
    assert_int_equal(g.len, 0);
    g_expect_empty();
    assert_int_equal(stats().completions_out, 2);
    assert_int_equal(F.log.count, 0);
}

static void test_complete_without_request_writes_nothing(void **state)
{
    (void)state;
    fx_start(4096, 4096);
    g_send_ok(7, 0, 8);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_false(RECS[0].creq);
    kmcl_server_packet_complete(RECS[0].in, "ignored!", 8);
    g_expect_empty();
    assert_int_equal(F.host_signals, 0);
    assert_int_equal(stats().completions_out, 0);
    kmcl_server_packet_fail(RECS[0].in, STATUS_IO_ERROR); /* already retired: a VSP bug, logged */
    g_expect_empty();
    assert_int_equal(F.log.count, 1);
    assert_int_equal(reports_matching(&F.log, "completed twice"), 1);
}

static void test_fail_writes_the_status(void **state)
{
    (void)state;
    fx_start(4096, 4096);
    g_send_ok(9, KMCL_PKT_FLAG_COMPLETION_REQUESTED, 8);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    kmcl_server_packet_fail(RECS[0].in, STATUS_NOT_SUPPORTED);
    struct got g;
    g_recv_ok(&g);
    assert_int_equal(g.type, KMCL_PKT_COMPLETION);
    assert_int_equal(g.trans_id, 9);
    assert_int_equal(g.len, 8); /* {u32 status} padded */
    uint32_t st;
    memcpy(&st, g.data, 4);
    assert_int_equal(st, STATUS_NOT_SUPPORTED);
    g_expect_empty();
}

static void test_complete_twice_logs_and_ignores(void **state)
{
    (void)state;
    fx_start(4096, 4096);
    g_send_ok(5, KMCL_PKT_FLAG_COMPLETION_REQUESTED, 8);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    kmcl_server_packet_complete(RECS[0].in, "first!!!", 8);
    kmcl_server_packet_complete(RECS[0].in, "second!!", 8);
    assert_int_equal(F.log.count, 1);
    assert_int_equal(reports_matching(&F.log, "completed twice", "5"), 1);
    assert_false(kmcl_server_channel_failed(F.ch));
    struct got g;
    g_recv_ok(&g);
    assert_memory_equal(g.data, "first!!!", 8);
    g_expect_empty();
    assert_int_equal(stats().completions_out, 1);
    /* the count of packets in flight is intact: quota 2 delivers exactly 2 of 3 */
    assert_int_equal(kmcl_server_channel_set_transaction_quota(F.ch, 2), STATUS_OK);
    for (int i = 0; i < 3; i++)
        g_send_ok(10 + i, 0, 8);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_int_equal(F.nrec, 3);
    kmcl_server_packet_complete(RECS[1].in, NULL, 0);
    assert_int_equal(F.nrec, 4);
    assert_int_equal(RECS[3].trans_id, 12);
}

static void *complete_thread(void *arg)
{
    struct kmcl_server_incoming *in = arg;
    kmcl_server_packet_complete(in, "from a thread", 13);
    return NULL;
}

static void test_complete_from_another_thread(void **state)
{
    (void)state;
    fx_start(4096, 4096);
    g_send_ok(77, KMCL_PKT_FLAG_COMPLETION_REQUESTED, 8);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, complete_thread, RECS[0].in), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    struct got g;
    g_recv_ok(&g);
    assert_int_equal(g.type, KMCL_PKT_COMPLETION);
    assert_int_equal(g.trans_id, 77);
    assert_memory_equal(g.data, "from a thread", 13);
    assert_int_equal(F.host_signals, 1);
}

/* A completion that can never fit the ring is a VSP bug: the channel fails (logged), nothing
 * half-written. */
static void test_complete_too_large_for_the_ring_fails_the_channel(void **state)
{
    (void)state;
    fx_start(4096, 512);
    g_send_ok(3, KMCL_PKT_FLAG_COMPLETION_REQUESTED, 8);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    static uint8_t big[600];
    kmcl_server_packet_complete(RECS[0].in, big, sizeof big);
    assert_true(kmcl_server_channel_failed(F.ch));
    assert_int_equal(F.log.count, 1);
    assert_int_equal(reports_matching(&F.log, "VSP bug", "600 bytes"), 1);
    g_expect_empty();
    assert_int_equal(F.host_signals, 0);
}

/* ---- outgoing packets ---- */

static void test_send_inband_and_transaction_id(void **state)
{
    (void)state;
    fx_start(4096, 4096);
    struct rt r = { .name = "p" };
    struct kmcl_server_packet *p = fx_packet(rt_record, &r);
    assert_ptr_equal(kmcl_server_packet_get_context(p), &r);
    assert_int_equal(kmcl_server_packet_send(p, "hello, guest", 12, 0), STATUS_OK);
    /* the routine ran once, on the way out of the call, with the packet in the ring */
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, STATUS_OK);
    assert_int_equal(r.len, 0);
    assert_true(r.in_ring);
    assert_int_equal(F.host_signals, 1);
    struct got g;
    g_recv_ok(&g);
    assert_int_equal(g.type, KMCL_PKT_DATA_INBAND);
    assert_int_equal(g.flags, 0); /* no completion asked */
    assert_int_equal(g.trans_id, 0); /* default */
    assert_int_equal(g.len, 16);
    assert_memory_equal(g.data, "hello, guest\0\0\0\0", 16);
    /* set_transaction_id: the id the guest sees */
    kmcl_server_packet_set_transaction_id(p, 0x1234567890ull);
    assert_int_equal(kmcl_server_packet_send(p, "again", 5, 0), STATUS_OK);
    assert_int_equal(kmcl_server_packet_send(p, "third", 5, 0), STATUS_OK); /* it stays */
    g_recv_ok(&g);
    assert_int_equal(g.trans_id, 0x1234567890ull);
    g_recv_ok(&g);
    assert_int_equal(g.trans_id, 0x1234567890ull);
    assert_int_equal(r.calls, 3);
    /* an empty payload */
    assert_int_equal(kmcl_server_packet_send(p, NULL, 0, 0), STATUS_OK);
    g_recv_ok(&g);
    assert_int_equal(g.len, 0);
    g_expect_empty();
    assert_int_equal(stats().packets_out, 4);
    kmcl_server_packet_free(NULL); /* harmless */
}

/* A send from inside process_packet: its routine runs once process_packet returned, before the
 * executor goes on (not only when the interrupt returns: a drain lasts as long as the guest writes). */
static struct rt PP_SEND_RT = { .name = "answer" };
static struct kmcl_server_packet *PP_SEND_PKT;

static void pp_sends(struct kmcl_server_incoming *in, const uint8_t *buf, uint32_t len, uint32_t flags)
{
    (void)flags;
    assert_int_equal(kmcl_server_packet_send(PP_SEND_PKT, buf, len, 0), STATUS_OK);
    ev("sent");
    kmcl_server_packet_complete(in, NULL, 0);
}

static void test_routine_runs_after_the_call_that_placed_the_packet(void **state)
{
    (void)state;
    fx_start(4096, 4096);
    PP_SEND_RT.calls = 0;
    PP_SEND_PKT = fx_packet(rt_record, &PP_SEND_RT);
    F.on_pp = pp_sends;
    g_send_ok(1, 0, 16);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_string_equal(F.ev, "pp1 sent rt:answer:ok pc1 ");
    assert_int_equal(PP_SEND_RT.calls, 1);
    /* a long batch: each answer's routine runs before the next request (the packet is reused) */
    ev_clear();
    for (int i = 2; i <= 5; i++)
        g_send_ok(i, 0, 16);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_string_equal(F.ev, "pp2 sent rt:answer:ok pp3 sent rt:answer:ok pp4 sent rt:answer:ok pp5 sent "
                              "rt:answer:ok pc4 ");
}

static void test_send_xfer(void **state)
{
    (void)state;
    fx_start(4096, 4096);
    struct rt r = { .name = "x" };
    struct kmcl_server_packet *p = fx_packet(rt_record, &r);
    const struct kmcl_xfer_range ranges[] = { { 100, 0 }, { 300, 8192 }, { 5, 65536 } };
    kmcl_server_packet_set_transaction_id(p, 55);
    assert_int_equal(kmcl_server_packet_send_xfer(p, 9, ranges, 3, "rndis-message-20byte", 20, 0), STATUS_OK);
    assert_int_equal(r.calls, 1);
    struct got g;
    g_recv_ok(&g);
    assert_int_equal(g.type, KMCL_PKT_DATA_XFER_PAGES);
    assert_int_equal(g.trans_id, 55);
    assert_int_equal(g.flags, 0);
    assert_int_equal(g.xfer.pageset_id, 9);
    assert_int_equal(g.xfer.sender_owns, 0);
    assert_int_equal(g.xfer.range_count, 3);
    assert_int_equal(g.xfer.trans_id, 55);
    assert_false(g.xfer.completion_requested);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(g.ranges[i].byte_count, ranges[i].byte_count);
        assert_int_equal(g.ranges[i].byte_offset, ranges[i].byte_offset);
    }
    assert_int_equal(g.xfer.payload_len, 24);
    assert_memory_equal(g.data, "rndis-message-20byte", 20);

    /* with WAIT_FOR_COMPLETION: the flag and an id from the channel's table */
    assert_int_equal(kmcl_server_packet_send_xfer(p, 1, ranges, 1, "m", 1, KMCL_SERVER_SEND_WAIT_FOR_COMPLETION),
                     STATUS_OK);
    assert_int_equal(r.calls, 1);
    g_recv_ok(&g);
    assert_int_equal(g.type, KMCL_PKT_DATA_XFER_PAGES);
    assert_int_equal(g.flags, KMCL_PKT_FLAG_COMPLETION_REQUESTED);
    assert_true(g.xfer.completion_requested);
    assert_int_not_equal(g.trans_id, 0);
    assert_int_not_equal(g.trans_id, 55);
    assert_int_equal(g.xfer.range_count, 1);
    g_complete(g.trans_id, "done", 4);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_int_equal(r.calls, 2);
    assert_memory_equal(r.data, "done", 4);

    /* then in-band again with the same packet: no ranges left over */
    assert_int_equal(kmcl_server_packet_send(p, "plain", 5, 0), STATUS_OK);
    g_recv_ok(&g);
    assert_int_equal(g.type, KMCL_PKT_DATA_INBAND);

    /* refused */
    assert_int_equal(kmcl_server_packet_send_xfer(p, 9, NULL, 1, "m", 1, 0), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_packet_send_xfer(p, 9, ranges, 0, "m", 1, 0), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_packet_send_xfer(p, 9, ranges, 1, "m", 1, 0x2), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_packet_send_xfer(NULL, 9, ranges, 1, "m", 1, 0), STATUS_INVALID_PARAMETER);
    static struct kmcl_xfer_range many[600]; /* 8 + 4800 bytes of header: more than the ring */
    assert_int_equal(kmcl_server_packet_send_xfer(p, 9, many, 600, "m", 1, 0), STATUS_INVALID_PARAMETER);
    g_expect_empty();
}

static void test_send_refusals(void **state)
{
    (void)state;
    fx_init(4096, 512);
    assert_int_equal(kmcl_server_channel_init_set_maximum_packet_size(F.ch, 256), STATUS_OK);
    fx_callbacks();
    struct rt r = { .name = "r" };
    struct kmcl_server_packet *p = fx_packet(rt_record, &r);
    static uint8_t buf[1024];
    /* not enabled */
    assert_int_equal(kmcl_server_packet_send(p, buf, 8, 0), STATUS_INVALID_STATE);
    fx_enable();
    /* larger than the maximum packet size */
    assert_int_equal(kmcl_server_packet_send(p, buf, 264, 0), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_packet_send(p, buf, 256, 0), STATUS_OK);
    /* bad arguments */
    assert_int_equal(kmcl_server_packet_send(p, buf, 8, 0x2), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_packet_send(p, NULL, 8, 0), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_packet_send(NULL, buf, 8, 0), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_packet_allocate(NULL, &p), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_packet_allocate(F.ch, NULL), STATUS_INVALID_PARAMETER);
    /* sent again before its routine ran (waiting for its completion) */
    assert_int_equal(kmcl_server_packet_send(p, buf, 8, KMCL_SERVER_SEND_WAIT_FOR_COMPLETION), STATUS_OK);
    assert_int_equal(kmcl_server_packet_send(p, buf, 8, 0), STATUS_INVALID_PARAMETER);
    const struct kmcl_xfer_range xr = { 1, 0 };
    assert_int_equal(kmcl_server_packet_send_xfer(p, 1, &xr, 1, buf, 8, 0), STATUS_INVALID_PARAMETER);
    assert_int_equal(r.calls, 1);
    assert_int_equal(F.log.count, 0);
    assert_false(kmcl_server_channel_failed(F.ch));
    kmcl_server_channel_disable(F.ch);
    assert_int_equal(r.calls, 2);
    assert_int_equal(r.status, STATUS_CANCELLED);

    /* larger than the ring can ever hold (the maximum packet size allows it) */
    fx_teardown(NULL);
    fx_init(4096, 512);
    fx_callbacks();
    fx_enable();
    p = fx_packet(NULL, NULL);
    assert_int_equal(kmcl_server_packet_send(p, buf, 512 - 8 - 24 + 8, 0), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_packet_send(p, buf, 512 - 8 - 24, 0), STATUS_OK); /* exactly fits */
    struct got g;
    g_recv_ok(&g);
    assert_int_equal(g.len, 512 - 8 - 24);
}

static void test_send_busy_when_every_transaction_id_is_outstanding(void **state)
{
    (void)state;
    fx_init(4096, 65536);
    assert_int_equal(kmcl_server_channel_init_set_maximum_packet_size(F.ch, 8), STATUS_OK);
    fx_callbacks();
    fx_enable();
    unsigned n = 0;
    status_t s;
    for (;;) {
        struct kmcl_server_packet *p = fx_packet(NULL, NULL);
        s = kmcl_server_packet_send(p, "12345678", 8, KMCL_SERVER_SEND_WAIT_FOR_COMPLETION);
        if (s != STATUS_OK)
            break;
        n++;
        assert_true(n < MAX_PKTS - 1);
    }
    assert_int_equal(s, STATUS_BUSY);
    assert_true(n >= 256);
    /* one completion frees an id */
    struct got g;
    g_recv_ok(&g);
    g_complete(g.trans_id, NULL, 0);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_int_equal(kmcl_server_packet_send(F.pkts[F.npkts - 1], "12345678", 8, KMCL_SERVER_SEND_WAIT_FOR_COMPLETION),
                     STATUS_OK);
    assert_false(kmcl_server_channel_failed(F.ch));
    kmcl_server_channel_disable(F.ch);
    assert_int_equal(stats().cancelled, n);
}

/* A packet allocated before init_set_maximum_packet_size raised the maximum can still carry (and
 * queue) the larger packets. */
static void test_packet_allocated_before_the_maximum_was_raised(void **state)
{
    (void)state;
    fx_init(4096, 262144);
    fx_callbacks();
    struct rt r = { .name = "big" };
    struct kmcl_server_packet *early = fx_packet(rt_record, &r);
    assert_int_equal(kmcl_server_channel_init_set_maximum_packet_size(F.ch, 200000), STATUS_OK);
    fx_enable();
    static uint8_t big[150000];
    for (uint32_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 13 + 1);
    /* fill the ring so that the big packet is queued (copied into the packet) */
    struct kmcl_server_packet *filler = fx_packet(NULL, NULL);
    assert_int_equal(kmcl_server_packet_send(filler, big, 150000, 0), STATUS_OK);
    assert_int_equal(kmcl_server_packet_send(early, big, 150000, 0), STATUS_OK);
    assert_int_equal(stats().queued_now, 1);
    assert_int_equal(r.calls, 0);
    struct kmcl_ring_packet pk;
    assert_int_equal(kmcl_ring_peek(&F.gr, &pk, g_bounce, sizeof g_bounce), STATUS_OK);
    kmcl_ring_consume(&F.gr);
    assert_true(kmcl_ring_publish_read(&F.gr)); /* room for the queued packet: signal */
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_int_equal(r.calls, 1);
    assert_int_equal(kmcl_ring_peek(&F.gr, &pk, g_bounce, sizeof g_bounce), STATUS_OK);
    assert_int_equal(kmcl_pkt_payload_len(&pk), 150000);
    assert_memory_equal(kmcl_pkt_payload(&pk), big, 150000);
}

/* A routine that sends the next packet of a stream: no recursion, whatever the stream's length. */
struct stream {
    struct kmcl_server_packet *pkt;
    uint32_t next, total;
    unsigned depth, max_depth;
    uintptr_t lo_sp, hi_sp;
    unsigned errors;
};
static struct stream STREAM;

static void stream_send(struct stream *s)
{
    uint64_t seq = s->next++;
    if (kmcl_server_packet_send(s->pkt, &seq, 8, 0) != STATUS_OK)
        s->errors++;
}

static void stream_routine(struct kmcl_server_packet *pkt, status_t status, const void *buf, uint32_t len)
{
    (void)buf;
    (void)len;
    struct stream *s = kmcl_server_packet_get_context(pkt);
    uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
    if (!s->lo_sp || sp < s->lo_sp)
        s->lo_sp = sp;
    if (sp > s->hi_sp)
        s->hi_sp = sp;
    s->depth++;
    if (s->depth > s->max_depth)
        s->max_depth = s->depth;
    if (status != STATUS_OK)
        s->errors++;
    if (s->next < s->total)
        stream_send(s);
    s->depth--;
}

static void test_stream_from_the_routine_does_not_recurse(void **state)
{
    (void)state;
    fx_start(4096, 4096);
    memset(&STREAM, 0, sizeof STREAM);
    STREAM.total = 10000;
    STREAM.pkt = fx_packet(stream_routine, &STREAM);
    stream_send(&STREAM);
    uint64_t expect = 0;
    unsigned seen = F.guest_signals, idle = 0;
    while (expect < STREAM.total) {
        struct got g;
        unsigned got_now = 0;
        while (g_recv(&g) == STATUS_OK) {
            uint64_t seq;
            memcpy(&seq, g.data, 8);
            assert_int_equal(seq, expect);
            expect++;
            got_now++;
        }
        /* the host waits for room: the guest's reading must tell it (pending_send_sz) */
        if (!g_signal_if_told(&seen))
            assert_true(got_now > 0 || expect == STREAM.total);
        assert_true(++idle < 100000);
    }
    assert_int_equal(STREAM.errors, 0);
    assert_int_equal(STREAM.max_depth, 1);
    assert_true(STREAM.hi_sp - STREAM.lo_sp < 4096); /* 10,000 nested calls would take far more */
    assert_true(stats().queued > 0); /* the stream did wait for room */
    assert_int_equal(stats().packets_out, STREAM.total);
    g_expect_empty();
}

static void test_wait_for_completion(void **state)
{
    (void)state;
    fx_start(4096, 4096);
    struct rt r = { .name = "w" };
    struct kmcl_server_packet *p = fx_packet(rt_record, &r);
    assert_int_equal(kmcl_server_packet_send(p, "please complete", 15, KMCL_SERVER_SEND_WAIT_FOR_COMPLETION),
                     STATUS_OK);
    assert_int_equal(r.calls, 0); /* in the ring, but waiting */
    struct got g;
    g_recv_ok(&g);
    assert_int_equal(g.type, KMCL_PKT_DATA_INBAND);
    assert_int_equal(g.flags, KMCL_PKT_FLAG_COMPLETION_REQUESTED);
    uint64_t id1 = g.trans_id;
    assert_int_not_equal(id1, 0);
    assert_false(kmcl_server_channel_interrupt(F.ch));
    assert_int_equal(r.calls, 0);
    /* the guest's completion: the routine, with its payload; not a packet for process_packet */
    g_complete(id1, "done-123", 8);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, STATUS_OK);
    assert_int_equal(r.len, 8);
    assert_memory_equal(r.data, "done-123", 8);
    assert_int_equal(F.nrec, 0);
    assert_int_equal(stats().completions_in, 1);
    /* sent again: a new id */
    assert_int_equal(kmcl_server_packet_send(p, "again", 5, KMCL_SERVER_SEND_WAIT_FOR_COMPLETION), STATUS_OK);
    g_recv_ok(&g);
    assert_int_not_equal(g.trans_id, id1);
    /* the old id is not outstanding any more: completing it fails the channel */
    g_complete(id1, NULL, 0);
    r.calls = 0;
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_true(kmcl_server_channel_failed(F.ch));
    expect_cancelled(&r, false); /* not completed by the stale id */
    assert_int_equal(reports_matching(&F.log, "completion for a transaction id never sent or already completed"), 1);
    assert_int_equal(F.log.count, 1);
    /* and the one waiting is cancelled (at the failure or at disable), once */
    kmcl_server_channel_disable(F.ch);
    expect_cancelled(&r, true);
}

static void test_unknown_completion_fails_the_channel(void **state)
{
    (void)state;
    fx_start(4096, 4096);
    g_send_ok(1, KMCL_PKT_FLAG_COMPLETION_REQUESTED, 8);
    uint32_t bad_at = __atomic_load_n(&ctrl(F.g2h)->write_index, __ATOMIC_RELAXED);
    g_complete(0xdead, "x", 1);
    g_send_ok(2, 0, 8);
    uint32_t read_before = ctrl(F.g2h)->read_index;
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_string_equal(F.ev, "pp1 "); /* nothing after the bad completion */
    assert_true(kmcl_server_channel_failed(F.ch));
    assert_int_equal(F.log.count, 1);
    assert_int_equal(reports_matching(&F.log, "guest -> host",
                                      "completion for a transaction id never sent or already completed"),
                     1);
    /* the read index never moved past the bad completion */
    uint32_t read_after = ctrl(F.g2h)->read_index;
    assert_true(read_after == read_before || read_after <= bad_at);
    /* the VSP's answer to packet 1 is not written either */
    kmcl_server_packet_complete(RECS[0].in, "answer", 6);
    g_expect_empty();
    assert_false(kmcl_server_channel_interrupt(F.ch));
    assert_int_equal(F.host_signals, 0);
    assert_int_equal(F.log.count, 1);
}

/* Transaction ids are predictable: a guest completing a packet still waiting in the queue for room
 * (not yet in the ring) must not complete it (the VSP could send it again while it is queued). */
static void test_completion_for_a_queued_packet_fails_the_channel(void **state)
{
    (void)state;
    fx_start(4096, 256);
    struct rt ra = { .name = "a" }, rb = { .name = "b" };
    struct kmcl_server_packet *a = fx_packet(rt_record, &ra), *b = fx_packet(rt_record, &rb);
    static uint8_t buf[200];
    assert_int_equal(kmcl_server_packet_send(a, buf, 200, KMCL_SERVER_SEND_WAIT_FOR_COMPLETION), STATUS_OK);
    assert_int_equal(kmcl_server_packet_send(b, buf, 16, KMCL_SERVER_SEND_WAIT_FOR_COMPLETION), STATUS_OK);
    assert_int_equal(stats().queued_now, 1);
    struct kmcl_ring_packet pk;
    assert_int_equal(kmcl_ring_peek(&F.gr, &pk, g_bounce, sizeof g_bounce), STATUS_OK);
    uint64_t id_a = pk.desc.trans_id;
    /* kmcl/core/xact.h: ids are generation << 32 | slot + 1, slots handed out in order */
    uint64_t id_b = id_a + 1;
    g_complete(id_b, NULL, 0);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    expect_cancelled(&rb, false); /* never completed by the guest */
    assert_true(kmcl_server_channel_failed(F.ch));
    assert_int_equal(reports_matching(&F.log, "guest -> host", "not yet written"), 1);
    assert_int_equal(F.log.count, 1);
    /* a resend is refused, and both are cancelled once */
    assert_int_equal(kmcl_server_packet_send(b, buf, 16, 0), STATUS_INVALID_STATE);
    kmcl_server_channel_disable(F.ch);
    expect_cancelled(&ra, true);
    expect_cancelled(&rb, true);
    assert_int_equal(stats().cancelled, 2);
}

/* A queued transfer-page packet sent again (a VSP bug) is refused and goes out unchanged. */
static void test_resend_of_a_queued_packet_is_refused(void **state)
{
    (void)state;
    fx_start(4096, 256);
    struct rt rf = { .name = "f" }, rx = { .name = "x" };
    struct kmcl_server_packet *filler = fx_packet(rt_record, &rf), *x = fx_packet(rt_record, &rx);
    static uint8_t buf[200];
    assert_int_equal(kmcl_server_packet_send(filler, buf, 200, 0), STATUS_OK);
    const struct kmcl_xfer_range xr[] = { { 10, 20 }, { 30, 40 } };
    assert_int_equal(kmcl_server_packet_send_xfer(x, 4, xr, 2, "xx", 2, 0), STATUS_OK);
    assert_int_equal(stats().queued_now, 1);
    assert_int_equal(kmcl_server_packet_send(x, "inband", 6, 0), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_packet_send_xfer(x, 5, xr, 1, "y", 1, 0), STATUS_INVALID_PARAMETER);
    unsigned seen = F.guest_signals;
    struct got g;
    g_recv_ok(&g);
    assert_true(g_signal_if_told(&seen));
    assert_int_equal(rx.calls, 1);
    g_recv_ok(&g);
    assert_int_equal(g.type, KMCL_PKT_DATA_XFER_PAGES);
    assert_int_equal(g.xfer.pageset_id, 4);
    assert_int_equal(g.xfer.range_count, 2);
    assert_int_equal(g.ranges[1].byte_offset, 40);
    assert_memory_equal(g.data, "xx", 2);
}

/* ---- a full host -> guest ring ---- */

static struct rt QRT[8];

static struct kmcl_server_packet *seq_packet(unsigned i)
{
    QRT[i] = (struct rt){ .name = "P" };
    return fx_packet(rt_record, &QRT[i]);
}

static status_t send_seq(struct kmcl_server_packet *p, uint64_t seq, uint32_t len)
{
    uint8_t buf[256] = { 0 };
    memcpy(buf, &seq, 8);
    return kmcl_server_packet_send(p, buf, len, 0);
}

static void test_full_ring_queues_in_order(void **state)
{
    (void)state;
    fx_start(4096, 512); /* 504 bytes usable: five 64-byte packets (88 ring bytes each) */
    for (int i = 1; i <= 3; i++)
        g_send_ok(i, KMCL_PKT_FLAG_COMPLETION_REQUESTED, 8);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_int_equal(F.nrec, 3);
    struct kmcl_server_packet *p[8];
    for (unsigned i = 1; i <= 7; i++)
        p[i] = seq_packet(i);
    for (unsigned i = 1; i <= 6; i++)
        assert_int_equal(send_seq(p[i], i, 64), STATUS_OK); /* never fails for lack of room */
    assert_int_equal(stats().queued_now, 1);
    kmcl_server_packet_complete(RECS[0].in, "C1C1C1C1", 8); /* would fit: queued behind P6 */
    assert_int_equal(send_seq(p[7], 7, 64), STATUS_OK);
    kmcl_server_packet_complete(RECS[1].in, "C2C2C2C2", 8);
    struct kmcl_server_channel_stats st = stats();
    assert_int_equal(st.queued_now, 4);
    assert_int_equal(st.queued, 4);
    for (unsigned i = 1; i <= 5; i++)
        assert_int_equal(QRT[i].calls, 1);
    assert_int_equal(QRT[6].calls, 0); /* not in the ring yet */
    assert_int_equal(QRT[7].calls, 0);
    assert_int_equal(F.host_signals, 1);

    /* the guest reads one packet at a time and signals when its ring says so */
    static const char *const expect[] = { "P1", "P2", "P3", "P4", "P5", "P6", "C1", "P7", "C2" };
    unsigned seen = F.guest_signals, signals = 0;
    for (unsigned k = 0; k < 9; k++) {
        struct got g;
        g_recv_ok(&g);
        char name[8];
        if (g.type == KMCL_PKT_COMPLETION) {
            snprintf(name, sizeof name, "C%llu", (unsigned long long)g.trans_id);
            assert_memory_equal(g.data, name, 2);
        } else {
            uint64_t seq;
            memcpy(&seq, g.data, 8);
            snprintf(name, sizeof name, "P%llu", (unsigned long long)seq);
            assert_int_equal(g.len, 64);
        }
        assert_string_equal(name, expect[k]);
        if (g_signal_if_told(&seen))
            signals++;
    }
    g_expect_empty();
    assert_true(signals >= 1);
    assert_int_equal(QRT[6].calls, 1);
    assert_int_equal(QRT[7].calls, 1);
    st = stats();
    assert_int_equal(st.queued_now, 0);
    assert_int_equal(st.packets_out, 7);
    assert_int_equal(st.completions_out, 2);
    /* the queue is empty again: the next answer goes straight in */
    kmcl_server_packet_complete(RECS[2].in, "C3C3C3C3", 8);
    struct got g;
    g_recv_ok(&g);
    assert_int_equal(g.trans_id, 3);
    assert_int_equal(F.log.count, 0);
}

/* While anything is queued for the guest, its packets are not read; reading resumes once the
 * queue is written. */
static void test_queued_answers_stall_reading(void **state)
{
    (void)state;
    fx_start(4096, 256);
    struct kmcl_server_packet *p1 = seq_packet(1), *p2 = seq_packet(2);
    assert_int_equal(send_seq(p1, 1, 200), STATUS_OK);
    assert_int_equal(send_seq(p2, 2, 64), STATUS_OK); /* queued */
    unsigned seen = F.guest_signals;
    g_send_ok(10, 0, 8);
    g_send_ok(11, 0, 8);
    assert_true(g_signal_if_told(&seen)); /* the guest signals: its ring went non-empty */
    assert_int_equal(F.nrec, 0);           /* not read */
    assert_true(stats().backlog_stalls >= 1);
    assert_true(kmcl_ring_read_available(&F.gr) > 0);
    assert_false(kmcl_ring_is_empty(&F.gw)); /* the guest's packets are still in its ring */
    /* more signals do not help while the guest has not made room */
    (void)kmcl_server_channel_interrupt(F.ch);
    assert_int_equal(F.nrec, 0);
    /* the guest reads: room: signal: the queue is written, then the packets are read */
    struct got g;
    g_recv_ok(&g);
    assert_true(g_signal_if_told(&seen));
    assert_string_equal(F.ev, "rt:P:ok pp10 rt:P:ok pp11 pc2 ");
    assert_int_equal(QRT[2].calls, 1);
    assert_true(kmcl_ring_is_empty(&F.gw));
}

/* interrupt says whether it did anything: read or wrote a packet (or called the queue callback). */
static void test_interrupt_return_value(void **state)
{
    (void)state;
    fx_start(4096, 256);
    assert_false(kmcl_server_channel_interrupt(F.ch)); /* nothing at all */
    g_send_ok(1, 0, 8);
    assert_true(kmcl_server_channel_interrupt(F.ch)); /* read a packet */
    assert_false(kmcl_server_channel_interrupt(F.ch));
    kmcl_server_packet_complete(RECS[0].in, NULL, 0);
    assert_false(kmcl_server_channel_interrupt(F.ch));
    struct kmcl_server_packet *p1 = seq_packet(1), *p2 = seq_packet(2);
    assert_int_equal(send_seq(p1, 1, 200), STATUS_OK);
    assert_int_equal(send_seq(p2, 2, 64), STATUS_OK); /* queued */
    assert_false(kmcl_server_channel_interrupt(F.ch)); /* no room yet: nothing done */
    struct got g;
    g_recv_ok(&g);
    assert_true(kmcl_server_channel_interrupt(F.ch)); /* wrote the queued packet */
    assert_false(kmcl_server_channel_interrupt(F.ch));
    /* a completion from the guest */
    struct rt r = { .name = "w" };
    g_recv_ok(&g);
    assert_int_equal(kmcl_server_packet_send(fx_packet(rt_record, &r), "w", 1, KMCL_SERVER_SEND_WAIT_FOR_COMPLETION),
                     STATUS_OK);
    g_recv_ok(&g);
    g_complete(g.trans_id, NULL, 0);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_int_equal(r.calls, 1);
    assert_false(kmcl_server_channel_interrupt(F.ch));
}

/* ---- the transaction quota ---- */

static void *complete_rec_thread(void *arg)
{
    kmcl_server_packet_complete(((struct rec *)arg)->in, NULL, 0);
    return NULL;
}

static void pp_complete_now(struct kmcl_server_incoming *in, const uint8_t *buf, uint32_t len, uint32_t flags)
{
    (void)buf;
    (void)len;
    (void)flags;
    kmcl_server_packet_complete(in, NULL, 0);
}

static void test_quota_limits_packets_in_flight(void **state)
{
    (void)state;
    fx_start(8192, 4096);
    assert_int_equal(kmcl_server_channel_set_transaction_quota(F.ch, 3), STATUS_OK);
    for (int i = 1; i <= 10; i++)
        g_send_ok(i, 0, 8);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_string_equal(F.ev, "pp1 pp2 pp3 ");
    assert_true(stats().quota_stalls >= 1);
    /* further signals do not read past the quota */
    assert_false(kmcl_server_channel_interrupt(F.ch));
    assert_int_equal(F.nrec, 3);
    /* one completion: the next packet is read at once, on the completing thread */
    kmcl_server_packet_complete(RECS[0].in, NULL, 0);
    assert_int_equal(F.nrec, 4);
    assert_int_equal(RECS[3].trans_id, 4);
    assert_true(pthread_equal(RECS[3].thread, pthread_self()));
    /* from another thread too */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, complete_rec_thread, &RECS[1]), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(F.nrec, 5);
    assert_int_equal(RECS[4].trans_id, 5);
    assert_false(pthread_equal(RECS[4].thread, pthread_self()));
    assert_int_equal(F.pc_calls, 0); /* the ring is not empty yet */
    /* the rest, completed as they come: one batch of 10 once the ring is empty */
    F.on_pp = pp_complete_now;
    kmcl_server_packet_complete(RECS[2].in, NULL, 0);
    kmcl_server_packet_complete(RECS[3].in, NULL, 0);
    kmcl_server_packet_complete(RECS[4].in, NULL, 0);
    assert_int_equal(F.nrec, 10);
    for (unsigned i = 0; i < 10; i++)
        assert_int_equal(RECS[i].trans_id, i + 1);
    assert_int_equal(F.pc_calls, 1);
    assert_int_equal(F.pc_last, 10);
    assert_true(kmcl_ring_is_empty(&F.gw));
}

static void test_quota_lowered_and_raised(void **state)
{
    (void)state;
    fx_start(8192, 4096);
    for (int i = 1; i <= 12; i++)
        g_send_ok(i, 0, 8);
    assert_int_equal(kmcl_server_channel_set_transaction_quota(F.ch, 4), STATUS_OK);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_int_equal(F.nrec, 4);
    /* lower than in flight: nothing read until in flight < 2 */
    assert_int_equal(kmcl_server_channel_set_transaction_quota(F.ch, 2), STATUS_OK);
    kmcl_server_packet_complete(RECS[0].in, NULL, 0);
    assert_int_equal(F.nrec, 4);
    kmcl_server_packet_complete(RECS[1].in, NULL, 0);
    assert_int_equal(F.nrec, 4);
    kmcl_server_packet_complete(RECS[2].in, NULL, 0);
    assert_int_equal(F.nrec, 5); /* 1 in flight < 2: one more */
    assert_false(kmcl_server_channel_interrupt(F.ch));
    assert_int_equal(F.nrec, 5);
    /* raised while stopped at the quota: reading resumes at once (nothing else would resume it:
     * the guest does not signal a reader that stopped with its interrupt mask set) */
    assert_int_equal(kmcl_server_channel_set_transaction_quota(F.ch, 5), STATUS_OK);
    assert_int_equal(F.nrec, 8);
    assert_int_equal(F.pc_calls, 0);
    /* and the guest does not signal: the mask is still set */
    unsigned seen = F.guest_signals;
    g_send_ok(13, 0, 8);
    assert_int_equal(F.guest_signals, seen);
    for (unsigned i = 3; i < 8; i++)
        kmcl_server_packet_complete(RECS[i].in, NULL, 0);
    assert_int_equal(F.nrec, 13);
    for (unsigned i = 0; i < 13; i++)
        assert_int_equal(RECS[i].trans_id, i + 1);
}

/* The VSP completes a request from the routine of its answer (the answer is in the ring): the
 * completion runs inside another call (the send's), and must still resume reading stopped at the
 * quota. The answers are sent from outside the executor (a worker thread of the VSP, say). */
static void answer_routine(struct kmcl_server_packet *pkt, status_t status, const void *buf, uint32_t len)
{
    (void)buf;
    (void)len;
    ev("answered:%s", status_name(status));
    kmcl_server_packet_complete(kmcl_server_packet_get_context(pkt), NULL, 0);
}

static void test_completion_from_a_routine_resumes_reading(void **state)
{
    (void)state;
    fx_start(4096, 4096);
    assert_int_equal(kmcl_server_channel_set_transaction_quota(F.ch, 1), STATUS_OK);
    struct kmcl_server_packet *answer = fx_packet(answer_routine, NULL);
    for (int i = 1; i <= 3; i++)
        g_send_ok(i, 0, 8);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_string_equal(F.ev, "pp1 ");
    for (unsigned i = 0; i < 3; i++) {
        assert_int_equal(F.nrec, i + 1);
        kmcl_server_packet_set_context(answer, RECS[i].in);
        assert_int_equal(kmcl_server_packet_send(answer, RECS[i].data, 8, 0), STATUS_OK);
    }
    assert_string_equal(F.ev, "pp1 answered:ok pp2 answered:ok pp3 pc3 answered:ok ");
    struct got g;
    for (int i = 1; i <= 3; i++) {
        g_recv_ok(&g);
        assert_int_equal(g.data[0], (uint8_t)(i * 31));
    }
    g_expect_empty();
}

/* The guest's completions are read even while requests are not (quota reached, answers queued):
 * they free the host's packets and never cause an answer. */
static void test_guest_completions_read_while_requests_wait(void **state)
{
    (void)state;
    fx_start(4096, 256);
    assert_int_equal(kmcl_server_channel_set_transaction_quota(F.ch, 1), STATUS_OK);
    g_send_ok(1, 0, 8);
    assert_true(kmcl_server_channel_interrupt(F.ch)); /* in flight: the quota is reached */
    struct rt w = { .name = "w" };
    assert_int_equal(kmcl_server_packet_send(fx_packet(rt_record, &w), "w", 1, KMCL_SERVER_SEND_WAIT_FOR_COMPLETION),
                     STATUS_OK);
    struct got g;
    g_recv_ok(&g);
    g_complete(g.trans_id, "c1", 2);
    g_send_ok(2, 0, 8); /* a request behind it waits */
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.status, STATUS_OK);
    assert_int_equal(F.nrec, 1);
    assert_true(stats().quota_stalls >= 1);
    kmcl_server_packet_complete(RECS[0].in, NULL, 0);
    assert_int_equal(F.nrec, 2);
    kmcl_server_packet_complete(RECS[1].in, NULL, 0);

    /* answers queued (the host -> guest ring full) */
    assert_int_equal(kmcl_server_channel_set_transaction_quota(F.ch, 8), STATUS_OK);
    struct rt w2 = { .name = "w2" }, f = { .name = "f" }, q = { .name = "q" };
    assert_int_equal(kmcl_server_packet_send(fx_packet(rt_record, &w2), "w", 1, KMCL_SERVER_SEND_WAIT_FOR_COMPLETION),
                     STATUS_OK);
    static uint8_t buf[200];
    assert_int_equal(kmcl_server_packet_send(fx_packet(rt_record, &f), buf, 184, 0), STATUS_OK);
    assert_int_equal(kmcl_server_packet_send(fx_packet(rt_record, &q), buf, 64, 0), STATUS_OK); /* queued */
    assert_int_equal(stats().queued_now, 1);
    struct kmcl_ring_packet pk;
    assert_int_equal(kmcl_ring_peek(&F.gr, &pk, g_bounce, sizeof g_bounce), STATUS_OK); /* w2, not consumed */
    g_complete(pk.desc.trans_id, "c2", 2);
    g_send_ok(3, 0, 8);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_int_equal(w2.calls, 1);
    assert_int_equal(F.nrec, 2); /* request 3 waits for the queue */
    assert_int_equal(q.calls, 0);
    assert_true(stats().backlog_stalls >= 1);
    assert_false(kmcl_server_channel_failed(F.ch));
}

static void test_max_inband_payload(void **state)
{
    (void)state;
    fx_init(4096, 512);
    assert_int_equal(kmcl_server_channel_max_inband_payload(F.ch), 0); /* not enabled */
    fx_callbacks();
    fx_enable();
    uint32_t m = kmcl_server_channel_max_inband_payload(F.ch);
    assert_int_equal(m, 512 - 8 - 24); /* the ring: 8 bytes stay free, descriptor and trailer */
    struct kmcl_server_packet *p = fx_packet(NULL, NULL);
    static uint8_t buf[1024];
    assert_int_equal(kmcl_server_packet_send(p, buf, m + 1, 0), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_server_packet_send(p, buf, m, 0), STATUS_OK);
    fx_teardown(NULL);
    fx_init(4096, 4096);
    assert_int_equal(kmcl_server_channel_init_set_maximum_packet_size(F.ch, 100), STATUS_OK);
    fx_callbacks();
    fx_enable();
    assert_int_equal(kmcl_server_channel_max_inband_payload(F.ch), 100); /* the maximum packet size */
}

/* An empty payload (buf NULL) that must be queued. */
static void test_empty_payload_queued(void **state)
{
    (void)state;
    fx_start(4096, 256);
    struct rt f = { .name = "f" }, e = { .name = "e" };
    static uint8_t buf[224];
    assert_int_equal(kmcl_server_packet_send(fx_packet(rt_record, &f), buf, 224, 0), STATUS_OK); /* full */
    assert_int_equal(kmcl_server_packet_send(fx_packet(rt_record, &e), NULL, 0, 0), STATUS_OK);    /* queued */
    assert_int_equal(stats().queued_now, 1);
    unsigned seen = F.guest_signals;
    struct got g;
    g_recv_ok(&g);
    assert_true(g_signal_if_told(&seen));
    assert_int_equal(e.calls, 1);
    g_recv_ok(&g);
    assert_int_equal(g.len, 0);
}

/* process_packet calling interrupt (the VSP polls its channel): the packet being processed is not
 * delivered again, and nothing is lost. */
static void pp_calls_interrupt(struct kmcl_server_incoming *in, const uint8_t *buf, uint32_t len, uint32_t flags)
{
    (void)buf;
    (void)len;
    (void)flags;
    (void)kmcl_server_channel_interrupt(F.ch);
    kmcl_server_packet_complete(in, NULL, 0);
}

static void test_interrupt_from_process_packet(void **state)
{
    (void)state;
    fx_start(4096, 4096);
    F.on_pp = pp_calls_interrupt;
    for (int i = 1; i <= 3; i++)
        g_send_ok(i, 0, 8);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_string_equal(F.ev, "pp1 pp2 pp3 pc3 ");
}

/* ---- pause and start ---- */

static void *start_thread(void *arg)
{
    kmcl_server_channel_start(arg);
    return NULL;
}

static void test_pause_and_start_from_outside(void **state)
{
    (void)state;
    fx_start(4096, 4096);
    kmcl_server_channel_pause(F.ch);
    g_send_ok(1, 0, 8);
    g_send_ok(2, 0, 8);
    assert_false(kmcl_server_channel_interrupt(F.ch)); /* paused: nothing read */
    assert_string_equal(F.ev, "");
    kmcl_server_channel_start(F.ch); /* reads at once, on this thread */
    assert_string_equal(F.ev, "pp1 pp2 pc2 ");
    kmcl_server_channel_start(F.ch); /* not paused: nothing */
    assert_string_equal(F.ev, "pp1 pp2 pc2 ");
    /* from another thread */
    kmcl_server_channel_pause(F.ch);
    g_send_ok(3, 0, 8);
    assert_false(kmcl_server_channel_interrupt(F.ch));
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, start_thread, F.ch), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_string_equal(F.ev, "pp1 pp2 pc2 pp3 pc1 ");
    assert_false(pthread_equal(RECS[2].thread, pthread_self()));
    /* queued answers are written at start too */
    kmcl_server_channel_pause(F.ch);
    assert_false(kmcl_server_channel_interrupt(F.ch));
    assert_false(kmcl_server_channel_failed(F.ch));
}

/* start from the VSP's callbacks: from process_packet itself, and from the routine of a packet (the
 * pattern of a VSP that pauses while it streams an answer, and starts when the last part is in the
 * ring). */
static struct kmcl_server_packet *STREAM_PKT;
static unsigned stream_left;

static void streaming_routine(struct kmcl_server_packet *pkt, status_t status, const void *buf, uint32_t len)
{
    (void)buf;
    (void)len;
    (void)status;
    if (stream_left) {
        stream_left--;
        uint64_t v = stream_left;
        assert_int_equal(kmcl_server_packet_send(pkt, &v, 8, 0), STATUS_OK);
        return;
    }
    ev("start");
    kmcl_server_channel_start(F.ch);
}

static void pp_pause_and_stream(struct kmcl_server_incoming *in, const uint8_t *buf, uint32_t len, uint32_t flags)
{
    (void)buf;
    (void)len;
    (void)flags;
    uint64_t id = kmcl_server_incoming_trans_id(in);
    if (id == 1) { /* pause and start in the same call: no effect */
        kmcl_server_channel_pause(kmcl_server_incoming_channel(in));
        kmcl_server_channel_start(kmcl_server_incoming_channel(in));
    } else if (id == 2) {
        kmcl_server_channel_pause(kmcl_server_incoming_channel(in));
        stream_left = 3;
        kmcl_server_packet_set_context(STREAM_PKT, in);
        uint64_t v = 99;
        assert_int_equal(kmcl_server_packet_send(STREAM_PKT, &v, 8, 0), STATUS_OK);
    }
    kmcl_server_packet_complete(in, NULL, 0);
}

static void start_routine(struct kmcl_server_packet *pkt, status_t status, const void *buf, uint32_t len)
{
    (void)pkt;
    (void)buf;
    (void)len;
    ev("start:%s", status_name(status));
    kmcl_server_channel_start(F.ch);
}

static void test_start_from_callbacks(void **state)
{
    (void)state;
    fx_start(4096, 4096);
    STREAM_PKT = fx_packet(streaming_routine, NULL);
    F.on_pp = pp_pause_and_stream;
    for (int i = 1; i <= 4; i++)
        g_send_ok(i, 0, 8);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    /* packet 2 paused; its stream's last routine started: 3 and 4 read in the same interrupt */
    assert_string_equal(F.ev, "pp1 pp2 start pp3 pp4 pc4 ");
    struct got g;
    uint64_t v;
    static const uint64_t expect[] = { 99, 2, 1, 0 };
    for (int i = 0; i < 4; i++) {
        g_recv_ok(&g);
        memcpy(&v, g.data, 8);
        assert_int_equal(v, expect[i]);
    }
    g_expect_empty();

    /* from the routine of a packet sent from outside the executor: read within that send */
    ev_clear();
    kmcl_server_channel_pause(F.ch);
    g_send_ok(5, 0, 8);
    assert_false(kmcl_server_channel_interrupt(F.ch));
    assert_int_equal(kmcl_server_packet_send(fx_packet(start_routine, NULL), "go", 2, 0), STATUS_OK);
    assert_string_equal(F.ev, "start:ok pp5 pc1 ");
}

/* ---- suppressed queue management ---- */

static struct {
    unsigned got, calls;
    uint64_t ids[16];
    struct kmcl_server_packet *reply;
} SQ;

static void queue_reads_the_ring(void)
{
    SQ.calls++;
    struct kmcl_ring *r = kmcl_server_channel_inbound_ring(F.ch);
    bool more;
    do {
        kmcl_ring_begin_read(r);
        struct kmcl_ring_packet p;
        while (kmcl_ring_peek(r, &p, g_bounce, sizeof g_bounce) == STATUS_OK) {
            if (p.desc.type == KMCL_PKT_COMPLETION) { /* handed back: the waiting packet completes */
                assert_int_equal(kmcl_server_channel_complete_transaction(F.ch, &p), STATUS_OK);
                kmcl_ring_consume(r);
                continue;
            }
            if (SQ.got < 16)
                SQ.ids[SQ.got] = p.desc.trans_id;
            SQ.got++;
            kmcl_ring_consume(r);
        }
        bool sig;
        more = kmcl_ring_end_read(r, &sig);
        if (sig)
            assert_true(kmcl_server_channel_signal(F.ch));
    } while (more);
    assert_int_equal(kmcl_server_packet_send(SQ.reply, "seen", 4, 0), STATUS_OK);
}

static void test_suppressed_queue_management(void **state)
{
    (void)state;
    fx_init(4096, 4096);
    memset(&SQ, 0, sizeof SQ);
    fx_callbacks(); /* process_packet set, never to be called */
    assert_int_equal(kmcl_server_channel_init_set_flags(F.ch, KMCL_SERVER_FLAG_SUPPRESS_QUEUE_MANAGEMENT), STATUS_OK);
    assert_int_equal(kmcl_server_channel_init_set_queue_callback(F.ch, cb_queue), STATUS_OK);
    fx_enable();
    ev_clear();
    SQ.reply = fx_packet(NULL, NULL);
    F.on_queue = queue_reads_the_ring;
    for (int i = 1; i <= 3; i++)
        g_send_ok(i, KMCL_PKT_FLAG_COMPLETION_REQUESTED, 8);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_string_equal(F.ev, "queue ");
    assert_int_equal(SQ.got, 3);
    assert_int_equal(SQ.ids[2], 3);
    assert_int_equal(F.nrec, 0);
    assert_int_equal(F.pc_calls, 0);
    struct got g;
    g_recv_ok(&g);
    assert_memory_equal(g.data, "seen", 4);
    /* every interrupt calls it */
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_int_equal(SQ.calls, 2);
    /* paused: not called; start calls it */
    kmcl_server_channel_pause(F.ch);
    g_send_ok(4, 0, 8);
    assert_false(kmcl_server_channel_interrupt(F.ch));
    assert_int_equal(SQ.calls, 2);
    kmcl_server_channel_start(F.ch);
    assert_int_equal(SQ.calls, 3);
    assert_int_equal(SQ.got, 4);
    /* outside the callback, under the channel's lock */
    g_send_ok(5, 0, 8);
    kmcl_server_channel_lock(F.ch);
    struct kmcl_ring *r = kmcl_server_channel_inbound_ring(F.ch);
    struct kmcl_ring_packet p;
    assert_int_equal(kmcl_ring_peek(r, &p, NULL, 0), STATUS_OK);
    assert_int_equal(p.desc.trans_id, 5);
    kmcl_ring_consume(r);
    assert_false(kmcl_ring_publish_read(r));
    kmcl_server_channel_unlock(F.ch);
    assert_int_equal(F.nrec, 0);
    assert_int_equal(stats().packets_in, 0);
    /* A packet sent with wait-for-completion: the guest's completion, read by the VSP, is handed
     * back and the routine gets its payload; a completion for an id never sent fails the channel. */
    struct rt w = { .name = "waiting" };
    assert_int_equal(kmcl_server_packet_send(fx_packet(rt_record, &w), "ping", 4, KMCL_SERVER_SEND_WAIT_FOR_COMPLETION),
                     STATUS_OK);
    static struct got sent;
    do /* past the queue callback's earlier "seen" replies */
        g_recv_ok(&sent);
    while (!(sent.flags & KMCL_PKT_FLAG_COMPLETION_REQUESTED));
    assert_memory_equal(sent.data, "ping", 4);
    assert_int_equal(w.calls, 0);
    g_complete(sent.trans_id, "pong", 4);
    (void)kmcl_server_channel_interrupt(F.ch);
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.status, STATUS_OK);
    assert_memory_equal(w.data, "pong", 4);
    assert_false(kmcl_server_channel_failed(F.ch));
    struct kmcl_ring_packet fake = { .desc = { .type = KMCL_PKT_DATA_INBAND } };
    assert_int_equal(kmcl_server_channel_complete_transaction(F.ch, &fake), STATUS_INVALID_PARAMETER);
}

/* ---- disable ---- */

static void test_disable_cancels_what_is_outstanding(void **state)
{
    (void)state;
    fx_start(4096, 256);
    g_send_ok(1, KMCL_PKT_FLAG_COMPLETION_REQUESTED, 8);
    g_send_ok(2, KMCL_PKT_FLAG_COMPLETION_REQUESTED, 8);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    struct rt w = { .name = "waiting" }, f = { .name = "filler" }, q1 = { .name = "queued" },
              q2 = { .name = "queued-wait" };
    static uint8_t buf[160];
    assert_int_equal(kmcl_server_packet_send(fx_packet(rt_record, &w), buf, 8, KMCL_SERVER_SEND_WAIT_FOR_COMPLETION),
                     STATUS_OK);
    assert_int_equal(kmcl_server_packet_send(fx_packet(rt_record, &f), buf, 160, 0), STATUS_OK);
    assert_int_equal(kmcl_server_packet_send(fx_packet(rt_record, &q1), buf, 64, 0), STATUS_OK);
    kmcl_server_packet_complete(RECS[0].in, "c", 1);
    assert_int_equal(kmcl_server_packet_send(fx_packet(rt_record, &q2), buf, 8, KMCL_SERVER_SEND_WAIT_FOR_COMPLETION),
                     STATUS_OK);
    assert_int_equal(stats().queued_now, 3);
    assert_int_equal(f.calls, 1);
    snapshot();
    unsigned signals = F.host_signals;
    ev_clear();
    kmcl_server_channel_disable(F.ch);
    /* suspend, then every routine with STATUS_CANCELLED once (queued in order), then closed */
    assert_string_equal(F.ev,
                        "suspend rt:queued:cancelled rt:queued-wait:cancelled rt:waiting:cancelled closed ");
    assert_int_equal(w.calls, 1);
    assert_int_equal(q1.calls, 1);
    assert_int_equal(q2.calls, 1);
    assert_int_equal(f.calls, 1);
    struct kmcl_server_channel_stats st = stats();
    assert_int_equal(st.cancelled, 3);
    assert_int_equal(st.queued_now, 0);
    expect_untouched();
    /* afterwards: sends refused (no routine), interrupts do nothing, completions only retire */
    struct rt late = { .name = "late" };
    assert_int_equal(kmcl_server_packet_send(fx_packet(rt_record, &late), buf, 8, 0), STATUS_INVALID_STATE);
    assert_int_equal(kmcl_server_packet_send(fx_packet(rt_record, &late), buf, 8, KMCL_SERVER_SEND_WAIT_FOR_COMPLETION),
                     STATUS_INVALID_STATE);
    const struct kmcl_xfer_range xr = { 1, 0 };
    assert_int_equal(kmcl_server_packet_send_xfer(fx_packet(rt_record, &late), 1, &xr, 1, buf, 8, 0),
                     STATUS_INVALID_STATE);
    assert_int_equal(late.calls, 0);
    g_send_ok(3, 0, 8); /* the guest writes on: nobody reads */
    snapshot();
    assert_false(kmcl_server_channel_interrupt(F.ch));
    kmcl_server_packet_complete(RECS[1].in, "late", 4);
    assert_false(kmcl_server_channel_signal(F.ch));
    kmcl_server_channel_start(F.ch);
    expect_untouched();
    assert_int_equal(F.host_signals, signals);
    assert_int_equal(F.nrec, 2);
    assert_int_equal(F.log.count, 0);
    assert_string_equal(F.ev, "suspend rt:queued:cancelled rt:queued-wait:cancelled rt:waiting:cancelled closed ");
}

/* A routine run by disable may try to send again: refused, not recursed into. */
static void resend_on_cancel(struct kmcl_server_packet *pkt, status_t status, const void *buf, uint32_t len)
{
    (void)buf;
    (void)len;
    ev("cancel:%s", status_name(status));
    ev("resend:%s", status_name(kmcl_server_packet_send(pkt, "again", 5, KMCL_SERVER_SEND_WAIT_FOR_COMPLETION)));
}

static void test_disable_routines_may_send(void **state)
{
    (void)state;
    fx_start(4096, 4096);
    assert_int_equal(kmcl_server_packet_send(fx_packet(resend_on_cancel, NULL), "x", 1,
                                             KMCL_SERVER_SEND_WAIT_FOR_COMPLETION),
                     STATUS_OK);
    kmcl_server_channel_disable(F.ch);
    assert_string_equal(F.ev, "suspend cancel:cancelled resend:invalid-state closed ");
}

/* ---- bad input from the guest ---- */

/* After a failure: nothing read, written or signalled, whatever happens. */
static void expect_silent_after_failure(const char *const *subs)
{
    assert_true(kmcl_server_channel_failed(F.ch));
    assert_int_equal(F.log.count, 1);
    if (F.log.count != 1)
        reports_dump(&F.log);
    assert_int_equal(reports_matching_v(&F.log, subs), 1);
    snapshot();
    unsigned signals = F.host_signals, nrec = F.nrec;
    assert_false(kmcl_server_channel_interrupt(F.ch));
    struct kmcl_server_packet *p = fx_packet(NULL, NULL);
    assert_int_equal(kmcl_server_packet_send(p, "12345678", 8, 0), STATUS_INVALID_STATE);
    assert_int_equal(kmcl_server_packet_send(p, "12345678", 8, KMCL_SERVER_SEND_WAIT_FOR_COMPLETION),
                     STATUS_INVALID_STATE);
    for (unsigned i = 0; i < nrec; i++)
        kmcl_server_packet_complete(RECS[i].in, "answer", 6);
    assert_false(kmcl_server_channel_signal(F.ch));
    kmcl_server_channel_pause(F.ch);
    kmcl_server_channel_start(F.ch);
    assert_false(kmcl_server_channel_interrupt(F.ch));
    expect_untouched();
    assert_int_equal(F.host_signals, signals);
    assert_int_equal(F.nrec, nrec);
    assert_int_equal(F.log.count, 1);
}

#define EXPECT_SILENT(...) expect_silent_after_failure((const char *const[]){ __VA_ARGS__, NULL })

static void test_corrupted_write_index_fails_the_channel(void **state)
{
    (void)state;
    fx_start(4096, 4096);
    g_send_ok(1, KMCL_PKT_FLAG_COMPLETION_REQUESTED, 8);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    g_send_ok(2, 0, 8);
    __atomic_store_n(&ctrl(F.g2h)->write_index, 4096 + 64, __ATOMIC_RELEASE); /* outside the data area */
    (void)kmcl_server_channel_interrupt(F.ch);
    assert_int_equal(F.nrec, 1);
    EXPECT_SILENT("guest -> host", "write index outside the data area");
}

static void test_bad_packet_length_fails_the_channel(void **state)
{
    (void)state;
    fx_start(4096, 4096);
    g_send_ok(1, 0, 8);
    uint32_t at = F.gw.pos;
    g_send_ok(2, 0, 8);
    g_send_ok(3, 0, 8);
    /* packet 2's len8: far more than was published */
    uint16_t len8 = 200;
    memcpy(F.g2h + KMCL_PAGE_SIZE + at + offsetof(struct kmcl_pkt_desc, len8), &len8, 2);
    (void)kmcl_server_channel_interrupt(F.ch);
    assert_string_equal(F.ev, "pp1 ");
    EXPECT_SILENT("guest -> host", "packet length (with trailer) exceeds the bytes available");
}

static void test_unknown_packet_type_fails_the_channel(void **state)
{
    (void)state;
    fx_start(4096, 4096);
    g_send_ok(1, 0, 8);
    struct kmcl_iov iov = { "synch!!!", 8 };
    struct kmcl_ring_out out = { .type = KMCL_PKT_SYNCH, .trans_id = 2, .iov = &iov, .iov_count = 1 };
    bool sig;
    assert_int_equal(kmcl_ring_write(&F.gw, &out, 0, &sig), STATUS_OK); /* valid for the ring layer */
    g_send_ok(3, 0, 8);
    (void)kmcl_server_channel_interrupt(F.ch);
    assert_string_equal(F.ev, "pp1 ");
    EXPECT_SILENT("guest -> host", "packet type a server does not take");
}

/* The guest's read index of the host -> guest ring, corrupted while the host waits for room: the
 * queued packet is not lost either (its routine runs at disable). */
static void test_corrupted_read_index_fails_the_channel(void **state)
{
    (void)state;
    fx_start(4096, 256);
    struct rt f = { .name = "f" }, q = { .name = "q" };
    static uint8_t buf[200];
    assert_int_equal(kmcl_server_packet_send(fx_packet(rt_record, &f), buf, 200, 0), STATUS_OK);
    assert_int_equal(kmcl_server_packet_send(fx_packet(rt_record, &q), buf, 64, 0), STATUS_OK); /* queued */
    __atomic_store_n(&ctrl(F.h2g)->read_index, 13, __ATOMIC_RELEASE);
    (void)kmcl_server_channel_interrupt(F.ch);
    expect_cancelled(&q, false);
    EXPECT_SILENT("host -> guest", "read index not 8-byte aligned");
    kmcl_server_channel_disable(F.ch);
    expect_cancelled(&q, true);
    assert_int_equal(f.calls, 1);
    assert_int_equal(f.status, STATUS_OK);
}

/* Room made for a waiting guest before the failure is not signalled after it. */
static void test_no_signal_once_failed(void **state)
{
    (void)state;
    fx_start(512, 4096);
    F.on_pp = pp_complete_now;
    unsigned n = 0;
    status_t st;
    for (;;) {
        if (n == 17) { /* the 18th: a type the server does not take */
            struct kmcl_ring_out out = { .type = KMCL_PKT_SYNCH, .trans_id = 99 };
            bool sig;
            st = kmcl_ring_write(&F.gw, &out, 0, &sig);
        } else {
            st = g_send(n + 1, 0, NULL, 0);
        }
        if (st != STATUS_OK)
            break;
        n++;
    }
    assert_int_equal(st, STATUS_NO_SPACE); /* the guest waits for room (pending_send_sz) */
    assert_true(n > 17);
    (void)kmcl_server_channel_interrupt(F.ch);
    assert_int_equal(F.nrec, 17);
    assert_true(kmcl_server_channel_failed(F.ch));
    assert_int_equal(F.host_signals, 0);
    F.nrec = 0; /* all completed already */
    EXPECT_SILENT("guest -> host", "packet type a server does not take");
}

static void test_vsp_fails_the_channel(void **state)
{
    (void)state;
    fx_start(4096, 4096);
    g_send_ok(1, KMCL_PKT_FLAG_COMPLETION_REQUESTED, 8);
    assert_true(kmcl_server_channel_interrupt(F.ch));
    kmcl_server_channel_fail(F.ch, "protocol violation: bad version");
    kmcl_server_channel_fail(F.ch, "again"); /* one line only */
    EXPECT_SILENT("protocol violation: bad version");
}

/* A VSP failing the channel inside process_packet: the rest of the ring is not read. */
static void pp_fail_on_2(struct kmcl_server_incoming *in, const uint8_t *buf, uint32_t len, uint32_t flags)
{
    (void)buf;
    (void)len;
    (void)flags;
    if (kmcl_server_incoming_trans_id(in) == 2)
        kmcl_server_channel_fail(F.ch, "bad request");
}

static void test_vsp_fails_the_channel_in_process_packet(void **state)
{
    (void)state;
    fx_start(4096, 4096);
    F.on_pp = pp_fail_on_2;
    for (int i = 1; i <= 3; i++)
        g_send_ok(i, 0, 8);
    (void)kmcl_server_channel_interrupt(F.ch);
    assert_string_equal(F.ev, "pp1 pp2 ");
    EXPECT_SILENT("bad request");
}

/* ---- signals ---- */

static void test_signals_follow_the_ring_rules(void **state)
{
    (void)state;
    fx_start(512, 4096);
    struct kmcl_server_packet *p = fx_packet(NULL, NULL);
    /* host -> guest: one signal when the ring goes non-empty with the guest's mask clear */
    assert_int_equal(kmcl_server_packet_send(p, "1", 1, 0), STATUS_OK);
    assert_int_equal(kmcl_server_packet_send(p, "2", 1, 0), STATUS_OK);
    assert_int_equal(F.host_signals, 1);
    assert_int_equal(stats().signals, 1);
    /* the guest reading (mask set): no signal */
    kmcl_ring_begin_read(&F.gr);
    struct got g;
    g_recv_ok(&g);
    g_recv_ok(&g);
    assert_int_equal(kmcl_server_packet_send(p, "3", 1, 0), STATUS_OK);
    assert_int_equal(F.host_signals, 1);
    bool sw;
    assert_true(kmcl_ring_end_read(&F.gr, &sw)); /* packet 3 raced in: the guest reads on */
    g_recv_ok(&g);
    assert_false(kmcl_ring_end_read(&F.gr, &sw));
    assert_int_equal(kmcl_server_packet_send(p, "4", 1, 0), STATUS_OK);
    assert_int_equal(F.host_signals, 2);
    g_recv_ok(&g);

    /* guest -> host full: the guest waits with pending_send_sz; the host's reading signals it */
    unsigned n = 0;
    while (g_send(100 + n, 0, "12345678", 8) == STATUS_OK)
        n++;
    assert_true(n > 10);
    assert_int_not_equal(__atomic_load_n(&ctrl(F.g2h)->pending_send_sz, __ATOMIC_RELAXED), 0);
    F.on_pp = pp_complete_now;
    unsigned before = F.host_signals;
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_int_equal(F.nrec, n);
    assert_int_equal(F.host_signals, before + 1);
    assert_int_equal(g_send(200, 0, "12345678", 8), STATUS_OK); /* room again */
    /* and no signal when nothing was asked for */
    before = F.host_signals;
    assert_true(kmcl_server_channel_interrupt(F.ch));
    assert_int_equal(F.host_signals, before);
    assert_true(kmcl_server_channel_signal(F.ch)); /* an explicit one */
    assert_int_equal(F.host_signals, before + 1);
    F.signal_undelivered = true; /* the transport's answer is passed on */
    assert_false(kmcl_server_channel_signal(F.ch));
    assert_int_equal(F.host_signals, before + 2);
}

/* ---- three threads ---- */

/*
 * The guest thread writes n_req in-band requests (ids 1..n_req, random sizes, completion
 * requested) and reads everything the host sends; the server thread runs the executor whenever
 * the guest signals; the VSP's process_packet echoes each request as an in-band packet carrying the
 * request's id and then completes it; a third thread sends n_uns unsolicited packets with
 * WAIT_FOR_COMPLETION, which the guest completes. The guest checks that the host's stream is
 * exactly E1 C1 E2 C2 ... (echo, completion) with the unsolicited packets in order in between;
 * routines check each unsolicited transaction completes once with the guest's answer.
 *
 * Each side signals only when its ring says so (kmcl_ring_write's signal_reader, publish_read /
 * end_read's signal_writer) and sleeps only on its doorbell: a missed signal hangs a thread, which
 * is reported after 20 s.
 */
#if defined(__SANITIZE_THREAD__)
#define STRESS_DEFAULT 200000u /* about 5 s under ThreadSanitizer on one core */
#else
#define STRESS_DEFAULT 1000000u
#endif
#define STRESS_MAX_REQ 600u
#define STRESS_UPOOL 8

struct doorbell {
    uint32_t rings;
};

static void ring_doorbell(struct doorbell *d)
{
    __atomic_fetch_add(&d->rings, 1, __ATOMIC_RELEASE);
}

static uint32_t doorbell_value(struct doorbell *d)
{
    return __atomic_load_n(&d->rings, __ATOMIC_ACQUIRE);
}

/* Yields until the doorbell moves past `seen` or *stop is set; false after 20 s. */
static bool wait_doorbell(struct doorbell *d, uint32_t seen, const int *stop)
{
    int64_t deadline = now_ns() + 20000000000ll;
    for (unsigned spins = 0;; spins++) {
        if (doorbell_value(d) != seen || (stop && __atomic_load_n(stop, __ATOMIC_ACQUIRE)))
            return true;
        if ((spins & 63) == 63 && now_ns() > deadline)
            return false;
        if (spins > 1000)
            sleep_us(20);
        else
            sched_yield();
    }
}

struct upkt {
    struct kmcl_server_packet *pkt;
    uint32_t seq;
    int busy; /* atomics */
};

struct stress {
    struct kmcl_server_channel *ch;
    uint8_t *g2h, *h2g;
    uint32_t g2h_bytes, h2g_bytes;
    struct kmcl_ring gw, gr;
    struct doorbell to_guest, to_host;
    uint32_t n_req, n_uns;
    int stop;
    /* errors: the first one is kept (atomics; any thread) */
    int failed;
    char why[256];
    /* the VSP (under the channel lock) */
    uint64_t host_next;
    struct kmcl_server_packet *free_echo;
    unsigned echo_allocated;
    /* the third thread */
    struct upkt upool[STRESS_UPOOL];
    uint8_t *uns_done; /* per seq: completions seen by the routine */
    uint32_t uns_completed;
    /* counts */
    uint64_t guest_signals, host_signals, guest_waits;
    uint64_t guest_bytes_echoed;
};

static struct stress *S;

static void stress_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void stress_fail(const char *fmt, ...)
{
    int expected = 0;
    if (!__atomic_compare_exchange_n(&S->failed, &expected, 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(S->why, sizeof S->why, fmt, ap);
    va_end(ap);
    __atomic_store_n(&S->failed, 2, __ATOMIC_RELEASE);
    __atomic_store_n(&S->stop, 1, __ATOMIC_RELEASE);
}

static bool stress_failed(void)
{
    return __atomic_load_n(&S->failed, __ATOMIC_ACQUIRE) != 0;
}

static bool s_signal_guest(void *ctx)
{
    struct stress *s = ctx;
    __atomic_fetch_add(&s->host_signals, 1, __ATOMIC_RELAXED);
    ring_doorbell(&s->to_guest);
    return true;
}

static void s_log(void *ctx, const char *line)
{
    (void)ctx;
    stress_fail("host logged: %s", line);
}

struct req_header {
    uint64_t seq;
    uint32_t len; /* bytes sent, header included */
    uint32_t magic;
};
#define REQ_MAGIC 0x52455131u
#define UNS_MAGIC 0x554e5331u

static uint8_t req_byte(uint64_t seq, uint32_t k)
{
    return (uint8_t)(seq * 7 + k * 13 + 5);
}

static void echo_done(struct kmcl_server_packet *pkt, status_t status, const void *buf, uint32_t len)
{
    (void)buf;
    (void)len;
    if (status != STATUS_OK)
        stress_fail("echo routine: %s", status_name(status));
    kmcl_server_packet_set_context(pkt, S->free_echo);
    S->free_echo = pkt;
}

static void stress_pp(struct kmcl_server_channel *ch, struct kmcl_server_incoming *in, const void *buf, uint32_t len,
                      uint32_t flags)
{
    struct stress *s = S;
    uint64_t id = kmcl_server_incoming_trans_id(in);
    struct req_header h;
    if (len < sizeof h) {
        stress_fail("host: request %llu of %u bytes", (unsigned long long)id, len);
        return;
    }
    memcpy(&h, buf, sizeof h);
    if (flags || kmcl_server_incoming_type(in) != KMCL_PKT_DATA_INBAND ||
        !kmcl_server_incoming_completion_requested(in) || h.magic != REQ_MAGIC || h.seq != s->host_next ||
        id != h.seq + 1 || len != PAD8(h.len)) {
        stress_fail("host: request %llu (seq %llu, len %u/%u) where seq %llu was expected", (unsigned long long)id,
                    (unsigned long long)h.seq, h.len, len, (unsigned long long)s->host_next);
        return;
    }
    s->host_next++;
    struct kmcl_server_packet *e = s->free_echo;
    if (e) {
        s->free_echo = kmcl_server_packet_get_context(e);
    } else {
        if (kmcl_server_packet_allocate(ch, &e) != STATUS_OK) {
            stress_fail("host: out of memory");
            return;
        }
        kmcl_server_packet_set_completion_routine(e, echo_done);
        s->echo_allocated++;
    }
    kmcl_server_packet_set_transaction_id(e, id);
    status_t st = kmcl_server_packet_send(e, buf, len, 0);
    if (st != STATUS_OK)
        stress_fail("host: echo send: %s", status_name(st));
    kmcl_server_packet_complete(in, &h.seq, sizeof h.seq);
}

static void uns_done(struct kmcl_server_packet *pkt, status_t status, const void *buf, uint32_t len)
{
    struct upkt *u = kmcl_server_packet_get_context(pkt);
    uint32_t seq = u->seq;
    uint32_t got[2] = { 0, 0 };
    if (len >= 8)
        memcpy(got, buf, 8);
    if (status != STATUS_OK || len != 8 || got[0] != UNS_MAGIC || got[1] != seq)
        stress_fail("unsolicited %u completed with %s, %u bytes, seq %u", seq, status_name(status), len, got[1]);
    else if (S->uns_done[seq]++)
        stress_fail("unsolicited %u completed twice", seq);
    __atomic_fetch_add(&S->uns_completed, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&u->busy, 0, __ATOMIC_RELEASE);
}

static void *stress_server(void *arg)
{
    struct stress *s = arg;
    while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
        uint32_t seen = doorbell_value(&s->to_host);
        (void)kmcl_server_channel_interrupt(s->ch);
        (void)wait_doorbell(&s->to_host, seen, &s->stop); /* a timeout is not an error here */
    }
    return NULL;
}

static void *stress_unsolicited(void *arg)
{
    struct stress *s = arg;
    for (uint32_t i = 0; i < s->n_uns && !stress_failed(); i++) {
        struct upkt *u = NULL;
        int64_t deadline = now_ns() + 20000000000ll;
        while (!u && !stress_failed()) {
            for (int k = 0; k < STRESS_UPOOL && !u; k++)
                if (!__atomic_load_n(&s->upool[k].busy, __ATOMIC_ACQUIRE))
                    u = &s->upool[k];
            if (!u) {
                if (now_ns() > deadline)
                    stress_fail("unsolicited: no packet came back in 20 s (a lost wake-up?)");
                sleep_us(50);
            }
        }
        if (!u)
            break;
        __atomic_store_n(&u->busy, 1, __ATOMIC_RELAXED);
        u->seq = i;
        uint32_t payload[4] = { UNS_MAGIC, i, ~i, 0 };
        status_t st = kmcl_server_packet_send(u->pkt, payload, sizeof payload, KMCL_SERVER_SEND_WAIT_FOR_COMPLETION);
        if (st != STATUS_OK)
            stress_fail("unsolicited send %u: %s", i, status_name(st));
        sleep_us(i % 4 ? 10 : 200);
    }
    return NULL;
}

/* The guest: a FIFO of unsolicited transactions to complete. */
struct gcq {
    uint64_t id[64];
    uint32_t seq[64];
    unsigned head, n;
};

static void g_signal_host(struct stress *s)
{
    s->guest_signals++;
    ring_doorbell(&s->to_host);
}

static void *stress_guest(void *arg)
{
    struct stress *s = arg;
    struct rng rng;
    rng_seed(&rng, 0x5eedu);
    static uint8_t bounce[1 << 16];
    uint8_t req[STRESS_MAX_REQ + 8];
    uint64_t sent = 0, echoes = 0, completions = 0;
    uint32_t uns_got = 0;
    bool built = false, want_completion = false; /* after echo k: completion k next */
    uint32_t req_len = 0;
    struct gcq cq = { .n = 0 };
    unsigned n_read = 0;
    while (!stress_failed()) {
        uint32_t seen = doorbell_value(&s->to_guest);
        bool progress = false, blocked = false;
        /* read everything */
        bool more;
        do {
            kmcl_ring_begin_read(&s->gr);
            struct kmcl_ring_packet p;
            status_t st;
            while ((st = kmcl_ring_peek(&s->gr, &p, bounce, sizeof bounce)) == STATUS_OK) {
                const uint8_t *pl = kmcl_pkt_payload(&p);
                uint32_t len = kmcl_pkt_payload_len(&p);
                if (p.desc.type == KMCL_PKT_DATA_INBAND && (p.desc.flags & KMCL_PKT_FLAG_COMPLETION_REQUESTED)) {
                    uint32_t u[2];
                    memcpy(u, pl, len >= 8 ? 8 : 0);
                    if (len != 16 || u[0] != UNS_MAGIC || u[1] != uns_got || cq.n == 64) {
                        stress_fail("guest: unsolicited #%u: len %u, seq %u", uns_got, len, u[1]);
                        return NULL;
                    }
                    cq.id[(cq.head + cq.n) % 64] = p.desc.trans_id;
                    cq.seq[(cq.head + cq.n) % 64] = uns_got;
                    cq.n++;
                    uns_got++;
                } else if (p.desc.type == KMCL_PKT_DATA_INBAND) {
                    struct req_header h;
                    if (want_completion || len < sizeof h) {
                        stress_fail("guest: echo where completion %llu was expected", (unsigned long long)echoes);
                        return NULL;
                    }
                    memcpy(&h, pl, sizeof h);
                    if (h.seq != echoes || p.desc.trans_id != echoes + 1 || h.magic != REQ_MAGIC ||
                        len != PAD8(h.len) || p.desc.flags != 0) {
                        stress_fail("guest: echo %llu: seq %llu id %llu len %u/%u", (unsigned long long)echoes,
                                    (unsigned long long)h.seq, (unsigned long long)p.desc.trans_id, h.len, len);
                        return NULL;
                    }
                    for (uint32_t k = sizeof h; k < len; k++)
                        if (pl[k] != (k < h.len ? req_byte(h.seq, k) : 0)) {
                            stress_fail("guest: echo %llu: byte %u differs", (unsigned long long)echoes, k);
                            return NULL;
                        }
                    s->guest_bytes_echoed += len;
                    echoes++;
                    want_completion = true;
                } else if (p.desc.type == KMCL_PKT_COMPLETION) {
                    uint64_t seq = ~0ull;
                    if (len == 8)
                        memcpy(&seq, pl, 8);
                    if (!want_completion || p.desc.trans_id != completions + 1 || seq != completions) {
                        stress_fail("guest: completion id %llu (seq %llu) where %llu was expected",
                                    (unsigned long long)p.desc.trans_id, (unsigned long long)seq,
                                    (unsigned long long)completions + 1);
                        return NULL;
                    }
                    completions++;
                    want_completion = false;
                } else {
                    stress_fail("guest: packet type %u", p.desc.type);
                    return NULL;
                }
                kmcl_ring_consume(&s->gr);
                progress = true;
                if (++n_read % 16 == 0 && kmcl_ring_publish_read(&s->gr))
                    g_signal_host(s);
            }
            if (st != STATUS_NOT_FOUND) {
                stress_fail("guest: peek: %s (%s)", status_name(st),
                            kmcl_ring_failure(&s->gr) ? kmcl_ring_failure(&s->gr)->reason : "-");
                return NULL;
            }
            bool sw;
            more = kmcl_ring_end_read(&s->gr, &sw);
            if (sw)
                g_signal_host(s);
        } while (more);
        /* answers first, then new requests, while they fit */
        while (cq.n) {
            uint32_t a[2] = { UNS_MAGIC, cq.seq[cq.head] };
            struct kmcl_iov iov = { a, 8 };
            bool sig = false;
            status_t st = kmcl_pkt_send_completion(&s->gw, cq.id[cq.head], &iov, 1, 0, &sig);
            if (sig)
                g_signal_host(s);
            if (st == STATUS_NO_SPACE) {
                blocked = true;
                break;
            }
            if (st != STATUS_OK) {
                stress_fail("guest: completion write: %s", status_name(st));
                return NULL;
            }
            cq.head = (cq.head + 1) % 64;
            cq.n--;
            progress = true;
        }
        while (!blocked && sent < s->n_req) {
            if (!built) {
                req_len = (uint32_t)(sizeof(struct req_header) + rng_below(&rng, STRESS_MAX_REQ - 16 + 1));
                struct req_header h = { .seq = sent, .len = req_len, .magic = REQ_MAGIC };
                memcpy(req, &h, sizeof h);
                for (uint32_t k = sizeof h; k < req_len; k++)
                    req[k] = req_byte(sent, k);
                built = true;
            }
            struct kmcl_iov iov = { req, req_len };
            bool sig = false;
            status_t st = kmcl_pkt_send_inband(&s->gw, sent + 1, KMCL_PKT_FLAG_COMPLETION_REQUESTED, &iov, 1, 0, &sig);
            if (sig)
                g_signal_host(s);
            if (st == STATUS_NO_SPACE) {
                blocked = true;
                break;
            }
            if (st != STATUS_OK) {
                stress_fail("guest: request write: %s", status_name(st));
                return NULL;
            }
            built = false;
            sent++;
            progress = true;
        }
        if (sent == s->n_req && echoes == s->n_req && completions == s->n_req && uns_got == s->n_uns && !cq.n)
            return NULL;
        if (!progress) {
            s->guest_waits++;
            if (!wait_doorbell(&s->to_guest, seen, NULL)) {
                stress_fail("guest: no signal from the host in 20 s (a lost wake-up): sent %llu, echoes %llu, "
                            "completions %llu, unsolicited %u, blocked %d",
                            (unsigned long long)sent, (unsigned long long)echoes, (unsigned long long)completions,
                            uns_got, blocked);
                return NULL;
            }
        }
    }
    return NULL;
}

static uint32_t env_u32(const char *name, uint32_t dflt)
{
    const char *e = getenv(name);
    return e && *e ? (uint32_t)strtoul(e, NULL, 0) : dflt;
}

static void test_three_thread_stress(void **state)
{
    (void)state;
    struct stress *s = calloc(1, sizeof *s);
    assert_non_null(s);
    S = s;
    s->n_req = env_u32("KMCL_SERVER_STRESS", STRESS_DEFAULT);
    s->n_uns = s->n_req / 100 + 10;
    s->uns_done = calloc(s->n_uns, 1);
    s->g2h_bytes = KMCL_PAGE_SIZE + 32768;
    s->h2g_bytes = KMCL_PAGE_SIZE + 16384; /* the host sends more than it gets: its ring fills */
    s->g2h = ring_mem(32768);
    s->h2g = ring_mem(16384);
    assert_int_equal(kmcl_ring_attach_pages(&s->gw, KMCL_RING_WRITER, s->g2h, s->g2h_bytes, KMCL_RING_ATTACH_INIT),
                     STATUS_OK);
    assert_int_equal(kmcl_ring_attach_pages(&s->gr, KMCL_RING_READER, s->h2g, s->h2g_bytes, KMCL_RING_ATTACH_INIT),
                     STATUS_OK);
    assert_int_equal(kmcl_server_channel_allocate("stress", &s->ch), STATUS_OK);
    assert_int_equal(kmcl_server_channel_init_set_maximum_packet_size(s->ch, 1024), STATUS_OK);
    assert_int_equal(kmcl_server_channel_init_set_process_packet_callbacks(s->ch, stress_pp, NULL), STATUS_OK);
    for (int k = 0; k < STRESS_UPOOL; k++) {
        assert_int_equal(kmcl_server_packet_allocate(s->ch, &s->upool[k].pkt), STATUS_OK);
        kmcl_server_packet_set_context(s->upool[k].pkt, &s->upool[k]);
        kmcl_server_packet_set_completion_routine(s->upool[k].pkt, uns_done);
    }
    struct kmcl_server_transport t = { .ctx = s, .signal_guest = s_signal_guest, .log = s_log };
    assert_int_equal(kmcl_server_channel_enable(s->ch, &t, s->g2h, s->g2h_bytes, s->h2g, s->h2g_bytes), STATUS_OK);

    int64_t t0 = now_ns();
    pthread_t tg, ts, tu;
    assert_int_equal(pthread_create(&ts, NULL, stress_server, s), 0);
    assert_int_equal(pthread_create(&tg, NULL, stress_guest, s), 0);
    assert_int_equal(pthread_create(&tu, NULL, stress_unsolicited, s), 0);
    assert_int_equal(pthread_join(tg, NULL), 0);
    assert_int_equal(pthread_join(tu, NULL), 0);
    /* the guest's last completions reach the host through its signal: wait for the routines */
    int64_t deadline = now_ns() + 20000000000ll;
    while (!stress_failed() && __atomic_load_n(&s->uns_completed, __ATOMIC_ACQUIRE) < s->n_uns) {
        if (now_ns() > deadline)
            stress_fail("host: %u of %u unsolicited completions after the guest finished",
                        __atomic_load_n(&s->uns_completed, __ATOMIC_ACQUIRE), s->n_uns);
        sleep_us(100);
    }
    __atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
    ring_doorbell(&s->to_host);
    assert_int_equal(pthread_join(ts, NULL), 0);
    int64_t ns = now_ns() - t0;

    struct kmcl_server_channel_stats st;
    kmcl_server_channel_get_stats(s->ch, &st);
    print_message("stress: %u requests, %u unsolicited in %.2f s; host: %llu interrupts, %llu signals, %llu queued, "
                  "%llu backlog stalls, %u echo packets; guest: %llu signals, %llu waits\n",
                  s->n_req, s->n_uns, ns / 1e9, (unsigned long long)st.interrupts, (unsigned long long)st.signals,
                  (unsigned long long)st.queued, (unsigned long long)st.backlog_stalls, s->echo_allocated,
                  (unsigned long long)s->guest_signals, (unsigned long long)s->guest_waits);
    if (stress_failed())
        print_message("stress failed: %s\n", s->why);
    assert_false(stress_failed());
    assert_false(kmcl_server_channel_failed(s->ch));
    assert_int_equal(s->host_next, s->n_req);
    assert_int_equal(st.packets_in, s->n_req);
    assert_int_equal(st.completions_out, s->n_req);
    assert_int_equal(st.packets_out, (uint64_t)s->n_req + s->n_uns);
    assert_int_equal(st.completions_in, s->n_uns);
    assert_int_equal(st.queued_now, 0);
    assert_int_equal(st.cancelled, 0);
    assert_int_equal(st.signals, s->host_signals);
    /* routines run between requests: the echo packets are recycled, not one allocated per request */
    assert_true(s->echo_allocated <= 64);
    for (uint32_t i = 0; i < s->n_uns; i++)
        assert_int_equal(s->uns_done[i], 1);
    /* the rings are drained both ways */
    assert_true(kmcl_ring_is_empty(&s->gw));
    assert_int_equal(kmcl_ring_read_available(&s->gr), 0);

    kmcl_server_channel_cleanup(s->ch);
    for (int k = 0; k < STRESS_UPOOL; k++)
        kmcl_server_packet_free(s->upool[k].pkt);
    while (s->free_echo) {
        struct kmcl_server_packet *e = s->free_echo;
        s->free_echo = kmcl_server_packet_get_context(e);
        kmcl_server_packet_free(e);
    }
    free(s->uns_done);
    free(s->g2h);
    free(s->h2g);
    free(s);
    S = NULL;
}

/* ---- main ---- */

#define T(f) cmocka_unit_test_teardown(f, fx_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_init_set_only_while_initializing),
        T(test_enable_requires_its_callbacks),
        T(test_enable_with_queue_callback_only),
        T(test_state_callbacks_in_order),
        T(test_cleanup_disables_first),
        T(test_cleanup_frees_everything),
        T(test_enable_with_bad_indices_fails_the_channel),
        T(test_process_packet_once_per_packet_in_order),
        T(test_processing_complete_each_time_the_ring_empties),
        T(test_completions_from_the_guest_are_not_a_batch),
        T(test_external_data),
        T(test_gpa_for_each),
        T(test_gpa_for_each_without_guest_memory),
        T(test_complete_writes_a_completion_packet),
        T(test_complete_without_request_writes_nothing),
        T(test_fail_writes_the_status),
        T(test_complete_twice_logs_and_ignores),
        T(test_complete_from_another_thread),
        T(test_complete_too_large_for_the_ring_fails_the_channel),
        T(test_send_inband_and_transaction_id),
        T(test_routine_runs_after_the_call_that_placed_the_packet),
        T(test_send_xfer),
        T(test_send_refusals),
        T(test_send_busy_when_every_transaction_id_is_outstanding),
        T(test_packet_allocated_before_the_maximum_was_raised),
        T(test_stream_from_the_routine_does_not_recurse),
        T(test_wait_for_completion),
        T(test_unknown_completion_fails_the_channel),
        T(test_completion_for_a_queued_packet_fails_the_channel),
        T(test_resend_of_a_queued_packet_is_refused),
        T(test_full_ring_queues_in_order),
        T(test_queued_answers_stall_reading),
        T(test_interrupt_return_value),
        T(test_quota_limits_packets_in_flight),
        T(test_quota_lowered_and_raised),
        T(test_completion_from_a_routine_resumes_reading),
        T(test_guest_completions_read_while_requests_wait),
        T(test_max_inband_payload),
        T(test_empty_payload_queued),
        T(test_interrupt_from_process_packet),
        T(test_pause_and_start_from_outside),
        T(test_start_from_callbacks),
        T(test_suppressed_queue_management),
        T(test_disable_cancels_what_is_outstanding),
        T(test_disable_routines_may_send),
        T(test_corrupted_write_index_fails_the_channel),
        T(test_bad_packet_length_fails_the_channel),
        T(test_unknown_packet_type_fails_the_channel),
        T(test_corrupted_read_index_fails_the_channel),
        T(test_no_signal_once_failed),
        T(test_vsp_fails_the_channel),
        T(test_vsp_fails_the_channel_in_process_packet),
        T(test_signals_follow_the_ring_rules),
        cmocka_unit_test(test_three_thread_stress),
    };
    const char *only = getenv("KMCL_SERVER_TEST");
    if (only && *only)
        cmocka_set_test_filter(only);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
