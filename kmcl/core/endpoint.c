/*
 * endpoint: the engine both kmcl endpoints run (contract in kmcl/core/endpoint.h). No locks, no
 * logging; memory through the endpoint's allocator.
 */
#include "kmcl/core/endpoint.h"

#include "kernel/string.h"

status_t kmcl_ep_init(struct kmcl_ep *ep, enum kmcl_ep_role role, const struct kmcl_ep_alloc *mem,
                      struct kmcl_xact_slot *slots, uint32_t capacity, uint32_t max_packet,
                      uint32_t max_packet_limit)
{
    *ep = (struct kmcl_ep){ .role = role, .state = KMCL_EP_INITIALIZING, .mem = mem, .max_packet = max_packet,
                            .max_packet_limit = max_packet_limit, .packet_queue = role == KMCL_EP_CLIENT ? 1 : 0 };
    list_init(&ep->outq[0]);
    list_init(&ep->outq[1]);
    list_init(&ep->free_incoming);
    return kmcl_xact_init(&ep->xacts, slots, capacity);
}

void kmcl_ep_add_incoming(struct kmcl_ep *ep, struct kmcl_ep_incoming *in)
{
    list_init(&in->completion.link);
    list_push_back(&ep->free_incoming, &in->link);
}

void kmcl_ep_destroy(struct kmcl_ep *ep)
{
    ep->mem->free(ep->client_context);
    ep->client_context = NULL;
    ep->mem->free(ep->bounce);
    ep->bounce = NULL;
}

/* ---- init-set ---- */

status_t kmcl_ep_init_only(const struct kmcl_ep *ep)
{
    return ep && ep->state == KMCL_EP_INITIALIZING ? STATUS_OK : STATUS_INVALID_PARAMETER;
}

status_t kmcl_ep_init_set_client_context_size(struct kmcl_ep *ep, size_t bytes)
{
    status_t s = kmcl_ep_init_only(ep);
    if (s != STATUS_OK)
        return s;
    void *p = bytes ? ep->mem->zalloc(bytes) : NULL;
    if (bytes && !p)
        return STATUS_NO_MEMORY;
    ep->mem->free(ep->client_context);
    ep->client_context = p;
    ep->client_context_size = bytes;
    return STATUS_OK;
}

status_t kmcl_ep_init_set_maximum_packet_size(struct kmcl_ep *ep, uint32_t bytes)
{
    status_t s = kmcl_ep_init_only(ep);
    if (s == STATUS_OK && (bytes < 8 || bytes > ep->max_packet_limit))
        s = STATUS_INVALID_PARAMETER;
    if (s == STATUS_OK)
        ep->max_packet = bytes;
    return s;
}

status_t kmcl_ep_init_set_flags(struct kmcl_ep *ep, uint32_t flags)
{
    status_t s = kmcl_ep_init_only(ep);
    if (s == STATUS_OK && (flags & ~KMCL_EP_FLAG_SUPPRESS_QUEUE_MANAGEMENT))
        s = STATUS_INVALID_PARAMETER;
    if (s == STATUS_OK)
        ep->flags = flags;
    return s;
}

status_t kmcl_ep_init_set_process_packet_callbacks(struct kmcl_ep *ep, kmcl_ep_fn process_packet,
                                                   kmcl_ep_fn processing_complete)
{
    status_t s = kmcl_ep_init_only(ep);
    if (s == STATUS_OK && !process_packet)
        s = STATUS_INVALID_PARAMETER;
    if (s == STATUS_OK) {
        ep->process_packet = process_packet;
        ep->processing_complete = processing_complete;
    }
    return s;
}

status_t kmcl_ep_init_set_queue_callback(struct kmcl_ep *ep, kmcl_ep_fn queue)
{
    status_t s = kmcl_ep_init_only(ep);
    if (s == STATUS_OK && !queue)
        s = STATUS_INVALID_PARAMETER;
    if (s == STATUS_OK)
        ep->queue = queue;
    return s;
}

status_t kmcl_ep_init_set_state_change_callbacks(struct kmcl_ep *ep, const kmcl_ep_fn *states)
{
    status_t s = kmcl_ep_init_only(ep);
    if (s == STATUS_OK && !states)
        s = STATUS_INVALID_PARAMETER;
    if (s == STATUS_OK)
        memcpy(ep->states, states, sizeof ep->states);
    return s;
}

status_t kmcl_ep_enable_check(const struct kmcl_ep *ep)
{
    status_t s = kmcl_ep_init_only(ep);
    if (s != STATUS_OK)
        return s;
    bool suppressed = ep->flags & KMCL_EP_FLAG_SUPPRESS_QUEUE_MANAGEMENT;
    return (suppressed ? ep->queue : ep->process_packet) ? STATUS_OK : STATUS_INVALID_PARAMETER;
}

status_t kmcl_ep_alloc_bounce(struct kmcl_ep *ep)
{
    ep->bounce_size = ep->in.size;
    ep->bounce = ep->mem->alloc(ep->bounce_size ? ep->bounce_size : 1);
    return ep->bounce ? STATUS_OK : STATUS_NO_MEMORY;
}

/* ---- the in side ---- */

void kmcl_ep_incoming_free_heap_(struct kmcl_ep *ep, struct kmcl_ep_incoming *in)
{
    ep->mem->free(in->completion_heap);
    in->completion_heap = NULL;
}

status_t kmcl_ep_get_external_data(const struct kmcl_ep_incoming *in, struct kmcl_pkt_gpa *gpa,
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

enum kmcl_ep_next kmcl_ep_next_slow_(struct kmcl_ep *ep, struct kmcl_ring_packet *p, status_t peeked)
{
    struct kmcl_ring_failure f = { 0 };
    if (peeked != STATUS_OK) {
        if (kmcl_ring_failure(&ep->in))
            return KMCL_EP_FAILED;
        /* No bounce buffer big enough (it is as large as the ring): cannot happen, but never loop. */
        f = (struct kmcl_ring_failure){ "a wrapped packet larger than the bounce buffer", p->ring_offset,
                                        ep->bounce_size, 0 };
    } else {
        f = (struct kmcl_ring_failure){ ep->role == KMCL_EP_SERVER ? "packet type a server does not take"
                                                                   : "packet type a client does not take",
                                        p->ring_offset, p->desc.type, 0 };
    }
    kmcl_ring_fail(&ep->in, &f);
    return KMCL_EP_FAILED;
}

status_t kmcl_ep_unknown_completion_(struct kmcl_ep *ep, const struct kmcl_ring_packet *p, uint64_t trans_id)
{
    struct kmcl_ring_failure f = { KMCL_EP_UNKNOWN_COMPLETION, p->ring_offset, trans_id, 0 };
    kmcl_ring_fail(&ep->in, &f);
    return STATUS_BAD_DATA;
}

/* ---- the out side ---- */

status_t kmcl_ep_write_ext_(struct kmcl_ep *ep, const struct kmcl_ep_out *o, uint16_t flags,
                            const struct kmcl_iov *iov, bool *sig)
{
    if (o->type == KMCL_PKT_DATA_GPA_DIRECT)
        return kmcl_pkt_send_gpa_direct(&ep->out, o->trans_id, flags, o->gpa, o->range_count, iov, 1, 0, sig);
    return kmcl_pkt_send_xfer(&ep->out, o->trans_id, flags, o->pageset_id, 0, o->xfer, o->range_count, iov, 1, 0,
                              sig);
}

void kmcl_ep_unwrite_(struct kmcl_ep *ep, struct kmcl_ep_out *o)
{
    void *unused;
    status_t freed = kmcl_xact_complete(&ep->xacts, o->trans_id, &unused); /* never in the ring: never sent */
    (void)freed;
    o->trans_id = 0;
}

void kmcl_ep_queue_(struct kmcl_ep *ep, struct kmcl_ep_out *o, void *copy)
{
    if (o->len && copy != o->payload) /* the sender's buffer need not outlive the call */
        memcpy(copy, o->payload, o->len);
    o->payload = copy;
    o->queued = true;
    if (o->wait)
        ep->waiting++;
    list_push_back(kmcl_ep_queue_of_(ep, o), &o->link);
}

status_t kmcl_ep_queue_completion_(struct kmcl_ep *ep, struct kmcl_ep_incoming *in, const void *buf, uint32_t len)
{
    uint8_t *copy = in->completion_inline;
    if (len > KMCL_EP_COMPLETION_INLINE && !(copy = in->completion_heap = ep->mem->alloc(len)))
        return STATUS_NO_MEMORY;
    if (len)
        memcpy(copy, buf, len);
    kmcl_ep_queue_(ep, &in->completion, copy);
    return STATUS_OK;
}

status_t kmcl_ep_flush(struct kmcl_ep *ep, struct list *done, struct kmcl_ep_flushed *n, bool *sig)
{
    for (uint32_t q = 0; q < 2; q++) {
        while (!list_empty(&ep->outq[q])) {
            struct kmcl_ep_out *o = container_of(ep->outq[q].next, struct kmcl_ep_out, link);
            status_t st = kmcl_ep_write_now_(ep, o, sig);
            if (st == STATUS_NO_SPACE)
                return STATUS_OK; /* the rest keeps its order behind it */
            if (st != STATUS_OK)
                return st;
            list_remove(&o->link);
            o->queued = false;
            if (o->type == KMCL_PKT_COMPLETION)
                n->completions++;
            else
                n->packets++;
            if (o->wait)
                ep->waiting--; /* its id is in the table now */
            else
                list_push_back(done, &o->link);
        }
    }
    return STATUS_OK;
}

void kmcl_ep_take_all(struct kmcl_ep *ep, struct list *to)
{
    for (uint32_t q = 0; q < 2; q++)
        while (!list_empty(&ep->outq[q])) {
            list_push_back(to, list_pop_front(&ep->outq[q])); /* queued stays set: the caller looks */
        }
    ep->waiting = 0;
    uint64_t id;
    void *ctx;
    while (kmcl_xact_take_any(&ep->xacts, &id, &ctx) == STATUS_OK)
        list_push_back(to, &((struct kmcl_ep_out *)ctx)->link);
}
