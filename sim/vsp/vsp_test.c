/*
 * vsp_test: the test device's VSP (host API: sim/vsp/vsp_test.h; protocol: hv/vmbus/proto/testdev.h),
 * on kmcl's server endpoint (sim/kmcl/server.h) through hvsim's VSP glue (sim/vsp/vsp.h).
 *
 * Per channel (the kmcl server channel's client context): the instance, a pool of answer packets
 * (each echo is one packet until its routine says it is in the ring), the SEND_N batch in progress
 * and the GPA-direct parse storage. A SEND_N batch pauses the channel (no further request is read
 * until the batch and its completion are out: answers keep the order of the requests) and streams
 * its DATA packets through one packet whose completion routine sends the next; kmcl queues a packet
 * that finds the ring full and writes it when the guest makes room, so the VSP never queues more
 * than one DATA packet.
 *
 * Locks: kmcl's channel lock is held around every callback; the instance mutex guards only the
 * counters and is taken inside it (never the other way round).
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "sim/kmcl/server.h"
#include "sim/vsp/vsp.h"
#include "sim/vsp/vsp_test.h"

struct hvsim_vsp_test {
    pthread_mutex_t lock; /* the counters */
    struct hvsim_vsp_test_stats st;
    struct hvsim_vsp *glue;
};

struct answer {
    struct answer *next;
    struct kmcl_server_packet *pkt;
    struct vsp_chan *c;
    uint16_t type;
};

struct vsp_chan {
    struct hvsim_vsp_test *v;
    struct kmcl_server_channel *ch;
    struct answer *free_answers;
    bool failure_counted;
    /* SEND_N batch in progress */
    bool job;
    struct kmcl_server_incoming *job_req;
    struct kmcl_server_packet *job_pkt;
    uint32_t job_left, job_size, job_seq;
    uint8_t *job_buf;
    uint32_t job_buf_size;
    /* GPA-direct parse storage, grown on demand */
    struct kmcl_gpa_range *ranges;
    uint32_t max_ranges;
    uint64_t *pfns;
    uint32_t max_pfns;
};

static struct hvsim_vsp_test default_vsp = { .lock = PTHREAD_MUTEX_INITIALIZER };
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

#define COUNT(v, field, n)                                                                                     \
    do {                                                                                                       \
        pthread_mutex_lock(&(v)->lock);                                                                        \
        (v)->st.field += (n);                                                                                  \
        pthread_mutex_unlock(&(v)->lock);                                                                      \
    } while (0)

static status_t send_counted(struct vsp_chan *c, struct kmcl_server_packet *pkt, const void *buf, uint32_t len);

/* ---- answers ---- */

static void answer_done(struct kmcl_server_packet *pkt, status_t status, const void *buf, uint32_t len)
{
    (void)buf;
    (void)len;
    struct answer *a = kmcl_server_packet_get_context(pkt);
    if (status == STATUS_OK)
        COUNT(a->c->v, packets_out[a->type], 1);
    a->next = a->c->free_answers;
    a->c->free_answers = a;
}

/* Sends one in-band packet (trans_id given, no completion asked). */
static void send_answer(struct vsp_chan *c, uint64_t trans_id, const void *payload, uint32_t len)
{
    struct answer *a = c->free_answers;
    if (a) {
        c->free_answers = a->next;
    } else {
        a = calloc(1, sizeof *a);
        if (!a || kmcl_server_packet_allocate(c->ch, &a->pkt) != STATUS_OK) {
            free(a);
            kmcl_server_channel_fail(c->ch, "host out of memory for an answer");
            return;
        }
        a->c = c;
        a->type = KMCL_PKT_DATA_INBAND;
        kmcl_server_packet_set_context(a->pkt, a);
        kmcl_server_packet_set_completion_routine(a->pkt, answer_done);
    }
    kmcl_server_packet_set_transaction_id(a->pkt, trans_id);
    status_t s = send_counted(c, a->pkt, payload, len);
    if (s != STATUS_OK) {
        if (s == STATUS_INVALID_PARAMETER)
            COUNT(c->v, too_big, 1); /* can never fit the ring */
        a->next = c->free_answers;
        c->free_answers = a;
    }
}

static void complete(struct vsp_chan *c, struct kmcl_server_incoming *in, const void *buf, uint32_t len)
{
    bool want = kmcl_server_incoming_completion_requested(in);
    struct kmcl_server_channel_stats before, after;
    kmcl_server_channel_get_stats(c->ch, &before);
    kmcl_server_packet_complete(in, buf, len);
    kmcl_server_channel_get_stats(c->ch, &after);
    if (after.queued != before.queued)
        COUNT(c->v, ring_full, 1);
    if (want) {
        pthread_mutex_lock(&c->v->lock);
        c->v->st.completions_out++;
        c->v->st.packets_out[KMCL_PKT_COMPLETION]++;
        pthread_mutex_unlock(&c->v->lock);
    }
}

/* A request the device cannot serve: a completion {u32 status} if one was asked for. */
static void refuse(struct vsp_chan *c, struct kmcl_server_incoming *in, uint32_t status)
{
    complete(c, in, &status, sizeof status);
}

/* ---- SEND_N batches ---- */

static void job_finish(struct vsp_chan *c, status_t status)
{
    struct hvsim_vsp_test_send_n_result r = { .status = HVSIM_VSP_TEST_STATUS_OK, .count = c->job_seq };
    struct kmcl_server_incoming *req = c->job_req;
    c->job = false;
    c->job_req = NULL;
    if (status != STATUS_OK) { /* the channel closed under the batch */
        COUNT(c->v, backlog, -(uint64_t)c->job_left);
        COUNT(c->v, backlog_dropped, c->job_left);
        c->job_left = 0;
        kmcl_server_packet_complete(req, NULL, 0);
        return;
    }
    complete(c, req, &r, sizeof r);
    kmcl_server_channel_start(c->ch);
}

static void job_next(struct vsp_chan *c)
{
    if (c->job_left == 0) {
        job_finish(c, STATUS_OK);
        return;
    }
    uint32_t seq = c->job_seq;
    struct hvsim_vsp_test_data_header h = { .op = HVSIM_VSP_TEST_OP_DATA, .seq = seq };
    memcpy(c->job_buf, &h, sizeof h);
    for (uint32_t k = sizeof h; k < c->job_size; k++)
        c->job_buf[k] = (uint8_t)(seq + k);
    kmcl_server_packet_set_transaction_id(c->job_pkt, kmcl_server_incoming_trans_id(c->job_req));
    if (send_counted(c, c->job_pkt, c->job_buf, c->job_size) != STATUS_OK)
        job_finish(c, STATUS_CANCELLED); /* the channel failed or closed */
}

/* The DATA packet is in the ring (or cancelled): the next one. */
static void job_sent(struct kmcl_server_packet *pkt, status_t status, const void *buf, uint32_t len)
{
    (void)buf;
    (void)len;
    struct vsp_chan *c = kmcl_server_packet_get_context(pkt);
    if (!c->job)
        return;
    if (status != STATUS_OK) {
        job_finish(c, status);
        return;
    }
    struct hvsim_vsp_test *v = c->v;
    pthread_mutex_lock(&v->lock);
    v->st.packets_out[KMCL_PKT_DATA_INBAND]++;
    v->st.send_n_packets++;
    v->st.backlog--;
    pthread_mutex_unlock(&v->lock);
    c->job_seq++;
    c->job_left--;
    job_next(c);
}

static void take_send_n(struct vsp_chan *c, struct kmcl_server_incoming *in, const uint8_t *payload, uint32_t len)
{
    struct hvsim_vsp_test_send_n req;
    if (len < sizeof req) {
        COUNT(c->v, bad_requests, 1);
        refuse(c, in, HVSIM_VSP_TEST_STATUS_BAD_REQUEST);
        return;
    }
    memcpy(&req, payload, sizeof req); /* read once: the guest may still change its ring */
    COUNT(c->v, send_n_requests, 1);
    bool ok = req.size >= sizeof(struct hvsim_vsp_test_data_header) &&
              req.size <= kmcl_server_channel_max_inband_payload(c->ch) && req.count <= HVSIM_VSP_TEST_MAX_SEND_N;
    if (ok && req.size > c->job_buf_size) {
        uint8_t *b = realloc(c->job_buf, req.size);
        ok = b != NULL;
        if (b) {
            c->job_buf = b;
            c->job_buf_size = req.size;
        }
    }
    if (ok && !c->job_pkt) {
        ok = kmcl_server_packet_allocate(c->ch, &c->job_pkt) == STATUS_OK;
        if (ok) {
            kmcl_server_packet_set_context(c->job_pkt, c);
            kmcl_server_packet_set_completion_routine(c->job_pkt, job_sent);
        }
    }
    if (!ok) {
        COUNT(c->v, bad_requests, 1);
        struct hvsim_vsp_test_send_n_result r = { .status = HVSIM_VSP_TEST_STATUS_BAD_REQUEST, .count = 0 };
        complete(c, in, &r, sizeof r);
        return;
    }
    c->job = true;
    c->job_req = in;
    c->job_left = req.count;
    c->job_size = req.size;
    c->job_seq = 0;
    COUNT(c->v, backlog, req.count);
    kmcl_server_channel_pause(c->ch);
    job_next(c);
}

/* ---- SEND_N_ACKED ---- */

struct acked {
    struct vsp_chan *c;
    struct kmcl_server_incoming *req;
    uint32_t count, left;
    bool failed;
    struct kmcl_server_packet *pkts[];
};

static void acked_done(struct kmcl_server_packet *pkt, status_t status, const void *buf, uint32_t len)
{
    (void)buf;
    (void)len;
    struct acked *a = kmcl_server_packet_get_context(pkt);
    if (status == STATUS_OK) {
        pthread_mutex_lock(&a->c->v->lock);
        a->c->v->st.acked_packets++;
        a->c->v->st.packets_out[KMCL_PKT_DATA_INBAND]++;
        pthread_mutex_unlock(&a->c->v->lock);
    } else {
        a->failed = true;
    }
    if (--a->left)
        return;
    struct hvsim_vsp_test_send_n_result r = { .status = a->failed ? HVSIM_VSP_TEST_STATUS_BAD_REQUEST
                                                                   : HVSIM_VSP_TEST_STATUS_OK,
                                              .count = a->count };
    /* {BAD_REQUEST, count} when some were not sent (the id table was full) or were cancelled; on a
     * channel that closed or failed kmcl writes nothing, it just retires the request. */
    complete(a->c, a->req, &r, sizeof r);
    for (uint32_t i = 0; i < a->count; i++)
        if (a->pkts[i] != pkt)
            kmcl_server_packet_free(a->pkts[i]);
    free(a);
    kmcl_server_packet_free(pkt); /* its routine is over: nothing uses it after return */
}

static void take_send_n_acked(struct vsp_chan *c, struct kmcl_server_incoming *in, const uint8_t *payload, uint32_t len)
{
    struct hvsim_vsp_test_send_n req;
    if (len < sizeof req) {
        COUNT(c->v, bad_requests, 1);
        refuse(c, in, HVSIM_VSP_TEST_STATUS_BAD_REQUEST);
        return;
    }
    memcpy(&req, payload, sizeof req);
    COUNT(c->v, acked_requests, 1);
    struct acked *a = NULL;
    bool ok = req.size >= sizeof(struct hvsim_vsp_test_data_header) &&
              req.size <= kmcl_server_channel_max_inband_payload(c->ch) && req.count > 0 &&
              req.count <= HVSIM_VSP_TEST_MAX_ACKED;
    uint8_t *buf = ok ? malloc(req.size) : NULL;
    if (buf)
        a = calloc(1, sizeof *a + req.count * sizeof a->pkts[0]);
    for (uint32_t i = 0; a && i < req.count; i++)
        if (kmcl_server_packet_allocate(c->ch, &a->pkts[i]) != STATUS_OK)
            ok = false;
    if (!ok || !a) {
        if (a)
            for (uint32_t i = 0; i < req.count; i++)
                kmcl_server_packet_free(a->pkts[i]);
        free(a);
        free(buf);
        COUNT(c->v, bad_requests, 1);
        struct hvsim_vsp_test_send_n_result r = { .status = HVSIM_VSP_TEST_STATUS_BAD_REQUEST, .count = 0 };
        complete(c, in, &r, sizeof r);
        return;
    }
    a->c = c;
    a->req = in;
    a->count = a->left = req.count;
    for (uint32_t seq = 0; seq < req.count; seq++) {
        struct hvsim_vsp_test_data_header h = { .op = HVSIM_VSP_TEST_OP_DATA, .seq = seq };
        memcpy(buf, &h, sizeof h);
        for (uint32_t k = sizeof h; k < req.size; k++)
            buf[k] = (uint8_t)(seq + k);
        kmcl_server_packet_set_context(a->pkts[seq], a);
        kmcl_server_packet_set_completion_routine(a->pkts[seq], acked_done);
        if (kmcl_server_packet_send(a->pkts[seq], buf, req.size, KMCL_SERVER_SEND_WAIT_FOR_COMPLETION) != STATUS_OK) {
            /* the channel failed or the id table is full: the unsent ones count as cancelled */
            a->failed = true;
            uint32_t unsent = req.count - seq;
            a->left -= unsent - 1;
            acked_done(a->pkts[seq], STATUS_CANCELLED, NULL, 0); /* may free a: stop here */
            break;
        }
    }
    free(buf);
}

/* ---- packets ---- */

static void handle_inband(struct vsp_chan *c, struct kmcl_server_incoming *in, const uint8_t *payload, uint32_t len)
{
    uint32_t op;
    if (len < sizeof op) {
        COUNT(c->v, bad_requests, 1);
        refuse(c, in, HVSIM_VSP_TEST_STATUS_BAD_REQUEST);
        return;
    }
    memcpy(&op, payload, sizeof op);
    bool want = kmcl_server_incoming_completion_requested(in);
    switch (op) {
    case HVSIM_VSP_TEST_OP_ECHO:
        send_answer(c, kmcl_server_incoming_trans_id(in), payload, len);
        COUNT(c->v, echoes, 1);
        complete(c, in, payload, len); /* the completion (if asked) follows the echo */
        return;
    case HVSIM_VSP_TEST_OP_ECHO_COMPLETION:
        if (!want)
            COUNT(c->v, completion_unrequested, 1);
        complete(c, in, payload, len);
        return;
    case HVSIM_VSP_TEST_OP_SEND_N:
        take_send_n(c, in, payload, len);
        return;
    case HVSIM_VSP_TEST_OP_SEND_N_ACKED:
        take_send_n_acked(c, in, payload, len);
        return;
    case HVSIM_VSP_TEST_OP_SIGNAL_ONLY:
        COUNT(c->v, signal_only, 1);
        (void)kmcl_server_channel_signal(c->ch); /* counted by signalled() */
        kmcl_server_packet_complete(in, NULL, 0); /* the flag is ignored: no completion */
        return;
    default:
        COUNT(c->v, unknown_opcodes, 1);
        refuse(c, in, HVSIM_VSP_TEST_STATUS_UNKNOWN_OPCODE);
        return;
    }
}

static uint32_t fnv1a(uint32_t h, const uint8_t *p, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        h = (h ^ p[i]) * HVSIM_VSP_TEST_FNV_PRIME;
    return h;
}

struct checksum {
    uint32_t h;
    uint64_t bytes;
};

static bool checksum_piece(void *arg, const uint8_t *p, uint32_t n)
{
    struct checksum *cs = arg;
    cs->h = fnv1a(cs->h, p, n);
    cs->bytes += n;
    return true;
}

static void handle_gpa(struct vsp_chan *c, struct kmcl_server_incoming *in)
{
    struct kmcl_pkt_gpa g;
    status_t s;
    for (;;) {
        g = (struct kmcl_pkt_gpa){ .ranges = c->ranges, .max_ranges = c->max_ranges, .pfns = c->pfns,
                                   .max_pfns = c->max_pfns };
        s = kmcl_server_packet_get_external_data(in, &g, NULL);
        if (s != STATUS_NO_SPACE)
            break;
        if (g.range_count > c->max_ranges) {
            struct kmcl_gpa_range *n = realloc(c->ranges, (size_t)g.range_count * sizeof *n);
            if (!n)
                break;
            c->ranges = n;
            c->max_ranges = g.range_count;
        }
        if (g.pfn_total > c->max_pfns) {
            uint64_t *n = realloc(c->pfns, (size_t)g.pfn_total * sizeof *n);
            if (!n)
                break;
            c->pfns = n;
            c->max_pfns = g.pfn_total;
        }
    }
    if (s != STATUS_OK) { /* kmcl checked the ranges when it read the packet: only memory can fail */
        kmcl_server_channel_fail(c->ch, "host out of memory for the GPA ranges");
        kmcl_server_packet_complete(in, NULL, 0);
        return;
    }
    struct checksum cs = { .h = HVSIM_VSP_TEST_FNV_BASIS };
    struct hvsim_vsp_test_gpa_result r = { .status = HVSIM_VSP_TEST_STATUS_OK };
    if (kmcl_server_gpa_for_each(c->ch, &g, UINT64_MAX, checksum_piece, &cs) != STATUS_OK || cs.bytes > UINT32_MAX)
        r = (struct hvsim_vsp_test_gpa_result){ .status = HVSIM_VSP_TEST_STATUS_BAD_RANGE };
    else {
        r.byte_count = (uint32_t)cs.bytes;
        r.checksum = cs.h;
    }
    struct hvsim_vsp_test *v = c->v;
    pthread_mutex_lock(&v->lock);
    v->st.gpa_requests++;
    v->st.gpa_bytes += r.byte_count;
    if (r.status != HVSIM_VSP_TEST_STATUS_OK)
        v->st.gpa_bad_ranges++;
    pthread_mutex_unlock(&v->lock);
    complete(c, in, &r, sizeof r);
}

static void process_packet(struct kmcl_server_channel *ch, struct kmcl_server_incoming *in, const void *buf,
                           uint32_t len, uint32_t flags)
{
    (void)flags;
    struct vsp_chan *c = kmcl_server_channel_get_pointer_to_client_context(ch);
    uint16_t type = kmcl_server_incoming_type(in);
    COUNT(c->v, packets_in[type], 1);
    if (type == KMCL_PKT_DATA_INBAND)
        handle_inband(c, in, buf, len);
    else if (type == KMCL_PKT_DATA_GPA_DIRECT)
        handle_gpa(c, in);
    else { /* transfer pages: nothing of this device's */
        COUNT(c->v, unknown_types, 1);
        refuse(c, in, HVSIM_VSP_TEST_STATUS_BAD_REQUEST);
    }
}

/* ---- channel life ---- */

/* Counts the channel's failure once (kmcl logged it). */
static void note_failure(struct vsp_chan *c)
{
    if (!c->failure_counted && kmcl_server_channel_failed(c->ch)) {
        c->failure_counted = true;
        COUNT(c->v, failures, 1);
    }
}

static void opened(struct kmcl_server_channel *ch)
{
    struct vsp_chan *c = kmcl_server_channel_get_pointer_to_client_context(ch);
    struct hvsim_vmbus_channel *vch = hvsim_vsp_vmbus_channel(ch);
    COUNT(c->v, opens, 1);
    COUNT(c->v, channels, 1);
    note_failure(c);
    /* The hazard: a packet is there before the guest sees the open result (the glue holds the
     * signal back; the server signals after the result). */
    if (!kmcl_server_channel_failed(ch) && hvsim_vmbus_send_on_open(vch)) {
        struct hvsim_vsp_test_hello hello = { .op = HVSIM_VSP_TEST_OP_HELLO,
                                              .relid = hvsim_vmbus_channel_relid(vch) };
        send_answer(c, 0, &hello, sizeof hello);
        COUNT(c->v, hellos, 1);
    }
}

static status_t setup(void *ctx, struct hvsim_vmbus_channel *vch, struct kmcl_server_channel *ch)
{
    (void)vch;
    struct kmcl_server_state_callbacks states = { .opened = opened };
    status_t s = kmcl_server_channel_init_set_client_context_size(ch, sizeof(struct vsp_chan));
    if (s == STATUS_OK)
        s = kmcl_server_channel_init_set_process_packet_callbacks(ch, process_packet, NULL);
    if (s == STATUS_OK)
        s = kmcl_server_channel_init_set_state_change_callbacks(ch, &states);
    if (s != STATUS_OK)
        return s;
    struct vsp_chan *c = kmcl_server_channel_get_pointer_to_client_context(ch);
    c->v = ctx;
    c->ch = ch;
    return STATUS_OK;
}

/* The older contract (apps/vmbusprobe): a signal that finds nothing to do is answered. */
static void after_interrupt(void *ctx, struct kmcl_server_channel *ch, bool did)
{
    struct hvsim_vsp_test *v = ctx;
    struct vsp_chan *c = kmcl_server_channel_get_pointer_to_client_context(ch);
    COUNT(v, signals_in, 1);
    note_failure(c);
    if (!did && !c->job && kmcl_server_channel_signal(ch))
        COUNT(v, idle_signals, 1);
}

static void signalled(void *ctx, struct kmcl_server_channel *ch)
{
    (void)ch;
    COUNT((struct hvsim_vsp_test *)ctx, signals_out, 1);
}

/* Sends pkt and counts it in ring_full if it had to wait for room. */
static status_t send_counted(struct vsp_chan *c, struct kmcl_server_packet *pkt, const void *buf, uint32_t len)
{
    struct kmcl_server_channel_stats before, after;
    kmcl_server_channel_get_stats(c->ch, &before);
    status_t s = kmcl_server_packet_send(pkt, buf, len, 0);
    kmcl_server_channel_get_stats(c->ch, &after);
    if (after.queued != before.queued)
        COUNT(c->v, ring_full, 1);
    return s;
}

static void teardown(void *ctx, struct hvsim_vmbus_channel *vch, struct kmcl_server_channel *ch)
{
    (void)vch;
    struct hvsim_vsp_test *v = ctx;
    struct vsp_chan *c = kmcl_server_channel_get_pointer_to_client_context(ch);
    struct kmcl_server_channel_stats ks;
    kmcl_server_channel_get_stats(ch, &ks);
    note_failure(c);
    pthread_mutex_lock(&v->lock);
    v->st.closes++;
    v->st.channels--;
    v->st.completions_in += ks.completions_in;
    pthread_mutex_unlock(&v->lock);
    while (c->free_answers) {
        struct answer *a = c->free_answers;
        c->free_answers = a->next;
        kmcl_server_packet_free(a->pkt);
        free(a);
    }
    kmcl_server_packet_free(c->job_pkt);
    free(c->job_buf);
    free(c->ranges);
    free(c->pfns);
}

static const struct hvsim_vsp_ops ops = { .setup = setup, .after_interrupt = after_interrupt, .signalled = signalled,
                                          .teardown = teardown };

/* ---- instances ---- */

static void default_init(void)
{
    default_vsp.glue = hvsim_vsp_create(&ops, &default_vsp);
}

static struct hvsim_vsp_test *instance(void *ctx)
{
    if (ctx)
        return ctx;
    pthread_once(&default_once, default_init);
    return &default_vsp;
}

void hvsim_vsp_test_on_open(void *ctx, struct hvsim_vmbus_channel *ch, void *in_ring, uint32_t in_bytes,
                            void *out_ring, uint32_t out_bytes)
{
    struct hvsim_vsp_test *v = instance(ctx);
    if (v->glue)
        hvsim_vsp_open(v->glue, ch, in_ring, in_bytes, out_ring, out_bytes);
}

void hvsim_vsp_test_on_close(void *ctx, struct hvsim_vmbus_channel *ch)
{
    struct hvsim_vsp_test *v = instance(ctx);
    if (v->glue)
        hvsim_vsp_close(v->glue, ch);
}

void hvsim_vsp_test_on_signal(void *ctx, struct hvsim_vmbus_channel *ch)
{
    struct hvsim_vsp_test *v = instance(ctx);
    if (v->glue)
        hvsim_vsp_signal(v->glue, ch);
}

struct hvsim_vsp_test *hvsim_vsp_test_create(void)
{
    struct hvsim_vsp_test *v = calloc(1, sizeof *v);
    if (!v)
        return NULL;
    if (pthread_mutex_init(&v->lock, NULL) != 0) {
        free(v);
        return NULL;
    }
    v->glue = hvsim_vsp_create(&ops, v);
    if (!v->glue) {
        pthread_mutex_destroy(&v->lock);
        free(v);
        return NULL;
    }
    return v;
}

void hvsim_vsp_test_destroy(struct hvsim_vsp_test *vsp)
{
    if (!vsp || vsp == &default_vsp)
        return;
    hvsim_vsp_destroy(vsp->glue);
    pthread_mutex_destroy(&vsp->lock);
    free(vsp);
}

struct hvsim_vmbus_device hvsim_vsp_test_device(struct hvsim_vsp_test *vsp)
{
    const struct vmbus_guid type = VMBUS_GUID_HVSIM_TEST;
    struct hvsim_vmbus_device d = { .name = "hvsim-test", .type = type, .monitored = true, .sub_channels = 2,
                                    .on_open = hvsim_vsp_test_on_open, .on_close = hvsim_vsp_test_on_close,
                                    .on_signal = hvsim_vsp_test_on_signal };
    for (uint32_t i = 0; i < hvsim_vmbus_default_device_count; i++)
        if (vmbus_guid_equal(&hvsim_vmbus_default_devices[i].type, &type))
            d = hvsim_vmbus_default_devices[i];
    d.ctx = vsp;
    return d;
}

void hvsim_vsp_test_get_stats(struct hvsim_vsp_test *vsp, struct hvsim_vsp_test_stats *out)
{
    struct hvsim_vsp_test *v = instance(vsp);
    pthread_mutex_lock(&v->lock);
    *out = v->st;
    pthread_mutex_unlock(&v->lock);
}
