/*
 * receive: the receiving half of kmcl's client channel (contract in kmcl/channel.h): the
 * interrupt-level executor (the channel's DPC on its target CPU), the passive-level executor (its
 * worker thread), polling, and the incoming packets' contexts from delivery to retirement. The
 * reader's step and the contexts are the engine's (kmcl/core/endpoint.h). Shared state:
 * kmcl/internal.h.
 *
 * processing-complete (KMCL: "after the last invocation of ProcessPacketCallback in a single
 * batch", with "the number of packets which were delivered in this batch") is per executor: the
 * ring's reader counts the packets it delivered and calls it when it finds the ring empty; the
 * worker counts the deferred packets it delivered again and calls it, at PASSIVE, when its queue is
 * empty. A packet queued behind a deferred one is counted by the worker, when it delivers it.
 */
#include "kmcl/internal.h"

#include "arch-x86_64/cpu.h"
#include "kernel/log.h"
#include "kernel/mm.h"
#include "kernel/string.h"

/* ---- incoming contexts ---- */

static void resume_reading(struct kmcl_channel *ch);

static struct kmcl_incoming *incoming_get(struct kmcl_channel *ch)
{
    irql_t old = kmcl_lock(&ch->in_lock);
    struct kmcl_ep_incoming *e = kmcl_ep_incoming_get(&ch->ep);
    if (e)
        ch->incoming_busy++;
    kmcl_unlock(&ch->in_lock, old);
    return e ? container_of(e, struct kmcl_incoming, ep) : NULL;
}

static void incoming_put(struct kmcl_incoming *in)
{
    struct kmcl_channel *ch = in->ch;
    if (in->copy) /* only deferred packets have one */
        kfree(in->copy);
    in->copy = NULL;
    in->deferred = false;
    in->redelivered = false;
    in->in_callback = 0;
    in->holds = 0;
    /* Everything that touches the channel happens before the unlock, while this context still
     * counts in incoming_busy: a cleanup on another CPU frees the channel only once it is 0. */
    irql_t old = kmcl_lock(&ch->in_lock);
    kmcl_ep_incoming_put(&ch->ep, &in->ep);
    if (__atomic_exchange_n(&ch->starved, false, __ATOMIC_SEQ_CST))
        resume_reading(ch);
    bool last = --ch->incoming_busy == 0 && ch->cleanup_pending;
    kmcl_unlock(&ch->in_lock, old);
    if (last) { /* kmcl_channel_cleanup came first and left the channel to this completion */
        pr_info("kmcl: %s (relid %u): the last incoming packet completed after cleanup: channel freed", ch->name,
                ch->relid);
        kmcl_free_channel(ch);
    }
}

static bool incoming_available(struct kmcl_channel *ch)
{
    irql_t old = kmcl_lock(&ch->in_lock);
    bool any = kmcl_ep_incoming_available(&ch->ep);
    kmcl_unlock(&ch->in_lock, old);
    return any;
}

void kmcl_release(struct kmcl_incoming *in)
{
    if (__atomic_sub_fetch(&in->holds, 1, __ATOMIC_ACQ_REL) == 0)
        incoming_put(in);
}

/* The executor, after process_packet returned: drops the callback's hold (retiring the packet if
 * it was completed meanwhile and its completion is written). */
static void after_callback(struct kmcl_incoming *in)
{
    in->ep.view = NULL;
    __atomic_store_n(&in->in_callback, 0, __ATOMIC_RELEASE);
    kmcl_release(in);
}

status_t kmcl_channel_packet_defer_to_passive(struct kmcl_incoming *in)
{
    if (!__atomic_load_n(&in->in_callback, __ATOMIC_ACQUIRE) || in->deferred || in->redelivered ||
        __atomic_load_n(&in->completed, __ATOMIC_ACQUIRE))
        return STATUS_INVALID_STATE; /* only inside process_packet, once, not at PASSIVE, not once completed */
    in->deferred = true;
    return STATUS_OK;
}

status_t kmcl_channel_packet_get_external_data(struct kmcl_incoming *in, struct kmcl_pkt_gpa *gpa,
                                               struct kmcl_pkt_xfer *xfer)
{
    return kmcl_ep_get_external_data(&in->ep, gpa, xfer);
}

uint64_t kmcl_incoming_trans_id(const struct kmcl_incoming *pkt) { return pkt->ep.trans_id; }
struct kmcl_channel *kmcl_incoming_channel(const struct kmcl_incoming *pkt) { return pkt->ch; }

/* ---- delivery and deferral ---- */

/* Copies a packet for later delivery at PASSIVE. */
static bool copy_for_passive(struct kmcl_incoming *in, const struct kmcl_ring_packet *p)
{
    in->copy = kmalloc(p->len ? p->len : 1);
    if (!in->copy)
        return false;
    memcpy(in->copy, p->bytes, p->len);
    in->copy_view = *p;
    in->copy_view.bytes = in->copy;
    in->copy_view.bounced = true;
    return true;
}

static void deliver(struct kmcl_channel *ch, struct kmcl_incoming *in, const struct kmcl_ring_packet *p, bool passive)
{
    in->ep.view = p;
    __atomic_store_n(&in->completed, false, __ATOMIC_RELAXED);
    __atomic_store_n(&in->holds, 2, __ATOMIC_RELEASE); /* the callback's and the owner's */
    __atomic_store_n(&in->in_callback, 1, __ATOMIC_RELEASE);
    uint32_t flags = kmcl_ep_process_flags(p->desc.type) | (passive ? KMCL_PROCESS_AT_PASSIVE : 0);
    ((kmcl_process_packet_fn)ch->ep.process_packet)(ch, in, kmcl_pkt_payload(p), kmcl_pkt_payload_len(p), flags);
}

static void processing_complete(struct kmcl_channel *ch, uint32_t *batch)
{
    if (!*batch)
        return;
    uint32_t n = *batch;
    *batch = 0;
    kmcl_stat_inc(&ch->stats.processing_complete_calls);
    if (ch->ep.processing_complete)
        ((kmcl_processing_complete_fn)ch->ep.processing_complete)(ch, n);
}

/* Whether later packets must queue behind deferred ones: some are queued for the worker or being
 * delivered by it (the count drops only after the worker's delivery returned, so a packet the
 * worker has popped but not yet delivered still holds later ones back). No lock: one atomic load
 * per packet on the fast path. */
static bool deferred_pending(struct kmcl_channel *ch)
{
    return __atomic_load_n(&ch->deferred_outstanding, __ATOMIC_ACQUIRE) != 0;
}

static struct kmcl_incoming *pop_deferred(struct kmcl_channel *ch)
{
    irql_t old = kmcl_lock(&ch->in_lock);
    struct list *n = list_pop_front(&ch->deferred);
    kmcl_unlock(&ch->in_lock, old);
    return n ? container_of(n, struct kmcl_incoming, ep.link) : NULL;
}

static void queue_deferred(struct kmcl_channel *ch, struct kmcl_incoming *in)
{
    __atomic_add_fetch(&ch->deferred_outstanding, 1, __ATOMIC_ACQ_REL);
    irql_t old = kmcl_lock(&ch->in_lock);
    list_push_back(&ch->deferred, &in->ep.link);
    kmcl_unlock(&ch->in_lock, old);
    kmcl_stat_inc(&ch->stats.deferred);
    event_set(&ch->work);
}

void kmcl_retire_deferred(struct kmcl_channel *ch)
{
    struct kmcl_incoming *in;
    while ((in = pop_deferred(ch)) != NULL) {
        incoming_put(in);
        __atomic_sub_fetch(&ch->deferred_outstanding, 1, __ATOMIC_ACQ_REL);
    }
}

/* One data packet from the ring: delivered now, or (behind deferred ones, or for a passive channel
 * read at DISPATCH) copied for the worker. false: not taken (no memory for the copy: read again
 * next pass), or the channel failed. */
static bool take_data(struct kmcl_channel *ch, struct kmcl_incoming *in, const struct kmcl_ring_packet *p,
                      bool passive)
{
    kmcl_ep_incoming_start(&in->ep, p);
    in->ep.view = NULL;
    if ((!passive && ch->at_passive) || deferred_pending(ch)) {
        /* In order behind packets already waiting for the worker; counted when it delivers it. */
        if (!copy_for_passive(in, p)) {
            incoming_put(in);
            return false;
        }
        kmcl_stat_inc(&ch->stats.packets_in);
        queue_deferred(ch, in);
        return true;
    }
    kmcl_stat_inc(&ch->stats.packets_in);
    ch->batch++;
    deliver(ch, in, p, passive);
    if (!in->deferred) {
        after_callback(in);
        return true;
    }
    in->in_callback = 0; /* nobody may complete a deferred packet */
    in->holds = 0;       /* until the worker delivers it again */
    in->ep.view = NULL;
    if (!copy_for_passive(in, p)) {
        struct kmcl_ring_failure f = { "out of memory for a deferred packet", p->ring_offset, p->len, 0 };
        kmcl_fail_channel(ch, &f, "deferring a packet");
        incoming_put(in);
        return false;
    }
    in->deferred = false;
    queue_deferred(ch, in);
    return true;
}

/*
 * Drains up to budget packets (the DPC at DISPATCH, or the worker at PASSIVE for a passive channel).
 * Returns true when it stopped with work left (budget, or no in-flight context free). A packet
 * that "raced in" after the ring looked empty costs the budget as a packet does: a host that moves
 * write_index back and forth cannot keep the reader in one pass.
 */
static bool drain(struct kmcl_channel *ch, uint32_t budget, bool passive)
{
    bool sig_writer = false, more = false;
    uint32_t n = 0;
    kmcl_ring_begin_read(&ch->ep.in);
    for (;;) {
        struct kmcl_ring_packet p;
        enum kmcl_ep_next next = kmcl_ep_next(&ch->ep, &p);
        if (next == KMCL_EP_EMPTY) {
            processing_complete(ch, &ch->batch);
            if (ch->polling) { /* the mask stays set: the poller looks again, the host need not signal */
                sig_writer |= kmcl_ring_publish_read(&ch->ep.in);
                break;
            }
            bool sw = false, again = kmcl_ring_end_read(&ch->ep.in, &sw);
            sig_writer |= sw;
            if (!again)
                break;
            if (++n >= budget) {
                more = true;
                kmcl_stat_inc(&ch->stats.budget_exhausted);
                break;
            }
            kmcl_ring_begin_read(&ch->ep.in); /* a packet raced in: go on */
            continue;
        }
        if (next == KMCL_EP_FAILED) {
            kmcl_fail_channel(ch, kmcl_ring_failure(&ch->ep.in), "reading the inbound ring");
            break;
        }
        if (n >= budget) {
            more = true;
            kmcl_stat_inc(&ch->stats.budget_exhausted);
            break;
        }
        if (next == KMCL_EP_COMPLETION) {
            kmcl_take_completion(ch, &p);
            if (kmcl_is_failed(ch))
                break;
        } else {
            struct kmcl_incoming *in = incoming_get(ch);
            if (!in) {
                /* Every context is in flight: resume when one is retired (incoming_put), not by
                 * spinning here, which would starve the worker that retires them on this CPU. */
                __atomic_store_n(&ch->starved, true, __ATOMIC_SEQ_CST);
                if (!incoming_available(ch))
                    break;
                __atomic_store_n(&ch->starved, false, __ATOMIC_SEQ_CST); /* one came back meanwhile */
                continue;
            }
            if (!take_data(ch, in, &p, passive)) {
                more = !kmcl_is_failed(ch);
                break;
            }
        }
        kmcl_ring_consume(&ch->ep.in);
        if (++n % 16 == 0)
            sig_writer |= kmcl_ring_publish_read(&ch->ep.in);
    }
    if (more)
        sig_writer |= kmcl_ring_publish_read(&ch->ep.in);
    if (sig_writer)
        kmcl_signal_host(ch);
    return more && !kmcl_is_failed(ch);
}

/* ---- the executors ---- */

/* Whether the ring may be read: enabled, not failed, not rescinded (the host is gone), not paused. */
static bool readable(struct kmcl_channel *ch)
{
    return kmcl_usable(ch) && !__atomic_load_n(&ch->paused, __ATOMIC_ACQUIRE);
}

/* The interrupt-level executor. (Named so: test/bench/netsys_callgrind.sh counts what it runs.) */
static void channel_dpc(struct dpc *d, void *ctx)
{
    (void)d;
    struct kmcl_channel *ch = ctx;
    __atomic_store_n(&ch->dpc_running, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&ch->ep.state, __ATOMIC_SEQ_CST) == KMCL_EP_ENABLED && !kmcl_is_failed(ch) &&
        !kmcl_is_rescinded(ch)) {
        kmcl_stat_inc(&ch->stats.dpc_passes);
        kmcl_flush_sends(ch);
        if (ch->polling)
            ; /* the poller reads the ring; a signal still flushed the sends above */
        else if (ch->ep.flags & KMCL_CHANNEL_FLAG_SUPPRESS_QUEUE_MANAGEMENT) {
            if (!__atomic_load_n(&ch->paused, __ATOMIC_ACQUIRE) && ((kmcl_queue_fn)ch->ep.queue)(ch))
                dpc_queue(&ch->dpc); /* the driver stopped with packets left: again, after other DPCs */
        } else if (ch->at_passive)
            event_set(&ch->work);
        else if (!__atomic_load_n(&ch->paused, __ATOMIC_ACQUIRE) && drain(ch, KMCL_DRAIN_BUDGET, false))
            dpc_queue(&ch->dpc); /* budget used up: let other DPCs run, then go on */
    }
    __atomic_store_n(&ch->dpc_running, 0, __ATOMIC_RELEASE);
}

void kmcl_dpc_init(struct kmcl_channel *ch)
{
    dpc_init(&ch->dpc, channel_dpc, ch);
    dpc_set_target(&ch->dpc, (int32_t)ch->target_cpu);
}

/* Reading stopped for want of a context and one is back: the reader of this channel goes on
 * (in_lock held: it only queues the DPC or sets the worker's event). */
static void resume_reading(struct kmcl_channel *ch)
{
    if (kmcl_state(ch) != KMCL_EP_ENABLED)
        return; /* disable retires contexts after the DPC is cancelled: no new pass then */
    if (ch->polling)
        return; /* the poller looks again anyway */
    if (ch->at_passive)
        event_set(&ch->work);
    else
        dpc_queue(&ch->dpc);
}

void kmcl_on_interrupt(struct vmbus_channel *vch, void *ctx)
{
    (void)vch;
    struct kmcl_channel *ch = ctx;
    kmcl_stat_inc(&ch->stats.interrupts);
    dpc_queue(&ch->dpc);
}

/* The passive-level executor: deferred packets in order (then their processing-complete), the
 * whole ring for passive channels, and the driver's closed callback after a rescind. */
void kmcl_worker_main(void *arg)
{
    struct kmcl_channel *ch = arg;
    for (;;) {
        status_t s = event_wait(&ch->work, WAIT_FOREVER);
        (void)s;
        if (__atomic_load_n(&ch->worker_stop, __ATOMIC_ACQUIRE))
            break;
        struct kmcl_incoming *in;
        while ((in = pop_deferred(ch)) != NULL) {
            kmcl_stat_inc(&ch->stats.passive_deliveries);
            in->redelivered = true; /* defer_to_passive refuses it now */
            ch->passive_batch++;
            deliver(ch, in, &in->copy_view, true);
            after_callback(in);
            __atomic_sub_fetch(&ch->deferred_outstanding, 1, __ATOMIC_ACQ_REL);
        }
        processing_complete(ch, &ch->passive_batch);
        if (ch->at_passive && readable(ch))
            while (drain(ch, KMCL_DRAIN_BUDGET, true))
                thread_yield();
        if (kmcl_is_rescinded(ch) && kmcl_state(ch) == KMCL_EP_ENABLED)
            kmcl_closed_once(ch);
    }
}

/* Polling mode: spins on the ring at DISPATCH in budgeted passes, PASSIVE in between so the CPU's
 * scheduler and DPCs still run. The ring's interrupt mask is never cleared (drain() does not end
 * the read), so the host does not signal. */
void kmcl_poller_main(void *arg)
{
    struct kmcl_channel *ch = arg;
    while (!__atomic_load_n(&ch->worker_stop, __ATOMIC_ACQUIRE)) {
        irql_t old = irql_raise(IRQL_DISPATCH);
        if (readable(ch)) {
            kmcl_stat_inc(&ch->stats.polls);
            kmcl_flush_sends(ch);
            (void)drain(ch, KMCL_DRAIN_BUDGET, false);
        }
        irql_lower(old);
        cpu_relax();
    }
}
