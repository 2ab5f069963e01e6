/*
 * blkdev: the block device contract. A storage driver (storvsc, to come) produces block devices
 * and registers them; filesystems and applications find one, open it and submit requests only
 * through this contract. Finding, holding and the two ways a device goes away (gone, unregister)
 * are the registry's rules: kernel/devreg.h.
 *
 * ---- The consumer's side ----
 * Find with blkdev_first / blkdev_get(index) / blkdev_wait(timeout) (PASSIVE): a reference, valid
 * until blkdev_put. Open (PASSIVE): one holder at a time (STATUS_BUSY; STATUS_CANCELLED once gone),
 * with its own reference and an optional gone upcall (DISPATCH, once, with the device's lock held:
 * it must not call into blkdev). Close (PASSIVE): waits until every request submitted has completed
 * (the driver completes every one, with STATUS_CANCELLED if the device went), then drops the open's
 * reference; STATUS_TIMEOUT if some are still out after BLKDEV_CLOSE_TIMEOUT_NS (the device stays
 * open, their buffers are still not the caller's: close again later).
 *
 * A request (struct blkdev_request, the caller's memory) is submitted by the holder from any CPU at
 * <= DISPATCH: op, queue (mod the queue count), lba and blocks (read, write and unmap: 1 block at
 * least, inside the capacity; flush: 0 blocks, lba 0), buf (read and write: blocks * block_size
 * bytes, the caller's buffer; unmap and flush: NULL). blkdev_submit checks all of that
 * (STATUS_INVALID_PARAMETER), refuses while another submit of the same request is outstanding
 * (STATUS_BUSY), after the device went (STATUS_CANCELLED) and ops it does not support
 * (STATUS_NOT_SUPPORTED: write on a read-only device, unmap without BLKDEV_CAN_UNMAP). On an error
 * nothing was started: no completion comes and the buffer is the caller's at once. On STATUS_OK the
 * request and its buffer belong to the device until done(r, status) is called, exactly once, at
 * DISPATCH (on any CPU); only then are they the caller's again (to reuse or free).
 *
 * ---- The driver's side ----
 * Fill the struct (ops, drv, driver, capacity, block_size, queues, flags, max_blocks) and
 * blkdev_register it (PASSIVE); it must stay valid until its release ran or blkdev_unregister
 * returned. ops->submit gets only requests that passed the checks; it returns STATUS_OK (then the
 * driver calls blkdev_complete(dev, r, status) exactly once, at DISPATCH) or an error (no
 * completion). A completion for a request that is not outstanding is refused and logged, never
 * delivered. blkdev_gone (<= DISPATCH) when the host withdraws the device: submit fails from then
 * on, and the driver completes what is outstanding (STATUS_CANCELLED). blkdev_unregister (PASSIVE)
 * tells the holder, waits until it closed and every reference was put.
 */
#ifndef KERNEL_BLKDEV_H
#define KERNEL_BLKDEV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arch-x86_64/spinlock.h"
#include "kernel/devreg.h"
#include "kernel/status.h"

#define BLKDEV_MAX_QUEUES 64u
#define BLKDEV_CLOSE_TIMEOUT_NS (30ull * 1000000000ull)

enum blkdev_op { BLKDEV_READ = 1, BLKDEV_WRITE, BLKDEV_FLUSH, BLKDEV_UNMAP };

#define BLKDEV_READ_ONLY (1u << 0) /* writes and unmaps are refused */
#define BLKDEV_CAN_UNMAP (1u << 1) /* the device discards blocks (UNMAP/TRIM) */

struct blkdev;
struct blkdev_request;

typedef void (*blkdev_done_fn)(struct blkdev_request *r, status_t status);

struct blkdev_request {
    /* The caller's, set before blkdev_submit, untouched by blkdev and the driver. */
    enum blkdev_op op;
    uint32_t queue;
    uint64_t lba;
    uint32_t blocks;
    void *buf;
    blkdev_done_fn done; /* required */
    void *ctx;           /* the caller's */
    /* blkdev's: 1 while outstanding (atomic). */
    uint32_t outstanding;
    /* The driver's while outstanding (its list link, tags, ...). */
    uintptr_t driver_private[4];
};

struct blkdev_ops {
    status_t (*submit)(void *drv, struct blkdev_request *r); /* <= DISPATCH; required */
    void (*release)(struct blkdev *dev);                      /* PASSIVE (devreg.h); may be NULL */
};

struct blkdev_client {
    void *ctx;
    void (*gone)(void *ctx); /* may be NULL */
};

struct blkdev {
    struct devreg_dev reg; /* the registry's (its name: "blk0", ...) */

    /* The driver's: set before blkdev_register, constant while registered. */
    const struct blkdev_ops *ops;
    void *drv;
    const char *driver;
    uint64_t capacity;     /* blocks */
    uint32_t block_size;   /* bytes: a power of two, 512..65536 */
    uint32_t max_blocks;   /* per request; 0: no limit */
    uint32_t queues;       /* 1..BLKDEV_MAX_QUEUES */
    uint32_t flags;        /* BLKDEV_READ_ONLY, BLKDEV_CAN_UNMAP */

    /* blkdev's. */
    spinlock_t lock;       /* open/close and the gone upcall */
    bool open;
    struct blkdev_client client;
    uint32_t in_flight;    /* atomic: submitted, not completed */
    uint64_t refused_completions; /* atomic: blkdev_complete for a request not outstanding */
};

/* ---- the driver's side ---- */

/* PASSIVE. STATUS_INVALID_PARAMETER: no submit, capacity 0, a bad block size or queue count. */
status_t blkdev_register(struct blkdev *dev) WARN_UNUSED;
void blkdev_unregister(struct blkdev *dev); /* PASSIVE */
void blkdev_gone(struct blkdev *dev);       /* <= DISPATCH, once */
/* DISPATCH: the request's end (status STATUS_OK, or why it failed); done() runs in this call. */
void blkdev_complete(struct blkdev *dev, struct blkdev_request *r, status_t status);

/* ---- the consumer's side ---- */

struct blkdev *blkdev_first(void);              /* PASSIVE; NULL: none */
struct blkdev *blkdev_get(uint32_t index);       /* PASSIVE */
struct blkdev *blkdev_wait(uint64_t timeout_ns); /* PASSIVE; NULL when the time is up */
void blkdev_put(struct blkdev *dev);             /* PASSIVE */

/* PASSIVE. client may be NULL (no gone upcall). */
status_t blkdev_open(struct blkdev *dev, const struct blkdev_client *client) WARN_UNUSED;
status_t blkdev_close(struct blkdev *dev) WARN_UNUSED; /* PASSIVE */
status_t blkdev_submit(struct blkdev *dev, struct blkdev_request *r) WARN_UNUSED; /* <= DISPATCH */

const char *blkdev_name(const struct blkdev *dev);
bool blkdev_is_gone(const struct blkdev *dev);
uint32_t blkdev_in_flight(const struct blkdev *dev);

#endif
