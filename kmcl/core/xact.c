/*
 * xact: outstanding transactions by id. Contract in kmcl/core/xact.h.
 *
 * Free slots form a singly linked list through next_free (LIFO: the slot freed last is reused
 * first, warm in the cache; its generation has moved on, so its new id differs).
 */
#include "kmcl/core/xact.h"

static inline uint64_t make_id(uint32_t generation, uint32_t index)
{
    return (uint64_t)generation << 32 | (uint64_t)(index + 1);
}

status_t kmcl_xact_init(struct kmcl_xact_table *t, struct kmcl_xact_slot *storage, uint32_t capacity)
{
    if (!storage || capacity == 0 || capacity > KMCL_XACT_MAX_CAPACITY)
        return STATUS_INVALID_PARAMETER;
    t->slots = storage;
    t->capacity = capacity;
    t->outstanding = 0;
    t->free_head = 0;
    for (uint32_t i = 0; i < capacity; i++) {
        storage[i].context = 0;
        storage[i].generation = 1;
        storage[i].next_free = i + 1; /* the last one points at capacity: the end */
    }
    return STATUS_OK;
}

status_t kmcl_xact_alloc(struct kmcl_xact_table *t, void *context, uint64_t *id)
{
    uint32_t i = t->free_head;
    if (i >= t->capacity)
        return STATUS_NO_SPACE;
    struct kmcl_xact_slot *s = &t->slots[i];
    t->free_head = s->next_free;
    s->next_free = KMCL_XACT_IN_USE;
    s->context = context;
    t->outstanding++;
    *id = make_id(s->generation, i);
    return STATUS_OK;
}

/* The slot an id names if it is outstanding with that generation, else NULL. */
static struct kmcl_xact_slot *find(const struct kmcl_xact_table *t, uint64_t id)
{
    uint32_t low = (uint32_t)id;
    if (low == 0 || low > t->capacity)
        return 0;
    struct kmcl_xact_slot *s = &t->slots[low - 1];
    if (s->next_free != KMCL_XACT_IN_USE || s->generation != (uint32_t)(id >> 32))
        return 0;
    return s;
}

static void release(struct kmcl_xact_table *t, struct kmcl_xact_slot *s)
{
    uint32_t i = (uint32_t)(s - t->slots);
    s->context = 0;
    s->generation++;
    if (s->generation == 0)
        s->generation = 1;
    s->next_free = t->free_head;
    t->free_head = i;
    t->outstanding--;
}

status_t kmcl_xact_complete(struct kmcl_xact_table *t, uint64_t id, void **context)
{
    struct kmcl_xact_slot *s = find(t, id);
    if (!s)
        return STATUS_NOT_FOUND;
    *context = s->context;
    release(t, s);
    return STATUS_OK;
}

status_t kmcl_xact_lookup(const struct kmcl_xact_table *t, uint64_t id, void **context)
{
    struct kmcl_xact_slot *s = find(t, id);
    if (!s)
        return STATUS_NOT_FOUND;
    *context = s->context;
    return STATUS_OK;
}

status_t kmcl_xact_take_any(struct kmcl_xact_table *t, uint64_t *id, void **context)
{
    if (t->outstanding == 0)
        return STATUS_NOT_FOUND;
    for (uint32_t i = 0; i < t->capacity; i++) {
        struct kmcl_xact_slot *s = &t->slots[i];
        if (s->next_free == KMCL_XACT_IN_USE) {
            *id = make_id(s->generation, i);
            *context = s->context;
            release(t, s);
            return STATUS_OK;
        }
    }
    return STATUS_NOT_FOUND; /* not reached: outstanding counts in-use slots */
}
