/*
 * send: the sending half of kmcl's client channel (contract in kmcl/channel.h): packets, the send
 * backlog, synchronous requests, the completions of incoming packets and the host's completions of
 * ours. The engine (kmcl/core/endpoint.h) writes or queues; this file adds the lock, the signal,
 * the counters, the routines and the log lines. Shared state: kmcl/internal.h.
 */
#include "kmcl/internal.h"

#include "kernel/log.h"
#include "kernel/mm.h"
#include "kernel/string.h"

void kmcl_signal_host(struct kmcl_channel *ch)
{
    if (kmcl_is_rescinded(ch))
        return; /* nobody listens, and the bus may be tearing the channel down */
    kmcl_stat_inc(&ch->stats.signals);
    vmbus_channel_signal(ch->vch);
}

void kmcl_channel_signal(struct kmcl_channel *ch)
{
    kmcl_signal_host(ch);
}

static void run_routine(struct kmcl_packet *pkt, status_t status, const void *buf, uint32_t len)
{
    if (pkt->routine)
        pkt->routine(pkt, status, buf, len);
}

static struct kmcl_incoming *incoming_of(struct kmcl_ep_out *completion)
{
    return container_of(completion, struct kmcl_incoming, ep.completion);
}

/* Routines of what a flush wrote, and the contexts of the completions it wrote (outside the lock). */
static void finish_written(struct list *done)
{
    while (!list_empty(done)) {
        struct kmcl_ep_out *o = container_of(list_pop_front(done), struct kmcl_ep_out, link);
        if (o->type == KMCL_PKT_COMPLETION)
            kmcl_release(incoming_of(o));
        else
            run_routine(container_of(o, struct kmcl_packet, out), STATUS_OK, NULL, 0); /* "placed in the ring" */
    }
}

void kmcl_flush_sends(struct kmcl_channel *ch)
{
    struct list done;
    list_init(&done);
    struct kmcl_ep_flushed n = { 0 };
    bool sig = false;
    irql_t old = kmcl_lock(&ch->send_lock);
    status_t s = kmcl_ep_queued(&ch->ep) && kmcl_usable(ch) ? kmcl_ep_flush(&ch->ep, &done, &n, &sig) : STATUS_OK;
    kmcl_unlock(&ch->send_lock, old);
    if (n.packets)
        kmcl_stat_add(&ch->stats.packets_out, n.packets);
    if (n.completions)
        kmcl_stat_add(&ch->stats.completions_out, n.completions);
    if (s != STATUS_OK)
        kmcl_fail_channel(ch, kmcl_ring_failure(&ch->ep.out), "writing a queued packet");
    if (sig)
        kmcl_signal_host(ch);
    finish_written(&done);
}

uint32_t kmcl_cancel_sends(struct kmcl_channel *ch)
{
    struct list all;
    list_init(&all);
    irql_t old = kmcl_lock(&ch->send_lock);
    kmcl_ep_take_all(&ch->ep, &all);
    kmcl_unlock(&ch->send_lock, old);
    uint32_t n = 0;
    while (!list_empty(&all)) {
        struct kmcl_ep_out *o = container_of(list_pop_front(&all), struct kmcl_ep_out, link);
        o->queued = false;
        if (o->type == KMCL_PKT_COMPLETION) {
            kmcl_release(incoming_of(o)); /* never written: nothing to write it into */
            continue;
        }
        struct kmcl_packet *pkt = container_of(o, struct kmcl_packet, out);
        if (pkt->abandoned) { /* a synchronous request that timed out: nobody waits */
            kmcl_packet_free(pkt);
            continue;
        }
        n++;
        run_routine(pkt, STATUS_CANCELLED, NULL, 0);
    }
    return n;
}

/* ---- packets ---- */

status_t kmcl_packet_allocate(struct kmcl_channel *ch, struct kmcl_packet **out)
{
    IRQL_ASSERT_MAX(IRQL_DISPATCH);
    /* One block: the packet, its page-number copies (8-aligned, right after it), its payload buffer. */
    size_t pfn_bytes = sizeof(uint64_t) * (ch->max_ext_bytes / 4096 + 2 * KMCL_PKT_MAX_GPA_RANGES);
    struct kmcl_packet *pkt = kzalloc(sizeof *pkt + pfn_bytes + ch->ep.max_packet);
    if (!pkt)
        return STATUS_NO_MEMORY;
    _Static_assert(sizeof(struct kmcl_packet) % sizeof(uint64_t) == 0, "the page numbers follow 8-aligned");
    pkt->ext_pfns = (uint64_t *)(pkt + 1);
    pkt->buf = (uint8_t *)pkt->ext_pfns + pfn_bytes;
    pkt->ch = ch;
    list_init(&pkt->out.link);
    *out = pkt;
    return STATUS_OK;
}

void kmcl_packet_free(struct kmcl_packet *pkt)
{
    kfree(pkt); /* NULL is fine */
}

void kmcl_packet_set_completion_routine(struct kmcl_packet *pkt, kmcl_completion_routine_fn fn) { pkt->routine = fn; }
void kmcl_packet_set_context(struct kmcl_packet *pkt, void *ctx) { pkt->ctx = ctx; }
void *kmcl_packet_get_context(struct kmcl_packet *pkt) { return pkt->ctx; }

/* Why a send cannot go out now: rescinded (STATUS_CANCELLED, the host withdrew the channel), or not
 * enabled / FAILED (STATUS_INVALID_STATE). */
static status_t refusal(struct kmcl_channel *ch)
{
    return kmcl_is_rescinded(ch) ? STATUS_CANCELLED : STATUS_INVALID_STATE;
}

status_t kmcl_packet_send(struct kmcl_packet *pkt, const void *buf, uint32_t len, const struct kmcl_page_range *ext,
                          uint32_t ext_count, uint32_t flags)
{
    IRQL_ASSERT_MAX(IRQL_DISPATCH);
    struct kmcl_channel *ch = pkt->ch;
    if (!kmcl_usable(ch))
        return refusal(ch);
    if (len > ch->ep.max_packet || ext_count > ch->max_ext_ranges || (ext_count && !ext) || (len && !buf))
        return STATUS_INVALID_PARAMETER;
    uint32_t pfns = 0;
    for (uint32_t i = 0; i < ext_count; i++)
        pfns += (uint32_t)kmcl_pkt_gpa_pfn_count(ext[i].byte_offset, ext[i].byte_count);
    if (pfns > ch->max_ext_bytes / 4096 + 2 * KMCL_PKT_MAX_GPA_RANGES)
        return STATUS_INVALID_PARAMETER;
    /* Page ranges are copied: the caller's array need not outlive the call. */
    for (uint32_t i = 0, at = 0; i < ext_count; i++) {
        uint32_t n = (uint32_t)kmcl_pkt_gpa_pfn_count(ext[i].byte_offset, ext[i].byte_count);
        memcpy(pkt->ext_pfns + at, ext[i].pfns, n * sizeof(uint64_t));
        pkt->ext[i] = ext[i];
        pkt->ext[i].pfns = pkt->ext_pfns + at;
        at += n;
    }
    struct kmcl_ep_out *o = &pkt->out;
    o->type = ext_count ? KMCL_PKT_DATA_GPA_DIRECT : KMCL_PKT_DATA_INBAND;
    o->wait = flags & KMCL_SEND_WAIT_FOR_COMPLETION;
    o->trans_id = 0;
    o->payload = buf;
    o->len = len;
    o->gpa = pkt->ext;
    o->range_count = ext_count;
    pkt->abandoned = false;

    bool queued = false, sig = false;
    irql_t old = kmcl_lock(&ch->send_lock);
    if (!kmcl_usable(ch)) { /* disable, a rescind or a failure came meanwhile */
        kmcl_unlock(&ch->send_lock, old);
        return refusal(ch);
    }
    status_t st = kmcl_ep_send(&ch->ep, o, pkt->buf, &queued, &sig);
    kmcl_unlock(&ch->send_lock, old);
    if (st == STATUS_BUSY)
        return st; /* every transaction id is outstanding */
    if (st != STATUS_OK) {
        kmcl_fail_channel(ch, kmcl_ring_failure(&ch->ep.out), "writing a packet");
        return STATUS_INVALID_STATE;
    }
    kmcl_stat_inc(queued ? &ch->stats.queued_sends : &ch->stats.packets_out);
    if (sig)
        kmcl_signal_host(ch);
    if (!queued && !(flags & KMCL_SEND_WAIT_FOR_COMPLETION))
        run_routine(pkt, STATUS_OK, NULL, 0); /* KMCL: "placed in the ring" */
    return STATUS_OK;
}

/* ---- synchronous requests ---- */

struct sync_wait {
    struct event done;
    void *resp;
    uint32_t room, got;
    status_t status;
};

static void sync_routine(struct kmcl_packet *pkt, status_t status, const void *buf, uint32_t len)
{
    struct sync_wait *w = pkt->ctx;
    w->status = status;
    w->got = len < w->room ? len : w->room;
    if (w->got)
        memcpy(w->resp, buf, w->got);
    event_set(&w->done);
}

status_t kmcl_channel_send_synchronous_request(struct kmcl_channel *ch, const void *buf, uint32_t len,
                                               const struct kmcl_page_range *ext, uint32_t ext_count, void *resp,
                                               uint32_t *resp_len, uint64_t timeout_ns)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    if (!resp_len || (*resp_len && !resp) || (*resp_len % 8))
        return STATUS_INVALID_PARAMETER;
    if (!kmcl_usable(ch))
        return refusal(ch);
    if (timeout_ns == 0) {
        irql_t old = kmcl_lock(&ch->send_lock);
        bool room = list_empty(&ch->ep.outq[ch->ep.packet_queue]) &&
                    kmcl_ring_write_space(&ch->ep.out) >= kmcl_ring_packet_bytes(0, len) + 64u * (ext_count + 1);
        kmcl_unlock(&ch->send_lock, old);
        if (!room)
            return STATUS_NO_SPACE;
    }
    struct kmcl_packet *pkt;
    status_t s = kmcl_packet_allocate(ch, &pkt);
    if (s != STATUS_OK)
        return s;
    struct sync_wait w = { .resp = resp, .room = *resp_len };
    event_init(&w.done, EVENT_NOTIFICATION, false);
    kmcl_packet_set_context(pkt, &w);
    kmcl_packet_set_completion_routine(pkt, sync_routine);
    s = kmcl_packet_send(pkt, buf, len, ext, ext_count, KMCL_SEND_WAIT_FOR_COMPLETION);
    if (s != STATUS_OK) {
        kmcl_packet_free(pkt);
        return s;
    }
    s = event_wait(&w.done, timeout_ns ? timeout_ns : 1);
    if (s == STATUS_OK) {
        *resp_len = w.got;
        kmcl_packet_free(pkt);
        return w.status;
    }
    /* Timed out. If the request is still queued or outstanding, its completion (or the
     * cancellation) retires the packet when it comes; if it was just taken, its routine is about to
     * run: wait for it. */
    irql_t old = kmcl_lock(&ch->send_lock);
    void *unused;
    bool outstanding = pkt->out.queued || kmcl_xact_lookup(&ch->ep.xacts, pkt->out.trans_id, &unused) == STATUS_OK;
    if (outstanding)
        pkt->abandoned = true;
    kmcl_unlock(&ch->send_lock, old);
    if (!outstanding) {
        s = event_wait(&w.done, WAIT_FOREVER);
        *resp_len = w.got;
        kmcl_packet_free(pkt);
        return w.status;
    }
    pr_warn("kmcl: %s (relid %u): no completion for a synchronous request in %llu ms", ch->name, ch->relid,
            (unsigned long long)(timeout_ns / 1000000));
    return STATUS_TIMEOUT;
}

/* ---- completions of incoming packets ---- */

/* Writes the completion of `in`, or queues it (ahead of queued packets, the packet held until it is
 * written): a completion is never lost and never waits at DISPATCH. */
static void send_completion(struct kmcl_channel *ch, struct kmcl_incoming *in, const void *buf, uint32_t len)
{
    bool queued = false, sig = false;
    status_t st = STATUS_INVALID_STATE;
    irql_t old = kmcl_lock(&ch->send_lock);
    /* Under send_lock: disable sets DISABLING and then takes the lock once, so after that no
     * completion is written into rings the close is about to free (nor after a rescind). */
    if (kmcl_usable(ch)) {
        st = kmcl_ep_complete(&ch->ep, &in->ep, buf, len, &queued, &sig);
        if (queued)
            __atomic_add_fetch(&in->holds, 1, __ATOMIC_ACQ_REL); /* released once written */
    }
    kmcl_unlock(&ch->send_lock, old);
    if (st == STATUS_NO_MEMORY) {
        struct kmcl_ring_failure f = { "out of memory for a completion waiting for ring space", 0, len, 0 };
        kmcl_fail_channel(ch, &f, "queueing a completion");
    } else if (st == STATUS_OK) {
        kmcl_stat_inc(queued ? &ch->stats.queued_completions : &ch->stats.completions_out);
    } else if (st != STATUS_INVALID_STATE) {
        kmcl_fail_channel(ch, kmcl_ring_failure(&ch->ep.out), "writing a completion");
    }
    if (sig)
        kmcl_signal_host(ch);
}

void kmcl_channel_packet_complete(struct kmcl_incoming *in, const void *buf, uint32_t len)
{
    IRQL_ASSERT_MAX(IRQL_DISPATCH);
    if (__atomic_load_n(&in->in_callback, __ATOMIC_ACQUIRE) && in->deferred) {
        pr_err("kmcl: a packet deferred to passive was also completed: completion ignored");
        return;
    }
    if (__atomic_exchange_n(&in->completed, true, __ATOMIC_ACQ_REL)) {
        pr_err("kmcl: %s: a packet completed twice (trans_id %llu): ignored", in->ch->name,
               (unsigned long long)in->ep.trans_id);
        return;
    }
    if (in->ep.completion_requested)
        send_completion(in->ch, in, buf, len);
    kmcl_release(in); /* the owner's hold; the callback's (if still inside) goes when it returns */
}

void kmcl_channel_packet_fail(struct kmcl_incoming *in, status_t status)
{
    uint32_t st = (uint32_t)status;
    kmcl_channel_packet_complete(in, &st, sizeof st);
}

/* Suppressed queue management: the driver completes a packet it read itself. */
status_t kmcl_channel_send_raw_completion(struct kmcl_channel *ch, uint64_t trans_id, const void *buf, uint32_t len)
{
    struct kmcl_ep_out o = { .type = KMCL_PKT_COMPLETION, .trans_id = trans_id, .payload = buf, .len = len };
    status_t st = STATUS_INVALID_STATE;
    bool sig = false;
    irql_t old = kmcl_lock(&ch->send_lock);
    if (kmcl_usable(ch))
        st = kmcl_ep_write(&ch->ep, &o, &sig);
    kmcl_unlock(&ch->send_lock, old);
    if (st == STATUS_OK)
        kmcl_stat_inc(&ch->stats.completions_out);
    else if (st != STATUS_NO_SPACE && st != STATUS_INVALID_STATE)
        kmcl_fail_channel(ch, kmcl_ring_failure(&ch->ep.out), "writing a completion");
    if (sig)
        kmcl_signal_host(ch);
    return st == STATUS_OK || st == STATUS_NO_SPACE ? st : STATUS_INVALID_STATE;
}

/* ---- the host's completions of our packets ---- */

void kmcl_take_completion(struct kmcl_channel *ch, const struct kmcl_ring_packet *p)
{
    struct kmcl_ep_out *o = NULL;
    struct kmcl_pkt_inband c;
    irql_t old = kmcl_lock(&ch->send_lock);
    if (kmcl_is_rescinded(ch)) { /* its packet was cancelled already */
        kmcl_unlock(&ch->send_lock, old);
        return;
    }
    status_t s = kmcl_ep_take_completion(&ch->ep, p, &o, &c);
    struct kmcl_packet *pkt = s == STATUS_OK ? container_of(o, struct kmcl_packet, out) : NULL;
    bool abandoned = pkt && pkt->abandoned;
    kmcl_unlock(&ch->send_lock, old);
    if (s == STATUS_INVALID_PARAMETER)
        return; /* not a completion */
    kmcl_stat_inc(&ch->stats.completions_in);
    if (s != STATUS_OK) {
        kmcl_fail_channel(ch, kmcl_ring_failure(&ch->ep.in), "reading a completion");
        return;
    }
    if (abandoned) { /* a synchronous request that timed out: nobody waits for it any more */
        kmcl_packet_free(pkt);
        return;
    }
    run_routine(pkt, STATUS_OK, c.payload, c.payload_len);
}

status_t kmcl_channel_complete_transaction(struct kmcl_channel *ch, const struct kmcl_ring_packet *p)
{
    if (p->desc.type != KMCL_PKT_COMPLETION)
        return STATUS_INVALID_PARAMETER;
    kmcl_take_completion(ch, p);
    return kmcl_is_failed(ch) ? STATUS_BAD_DATA : STATUS_OK;
}
