/*
 * endpoint: the engine both of kmcl's endpoints run, the client (kmcl/channel.h, in the guest) and
 * the server (sim/kmcl/server.h, under hvsim's VSPs). What is the same on both sides lives here,
 * once: the life-cycle state and the init-set checks, the incoming packets' completion contexts,
 * the out queue of what waits for room in the outbound ring (packets and completions), transaction
 * ids, completions from the peer, and the reader's step through the inbound ring. What differs
 * (executors, locks, threads, logging, flow control) stays in the endpoint.
 *
 * Portable like the rest of kmcl/core: no locks, no threads, no logging; memory only through the
 * allocator the endpoint hands in (struct kmcl_ep_alloc). The endpoint serialises the calls. Each
 * function touches one side, named in its comment, so an endpoint with two locks takes the right
 * one (the client: its send lock for the out side, its in lock for the contexts; the server: its one
 * mutex for both):
 *   out side: the outbound ring, the out queues, the transaction table;
 *   in side:  the inbound ring (one reader at a time), the pool of incoming contexts.
 *
 * Transaction ids are given only to packets written to the ring: a packet that waits in the out
 * queue has none, so a peer that guesses the id it will get (ids are predictable, kmcl/core/xact.h)
 * completes nothing; its completion is for an id never sent and fails the inbound ring. The table's
 * capacity is still promised at send time (STATUS_BUSY then), so a queued packet always gets an id
 * when its turn comes.
 *
 * Callbacks are the endpoint's own function types (they take its channel type): stored here
 * converted to kmcl_ep_fn, and converted back to the same type by the endpoint before it calls them
 * (a round trip C defines).
 *
 * IRQL: any up to HIGH (nothing blocks); allocation only where a function says so, through the
 * endpoint's allocator (the client's works at <= DISPATCH).
 */
#ifndef KMCL_CORE_ENDPOINT_H
#define KMCL_CORE_ENDPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernel/list.h"
#include "kernel/status.h"
#include "kmcl/core/packet.h"
#include "kmcl/core/ring.h"
#include "kmcl/core/xact.h"

/* The life cycle both endpoints share (the client stores and loads it atomically). */
enum kmcl_ep_state { KMCL_EP_INITIALIZING, KMCL_EP_ENABLED, KMCL_EP_DISABLING, KMCL_EP_DISABLED };
/* Which end: the packet types each takes and the order of its out queue (below). */
enum kmcl_ep_role { KMCL_EP_CLIENT, KMCL_EP_SERVER };
/* The state-change callbacks, in the field order of both endpoints' callback structs. */
enum kmcl_ep_event { KMCL_EP_OPENED, KMCL_EP_CLOSED, KMCL_EP_STARTED, KMCL_EP_SUSPEND, KMCL_EP_POST_STARTED,
                     KMCL_EP_EVENTS };

#define KMCL_EP_FLAG_SUPPRESS_QUEUE_MANAGEMENT 0x1u /* the only init_set_flags flag, on both sides */
#define KMCL_EP_PROCESS_EXTERNAL_DATA 0x1u          /* process-packet flag, on both sides */
#define KMCL_EP_COMPLETION_INLINE 64u               /* completion payloads queued without allocating */

typedef void (*kmcl_ep_fn)(void);
#define KMCL_EP_FN(f) ((kmcl_ep_fn)(f))
/* An endpoint's struct of state-change callbacks (fields opened, closed, started, suspend,
 * post_started), as the array kmcl_ep_init_set_state_change_callbacks takes. */
#define KMCL_EP_STATE_FNS(cbs)                                                                                 \
    ((const kmcl_ep_fn[KMCL_EP_EVENTS]){ KMCL_EP_FN((cbs)->opened), KMCL_EP_FN((cbs)->closed),                \
                                         KMCL_EP_FN((cbs)->started), KMCL_EP_FN((cbs)->suspend),              \
                                         KMCL_EP_FN((cbs)->post_started) })

/* The endpoint's memory: kmalloc/kzalloc/kfree in the guest, malloc/calloc/free on the host. */
struct kmcl_ep_alloc {
    void *(*alloc)(size_t bytes);
    void *(*zalloc)(size_t bytes); /* zeroed */
    void (*free)(void *p);         /* NULL is allowed */
};

/*
 * Something to write into the outbound ring: a packet (in-band, GPA direct, transfer pages) or a
 * completion. Embedded in the endpoint's packet (its payload points at the sender's buffer, or at
 * the packet's own copy once queued) and in each incoming context (its completion). The endpoint
 * fills the description before kmcl_ep_send; the core sets trans_id (with wait), queued and link.
 */
struct kmcl_ep_out {
    struct list link;          /* an out queue, or the endpoint's list of done/cancelled ones */
    uint16_t type;             /* KMCL_PKT_DATA_INBAND, _DATA_GPA_DIRECT, _DATA_XFER_PAGES, _COMPLETION */
    bool wait;                 /* completion requested: an id from the table, given when written */
    bool queued;               /* in an out queue, not yet in the ring */
    uint64_t trans_id;         /* without wait: the endpoint's (0, a fixed id, the request's) */
    const void *payload;
    uint32_t len;
    uint32_t range_count;      /* GPA ranges or transfer-page ranges */
    const struct kmcl_page_range *gpa;
    const struct kmcl_xfer_range *xfer;
    uint16_t pageset_id;
};

/* An incoming packet's completion context (both endpoints extend it). */
struct kmcl_ep_incoming {
    struct list link;                    /* the pool's free list, or an endpoint's own queue */
    struct kmcl_ep_out completion;       /* its completion while it waits for room */
    uint64_t trans_id;
    uint16_t type;
    bool completion_requested;
    const struct kmcl_ring_packet *view; /* during process-packet: get_external_data */
    uint8_t *completion_heap;            /* a queued completion above the inline size */
    uint8_t completion_inline[KMCL_EP_COMPLETION_INLINE];
};

struct kmcl_ep {
    enum kmcl_ep_role role;
    uint32_t state;              /* enum kmcl_ep_state */
    uint32_t flags, max_packet, max_packet_limit;
    kmcl_ep_fn process_packet, processing_complete, queue;
    kmcl_ep_fn states[KMCL_EP_EVENTS];
    void *client_context;
    size_t client_context_size;
    const struct kmcl_ep_alloc *mem;
    /* out side */
    struct kmcl_ring out;
    struct kmcl_xact_table xacts;
    /* What waits for room, in the order it is written. The client keeps completions ahead of
     * packets (outq[0] then outq[1]: a completion never waits behind a send); the server keeps
     * one order for both in outq[0] (its answers follow the requests). */
    struct list outq[2];
    uint32_t packet_queue;       /* where packets queue: 1 on the client, 0 on the server */
    uint32_t waiting;            /* queued packets with wait: ids promised, not yet taken */
    /* in side */
    struct kmcl_ring in;
    uint8_t *bounce;             /* a wrapped inbound packet: as large as the inbound data area */
    uint32_t bounce_size;
    struct list free_incoming;
};

/* ---- set-up (before the endpoint is shared) ---- */

/* INITIALIZING, the defaults given, transaction slots over slots[capacity], no context in the
 * pool yet. */
status_t kmcl_ep_init(struct kmcl_ep *ep, enum kmcl_ep_role role, const struct kmcl_ep_alloc *mem,
                      struct kmcl_xact_slot *slots, uint32_t capacity, uint32_t max_packet,
                      uint32_t max_packet_limit) WARN_UNUSED;
/* Puts a context (the endpoint's storage, zeroed) into the pool. */
void kmcl_ep_add_incoming(struct kmcl_ep *ep, struct kmcl_ep_incoming *in);
/* Frees what the core allocated: the client context and the bounce buffer. */
void kmcl_ep_destroy(struct kmcl_ep *ep);

/* ---- init-set (INITIALIZING only; a NULL ep or another state: STATUS_INVALID_PARAMETER) ---- */

status_t kmcl_ep_init_only(const struct kmcl_ep *ep) WARN_UNUSED;
/* Zeroed, replaces an earlier one; freed by kmcl_ep_destroy. */
status_t kmcl_ep_init_set_client_context_size(struct kmcl_ep *ep, size_t bytes) WARN_UNUSED;
status_t kmcl_ep_init_set_maximum_packet_size(struct kmcl_ep *ep, uint32_t bytes) WARN_UNUSED; /* 8 .. limit */
status_t kmcl_ep_init_set_flags(struct kmcl_ep *ep, uint32_t flags) WARN_UNUSED;
status_t kmcl_ep_init_set_process_packet_callbacks(struct kmcl_ep *ep, kmcl_ep_fn process_packet,
                                                   kmcl_ep_fn processing_complete) WARN_UNUSED;
status_t kmcl_ep_init_set_queue_callback(struct kmcl_ep *ep, kmcl_ep_fn queue) WARN_UNUSED;
/* states: KMCL_EP_EVENTS callbacks (KMCL_EP_STATE_FNS), each may be NULL; states NULL is refused. */
status_t kmcl_ep_init_set_state_change_callbacks(struct kmcl_ep *ep, const kmcl_ep_fn *states) WARN_UNUSED;
/* The client context if it holds at least `bytes` (the typed accessors of both endpoints), else NULL. */
static inline void *kmcl_ep_context(const struct kmcl_ep *ep, size_t bytes)
{
    return ep->client_context_size >= bytes ? ep->client_context : NULL;
}
/* Enable may go ahead: INITIALIZING, and the callback its flags need (queue when suppressed,
 * process_packet otherwise). */
status_t kmcl_ep_enable_check(const struct kmcl_ep *ep) WARN_UNUSED;
/* The bounce buffer for the inbound ring once attached (as large as its data area). */
status_t kmcl_ep_alloc_bounce(struct kmcl_ep *ep) WARN_UNUSED;

/* ---- the in side ---- */

/* A free context, or NULL when every one is in flight. */
static inline struct kmcl_ep_incoming *kmcl_ep_incoming_get(struct kmcl_ep *ep)
{
    struct list *n = list_pop_front(&ep->free_incoming);
    return n ? container_of(n, struct kmcl_ep_incoming, link) : NULL;
}

static inline bool kmcl_ep_incoming_available(const struct kmcl_ep *ep)
{
    return !list_empty(&ep->free_incoming);
}

/* Back to the pool; a heap copy of a completion is freed. */
void kmcl_ep_incoming_free_heap_(struct kmcl_ep *ep, struct kmcl_ep_incoming *in);
static inline void kmcl_ep_incoming_put(struct kmcl_ep *ep, struct kmcl_ep_incoming *in)
{
    if (__builtin_expect(in->completion_heap != NULL, 0))
        kmcl_ep_incoming_free_heap_(ep, in);
    in->view = NULL;
    list_push_back(&ep->free_incoming, &in->link);
}

/* The context takes the peeked packet p (whose view it keeps until the endpoint clears it). */
static inline void kmcl_ep_incoming_start(struct kmcl_ep_incoming *in, const struct kmcl_ring_packet *p)
{
    in->trans_id = p->desc.trans_id;
    in->type = p->desc.type;
    in->completion_requested = p->desc.flags & KMCL_PKT_FLAG_COMPLETION_REQUESTED;
    in->view = p;
}

/* process-packet's flags for a packet of this type: external data for anything but in-band. */
static inline uint32_t kmcl_ep_process_flags(uint16_t type)
{
    return type != KMCL_PKT_DATA_INBAND ? KMCL_EP_PROCESS_EXTERNAL_DATA : 0;
}

/* Inside process-packet: the GPA-direct ranges (into gpa's storage) or transfer-page ranges of the
 * packet, as kmcl_pkt_parse_gpa / kmcl_pkt_parse_xfer. STATUS_INVALID_STATE outside process-packet,
 * STATUS_NOT_FOUND when the packet has none of the kind asked for. */
status_t kmcl_ep_get_external_data(const struct kmcl_ep_incoming *in, struct kmcl_pkt_gpa *gpa,
                                   struct kmcl_pkt_xfer *xfer) WARN_UNUSED;

enum kmcl_ep_next {
    KMCL_EP_EMPTY,       /* nothing published beyond what was consumed */
    KMCL_EP_DATA,        /* in-band, GPA direct or transfer pages: for process-packet */
    KMCL_EP_COMPLETION,  /* the peer completed one of ours: kmcl_ep_take_completion */
    KMCL_EP_FAILED,      /* the inbound ring failed (kmcl_ring_failure(&ep->in) says why) */
};
/* Internal: kmcl_ep_next's rare cases (a failed peek, a type this endpoint does not take). */
enum kmcl_ep_next kmcl_ep_next_slow_(struct kmcl_ep *ep, struct kmcl_ring_packet *p, status_t peeked);
/* The reader's step: peeks the next packet of the inbound ring into p. A packet of a type this
 * endpoint does not take fails the ring. In side. (Inline: it runs for every packet.) */
static inline WARN_UNUSED enum kmcl_ep_next kmcl_ep_next(struct kmcl_ep *ep, struct kmcl_ring_packet *p)
{
    status_t s = kmcl_ring_peek(&ep->in, p, ep->bounce, ep->bounce_size);
    if (s == STATUS_NOT_FOUND)
        return KMCL_EP_EMPTY;
    if (__builtin_expect(s == STATUS_OK, 1)) {
        uint16_t t = p->desc.type;
        if (t == KMCL_PKT_COMPLETION)
            return KMCL_EP_COMPLETION;
        if (t == KMCL_PKT_DATA_INBAND || t == KMCL_PKT_DATA_XFER_PAGES || t == KMCL_PKT_DATA_GPA_DIRECT)
            return KMCL_EP_DATA;
    }
    return kmcl_ep_next_slow_(ep, p, s);
}

/* The reason the inbound ring fails with on a completion for no outstanding id. */
#define KMCL_EP_UNKNOWN_COMPLETION                                                                             \
    "completion for a transaction id never sent or already completed (a packet not yet written to the ring "  \
    "has no id)"
/* A completion packet p from the peer: the packet it completes leaves the table and is returned
 * (*done), with the completion's payload in *c. STATUS_BAD_DATA: no such transaction, the inbound
 * ring failed (KMCL_EP_UNKNOWN_COMPLETION). Out side (the table), and it may fail the in ring: the
 * caller is its reader. */
status_t kmcl_ep_unknown_completion_(struct kmcl_ep *ep, const struct kmcl_ring_packet *p, uint64_t trans_id);
static inline WARN_UNUSED status_t kmcl_ep_take_completion(struct kmcl_ep *ep, const struct kmcl_ring_packet *p,
                                                           struct kmcl_ep_out **done, struct kmcl_pkt_inband *c)
{
    if (kmcl_pkt_parse_completion(p, c) != STATUS_OK)
        return STATUS_INVALID_PARAMETER;
    void *ctx;
    if (__builtin_expect(kmcl_xact_complete(&ep->xacts, c->trans_id, &ctx) != STATUS_OK, 0))
        return kmcl_ep_unknown_completion_(ep, p, c->trans_id);
    *done = ctx;
    return STATUS_OK;
}

/* ---- the out side ---- */

/* Internal pieces of the inline writers below (out of line: GPA direct and transfer pages, a write
 * that failed with an id taken, queueing). */
status_t kmcl_ep_write_ext_(struct kmcl_ep *ep, const struct kmcl_ep_out *o, uint16_t flags,
                            const struct kmcl_iov *iov, bool *sig);
void kmcl_ep_unwrite_(struct kmcl_ep *ep, struct kmcl_ep_out *o);
void kmcl_ep_queue_(struct kmcl_ep *ep, struct kmcl_ep_out *o, void *copy);
status_t kmcl_ep_queue_completion_(struct kmcl_ep *ep, struct kmcl_ep_incoming *in, const void *buf, uint32_t len);

static inline struct list *kmcl_ep_queue_of_(struct kmcl_ep *ep, const struct kmcl_ep_out *o)
{
    return &ep->outq[o->type == KMCL_PKT_COMPLETION ? 0 : ep->packet_queue];
}

/* Writes o into the ring now, its id (with wait) taken for this write and freed if it fails. */
static inline __attribute__((always_inline)) WARN_UNUSED status_t kmcl_ep_write_now_(struct kmcl_ep *ep,
                                                                                      struct kmcl_ep_out *o,
                                                                                      bool *sig)
{
    if (o->wait && kmcl_xact_alloc(&ep->xacts, o, &o->trans_id) != STATUS_OK)
        return STATUS_BUSY; /* not reached: capacity was promised at send */
    struct kmcl_iov iov = { o->payload, o->len };
    uint16_t flags = o->wait ? KMCL_PKT_FLAG_COMPLETION_REQUESTED : 0;
    bool s = false; /* the ring sets its flag per write; *sig accumulates over several */
    status_t st;
    if (o->type == KMCL_PKT_COMPLETION)
        st = kmcl_pkt_send_completion(&ep->out, o->trans_id, &iov, 1, 0, &s);
    else if (o->type == KMCL_PKT_DATA_INBAND)
        st = kmcl_pkt_send_inband(&ep->out, o->trans_id, flags, &iov, 1, 0, &s);
    else
        st = kmcl_ep_write_ext_(ep, o, flags, &iov, &s);
    *sig |= s;
    if (__builtin_expect(st != STATUS_OK, 0) && o->wait)
        kmcl_ep_unwrite_(ep, o);
    return st;
}

/* Writes o now unless its queue holds something (order): STATUS_NO_SPACE then, or when it does not
 * fit (pending_send_sz set: the peer signals when it has read enough). With wait, the id is taken
 * from the table for this write and freed again if it fails. Another status: the outbound ring
 * failed. *sig: the ring says signal the peer (set, never cleared). */
static inline __attribute__((always_inline)) WARN_UNUSED status_t kmcl_ep_write(struct kmcl_ep *ep,
                                                                                 struct kmcl_ep_out *o, bool *sig)
{
    return list_empty(kmcl_ep_queue_of_(ep, o)) ? kmcl_ep_write_now_(ep, o, sig) : STATUS_NO_SPACE;
}

/* A packet: written (STATUS_OK, *queued false), or, when it does not fit now, its payload copied to
 * copy (the packet's own buffer, at least o->len bytes) and queued (STATUS_OK, *queued true).
 * STATUS_BUSY: with wait, every id of the table is outstanding or promised. Another status: the
 * outbound ring failed (nothing queued). */
static inline __attribute__((always_inline)) WARN_UNUSED status_t kmcl_ep_send(struct kmcl_ep *ep,
                                                                                struct kmcl_ep_out *o, void *copy,
                                                                                bool *queued, bool *sig)
{
    *queued = false;
    if (o->wait && kmcl_xact_outstanding(&ep->xacts) + ep->waiting >= ep->xacts.capacity)
        return STATUS_BUSY;
    status_t st = kmcl_ep_write(ep, o, sig);
    if (__builtin_expect(st == STATUS_NO_SPACE, 0)) {
        kmcl_ep_queue_(ep, o, copy);
        *queued = true;
        return STATUS_OK;
    }
    return st;
}

/* The completion of in, carrying buf: written, or, behind queued completions or when it does not
 * fit, copied (inline up to KMCL_EP_COMPLETION_INLINE bytes, else allocated) and queued (*queued).
 * STATUS_NO_MEMORY: no copy, nothing queued. Another status: the outbound ring failed. */
static inline __attribute__((always_inline)) WARN_UNUSED status_t kmcl_ep_complete(struct kmcl_ep *ep,
                                                                                    struct kmcl_ep_incoming *in,
                                                                                    const void *buf, uint32_t len,
                                                                                    bool *queued, bool *sig)
{
    struct kmcl_ep_out *o = &in->completion;
    *queued = false;
    o->type = KMCL_PKT_COMPLETION;
    o->wait = false;
    o->trans_id = in->trans_id;
    o->payload = buf;
    o->len = len;
    status_t st = kmcl_ep_write(ep, o, sig);
    if (__builtin_expect(st == STATUS_NO_SPACE, 0)) {
        st = kmcl_ep_queue_completion_(ep, in, buf, len);
        *queued = st == STATUS_OK;
    }
    return st;
}

/* What a flush wrote. */
struct kmcl_ep_flushed {
    uint32_t packets, completions;
};
/* Writes queued items in order while they fit. Written completions and packets without wait move
 * to done (the endpoint retires the incoming context, or runs the routine); packets with wait are
 * in the table now. STATUS_OK (whether or not something is left), or the outbound ring failed (the
 * item that failed stays queued). */
status_t kmcl_ep_flush(struct kmcl_ep *ep, struct list *done, struct kmcl_ep_flushed *n, bool *sig) WARN_UNUSED;
/* Whether anything waits for room. */
static inline bool kmcl_ep_queued(const struct kmcl_ep *ep)
{
    return !list_empty(&ep->outq[0]) || !list_empty(&ep->outq[1]);
}

/* Teardown: every queued item moves to `to` (in order; completions and packets told apart by type;
 * their queued flag still set, for the caller to count and clear), then every packet still
 * outstanding in the table (queued false; their ids freed). */
void kmcl_ep_take_all(struct kmcl_ep *ep, struct list *to);

#endif
