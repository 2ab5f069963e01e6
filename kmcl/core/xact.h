/*
 * xact: the table of outstanding transactions of a channel — requests sent with
 * KMCL_PKT_FLAG_COMPLETION_REQUESTED whose completion packet (type 11, same trans_id) has not come
 * back yet. An id is allocated with a context pointer before the request is sent; the completion's
 * trans_id finds the context and frees the id.
 *
 * The trans_id of a completion comes from the peer and is not trusted: an id that was never
 * handed out, was already completed, or belongs to an earlier use of a slot is refused with
 * STATUS_NOT_FOUND. Ids are (generation << 32) | (slot + 1): the generation of a slot advances each
 * time it is freed, so a stale or duplicated completion cannot match the slot's next request (until
 * that one slot has been reused 2^32 times). Id 0 is never handed out.
 *
 * Memory: the caller provides the slot storage (capacity entries) and keeps it alive with the table;
 * nothing is allocated. The table never touches the contexts.
 * IRQL: any, up to HIGH; nothing blocks. Every call is O(1).
 * Thread-safety: none inside. The caller serialises all calls on one table (the channel's lock, or a
 * single thread that both sends requests and reads completions).
 */
#ifndef KMCL_XACT_H
#define KMCL_XACT_H

#include <stdint.h>

#include "kernel/status.h"

/* A slot: private, the caller only provides the storage. */
struct kmcl_xact_slot {
    void *context;
    uint32_t generation; /* never 0 */
    uint32_t next_free;  /* index of the next free slot; KMCL_XACT_IN_USE while outstanding */
};

#define KMCL_XACT_IN_USE 0xFFFFFFFFu
#define KMCL_XACT_MAX_CAPACITY 0x7FFFFFFFu

struct kmcl_xact_table {
    struct kmcl_xact_slot *slots;
    uint32_t capacity;
    uint32_t free_head; /* capacity when none is free */
    uint32_t outstanding;
};

/* Sets up an empty table over storage[capacity] (1 <= capacity <= KMCL_XACT_MAX_CAPACITY). */
status_t kmcl_xact_init(struct kmcl_xact_table *t, struct kmcl_xact_slot *storage, uint32_t capacity) WARN_UNUSED;

/* Allocates an id for a new request. STATUS_NO_SPACE when every slot is outstanding. */
status_t kmcl_xact_alloc(struct kmcl_xact_table *t, void *context, uint64_t *id) WARN_UNUSED;

/* Looks up an outstanding id and removes it, returning its context. STATUS_NOT_FOUND for an id
 * that is not outstanding (unknown, stale or already completed). */
status_t kmcl_xact_complete(struct kmcl_xact_table *t, uint64_t id, void **context) WARN_UNUSED;

/* Looks up an outstanding id without removing it. */
status_t kmcl_xact_lookup(const struct kmcl_xact_table *t, uint64_t id, void **context) WARN_UNUSED;

/* Removes some outstanding transaction (for tearing a channel down: cancel them all).
 * STATUS_NOT_FOUND when none is left. O(capacity) per call. */
status_t kmcl_xact_take_any(struct kmcl_xact_table *t, uint64_t *id, void **context) WARN_UNUSED;

static inline uint32_t kmcl_xact_outstanding(const struct kmcl_xact_table *t)
{
    return t->outstanding;
}

#endif
