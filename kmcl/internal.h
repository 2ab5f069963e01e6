/*
 * internal: what the three parts of kmcl's client endpoint share (contract in kmcl/channel.h):
 *   kmcl/channel.c  the life cycle: allocate, init-set, enable, pause/start, rescind, disable, cleanup;
 *   kmcl/send.c     sending: packets, the send backlog, synchronous requests, completions of
 *                   incoming packets, the host's completions of ours;
 *   kmcl/receive.c  receiving: the interrupt-level executor (the channel's DPC), the passive-level
 *                   one (its worker thread), polling, the incoming packets' contexts.
 * The engine both endpoints run (settings, rings, out queues, transaction ids, contexts) is
 * kmcl/core/endpoint.h; the channel embeds it.
 *
 * Locks: send_lock (DISPATCH) guards the out side of the engine (outbound ring, out queues,
 * transaction table); in_lock (DISPATCH) the pool of incoming contexts and the deferred queue. An
 * incoming packet's context is retired by a hold count (the callback, the owner until complete, a
 * completion waiting for ring space). Only one context reads the inbound ring at a time: the
 * channel's DPC, its worker when the channel processes at PASSIVE, or its poller.
 */
#ifndef KMCL_INTERNAL_H
#define KMCL_INTERNAL_H

#include "arch-x86_64/spinlock.h"
#include "kernel/dpc.h"
#include "kernel/sync.h"
#include "kernel/thread.h"
#include "kmcl/channel.h"
#include "kmcl/core/endpoint.h"

#define XACT_CAPACITY 1024u

struct kmcl_incoming {
    struct kmcl_ep_incoming ep;    /* link: the free list or the deferred queue */
    struct kmcl_channel *ch;
    uint32_t in_callback;          /* 1 while process_packet runs on it */
    uint32_t holds;                /* who still needs it: the callback, the owner until complete, a
                                      queued completion; retired (back to the pool) at 0 */
    bool deferred;
    bool redelivered;              /* delivered by the worker at PASSIVE: no second deferral */
    bool completed;                /* complete (or fail) was called for this delivery */
    struct kmcl_ring_packet copy_view; /* a deferred packet's view of its copy */
    uint8_t *copy;                     /* a deferred packet's bytes (heap) */
};

struct kmcl_packet {
    struct kmcl_ep_out out;        /* what the engine writes or queues */
    struct kmcl_channel *ch;
    kmcl_completion_routine_fn routine;
    void *ctx;
    bool abandoned;                /* a synchronous request whose requester timed out */
    struct kmcl_page_range ext[KMCL_PKT_MAX_GPA_RANGES];
    uint64_t *ext_pfns;            /* copies of the page numbers (in the packet's block) */
    uint8_t *buf;                  /* max_packet bytes: the payload while queued (the same block) */
};

struct kmcl_channel {
    struct kmcl_ep ep;             /* state (atomic), settings, rings, out queues, ids, contexts */
    struct vmbus_channel *vch;     /* NULL once disable has closed it (used no more from then on) */
    struct vmbus_channel *held;    /* the bus's object, held (vmbus_channel_hold) until the channel is freed */
    uint32_t relid;                /* for log lines, also after the close */
    struct vmbus_guid if_type, if_instance;
    char name[32];
    uint32_t max_ext_bytes, max_ext_ranges, out_pages, in_pages, target_cpu;
    bool at_passive, paused, polling;
    uint32_t poll_cpu;
    struct thread *poller;
    bool failed;                   /* sticky; atomic: read on every path from any CPU */
    bool rescinded;                /* sticky; atomic: the host withdrew the channel */
    bool closed_called;            /* the closed callback ran (once per enable) */
    bool cleanup_pending;          /* cleanup came with packets not completed: freed at the last */
    uint32_t incoming_busy;        /* contexts out of the pool (in_lock) */

    spinlock_t send_lock;
    struct kmcl_xact_slot xact_slots[XACT_CAPACITY];

    spinlock_t in_lock;
    struct kmcl_incoming pool[KMCL_MAX_IN_FLIGHT];
    struct list deferred;
    uint32_t deferred_outstanding; /* queued for the worker or being delivered by it (atomic) */
    uint32_t batch;                /* delivered by the ring's reader since its last processing-complete */
    uint32_t passive_batch;        /* delivered again by the worker since its last processing-complete */
    bool starved;                  /* reading stopped for want of an in-flight context */

    struct dpc dpc;
    volatile uint32_t dpc_running;
    struct thread *worker;
    struct event work;
    volatile bool worker_stop;
    struct kmcl_channel_stats stats;
};

static inline irql_t kmcl_lock(spinlock_t *l) { return spin_lock(l); }
static inline void kmcl_unlock(spinlock_t *l, irql_t old) { spin_unlock(l, old); }

/* Counters are bumped from the DPC, the worker and senders on any CPU: relaxed atomics. */
static inline void kmcl_stat_add(uint64_t *c, uint64_t n) { __atomic_fetch_add(c, n, __ATOMIC_RELAXED); }
static inline void kmcl_stat_inc(uint64_t *c) { kmcl_stat_add(c, 1); }

static inline uint32_t kmcl_state(struct kmcl_channel *ch)
{
    return __atomic_load_n(&ch->ep.state, __ATOMIC_ACQUIRE);
}
static inline bool kmcl_is_failed(struct kmcl_channel *ch) { return __atomic_load_n(&ch->failed, __ATOMIC_ACQUIRE); }
static inline bool kmcl_is_rescinded(struct kmcl_channel *ch)
{
    return __atomic_load_n(&ch->rescinded, __ATOMIC_ACQUIRE);
}
/* Whether the rings may be written and the host signalled: enabled, not failed, not rescinded. */
static inline bool kmcl_usable(struct kmcl_channel *ch)
{
    return kmcl_state(ch) == KMCL_EP_ENABLED && !kmcl_is_failed(ch) && !kmcl_is_rescinded(ch);
}

/* channel.c */
void kmcl_fail_channel(struct kmcl_channel *ch, const struct kmcl_ring_failure *f, const char *where);
void kmcl_state_cb(struct kmcl_channel *ch, enum kmcl_ep_event e);
/* The closed callback, if it has not run since enable. */
void kmcl_closed_once(struct kmcl_channel *ch);
void kmcl_free_channel(struct kmcl_channel *ch);

/* send.c */
void kmcl_signal_host(struct kmcl_channel *ch);
/* The host made room: queued completions, then queued packets. */
void kmcl_flush_sends(struct kmcl_channel *ch);
/* A completion packet from the host (the DPC, or the driver's reader when suppressed). */
void kmcl_take_completion(struct kmcl_channel *ch, const struct kmcl_ring_packet *p);
/* Teardown (disable, rescind): queued completions dropped, queued and waiting packets cancelled
 * (their routines: STATUS_CANCELLED). Returns how many routines ran. */
uint32_t kmcl_cancel_sends(struct kmcl_channel *ch);

/* receive.c */
/* The channel's DPC (the interrupt-level executor) on its target CPU. */
void kmcl_dpc_init(struct kmcl_channel *ch);
void kmcl_on_interrupt(struct vmbus_channel *vch, void *ctx);
void kmcl_worker_main(void *arg);
void kmcl_poller_main(void *arg);
/* Drops one hold on an incoming packet; the last one retires it. */
void kmcl_release(struct kmcl_incoming *in);
/* Disable: deferred packets never delivered are retired (no completion: the channel is gone). */
void kmcl_retire_deferred(struct kmcl_channel *ch);

#endif
