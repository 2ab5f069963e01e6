/*
 * vsp_test: the test device's VSP (contract and protocol: sim/vsp_test.h).
 *
 * Per channel: a kmcl READER endpoint on the guest -> host ring and a WRITER endpoint on the
 * host -> guest ring, a bounce buffer for packets that wrap around the end of the inbound data
 * area, and the work in progress. Each guest signal runs serve(): first the SEND_N batch still
 * owed, then the inbound ring is drained (begin_read / peek / consume / publish_read / end_read,
 * again while end_read says a packet raced in).
 *
 * Why a packet stays in the ring until all its answers are written: when the host -> guest ring is
 * full, the answer cannot be written now, and the way to wait for room is the ring's own
 * (pending_send_sz, then the guest's signal). Leaving the request unconsumed keeps the order of the
 * answers and pushes back on the guest (its ring fills) without the VSP queueing anything; `step`
 * remembers which answers of that packet are already out (ECHO writes two). A SEND_N batch is the
 * one piece of queued work: its request is consumed at once and the batch (count, size, next seq)
 * lives in the channel until written, and no further request is read meanwhile.
 *
 * The sim-side pieces come from vmbus_internal.h (as for vmbus_devices.c, this file is part of the
 * server's family): the channel's server (ch->vb) for hvsim_gpa on its model and for vb_log.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kmcl/packet.h"
#include "kmcl/ring.h"
#include "sim/vmbus_internal.h"
#include "sim/vsp_test.h"

#define PUBLISH_BATCH 32u /* inbound packets consumed between read-index publishes */

struct vsp_chan {
    struct vsp_chan *next;
    struct hvsim_vmbus_channel *ch; /* the key: the server's handle */
    struct hvsim_vmbus *vb;
    uint32_t relid;
    bool failed;                    /* no more reads, writes or signals on this channel */
    bool progress;                  /* serve(): something was consumed or written */
    struct kmcl_ring in, out;
    uint8_t *bounce;
    uint32_t bounce_size;
    /* The packet at the inbound read position while its answers are not all out. */
    bool seen;                      /* counted in packets_in */
    uint32_t step;                  /* answers of it already written */
    /* SEND_N batch owed */
    bool job;
    bool job_completion;            /* a completion is due after the last packet */
    uint32_t job_status, job_left, job_count, job_size, job_seq;
    uint64_t job_trans;
    uint8_t *job_buf;
    uint32_t job_buf_size;
    /* GPA-direct parse storage, grown on demand */
    struct kmcl_gpa_range *ranges;
    uint32_t max_ranges;
    uint64_t *pfns;
    uint32_t max_pfns;
};

struct hvsim_vsp_test {
    pthread_mutex_t lock;           /* everything below; see the header for why and the order */
    struct vsp_chan *chans;
    struct hvsim_vsp_test_stats st;
};

static struct hvsim_vsp_test default_vsp = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* What handling a packet or a batch came to. */
enum outcome {
    DONE,    /* finished (answers written or none) */
    SKIPPED, /* write_packet: the packet can never fit the ring (too_big); not waited for */
    FULL,    /* the host -> guest ring is full: stop, resume on the next signal */
    FAILED,  /* the channel failed (logged) */
};

static struct hvsim_vsp_test *instance(void *ctx)
{
    return ctx ? ctx : &default_vsp;
}

static struct vsp_chan *find(struct hvsim_vsp_test *v, const struct hvsim_vmbus_channel *ch, struct vsp_chan ***link)
{
    for (struct vsp_chan **p = &v->chans; *p; p = &(*p)->next)
        if ((*p)->ch == ch) {
            if (link)
                *link = p;
            return *p;
        }
    return NULL;
}

static void signal_guest(struct hvsim_vsp_test *v, struct vsp_chan *c)
{
    if (hvsim_vmbus_signal_guest(c->ch))
        v->st.signals_out++;
}

/* The batch still owed is dropped (close or failure). */
static void drop_job(struct hvsim_vsp_test *v, struct vsp_chan *c)
{
    if (c->job) {
        v->st.backlog -= c->job_left;
        v->st.backlog_dropped += c->job_left;
    }
    c->job = false;
    c->job_left = 0;
}

static void fail_channel(struct hvsim_vsp_test *v, struct vsp_chan *c, const char *which,
                         const struct kmcl_ring_failure *f)
{
    if (c->failed)
        return;
    c->failed = true;
    v->st.failures++;
    drop_job(v, c);
    vb_log(c->vb, 0,
           "%s relid %u: %s ring failed: %s (offset 0x%x, value 0x%llx, limit 0x%llx): channel no longer served",
           hvsim_vmbus_channel_device(c->ch)->name, c->relid, which, f && f->reason ? f->reason : "unknown",
           f ? f->offset : 0, f ? (unsigned long long)f->value : 0ull, f ? (unsigned long long)f->limit : 0ull);
}

static void fail_in(struct hvsim_vsp_test *v, struct vsp_chan *c)
{
    fail_channel(v, c, "guest -> host", kmcl_ring_failure(&c->in));
}

/* Writes one packet (no type-specific header) to the guest. */
static enum outcome write_packet(struct hvsim_vsp_test *v, struct vsp_chan *c, uint16_t type, uint64_t trans_id,
                                 const struct kmcl_iov *iov, uint32_t iov_count)
{
    struct kmcl_ring_out pkt = { .type = type, .trans_id = trans_id, .iov = iov, .iov_count = iov_count };
    bool signal = false;
    status_t s = kmcl_ring_write(&c->out, &pkt, 0, &signal);
    if (signal)
        signal_guest(v, c);
    switch (s) {
    case STATUS_OK:
        v->st.packets_out[type]++;
        c->progress = true;
        return DONE;
    case STATUS_NO_SPACE:
        v->st.ring_full++;
        return FULL;
    case STATUS_INVALID_PARAMETER:
        v->st.too_big++;
        return SKIPPED;
    default: /* STATUS_BAD_DATA: the guest's read index was bad */
        fail_channel(v, c, "host -> guest", kmcl_ring_failure(&c->out));
        return FAILED;
    }
}

static enum outcome write_one(struct hvsim_vsp_test *v, struct vsp_chan *c, uint16_t type, uint64_t trans_id,
                              const void *payload, uint32_t len)
{
    struct kmcl_iov iov = { .base = payload, .len = len };
    return write_packet(v, c, type, trans_id, &iov, 1);
}

/* ---- SEND_N batches ---- */

static enum outcome run_job(struct hvsim_vsp_test *v, struct vsp_chan *c)
{
    if (!c->job)
        return DONE;
    while (c->job_left) {
        uint32_t seq = c->job_seq;
        struct hvsim_vsp_test_data_header h = { .op = HVSIM_VSP_TEST_OP_DATA, .seq = seq };
        memcpy(c->job_buf, &h, sizeof h);
        for (uint32_t k = sizeof h; k < c->job_size; k++)
            c->job_buf[k] = (uint8_t)(seq + k);
        struct kmcl_iov iov = { .base = c->job_buf, .len = c->job_size };
        enum outcome o = write_packet(v, c, KMCL_PKT_DATA_INBAND, c->job_trans, &iov, 1);
        if (o == SKIPPED) { /* the size was checked when the batch was taken: cannot happen */
            drop_job(v, c);
            return DONE;
        }
        if (o != DONE)
            return o;
        c->job_seq++;
        c->job_left--;
        v->st.backlog--;
        v->st.send_n_packets++;
    }
    if (c->job_completion) {
        struct hvsim_vsp_test_send_n_result r = { .status = c->job_status, .count = c->job_seq };
        enum outcome o = write_one(v, c, KMCL_PKT_COMPLETION, c->job_trans, &r, sizeof r);
        if (o == FULL || o == FAILED)
            return o;
        v->st.completions_out += o == DONE;
        c->job_completion = false;
    }
    c->job = false;
    return DONE;
}

/* Takes a SEND_N request (the caller then runs the batch). */
static void take_send_n(struct hvsim_vsp_test *v, struct vsp_chan *c, const struct kmcl_pkt_inband *ib)
{
    struct hvsim_vsp_test_send_n req;
    if (ib->payload_len < sizeof req) {
        v->st.bad_requests++;
        return;
    }
    memcpy(&req, ib->payload, sizeof req); /* read once: the guest may still change its ring */
    v->st.send_n_requests++;
    /* The packet must fit this ring (8 bytes stay free) and len8's 16 bits. */
    uint64_t need = kmcl_ring_packet_bytes(0, req.size);
    bool ok = req.size >= sizeof(struct hvsim_vsp_test_data_header) && need <= c->out.size - 8 &&
              need - KMCL_PKT_TRAILER_SIZE <= KMCL_PKT_MAX_LEN;
    if (ok && req.size > c->job_buf_size) {
        uint8_t *b = realloc(c->job_buf, req.size);
        if (!b) {
            ok = false;
        } else {
            c->job_buf = b;
            c->job_buf_size = req.size;
        }
    }
    c->job = true;
    c->job_trans = ib->trans_id;
    c->job_completion = ib->completion_requested;
    c->job_seq = 0;
    if (!ok) {
        v->st.bad_requests++;
        c->job_status = HVSIM_VSP_TEST_STATUS_BAD_REQUEST;
        c->job_left = c->job_count = c->job_size = 0;
    } else {
        c->job_status = HVSIM_VSP_TEST_STATUS_OK;
        c->job_left = c->job_count = req.count;
        c->job_size = req.size;
        v->st.backlog += req.count;
    }
}

/* ---- packets ---- */

static enum outcome handle_inband(struct hvsim_vsp_test *v, struct vsp_chan *c, const struct kmcl_ring_packet *pkt)
{
    struct kmcl_pkt_inband ib;
    if (kmcl_pkt_parse_inband(pkt, &ib) != STATUS_OK) /* the type was checked: cannot happen */
        return DONE;
    uint32_t op;
    if (ib.payload_len < sizeof op) {
        v->st.bad_requests++;
        return DONE;
    }
    memcpy(&op, ib.payload, sizeof op);
    enum outcome o;
    switch (op) {
    case HVSIM_VSP_TEST_OP_ECHO:
        if (c->step == 0) {
            o = write_one(v, c, KMCL_PKT_DATA_INBAND, ib.trans_id, ib.payload, ib.payload_len);
            if (o == FULL || o == FAILED)
                return o;
            v->st.echoes += o == DONE;
            c->step = 1;
        }
        if (!ib.completion_requested)
            return DONE;
        __attribute__((fallthrough)); /* to the completion after the echo */
    case HVSIM_VSP_TEST_OP_ECHO_COMPLETION:
        if (!ib.completion_requested) {
            v->st.completion_unrequested++;
            return DONE;
        }
        o = write_one(v, c, KMCL_PKT_COMPLETION, ib.trans_id, ib.payload, ib.payload_len);
        if (o == FULL || o == FAILED)
            return o;
        v->st.completions_out += o == DONE;
        return DONE;
    case HVSIM_VSP_TEST_OP_SEND_N:
        take_send_n(v, c, &ib);
        return DONE;
    case HVSIM_VSP_TEST_OP_SIGNAL_ONLY:
        v->st.signal_only++;
        signal_guest(v, c);
        return DONE;
    default:
        v->st.unknown_opcodes++;
        return DONE;
    }
}

static void fnv1a(uint32_t *h, const uint8_t *p, uint32_t n)
{
    uint32_t x = *h;
    for (uint32_t i = 0; i < n; i++)
        x = (x ^ p[i]) * HVSIM_VSP_TEST_FNV_PRIME;
    *h = x;
}

/* Checksums the ranges parsed into c's storage; false if a page is outside guest RAM. */
static bool checksum_ranges(struct vsp_chan *c, const struct kmcl_pkt_gpa *g, struct hvsim_vsp_test_gpa_result *r)
{
    uint32_t h = HVSIM_VSP_TEST_FNV_BASIS;
    uint64_t total = 0;
    for (uint32_t i = 0; i < g->range_count; i++) {
        const struct kmcl_gpa_range *rg = &c->ranges[i];
        uint32_t off = rg->byte_offset, left = rg->byte_count;
        for (uint32_t j = 0; j < rg->pfn_count && left; j++) {
            uint64_t pfn = c->pfns[rg->pfn_first + j];
            uint32_t n = KMCL_PAGE_SIZE - off < left ? KMCL_PAGE_SIZE - off : left;
            if (pfn > UINT64_MAX / KMCL_PAGE_SIZE)
                return false;
            const uint8_t *p = hvsim_gpa(c->vb->sim, pfn * KMCL_PAGE_SIZE + off, n);
            if (!p)
                return false;
            fnv1a(&h, p, n);
            left -= n;
            off = 0;
        }
        total += rg->byte_count;
    }
    if (total > UINT32_MAX) /* cannot be: at most 65535 pages fit a packet */
        return false;
    r->byte_count = (uint32_t)total;
    r->checksum = h;
    return true;
}

/* Makes room for the ranges and page numbers a GPA packet has (kmcl_pkt_parse_gpa said how many). */
static bool grow_gpa_storage(struct vsp_chan *c, uint32_t ranges, uint32_t pfns)
{
    if (ranges > c->max_ranges) {
        struct kmcl_gpa_range *n = realloc(c->ranges, (size_t)ranges * sizeof *n);
        if (!n)
            return false;
        c->ranges = n;
        c->max_ranges = ranges;
    }
    if (pfns > c->max_pfns) {
        uint64_t *n = realloc(c->pfns, (size_t)pfns * sizeof *n);
        if (!n)
            return false;
        c->pfns = n;
        c->max_pfns = pfns;
    }
    return true;
}

static enum outcome handle_gpa(struct hvsim_vsp_test *v, struct vsp_chan *c, const struct kmcl_ring_packet *pkt)
{
    struct kmcl_pkt_gpa g;
    struct kmcl_ring_failure why;
    status_t s;
    for (;;) {
        g = (struct kmcl_pkt_gpa){ .ranges = c->ranges, .max_ranges = c->max_ranges, .pfns = c->pfns,
                                   .max_pfns = c->max_pfns };
        s = kmcl_pkt_parse_gpa(pkt, &g, &why);
        if (s != STATUS_NO_SPACE)
            break;
        if (!grow_gpa_storage(c, g.range_count, g.pfn_total)) {
            why = (struct kmcl_ring_failure){ .reason = "host out of memory for the GPA ranges",
                                              .offset = pkt->ring_offset, .value = g.pfn_total };
            kmcl_ring_fail(&c->in, &why);
            fail_in(v, c);
            return FAILED;
        }
    }
    if (s != STATUS_OK) { /* peek checked the ranges already: cannot happen */
        kmcl_ring_fail(&c->in, &why);
        fail_in(v, c);
        return FAILED;
    }
    struct hvsim_vsp_test_gpa_result r = { .status = HVSIM_VSP_TEST_STATUS_OK };
    if (!checksum_ranges(c, &g, &r))
        r = (struct hvsim_vsp_test_gpa_result){ .status = HVSIM_VSP_TEST_STATUS_BAD_RANGE };
    if (g.completion_requested) {
        enum outcome o = write_one(v, c, KMCL_PKT_COMPLETION, g.trans_id, &r, sizeof r);
        if (o == FULL || o == FAILED)
            return o; /* counted once the answer is out (a retry checksums again) */
        v->st.completions_out += o == DONE;
    }
    v->st.gpa_requests++;
    v->st.gpa_bytes += r.byte_count;
    if (r.status != HVSIM_VSP_TEST_STATUS_OK)
        v->st.gpa_bad_ranges++;
    return DONE;
}

static enum outcome handle_packet(struct hvsim_vsp_test *v, struct vsp_chan *c, const struct kmcl_ring_packet *pkt)
{
    switch (pkt->desc.type) {
    case KMCL_PKT_DATA_INBAND:
        return handle_inband(v, c, pkt);
    case KMCL_PKT_DATA_GPA_DIRECT:
        return handle_gpa(v, c, pkt);
    case KMCL_PKT_COMPLETION:
        v->st.completions_in++;
        return DONE;
    default:
        v->st.unknown_types++;
        return DONE;
    }
}

/* ---- serving a channel ---- */

static void serve(struct hvsim_vsp_test *v, struct vsp_chan *c)
{
    if (c->failed)
        return;
    c->progress = false;
    enum outcome o = run_job(v, c);
    bool stalled = o == FULL;
    if (o == FAILED)
        return;
    bool more = !stalled;
    while (more) {
        uint32_t consumed = 0;
        kmcl_ring_begin_read(&c->in);
        struct kmcl_ring_packet pkt;
        status_t s = STATUS_NOT_FOUND;
        while (!stalled && (s = kmcl_ring_peek(&c->in, &pkt, c->bounce, c->bounce_size)) == STATUS_OK) {
            if (!c->seen) { /* first look at this packet (not a retry after a full ring) */
                v->st.packets_in[pkt.desc.type]++;
                c->seen = true;
            }
            o = handle_packet(v, c, &pkt);
            if (o == FAILED)
                return;
            if (o == FULL) {
                stalled = true;
                break;
            }
            kmcl_ring_consume(&c->in);
            c->seen = false;
            c->step = 0;
            c->progress = true;
            o = run_job(v, c); /* a SEND_N just taken: its batch before the next request */
            if (o == FAILED)
                return;
            stalled = o == FULL;
            if (++consumed % PUBLISH_BATCH == 0 && kmcl_ring_publish_read(&c->in))
                signal_guest(v, c);
        }
        if (!stalled && s != STATUS_NOT_FOUND) {
            if (s == STATUS_NO_SPACE) { /* bounce is the data area's size: cannot happen */
                struct kmcl_ring_failure why = { .reason = "packet larger than the host's bounce buffer",
                                                 .offset = pkt.ring_offset, .value = pkt.len,
                                                 .limit = c->bounce_size };
                kmcl_ring_fail(&c->in, &why);
            }
            fail_in(v, c);
            return;
        }
        bool signal_writer = false;
        more = kmcl_ring_end_read(&c->in, &signal_writer) && !stalled;
        if (signal_writer)
            signal_guest(v, c);
    }
    /* The older contract (apps/vmbusprobe): a signal that finds nothing to do is answered. (Not
     * when the host waits for room: the guest has packets to read and kmcl's pending_send_sz
     * brings the next signal.) */
    if (!c->progress && !stalled) {
        uint64_t before = v->st.signals_out;
        signal_guest(v, c);
        v->st.idle_signals += v->st.signals_out - before;
    }
}

/* ---- the device callbacks ---- */

static void free_chan(struct vsp_chan *c)
{
    free(c->bounce);
    free(c->job_buf);
    free(c->ranges);
    free(c->pfns);
    free(c);
}

void hvsim_vsp_test_on_open(void *ctx, struct hvsim_vmbus_channel *ch, void *in_ring, uint32_t in_bytes,
                            void *out_ring, uint32_t out_bytes)
{
    struct hvsim_vsp_test *v = instance(ctx);
    pthread_mutex_lock(&v->lock);
    v->st.opens++;
    struct vsp_chan **link, *old = find(v, ch, &link);
    if (old) { /* the server closes before it reopens: cannot happen, but never keep stale state */
        *link = old->next;
        drop_job(v, old);
        free_chan(old);
        v->st.channels--;
    }
    struct vsp_chan *c = calloc(1, sizeof *c);
    if (!c) {
        vb_log(ch->vb, 0, "%s relid %u: out of memory: channel not served", hvsim_vmbus_channel_device(ch)->name,
               hvsim_vmbus_channel_relid(ch));
        v->st.failures++;
        pthread_mutex_unlock(&v->lock);
        return;
    }
    c->ch = ch;
    c->vb = ch->vb;
    c->relid = hvsim_vmbus_channel_relid(ch);
    c->next = v->chans;
    v->chans = c;
    v->st.channels++;

    /* The guest initialised both rings before OPENCHANNEL: take over the indices found (checked). */
    if (kmcl_ring_attach_pages(&c->in, KMCL_RING_READER, in_ring, in_bytes, 0) != STATUS_OK) {
        fail_in(v, c);
    } else if (kmcl_ring_attach_pages(&c->out, KMCL_RING_WRITER, out_ring, out_bytes, 0) != STATUS_OK) {
        fail_channel(v, c, "host -> guest", kmcl_ring_failure(&c->out));
    } else {
        c->bounce_size = c->in.size;
        c->bounce = malloc(c->bounce_size);
        if (!c->bounce) {
            struct kmcl_ring_failure why = { .reason = "host out of memory for the bounce buffer",
                                             .value = c->bounce_size };
            kmcl_ring_fail(&c->in, &why);
            fail_in(v, c);
        }
    }
    /* The hazard: a packet is there before the guest sees the open result. No signal here (it
     * would be an interrupt before the result, another hazard): the server signals after it. */
    if (!c->failed && hvsim_vmbus_send_on_open(ch)) {
        struct hvsim_vsp_test_hello hello = { .op = HVSIM_VSP_TEST_OP_HELLO, .relid = c->relid };
        struct kmcl_ring_out pkt = { .type = KMCL_PKT_DATA_INBAND,
                                     .iov = &(struct kmcl_iov){ .base = &hello, .len = sizeof hello },
                                     .iov_count = 1 };
        bool signal = false;
        status_t s = kmcl_ring_write(&c->out, &pkt, 0, &signal);
        if (s == STATUS_OK) {
            v->st.packets_out[KMCL_PKT_DATA_INBAND]++;
            v->st.hellos++;
        } else if (s == STATUS_BAD_DATA) {
            fail_channel(v, c, "host -> guest", kmcl_ring_failure(&c->out));
        } else {
            v->st.ring_full++; /* a guest ring with less room than 32 bytes: no hello */
        }
    }
    pthread_mutex_unlock(&v->lock);
}

void hvsim_vsp_test_on_close(void *ctx, struct hvsim_vmbus_channel *ch)
{
    struct hvsim_vsp_test *v = instance(ctx);
    pthread_mutex_lock(&v->lock);
    v->st.closes++;
    struct vsp_chan **link, *c = find(v, ch, &link);
    if (c) {
        *link = c->next;
        drop_job(v, c);
        free_chan(c);
        v->st.channels--;
    }
    pthread_mutex_unlock(&v->lock);
}

void hvsim_vsp_test_on_signal(void *ctx, struct hvsim_vmbus_channel *ch)
{
    struct hvsim_vsp_test *v = instance(ctx);
    pthread_mutex_lock(&v->lock);
    v->st.signals_in++;
    struct vsp_chan *c = find(v, ch, NULL);
    if (c)
        serve(v, c);
    pthread_mutex_unlock(&v->lock);
}

/* ---- instances ---- */

struct hvsim_vsp_test *hvsim_vsp_test_create(void)
{
    struct hvsim_vsp_test *v = calloc(1, sizeof *v);
    if (v && pthread_mutex_init(&v->lock, NULL) != 0) {
        free(v);
        v = NULL;
    }
    return v;
}

void hvsim_vsp_test_destroy(struct hvsim_vsp_test *vsp)
{
    if (!vsp || vsp == &default_vsp)
        return;
    while (vsp->chans) { /* a server still using it broke the contract: do not leak at least */
        struct vsp_chan *c = vsp->chans;
        vsp->chans = c->next;
        free_chan(c);
    }
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
