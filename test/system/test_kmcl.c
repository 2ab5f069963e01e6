/*
 * kmcl's channel API (kmcl/channel.c) end to end: the guest's VMBus and kmcl on VP threads (test/hosted/)
 * against hvsim's VMBus server and its test device VSP (sim/vsp/vsp_test.h: echo, completions, SEND_N
 * bulk traffic, GPA-direct checksums) in-process. Checks the KMCL semantics: process-packet once per
 * packet at DISPATCH on the target CPU, processing-complete counts, completion routines in both
 * meanings, synchronous requests, defer-to-passive in order, passive channels, the send backlog,
 * cancellation at disable, and a ring the host corrupts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "hv/hv.h"
#include "hv/vmbus/vmbus.h"
#include "arch-x86_64/paging.h"
#include "kernel/mm.h"
#include "kernel/percpu.h"
#include "kmcl/channel.h"
#include "sim/hvsim.h"
#include "sim/vmbus_server.h"
#include "sim/vsp/vsp_test.h"
#include "test/hosted/hosted.h"

#define VPS 4
#define RAM (64u << 20)
#define TARGET 2   /* the channel's CPU: its DPC and its worker thread run there */
#define POLL_CPU 3 /* the poller's (hosted threads are jobs on a VP: the worker keeps TARGET's) */

static struct hvsim_vmbus *vb;
static struct kmcl_channel *open_ch; /* still enabled if a test failed half-way */
static void close_channel(struct kmcl_channel *ch);
static void stop(void);

static void start(void)
{
    if (open_ch)
        close_channel(open_ch);
    if (vb)
        stop();
    hosted_log_quiet(!getenv("VERBOSE"));
    hosted_start(VPS, RAM, NULL);
    hosted_log_clear();
    assert_int_equal(hv_init(), STATUS_OK);
    struct hvsim_vmbus_config c = { .devices = hvsim_vmbus_default_devices,
                                    .device_count = hvsim_vmbus_default_device_count };
    vb = hvsim_vmbus_create(hosted_sim(), &c);
    assert_non_null(vb);
}

static void stop(void)
{
    hosted_power_off();
    hvsim_vmbus_destroy(vb);
    vb = NULL;
    hosted_stop();
}

static void pause_ms(void)
{
    struct timespec ts = { 0, 1000000 };
    nanosleep(&ts, NULL);
}

/* ---- what the guest's callbacks saw ---- */

struct seen {
    volatile uint32_t packets, completes_in_callback, wrong_irql, wrong_cpu, passive, batches_total, batches,
        bad_payload, hello;
    volatile uint32_t next_seq, order_errors, deferrals, data_packets;
    volatile uint32_t states[8], nstates;
    uint32_t defer_every;  /* defer packets whose seq % defer_every == 0 (first time) */
    uint32_t completion_len; /* bytes of completion payload on_packet gives (completion_payload) */
    uint32_t expect_cpu;   /* where packets are delivered: TARGET, or the poller's CPU */
    bool expect_passive;
};
static struct seen seen;
/* The callbacks run on the channel's CPU while the test thread polls: atomic on both sides. */
#define BUMP(x) __atomic_add_fetch(&(x), 1, __ATOMIC_RELEASE)
#define LD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)

static void on_packet(struct kmcl_channel *ch, struct kmcl_incoming *pkt, const void *buf, uint32_t len,
                      uint32_t flags)
{
    (void)ch;
    bool passive = flags & KMCL_PROCESS_AT_PASSIVE;
    if (passive) {
        BUMP(seen.passive);
        if (irql_current() != IRQL_PASSIVE)
            BUMP(seen.wrong_irql);
    } else {
        if (irql_current() != IRQL_DISPATCH)
            BUMP(seen.wrong_irql);
        if (seen.expect_passive)
            BUMP(seen.wrong_irql);
    }
    if (this_cpu()->id != seen.expect_cpu)
        BUMP(seen.wrong_cpu);
    uint32_t op = 0;
    if (len >= 4)
        memcpy(&op, buf, 4);
    if (op == HVSIM_VSP_TEST_OP_DATA && len >= 8) {
        uint32_t seq;
        memcpy(&seq, (const uint8_t *)buf + 4, 4);
        if (seen.defer_every && seq % seen.defer_every == 0 && !passive) {
            BUMP(seen.deferrals);
            assert_int_equal(kmcl_channel_packet_defer_to_passive(pkt), STATUS_OK);
            return; /* delivered again at PASSIVE, in order */
        }
        if (seq != seen.next_seq)
            BUMP(seen.order_errors);
        seen.next_seq = seq + 1;
        for (uint32_t k = 8; k < len && k < 64; k++)
            if (((const uint8_t *)buf)[k] != (uint8_t)(seq + k))
                BUMP(seen.bad_payload);
        BUMP(seen.data_packets);
    } else if (op == HVSIM_VSP_TEST_OP_HELLO) {
        BUMP(seen.hello);
    }
    BUMP(seen.packets);
    static const uint8_t completion_payload[2048];
    kmcl_channel_packet_complete(pkt, completion_payload, seen.completion_len);
    BUMP(seen.completes_in_callback);
}

static void on_batch_done(struct kmcl_channel *ch, uint32_t n)
{
    (void)ch;
    BUMP(seen.batches);
    __atomic_add_fetch(&seen.batches_total, n, __ATOMIC_RELEASE);
}

static void st_opened(struct kmcl_channel *ch) { (void)ch; seen.states[seen.nstates++ & 7] = 1; }
static void st_started(struct kmcl_channel *ch) { (void)ch; seen.states[seen.nstates++ & 7] = 2; }
static void st_post(struct kmcl_channel *ch) { (void)ch; seen.states[seen.nstates++ & 7] = 3; }
static void st_suspend(struct kmcl_channel *ch) { (void)ch; seen.states[seen.nstates++ & 7] = 4; }
static void st_closed(struct kmcl_channel *ch) { (void)ch; seen.states[seen.nstates++ & 7] = 5; }

/* Suppressed queue management: the driver's own reader. */
static volatile uint32_t raw_calls, raw_echoes, raw_completions, raw_wrong_irql, raw_acked;
static uint8_t raw_bounce[16 * 4096];

static bool raw_queue(struct kmcl_channel *ch)
{
    BUMP(raw_calls);
    if (irql_current() != IRQL_DISPATCH || this_cpu()->id != TARGET)
        BUMP(raw_wrong_irql);
    struct kmcl_ring *r = kmcl_channel_inbound_ring(ch);
    bool more;
    do {
        kmcl_ring_begin_read(r);
        struct kmcl_ring_packet p;
        status_t s;
        while ((s = kmcl_ring_peek(r, &p, raw_bounce, sizeof raw_bounce)) == STATUS_OK) {
            if (p.desc.type == KMCL_PKT_COMPLETION) {
                if (kmcl_channel_complete_transaction(ch, &p) != STATUS_OK)
                    return false;
                BUMP(raw_completions);
            } else if (p.desc.flags & KMCL_PKT_FLAG_COMPLETION_REQUESTED) {
                /* a SEND_N_ACKED packet: the driver completes it itself; no room: try again later */
                if (kmcl_channel_send_raw_completion(ch, p.desc.trans_id, NULL, 0) != STATUS_OK)
                    break;
                BUMP(raw_acked);
            } else {
                BUMP(raw_echoes);
            }
            kmcl_ring_consume(r);
        }
        if (s != STATUS_NOT_FOUND) {
            kmcl_channel_report_failure(ch);
            return false;
        }
        bool signal = false;
        more = kmcl_ring_end_read(r, &signal);
        if (signal)
            kmcl_channel_signal(ch);
    } while (more);
    return false;
}

/* ---- guest jobs (on VP 0) ---- */

struct job {
    struct kmcl_channel *ch;
    bool at_passive, polling, suppressed;
    uint32_t out_pages;
    status_t status;
};

static void find_test_device(struct vmbus_channel *c, void *ctx)
{
    struct vmbus_channel **found = ctx;
    if (!*found && vmbus_guid_equal(&vmbus_channel_offer(c)->if_type, &(struct vmbus_guid)VMBUS_GUID_HVSIM_TEST) &&
        vmbus_channel_sub_index(c) == 0)
        *found = c;
}

static struct vmbus_channel *test_device(void)
{
    struct vmbus_channel *found = NULL;
    vmbus_for_each_channel(find_test_device, &found);
    return found;
}

static void open_job(void *arg)
{
    struct job *j = arg;
    j->status = vmbus_init(0);
    if (j->status != STATUS_OK)
        return;
    j->status = kmcl_channel_allocate(test_device(), &j->ch);
    if (j->status != STATUS_OK)
        return;
    static const struct kmcl_state_callbacks cbs = { st_opened, st_closed, st_started, st_suspend, st_post };
    struct kmcl_channel *ch = j->ch;
    status_t s = kmcl_channel_init_set_process_packet_callbacks(ch, on_packet, on_batch_done);
    if (s == STATUS_OK)
        s = kmcl_channel_init_set_state_change_callbacks(ch, &cbs);
    if (s == STATUS_OK)
        s = kmcl_channel_init_set_client_context_size(ch, 64);
    if (s == STATUS_OK)
        s = kmcl_channel_init_set_friendly_name(ch, "test-device");
    if (s == STATUS_OK)
        s = kmcl_channel_init_set_target_cpu(ch, TARGET);
    if (s == STATUS_OK)
        s = kmcl_channel_init_set_ring_buffer_page_count(ch, j->out_pages ? j->out_pages : 16, 16);
    if (s == STATUS_OK)
        s = kmcl_channel_set_incoming_processing_at_passive(ch, j->at_passive);
    if (s == STATUS_OK && j->polling)
        s = kmcl_channel_init_set_polling(ch, POLL_CPU);
    if (s == STATUS_OK && j->suppressed)
        s = kmcl_channel_init_set_flags(ch, KMCL_CHANNEL_FLAG_SUPPRESS_QUEUE_MANAGEMENT);
    if (s == STATUS_OK && j->suppressed)
        s = kmcl_channel_init_set_queue_callback(ch, raw_queue);
    if (s == STATUS_OK)
        s = kmcl_channel_enable(ch);
    j->status = s;
}

static struct kmcl_channel *open_channel_with(bool at_passive, uint32_t out_pages, bool polling)
{
    memset(&seen, 0, sizeof seen);
    seen.expect_cpu = polling ? POLL_CPU : TARGET;
    struct job j = { .at_passive = at_passive, .out_pages = out_pages, .polling = polling };
    hosted_run_on(0, open_job, &j);
    assert_int_equal(j.status, STATUS_OK);
    open_ch = j.ch;
    return j.ch;
}

static struct kmcl_channel *open_suppressed(void)
{
    memset(&seen, 0, sizeof seen);
    seen.expect_cpu = TARGET;
    struct job j = { .suppressed = true };
    hosted_run_on(0, open_job, &j);
    assert_int_equal(j.status, STATUS_OK);
    open_ch = j.ch;
    return j.ch;
}

static struct kmcl_channel *open_channel(bool at_passive, uint32_t out_pages)
{
    return open_channel_with(at_passive, out_pages, false);
}

static void cleanup_job(void *arg)
{
    kmcl_channel_cleanup(arg);
}

static void close_channel(struct kmcl_channel *ch)
{
    open_ch = NULL;
    hosted_run_on(0, cleanup_job, ch);
}

/* Sends from VP 0. */
struct send {
    struct kmcl_channel *ch;
    const void *buf;
    uint32_t len, flags;
    const struct kmcl_page_range *ext;
    uint32_t ext_count;
    struct kmcl_packet *pkt;
    status_t status;
};

static volatile uint32_t routines, routine_cancelled;
static uint8_t routine_buf[256];
static volatile uint32_t routine_len;

static void routine(struct kmcl_packet *pkt, status_t status, const void *buf, uint32_t len)
{
    (void)pkt;
    if (status == STATUS_CANCELLED)
        __atomic_add_fetch(&routine_cancelled, 1, __ATOMIC_RELEASE);
    /* Routines run on any CPU at once (the sender's, the channel's DPC): only the tests that expect
     * a single completion with a payload look at it. */
    if (len) {
        routine_len = len;
        if (len <= sizeof routine_buf)
            memcpy(routine_buf, buf, len);
    }
    __atomic_add_fetch(&routines, 1, __ATOMIC_RELEASE);
}

static void send_job(void *arg)
{
    struct send *s = arg;
    if (!s->pkt) {
        s->status = kmcl_packet_allocate(s->ch, &s->pkt);
        if (s->status != STATUS_OK)
            return;
        kmcl_packet_set_completion_routine(s->pkt, routine);
    }
    s->status = kmcl_packet_send(s->pkt, s->buf, s->len, s->ext, s->ext_count, s->flags);
}

static void free_job(void *arg)
{
    kmcl_packet_free(arg);
}

/* Generous: under ThreadSanitizer on a loaded 2-core CI machine hundreds of round trips through
 * hvsim can take many seconds; a lost packet still fails, just later. On a timeout the channel's
 * counters are printed so the log says where things stopped. */
static bool wait_until(volatile uint32_t *v, uint32_t want)
{
    if (hosted_wait_count(v, want, 60000))
        return true;
    fprintf(stderr, "wait_until: %u of %u\n", __atomic_load_n(v, __ATOMIC_ACQUIRE), want);
    if (open_ch) {
        struct kmcl_channel_stats st;
        kmcl_channel_get_stats(open_ch, &st);
        fprintf(stderr, "  channel: in %llu completions_in %llu out %llu completions_out %llu queued_sends %llu "
                "queued_completions %llu interrupts %llu signals %llu dpc_passes %llu failed %d\n",
                (unsigned long long)st.packets_in, (unsigned long long)st.completions_in,
                (unsigned long long)st.packets_out, (unsigned long long)st.completions_out,
                (unsigned long long)st.queued_sends, (unsigned long long)st.queued_completions,
                (unsigned long long)st.interrupts, (unsigned long long)st.signals,
                (unsigned long long)st.dpc_passes, kmcl_channel_failed(open_ch));
    }
    return false;
}

/* ---- tests ---- */

static void test_lifecycle(void **state)
{
    (void)state;
    start();
    struct kmcl_channel *ch = open_channel(false, 0);
    assert_int_equal(seen.nstates, 3);
    assert_int_equal(seen.states[0], 1); /* opened */
    assert_int_equal(seen.states[1], 2); /* started */
    assert_int_equal(seen.states[2], 3); /* post_started */
    /* Init-set is refused once enabled (and for no channel). */
    assert_int_equal(kmcl_channel_init_set_process_packet_callbacks(ch, on_packet, NULL), STATUS_INVALID_PARAMETER);
    assert_int_equal(kmcl_channel_init_set_maximum_packet_size(NULL, 100), STATUS_INVALID_PARAMETER);
    uint8_t *ctx = kmcl_channel_get_pointer_to_client_context(ch);
    assert_non_null(ctx);
    for (int i = 0; i < 64; i++)
        assert_int_equal(ctx[i], 0);
    struct vmbus_guid type, inst;
    kmcl_channel_get_interface_instance(ch, &type, &inst);
    assert_true(vmbus_guid_equal(&type, &(struct vmbus_guid)VMBUS_GUID_HVSIM_TEST));
    close_channel(ch);
    assert_int_equal(seen.nstates, 5);
    assert_int_equal(seen.states[3], 4); /* suspend */
    assert_int_equal(seen.states[4], 5); /* closed */
    stop();
}

static void test_echo(void **state)
{
    (void)state;
    start();
    struct kmcl_channel *ch = open_channel(false, 0);
    uint8_t buf[2048];
    uint32_t sent = 0;
    routines = 0;
    for (uint32_t size = 8; size <= 2000; size += 40) {
        uint32_t op = HVSIM_VSP_TEST_OP_ECHO;
        memcpy(buf, &op, 4);
        for (uint32_t k = 4; k < size; k++)
            buf[k] = (uint8_t)(k * 7 + size);
        struct send s = { .ch = ch, .buf = buf, .len = size };
        hosted_run_on(0, send_job, &s);
        assert_int_equal(s.status, STATUS_OK);
        hosted_run_on(0, free_job, s.pkt);
        sent++;
    }
    assert_int_equal(routines, sent); /* "placed in the ring" */
    assert_true(wait_until(&seen.packets, sent));
    /* processing-complete covered every packet, after the last one of each batch. */
    for (int i = 0; i < 5000 && LD(seen.batches_total) < sent; i++)
        pause_ms();
    assert_int_equal(LD(seen.batches_total), sent);
    assert_true(LD(seen.batches) >= 1);
    assert_int_equal(LD(seen.wrong_irql), 0);
    assert_int_equal(LD(seen.wrong_cpu), 0);
    struct kmcl_channel_stats st;
    kmcl_channel_get_stats(ch, &st);
    assert_int_equal(st.packets_in, sent);
    assert_int_equal(st.packets_out, sent);
    close_channel(ch);
    stop();
}

struct sync {
    struct kmcl_channel *ch;
    uint8_t *req;
    uint32_t len;
    uint8_t resp[64];
    uint32_t resp_len;
    uint64_t timeout_ns;
    status_t status;
};

static void sync_job(void *arg)
{
    struct sync *x = arg;
    x->status = kmcl_channel_send_synchronous_request(x->ch, x->req, x->len, NULL, 0, x->resp, &x->resp_len,
                                                      x->timeout_ns);
}

static void test_wait_for_completion_and_sync(void **state)
{
    (void)state;
    start();
    struct kmcl_channel *ch = open_channel(false, 0);
    routines = 0;
    uint8_t req[40] = { 0 };
    uint32_t op = HVSIM_VSP_TEST_OP_ECHO_COMPLETION;
    memcpy(req, &op, 4);
    memcpy(req + 8, "completion payload", 18);
    struct send s = { .ch = ch, .buf = req, .len = sizeof req, .flags = KMCL_SEND_WAIT_FOR_COMPLETION };
    hosted_run_on(0, send_job, &s);
    assert_int_equal(s.status, STATUS_OK);
    assert_true(wait_until(&routines, 1));
    assert_int_equal(routine_len, sizeof req);
    assert_memory_equal(routine_buf, req, sizeof req);
    hosted_run_on(0, free_job, s.pkt);
    /* The synchronous form. */
    struct sync y = { .ch = ch, .req = req, .len = 40, .resp_len = sizeof y.resp, .timeout_ns = 2000000000ull };
    hosted_run_on(0, sync_job, &y);
    assert_int_equal(y.status, STATUS_OK);
    assert_int_equal(y.resp_len, sizeof req);
    assert_memory_equal(y.resp, req, sizeof req);
    /* A synchronous SEND_N: 10,000 host packets arrive in order through the DPC, in budgeted
     * passes, then the completion with the count. */
    struct hvsim_vsp_test_send_n n = { HVSIM_VSP_TEST_OP_SEND_N, 10000, 64 };
    memcpy(req, &n, sizeof n);
    y.resp_len = sizeof y.resp;
    y.len = sizeof n;
    y.timeout_ns = 20000000000ull;
    hosted_run_on(0, sync_job, &y);
    assert_int_equal(y.status, STATUS_OK);
    uint32_t result[2];
    memcpy(result, y.resp, 8);
    assert_int_equal(result[0], HVSIM_VSP_TEST_STATUS_OK);
    assert_int_equal(result[1], 10000);
    assert_true(wait_until(&seen.data_packets, 10000));
    assert_int_equal(LD(seen.order_errors), 0);
    assert_int_equal(LD(seen.bad_payload), 0);
    assert_int_equal(LD(seen.wrong_irql), 0);
    struct kmcl_channel_stats st;
    kmcl_channel_get_stats(ch, &st);
    assert_true(st.budget_exhausted > 0 || st.dpc_passes > 10000 / KMCL_DRAIN_BUDGET);
    close_channel(ch);
    stop();
}

static void send_n(struct kmcl_channel *ch, uint32_t count, uint32_t size)
{
    struct hvsim_vsp_test_send_n n = { HVSIM_VSP_TEST_OP_SEND_N, count, size };
    struct send s = { .ch = ch, .buf = &n, .len = sizeof n };
    hosted_run_on(0, send_job, &s);
    assert_int_equal(s.status, STATUS_OK);
    hosted_run_on(0, free_job, s.pkt);
}

/* Completions that find the outbound ring full are queued and written when the host makes room:
 * the host sends 1000 packets at once, each asking for a completion, into a guest whose outbound
 * ring is one page, while it stops reading that ring as long as its own sends wait for room. With
 * payloads above the inline size (heap copies) and below it. */
static void test_completion_backlog(void **state)
{
    (void)state;
    start();
    uint32_t sizes[2] = { 1000, 40 };
    for (int round = 0; round < 2; round++) {
        struct kmcl_channel *ch = open_channel(false, 2);
        seen.completion_len = sizes[round];
        struct hvsim_vsp_test_send_n n = { HVSIM_VSP_TEST_OP_SEND_N_ACKED, HVSIM_VSP_TEST_MAX_ACKED, 64 };
        struct sync y = { .ch = ch, .req = (uint8_t *)&n, .len = sizeof n, .resp_len = sizeof y.resp,
                          .timeout_ns = 20000000000ull };
        hosted_run_on(0, sync_job, &y);
        assert_int_equal(y.status, STATUS_OK);
        uint32_t result[2];
        memcpy(result, y.resp, 8);
        assert_int_equal(result[0], HVSIM_VSP_TEST_STATUS_OK); /* the host got every completion */
        assert_int_equal(result[1], HVSIM_VSP_TEST_MAX_ACKED);
        assert_int_equal(LD(seen.data_packets), HVSIM_VSP_TEST_MAX_ACKED);
        struct kmcl_channel_stats st;
        kmcl_channel_get_stats(ch, &st);
        assert_true(st.queued_completions > 0); /* the ring really was full */
        assert_int_equal(st.completions_out, HVSIM_VSP_TEST_MAX_ACKED);
        assert_false(kmcl_channel_failed(ch));
        close_channel(ch);
    }
    stop();
}

/* Queue-management suppression: kmcl never parses the inbound ring or calls process_packet; the
 * driver's queue callback reads it raw on the target CPU at DISPATCH, and hands the host's
 * completions back so that wait-for-completion sends still complete. */
#define RAW_N 200u
static void test_suppressed_queue_management(void **state)
{
    (void)state;
    start();
    raw_calls = raw_echoes = raw_completions = raw_wrong_irql = raw_acked = 0;
    struct kmcl_channel *ch = open_suppressed();
    routines = 0;
    static struct send s[RAW_N];
    static uint8_t buf[RAW_N][64];
    for (uint32_t i = 0; i < RAW_N; i++) {
        uint32_t op = HVSIM_VSP_TEST_OP_ECHO;
        memcpy(buf[i], &op, 4);
        memset(buf[i] + 4, (int)i, sizeof buf[i] - 4);
        s[i] = (struct send){ .ch = ch, .buf = buf[i], .len = sizeof buf[i], .flags = KMCL_SEND_WAIT_FOR_COMPLETION };
        hosted_run_on(0, send_job, &s[i]);
        assert_int_equal(s[i].status, STATUS_OK);
    }
    assert_true(wait_until(&routines, RAW_N)); /* every completion reached its packet */
    assert_true(wait_until(&raw_echoes, RAW_N));
    /* Host packets that ask for a completion: the driver writes it (kmcl_channel_send_raw_completion);
     * the host's own completion of the request then says every one arrived. */
    struct hvsim_vsp_test_send_n acked = { HVSIM_VSP_TEST_OP_SEND_N_ACKED, 300, 64 };
    struct send a = { .ch = ch, .buf = &acked, .len = sizeof acked, .flags = KMCL_SEND_WAIT_FOR_COMPLETION };
    routine_len = 0;
    hosted_run_on(0, send_job, &a);
    assert_int_equal(a.status, STATUS_OK);
    assert_true(wait_until(&routines, RAW_N + 1));
    assert_int_equal(LD(raw_acked), 300);
    uint32_t result[2];
    memcpy(result, routine_buf, sizeof result);
    assert_int_equal(result[0], HVSIM_VSP_TEST_STATUS_OK);
    assert_int_equal(result[1], 300);
    hosted_run_on(0, free_job, a.pkt);
    assert_int_equal(LD(raw_completions), RAW_N + 1); /* the echoes' and the SEND_N_ACKED request's */
    assert_true(LD(raw_calls) > 0);
    assert_int_equal(LD(raw_wrong_irql), 0);
    assert_int_equal(LD(seen.packets), 0); /* process_packet never ran */
    assert_false(kmcl_channel_failed(ch));
    for (uint32_t i = 0; i < RAW_N; i++)
        hosted_run_on(0, free_job, s[i].pkt);
    close_channel(ch);
    stop();
}

static void test_defer_to_passive_keeps_order(void **state)
{
    (void)state;
    start();
    struct kmcl_channel *ch = open_channel(false, 0);
    seen.defer_every = 3;
    send_n(ch, 3000, 32);
    bool all = wait_until(&seen.data_packets, 3000);
    if (!all) {
        struct kmcl_channel_stats st;
        kmcl_channel_get_stats(ch, &st);
        fprintf(stderr, "data %u deferrals %u passive %u packets %u; in %llu deferred %llu passive_del %llu dpc %llu\n",
                seen.data_packets, seen.deferrals, seen.passive, seen.packets, (unsigned long long)st.packets_in,
                (unsigned long long)st.deferred, (unsigned long long)st.passive_deliveries,
                (unsigned long long)st.dpc_passes);
    }
    assert_true(all);
    assert_int_equal(LD(seen.order_errors), 0);
    /* Only a packet delivered at DISPATCH can be deferred; once one is, the packets behind it wait
     * for the worker too (order), so how many get deferred depends on the timing: at least one. */
    assert_true(LD(seen.deferrals) >= 1);
    assert_true(LD(seen.passive) >= LD(seen.deferrals)); /* each deferred one, again, at PASSIVE */
    assert_int_equal(LD(seen.wrong_irql), 0);
    assert_int_equal(LD(seen.wrong_cpu), 0);
    struct kmcl_channel_stats st;
    kmcl_channel_get_stats(ch, &st);
    assert_true(st.deferred >= LD(seen.deferrals));
    assert_int_equal(st.passive_deliveries, LD(seen.passive));
    close_channel(ch);
    stop();
}

static void test_passive_channel(void **state)
{
    (void)state;
    start();
    struct kmcl_channel *ch = open_channel(true, 0);
    seen.expect_passive = true;
    send_n(ch, 2000, 100);
    assert_true(wait_until(&seen.data_packets, 2000));
    assert_int_equal(LD(seen.order_errors), 0);
    assert_int_equal(LD(seen.passive), 2000);
    assert_int_equal(LD(seen.wrong_irql), 0);
    close_channel(ch);
    stop();
}

static uint32_t fnv(const uint8_t *p, uint32_t n, uint32_t h)
{
    for (uint32_t i = 0; i < n; i++)
        h = (h ^ p[i]) * HVSIM_VSP_TEST_FNV_PRIME;
    return h;
}

static void test_gpa_direct(void **state)
{
    (void)state;
    start();
    struct kmcl_channel *ch = open_channel(false, 0);
    routines = 0;
    uint8_t *buf = page_alloc(3);
    for (int i = 0; i < 3 * 4096; i++)
        buf[i] = (uint8_t)(i * 13 + 5);
    uint64_t pfns[3] = { virt_to_phys(buf) >> 12, (virt_to_phys(buf) >> 12) + 1, (virt_to_phys(buf) >> 12) + 2 };
    struct kmcl_page_range r = { .byte_count = 2 * 4096 + 100, .byte_offset = 300, .pfns = pfns };
    uint64_t hdr = 0; /* the in-band part after the ranges, ignored by the VSP */
    struct send s = { .ch = ch, .buf = &hdr, .len = sizeof hdr, .ext = &r, .ext_count = 1,
                      .flags = KMCL_SEND_WAIT_FOR_COMPLETION };
    hosted_run_on(0, send_job, &s);
    assert_int_equal(s.status, STATUS_OK);
    assert_true(wait_until(&routines, 1));
    struct hvsim_vsp_test_gpa_result res;
    assert_int_equal(routine_len, (sizeof res + 7) & ~7u); /* payloads travel in 8-byte units */
    memcpy(&res, routine_buf, sizeof res);
    assert_int_equal(res.status, HVSIM_VSP_TEST_STATUS_OK);
    assert_int_equal(res.byte_count, r.byte_count);
    assert_int_equal(res.checksum, fnv(buf + 300, r.byte_count, HVSIM_VSP_TEST_FNV_BASIS));
    hosted_run_on(0, free_job, s.pkt);
    close_channel(ch);
    stop();
}

enum { N = 400 };
static struct send s[N];

static void send_all(void *arg)
{
    (void)arg;
    for (uint32_t i = 0; i < N; i++)
        send_job(&s[i]);
}

static void test_send_backlog(void **state)
{
    (void)state;
    start();
    struct kmcl_channel *ch = open_channel(false, 2); /* a one-page outbound ring: sends queue */
    routines = 0;
    static uint8_t buf[N][512];
    for (uint32_t i = 0; i < N; i++) {
        uint32_t op = HVSIM_VSP_TEST_OP_ECHO;
        memcpy(buf[i], &op, 4);
        memset(buf[i] + 4, (int)i, sizeof buf[i] - 4);
        s[i] = (struct send){ .ch = ch, .buf = buf[i], .len = sizeof buf[i] };
    }
    hosted_run_on(0, send_all, NULL);
    for (uint32_t i = 0; i < N; i++)
        assert_int_equal(s[i].status, STATUS_OK);
    assert_true(wait_until(&routines, N));
    assert_true(wait_until(&seen.packets, N));
    struct kmcl_channel_stats st;
    kmcl_channel_get_stats(ch, &st);
    assert_true(st.queued_sends > 0);
    assert_int_equal(st.packets_out, N);
    for (uint32_t i = 0; i < N; i++)
        hosted_run_on(0, free_job, s[i].pkt);
    close_channel(ch);
    stop();
}

static void test_disable_cancels_outstanding(void **state)
{
    (void)state;
    start();
    struct kmcl_channel *ch = open_channel(false, 0);
    routines = routine_cancelled = 0;
    kmcl_channel_pause(ch); /* completions are incoming packets: none is read now */
    uint8_t req[16] = { 0 };
    uint32_t op = HVSIM_VSP_TEST_OP_ECHO_COMPLETION;
    memcpy(req, &op, 4);
    struct send s = { .ch = ch, .buf = req, .len = sizeof req, .flags = KMCL_SEND_WAIT_FOR_COMPLETION };
    hosted_run_on(0, send_job, &s);
    assert_int_equal(s.status, STATUS_OK);
    for (int i = 0; i < 50; i++)
        pause_ms();
    assert_int_equal(routines, 0);
    close_channel(ch);
    assert_int_equal(routines, 1);
    assert_int_equal(routine_cancelled, 1);
    hosted_run_on(0, free_job, s.pkt);
    stop();
}

static void test_corrupt_ring_fails_channel(void **state)
{
    (void)state;
    start();
    struct kmcl_channel *ch = open_channel(false, 0);
    /* The host writes a write index that is not 8-byte aligned into the guest's inbound ring. */
    uint32_t bytes;
    uint32_t *control = vmbus_channel_in_ring(kmcl_channel_vmbus(ch), &bytes);
    __atomic_store_n(&control[0], 4097u, __ATOMIC_RELEASE);
    uint32_t op[2] = { HVSIM_VSP_TEST_OP_SIGNAL_ONLY, 0 };
    struct send s = { .ch = ch, .buf = op, .len = sizeof op };
    hosted_run_on(0, send_job, &s);
    hosted_run_on(0, free_job, s.pkt);
    for (int i = 0; i < 5000 && !(kmcl_channel_failed(ch) && hosted_log_contains("channel failed, not read again"));
         i++)
        pause_ms(); /* the flag is set just before the line is logged */
    assert_true(kmcl_channel_failed(ch));
    assert_true(hosted_log_contains("channel failed, not read again"));
    assert_int_equal(LD(seen.packets), 0);
    close_channel(ch);
    stop();
}

static void test_polling(void **state)
{
    (void)state;
    start();
    struct kmcl_channel *ch = open_channel_with(false, 0, true);
    struct kmcl_channel_stats before;
    kmcl_channel_get_stats(ch, &before);
    send_n(ch, 5000, 48);
    assert_true(wait_until(&seen.data_packets, 5000));
    assert_int_equal(LD(seen.order_errors), 0);
    assert_int_equal(LD(seen.wrong_irql), 0);
    assert_int_equal(LD(seen.wrong_cpu), 0); /* delivered by the poller, on its CPU */
    /* The host saw the mask set the whole time: 5,000 packets, (almost) no interrupts. */
    uint32_t bytes;
    uint32_t *control = vmbus_channel_in_ring(kmcl_channel_vmbus(ch), &bytes);
    assert_int_equal(__atomic_load_n(&control[2], __ATOMIC_ACQUIRE), 1); /* interrupt_mask */
    struct kmcl_channel_stats st;
    kmcl_channel_get_stats(ch, &st);
    assert_true(st.polls > 0);
    assert_true(st.interrupts - before.interrupts < 5);
    close_channel(ch);
    stop();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_echo),
        cmocka_unit_test(test_wait_for_completion_and_sync),
        cmocka_unit_test(test_defer_to_passive_keeps_order),
        cmocka_unit_test(test_passive_channel),
        cmocka_unit_test(test_gpa_direct),
        cmocka_unit_test(test_send_backlog),
        cmocka_unit_test(test_completion_backlog),
        cmocka_unit_test(test_suppressed_queue_management),
        cmocka_unit_test(test_disable_cancels_outstanding),
        cmocka_unit_test(test_corrupt_ring_fails_channel),
        cmocka_unit_test(test_polling),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
