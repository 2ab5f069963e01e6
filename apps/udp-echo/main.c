/*
 * udp-echo: the network appliance. It brings up the synthetic NIC (drivers/netvsc), gets an address
 * (DHCP, or ip=/gw= on the command line) with the IPv4 stack (lib/net), echoes every UDP datagram
 * sent to its port back to the sender and answers ping. It prints its address once configured and,
 * every report= seconds and at exit, its counters (packets, bytes, drops) and the latency of its
 * own receive-to-send path (from the frame reaching the stack to the echo handed to the NIC).
 *
 * Command line: port=7, ip=A.B.C.D/N and gw=A.B.C.D (static; without ip= DHCP), seconds=N (run N
 * seconds, then exit 0; default: forever), report=5 (seconds between counter lines, 0: never),
 * queues=N (0: one per CPU), nvsp=61|6|5|4|2|1 (the newest NVSP version to ask for), rxbuf=KiB,
 * quit_port=N (off by default: a datagram "quit" to that UDP port ends the appliance cleanly, for
 * tests that want its exit counters), keepalive=10 (seconds between RNDIS keep-alives to the NIC,
 * 0: none; a device that does not answer is reported).
 *
 * The NIC comes from the driver registry: vmbus_init binds drivers/netvsc (linked in, APP_LIBS),
 * which registers a network device; net_attach (lib/net) puts the stack on it with its address.
 * This file is the echo and its reports, nothing of the NIC or the glue to it. If the host
 * rescinds the NIC, udp-echo says so ("udp-echo: the network adapter is gone ..."), prints its exit
 * counters, lets the device go and exits with status 7 (a new offer is not waited for: the bus does
 * not probe offers that come after vmbus_init).
 */
#include "lib/net/net.h"
#include "lib/netattach/net_attach.h"
#include "arch-x86_64/cpu.h"
#include "arch-x86_64/tsc.h"
#include "hv/hv.h"
#include "hv/vmbus/vmbus.h"
#include "kernel/app.h"
#include "kernel/fmt.h"
#include "kernel/log.h"
#include "kernel/netdev.h"
#include "kernel/string.h"
#include "kernel/thread.h"

const char *const app_name = "udp-echo";
/* queues, nvsp and rxbuf are drivers/netvsc's (it reads them itself when it binds the NIC); ip and gw
 * lib/net's net_attach: listed so the kernel does not call them unknown. */
const char *const app_cmdline_keys[] = { "port",  "ip",    "gw",        "seconds", "report", "queues",
                                         "nvsp",  "rxbuf", "quit_port", "keepalive", NULL };

#define TICK_NS 100000000ull
#define LAT_BUCKETS 64 /* log2 histogram of the receive-to-send time in ns */
#define MAX_QUEUES NETDEV_MAX_QUEUES

/* Per queue: written only by that queue's DPC. */
struct queue_stats {
    uint64_t echoes, echo_bytes, lat_min, lat_max, lat_sum;
    uint64_t hist[LAT_BUCKETS];
} __attribute__((aligned(64)));

static struct net_attach *na;
static struct net_if *nif;
static struct netdev *nic;
static struct queue_stats qs[MAX_QUEUES];
static bool quit, gone; /* atomics: set by a handler (DISPATCH) and the binding's thread */

/* ---- what the binding tells (PASSIVE, its thread) ---- */

static void print_address(struct net_attach *a);

static void on_event(struct net_attach *a, void *ctx, enum net_attach_event ev)
{
    (void)ctx;
    switch (ev) {
    case NET_ATTACH_LINK_UP:
    case NET_ATTACH_LINK_DOWN:
        kprintf("udp-echo: link %s\n", ev == NET_ATTACH_LINK_UP ? "up" : "down");
        break;
    case NET_ATTACH_CONFIGURED:
        print_address(a);
        break;
    case NET_ATTACH_UNCONFIGURED:
        break;
    case NET_ATTACH_GONE:
        __atomic_store_n(&gone, true, __ATOMIC_RELEASE); /* the main loop says so and stops */
        break;
    }
}

/* ---- the echo ---- */

static void echo(struct net_if *n, uint32_t queue, const struct net_udp_meta *m, const void *payload, uint32_t len,
                 void *arg)
{
    (void)arg;
    if (net_udp_reply(n, queue, m, payload, len) != STATUS_OK)
        return; /* counted by the stack */
    struct queue_stats *q = &qs[queue];
    uint64_t ns = tsc_ns_since_boot() - m->rx_ns; /* from the frame reaching the stack */
    q->echoes++;
    q->echo_bytes += len;
    q->lat_sum += ns;
    if (!q->lat_min || ns < q->lat_min)
        q->lat_min = ns;
    if (ns > q->lat_max)
        q->lat_max = ns;
    q->hist[ns ? 63 - __builtin_clzll(ns) : 0]++;
}

static void on_quit(struct net_if *n, uint32_t queue, const struct net_udp_meta *m, const void *payload,
                    uint32_t len, void *arg)
{
    (void)n;
    (void)queue;
    (void)m;
    (void)arg;
    if (len >= 4 && memcmp(payload, "quit", 4) == 0)
        __atomic_store_n(&quit, true, __ATOMIC_RELEASE);
}

/* ---- reports ---- */

static void report(const char *when)
{
    struct net_stats ns;
    net_get_stats(nif, &ns);
    struct netdev_stats ds;
    netdev_get_stats(nic, &ds);
    uint64_t echoes = 0, bytes = 0, sum = 0, min = 0, max = 0, hist[LAT_BUCKETS] = { 0 };
    for (uint32_t i = 0; i < MAX_QUEUES; i++) {
        const struct queue_stats *q = &qs[i];
        echoes += q->echoes;
        bytes += q->echo_bytes;
        sum += q->lat_sum;
        if (q->lat_min && (!min || q->lat_min < min))
            min = q->lat_min;
        if (q->lat_max > max)
            max = q->lat_max;
        for (int b = 0; b < LAT_BUCKETS; b++)
            hist[b] += q->hist[b];
    }
    uint64_t p99 = 0, seen = 0;
    for (int b = 0; b < LAT_BUCKETS && echoes; b++) {
        seen += hist[b];
        if (seen * 100 >= echoes * 99) {
            p99 = 2ull << b; /* the bucket's upper bound */
            break;
        }
    }
    uint64_t drops = ds.rx_errors + ds.tx_no_buffer + ds.tx_errors + ns.too_short + ns.too_long + ns.bad_ip_header +
                     ns.ip_truncated + ns.bad_ip_checksum + ns.fragments + ns.bad_udp_length + ns.bad_udp_checksum +
                     ns.no_port + ns.bad_icmp + ns.tx_no_buffer + ns.tx_errors;
    kprintf("udp-echo: %s: rx %llu frames %llu bytes, tx %llu frames %llu bytes, echoed %llu datagrams %llu bytes, "
            "ping %llu, keep-alives %llu, drops %llu (no port %llu, bad checksum %llu, fragments %llu, "
            "no tx buffer %llu)\n",
            when, (unsigned long long)ns.rx_frames, (unsigned long long)ns.rx_bytes,
            (unsigned long long)ns.tx_frames, (unsigned long long)ns.tx_bytes, (unsigned long long)echoes,
            (unsigned long long)bytes, (unsigned long long)ns.icmp_echo, (unsigned long long)ds.checks,
            (unsigned long long)drops,
            (unsigned long long)ns.no_port, (unsigned long long)(ns.bad_udp_checksum + ns.bad_ip_checksum),
            (unsigned long long)ns.fragments, (unsigned long long)(ns.tx_no_buffer + ds.tx_no_buffer));
    if (nic->queues > 1) {
        char line[256];
        size_t at = 0;
        for (uint32_t q = 0; q < nic->queues && at < sizeof line; q++)
            at += (size_t)fmt_snprintf(line + at, sizeof line - at, "%s%u: cpu%u %llu frames", q ? ", " : "", q,
                                       netdev_queue_cpu(nic, q), (unsigned long long)netdev_queue_rx_frames(nic, q));
        kprintf("udp-echo: %s: queues %s\n", when, line);
    }
    if (echoes)
        kprintf("udp-echo: %s: receive-to-send latency min %llu ns, mean %llu ns, p99 < %llu ns, max %llu ns "
                "(%llu echoes)\n",
                when, (unsigned long long)min, (unsigned long long)(sum / echoes), (unsigned long long)p99,
                (unsigned long long)max, (unsigned long long)echoes);
}

/* ---- main ---- */

static void print_address(struct net_attach *a)
{
    struct net_config c;
    net_get_config(net_attach_if(a), tsc_ns_since_boot(), &c);
    char ip[16], gw[16];
    net_format_ipv4(ip, sizeof ip, c.ip);
    net_format_ipv4(gw, sizeof gw, c.gw);
    kprintf("udp-echo: address %s/%d gateway %s (%s)\n", ip, net_mask_prefix(c.mask), c.gw ? gw : "none",
            net_attach_dhcp(a) ? "dhcp" : "static");
}

int app_main(void)
{
    const struct cmdline *cl = kernel_cmdline();
    __atomic_store_n(&gone, false, __ATOMIC_RELAXED); /* once per boot; more often in the hosted tests */
    __atomic_store_n(&quit, false, __ATOMIC_RELAXED);
    memset(qs, 0, sizeof qs);
    status_t s = hv_init();
    if (s == STATUS_OK)
        s = vmbus_init(0); /* binds the drivers linked in: drivers/netvsc registers the NIC as a netdev */
    if (s != STATUS_OK) {
        kprintf("udp-echo: no VMBus (%s): run it on Hyper-V or with `make run` (hvsim)\n", status_name(s));
        return 3;
    }
    const char *ip_arg = cmdline_find(cl, "ip"), *gw_arg = cmdline_find(cl, "gw");
    struct net_attach_config cfg = {
        .ip = ip_arg, .gw = gw_arg, .thread_cpu = NET_ATTACH_CPU_LAST, .event = on_event,
    };
    s = net_attach_first(&cfg, 0, &na); /* vmbus_init probed every offer: a NIC is there by now or never */
    if (s == STATUS_BAD_DATA) {
        kprintf("udp-echo: ip=%s gw=%s: not an address (ip=A.B.C.D/N gw=A.B.C.D)\n", ip_arg, gw_arg ? gw_arg : "");
        return 2;
    }
    if (s == STATUS_NOT_FOUND) {
        kprintf("udp-echo: the host offers no network adapter (or it did not come up)\n");
        return 4;
    }
    if (s != STATUS_OK) {
        kprintf("udp-echo: the stack did not start: %s\n", status_name(s));
        return 6;
    }
    nif = net_attach_if(na);
    nic = net_attach_dev(na);
    uint16_t port = (uint16_t)cmdline_u64(cl, "port", 7, 1, 65535);
    s = net_udp_bind(nif, port, echo, NULL);
    uint64_t quit_port = cmdline_u64(cl, "quit_port", 0, 0, 65535);
    if (s == STATUS_OK && quit_port)
        s = net_udp_bind(nif, (uint16_t)quit_port, on_quit, NULL);
    if (s != STATUS_OK) {
        kprintf("udp-echo: the stack did not start: %s\n", status_name(s));
        net_detach(na);
        return 6;
    }
    kprintf("udp-echo: echo on udp port %u, ping answered, %u queue%s, link %s\n", port, nic->queues,
            nic->queues == 1 ? "" : "s", netdev_link_up(nic) ? "up" : "down");

    uint64_t now = tsc_ns_since_boot();
    uint64_t seconds = cmdline_u64(cl, "seconds", 0, 0, 1u << 30);
    uint64_t every = cmdline_u64(cl, "report", 5, 0, 1u << 30) * 1000000000ull;
    uint64_t keepalive = cmdline_u64(cl, "keepalive", 10, 0, 3600) * 1000000000ull;
    uint64_t start = now, next_report = now + every, next_keepalive = now + keepalive;
    int code = 0;
    for (;;) {
        thread_sleep_ns(TICK_NS);
        now = tsc_ns_since_boot();
        if (__atomic_load_n(&gone, __ATOMIC_ACQUIRE)) {
            kprintf("udp-echo: the network adapter is gone (%s %s, withdrawn by the host): stopping\n",
                    netdev_name(nic), nic->driver);
            code = 7;
            break;
        }
        if (keepalive && now >= next_keepalive) {
            status_t k = netdev_check(nic); /* PASSIVE: waits for the device (5 s at most) */
            if (k != STATUS_OK && !__atomic_load_n(&gone, __ATOMIC_ACQUIRE))
                kprintf("udp-echo: the network adapter did not answer a keep-alive: %s\n", status_name(k));
            next_keepalive = tsc_ns_since_boot() + keepalive;
        }
        if (every && now >= next_report) {
            report("counters");
            next_report = now + every;
        }
        if (seconds && now - start >= seconds * 1000000000ull)
            break;
        if (__atomic_load_n(&quit, __ATOMIC_ACQUIRE)) {
            kprintf("udp-echo: quit requested on udp port %llu\n", (unsigned long long)quit_port);
            break;
        }
    }
    report("exit");
    net_detach(na); /* after a rescind this is what lets the driver close the NIC's channels */
    return code;
}
