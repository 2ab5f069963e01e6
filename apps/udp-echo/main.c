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
 */
#include "lib/net/net.h"
#include "drivers/netvsc/netvsc.h"
#include "drivers/netvsc/proto/nvsp_proto.h"
#include "arch-x86_64/cpu.h"
#include "arch-x86_64/irql.h"
#include "arch-x86_64/spinlock.h"
#include "arch-x86_64/tsc.h"
#include "hv/hv.h"
#include "hv/vmbus/vmbus.h"
#include "kernel/app.h"
#include "kernel/fmt.h"
#include "kernel/log.h"
#include "kernel/string.h"
#include "kernel/thread.h"

const char *const app_name = "udp-echo";
const char *const app_cmdline_keys[] = { "port",  "ip",    "gw",        "seconds", "report", "queues",
                                         "nvsp",  "rxbuf", "quit_port", "keepalive", NULL };

#define TICK_NS 100000000ull
#define LAT_BUCKETS 64 /* log2 histogram of the receive-to-send time in ns */

/* Per queue: written only by that queue's DPC. */
struct queue_stats {
    uint64_t t_rx;             /* tsc when the frame being handled reached the stack */
    uint64_t echoes, echo_bytes, lat_min, lat_max, lat_sum;
    uint64_t hist[LAT_BUCKETS];
} __attribute__((aligned(64)));

static struct net_if nif;
static struct netvsc *nic;
static spinlock_t net_lock = SPINLOCK_INIT;
static irql_t net_lock_irql;
static struct queue_stats qs[NETVSC_MAX_QUEUES];
static volatile bool link_event, link_state, quit;
static bool stack_ready; /* frames reach the stack only once it is set up (netvsc delivers from attach on) */

/* ---- the stack's ops ---- */

static void *tx_begin(void *ctx, uint32_t queue, uint32_t len)
{
    (void)ctx;
    return netvsc_tx_begin(nic, queue, len);
}

static status_t tx_end(void *ctx, uint32_t queue, void *frame, uint32_t len)
{
    (void)ctx;
    return netvsc_tx_end(nic, queue, frame, len);
}

static void lock(void *ctx)
{
    (void)ctx;
    irql_t old = spin_lock(&net_lock);
    net_lock_irql = old;
}

static void unlock(void *ctx)
{
    (void)ctx;
    spin_unlock(&net_lock, net_lock_irql);
}

static void log_line(void *ctx, const char *line)
{
    (void)ctx;
    pr_info("net: %s", line);
}

/* ---- the NIC's callbacks (DISPATCH, the queue's CPU) ---- */

static void on_frame(void *ctx, uint32_t queue, const void *frame, uint32_t len)
{
    (void)ctx;
    if (!__atomic_load_n(&stack_ready, __ATOMIC_ACQUIRE))
        return; /* before net_if_init: the frame is dropped (the host retransmits what matters) */
    qs[queue].t_rx = rdtsc();
    net_input(&nif, queue, frame, len, tsc_ns_since_boot());
}

static void on_link(void *ctx, bool up)
{
    (void)ctx;
    link_state = up;
    link_event = true; /* the main thread tells the stack (it takes the stack's lock at PASSIVE) */
}

/* ---- the echo ---- */

static void echo(struct net_if *n, uint32_t queue, const struct net_udp_meta *m, const void *payload, uint32_t len,
                 void *arg)
{
    (void)arg;
    if (net_udp_reply(n, queue, m, payload, len) != STATUS_OK)
        return; /* counted by the stack */
    struct queue_stats *q = &qs[queue];
    uint64_t ns = tsc_to_ns(rdtsc() - q->t_rx);
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
        quit = true;
}

/* ---- reports ---- */

static void report(const char *when)
{
    struct net_stats ns;
    net_get_stats(&nif, &ns);
    struct netvsc_stats vs;
    netvsc_get_stats(nic, &vs);
    uint64_t echoes = 0, bytes = 0, sum = 0, min = 0, max = 0, hist[LAT_BUCKETS] = { 0 };
    for (uint32_t i = 0; i < NETVSC_MAX_QUEUES; i++) {
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
    uint64_t drops = vs.rx_bad_range + vs.rx_bad_rndis + vs.rx_bad_nvsp + vs.rx_bad_frame + vs.tx_no_section +
                     vs.tx_send_failed + ns.too_short + ns.too_long + ns.bad_ip_header + ns.ip_truncated +
                     ns.bad_ip_checksum + ns.fragments + ns.bad_udp_length + ns.bad_udp_checksum + ns.no_port +
                     ns.bad_icmp + ns.tx_no_buffer + ns.tx_errors;
    kprintf("udp-echo: %s: rx %llu frames %llu bytes, tx %llu frames %llu bytes, echoed %llu datagrams %llu bytes, "
            "ping %llu, keep-alives %llu, drops %llu (no port %llu, bad checksum %llu, fragments %llu, "
            "no tx buffer %llu)\n",
            when, (unsigned long long)ns.rx_frames, (unsigned long long)ns.rx_bytes,
            (unsigned long long)ns.tx_frames, (unsigned long long)ns.tx_bytes, (unsigned long long)echoes,
            (unsigned long long)bytes, (unsigned long long)ns.icmp_echo, (unsigned long long)vs.keepalives,
            (unsigned long long)drops,
            (unsigned long long)ns.no_port, (unsigned long long)(ns.bad_udp_checksum + ns.bad_ip_checksum),
            (unsigned long long)ns.fragments, (unsigned long long)(ns.tx_no_buffer + vs.tx_no_section));
    if (netvsc_queue_count(nic) > 1) {
        char line[256];
        size_t at = 0;
        for (uint32_t q = 0; q < netvsc_queue_count(nic) && at < sizeof line; q++)
            at += (size_t)fmt_snprintf(line + at, sizeof line - at, "%s%u: cpu%u %llu frames", q ? ", " : "", q,
                            netvsc_queue_cpu(nic, q), (unsigned long long)netvsc_queue_rx_frames(nic, q));
        kprintf("udp-echo: %s: queues %s\n", when, line);
    }
    if (echoes)
        kprintf("udp-echo: %s: receive-to-send latency min %llu ns, mean %llu ns, p99 < %llu ns, max %llu ns "
                "(%llu echoes)\n",
                when, (unsigned long long)min, (unsigned long long)(sum / echoes), (unsigned long long)p99,
                (unsigned long long)max, (unsigned long long)echoes);
}

/* ---- main ---- */

static void find_nic(struct vmbus_channel *c, void *ctx)
{
    struct vmbus_channel **found = ctx;
    if (!*found && vmbus_channel_sub_index(c) == 0 &&
        vmbus_guid_equal(&vmbus_channel_offer(c)->if_type, &(struct vmbus_guid)VMBUS_GUID_NIC))
        *found = c;
}

static uint32_t nvsp_from_cmdline(uint64_t v)
{
    switch (v) {
    case 1: return NVSP_VERSION_1;
    case 2: return NVSP_VERSION_2;
    case 4: return NVSP_VERSION_4;
    case 5: return NVSP_VERSION_5;
    case 6: return NVSP_VERSION_6;
    default: return NVSP_VERSION_61;
    }
}

static void print_address(bool dhcp)
{
    struct net_config c;
    net_get_config(&nif, tsc_ns_since_boot(), &c);
    char ip[16], gw[16];
    net_format_ipv4(ip, sizeof ip, c.ip);
    net_format_ipv4(gw, sizeof gw, c.gw);
    kprintf("udp-echo: address %s/%d gateway %s (%s)\n", ip, net_mask_prefix(c.mask), c.gw ? gw : "none",
            dhcp ? "dhcp" : "static");
}

int app_main(void)
{
    const struct cmdline *cl = kernel_cmdline();
    status_t s = hv_init();
    if (s == STATUS_OK)
        s = vmbus_init(0);
    if (s != STATUS_OK) {
        kprintf("udp-echo: no VMBus (%s): run it on Hyper-V or with `make run` (hvsim)\n", status_name(s));
        return 3;
    }
    struct vmbus_channel *primary = NULL;
    vmbus_for_each_channel(find_nic, &primary);
    if (!primary) {
        kprintf("udp-echo: the host offers no network adapter\n");
        return 4;
    }
    struct netvsc_config cfg = {
        .max_nvsp_version = nvsp_from_cmdline(cmdline_u64(cl, "nvsp", 61, 1, 61)),
        .recv_buf_bytes = (uint32_t)cmdline_u64(cl, "rxbuf", 4096, 64, 16384) * 1024,
        .queues = (uint32_t)cmdline_u64(cl, "queues", 0, 0, NETVSC_MAX_QUEUES),
    };
    struct netvsc_ops ops = { .receive = on_frame, .link = on_link };
    s = netvsc_attach(primary, &cfg, &ops, &nic);
    if (s != STATUS_OK) {
        kprintf("udp-echo: the network adapter did not come up: %s\n", status_name(s));
        return 5;
    }
    uint8_t mac[6];
    netvsc_get_mac(nic, mac);
    struct net_ops nops = { .tx_begin = tx_begin, .tx_end = tx_end, .lock = lock, .unlock = unlock, .log = log_line };
    s = net_if_init(&nif, mac, netvsc_mtu(nic), netvsc_queue_count(nic), &nops);
    uint16_t port = (uint16_t)cmdline_u64(cl, "port", 7, 1, 65535);
    if (s == STATUS_OK)
        s = net_udp_bind(&nif, port, echo, NULL);
    uint64_t quit_port = cmdline_u64(cl, "quit_port", 0, 0, 65535);
    if (s == STATUS_OK && quit_port)
        s = net_udp_bind(&nif, (uint16_t)quit_port, on_quit, NULL);
    if (s != STATUS_OK) {
        kprintf("udp-echo: the stack did not start: %s\n", status_name(s));
        netvsc_detach(nic);
        return 6;
    }
    __atomic_store_n(&stack_ready, true, __ATOMIC_RELEASE); /* set up: the configuration calls lock */
    uint64_t now = tsc_ns_since_boot();
    const char *ip_arg = cmdline_find(cl, "ip");
    bool dhcp = ip_arg == NULL;
    if (!dhcp) {
        uint32_t ip, mask, gw = 0;
        const char *gw_arg = cmdline_find(cl, "gw");
        if (net_parse_ipv4_cidr(ip_arg, &ip, &mask) != STATUS_OK ||
            (gw_arg && net_parse_ipv4(gw_arg, &gw) != STATUS_OK) ||
            net_set_static(&nif, ip, mask, gw, now) != STATUS_OK) {
            kprintf("udp-echo: ip=%s gw=%s: not an address (ip=A.B.C.D/N gw=A.B.C.D)\n", ip_arg, gw_arg ? gw_arg : "");
            netvsc_detach(nic);
            return 2;
        }
    } else if (net_dhcp_start(&nif, now) != STATUS_OK) {
        kprintf("udp-echo: DHCP did not start\n");
        netvsc_detach(nic);
        return 6;
    }
    net_link_changed(&nif, netvsc_link_up(nic), now);
    kprintf("udp-echo: echo on udp port %u, ping answered, %u queue%s, link %s\n", port, netvsc_queue_count(nic),
            netvsc_queue_count(nic) == 1 ? "" : "s", netvsc_link_up(nic) ? "up" : "down");

    uint64_t seconds = cmdline_u64(cl, "seconds", 0, 0, 1u << 30);
    uint64_t every = cmdline_u64(cl, "report", 5, 0, 1u << 30) * 1000000000ull;
    uint64_t keepalive = cmdline_u64(cl, "keepalive", 10, 0, 3600) * 1000000000ull;
    uint64_t start = now, next_report = now + every, next_keepalive = now + keepalive;
    bool shown = false;
    for (;;) {
        thread_sleep_ns(TICK_NS);
        now = tsc_ns_since_boot();
        if (link_event) {
            link_event = false;
            net_link_changed(&nif, link_state, now);
            kprintf("udp-echo: link %s\n", link_state ? "up" : "down");
        }
        net_tick(&nif, now);
        bool configured = net_configured(&nif);
        if (configured && !shown)
            print_address(dhcp);
        shown = configured;
        if (keepalive && now >= next_keepalive) {
            status_t k = netvsc_keepalive(nic); /* PASSIVE: waits for the device (5 s at most) */
            if (k != STATUS_OK)
                kprintf("udp-echo: the network adapter did not answer a keep-alive: %s\n", status_name(k));
            next_keepalive = tsc_ns_since_boot() + keepalive;
        }
        if (every && now >= next_report) {
            report("counters");
            next_report = now + every;
        }
        if (seconds && now - start >= seconds * 1000000000ull)
            break;
        if (quit) {
            kprintf("udp-echo: quit requested on udp port %llu\n", (unsigned long long)quit_port);
            break;
        }
    }
    report("exit");
    netvsc_detach(nic);
    return 0;
}
