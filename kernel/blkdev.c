/*
 * blkdev: the block device contract (kernel/blkdev.h) over the device registry (kernel/devreg.h).
 *
 * Every request is checked here before a driver sees it, and every completion is matched to an
 * outstanding request (one atomic word in the request) before the caller hears of it, so a driver
 * bug or a host answering twice cannot hand a buffer back twice. in_flight counts the submitted and
 * not yet completed; close polls it down (a driver completes everything, gone or not).
 */
#include "kernel/blkdev.h"

#include "kernel/log.h"
#include "kernel/thread.h"

#define CLOSE_POLL_NS 1000000ull

static struct blkdev *from_reg(struct devreg_dev *d) { return d ? container_of(d, struct blkdev, reg) : NULL; }

static void release_reg(struct devreg_dev *d)
{
    struct blkdev *dev = from_reg(d);
    if (dev->ops->release)
        dev->ops->release(dev);
}

/* ---- the driver's side ---- */

status_t blkdev_register(struct blkdev *dev)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    if (!dev || !dev->ops || !dev->ops->submit || dev->capacity == 0 || dev->block_size < 512 ||
        dev->block_size > 65536 || (dev->block_size & (dev->block_size - 1)) || dev->queues == 0 ||
        dev->queues > BLKDEV_MAX_QUEUES)
        return STATUS_INVALID_PARAMETER;
    dev->reg.kind = DEVREG_BLOCK;
    dev->reg.release = release_reg;
    dev->lock = (spinlock_t)SPINLOCK_INIT;
    dev->open = false;
    dev->in_flight = 0;
    dev->refused_completions = 0;
    status_t s = devreg_register(&dev->reg);
    if (s == STATUS_OK)
        pr_info("blkdev: %s: %s, %llu blocks of %u bytes, %u queue%s%s", dev->reg.name,
                dev->driver ? dev->driver : "?", (unsigned long long)dev->capacity, dev->block_size, dev->queues,
                dev->queues == 1 ? "" : "s", dev->flags & BLKDEV_READ_ONLY ? ", read-only" : "");
    return s;
}

void blkdev_gone(struct blkdev *dev)
{
    IRQL_ASSERT_MAX(IRQL_DISPATCH);
    if (!devreg_gone(&dev->reg))
        return;
    irql_t old = spin_lock(&dev->lock);
    if (dev->open && dev->client.gone)
        dev->client.gone(dev->client.ctx);
    spin_unlock(&dev->lock, old);
}

void blkdev_unregister(struct blkdev *dev)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    blkdev_gone(dev);
    devreg_unregister(&dev->reg);
}

void blkdev_complete(struct blkdev *dev, struct blkdev_request *r, status_t status)
{
    IRQL_ASSERT_EQ(IRQL_DISPATCH);
    uint32_t one = 1;
    if (!r || !__atomic_compare_exchange_n(&r->outstanding, &one, 0, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        uint64_t n = __atomic_add_fetch(&dev->refused_completions, 1, __ATOMIC_RELAXED);
        if (n <= 10 || (n & (n - 1)) == 0) /* the first ten, then at powers of two */
            pr_err("blkdev: %s: completion for a request that is not outstanding: refused (%llu so far)",
                   dev->reg.name, (unsigned long long)n);
        return;
    }
    r->done(r, status); /* the request is the caller's from here on: not touched again */
    __atomic_sub_fetch(&dev->in_flight, 1, __ATOMIC_RELEASE);
}

/* ---- the consumer's side ---- */

struct blkdev *blkdev_first(void) { return from_reg(devreg_get(DEVREG_BLOCK, 0)); }
struct blkdev *blkdev_get(uint32_t index) { return from_reg(devreg_get(DEVREG_BLOCK, index)); }
struct blkdev *blkdev_wait(uint64_t timeout_ns) { return from_reg(devreg_wait(DEVREG_BLOCK, timeout_ns)); }
void blkdev_put(struct blkdev *dev) { devreg_put(&dev->reg); }

status_t blkdev_open(struct blkdev *dev, const struct blkdev_client *client)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    if (!dev)
        return STATUS_INVALID_PARAMETER;
    /* The reference under the lock the gone upcall takes: see netdev_open. */
    irql_t old = spin_lock(&dev->lock);
    status_t s = dev->open ? STATUS_BUSY : devreg_ref(&dev->reg);
    if (s == STATUS_OK) {
        dev->client = client ? *client : (struct blkdev_client){ 0 };
        __atomic_store_n(&dev->open, true, __ATOMIC_RELEASE);
    }
    spin_unlock(&dev->lock, old);
    return s;
}

status_t blkdev_close(struct blkdev *dev)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    if (!__atomic_load_n(&dev->open, __ATOMIC_ACQUIRE)) {
        pr_err("blkdev: %s: closed but not open: ignored", dev->reg.name);
        return STATUS_INVALID_STATE;
    }
    for (uint64_t waited = 0; __atomic_load_n(&dev->in_flight, __ATOMIC_ACQUIRE); waited += CLOSE_POLL_NS) {
        if (waited >= BLKDEV_CLOSE_TIMEOUT_NS) {
            pr_err("blkdev: %s: close: %u request%s still outstanding after %llu s: the device stays open",
                   dev->reg.name, dev->in_flight, dev->in_flight == 1 ? "" : "s",
                   (unsigned long long)(BLKDEV_CLOSE_TIMEOUT_NS / 1000000000ull));
            return STATUS_TIMEOUT;
        }
        thread_sleep_ns(CLOSE_POLL_NS);
    }
    irql_t old = spin_lock(&dev->lock);
    __atomic_store_n(&dev->open, false, __ATOMIC_RELEASE);
    spin_unlock(&dev->lock, old);
    devreg_put(&dev->reg);
    return STATUS_OK;
}

/* The request's fields against the device: STATUS_OK or why not. */
static status_t check_request(const struct blkdev *dev, const struct blkdev_request *r)
{
    if (!r->done)
        return STATUS_INVALID_PARAMETER;
    switch (r->op) {
    case BLKDEV_FLUSH:
        return r->blocks == 0 && r->lba == 0 && r->buf == NULL ? STATUS_OK : STATUS_INVALID_PARAMETER;
    case BLKDEV_READ:
    case BLKDEV_WRITE:
        if (!r->buf)
            return STATUS_INVALID_PARAMETER;
        break;
    case BLKDEV_UNMAP:
        if (r->buf)
            return STATUS_INVALID_PARAMETER;
        break;
    default:
        return STATUS_INVALID_PARAMETER;
    }
    if (r->blocks == 0 || r->blocks > dev->capacity || r->lba > dev->capacity - r->blocks ||
        (dev->max_blocks && r->blocks > dev->max_blocks))
        return STATUS_INVALID_PARAMETER;
    if (r->op != BLKDEV_READ && (dev->flags & BLKDEV_READ_ONLY))
        return STATUS_NOT_SUPPORTED;
    if (r->op == BLKDEV_UNMAP && !(dev->flags & BLKDEV_CAN_UNMAP))
        return STATUS_NOT_SUPPORTED;
    return STATUS_OK;
}

status_t blkdev_submit(struct blkdev *dev, struct blkdev_request *r)
{
    IRQL_ASSERT_MAX(IRQL_DISPATCH);
    if (!dev || !r)
        return STATUS_INVALID_PARAMETER;
    if (!__atomic_load_n(&dev->open, __ATOMIC_ACQUIRE))
        return STATUS_INVALID_STATE; /* only the holder submits */
    status_t s = check_request(dev, r);
    if (s != STATUS_OK)
        return s;
    uint32_t zero = 0;
    if (!__atomic_compare_exchange_n(&r->outstanding, &zero, 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return STATUS_BUSY; /* submitted and not completed yet */
    __atomic_add_fetch(&dev->in_flight, 1, __ATOMIC_ACQ_REL);
    /* Counted first, then the gone check: a submit racing with blkdev_gone either sees it here or is
     * in flight when the driver completes its outstanding requests. */
    s = devreg_is_gone(&dev->reg) ? STATUS_CANCELLED : dev->ops->submit(dev->drv, r);
    if (s != STATUS_OK) {
        __atomic_store_n(&r->outstanding, 0, __ATOMIC_RELEASE);
        __atomic_sub_fetch(&dev->in_flight, 1, __ATOMIC_RELEASE);
    }
    return s;
}

const char *blkdev_name(const struct blkdev *dev) { return dev->reg.name; }
bool blkdev_is_gone(const struct blkdev *dev) { return devreg_is_gone(&dev->reg); }
uint32_t blkdev_in_flight(const struct blkdev *dev) { return __atomic_load_n(&dev->in_flight, __ATOMIC_ACQUIRE); }
