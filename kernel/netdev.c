/*
 * netdev: the network device contract (kernel/netdev.h) over the device registry (kernel/devreg.h).
 *
 * The data path is the driver's and the holder's alone: frames go up through one atomic pointer
 * (dev->active) and down through the driver's ops, with nothing of netdev's in between. What this
 * file adds is the part both sides must agree on: who holds the device, the link and gone upcalls
 * under the upcall lock (so open/close cannot miss or outlive them), and the DPC flush that lets
 * close promise no receive upcall is still running.
 */
#include "kernel/netdev.h"

#include "kernel/dpc.h"
#include "kernel/mm.h"
#include "kernel/log.h"
#include "kernel/percpu.h"
#include "kernel/string.h"
#include "kernel/thread.h"

#define FLUSH_LOG_NS 5000000000ull

static struct netdev *from_reg(struct devreg_dev *d) { return d ? container_of(d, struct netdev, reg) : NULL; }

static void release_reg(struct devreg_dev *d)
{
    struct netdev *dev = from_reg(d);
    if (dev->ops->release)
        dev->ops->release(dev);
}

/* ---- the driver's side ---- */

status_t netdev_register(struct netdev *dev)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    if (!dev || !dev->ops || !dev->ops->tx_begin || !dev->ops->tx_end || dev->mtu < 576 || dev->mtu > 9000 ||
        dev->queues == 0 || dev->queues > NETDEV_MAX_QUEUES)
        return STATUS_INVALID_PARAMETER;
    dev->reg.kind = DEVREG_NET;
    dev->reg.release = release_reg;
    /* The driver's DPCs may already run (and find no holder): active and upcall_lock are as zeroed
     * memory left them (the struct's rule), not written here. */
    status_t s = devreg_register(&dev->reg);
    if (s == STATUS_OK)
        pr_info("netdev: %s: %s, MAC %02x:%02x:%02x:%02x:%02x:%02x, MTU %u, %u queue%s", dev->reg.name,
                dev->driver ? dev->driver : "?", dev->mac[0], dev->mac[1], dev->mac[2], dev->mac[3], dev->mac[4],
                dev->mac[5], dev->mtu, dev->queues, dev->queues == 1 ? "" : "s");
    return s;
}

void netdev_gone(struct netdev *dev)
{
    IRQL_ASSERT_MAX(IRQL_DISPATCH);
    if (!devreg_gone(&dev->reg))
        return;
    irql_t old = spin_lock(&dev->upcall_lock);
    const struct netdev_client *c = dev->active;
    if (c && c->gone)
        c->gone(c->ctx);
    spin_unlock(&dev->upcall_lock, old);
}

void netdev_unregister(struct netdev *dev)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    netdev_gone(dev); /* the holder hears it first, then closes: that is what the registry waits for */
    devreg_unregister(&dev->reg);
}

bool netdev_try_unregister(struct netdev *dev)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    netdev_gone(dev);
    return devreg_try_unregister(&dev->reg);
}

void netdev_set_link(struct netdev *dev, bool up)
{
    IRQL_ASSERT_MAX(IRQL_DISPATCH);
    if (__atomic_exchange_n(&dev->link_up, up, __ATOMIC_ACQ_REL) == up)
        return;
    irql_t old = spin_lock(&dev->upcall_lock);
    const struct netdev_client *c = dev->active;
    if (c && c->link)
        c->link(c->ctx, up);
    spin_unlock(&dev->upcall_lock, old);
}

/* ---- the consumer's side ---- */

struct netdev *netdev_first(void) { return from_reg(devreg_get(DEVREG_NET, 0)); }
struct netdev *netdev_get(uint32_t index) { return from_reg(devreg_get(DEVREG_NET, index)); }
struct netdev *netdev_wait(uint64_t timeout_ns) { return from_reg(devreg_wait(DEVREG_NET, timeout_ns)); }
void netdev_put(struct netdev *dev) { devreg_put(&dev->reg); }

status_t netdev_open(struct netdev *dev, const struct netdev_client *client)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    if (!dev || !client || !client->receive)
        return STATUS_INVALID_PARAMETER;
    /* The reference is taken under the upcall lock: a device live at that point has its gone
     * upcall still to come (netdev_gone marks it gone, then takes this lock), and finds us. */
    irql_t old = spin_lock(&dev->upcall_lock);
    status_t s = dev->active ? STATUS_BUSY : devreg_ref(&dev->reg);
    if (s == STATUS_OK) {
        dev->client = *client;
        __atomic_store_n(&dev->active, &dev->client, __ATOMIC_RELEASE);
    }
    spin_unlock(&dev->upcall_lock, old);
    return s;
}

struct flush {
    struct event done;
    uint32_t left;
    struct dpc dpc[];
};

static void flush_dpc(struct dpc *d, void *ctx)
{
    (void)d;
    struct flush *f = ctx;
    if (__atomic_sub_fetch(&f->left, 1, __ATOMIC_ACQ_REL) == 0)
        event_set(&f->done);
}

/* Returns once every DPC that was running on any CPU when it was called has returned: DPCs on a CPU
 * run one at a time, in order, so one queued behind them on each CPU marks the point. */
static void flush_dpcs(void)
{
    uint32_t n = cpu_count ? cpu_count : 1;
    struct flush *f = kzalloc(sizeof *f + n * sizeof f->dpc[0]);
    if (!f) {
        pr_warn("netdev: no memory to flush the DPCs: waiting 100 ms instead");
        thread_sleep_ns(100000000ull);
        return;
    }
    event_init(&f->done, EVENT_NOTIFICATION, false);
    f->left = n;
    for (uint32_t i = 0; i < n; i++) {
        dpc_init(&f->dpc[i], flush_dpc, f);
        dpc_set_target(&f->dpc[i], (int32_t)i);
        dpc_queue(&f->dpc[i]);
    }
    while (event_wait(&f->done, FLUSH_LOG_NS) == STATUS_TIMEOUT)
        pr_warn("netdev: close waits for the DPCs of %u CPU%s", __atomic_load_n(&f->left, __ATOMIC_ACQUIRE),
                f->left == 1 ? "" : "s");
    /* The last DPC may still be inside event_set on its CPU (it wakes us before it lets go of the
     * event's lock): taking that lock once, here, means it has let go, and f can be freed. */
    event_reset(&f->done);
    kfree(f);
}

void netdev_close(struct netdev *dev)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    irql_t old = spin_lock(&dev->upcall_lock);
    bool was_open = dev->active != NULL;
    __atomic_store_n(&dev->active, NULL, __ATOMIC_RELEASE);
    spin_unlock(&dev->upcall_lock, old);
    if (!was_open) {
        pr_err("netdev: %s: closed but not open: ignored", dev->reg.name);
        return;
    }
    flush_dpcs(); /* a receive that loaded the old pointer has returned */
    devreg_put(&dev->reg);
}

status_t netdev_send(struct netdev *dev, uint32_t queue, const void *frame, uint32_t len)
{
    if (devreg_is_gone(&dev->reg))
        return STATUS_CANCELLED;
    if (len > dev->mtu + NETDEV_ETH_HLEN)
        return STATUS_INVALID_PARAMETER;
    void *p = netdev_tx_begin(dev, queue, len);
    if (!p)
        return devreg_is_gone(&dev->reg) ? STATUS_CANCELLED : STATUS_NO_SPACE;
    memcpy(p, frame, len);
    return netdev_tx_end(dev, queue, p, len);
}

const char *netdev_name(const struct netdev *dev) { return dev->reg.name; }
bool netdev_is_gone(const struct netdev *dev) { return devreg_is_gone(&dev->reg); }
bool netdev_link_up(const struct netdev *dev) { return __atomic_load_n(&dev->link_up, __ATOMIC_ACQUIRE); }
uint32_t netdev_queue_cpu(const struct netdev *dev, uint32_t queue) { return dev->queue_cpu[queue % dev->queues]; }

void netdev_get_stats(const struct netdev *dev, struct netdev_stats *out)
{
    memset(out, 0, sizeof *out);
    if (dev->ops->get_stats)
        dev->ops->get_stats(dev->drv, out);
}

uint64_t netdev_queue_rx_frames(const struct netdev *dev, uint32_t queue)
{
    return dev->ops->queue_rx_frames ? dev->ops->queue_rx_frames(dev->drv, queue % dev->queues) : 0;
}

status_t netdev_check(struct netdev *dev)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    if (devreg_is_gone(&dev->reg))
        return STATUS_CANCELLED;
    return dev->ops->check ? dev->ops->check(dev->drv) : STATUS_NOT_SUPPORTED;
}
