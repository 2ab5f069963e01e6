/*
 * net_attach: the IPv4 stack (lib/net/net.h) on a network device (kernel/netdev.h), with an
 * address: what an application needs to be on the network, in one call. Guest code (it uses the
 * kernel's threads, spinlocks and clock); the stack itself stays portable.
 *
 * net_attach(dev, cfg) opens the device, sets the stack up over it (the device's MAC, MTU and
 * queues; its transmit functions plugged into the stack directly, with no hop in between; every
 * received frame into net_input on the queue's CPU; a spinlock at DISPATCH around the stack's
 * shared state; the stack's log lines as "net: ..." info lines), configures the address (cfg->ip
 * and cfg->gw as a static address, else the DHCP client) and starts the binding's thread, which
 * applies link changes, runs net_tick every 100 ms and tells the application what happened
 * (cfg->event). The application binds its UDP ports on net_attach_if() and is done.
 *
 * When the device goes (the host rescinds the NIC, or its driver is removed), every transmit fails
 * at once (the stack counts tx_no_buffer; the application's sends get an error), the stack is told
 * the link is down (its timers transmit nothing), and the event callback gets NET_ATTACH_GONE.
 * The application then calls net_detach, which lets the device go.
 *
 * IRQL and threads: net_attach, net_attach_first, net_attach_wait_configured and net_detach at
 * PASSIVE; the getters anywhere. The event callback runs at PASSIVE on the binding's thread, one
 * event at a time, and may call anything but net_detach. The stack's own rules (net.h) hold for
 * everything else the application does with net_attach_if().
 *
 * Ownership: struct net_attach is allocated by net_attach and freed by net_detach; the net_if and
 * the netdev pointers it hands out are valid until then. net_detach closes the device (after it
 * returns no receive runs) and drops the reference net_attach_first took.
 */
#ifndef LIB_NET_NET_ATTACH_H
#define LIB_NET_NET_ATTACH_H

#include <stdbool.h>
#include <stdint.h>

#include "kernel/netdev.h"
#include "kernel/status.h"
#include "lib/net/net.h"

#define NET_ATTACH_TICK_NS 100000000ull /* net_tick's interval */
#define NET_ATTACH_CPU_LAST (-1)        /* the binding's thread on the last CPU */

enum net_attach_event {
    NET_ATTACH_LINK_UP = 1,
    NET_ATTACH_LINK_DOWN,
    NET_ATTACH_CONFIGURED,   /* an address is configured (static, or a DHCP lease) */
    NET_ATTACH_UNCONFIGURED, /* the address went (a lease expired) */
    NET_ATTACH_GONE,         /* the device went away: detach */
};

struct net_attach;

struct net_attach_config {
    const char *ip;   /* "A.B.C.D/N": a static address; NULL: DHCP */
    const char *gw;   /* with ip: the default gateway "A.B.C.D"; NULL: none */
    int thread_cpu;   /* the binding's thread; NET_ATTACH_CPU_LAST (or any value out of range): the
                         last CPU (0 is a valid CPU: set it to -1 for the default) */
    void (*event)(struct net_attach *na, void *ctx, enum net_attach_event ev); /* may be NULL */
    void *event_ctx;
};

/* Attaches the stack to dev (see above). cfg NULL: ip= and gw= from the kernel command line, the
 * thread on the last CPU, no event callback. The caller keeps its own reference to dev (put it
 * after net_detach). STATUS_BAD_DATA: cfg->ip or cfg->gw is not an address; STATUS_BUSY: dev has a
 * holder; STATUS_CANCELLED: dev is gone; else what failed (logged). */
status_t net_attach(struct netdev *dev, const struct net_attach_config *cfg, struct net_attach **out) WARN_UNUSED;
/* The first network device (waiting up to timeout_ns for one to be registered), attached. The
 * reference it took is dropped by net_detach. STATUS_NOT_FOUND: no device in time. */
status_t net_attach_first(const struct net_attach_config *cfg, uint64_t timeout_ns, struct net_attach **out)
    WARN_UNUSED;
/* Stops the thread, closes the device (and puts net_attach_first's reference), frees na. */
void net_detach(struct net_attach *na);

/* Waits until an address is configured: STATUS_OK, STATUS_TIMEOUT, or STATUS_CANCELLED (gone). */
status_t net_attach_wait_configured(struct net_attach *na, uint64_t timeout_ns) WARN_UNUSED;

struct net_if *net_attach_if(struct net_attach *na);
struct netdev *net_attach_dev(struct net_attach *na);
bool net_attach_gone(const struct net_attach *na);
bool net_attach_dhcp(const struct net_attach *na); /* the address comes from DHCP (no cfg->ip) */

#endif
