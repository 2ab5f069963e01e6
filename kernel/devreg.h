/*
 * devreg: the registry of devices that drivers produce and applications and stacks consume, under
 * the device contracts (kernel/netdev.h for network devices, kernel/blkdev.h for block devices).
 * This header is the part both contracts share: how a device is found, held and let go, and how it
 * goes away. A contract embeds struct devreg_dev in its device and wraps these calls; applications
 * use the contract's functions (netdev_*, blkdev_*), not these.
 *
 * Life of a device:
 *   - The driver fills the device and registers it (PASSIVE): from then on it can be found.
 *   - A consumer finds it (first, by index, or waits for one with a timeout): each find returns a
 *     reference, which keeps the memory valid until the consumer puts it (PASSIVE). The contract's
 *     open takes one more (the holder's) and its close drops it.
 *   - The device goes away in one of two ways:
 *       gone (devreg_gone, <= DISPATCH, e.g. from a rescind): the host withdrew it. It cannot be
 *         found any more and the registry drops its own reference at once. When the last reference
 *         is dropped (put or close, PASSIVE), d->release runs there, in the caller's thread: the
 *         driver tears the device down and frees it. If nobody held a reference when it went, the
 *         release waits for PASSIVE: it runs at the next PASSIVE call into the registry
 *         (register, first, get, wait, put, reap) in that thread.
 *       unregister (devreg_unregister, PASSIVE, e.g. from the driver's remove): the driver takes it
 *         back. It is gone first (if it was not), then the call waits until every reference is
 *         dropped (a log line every 5 s while it waits). release is not called: when unregister
 *         returns, the registry holds nothing of the device and the driver frees it itself. A
 *         device whose release already ran must not be unregistered (it is the driver's again).
 *   - References and the registry's own are counted under one spinlock; release is called without
 *     it, at PASSIVE, exactly once (or never, when the driver unregisters).
 *
 * Ownership: struct devreg_dev is embedded in the driver's device and belongs to the driver; the
 * registry writes only its own fields, and only between register and release/unregister.
 */
#ifndef KERNEL_DEVREG_H
#define KERNEL_DEVREG_H

#include <stdbool.h>
#include <stdint.h>

#include "kernel/list.h"
#include "kernel/status.h"
#include "kernel/sync.h"

enum devreg_kind {
    DEVREG_NET = 0,   /* "net0", "net1", ... */
    DEVREG_BLOCK = 1, /* "blk0", ... */
    DEVREG_KINDS
};

#define DEVREG_NAME_MAX 12 /* "net4294967295" does not fit: indexes wrap at 100000000 */

struct devreg_dev {
    /* Set by the contract (on the driver's behalf) before devreg_register; constant afterwards. */
    enum devreg_kind kind;
    /* PASSIVE, once, when the device is gone and its last reference was dropped (see above). */
    void (*release)(struct devreg_dev *d);

    /* The registry's (under its lock). */
    struct list link;         /* in the live list while registered and not gone; in the release
                                 list while its release waits for PASSIVE */
    char name[DEVREG_NAME_MAX];
    uint32_t refs;            /* find and hold references, + 1 (the registry's) while registered */
    uint8_t state;            /* DEVREG_STATE_* */
    bool unregistering;       /* devreg_unregister waits: the last put wakes it instead of releasing */
    struct event unreferenced; /* set when refs reaches 0 while unregistering */
};

enum { DEVREG_STATE_NONE = 0, DEVREG_STATE_LIVE, DEVREG_STATE_GONE };

/* PASSIVE. Names the device (kind prefix + a number never reused) and makes it findable.
 * STATUS_INVALID_STATE if it is already registered; STATUS_INVALID_PARAMETER for a bad kind. */
status_t devreg_register(struct devreg_dev *d) WARN_UNUSED;
/* <= DISPATCH. The device is going away: it is unfindable from now and the registry drops its own
 * reference (a release that would follow waits for PASSIVE, see above). true the first time only. */
bool devreg_gone(struct devreg_dev *d);
/* PASSIVE. See "unregister" above. */
void devreg_unregister(struct devreg_dev *d);
/* PASSIVE. Unregister without waiting (a power-off): gone first; true if nothing refers to it any
 * more (unregistered: the driver frees it; release is not called), false if references remain (it
 * stays gone, and the last put releases it as after devreg_gone). */
bool devreg_try_unregister(struct devreg_dev *d) WARN_UNUSED;

/* PASSIVE. The index-th live device of a kind in the order they were registered (0: the first),
 * with a reference; NULL if there is none. */
struct devreg_dev *devreg_get(enum devreg_kind kind, uint32_t index);
/* PASSIVE. The first live device of a kind, waiting up to timeout_ns for one to be registered
 * (0: just look), with a reference; NULL when the time is up. */
struct devreg_dev *devreg_wait(enum devreg_kind kind, uint64_t timeout_ns);
/* <= DISPATCH. One more reference to a device the caller holds a reference to and that is not gone
 * (STATUS_CANCELLED if it is). */
status_t devreg_ref(struct devreg_dev *d) WARN_UNUSED;
/* PASSIVE. Drops a reference; the last one of a gone device releases it here. */
void devreg_put(struct devreg_dev *d);
/* PASSIVE. Runs the releases that waited for PASSIVE (every PASSIVE call above does this too). */
void devreg_reap(void);

bool devreg_is_gone(const struct devreg_dev *d); /* any IRQL: an atomic load */
/* How many devices of a kind are live (registered and not gone). Any IRQL <= DISPATCH. */
uint32_t devreg_count(enum devreg_kind kind);

#endif
