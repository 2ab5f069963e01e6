/*
 * devreg: the device registry (contract in kernel/devreg.h).
 *
 * One spinlock guards the lists, every device's refs/state/unregistering and the name counters, so
 * devreg_gone can run at DISPATCH (a rescind). Releases never run under it: a device whose last
 * reference goes at PASSIVE is released by that caller after the unlock; one whose last reference
 * goes in devreg_gone (DISPATCH) is parked on the release list until a PASSIVE caller reaps it.
 * Waiting for a device polls the live list in short slices against a deadline, so no wake-up can be
 * lost between waiters.
 */
#include "kernel/devreg.h"

#include "arch-x86_64/spinlock.h"
#include "kernel/fmt.h"
#include "kernel/log.h"
#include "kernel/thread.h"

#define WAIT_SLICE_NS 10000000ull     /* a waiter looks again this often */
#define UNREGISTER_LOG_NS 5000000000ull /* how often an unregister that waits says so */

static spinlock_t lock = SPINLOCK_INIT;
static struct list live = LIST_INIT(live);       /* every kind, in registration order */
static struct list to_release = LIST_INIT(to_release);
static uint32_t next_number[DEVREG_KINDS];
static const char *const prefix[DEVREG_KINDS] = { "net", "blk" };

bool devreg_is_gone(const struct devreg_dev *d)
{
    return __atomic_load_n(&d->state, __ATOMIC_ACQUIRE) == DEVREG_STATE_GONE;
}

/* With the lock held: the last reference is gone. Returns d if the caller must release it (at
 * PASSIVE, after unlocking). */
static struct devreg_dev *unreferenced_locked(struct devreg_dev *d, bool passive)
{
    if (d->unregistering) {
        event_set(&d->unreferenced);
        return NULL;
    }
    if (passive)
        return d;
    list_push_back(&to_release, &d->link);
    return NULL;
}

static void release(struct devreg_dev *d)
{
    if (d && d->release)
        d->release(d);
}

void devreg_reap(void)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    for (;;) {
        irql_t old = spin_lock(&lock);
        struct list *n = list_pop_front(&to_release);
        spin_unlock(&lock, old);
        if (!n)
            return;
        release(container_of(n, struct devreg_dev, link));
    }
}

status_t devreg_register(struct devreg_dev *d)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    devreg_reap();
    if (!d || (unsigned)d->kind >= DEVREG_KINDS)
        return STATUS_INVALID_PARAMETER;
    irql_t old = spin_lock(&lock);
    if (d->state == DEVREG_STATE_LIVE) {
        spin_unlock(&lock, old);
        return STATUS_INVALID_STATE;
    }
    uint32_t number = next_number[d->kind]++ % 100000000u;
    fmt_snprintf(d->name, sizeof d->name, "%s%u", prefix[d->kind], number);
    d->refs = 1;
    d->unregistering = false;
    event_init(&d->unreferenced, EVENT_NOTIFICATION, false);
    list_push_back(&live, &d->link);
    __atomic_store_n(&d->state, DEVREG_STATE_LIVE, __ATOMIC_RELEASE);
    spin_unlock(&lock, old);
    return STATUS_OK;
}

/* With the lock held: live -> gone; the registry's reference goes. */
static struct devreg_dev *gone_locked(struct devreg_dev *d, bool passive, bool *first)
{
    *first = d->state == DEVREG_STATE_LIVE;
    if (!*first)
        return NULL;
    __atomic_store_n(&d->state, DEVREG_STATE_GONE, __ATOMIC_RELEASE);
    list_remove(&d->link);
    return --d->refs == 0 ? unreferenced_locked(d, passive) : NULL;
}

bool devreg_gone(struct devreg_dev *d)
{
    IRQL_ASSERT_MAX(IRQL_DISPATCH);
    bool first;
    irql_t old = spin_lock(&lock);
    (void)gone_locked(d, false, &first); /* never a release to run here: DISPATCH maybe */
    spin_unlock(&lock, old);
    return first;
}

void devreg_unregister(struct devreg_dev *d)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    bool first;
    irql_t old = spin_lock(&lock);
    d->unregistering = true;
    if (d->state == DEVREG_STATE_LIVE) {
        (void)gone_locked(d, true, &first); /* unregistering: never a release */
    } else if (d->refs == 0 && list_linked(&d->link)) {
        list_remove(&d->link); /* its release was waiting for PASSIVE: the driver takes it back */
        event_set(&d->unreferenced);
    }
    bool wait = d->refs != 0;
    spin_unlock(&lock, old);
    uint64_t waited = 0;
    while (wait && event_wait(&d->unreferenced, UNREGISTER_LOG_NS) == STATUS_TIMEOUT) {
        waited += UNREGISTER_LOG_NS;
        pr_warn("devreg: %s: unregister waits for %u reference%s to be dropped (%llu s so far)", d->name,
                __atomic_load_n(&d->refs, __ATOMIC_RELAXED), d->refs == 1 ? "" : "s",
                (unsigned long long)(waited / 1000000000ull));
    }
    old = spin_lock(&lock);
    __atomic_store_n(&d->state, DEVREG_STATE_NONE, __ATOMIC_RELEASE);
    d->unregistering = false;
    spin_unlock(&lock, old);
}

bool devreg_try_unregister(struct devreg_dev *d)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    bool first;
    irql_t old = spin_lock(&lock);
    bool was = d->unregistering;
    d->unregistering = true; /* no release from the gone below */
    if (d->state == DEVREG_STATE_LIVE)
        (void)gone_locked(d, true, &first);
    else if (d->refs == 0 && list_linked(&d->link))
        list_remove(&d->link); /* its release was waiting for PASSIVE: the driver takes it back */
    bool done = d->refs == 0;
    if (done)
        __atomic_store_n(&d->state, DEVREG_STATE_NONE, __ATOMIC_RELEASE);
    d->unregistering = done ? false : was;
    spin_unlock(&lock, old);
    return done;
}

/* With the lock held: the index-th live device of a kind, referenced. */
static struct devreg_dev *get_locked(enum devreg_kind kind, uint32_t index)
{
    list_for_each(n, &live) {
        struct devreg_dev *d = container_of(n, struct devreg_dev, link);
        if (d->kind == kind && index-- == 0) {
            d->refs++;
            return d;
        }
    }
    return NULL;
}

struct devreg_dev *devreg_get(enum devreg_kind kind, uint32_t index)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    devreg_reap();
    irql_t old = spin_lock(&lock);
    struct devreg_dev *d = get_locked(kind, index);
    spin_unlock(&lock, old);
    return d;
}

struct devreg_dev *devreg_wait(enum devreg_kind kind, uint64_t timeout_ns)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    uint64_t left = timeout_ns;
    for (;;) {
        struct devreg_dev *d = devreg_get(kind, 0);
        if (d || left == 0)
            return d;
        uint64_t slice = left < WAIT_SLICE_NS ? left : WAIT_SLICE_NS;
        thread_sleep_ns(slice);
        left -= slice;
    }
}

status_t devreg_ref(struct devreg_dev *d)
{
    IRQL_ASSERT_MAX(IRQL_DISPATCH);
    irql_t old = spin_lock(&lock);
    status_t s = d->state == DEVREG_STATE_LIVE ? STATUS_OK : STATUS_CANCELLED;
    if (s == STATUS_OK)
        d->refs++;
    spin_unlock(&lock, old);
    return s;
}

void devreg_put(struct devreg_dev *d)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    struct devreg_dev *r = NULL;
    irql_t old = spin_lock(&lock);
    if (d->refs == 0) {
        spin_unlock(&lock, old);
        pr_err("devreg: %s: a reference dropped that was never taken: ignored", d->name);
        return;
    }
    if (--d->refs == 0)
        r = unreferenced_locked(d, true);
    spin_unlock(&lock, old);
    release(r);
    devreg_reap();
}

uint32_t devreg_count(enum devreg_kind kind)
{
    uint32_t n = 0;
    irql_t old = spin_lock(&lock);
    list_for_each(it, &live)
        n += container_of(it, struct devreg_dev, link)->kind == kind;
    spin_unlock(&lock, old);
    return n;
}
