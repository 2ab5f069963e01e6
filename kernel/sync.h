/*
 * sync: events (notification and synchronization, as KEVENT), semaphores and mutexes, all built on
 * wait queues. Waits take a timeout in nanoseconds (WAIT_FOREVER, or 0 to poll).
 *
 * IRQL: a wait that may block requires PASSIVE (asserted); a poll (timeout 0) is allowed up to
 * DISPATCH. event_set/event_reset/semaphore_release may be called at any IRQL (DPCs and interrupt
 * handlers wake threads with them). mutex_lock/unlock: PASSIVE only; a mutex is owned by a thread,
 * is not recursive (relocking panics), and only its owner may unlock it.
 */
#ifndef KERNEL_SYNC_H
#define KERNEL_SYNC_H

#include <stdbool.h>
#include <stdint.h>

#include "arch-x86_64/spinlock.h"
#include "kernel/list.h"
#include "kernel/status.h"

#define WAIT_FOREVER UINT64_MAX

struct thread;

struct wait_queue {
    spinlock_t lock; /* taken at HIGH */
    struct list waiters;
};

struct wait_block {
    struct list link;
    struct thread *thread;
    struct wait_queue *queue;
    status_t result;
};

/* try_take: with the queue lock held, claims the object for thread t if it can. */
typedef bool (*wait_take_fn)(void *obj, struct thread *t);

void wait_queue_init(struct wait_queue *q);
status_t wait_queue_wait(struct wait_queue *q, wait_take_fn take, void *obj, uint64_t timeout_ns) WARN_UNUSED;
/* With q->lock held: wakes waiters in FIFO order while take() succeeds for them. */
void wait_queue_wake_locked(struct wait_queue *q, wait_take_fn take, void *obj);

enum event_type { EVENT_NOTIFICATION, EVENT_SYNCHRONIZATION };
struct event {
    struct wait_queue q;
    bool signaled;
    bool auto_reset;
};
void event_init(struct event *e, enum event_type type, bool signaled);
void event_set(struct event *e);
void event_reset(struct event *e);
bool event_is_set(struct event *e);
status_t event_wait(struct event *e, uint64_t timeout_ns) WARN_UNUSED;

struct semaphore {
    struct wait_queue q;
    uint32_t count, limit;
};
void semaphore_init(struct semaphore *s, uint32_t count, uint32_t limit);
status_t semaphore_release(struct semaphore *s, uint32_t n) WARN_UNUSED; /* STATUS_NO_SPACE past limit */
status_t semaphore_wait(struct semaphore *s, uint64_t timeout_ns) WARN_UNUSED;

struct mutex {
    struct wait_queue q;
    struct thread *owner;
};
void mutex_init(struct mutex *m);
status_t mutex_lock_timeout(struct mutex *m, uint64_t timeout_ns) WARN_UNUSED;
void mutex_lock(struct mutex *m);
void mutex_unlock(struct mutex *m);

#endif
