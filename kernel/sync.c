#include "kernel/sync.h"

#include "arch-x86_64/irql.h"
#include "kernel/dpc.h"
#include "kernel/panic.h"
#include "kernel/percpu.h"
#include "kernel/thread.h"
#include "kernel/timer.h"

void wait_queue_init(struct wait_queue *q)
{
    q->lock = (spinlock_t)SPINLOCK_INIT;
    list_init(&q->waiters);
}

/* The thread's wait timed out: its DPC runs on the thread's CPU at DISPATCH, while the thread is
 * not running, so its wait block (on its stack) is still there if t->wait points at it. */
static void wait_timeout(struct dpc *d, void *ctx)
{
    (void)d;
    struct thread *t = ctx;
    irql_t old = irql_raise(IRQL_HIGH);
    struct wait_block *wb = t->wait;
    if (wb) {
        struct wait_queue *q = wb->queue;
        raw_spin_lock(&q->lock);
        if (t->wait == wb && list_linked(&wb->link)) {
            list_remove(&wb->link);
            wb->result = STATUS_TIMEOUT;
            t->wait = NULL;
            sched_wake(t);
        }
        raw_spin_unlock(&q->lock);
    }
    irql_lower(old);
}

status_t wait_queue_wait(struct wait_queue *q, wait_take_fn take, void *obj, uint64_t timeout_ns)
{
    struct cpu *c = this_cpu();
    struct thread *t = c->current;
    irql_t old = spin_lock_at(&q->lock, IRQL_HIGH);
    if (take(obj, t)) {
        spin_unlock(&q->lock, old);
        return STATUS_OK;
    }
    if (timeout_ns == 0) {
        spin_unlock(&q->lock, old);
        return STATUS_TIMEOUT;
    }
    if (old > IRQL_PASSIVE || t == c->idle) {
        raw_spin_unlock(&q->lock);
        irql_violation("a blocking wait", old, IRQL_PASSIVE, __FILE__, __LINE__);
    }
    struct wait_block wb = { .thread = t, .queue = q, .result = STATUS_TIMEOUT };
    list_push_back(&q->waiters, &wb.link);
    t->wait = &wb;
    if (timeout_ns != WAIT_FOREVER) {
        dpc_init(&t->wait_dpc, wait_timeout, t);
        ktimer_set(&t->wait_timer, timeout_ns, 0, &t->wait_dpc);
    }
    raw_spin_lock(&c->rq_lock);
    t->state = THREAD_BLOCKED;
    raw_spin_unlock(&q->lock);
    sched_switch_locked(c);
    raw_spin_unlock(&c->rq_lock);
    sched_finish_switch(c);
    /* Woken (wb.result says why). Threads never migrate, so c is still our CPU, and the timeout
     * DPC, which runs here at DISPATCH, cannot be midway: cancel both. */
    if (timeout_ns != WAIT_FOREVER) {
        ktimer_cancel(&t->wait_timer);
        dpc_cancel(&t->wait_dpc);
    }
    /* The waker (event_set, semaphore_release, ...) woke us while it still holds q's lock and may
     * still read q: wait until it has let go, so the caller may free q (an event on its stack, say)
     * as soon as we return. A #PF in wait_queue_wake_locked on another CPU, after a kmcl
     * synchronous request's on-stack event was set, showed the race. */
    raw_spin_lock(&q->lock);
    raw_spin_unlock(&q->lock);
    irql_lower(old);
    return wb.result;
}

void wait_queue_wake_locked(struct wait_queue *q, wait_take_fn take, void *obj)
{
    while (!list_empty(&q->waiters)) {
        struct wait_block *wb = container_of(q->waiters.next, struct wait_block, link);
        if (!take(obj, wb->thread))
            break;
        list_remove(&wb->link);
        wb->result = STATUS_OK;
        wb->thread->wait = NULL;
        sched_wake(wb->thread);
    }
}

/* ---- events ---- */

static bool event_take(void *obj, struct thread *t)
{
    (void)t;
    struct event *e = obj;
    if (!e->signaled)
        return false;
    if (e->auto_reset)
        e->signaled = false;
    return true;
}

void event_init(struct event *e, enum event_type type, bool signaled)
{
    wait_queue_init(&e->q);
    e->signaled = signaled;
    e->auto_reset = type == EVENT_SYNCHRONIZATION;
}

void event_set(struct event *e)
{
    irql_t old = spin_lock_at(&e->q.lock, IRQL_HIGH);
    e->signaled = true;
    wait_queue_wake_locked(&e->q, event_take, e);
    spin_unlock(&e->q.lock, old);
}

void event_reset(struct event *e)
{
    irql_t old = spin_lock_at(&e->q.lock, IRQL_HIGH);
    e->signaled = false;
    spin_unlock(&e->q.lock, old);
}

bool event_is_set(struct event *e)
{
    return __atomic_load_n(&e->signaled, __ATOMIC_ACQUIRE);
}

status_t event_wait(struct event *e, uint64_t timeout_ns)
{
    return wait_queue_wait(&e->q, event_take, e, timeout_ns);
}

/* ---- semaphores ---- */

static bool sem_take(void *obj, struct thread *t)
{
    (void)t;
    struct semaphore *s = obj;
    if (!s->count)
        return false;
    s->count--;
    return true;
}

void semaphore_init(struct semaphore *s, uint32_t count, uint32_t limit)
{
    wait_queue_init(&s->q);
    s->count = count;
    s->limit = limit;
}

status_t semaphore_release(struct semaphore *s, uint32_t n)
{
    irql_t old = spin_lock_at(&s->q.lock, IRQL_HIGH);
    status_t st = STATUS_OK;
    if (n > s->limit - s->count) {
        st = STATUS_NO_SPACE;
    } else {
        s->count += n;
        wait_queue_wake_locked(&s->q, sem_take, s);
    }
    spin_unlock(&s->q.lock, old);
    return st;
}

status_t semaphore_wait(struct semaphore *s, uint64_t timeout_ns)
{
    return wait_queue_wait(&s->q, sem_take, s, timeout_ns);
}

/* ---- mutexes ---- */

static bool mutex_take(void *obj, struct thread *t)
{
    struct mutex *m = obj;
    if (m->owner == t)
        panic("mutex %p locked again by its owner %s", obj, t->name);
    if (m->owner)
        return false;
    m->owner = t;
    return true;
}

void mutex_init(struct mutex *m)
{
    wait_queue_init(&m->q);
    m->owner = NULL;
}

status_t mutex_lock_timeout(struct mutex *m, uint64_t timeout_ns)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    return wait_queue_wait(&m->q, mutex_take, m, timeout_ns);
}

void mutex_lock(struct mutex *m)
{
    status_t s = mutex_lock_timeout(m, WAIT_FOREVER);
    if (s != STATUS_OK)
        panic("mutex_lock: %s", status_name(s));
}

void mutex_unlock(struct mutex *m)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    struct thread *t = thread_current();
    irql_t old = spin_lock_at(&m->q.lock, IRQL_HIGH);
    if (m->owner != t) {
        raw_spin_unlock(&m->q.lock);
        panic("mutex %p unlocked by %s, which does not own it", (void *)m, t->name);
    }
    m->owner = NULL;
    wait_queue_wake_locked(&m->q, mutex_take, m); /* hands it to the first waiter */
    spin_unlock(&m->q.lock, old);
}
