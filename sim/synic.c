/*
 * hvsim SynIC: per VP and SINT message queues, the SIM page slots with the pending/EOM rules, and
 * the SIEF event flags (T:inter-partition-communication.md; hyperv-facts.md 3.4).
 *
 * A message goes into its SINT's slot only when the VP's SCONTROL and SIMP are enabled, the SINT is
 * unmasked (or polling) and the slot is empty (message_type 0); otherwise it waits in the queue. A
 * busy slot gets HV_MESSAGE_FLAG_PENDING so the guest knows to write EOM. Delivery is attempted when
 * a message is queued, on EOM, and when SCONTROL, SIMP or the SINT becomes enabled.
 *
 * The TLFS also lets EOM drain a masked SINT; iPXE found real Hyper-V delivers nothing to a masked
 * SINT (hyperv-facts.md 3.4), and hvsim follows that stricter behaviour.
 *
 * The guest reads its slots and flags concurrently (another thread in the hosted tests, another
 * process under QEMU): a slot's message_type is written last with a release store, the pending flag
 * and event flags with atomic read-modify-writes.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "sim/hvsim_internal.h"

#define SLOT_TYPE offsetof(struct hv_message_header, message_type)
#define SLOT_FLAGS offsetof(struct hv_message_header, message_flags)

bool synic_sint_open(uint64_t sint)
{
    return !(sint & HV_SINT_MASKED) || (sint & HV_SINT_POLLING);
}

bool synic_sint_interrupts(uint64_t sint)
{
    return !(sint & HV_SINT_MASKED) && !(sint & HV_SINT_POLLING);
}

bool synic_alloc_queues(struct hvsim *sim)
{
    uint32_t depth = sim->cfg.queue_depth;
    sim->queue_storage = calloc((size_t)sim->cfg.vp_count * HV_SINT_COUNT * depth, sizeof *sim->queue_storage);
    if (!sim->queue_storage)
        return false;
    for (uint32_t v = 0; v < sim->cfg.vp_count; v++)
        for (uint32_t s = 0; s < HV_SINT_COUNT; s++)
            sim->vp[v].queue[s].ring = sim->queue_storage + ((size_t)v * HV_SINT_COUNT + s) * depth;
    return true;
}

void synic_free_queues(struct hvsim *sim)
{
    free(sim->queue_storage);
    sim->queue_storage = NULL;
}

/* Moves the next message of (vp, sint) into its slot if the slot can take it. */
static void deliver(struct hvsim *sim, uint32_t vp, uint32_t sint)
{
    struct hvsim_vp *v = &sim->vp[vp];
    struct hvsim_queue *q = &v->queue[sint];
    if (!q->count || !(v->scontrol & HV_SCONTROL_ENABLE) || !(v->simp & HV_PAGE_ENABLE) ||
        !synic_sint_open(v->sint[sint]))
        return;
    /* The page was checked when SIMP was enabled and RAM does not shrink; check again anyway. */
    uint8_t *page = hvsim_gpa(sim, v->simp & HV_PAGE_GPA_MASK, HVSIM_PAGE_SIZE);
    if (!page)
        return;
    uint8_t *slot = page + (size_t)sint * HV_MESSAGE_SIZE;
    uint32_t *type = (uint32_t *)(slot + SLOT_TYPE);
    uint8_t *flags = slot + SLOT_FLAGS;
    if (__atomic_load_n(type, __ATOMIC_ACQUIRE) != HV_MESSAGE_NONE) {
        /* Busy: tell the guest another message waits. The guest frees the slot (type = 0), fences,
         * then reads the flag; setting the flag and then re-reading the type closes the race where
         * it read the flag just before we set it. */
        __atomic_fetch_or(flags, HV_MESSAGE_FLAG_PENDING, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(type, __ATOMIC_SEQ_CST) != HV_MESSAGE_NONE)
            return;
    }
    const struct hv_message *m = &q->ring[q->head].message;
    size_t n = m->header.payload_size < HV_MESSAGE_PAYLOAD_MAX ? m->header.payload_size : HV_MESSAGE_PAYLOAD_MAX;
    memcpy(slot + offsetof(struct hv_message, payload), m->payload, n);
    /* The header after message_type: payload_size, flags (set below), reserved, origination_id. */
    memcpy(slot + SLOT_TYPE + sizeof *type, (const uint8_t *)m + SLOT_TYPE + sizeof *type,
           sizeof(struct hv_message_header) - sizeof *type);
    __atomic_store_n(flags, q->count > 1 ? HV_MESSAGE_FLAG_PENDING : 0, __ATOMIC_RELAXED);
    __atomic_store_n(type, m->header.message_type, __ATOMIC_RELEASE);
    hvsim_log(sim, 1, "vp%u sint%u: message type 0x%x size %u delivered%s", vp, sint, m->header.message_type,
              m->header.payload_size, q->count > 1 ? " (more pending)" : "");
    q->head = (q->head + 1) % sim->cfg.queue_depth;
    q->count--;
    q->overflow_reported = false;
    sim->stats.messages_delivered++;
    if (synic_sint_interrupts(v->sint[sint]))
        hvsim_raise(sim, vp, (uint8_t)(v->sint[sint] & HV_SINT_VECTOR_MASK));
}

void synic_deliver_all(struct hvsim *sim, uint32_t vp)
{
    for (uint32_t s = 0; s < HV_SINT_COUNT; s++)
        deliver(sim, vp, s);
}

void synic_eom(struct hvsim *sim, uint32_t vp)
{
    sim->stats.eoms++;
    synic_deliver_all(sim, vp);
}

bool synic_post(struct hvsim *sim, uint32_t vp, uint32_t sint, uint32_t type, const void *payload, uint32_t size,
                bool raw, uint8_t from_timer)
{
    if (vp >= sim->cfg.vp_count || sint >= HV_SINT_COUNT || type == HV_MESSAGE_NONE || size > UINT8_MAX ||
        (size > HV_MESSAGE_PAYLOAD_MAX && !raw) || (size && !payload)) {
        hvsim_log(sim, 0, "post to vp%u sint%u (type 0x%x, size %u) rejected: out of range", vp, sint, type, size);
        return false;
    }
    struct hvsim_queue *q = &sim->vp[vp].queue[sint];
    if (q->count == sim->cfg.queue_depth) {
        if (!q->overflow_reported)
            hvsim_log(sim, 0, "vp%u sint%u: message queue full (%u): guest not consuming its slot?", vp, sint,
                      q->count);
        q->overflow_reported = true;
        return false;
    }
    struct hvsim_queued_message *slot = &q->ring[(q->head + q->count) % sim->cfg.queue_depth];
    memset(slot, 0, sizeof *slot);
    slot->message.header.message_type = type;
    slot->message.header.payload_size = (uint8_t)size;
    if (size)
        memcpy(slot->message.payload, payload, size < HV_MESSAGE_PAYLOAD_MAX ? size : HV_MESSAGE_PAYLOAD_MAX);
    slot->from_timer = from_timer;
    q->count++;
    deliver(sim, vp, sint);
    if (q->count)
        sim->stats.messages_queued++; /* FIFO: if anything is left, the new message is */
    return true;
}

bool synic_timer_message_queued(const struct hvsim *sim, uint32_t vp, uint32_t sint, uint8_t from_timer)
{
    const struct hvsim_queue *q = &sim->vp[vp].queue[sint];
    for (uint32_t i = 0; i < q->count; i++)
        if (q->ring[(q->head + i) % sim->cfg.queue_depth].from_timer == from_timer)
            return true;
    return false;
}

bool hvsim_post_locked(struct hvsim *sim, uint32_t vp, uint32_t sint, uint32_t type, const void *payload,
                       uint32_t size, bool raw)
{
    return synic_post(sim, vp, sint, type, payload, size, raw, 0);
}

bool hvsim_post(struct hvsim *sim, uint32_t vp, uint32_t sint, uint32_t type, const void *payload, uint32_t size,
                bool raw)
{
    pthread_mutex_lock(&sim->lock);
    bool ok = synic_post(sim, vp, sint, type, payload, size, raw, 0);
    pthread_mutex_unlock(&sim->lock);
    return ok;
}

/* Sets the flag in the VP's SIEF page and raises the SINT if the flag was clear. A masked SINT gets
 * the flag without the interrupt; a disabled SynIC or SIEF page cannot take it (false). */
bool hvsim_signal_locked(struct hvsim *sim, uint32_t vp, uint32_t sint, uint32_t flag)
{
    if (vp >= sim->cfg.vp_count || sint >= HV_SINT_COUNT || flag >= HV_EVENT_FLAGS_PER_SINT)
        return false;
    struct hvsim_vp *v = &sim->vp[vp];
    if (!(v->scontrol & HV_SCONTROL_ENABLE) || !(v->siefp & HV_PAGE_ENABLE))
        return false;
    uint8_t *page = hvsim_gpa(sim, v->siefp & HV_PAGE_GPA_MASK, HVSIM_PAGE_SIZE);
    if (!page)
        return false;
    uint64_t *word = (uint64_t *)(page + (size_t)sint * sizeof(struct hv_event_flags)) + flag / 64;
    uint64_t bit = 1ull << (flag % 64);
    uint64_t old = __atomic_fetch_or(word, bit, __ATOMIC_SEQ_CST);
    hvsim_log(sim, 1, "vp%u sint%u: event flag %u set%s", vp, sint, flag, (old & bit) ? " (already set)" : "");
    if (!(old & bit) && synic_sint_interrupts(v->sint[sint]))
        hvsim_raise(sim, vp, (uint8_t)(v->sint[sint] & HV_SINT_VECTOR_MASK));
    return true;
}

bool hvsim_signal(struct hvsim *sim, uint32_t vp, uint32_t sint, uint32_t flag)
{
    pthread_mutex_lock(&sim->lock);
    bool ok = hvsim_signal_locked(sim, vp, sint, flag);
    pthread_mutex_unlock(&sim->lock);
    return ok;
}
