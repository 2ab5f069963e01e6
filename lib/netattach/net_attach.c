/*
 * net_attach: the IPv4 stack on a network device (contract in lib/netattach/net_attach.h).
 *
 * The fast path has nothing of this file in it but the receive upcall's one call: frames go from
 * the driver's DPC through on_receive into net_input, and the stack's transmit hooks are the
 * device's own tx_begin/tx_end with the driver's context. Everything else (link changes, the
 * device going away, timers, events for the application) is handled on the binding's thread at
 * PASSIVE, woken at once by the upcalls and every NET_ATTACH_TICK_NS otherwise.
 */
#include "lib/netattach/net_attach.h"

#include "arch-x86_64/spinlock.h"
#include "arch-x86_64/tsc.h"
#include "kernel/app.h"
#include "kernel/cmdline.h"
#include "kernel/log.h"
#include "kernel/mm.h"
#include "kernel/percpu.h"
#include "kernel/sync.h"
#include "kernel/thread.h"

struct net_attach {
    struct net_if nif;        /* first: the receive upcall's ctx is the stack's interface */
    struct netdev *dev;
    bool own_ref;             /* net_attach_first's reference, put by net_detach */
    bool dhcp;
    spinlock_t lock;
    irql_t lock_irql;
    struct net_attach_config cfg;
    struct event wake;        /* an upcall happened, or net_detach */
    struct thread *thread;
    /* Written by the upcalls (DISPATCH), read by the thread (atomics). */
    uint32_t link_changes;    /* how many link upcalls */
    bool link_now;            /* the latest state they reported */
    bool gone;
    bool stop;
    /* The thread's. */
    uint32_t link_seen;
    bool configured, gone_told;
};

/* ---- the stack's hooks ---- */

static void stack_lock(void *ctx)
{
    struct net_attach *na = ctx;
    irql_t old = spin_lock(&na->lock);
    na->lock_irql = old;
}

static void stack_unlock(void *ctx)
{
    struct net_attach *na = ctx;
    spin_unlock(&na->lock, na->lock_irql);
}

static void stack_log(void *ctx, const char *line)
{
    (void)ctx;
    pr_info("net: %s", line);
}

/* ---- the device's upcalls (DISPATCH) ---- */

static void on_receive(void *ctx, uint32_t queue, const void *frame, uint32_t len)
{
    net_input(ctx, queue, frame, len, NET_NOW); /* a jump: the stack reads the clock itself */
}

static void on_link(void *ctx, bool up)
{
    struct net_attach *na = ctx;
    __atomic_store_n(&na->link_now, up, __ATOMIC_RELAXED);
    __atomic_add_fetch(&na->link_changes, 1, __ATOMIC_RELEASE);
    event_set(&na->wake);
}

static void on_gone(void *ctx)
{
    struct net_attach *na = ctx;
    __atomic_store_n(&na->gone, true, __ATOMIC_RELEASE);
    event_set(&na->wake);
}

/* ---- the thread (PASSIVE) ---- */

static void tell(struct net_attach *na, enum net_attach_event ev)
{
    if (na->cfg.event)
        na->cfg.event(na, na->cfg.event_ctx, ev);
}

static void thread_main(void *arg)
{
    struct net_attach *na = arg;
    while (!__atomic_load_n(&na->stop, __ATOMIC_ACQUIRE)) {
        (void)!event_wait(&na->wake, NET_ATTACH_TICK_NS); /* woken early or not: the same work */
        event_reset(&na->wake);
        if (__atomic_load_n(&na->stop, __ATOMIC_ACQUIRE))
            break;
        uint64_t now = tsc_ns_since_boot();
        if (__atomic_load_n(&na->gone, __ATOMIC_ACQUIRE)) {
            if (!na->gone_told) {
                na->gone_told = true;
                net_link_changed(&na->nif, false, now); /* the timers transmit nothing from now */
                pr_warn("net: %s went away (%s): detach it", netdev_name(na->dev),
                        na->dev->driver ? na->dev->driver : "?");
                tell(na, NET_ATTACH_GONE);
            }
            continue;
        }
        uint32_t changes = __atomic_load_n(&na->link_changes, __ATOMIC_ACQUIRE);
        if (changes != na->link_seen) {
            na->link_seen = changes;
            bool up = __atomic_load_n(&na->link_now, __ATOMIC_RELAXED);
            net_link_changed(&na->nif, up, now);
            tell(na, up ? NET_ATTACH_LINK_UP : NET_ATTACH_LINK_DOWN);
        }
        net_tick(&na->nif, now);
        bool configured = net_configured(&na->nif);
        if (configured != na->configured) {
            na->configured = configured;
            tell(na, configured ? NET_ATTACH_CONFIGURED : NET_ATTACH_UNCONFIGURED);
        }
    }
}

/* ---- set-up ---- */

static status_t parse_static(const struct net_attach_config *cfg, uint32_t *ip, uint32_t *mask, uint32_t *gw)
{
    *gw = 0;
    if (net_parse_ipv4_cidr(cfg->ip, ip, mask) != STATUS_OK || (cfg->gw && net_parse_ipv4(cfg->gw, gw) != STATUS_OK))
        return STATUS_BAD_DATA;
    return STATUS_OK;
}


status_t net_attach(struct netdev *dev, const struct net_attach_config *cfg, struct net_attach **out)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    if (!dev || !out)
        return STATUS_INVALID_PARAMETER;
    struct net_attach *na = kzalloc(sizeof *na);
    if (!na)
        return STATUS_NO_MEMORY;
    if (cfg) {
        na->cfg = *cfg;
    } else {
        const struct cmdline *cl = kernel_cmdline();
        na->cfg.ip = cmdline_find(cl, "ip");
        na->cfg.gw = cmdline_find(cl, "gw");
        na->cfg.thread_cpu = NET_ATTACH_CPU_LAST;
    }
    if (na->cfg.thread_cpu < 0 || (uint32_t)na->cfg.thread_cpu >= cpu_count)
        na->cfg.thread_cpu = cpu_count ? (int)cpu_count - 1 : 0;
    na->dev = dev;
    na->dhcp = na->cfg.ip == NULL;
    na->lock = (spinlock_t)SPINLOCK_INIT;
    event_init(&na->wake, EVENT_NOTIFICATION, false);
    uint32_t ip = 0, mask = 0, gw = 0;
    if (!na->dhcp && parse_static(&na->cfg, &ip, &mask, &gw) != STATUS_OK) {
        kfree(na);
        return STATUS_BAD_DATA;
    }
    const struct net_ops nops = {
        .ctx = na,
        .tx_ctx = dev->drv,
        .tx_begin = dev->ops->tx_begin,
        .tx_end = dev->ops->tx_end,
        .lock = stack_lock,
        .unlock = stack_unlock,
        .log = stack_log,
        .clock = tsc_ns_since_boot,
    };
    status_t s = net_if_init(&na->nif, dev->mac, dev->mtu, dev->queues, &nops);
    if (s != STATUS_OK) {
        pr_err("net: %s: the stack does not take MTU %u with %u queues: %s", netdev_name(dev), dev->mtu,
               dev->queues, status_name(s));
        kfree(na);
        return s;
    }
    const struct netdev_client client = { .ctx = na, .receive = on_receive, .link = on_link, .gone = on_gone };
    s = netdev_open(dev, &client);
    if (s != STATUS_OK) {
        pr_err("net: %s: not opened: %s", netdev_name(dev), status_name(s));
        kfree(na);
        return s;
    }
    /* Open: frames reach the stack from now on; it answers what it can (ARP, once addressed). */
    uint64_t now = tsc_ns_since_boot();
    s = na->dhcp ? net_dhcp_start(&na->nif, now) : net_set_static(&na->nif, ip, mask, gw, now);
    if (s == STATUS_OK) {
        net_link_changed(&na->nif, netdev_link_up(dev), now);
        s = thread_create("net", thread_main, na, na->cfg.thread_cpu, &na->thread);
    }
    if (s != STATUS_OK) {
        pr_err("net: %s: %s did not start: %s", netdev_name(dev), na->dhcp ? "DHCP" : "the address",
               status_name(s));
        netdev_close(dev);
        kfree(na);
        return s;
    }
    *out = na;
    return STATUS_OK;
}

status_t net_attach_first(const struct net_attach_config *cfg, uint64_t timeout_ns, struct net_attach **out)
{
    struct netdev *dev = netdev_wait(timeout_ns);
    if (!dev)
        return STATUS_NOT_FOUND;
    status_t s = net_attach(dev, cfg, out);
    if (s == STATUS_OK)
        (*out)->own_ref = true;
    else
        netdev_put(dev);
    return s;
}

void net_detach(struct net_attach *na)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    if (!na)
        return;
    __atomic_store_n(&na->stop, true, __ATOMIC_RELEASE);
    event_set(&na->wake);
    (void)thread_join(na->thread);
    struct netdev *dev = na->dev;
    bool put = na->own_ref;
    netdev_close(dev); /* no receive into na after this */
    kfree(na);
    if (put)
        netdev_put(dev);
}

status_t net_attach_wait_configured(struct net_attach *na, uint64_t timeout_ns)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    for (uint64_t waited = 0;; waited += NET_ATTACH_TICK_NS / 10) {
        if (net_attach_gone(na))
            return STATUS_CANCELLED;
        if (net_configured(&na->nif))
            return STATUS_OK;
        if (waited >= timeout_ns)
            return STATUS_TIMEOUT;
        thread_sleep_ns(NET_ATTACH_TICK_NS / 10);
    }
}

struct net_if *net_attach_if(struct net_attach *na) { return &na->nif; }
struct netdev *net_attach_dev(struct net_attach *na) { return na->dev; }
bool net_attach_gone(const struct net_attach *na) { return __atomic_load_n(&na->gone, __ATOMIC_ACQUIRE); }
bool net_attach_dhcp(const struct net_attach *na) { return na->dhcp; }
