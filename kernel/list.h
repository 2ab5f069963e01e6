/* list: an intrusive circular doubly linked list. No locking; the owner of the list serialises. */
#ifndef KERNEL_LIST_H
#define KERNEL_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct list {
    struct list *next, *prev;
};

#define LIST_INIT(name) { &(name), &(name) }
#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

static inline void list_init(struct list *l) { l->next = l->prev = l; }
static inline bool list_empty(const struct list *l) { return l->next == l; }
/* A node removed with list_remove() is self-linked, so this tells whether it is on a list. */
static inline bool list_linked(const struct list *n) { return n->next != n && n->next != NULL; }

static inline void list_insert_before(struct list *pos, struct list *n)
{
    n->prev = pos->prev;
    n->next = pos;
    pos->prev->next = n;
    pos->prev = n;
}
static inline void list_push_back(struct list *l, struct list *n) { list_insert_before(l, n); }
static inline void list_push_front(struct list *l, struct list *n) { list_insert_before(l->next, n); }
static inline void list_remove(struct list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n->prev = n;
}
static inline struct list *list_pop_front(struct list *l)
{
    if (list_empty(l))
        return NULL;
    struct list *n = l->next;
    list_remove(n);
    return n;
}

#define list_for_each(it, head) for (struct list *it = (head)->next; it != (head); it = it->next)
#define list_for_each_safe(it, tmp, head)                                                                      \
    for (struct list *it = (head)->next, *tmp = it->next; it != (head); it = tmp, tmp = it->next)

#endif
