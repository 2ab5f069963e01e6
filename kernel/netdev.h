/*
 * netdev: the network device contract. A NIC driver (drivers/netvsc) produces network devices and
 * registers them; stacks and applications (lib/net's net_attach) find one, open it and use it only
 * through this contract, never through the driver's own API. Finding, holding and the two ways a
 * device goes away (gone, unregister) are the registry's rules: kernel/devreg.h.
 *
 * ---- The consumer's side ----
 * Find: netdev_first / netdev_get(index) / netdev_wait(timeout) (PASSIVE) return a device with a
 * reference: the pointer stays valid until netdev_put (PASSIVE), even if the device goes meanwhile.
 * Open (PASSIVE): one holder at a time (STATUS_BUSY otherwise; STATUS_CANCELLED once gone); the
 * holder's upcalls start at once, and the open takes a reference of its own. Close (PASSIVE): when
 * it returns no upcall runs or will run (it waits for every CPU's running DPCs), and the open's
 * reference is dropped (the last one of a gone device releases it there).
 *
 * Upcalls (struct netdev_client; ctx is the holder's and must stay valid until close returns):
 *   receive(q, frame, len)  at DISPATCH on queue q's CPU (netdev_queue_cpu), from the driver's DPC;
 *                           at most one at a time per queue. frame (an Ethernet frame, no FCS,
 *                           14..mtu+14 bytes) is valid only during the call and may sit in memory
 *                           the host can still write: read each field once.
 *   receive_done(q)         after a batch of receives on q (same context). May be NULL.
 *   link(up)                at DISPATCH, when the link state changes. May be NULL.
 *   gone()                  at DISPATCH, once, when the device is going away (rescind, removal):
 *                           from then on every transmit fails at once (tx_begin NULL, tx_end and
 *                           netdev_send STATUS_CANCELLED, netdev_check STATUS_CANCELLED). The holder
 *                           then closes it, at PASSIVE, from its own thread. May be NULL (the holder
 *                           can poll netdev_is_gone).
 * link and gone run with the device's upcall lock held: they must not call netdev_open/close.
 *
 * Transmit (any CPU, <= DISPATCH, by the holder only, between open and close): zero copy with
 * netdev_tx_begin (room for one frame of len <= mtu + 14 bytes on queue q mod the queue count, or
 * NULL: no room, too long, or gone) then netdev_tx_end (sends the frame written there, len <= the
 * len given to tx_begin; whatever it returns, the buffer is the driver's again). Calls for one queue
 * may overlap only if the driver says so; netvsc serialises nothing per queue and allows it.
 * netdev_send copies a frame and sends it (STATUS_NO_SPACE: no room now; STATUS_INVALID_PARAMETER:
 * too long; STATUS_CANCELLED: gone). The caller's frame is not kept.
 *
 * ---- The driver's side ----
 * Fill the struct (ops, drv, driver, mac, mtu, queues, queue_cpu[], link_up; netdev's own fields
 * zeroed, e.g. kzalloc) and netdev_register it (PASSIVE); the struct is the driver's memory and must stay valid until its release ran
 * (ops->release, PASSIVE, see devreg.h) or netdev_unregister returned. Deliver frames with
 * netdev_rx / netdev_rx_done, only from DPCs (that is what close waits for). Report link changes
 * with netdev_set_link and a withdrawn device with netdev_gone (<= DISPATCH; the driver's ops must
 * fail fast from then on, as the upcall's rules say). netdev_unregister (PASSIVE, e.g. in remove)
 * tells the holder the device is gone and waits until it closed and every reference was put.
 * The ops take `drv`; tx_begin and tx_end have the shape of lib/net's transmit hooks so a stack can
 * call the driver without a hop in between.
 */
#ifndef KERNEL_NETDEV_H
#define KERNEL_NETDEV_H

#include <stdbool.h>
#include <stdint.h>

#include "arch-x86_64/spinlock.h"
#include "kernel/devreg.h"
#include "kernel/status.h"

#define NETDEV_MAX_QUEUES 64u
#define NETDEV_ETH_HLEN 14u

struct netdev;

/* The common counters (a driver may count more in its own API). */
struct netdev_stats {
    uint64_t rx_frames, rx_bytes; /* frames the device delivered */
    uint64_t tx_frames, tx_bytes; /* frames handed to the device */
    uint64_t rx_errors;           /* malformed by the device (or the host): dropped */
    uint64_t tx_no_buffer;        /* tx_begin found no room */
    uint64_t tx_errors;           /* tx_end failed */
    uint64_t checks;              /* netdev_check answered by the device */
};

struct netdev_ops {
    /* Any CPU, <= DISPATCH (see "Transmit"). Required. */
    void *(*tx_begin)(void *drv, uint32_t queue, uint32_t len);
    status_t (*tx_end)(void *drv, uint32_t queue, void *frame, uint32_t len);
    /* <= DISPATCH. May be NULL (all zero). */
    void (*get_stats)(void *drv, struct netdev_stats *out);
    uint64_t (*queue_rx_frames)(void *drv, uint32_t queue);
    /* PASSIVE: asks the device whether it is alive, waiting for it (bounded by the driver). NULL:
     * netdev_check answers STATUS_NOT_SUPPORTED. */
    status_t (*check)(void *drv);
    /* PASSIVE, once: the device is gone and unreferenced; the driver tears it down (devreg.h). */
    void (*release)(struct netdev *dev);
};

struct netdev_client {
    void *ctx;
    void (*receive)(void *ctx, uint32_t queue, const void *frame, uint32_t len); /* required */
    void (*receive_done)(void *ctx, uint32_t queue);
    void (*link)(void *ctx, bool up);
    void (*gone)(void *ctx);
};

struct netdev {
    struct devreg_dev reg; /* the registry's (its name: "net0", ...) */

    /* The driver's: set before netdev_register, constant while registered. */
    const struct netdev_ops *ops;
    void *drv;
    const char *driver;    /* "netvsc" */
    uint8_t mac[6];
    uint32_t mtu;          /* IP MTU: frames are up to mtu + 14 bytes */
    uint32_t queues;       /* 1..NETDEV_MAX_QUEUES */
    uint32_t queue_cpu[NETDEV_MAX_QUEUES];
    uint64_t link_speed_bps;
    bool link_up;          /* initial state; then netdev_set_link (atomic) */

    /* netdev's. */
    const struct netdev_client *active; /* atomic: &client while open, else NULL */
    struct netdev_client client;
    spinlock_t upcall_lock; /* open/close against the link and gone upcalls */
};

/* ---- the driver's side ---- */

/* PASSIVE. STATUS_INVALID_PARAMETER for missing ops, a bad MTU (576..9000) or queue count. */
status_t netdev_register(struct netdev *dev) WARN_UNUSED;
/* PASSIVE: see above. */
void netdev_unregister(struct netdev *dev);
/* PASSIVE, never waits (a power-off): the holder is told, then true if nobody refers to the device
 * any more (the driver frees it), false if someone still does (devreg_try_unregister). */
bool netdev_try_unregister(struct netdev *dev) WARN_UNUSED;
/* <= DISPATCH: the device is going away (once; later calls do nothing). */
void netdev_gone(struct netdev *dev);
/* <= DISPATCH: the link went up or down (nothing happens if it did not change). */
void netdev_set_link(struct netdev *dev, bool up);

/* A received frame to the holder (DPC only, see above). false: nobody holds the device (the frame
 * is the driver's to count as dropped). */
static inline bool netdev_rx(struct netdev *dev, uint32_t queue, const void *frame, uint32_t len)
{
    const struct netdev_client *c = __atomic_load_n(&dev->active, __ATOMIC_ACQUIRE);
    if (__builtin_expect(c == NULL, 0))
        return false;
    c->receive(c->ctx, queue, frame, len);
    return true;
}

static inline void netdev_rx_done(struct netdev *dev, uint32_t queue)
{
    const struct netdev_client *c = __atomic_load_n(&dev->active, __ATOMIC_ACQUIRE);
    if (c && c->receive_done)
        c->receive_done(c->ctx, queue);
}

/* ---- the consumer's side ---- */

struct netdev *netdev_first(void);              /* PASSIVE; NULL: none */
struct netdev *netdev_get(uint32_t index);       /* PASSIVE; the index-th live device */
struct netdev *netdev_wait(uint64_t timeout_ns); /* PASSIVE; NULL when the time is up */
void netdev_put(struct netdev *dev);             /* PASSIVE */

status_t netdev_open(struct netdev *dev, const struct netdev_client *client) WARN_UNUSED; /* PASSIVE */
void netdev_close(struct netdev *dev);                                                    /* PASSIVE */

static inline void *netdev_tx_begin(struct netdev *dev, uint32_t queue, uint32_t len)
{
    return dev->ops->tx_begin(dev->drv, queue, len);
}
static inline status_t netdev_tx_end(struct netdev *dev, uint32_t queue, void *frame, uint32_t len)
{
    return dev->ops->tx_end(dev->drv, queue, frame, len);
}
status_t netdev_send(struct netdev *dev, uint32_t queue, const void *frame, uint32_t len) WARN_UNUSED;

const char *netdev_name(const struct netdev *dev); /* "net0" */
bool netdev_is_gone(const struct netdev *dev);
bool netdev_link_up(const struct netdev *dev);
uint32_t netdev_queue_cpu(const struct netdev *dev, uint32_t queue); /* queue mod the count */
void netdev_get_stats(const struct netdev *dev, struct netdev_stats *out); /* <= DISPATCH */
uint64_t netdev_queue_rx_frames(const struct netdev *dev, uint32_t queue); /* <= DISPATCH; 0: unknown */
/* PASSIVE: the driver's liveness check (STATUS_CANCELLED once gone, STATUS_NOT_SUPPORTED without). */
status_t netdev_check(struct netdev *dev) WARN_UNUSED;

#endif
