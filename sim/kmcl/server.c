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

#include "kmcl/core/xact.h"

enum state { INITIALIZING, ENABLED, DISABLED };

#define DEFAULT_MAX_PACKET 65536u
#define XACT_CAPACITY 1024u

struct kmcl_server_incoming {
    struct kmcl_server_incoming *next; /* free list */
    struct kmcl_server_channel *ch;
    uint64_t trans_id;
    uint16_t type;
    bool completion_requested;
    bool in_use;
    const struct kmcl_ring_packet *view; /* during process_packet */
};

/* What waits for room in the host -> guest ring. */
struct out_item {
    struct out_item *next;
    struct kmcl_server_packet *pkt; /* a packet (its buf holds the payload), or NULL: a completion */
    uint64_t trans_id;              /* completion */
    uint32_t len;                   /* completion payload bytes */
    uint8_t data[];                 /* completion payload */
};

struct kmcl_server_packet {
    struct kmcl_server_channel *ch;
    struct kmcl_server_packet *done_next;
    kmcl_server_completion_routine_fn routine;
    void *ctx;
    uint32_t flags, len;
    uint64_t trans_id;
    uint64_t fixed_id;              /* set_transaction_id */
    bool busy;                      /* sent, routine not yet run */
    bool queued;                    /* in the out queue, not yet in the ring */
    bool xfer;
    uint16_t pageset_id;
    uint32_t range_count;
    struct kmcl_xfer_range *ranges; /* copies while queued (xfer) */
    uint32_t max_ranges;
    struct out_item item;           /* its place in the out queue (no allocation to queue a packet) */
    uint8_t *buf;                   /* buf_size bytes: the payload while queued */
    uint32_t buf_size;              /* max_packet when allocated (init_set may raise it later) */
};

struct kmcl_server_channel {
    pthread_mutex_t lock;           /* recursive */
    enum state state;
    char name[48];
    uint32_t flags, max_packet, quota, in_flight;
    bool paused, failed;
    bool kick;                      /* read again when the outermost call leaves */
    bool executing;                 /* drain_locked is on the stack: it must not nest */
    unsigned depth;                 /* nesting of API calls on the lock's owner (run_done at 0) */
    kmcl_server_process_packet_fn process_packet;
    kmcl_server_processing_complete_fn processing_complete;
    kmcl_server_queue_fn queue_cb;
    struct kmcl_server_state_callbacks states;
    void *client_context;
    struct kmcl_server_transport t;
    struct kmcl_ring in, out;
    uint8_t *bounce;
    uint32_t bounce_size, batch;
    struct out_item *out_head, **out_tail;
    struct kmcl_server_packet *done_head, **done_tail;
    struct kmcl_server_packet *cancel_head, **cancel_tail; /* routines owed STATUS_CANCELLED */
    struct kmcl_server_incoming *free_incoming;
    struct kmcl_server_incoming pool[KMCL_SERVER_DEFAULT_QUOTA * 4];
    struct kmcl_xact_table xacts;
    struct kmcl_xact_slot xact_slots[XACT_CAPACITY];
    struct kmcl_server_channel_stats st;
};

#define POOL_SIZE (KMCL_SERVER_DEFAULT_QUOTA * 4u)

/* ---- locking and deferred routines ---- */

static void enter(struct kmcl_server_channel *ch)
{
    pthread_mutex_lock(&ch->lock);
    ch->depth++;
}

/* Leaves a call: the outermost one runs the routines of packets that reached the ring. */
static void flush_out_locked(struct kmcl_server_channel *ch, bool *did);
static void drain_locked(struct kmcl_server_channel *ch, bool *did);
static void run_cancelled(struct kmcl_server_channel *ch);

/* Runs the routines of packets that reached the ring, in order; only at depth 1 (the outermost
 * call, or the executor between packets), so that a routine sending the next packet of a stream
 * adds to the list instead of recursing. */
static void run_done(struct kmcl_server_channel *ch)
{
    while (ch->done_head) {
        struct kmcl_server_packet *p = ch->done_head;
        ch->done_head = p->done_next;
        if (!ch->done_head)
            ch->done_tail = &ch->done_head;
        p->busy = false;
        if (p->routine)
            p->routine(p, STATUS_OK, NULL, 0);
    }
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

static void push_done(struct kmcl_server_channel *ch, struct kmcl_server_packet *p)
{
    p->done_next = NULL;
    *ch->done_tail = p;
    ch->done_tail = &p->done_next;
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

/* Everything queued for the guest and every packet waiting for a completion will never go out or
 * complete: moved to the cancelled list, whose routines get STATUS_CANCELLED (run_cancelled, or
 * the outermost call's leave). */
static void cancel_all_locked(struct kmcl_server_channel *ch)
{
    while (ch->out_head) {
        struct out_item *it = ch->out_head;
        ch->out_head = it->next;
        ch->st.queued_now--;
        if (it->pkt) {
            it->pkt->queued = false;
            if (it->pkt->flags & KMCL_SERVER_SEND_WAIT_FOR_COMPLETION) {
                void *unused;
                status_t ignored = kmcl_xact_complete(&ch->xacts, it->pkt->trans_id, &unused);
                (void)ignored;
            }
            it->pkt->done_next = NULL;
            *ch->cancel_tail = it->pkt;
            ch->cancel_tail = &it->pkt->done_next;
        } else {
            free(it);
        }
    }
    ch->out_tail = &ch->out_head;
    uint64_t id;
    void *ctx;
    while (kmcl_xact_take_any(&ch->xacts, &id, &ctx) == STATUS_OK) {
        struct kmcl_server_packet *p = ctx;
        p->done_next = NULL;
        *ch->cancel_tail = p;
        ch->cancel_tail = &p->done_next;
    }
}

static void run_cancelled(struct kmcl_server_channel *ch)
{
    while (ch->cancel_head) {
        struct kmcl_server_packet *p = ch->cancel_head;
        ch->cancel_head = p->done_next;
        if (!ch->cancel_head)
            ch->cancel_tail = &ch->cancel_head;
        p->busy = false;
        ch->st.cancelled++;
        if (p->routine)
            p->routine(p, STATUS_CANCELLED, NULL, 0);
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
    fail(ch, "guest -> host", kmcl_ring_failure(&ch->in));
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
    if (e || kmcl_xact_init(&ch->xacts, ch->xact_slots, XACT_CAPACITY) != STATUS_OK) {
        if (!e)
            pthread_mutex_destroy(&ch->lock);
        free(ch);
        return STATUS_NO_MEMORY;
    }
    snprintf(ch->name, sizeof ch->name, "%s", name ? name : "channel");
    ch->max_packet = DEFAULT_MAX_PACKET;
    ch->quota = KMCL_SERVER_DEFAULT_QUOTA;
    ch->out_tail = &ch->out_head;
    ch->done_tail = &ch->done_head;
    ch->cancel_tail = &ch->cancel_head;
    for (uint32_t i = POOL_SIZE; i-- > 0;) {
        ch->pool[i].ch = ch;
        ch->pool[i].next = ch->free_incoming;
        ch->free_incoming = &ch->pool[i];
    }
    *out = ch;
    return STATUS_OK;
}

#define INIT_ONLY(ch)                                                                                          \
    do {                                                                                                       \
        if (!(ch) || (ch)->state != INITIALIZING)                                                              \
            return STATUS_INVALID_PARAMETER;                                                                   \
    } while (0)

status_t kmcl_server_channel_init_set_client_context_size(struct kmcl_server_channel *ch, size_t bytes)
{
    INIT_ONLY(ch);
    void *p = bytes ? calloc(1, bytes) : NULL;
    if (bytes && !p)
        return STATUS_NO_MEMORY;
    free(ch->client_context);
    ch->client_context = p;
    return STATUS_OK;
}

status_t kmcl_server_channel_init_set_maximum_packet_size(struct kmcl_server_channel *ch, uint32_t bytes)
{
    INIT_ONLY(ch);
    if (bytes < 8 || bytes > KMCL_PKT_MAX_LEN)
        return STATUS_INVALID_PARAMETER;
    ch->max_packet = bytes;
    return STATUS_OK;
}

status_t kmcl_server_channel_init_set_flags(struct kmcl_server_channel *ch, uint32_t flags)
{
    INIT_ONLY(ch);
    if (flags & ~KMCL_SERVER_FLAG_SUPPRESS_QUEUE_MANAGEMENT)
        return STATUS_INVALID_PARAMETER;
    ch->flags = flags;
    return STATUS_OK;
}

status_t kmcl_server_channel_init_set_process_packet_callbacks(struct kmcl_server_channel *ch,
                                                                kmcl_server_process_packet_fn process_packet,
                                                                kmcl_server_processing_complete_fn processing_complete)
{
    INIT_ONLY(ch);
    if (!process_packet)
        return STATUS_INVALID_PARAMETER;
    ch->process_packet = process_packet;
    ch->processing_complete = processing_complete;
    return STATUS_OK;
}

status_t kmcl_server_channel_init_set_queue_callback(struct kmcl_server_channel *ch, kmcl_server_queue_fn fn)
{
    INIT_ONLY(ch);
    if (!fn)
        return STATUS_INVALID_PARAMETER;
    ch->queue_cb = fn;
    return STATUS_OK;
}

status_t kmcl_server_channel_init_set_state_change_callbacks(struct kmcl_server_channel *ch,
                                                              const struct kmcl_server_state_callbacks *cbs)
{
    INIT_ONLY(ch);
    if (!cbs)
        return STATUS_INVALID_PARAMETER;
    ch->states = *cbs;
    return STATUS_OK;
}

status_t kmcl_server_channel_set_transaction_quota(struct kmcl_server_channel *ch, uint32_t quota)
{
    if (!ch || quota == 0 || quota > POOL_SIZE)
        return STATUS_INVALID_PARAMETER;
    enter(ch);
    /* A lower quota only stops reading. A higher one resumes reading stopped at the old one (nothing
     * else would: completions below the new quota do not count as freeing a slot, and the guest does
     * not signal a reader that stopped with its interrupt mask set). */
    if (ch->in_flight >= ch->quota && ch->in_flight < quota && ch->state == ENABLED)
        ch->kick = true;
    ch->quota = quota;
    leave(ch);
    return STATUS_OK;
}

void *kmcl_server_channel_get_pointer_to_client_context(struct kmcl_server_channel *ch) { return ch->client_context; }
const char *kmcl_server_channel_name(const struct kmcl_server_channel *ch) { return ch->name; }
void *kmcl_server_channel_transport_context(struct kmcl_server_channel *ch) { return ch->t.ctx; }

uint32_t kmcl_server_channel_max_inband_payload(struct kmcl_server_channel *ch)
{
    enter(ch);
    uint64_t room = ch->state == ENABLED && ch->out.size > 8 ? ch->out.size - 8 : 0; /* 8 bytes stay free */
    if (room > KMCL_PKT_MAX_LEN + KMCL_PKT_TRAILER_SIZE)
        room = KMCL_PKT_MAX_LEN + KMCL_PKT_TRAILER_SIZE;
    uint64_t payload = room >= KMCL_PKT_DESC_SIZE + KMCL_PKT_TRAILER_SIZE
                           ? (room - KMCL_PKT_DESC_SIZE - KMCL_PKT_TRAILER_SIZE) & ~(uint64_t)7
                           : 0;
    if (payload > ch->max_packet)
        payload = ch->max_packet;
    leave(ch);
    return (uint32_t)payload;
}
uint64_t kmcl_server_incoming_trans_id(const struct kmcl_server_incoming *pkt) { return pkt->trans_id; }
bool kmcl_server_incoming_completion_requested(const struct kmcl_server_incoming *pkt) { return pkt->completion_requested; }
uint16_t kmcl_server_incoming_type(const struct kmcl_server_incoming *pkt) { return pkt->type; }
struct kmcl_server_channel *kmcl_server_incoming_channel(const struct kmcl_server_incoming *pkt) { return pkt->ch; }
struct kmcl_ring *kmcl_server_channel_inbound_ring(struct kmcl_server_channel *ch) { return &ch->in; }
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
    bool ok = ch->state == ENABLED && !ch->failed && ch->t.signal_guest;
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

/* Writes one item; STATUS_NO_SPACE leaves it for later, STATUS_INVALID_PARAMETER: can never fit. */
static status_t write_item(struct kmcl_server_channel *ch, struct kmcl_server_packet *pkt, uint64_t trans_id,
                           const void *buf, uint32_t len, bool *sig)
{
    struct kmcl_iov iov = { buf, len };
    bool signal = false; /* the ring sets its flag per write; *sig accumulates over several */
    status_t s;
    if (!pkt) {
        s = kmcl_pkt_send_completion(&ch->out, trans_id, &iov, 1, 0, &signal);
    } else {
        uint16_t f = (pkt->flags & KMCL_SERVER_SEND_WAIT_FOR_COMPLETION) ? KMCL_PKT_FLAG_COMPLETION_REQUESTED : 0;
        if (pkt->xfer)
            s = kmcl_pkt_send_xfer(&ch->out, pkt->trans_id, f, pkt->pageset_id, 0, pkt->ranges, pkt->range_count,
                                   &iov, 1, 0, &signal);
        else
            s = kmcl_pkt_send_inband(&ch->out, pkt->trans_id, f, &iov, 1, 0, &signal);
    }
    *sig |= signal;
    return s;
}

/* The outcome of a write that was not STATUS_NO_SPACE: counted, routine queued, or the channel failed. */
static void written(struct kmcl_server_channel *ch, struct kmcl_server_packet *pkt, status_t s)
{
    if (s == STATUS_OK) {
        if (pkt)
            ch->st.packets_out++;
        else
            ch->st.completions_out++;
        if (pkt && !(pkt->flags & KMCL_SERVER_SEND_WAIT_FOR_COMPLETION))
            push_done(ch, pkt);
        return;
    }
    fail(ch, "host -> guest", kmcl_ring_failure(&ch->out));
}

/* Writes queued items while they fit. */
static void flush_out_locked(struct kmcl_server_channel *ch, bool *did)
{
    bool sig = false;
    while (ch->out_head && !ch->failed) {
        struct out_item *it = ch->out_head;
        status_t s = it->pkt ? write_item(ch, it->pkt, 0, it->pkt->buf, it->pkt->len, &sig)
                             : write_item(ch, NULL, it->trans_id, it->data, it->len, &sig);
        if (s == STATUS_NO_SPACE)
            break;
        if (s != STATUS_OK) { /* the guest broke the ring: the item is cancelled with the rest */
            fail(ch, "host -> guest", kmcl_ring_failure(&ch->out));
            break;
        }
        ch->out_head = it->next;
        if (!ch->out_head)
            ch->out_tail = &ch->out_head;
        ch->st.queued_now--;
        *did = true;
        if (it->pkt)
            it->pkt->queued = false;
        written(ch, it->pkt, s);
        if (!it->pkt)
            free(it);
    }
    if (sig)
        signal_guest(ch);
}

static void enqueue(struct kmcl_server_channel *ch, struct out_item *it)
{
    if (it->pkt)
        it->pkt->queued = true;
    it->next = NULL;
    *ch->out_tail = it;
    ch->out_tail = &it->next;
    ch->st.queued++;
    ch->st.queued_now++;
}

/* ---- packets ---- */

status_t kmcl_server_packet_allocate(struct kmcl_server_channel *ch, struct kmcl_server_packet **out)
{
    if (!ch || !out)
        return STATUS_INVALID_PARAMETER;
    struct kmcl_server_packet *p = calloc(1, sizeof *p);
    if (!p)
        return STATUS_NO_MEMORY;
    p->buf = malloc(ch->max_packet);
    if (!p->buf) {
        free(p);
        return STATUS_NO_MEMORY;
    }
    p->buf_size = ch->max_packet;
    p->ch = ch;
    p->item.pkt = p;
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

static status_t send_common(struct kmcl_server_packet *pkt, const void *buf, uint32_t len, uint32_t flags)
{
    struct kmcl_server_channel *ch = pkt->ch;
    if (ch->state != ENABLED || ch->failed)
        return STATUS_INVALID_STATE;
    uint32_t header = pkt->xfer ? 8u + 8u * pkt->range_count : 0;
    if (len > ch->max_packet || (len && !buf) || pkt->busy ||
        kmcl_ring_packet_bytes(header, len) > (uint64_t)ch->out.size - 8 ||
        kmcl_ring_packet_bytes(header, len) - KMCL_PKT_TRAILER_SIZE > KMCL_PKT_MAX_LEN)
        return STATUS_INVALID_PARAMETER;
    if (len > pkt->buf_size) { /* allocated before init_set_maximum_packet_size raised the maximum */
        uint8_t *b = malloc(ch->max_packet);
        if (!b)
            return STATUS_NO_MEMORY;
        free(pkt->buf);
        pkt->buf = b;
        pkt->buf_size = ch->max_packet;
    }
    pkt->flags = flags;
    pkt->len = len;
    pkt->trans_id = pkt->fixed_id;
    if ((flags & KMCL_SERVER_SEND_WAIT_FOR_COMPLETION) && kmcl_xact_alloc(&ch->xacts, pkt, &pkt->trans_id) != STATUS_OK)
        return STATUS_BUSY;
    pkt->busy = true;
    bool sig = false;
    status_t s = ch->out_head ? STATUS_NO_SPACE : write_item(ch, pkt, 0, buf, len, &sig);
    if (sig)
        signal_guest(ch);
    if (s == STATUS_NO_SPACE) {
        if (len) /* buf may be NULL for an empty payload */
            memcpy(pkt->buf, buf, len);
        enqueue(ch, &pkt->item);
        return STATUS_OK;
    }
    if (s != STATUS_OK) {
        void *unused;
        if (flags & KMCL_SERVER_SEND_WAIT_FOR_COMPLETION) {
            status_t ignored = kmcl_xact_complete(&ch->xacts, pkt->trans_id, &unused);
            (void)ignored;
        }
        pkt->busy = false;
        written(ch, pkt, s);
        return STATUS_INVALID_STATE;
    }
    written(ch, pkt, s);
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

static void retire(struct kmcl_server_channel *ch, struct kmcl_server_incoming *in)
{
    in->in_use = false;
    in->view = NULL;
    in->next = ch->free_incoming;
    ch->free_incoming = in;
    ch->in_flight--;
}

void kmcl_server_packet_complete(struct kmcl_server_incoming *in, const void *buf, uint32_t len)
{
    struct kmcl_server_channel *ch = in->ch;
    enter(ch);
    if (!in->in_use) {
        logf_(ch, "VSP bug: a packet completed twice (trans_id %llu): ignored", (unsigned long long)in->trans_id);
        leave(ch);
        return;
    }
    if (in->completion_requested && ch->state == ENABLED && !ch->failed &&
        ((len && !buf) || kmcl_ring_packet_bytes(0, len) > (uint64_t)ch->out.size - 8 ||
         kmcl_ring_packet_bytes(0, len) - KMCL_PKT_TRAILER_SIZE > KMCL_PKT_MAX_LEN)) {
        char why[96];
        snprintf(why, sizeof why, "VSP bug: a completion of %u bytes (trans_id %llu) can never be written", len,
                 (unsigned long long)in->trans_id);
        kmcl_server_channel_fail(ch, why);
    }
    if (in->completion_requested && ch->state == ENABLED && !ch->failed) {
        bool sig = false;
        status_t s = ch->out_head ? STATUS_NO_SPACE : write_item(ch, NULL, in->trans_id, buf, len, &sig);
        if (sig)
            signal_guest(ch);
        if (s == STATUS_NO_SPACE) {
            struct out_item *it = malloc(sizeof *it + len);
            if (!it) {
                kmcl_server_channel_fail(ch, "out of memory for a completion");
            } else {
                it->pkt = NULL;
                it->trans_id = in->trans_id;
                it->len = len;
                if (len)
                    memcpy(it->data, buf, len);
                enqueue(ch, it);
            }
        } else {
            written(ch, NULL, s);
        }
    }
    bool was_stalled = ch->in_flight >= ch->quota;
    retire(ch, in);
    /* A slot came back after reading stopped at the quota: go on reading (the outermost call). */
    if (was_stalled && ch->in_flight < ch->quota && ch->state == ENABLED)
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
    const struct kmcl_ring_packet *v = in->view;
    if (!v)
        return STATUS_INVALID_STATE;
    struct kmcl_ring_failure why;
    if (v->desc.type == KMCL_PKT_DATA_GPA_DIRECT && gpa)
        return kmcl_pkt_parse_gpa(v, gpa, &why);
    if (v->desc.type == KMCL_PKT_DATA_XFER_PAGES && xfer)
        return kmcl_pkt_parse_xfer(v, 0, xfer, &why);
    return STATUS_NOT_FOUND;
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
    struct kmcl_pkt_inband c;
    if (kmcl_pkt_parse_completion(p, &c) != STATUS_OK)
        return true;
    void *ctx = NULL;
    if (kmcl_xact_lookup(&ch->xacts, c.trans_id, &ctx) != STATUS_OK) {
        struct kmcl_ring_failure f = { "completion for a transaction id never sent or already completed",
                                       p->ring_offset, c.trans_id, 0 };
        kmcl_ring_fail(&ch->in, &f);
        fail_in(ch);
        return false;
    }
    if (((struct kmcl_server_packet *)ctx)->queued) {
        /* Ids are predictable (kmcl/core/xact.h): a guest may complete a packet still waiting for room.
         * Taking it would let the VSP send it again while it is linked in the out queue. */
        struct kmcl_ring_failure f = { "completion for a packet not yet written to the ring", p->ring_offset,
                                       c.trans_id, 0 };
        kmcl_ring_fail(&ch->in, &f);
        fail_in(ch);
        return false;
    }
    status_t found = kmcl_xact_complete(&ch->xacts, c.trans_id, &ctx);
    (void)found;
    ch->st.completions_in++;
    struct kmcl_server_packet *pkt = ctx;
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
    bool ok = ch->state == ENABLED && !ch->failed && take_completion(ch, p);
    leave(ch);
    return ok ? STATUS_OK : STATUS_BAD_DATA;
}

/* The executor's reading part (lock held). */
static void drain_locked(struct kmcl_server_channel *ch, bool *did)
{
    /* Not from inside itself (a callback calling interrupt): the packet being delivered is not
     * consumed yet and would be delivered again. The running drain looks again anyway. */
    if (ch->state != ENABLED || ch->failed || ch->executing)
        return;
    ch->executing = true;
    if (ch->flags & KMCL_SERVER_FLAG_SUPPRESS_QUEUE_MANAGEMENT) {
        if (ch->queue_cb && !ch->paused) {
            *did = true;
            ch->queue_cb(ch);
        }
        ch->executing = false;
        return;
    }
    bool sig_writer = false;
    uint32_t n = 0;
    kmcl_ring_begin_read(&ch->in);
    for (;;) {
        if (ch->paused || ch->failed || ch->state != ENABLED)
            break;
        struct kmcl_ring_packet p;
        status_t s = kmcl_ring_peek(&ch->in, &p, ch->bounce, ch->bounce_size);
        /* The guest's completions are always read (they free the host's packets, and the guest
         * may be waiting for ring space to write more of them); a request only when nothing is
         * queued for the guest (answers first) and the quota allows. */
        if (s == STATUS_OK && p.desc.type != KMCL_PKT_COMPLETION) {
            if (ch->out_head) {
                ch->st.backlog_stalls++;
                break;
            }
            if (ch->in_flight >= ch->quota) {
                ch->st.quota_stalls++;
                break;
            }
        }
        if (s == STATUS_NOT_FOUND) {
            if (ch->batch) {
                ch->st.processing_complete_calls++;
                uint32_t b = ch->batch;
                ch->batch = 0;
                if (ch->processing_complete)
                    ch->processing_complete(ch, b);
                continue; /* the callback may have sent or paused; look again */
            }
            bool sw = false;
            bool again = kmcl_ring_end_read(&ch->in, &sw);
            sig_writer |= sw;
            if (!again)
                break;
            kmcl_ring_begin_read(&ch->in);
            continue;
        }
        if (s != STATUS_OK) {
            fail_in(ch);
            break;
        }
        *did = true;
        if (p.desc.type == KMCL_PKT_COMPLETION) {
            if (!take_completion(ch, &p))
                break;
        } else if (p.desc.type == KMCL_PKT_DATA_INBAND || p.desc.type == KMCL_PKT_DATA_GPA_DIRECT ||
                   p.desc.type == KMCL_PKT_DATA_XFER_PAGES) {
            struct kmcl_server_incoming *in = ch->free_incoming;
            ch->free_incoming = in->next;
            ch->in_flight++;
            in->in_use = true;
            in->trans_id = p.desc.trans_id;
            in->type = p.desc.type;
            in->completion_requested = p.desc.flags & KMCL_PKT_FLAG_COMPLETION_REQUESTED;
            in->view = &p;
            ch->st.packets_in++;
            ch->batch++;
            uint32_t flags = p.desc.type != KMCL_PKT_DATA_INBAND ? KMCL_SERVER_PROCESS_EXTERNAL_DATA : 0;
            ch->process_packet(ch, in, kmcl_pkt_payload(&p), kmcl_pkt_payload_len(&p), flags);
            in->view = NULL;
        } else {
            struct kmcl_ring_failure f = { "packet type a server does not take", p.ring_offset, p.desc.type, 0 };
            kmcl_ring_fail(&ch->in, &f);
            fail_in(ch);
            break;
        }
        if (ch->failed)
            break;
        kmcl_ring_consume(&ch->in);
        if (++n % 16 == 0)
            sig_writer |= kmcl_ring_publish_read(&ch->in);
        if (n % KMCL_SERVER_DRAIN_BUDGET == 0)
            flush_out_locked(ch, did);
        /* Routines of what process_packet sent run now, not when the executor's call returns: a
         * drain lasts as long as the guest keeps writing, and a VSP that recycles its packets in
         * their routines would otherwise allocate one per request meanwhile. */
        if (ch->depth == 1)
            run_done(ch);
    }
    if (!ch->failed)
        sig_writer |= kmcl_ring_publish_read(&ch->in);
    if (sig_writer)
        signal_guest(ch);
    ch->executing = false;
}

bool kmcl_server_channel_interrupt(struct kmcl_server_channel *ch)
{
    enter(ch);
    bool did = false;
    if (ch->state == ENABLED && !ch->failed) {
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
    if (ch->state != INITIALIZING ||
        (!(ch->flags & KMCL_SERVER_FLAG_SUPPRESS_QUEUE_MANAGEMENT) ? !ch->process_packet : !ch->queue_cb)) {
        leave(ch);
        return STATUS_INVALID_PARAMETER;
    }
    ch->t = *t;
    ch->state = ENABLED;
    /* The guest initialised both rings before OPENCHANNEL: take over the indices found (checked). */
    if (kmcl_ring_attach_pages(&ch->in, KMCL_RING_READER, in_ring, in_bytes, 0) != STATUS_OK) {
        fail_in(ch);
    } else if (kmcl_ring_attach_pages(&ch->out, KMCL_RING_WRITER, out_ring, out_bytes, 0) != STATUS_OK) {
        fail(ch, "host -> guest", kmcl_ring_failure(&ch->out));
    } else {
        ch->bounce_size = ch->in.size;
        ch->bounce = malloc(ch->bounce_size);
        if (!ch->bounce) {
            struct kmcl_ring_failure why = { "host out of memory for the bounce buffer", 0, ch->bounce_size, 0 };
            kmcl_ring_fail(&ch->in, &why);
            fail_in(ch);
        }
    }
    if (ch->states.opened)
        ch->states.opened(ch);
    if (ch->states.started)
        ch->states.started(ch);
    if (ch->states.post_started)
        ch->states.post_started(ch);
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
    if (ch->paused && ch->state == ENABLED)
        ch->kick = true; /* read on when the outermost call leaves (at once, from outside) */
    ch->paused = false;
    leave(ch);
}

void kmcl_server_channel_disable(struct kmcl_server_channel *ch)
{
    if (!ch)
        return;
    enter(ch);
    if (ch->state != ENABLED) {
        leave(ch);
        return;
    }
    if (ch->states.suspend)
        ch->states.suspend(ch);
    ch->state = DISABLED;
    cancel_all_locked(ch);
    run_cancelled(ch); /* their routines run here, before closed */
    /* Incoming packets not completed yet: their completions will not be written (nothing to write
     * into); complete still retires them. */
    free(ch->bounce);
    ch->bounce = NULL;
    if (ch->states.closed)
        ch->states.closed(ch);
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
    free(ch->client_context);
    free(ch);
}
