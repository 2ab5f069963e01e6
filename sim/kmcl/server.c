/*
 * server: kmcl's server endpoint (contract in sim/kmcl/server.h). Hosted only: pthreads, malloc.
 *
 * One recursive mutex per channel guards everything. The out queue holds, in order, what found the
 * host -> guest ring full: packets (their payload copied into the packet) and completions (copied
 * into a queue item). Routines of packets that reached the ring are collected on `done` and run by
 * the outermost call on the way out (run_done), so a stream's next send does not recurse.
 */
#include "sim/kmcl/server.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmcl/core/endpoint.h"

#define DEFAULT_MAX_PACKET 65536u
#define XACT_CAPACITY 1024u
#define POOL_SIZE (KMCL_SERVER_DEFAULT_QUOTA * 4u)

_Static_assert(KMCL_SERVER_FLAG_SUPPRESS_QUEUE_MANAGEMENT == KMCL_EP_FLAG_SUPPRESS_QUEUE_MANAGEMENT, "one flag");
_Static_assert(KMCL_SERVER_PROCESS_EXTERNAL_DATA == KMCL_EP_PROCESS_EXTERNAL_DATA, "one flag");

struct kmcl_server_incoming {
    struct kmcl_ep_incoming ep; /* the context; its completion waits in the core's out queue */
    struct kmcl_server_channel *ch;
    bool in_use;                /* delivered, not completed yet */
};

struct kmcl_server_packet {
    struct kmcl_ep_out out;         /* what the core writes (or queues, in order) */
    struct kmcl_server_channel *ch;
    struct kmcl_server_packet *done_next;
    kmcl_server_completion_routine_fn routine;
    void *ctx;
    uint64_t fixed_id;              /* set_transaction_id */
    bool busy;                      /* sent, routine not yet run */
    bool xfer;
    uint16_t pageset_id;
    uint32_t range_count;
    struct kmcl_xfer_range *ranges; /* copies (xfer) */
    uint32_t max_ranges;
    uint8_t *buf;                   /* buf_size bytes: the payload while queued */
    uint32_t buf_size;              /* max_packet when allocated (init_set may raise it later) */
};

struct kmcl_server_channel {
    pthread_mutex_t lock;           /* recursive */
    struct kmcl_ep ep;              /* state, settings, rings, out queue, ids, contexts */
    char name[48];
    uint32_t quota, in_flight;
    bool paused, failed;
    bool kick;                      /* read again when the outermost call leaves */
    bool executing;                 /* drain_locked is on the stack: it must not nest */
    unsigned depth;                 /* nesting of API calls on the lock's owner (run_done at 0) */
    struct kmcl_server_transport t;
    uint32_t batch;
    struct kmcl_server_packet *done_head, **done_tail;
    struct kmcl_server_packet *cancel_head, **cancel_tail; /* routines owed STATUS_CANCELLED */
    struct kmcl_server_incoming pool[POOL_SIZE];
    struct kmcl_xact_slot xact_slots[XACT_CAPACITY];
    struct kmcl_server_channel_stats st;
};

#define EP(ch) ((ch) ? &(ch)->ep : NULL)

static void *zalloc(size_t n) { return calloc(1, n); }
static const struct kmcl_ep_alloc server_mem = { malloc, zalloc, free };

/* The callbacks, in their own types again (kmcl/core/endpoint.h). */
static void state_cb(struct kmcl_server_channel *ch, enum kmcl_ep_event e)
{
    if (ch->ep.states[e])
        ((kmcl_server_state_fn)ch->ep.states[e])(ch);
}

/* ---- locking and deferred routines ---- */

static void enter(struct kmcl_server_channel *ch)
{
    pthread_mutex_lock(&ch->lock);
    ch->depth++;
}

/* Leaves a call: the outermost one runs the routines of packets that reached the ring. */
static void flush_out_locked(struct kmcl_server_channel *ch, bool *did);
static void drain_locked(struct kmcl_server_channel *ch, bool *did);

/* Runs the routines owed on one list (packets that reached the ring: STATUS_OK; cancelled ones:
 * STATUS_CANCELLED), in order, each taken off first so that a routine may send its packet again. */
static void run_list(struct kmcl_server_channel *ch, struct kmcl_server_packet **head,
                     struct kmcl_server_packet ***tail, status_t status)
{
    while (*head) {
        struct kmcl_server_packet *p = *head;
        *head = p->done_next;
        if (!*head)
            *tail = head;
        p->busy = false;
        if (status == STATUS_CANCELLED)
            ch->st.cancelled++;
        if (p->routine)
            p->routine(p, status, NULL, 0);
    }
}

/* The routines of packets that reached the ring; only at depth 1 (the outermost call, or the
 * executor between packets), so that a routine sending the next packet of a stream adds to the
 * list instead of recursing. */
static void run_done(struct kmcl_server_channel *ch)
{
    run_list(ch, &ch->done_head, &ch->done_tail, STATUS_OK);
}

static void run_cancelled(struct kmcl_server_channel *ch)
{
    run_list(ch, &ch->cancel_head, &ch->cancel_tail, STATUS_CANCELLED);
}

static void leave(struct kmcl_server_channel *ch)
{
    while (ch->depth == 1) {
        if (ch->done_head) {
            run_done(ch);
        } else if (ch->cancel_head) {
            run_cancelled(ch);
        } else if (ch->kick) { /* reading may go on (start, a slot back under the quota) */
            ch->kick = false;
            bool did = false;
            flush_out_locked(ch, &did);
            drain_locked(ch, &did);
        } else {
            break;
        }
    }
    ch->depth--;
    pthread_mutex_unlock(&ch->lock);
}

static void push_list(struct kmcl_server_packet ***tail, struct kmcl_server_packet *p)
{
    p->done_next = NULL;
    **tail = p;
    *tail = &p->done_next;
}

static void logf_(struct kmcl_server_channel *ch, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(struct kmcl_server_channel *ch, const char *fmt, ...)
{
    if (!ch->t.log)
        return;
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    ch->t.log(ch->t.ctx, line);
}

/* An incoming context whose completion the core wrote, or will never write: back to the pool. */
static void incoming_done(struct kmcl_server_channel *ch, struct kmcl_ep_out *completion)
{
    kmcl_ep_incoming_put(&ch->ep, container_of(completion, struct kmcl_ep_incoming, completion));
}

/* Everything queued for the guest and every packet waiting for a completion will never go out or
 * complete: packets to the cancelled list, whose routines get STATUS_CANCELLED (run_cancelled, or
 * the outermost call's leave); queued completions are dropped, their contexts retired. */
static void cancel_all_locked(struct kmcl_server_channel *ch)
{
    struct list all;
    list_init(&all);
    kmcl_ep_take_all(&ch->ep, &all);
    while (!list_empty(&all)) {
        struct kmcl_ep_out *o = container_of(list_pop_front(&all), struct kmcl_ep_out, link);
        if (o->queued)
            ch->st.queued_now--;
        o->queued = false;
        if (o->type == KMCL_PKT_COMPLETION)
            incoming_done(ch, o);
        else
            push_list(&ch->cancel_tail, container_of(o, struct kmcl_server_packet, out));
    }
}


static void fail(struct kmcl_server_channel *ch, const char *which, const struct kmcl_ring_failure *f)
{
    if (ch->failed)
        return;
    ch->failed = true;
    cancel_all_locked(ch);
    logf_(ch, "%s ring failed: %s (offset 0x%x, value 0x%llx, limit 0x%llx): channel no longer served", which, f && f->reason ? f->reason : "unknown", f ? f->offset : 0, f ? (unsigned long long)f->value : 0ull,
          f ? (unsigned long long)f->limit : 0ull);
}

static void fail_in(struct kmcl_server_channel *ch)
{
    fail(ch, "guest -> host", kmcl_ring_failure(&ch->ep.in));
}

static void fail_out(struct kmcl_server_channel *ch)
{
    fail(ch, "host -> guest", kmcl_ring_failure(&ch->ep.out));
}

static void signal_guest(struct kmcl_server_channel *ch)
{
    if (ch->failed || !ch->t.signal_guest)
        return;
    ch->st.signals++;
    (void)ch->t.signal_guest(ch->t.ctx);
}

/* ---- allocation and init ---- */

status_t kmcl_server_channel_allocate(const char *name, struct kmcl_server_channel **out)
{
    if (!out)
        return STATUS_INVALID_PARAMETER;
    struct kmcl_server_channel *ch = calloc(1, sizeof *ch);
    if (!ch)
        return STATUS_NO_MEMORY;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    int e = pthread_mutex_init(&ch->lock, &a);
    pthread_mutexattr_destroy(&a);
    if (e || kmcl_ep_init(&ch->ep, KMCL_EP_SERVER, &server_mem, ch->xact_slots, XACT_CAPACITY, DEFAULT_MAX_PACKET,
                          KMCL_PKT_MAX_LEN) != STATUS_OK) {
        if (!e)
            pthread_mutex_destroy(&ch->lock);
        free(ch);
        return STATUS_NO_MEMORY;
    }
    snprintf(ch->name, sizeof ch->name, "%s", name ? name : "channel");
    ch->quota = KMCL_SERVER_DEFAULT_QUOTA;
    ch->done_tail = &ch->done_head;
    ch->cancel_tail = &ch->cancel_head;
    for (uint32_t i = 0; i < POOL_SIZE; i++) {
        ch->pool[i].ch = ch;
        kmcl_ep_add_incoming(&ch->ep, &ch->pool[i].ep);
    }
    *out = ch;
    return STATUS_OK;
}

status_t kmcl_server_channel_init_set_client_context_size(struct kmcl_server_channel *ch, size_t bytes)
{
    return kmcl_ep_init_set_client_context_size(EP(ch), bytes);
}

status_t kmcl_server_channel_init_set_maximum_packet_size(struct kmcl_server_channel *ch, uint32_t bytes)
{
    return kmcl_ep_init_set_maximum_packet_size(EP(ch), bytes);
}

status_t kmcl_server_channel_init_set_flags(struct kmcl_server_channel *ch, uint32_t flags)
{
    return kmcl_ep_init_set_flags(EP(ch), flags);
}

status_t kmcl_server_channel_init_set_process_packet_callbacks(struct kmcl_server_channel *ch,
                                                                kmcl_server_process_packet_fn process_packet,
                                                                kmcl_server_processing_complete_fn processing_complete)
{
    return kmcl_ep_init_set_process_packet_callbacks(EP(ch), KMCL_EP_FN(process_packet),
                                                     KMCL_EP_FN(processing_complete));
}

status_t kmcl_server_channel_init_set_queue_callback(struct kmcl_server_channel *ch, kmcl_server_queue_fn fn)
{
    return kmcl_ep_init_set_queue_callback(EP(ch), KMCL_EP_FN(fn));
}

status_t kmcl_server_channel_init_set_state_change_callbacks(struct kmcl_server_channel *ch,
                                                              const struct kmcl_server_state_callbacks *cbs)
{
    return kmcl_ep_init_set_state_change_callbacks(EP(ch), cbs ? KMCL_EP_STATE_FNS(cbs) : NULL);
}

status_t kmcl_server_channel_set_transaction_quota(struct kmcl_server_channel *ch, uint32_t quota)
{
    if (!ch || quota == 0 || quota > POOL_SIZE)
        return STATUS_INVALID_PARAMETER;
    enter(ch);
    /* A lower quota only stops reading. A higher one resumes reading stopped at the old one (nothing
     * else would: completions below the new quota do not count as freeing a slot, and the guest does
     * not signal a reader that stopped with its interrupt mask set). */
    if (ch->in_flight >= ch->quota && ch->in_flight < quota && ch->ep.state == KMCL_EP_ENABLED)
        ch->kick = true;
    ch->quota = quota;
    leave(ch);
    return STATUS_OK;
}

void *kmcl_server_channel_get_pointer_to_client_context(struct kmcl_server_channel *ch)
{
    return ch->ep.client_context;
}
void *kmcl_server_channel_context_of_size(struct kmcl_server_channel *ch, size_t bytes)
{
    return kmcl_ep_context(&ch->ep, bytes);
}
const char *kmcl_server_channel_name(const struct kmcl_server_channel *ch) { return ch->name; }
void *kmcl_server_channel_transport_context(struct kmcl_server_channel *ch) { return ch->t.ctx; }

uint32_t kmcl_server_channel_max_inband_payload(struct kmcl_server_channel *ch)
{
    enter(ch);
    uint32_t size = ch->ep.out.size;
    uint64_t room = ch->ep.state == KMCL_EP_ENABLED && size > 8 ? size - 8 : 0; /* 8 bytes stay free */
    if (room > KMCL_PKT_MAX_LEN + KMCL_PKT_TRAILER_SIZE)
        room = KMCL_PKT_MAX_LEN + KMCL_PKT_TRAILER_SIZE;
    uint64_t payload = room >= KMCL_PKT_DESC_SIZE + KMCL_PKT_TRAILER_SIZE
                           ? (room - KMCL_PKT_DESC_SIZE - KMCL_PKT_TRAILER_SIZE) & ~(uint64_t)7
                           : 0;
    if (payload > ch->ep.max_packet)
        payload = ch->ep.max_packet;
    leave(ch);
    return (uint32_t)payload;
}
uint64_t kmcl_server_incoming_trans_id(const struct kmcl_server_incoming *pkt) { return pkt->ep.trans_id; }
bool kmcl_server_incoming_completion_requested(const struct kmcl_server_incoming *pkt)
{
    return pkt->ep.completion_requested;
}
uint16_t kmcl_server_incoming_type(const struct kmcl_server_incoming *pkt) { return pkt->ep.type; }
struct kmcl_server_channel *kmcl_server_incoming_channel(const struct kmcl_server_incoming *pkt) { return pkt->ch; }
struct kmcl_ring *kmcl_server_channel_inbound_ring(struct kmcl_server_channel *ch) { return &ch->ep.in; }
void kmcl_server_channel_lock(struct kmcl_server_channel *ch) { enter(ch); }
void kmcl_server_channel_unlock(struct kmcl_server_channel *ch) { leave(ch); }

bool kmcl_server_channel_failed(struct kmcl_server_channel *ch)
{
    enter(ch);
    bool f = ch->failed;
    leave(ch);
    return f;
}

void kmcl_server_channel_fail(struct kmcl_server_channel *ch, const char *reason)
{
    enter(ch);
    if (!ch->failed) {
        ch->failed = true;
        cancel_all_locked(ch);
        logf_(ch, "%s: channel no longer served", reason ? reason : "failed by its VSP");
    }
    leave(ch);
}

bool kmcl_server_channel_signal(struct kmcl_server_channel *ch)
{
    enter(ch);
    bool ok = ch->ep.state == KMCL_EP_ENABLED && !ch->failed && ch->t.signal_guest;
    if (ok) {
        ch->st.signals++;
        ok = ch->t.signal_guest(ch->t.ctx);
    }
    leave(ch);
    return ok;
}

void kmcl_server_channel_get_stats(struct kmcl_server_channel *ch, struct kmcl_server_channel_stats *out)
{
    enter(ch);
    *out = ch->st;
    leave(ch);
}

/* ---- writing ---- */

/* A packet the core placed in the ring: counted; without wait, its routine is owed. */
static void packet_written(struct kmcl_server_channel *ch, struct kmcl_server_packet *pkt)
{
    ch->st.packets_out++;
    if (!pkt->out.wait)
        push_list(&ch->done_tail, pkt);
}

/* Writes queued items while they fit. */
static void flush_out_locked(struct kmcl_server_channel *ch, bool *did)
{
    if (ch->failed || !kmcl_ep_queued(&ch->ep))
        return;
    struct list done;
    list_init(&done);
    struct kmcl_ep_flushed n = { 0 };
    bool sig = false;
    status_t s = kmcl_ep_flush(&ch->ep, &done, &n, &sig);
    ch->st.queued_now -= n.packets + n.completions;
    ch->st.completions_out += n.completions;
    if (n.packets + n.completions)
        *did = true;
    ch->st.packets_out += n.packets;
    while (!list_empty(&done)) {
        struct kmcl_ep_out *o = container_of(list_pop_front(&done), struct kmcl_ep_out, link);
        if (o->type == KMCL_PKT_COMPLETION)
            incoming_done(ch, o);
        else
            push_list(&ch->done_tail, container_of(o, struct kmcl_server_packet, out));
    }
    if (s != STATUS_OK) /* the guest broke the ring: what is left is cancelled */
        fail_out(ch);
    if (sig)
        signal_guest(ch);
}

/* ---- packets ---- */

status_t kmcl_server_packet_allocate(struct kmcl_server_channel *ch, struct kmcl_server_packet **out)
{
    if (!ch || !out)
        return STATUS_INVALID_PARAMETER;
    struct kmcl_server_packet *p = calloc(1, sizeof *p);
    if (!p)
        return STATUS_NO_MEMORY;
    p->buf = malloc(ch->ep.max_packet);
    if (!p->buf) {
        free(p);
        return STATUS_NO_MEMORY;
    }
    p->buf_size = ch->ep.max_packet;
    p->ch = ch;
    list_init(&p->out.link);
    *out = p;
    return STATUS_OK;
}

void kmcl_server_packet_free(struct kmcl_server_packet *pkt)
{
    if (!pkt)
        return;
    free(pkt->ranges);
    free(pkt->buf);
    free(pkt);
}

void kmcl_server_packet_set_completion_routine(struct kmcl_server_packet *pkt, kmcl_server_completion_routine_fn fn)
{
    pkt->routine = fn;
}
void kmcl_server_packet_set_context(struct kmcl_server_packet *pkt, void *ctx) { pkt->ctx = ctx; }
void kmcl_server_packet_set_transaction_id(struct kmcl_server_packet *pkt, uint64_t id) { pkt->fixed_id = id; }
void *kmcl_server_packet_get_context(struct kmcl_server_packet *pkt) { return pkt->ctx; }

/* Whether a packet or completion of header + len bytes can ever be written into the host -> guest
 * ring (8 bytes stay free) and described by a descriptor's len8. */
static bool fits_ever(struct kmcl_server_channel *ch, uint32_t header, uint32_t len)
{
    uint64_t bytes = kmcl_ring_packet_bytes(header, len);
    return bytes <= (uint64_t)ch->ep.out.size - 8 && bytes - KMCL_PKT_TRAILER_SIZE <= KMCL_PKT_MAX_LEN;
}

static status_t send_common(struct kmcl_server_packet *pkt, const void *buf, uint32_t len, uint32_t flags)
{
    struct kmcl_server_channel *ch = pkt->ch;
    if (ch->ep.state != KMCL_EP_ENABLED || ch->failed)
        return STATUS_INVALID_STATE;
    uint32_t header = pkt->xfer ? 8u + 8u * pkt->range_count : 0;
    if (len > ch->ep.max_packet || (len && !buf) || pkt->busy || !fits_ever(ch, header, len))
        return STATUS_INVALID_PARAMETER;
    if (len > pkt->buf_size) { /* allocated before init_set_maximum_packet_size raised the maximum */
        uint8_t *b = malloc(ch->ep.max_packet);
        if (!b)
            return STATUS_NO_MEMORY;
        free(pkt->buf);
        pkt->buf = b;
        pkt->buf_size = ch->ep.max_packet;
    }
    struct kmcl_ep_out *o = &pkt->out;
    o->type = pkt->xfer ? KMCL_PKT_DATA_XFER_PAGES : KMCL_PKT_DATA_INBAND;
    o->wait = flags & KMCL_SERVER_SEND_WAIT_FOR_COMPLETION;
    o->trans_id = pkt->fixed_id;
    o->payload = buf;
    o->len = len;
    o->pageset_id = pkt->pageset_id;
    o->xfer = pkt->ranges;
    o->range_count = pkt->xfer ? pkt->range_count : 0;
    bool queued = false, sig = false;
    status_t s = kmcl_ep_send(&ch->ep, o, pkt->buf, &queued, &sig);
    if (s == STATUS_BUSY)
        return s;
    if (sig)
        signal_guest(ch);
    if (s != STATUS_OK) {
        fail_out(ch);
        return STATUS_INVALID_STATE;
    }
    pkt->busy = true;
    if (queued) {
        ch->st.queued++;
        ch->st.queued_now++;
    } else {
        packet_written(ch, pkt);
    }
    return STATUS_OK;
}

status_t kmcl_server_packet_send(struct kmcl_server_packet *pkt, const void *buf, uint32_t len, uint32_t flags)
{
    if (!pkt || (flags & ~KMCL_SERVER_SEND_WAIT_FOR_COMPLETION))
        return STATUS_INVALID_PARAMETER;
    enter(pkt->ch);
    status_t s = STATUS_INVALID_PARAMETER;
    if (!pkt->busy) { /* a queued packet's description must not change under it */
        pkt->xfer = false;
        pkt->range_count = 0;
        s = send_common(pkt, buf, len, flags);
    }
    leave(pkt->ch);
    return s;
}

status_t kmcl_server_packet_send_xfer(struct kmcl_server_packet *pkt, uint16_t pageset_id,
                                      const struct kmcl_xfer_range *ranges, uint32_t range_count, const void *buf,
                                      uint32_t len, uint32_t flags)
{
    if (!pkt || (flags & ~KMCL_SERVER_SEND_WAIT_FOR_COMPLETION) || !range_count || !ranges ||
        range_count > KMCL_PKT_MAX_LEN / 8)
        return STATUS_INVALID_PARAMETER;
    enter(pkt->ch);
    status_t s = STATUS_OK;
    if (pkt->busy) {
        s = STATUS_INVALID_PARAMETER;
    } else if (range_count > pkt->max_ranges) {
        struct kmcl_xfer_range *r = realloc(pkt->ranges, range_count * sizeof *r);
        if (!r)
            s = STATUS_NO_MEMORY;
        else {
            pkt->ranges = r;
            pkt->max_ranges = range_count;
        }
    }
    if (s == STATUS_OK) {
        memcpy(pkt->ranges, ranges, range_count * sizeof *ranges);
        pkt->xfer = true;
        pkt->pageset_id = pageset_id;
        pkt->range_count = range_count;
        s = send_common(pkt, buf, len, flags);
    }
    leave(pkt->ch);
    return s;
}

/* ---- incoming packets ---- */

void kmcl_server_packet_complete(struct kmcl_server_incoming *in, const void *buf, uint32_t len)
{
    struct kmcl_server_channel *ch = in->ch;
    enter(ch);
    if (!in->in_use) {
        logf_(ch, "VSP bug: a packet completed twice (trans_id %llu): ignored", (unsigned long long)in->ep.trans_id);
        leave(ch);
        return;
    }
    bool answer = in->ep.completion_requested && ch->ep.state == KMCL_EP_ENABLED && !ch->failed;
    if (answer && ((len && !buf) || !fits_ever(ch, 0, len))) {
        char why[96];
        snprintf(why, sizeof why, "VSP bug: a completion of %u bytes (trans_id %llu) can never be written", len,
                 (unsigned long long)in->ep.trans_id);
        kmcl_server_channel_fail(ch, why);
    }
    bool held = false; /* the context waits with its queued completion */
    if (answer && !ch->failed) {
        bool sig = false;
        status_t s = kmcl_ep_complete(&ch->ep, &in->ep, buf, len, &held, &sig);
        if (sig)
            signal_guest(ch);
        if (s == STATUS_NO_MEMORY)
            kmcl_server_channel_fail(ch, "out of memory for a completion");
        else if (s != STATUS_OK)
            fail_out(ch);
        else if (held) {
            ch->st.queued++;
            ch->st.queued_now++;
        } else {
            ch->st.completions_out++;
        }
    }
    bool was_stalled = ch->in_flight >= ch->quota;
    in->in_use = false;
    ch->in_flight--;
    if (!held)
        kmcl_ep_incoming_put(&ch->ep, &in->ep);
    /* A slot came back after reading stopped at the quota: go on reading (the outermost call). */
    if (was_stalled && ch->in_flight < ch->quota && ch->ep.state == KMCL_EP_ENABLED)
        ch->kick = true;
    leave(ch);
}

void kmcl_server_packet_fail(struct kmcl_server_incoming *in, status_t status)
{
    uint32_t s = (uint32_t)status;
    kmcl_server_packet_complete(in, &s, sizeof s);
}

status_t kmcl_server_packet_get_external_data(struct kmcl_server_incoming *in, struct kmcl_pkt_gpa *gpa,
                                              struct kmcl_pkt_xfer *xfer)
{
    return kmcl_ep_get_external_data(&in->ep, gpa, xfer);
}

status_t kmcl_server_gpa_for_each(struct kmcl_server_channel *ch, const struct kmcl_pkt_gpa *g, uint64_t limit,
                                  bool (*fn)(void *arg, const uint8_t *p, uint32_t n), void *arg)
{
    if (!ch->t.guest_memory)
        return STATUS_NOT_SUPPORTED;
    uint64_t total = 0;
    for (uint32_t i = 0; i < g->range_count && i < g->max_ranges; i++) {
        const struct kmcl_gpa_range *rg = &g->ranges[i];
        uint32_t off = rg->byte_offset, left = rg->byte_count;
        for (uint32_t j = 0; j < rg->pfn_count && left && total < limit; j++) {
            if (rg->pfn_first + j >= g->max_pfns)
                return STATUS_BAD_DATA;
            uint64_t pfn = g->pfns[rg->pfn_first + j];
            uint32_t n = KMCL_PAGE_SIZE - off < left ? KMCL_PAGE_SIZE - off : left;
            if (n > limit - total)
                n = (uint32_t)(limit - total);
            if (pfn > UINT64_MAX / KMCL_PAGE_SIZE)
                return STATUS_BAD_DATA;
            const uint8_t *p = ch->t.guest_memory(ch->t.ctx, pfn * KMCL_PAGE_SIZE + off, n);
            if (!p)
                return STATUS_BAD_DATA;
            if (!fn(arg, p, n))
                return STATUS_CANCELLED;
            total += n;
            left -= n;
            off = 0;
        }
    }
    return STATUS_OK;
}

/* A completion from the guest. */
static bool take_completion(struct kmcl_server_channel *ch, const struct kmcl_ring_packet *p)
{
    struct kmcl_ep_out *o = NULL;
    struct kmcl_pkt_inband c;
    status_t s = kmcl_ep_take_completion(&ch->ep, p, &o, &c);
    if (s == STATUS_INVALID_PARAMETER)
        return true; /* not a completion: not reached (the caller checked the type) */
    if (s != STATUS_OK) {
        fail_in(ch);
        return false;
    }
    ch->st.completions_in++;
    struct kmcl_server_packet *pkt = container_of(o, struct kmcl_server_packet, out);
    pkt->busy = false;
    if (pkt->routine)
        pkt->routine(pkt, STATUS_OK, c.payload, c.payload_len);
    return true;
}

status_t kmcl_server_channel_complete_transaction(struct kmcl_server_channel *ch, const struct kmcl_ring_packet *p)
{
    if (!p || p->desc.type != KMCL_PKT_COMPLETION)
        return STATUS_INVALID_PARAMETER;
    enter(ch);
    bool ok = ch->ep.state == KMCL_EP_ENABLED && !ch->failed && take_completion(ch, p);
    leave(ch);
    return ok ? STATUS_OK : STATUS_BAD_DATA;
}

/* One packet for process_packet (the lock held, the quota checked). */
static void deliver(struct kmcl_server_channel *ch, const struct kmcl_ring_packet *p)
{
    struct kmcl_server_incoming *in = container_of(kmcl_ep_incoming_get(&ch->ep), struct kmcl_server_incoming, ep);
    ch->in_flight++;
    in->in_use = true;
    kmcl_ep_incoming_start(&in->ep, p);
    ch->st.packets_in++;
    ch->batch++;
    ((kmcl_server_process_packet_fn)ch->ep.process_packet)(ch, in, kmcl_pkt_payload(p), kmcl_pkt_payload_len(p),
                                                           kmcl_ep_process_flags(p->desc.type));
    in->ep.view = NULL;
}

/* The executor's reading part (lock held). */
static void drain_locked(struct kmcl_server_channel *ch, bool *did)
{
    /* Not from inside itself (a callback calling interrupt): the packet being delivered is not
     * consumed yet and would be delivered again. The running drain looks again anyway. */
    if (ch->ep.state != KMCL_EP_ENABLED || ch->failed || ch->executing)
        return;
    ch->executing = true;
    if (ch->ep.flags & KMCL_SERVER_FLAG_SUPPRESS_QUEUE_MANAGEMENT) {
        if (ch->ep.queue && !ch->paused) {
            *did = true;
            ((kmcl_server_queue_fn)ch->ep.queue)(ch);
        }
        ch->executing = false;
        return;
    }
    bool sig_writer = false;
    uint32_t n = 0;
    kmcl_ring_begin_read(&ch->ep.in);
    for (;;) {
        if (ch->paused || ch->failed || ch->ep.state != KMCL_EP_ENABLED)
            break;
        struct kmcl_ring_packet p;
        enum kmcl_ep_next next = kmcl_ep_next(&ch->ep, &p);
        /* The guest's completions are always read (they free the host's packets, and the guest
         * may be waiting for ring space to write more of them); a request only when nothing is
         * queued for the guest (answers first) and the quota allows. */
        if (next == KMCL_EP_DATA) {
            if (kmcl_ep_queued(&ch->ep)) {
                ch->st.backlog_stalls++;
                break;
            }
            if (ch->in_flight >= ch->quota || !kmcl_ep_incoming_available(&ch->ep)) {
                ch->st.quota_stalls++;
                break;
            }
        }
        if (next == KMCL_EP_EMPTY) {
            if (ch->batch) {
                ch->st.processing_complete_calls++;
                uint32_t b = ch->batch;
                ch->batch = 0;
                if (ch->ep.processing_complete)
                    ((kmcl_server_processing_complete_fn)ch->ep.processing_complete)(ch, b);
                continue; /* the callback may have sent or paused; look again */
            }
            bool sw = false;
            bool again = kmcl_ring_end_read(&ch->ep.in, &sw);
            sig_writer |= sw;
            if (!again)
                break;
            kmcl_ring_begin_read(&ch->ep.in);
            continue;
        }
        if (next == KMCL_EP_FAILED) {
            fail_in(ch);
            break;
        }
        *did = true;
        if (next == KMCL_EP_COMPLETION) {
            if (!take_completion(ch, &p))
                break;
        } else {
            deliver(ch, &p);
        }
        if (ch->failed)
            break;
        kmcl_ring_consume(&ch->ep.in);
        if (++n % 16 == 0)
            sig_writer |= kmcl_ring_publish_read(&ch->ep.in);
        if (n % KMCL_SERVER_DRAIN_BUDGET == 0)
            flush_out_locked(ch, did);
        /* Routines of what process_packet sent run now, not when the executor's call returns: a
         * drain lasts as long as the guest keeps writing, and a VSP that recycles its packets in
         * their routines would otherwise allocate one per request meanwhile. */
        if (ch->depth == 1)
            run_done(ch);
    }
    if (!ch->failed)
        sig_writer |= kmcl_ring_publish_read(&ch->ep.in);
    if (sig_writer)
        signal_guest(ch);
    ch->executing = false;
}

bool kmcl_server_channel_interrupt(struct kmcl_server_channel *ch)
{
    enter(ch);
    bool did = false;
    if (ch->ep.state == KMCL_EP_ENABLED && !ch->failed) {
        ch->st.interrupts++;
        flush_out_locked(ch, &did);
        drain_locked(ch, &did);
    }
    bool any = did || ch->done_head;
    leave(ch);
    return any;
}

/* ---- enable, disable, pause, start ---- */

status_t kmcl_server_channel_enable(struct kmcl_server_channel *ch, const struct kmcl_server_transport *t,
                                    void *in_ring, uint32_t in_bytes, void *out_ring, uint32_t out_bytes)
{
    if (!ch || !t)
        return STATUS_INVALID_PARAMETER;
    enter(ch);
    if (kmcl_ep_enable_check(&ch->ep) != STATUS_OK) {
        leave(ch);
        return STATUS_INVALID_PARAMETER;
    }
    ch->t = *t;
    ch->ep.state = KMCL_EP_ENABLED;
    /* The guest initialised both rings before OPENCHANNEL: take over the indices found (checked). */
    if (kmcl_ring_attach_pages(&ch->ep.in, KMCL_RING_READER, in_ring, in_bytes, 0) != STATUS_OK) {
        fail_in(ch);
    } else if (kmcl_ring_attach_pages(&ch->ep.out, KMCL_RING_WRITER, out_ring, out_bytes, 0) != STATUS_OK) {
        fail_out(ch);
    } else if (kmcl_ep_alloc_bounce(&ch->ep) != STATUS_OK) {
        struct kmcl_ring_failure why = { "host out of memory for the bounce buffer", 0, ch->ep.bounce_size, 0 };
        kmcl_ring_fail(&ch->ep.in, &why);
        fail_in(ch);
    }
    state_cb(ch, KMCL_EP_OPENED);
    state_cb(ch, KMCL_EP_STARTED);
    state_cb(ch, KMCL_EP_POST_STARTED);
    leave(ch);
    return STATUS_OK;
}

void kmcl_server_channel_pause(struct kmcl_server_channel *ch)
{
    enter(ch);
    ch->paused = true;
    leave(ch);
}

void kmcl_server_channel_start(struct kmcl_server_channel *ch)
{
    enter(ch);
    if (ch->paused && ch->ep.state == KMCL_EP_ENABLED)
        ch->kick = true; /* read on when the outermost call leaves (at once, from outside) */
    ch->paused = false;
    leave(ch);
}

void kmcl_server_channel_disable(struct kmcl_server_channel *ch)
{
    if (!ch)
        return;
    enter(ch);
    if (ch->ep.state != KMCL_EP_ENABLED) {
        leave(ch);
        return;
    }
    state_cb(ch, KMCL_EP_SUSPEND);
    ch->ep.state = KMCL_EP_DISABLED;
    cancel_all_locked(ch);
    run_cancelled(ch); /* their routines run here, before closed */
    /* Incoming packets not completed yet: their completions will not be written (nothing to write
     * into); complete still retires them. */
    free(ch->ep.bounce);
    ch->ep.bounce = NULL;
    state_cb(ch, KMCL_EP_CLOSED);
    leave(ch);
}

void kmcl_server_channel_cleanup(struct kmcl_server_channel *ch)
{
    if (!ch)
        return;
    kmcl_server_channel_disable(ch);
    while (ch->done_head) { /* routines not yet run cannot be: leave() ran them */
        struct kmcl_server_packet *p = ch->done_head;
        ch->done_head = p->done_next;
        p->busy = false;
    }
    pthread_mutex_destroy(&ch->lock);
    kmcl_ep_destroy(&ch->ep);
    free(ch);
}
