/*
 * hvsim: the simulated Hyper-V root partition for a QEMU guest (sim/README.md).
 *
 *   hvsim --mem PATH --mem-size BYTES --socket PATH [--vcpus N] [--no-direct-stimer]
 *         [--recommend-no-aeoi] [--no-reference-tsc] [--deny-privilege NAME]... [--verbose]
 *         [--crash-after-kicks N] [--no-vmbus | [--vmbus-version X.Y] [--vmbus-hazard NAME]...
 *         [--vmbus-delay-us N] [--vmbus-rescind-after-ms DEVICE:MS]]
 *         [--no-net | [--net-forward HOSTPORT:GUESTPORT]... [--net-control PORT] [--nvsp-version X]
 *         [--net-queues N] [--net-mac MAC] [--net-lease-s N] [--net-rx-compact] [--net-tap IFNAME]]
 *
 * Creates and maps the guest RAM file (QEMU maps the same file with share=on), listens on a unix
 * socket for QEMU's doorbell UART (-chardev socket,path=PATH), accepts one connection and serves the
 * protocol of hv/proto/simdb.h until QEMU disconnects (exit 0, one line of stats) or SIGTERM/SIGINT (exit
 * 0). Errors exit non-zero with a message. The model itself is the library (sim/hvsim.h), with
 * its VMBus server (sim/vmbus_server.h, created with each model unless --no-vmbus); the protocol
 * pieces are sim/doorbell.h; this file is only the process around them. The synthetic NIC is served
 * by the netvsp (sim/netvsp/netvsp.h) behind the user-mode gateway (sim/netvsp/netgw.h) or a TAP device, unless
 * --no-net or --no-vmbus: both live for the whole run (across guest reboots), and the device table
 * the VMBus servers get is a copy of the default one with the NIC bound to the netvsp.
 *
 * Threads: this one reads the socket and serves requests; the library's timer thread runs the
 * synthetic timers, the VMBus server's thread its channel messages, the gateway's thread the network
 * sockets. Interrupts (raised with the model's lock held, from either thread) set the
 * vector in the mailbox and bump an eventfd; only this thread writes SIMDB_IRQ bytes to the socket,
 * so a slow QEMU never blocks the model.
 */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "hv/proto/simdb.h"
#include "sim/doorbell.h"
#include "drivers/netvsc/proto/nvsp_proto.h"
#include "sim/hvsim.h"
#include "sim/netvsp/netgw.h"
#include "sim/netvsp/netvsp.h"
#include "sim/vmbus_server.h"

/* The status of a simulated crash (--crash-after-kicks). */
#define CRASH_STATUS 70

/* QEMU q35 maps guest RAM below 2 GiB at the same offsets as the backing file. */
#define LOW_RAM_LIMIT (2ull << 30)

struct server {
    const char *mem_path, *socket_path;
    bool mem_created, socket_bound;
    uint8_t *mem;
    uint64_t mem_size, ram_size;
    int listen_fd, conn_fd, irq_fd, signal_fd;
    struct hvsim_config cfg;
    uint32_t expect_vcpus;
    struct hvsim *sim;
    bool no_vmbus;
    struct hvsim_vmbus_config vmbus_cfg; /* devices: hvsim_vmbus_default_devices */
    struct hvsim_vmbus *vmbus;           /* lives and dies with sim */
    char rescind_device[32];             /* --vmbus-rescind-after-ms */
    struct simdb_mailbox *mailbox;
    uint32_t vp_count;
    struct simdb_parser parser;
    uint64_t rx_host_tsc; /* host TSC when the bytes being parsed arrived */
    const char *fatal;    /* set by a callback: stop with this error */
    bool peer_closed;
    struct hvsim_stats totals; /* of models already destroyed (guest reboots) */
    struct hvsim_vmbus_stats vmbus_totals;
    uint32_t vmbus_version;    /* the last version a guest negotiated */
    uint64_t hellos, kicks, irq_bytes;
    uint64_t crash_after_kicks; /* 0: never. Else die abruptly on that kick (tests the launcher) */
    /* the network: the netvsp serves the NIC unless no_net (or no_vmbus) */
    bool no_net;
    struct hvsim_netvsp_config net_cfg;
    struct hvsim_netgw_forward forwards[HVSIM_NETGW_MAX_FORWARDS];
    uint32_t forward_count;
    bool net_control;
    uint16_t net_control_port;
    uint32_t net_lease_s;
    const char *net_tap;
    struct hvsim_netvsp *netvsp;
    struct hvsim_netgw *netgw;
    struct hvsim_vmbus_device *devices; /* the default table with the NIC bound to netvsp */
};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("hvsim: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    fflush(stderr);
    va_end(ap);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: hvsim --mem PATH --mem-size BYTES --socket PATH [--vcpus N] [--no-direct-stimer]\n"
            "             [--recommend-no-aeoi] [--no-reference-tsc] [--deny-privilege NAME]... [--verbose]\n"
            "             [--crash-after-kicks N] [--no-vmbus | [--vmbus-version X.Y] [--vmbus-hazard NAME]...\n"
            "             [--vmbus-delay-us N] [--vmbus-rescind-after-ms DEVICE:MS]]\n"
            "             [--no-net | [--net-forward HOSTPORT:GUESTPORT]... [--net-control PORT]\n"
            "             [--nvsp-version X] [--net-queues N] [--net-mac MAC] [--net-lease-s N]\n"
            "             [--net-rx-compact] [--net-tap IFNAME]]\n"
            "  BYTES takes a K, M or G suffix; privilege names: partition-refcount synic stimer hypercall\n"
            "  vp-index reference-tsc frequency-msrs post-messages signal-events\n"
            "  --crash-after-kicks N: exit at once with status %d on the guest's Nth doorbell kick, without\n"
            "  cleaning up, as a crashed host would (tests that the launcher notices)\n"
            "  --no-vmbus: no VMBus server (no message port 1: the guest finds no VMBus)\n"
            "  --vmbus-version X.Y: the newest VMBus version the host accepts (default 6.0): 6.0 5.3 5.2 5.1\n"
            "  5.0 4.1 4.0 3.0 2.4 1.1 0.13\n"
            "  --vmbus-hazard NAME: misbehave like some hosts do: irq-before-open-result send-on-open\n"
            "  delay-responses reorder-responses rescind-during-open bad-offers unasked-responses\n"
            "  rescind-during-gpadl late-torndown-after-rescind rescind-sub-during-opens offer-churn\n"
            "  --vmbus-delay-us N: the delay (delay-responses) or reordering window (reorder-responses)\n"
            "  --vmbus-rescind-after-ms DEVICE:MS: rescind DEVICE (netvsc storvsc heartbeat shutdown timesync\n"
            "  kvp hvsim-test) MS ms after its channel first opened\n"
            "  The synthetic NIC is served by hvsim's netvsp behind a user-mode gateway (10.0.2.2, the guest\n"
            "  10.0.2.15 by DHCP) unless --no-net:\n"
            "  --net-forward HOSTPORT:GUESTPORT: UDP 127.0.0.1:HOSTPORT to the guest's GUESTPORT (repeatable)\n"
            "  --net-control PORT: text commands on UDP 127.0.0.1:PORT (ping N [SIZE], link up|down, stats)\n"
            "  --nvsp-version X: the newest NVSP version accepted (default 6.1): 1 2 4 5 6 6.1\n"
            "  --net-queues N: 1..8 queues (the primary + sub-channels on request), default 1\n"
            "  --net-mac MAC: the NIC's address (default 00:15:5d:00:00:01); --net-lease-s N: the DHCP lease\n"
            "  --net-rx-compact: received frames right after their RNDIS header (default: openvmm's layout)\n"
            "  --net-tap IFNAME: frames to and from a TAP device instead of the gateway (CAP_NET_ADMIN)\n",
            CRASH_STATUS);
}

/* The --vmbus-version spellings (hyperv-facts.md 3.7). */
static const struct {
    const char *name;
    uint32_t version;
} vmbus_versions[] = {
    { "6.0", VMBUS_VERSION_COPPER },     { "5.3", VMBUS_VERSION_WIN10_V5_3 }, { "5.2", VMBUS_VERSION_WIN10_V5_2 },
    { "5.1", VMBUS_VERSION_WIN10_V5_1 }, { "5.0", VMBUS_VERSION_WIN10_V5 },   { "4.1", VMBUS_VERSION_WIN10_RS3 },
    { "4.0", VMBUS_VERSION_WIN10 },      { "3.0", VMBUS_VERSION_WIN8_1 },     { "2.4", VMBUS_VERSION_WIN8 },
    { "1.1", VMBUS_VERSION_WIN7 },       { "0.13", VMBUS_VERSION_WS2008 },
};

static const struct {
    const char *name;
    uint32_t bit;
} vmbus_hazards[] = {
    { "irq-before-open-result", HVSIM_VMBUS_IRQ_BEFORE_OPEN_RESULT },
    { "send-on-open", HVSIM_VMBUS_SEND_ON_OPEN },
    { "delay-responses", HVSIM_VMBUS_DELAY_RESPONSES },
    { "reorder-responses", HVSIM_VMBUS_REORDER_RESPONSES },
    { "rescind-during-open", HVSIM_VMBUS_RESCIND_DURING_OPEN },
    { "bad-offers", HVSIM_VMBUS_BAD_OFFERS },
    { "unasked-responses", HVSIM_VMBUS_UNASKED_RESPONSES },
    { "rescind-during-gpadl", HVSIM_VMBUS_RESCIND_DURING_GPADL },
    { "late-torndown-after-rescind", HVSIM_VMBUS_LATE_TORNDOWN_AFTER_RESCIND },
    { "rescind-sub-during-opens", HVSIM_VMBUS_RESCIND_SUB_DURING_OPENS },
    { "offer-churn", HVSIM_VMBUS_OFFER_CHURN },
};

#define MAX_DELAY_US 10000000ul  /* 10 s */
#define MAX_LEASE_S 864000ul     /* 10 days */

static const struct {
    const char *name;
    uint32_t version;
} nvsp_versions[] = {
    { "1", NVSP_VERSION_1 }, { "2", NVSP_VERSION_2 }, { "4", NVSP_VERSION_4 },
    { "5", NVSP_VERSION_5 }, { "6", NVSP_VERSION_6 }, { "6.1", NVSP_VERSION_61 },
};

static uint32_t nvsp_version_named(const char *name)
{
    for (size_t i = 0; i < sizeof nvsp_versions / sizeof nvsp_versions[0]; i++)
        if (strcmp(name, nvsp_versions[i].name) == 0)
            return nvsp_versions[i].version;
    return 0;
}
#define MAX_RESCIND_MS 3600000ul /* an hour */

static uint32_t vmbus_version_named(const char *name)
{
    for (size_t i = 0; i < sizeof vmbus_versions / sizeof vmbus_versions[0]; i++)
        if (strcmp(name, vmbus_versions[i].name) == 0)
            return vmbus_versions[i].version;
    return 0;
}

static uint32_t vmbus_hazard_named(const char *name)
{
    for (size_t i = 0; i < sizeof vmbus_hazards / sizeof vmbus_hazards[0]; i++)
        if (strcmp(name, vmbus_hazards[i].name) == 0)
            return vmbus_hazards[i].bit;
    return 0;
}

/* A decimal count in 1..max (no sign, no suffix). */
static bool parse_count(const char *s, unsigned long max, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || *s == '-' || *s == '+' || v == 0 || v > max)
        return false;
    *out = (uint32_t)v;
    return true;
}

/* A port number 1..65535 (0 too with allow_zero). */
static bool parse_port(const char *s, bool allow_zero, uint16_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || *s == '-' || *s == '+' || v > 65535 || (!allow_zero && v == 0))
        return false;
    *out = (uint16_t)v;
    return true;
}

/* "HOSTPORT:GUESTPORT". */
static bool parse_forward(const char *arg, struct hvsim_netgw_forward *f)
{
    char host[8];
    const char *colon = strchr(arg, ':');
    if (!colon || colon == arg || (size_t)(colon - arg) >= sizeof host)
        return false;
    memcpy(host, arg, (size_t)(colon - arg));
    host[colon - arg] = '\0';
    return parse_port(host, false, &f->host_port) && parse_port(colon + 1, false, &f->guest_port);
}

/* "aa:bb:cc:dd:ee:ff", unicast. */
static bool parse_mac(const char *s, uint8_t mac[6])
{
    unsigned v[6];
    char extra;
    if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &extra) != 6)
        return false;
    for (int i = 0; i < 6; i++)
        mac[i] = (uint8_t)v[i];
    return !(mac[0] & 1) && (mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5]);
}

/* "DEVICE:MS": a default device's name and a delay. */
static bool parse_rescind(struct server *s, const char *arg)
{
    const char *colon = strchr(arg, ':');
    if (!colon || (size_t)(colon - arg) >= sizeof s->rescind_device)
        return false;
    memcpy(s->rescind_device, arg, (size_t)(colon - arg));
    s->rescind_device[colon - arg] = '\0';
    bool known = false;
    for (uint32_t i = 0; i < hvsim_vmbus_default_device_count; i++)
        known |= strcmp(s->rescind_device, hvsim_vmbus_default_devices[i].name) == 0;
    if (!known || !parse_count(colon + 1, MAX_RESCIND_MS, &s->vmbus_cfg.rescind_after_ms))
        return false;
    s->vmbus_cfg.rescind_device = s->rescind_device;
    return true;
}

static const struct {
    const char *name;
    uint32_t low, high;
} privilege_names[] = {
    { "partition-refcount", HV_PRIV_ACCESS_PARTITION_REFCOUNT, 0 },
    { "synic", HV_PRIV_ACCESS_SYNIC_REGS, 0 },
    { "stimer", HV_PRIV_ACCESS_SYNTHETIC_TIMERS, 0 },
    { "hypercall", HV_PRIV_ACCESS_HYPERCALL_MSRS, 0 },
    { "vp-index", HV_PRIV_ACCESS_VP_INDEX, 0 },
    { "reference-tsc", HV_PRIV_ACCESS_REFERENCE_TSC, 0 },
    { "frequency-msrs", HV_PRIV_ACCESS_FREQUENCY_MSRS, 0 },
    { "post-messages", 0, HV_PRIV_POST_MESSAGES },
    { "signal-events", 0, HV_PRIV_SIGNAL_EVENTS },
};

static bool deny_privilege(struct hvsim_config *cfg, const char *name)
{
    for (size_t i = 0; i < sizeof privilege_names / sizeof privilege_names[0]; i++) {
        if (strcasecmp(name, privilege_names[i].name) == 0) {
            cfg->deny_privileges_low |= privilege_names[i].low;
            cfg->deny_privileges_high |= privilege_names[i].high;
            return true;
        }
    }
    return false;
}

/* "256M", "4096", "1G": bytes, a positive multiple of 4 KiB. */
static bool parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *s == '-')
        return false;
    unsigned shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    default: break;
    }
    if (*end || v == 0 || v > (UINT64_MAX >> shift) || ((v << shift) % 4096))
        return false;
    *out = (uint64_t)v << shift;
    return true;
}

static void parse_args(struct server *s, int argc, char **argv)
{
    enum { OPT_MEM = 256, OPT_MEM_SIZE, OPT_SOCKET, OPT_VCPUS, OPT_NO_DIRECT, OPT_NO_AEOI, OPT_NO_TSC, OPT_DENY,
           OPT_VERBOSE, OPT_CRASH, OPT_NO_VMBUS, OPT_VMBUS_VERSION, OPT_VMBUS_HAZARD, OPT_VMBUS_DELAY,
           OPT_VMBUS_RESCIND, OPT_NO_NET, OPT_NET_FORWARD, OPT_NET_CONTROL, OPT_NVSP_VERSION, OPT_NET_QUEUES,
           OPT_NET_MAC, OPT_NET_LEASE, OPT_NET_COMPACT, OPT_NET_TAP };
    static const struct option opts[] = {
        { "mem", required_argument, NULL, OPT_MEM },
        { "mem-size", required_argument, NULL, OPT_MEM_SIZE },
        { "socket", required_argument, NULL, OPT_SOCKET },
        { "vcpus", required_argument, NULL, OPT_VCPUS },
        { "no-direct-stimer", no_argument, NULL, OPT_NO_DIRECT },
        { "recommend-no-aeoi", no_argument, NULL, OPT_NO_AEOI },
        { "no-reference-tsc", no_argument, NULL, OPT_NO_TSC },
        { "deny-privilege", required_argument, NULL, OPT_DENY },
        { "verbose", no_argument, NULL, OPT_VERBOSE },
        { "crash-after-kicks", required_argument, NULL, OPT_CRASH },
        { "no-vmbus", no_argument, NULL, OPT_NO_VMBUS },
        { "vmbus-version", required_argument, NULL, OPT_VMBUS_VERSION },
        { "vmbus-hazard", required_argument, NULL, OPT_VMBUS_HAZARD },
        { "vmbus-delay-us", required_argument, NULL, OPT_VMBUS_DELAY },
        { "vmbus-rescind-after-ms", required_argument, NULL, OPT_VMBUS_RESCIND },
        { "no-net", no_argument, NULL, OPT_NO_NET },
        { "net-forward", required_argument, NULL, OPT_NET_FORWARD },
        { "net-control", required_argument, NULL, OPT_NET_CONTROL },
        { "nvsp-version", required_argument, NULL, OPT_NVSP_VERSION },
        { "net-queues", required_argument, NULL, OPT_NET_QUEUES },
        { "net-mac", required_argument, NULL, OPT_NET_MAC },
        { "net-lease-s", required_argument, NULL, OPT_NET_LEASE },
        { "net-rx-compact", no_argument, NULL, OPT_NET_COMPACT },
        { "net-tap", required_argument, NULL, OPT_NET_TAP },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    bool vmbus_options = false; /* any --vmbus-*: contradicts --no-vmbus */
    bool net_options = false;   /* any --net-* / --nvsp-*: contradicts --no-net and --no-vmbus */
    s->vmbus_cfg.devices = hvsim_vmbus_default_devices;
    s->vmbus_cfg.device_count = hvsim_vmbus_default_device_count;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_MEM:
            s->mem_path = optarg;
            break;
        case OPT_MEM_SIZE:
            if (!parse_size(optarg, &s->mem_size)) {
                say("--mem-size %s: expected a positive multiple of 4096 bytes (K, M, G suffixes)", optarg);
                exit(2);
            }
            break;
        case OPT_SOCKET:
            s->socket_path = optarg;
            break;
        case OPT_VCPUS: {
            char *end;
            unsigned long n = strtoul(optarg, &end, 10);
            if (*end || n < 1 || n > SIMDB_MAX_VPS) {
                say("--vcpus %s: expected 1..%u", optarg, SIMDB_MAX_VPS);
                exit(2);
            }
            s->expect_vcpus = (uint32_t)n;
            break;
        }
        case OPT_NO_DIRECT:
            s->cfg.no_direct_stimer = true;
            break;
        case OPT_NO_AEOI:
            s->cfg.recommend_no_aeoi = true;
            break;
        case OPT_NO_TSC:
            s->cfg.no_reference_tsc = true;
            break;
        case OPT_DENY:
            if (!deny_privilege(&s->cfg, optarg)) {
                say("--deny-privilege %s: unknown privilege", optarg);
                usage();
                exit(2);
            }
            break;
        case OPT_VERBOSE:
            s->cfg.verbosity = 1;
            break;
        case OPT_CRASH: {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(optarg, &end, 10);
            if (errno || *end || n == 0 || *optarg == '-') {
                say("--crash-after-kicks %s: expected a positive count", optarg);
                exit(2);
            }
            s->crash_after_kicks = n;
            break;
        }
        case OPT_NO_VMBUS:
            s->no_vmbus = true;
            break;
        case OPT_VMBUS_VERSION:
            vmbus_options = true;
            if (!(s->vmbus_cfg.max_version = vmbus_version_named(optarg))) {
                say("--vmbus-version %s: not a VMBus version (6.0 5.3 5.2 5.1 5.0 4.1 4.0 3.0 2.4 1.1 0.13)",
                    optarg);
                exit(2);
            }
            break;
        case OPT_VMBUS_HAZARD: {
            vmbus_options = true;
            uint32_t bit = vmbus_hazard_named(optarg);
            if (!bit) {
                say("--vmbus-hazard %s: unknown hazard", optarg);
                usage();
                exit(2);
            }
            s->vmbus_cfg.hazards |= bit;
            break;
        }
        case OPT_VMBUS_DELAY:
            vmbus_options = true;
            if (!parse_count(optarg, MAX_DELAY_US, &s->vmbus_cfg.response_delay_us)) {
                say("--vmbus-delay-us %s: expected 1..%lu", optarg, MAX_DELAY_US);
                exit(2);
            }
            break;
        case OPT_VMBUS_RESCIND:
            vmbus_options = true;
            if (s->vmbus_cfg.rescind_device) {
                say("--vmbus-rescind-after-ms given twice: one device per run");
                exit(2);
            }
            if (!parse_rescind(s, optarg)) {
                say("--vmbus-rescind-after-ms %s: expected DEVICE:MS, a default device and 1..%lu ms", optarg,
                    MAX_RESCIND_MS);
                exit(2);
            }
            break;
        case OPT_NO_NET:
            s->no_net = true;
            break;
        case OPT_NET_FORWARD:
            net_options = true;
            if (s->forward_count == HVSIM_NETGW_MAX_FORWARDS) {
                say("--net-forward: at most %u forwards", HVSIM_NETGW_MAX_FORWARDS);
                exit(2);
            }
            if (!parse_forward(optarg, &s->forwards[s->forward_count])) {
                say("--net-forward %s: expected HOSTPORT:GUESTPORT, each 1..65535", optarg);
                exit(2);
            }
            s->forward_count++;
            break;
        case OPT_NET_CONTROL:
            net_options = true;
            if (!parse_port(optarg, false, &s->net_control_port)) {
                say("--net-control %s: expected a port 1..65535", optarg);
                exit(2);
            }
            s->net_control = true;
            break;
        case OPT_NVSP_VERSION:
            net_options = true;
            if (!(s->net_cfg.max_version = nvsp_version_named(optarg))) {
                say("--nvsp-version %s: not an NVSP version (1 2 4 5 6 6.1)", optarg);
                exit(2);
            }
            break;
        case OPT_NET_QUEUES:
            net_options = true;
            if (!parse_count(optarg, HVSIM_NETVSP_MAX_QUEUES, &s->net_cfg.queues)) {
                say("--net-queues %s: expected 1..%u", optarg, HVSIM_NETVSP_MAX_QUEUES);
                exit(2);
            }
            break;
        case OPT_NET_MAC:
            net_options = true;
            if (!parse_mac(optarg, s->net_cfg.mac)) {
                say("--net-mac %s: expected a unicast address like 00:15:5d:00:00:01", optarg);
                exit(2);
            }
            break;
        case OPT_NET_LEASE:
            net_options = true;
            if (!parse_count(optarg, MAX_LEASE_S, &s->net_lease_s)) {
                say("--net-lease-s %s: expected 1..%lu", optarg, MAX_LEASE_S);
                exit(2);
            }
            break;
        case OPT_NET_COMPACT:
            net_options = true;
            s->net_cfg.rx_compact = true;
            break;
        case OPT_NET_TAP:
            net_options = true;
            if (!*optarg || strlen(optarg) >= 16) {
                say("--net-tap %s: expected an interface name of 1..15 characters", optarg);
                exit(2);
            }
            s->net_tap = optarg;
            break;
        case 'h':
            usage();
            exit(0);
        default:
            usage();
            exit(2);
        }
    }
    if (optind != argc || !s->mem_path || !s->mem_size || !s->socket_path) {
        usage();
        exit(2);
    }
    if (s->no_vmbus && vmbus_options) {
        say("--no-vmbus contradicts the --vmbus-* options");
        exit(2);
    }
    if ((s->no_vmbus || s->no_net) && net_options) {
        say("%s contradicts the --net-* and --nvsp-version options", s->no_vmbus ? "--no-vmbus" : "--no-net");
        exit(2);
    }
    if (s->net_tap && (s->forward_count || s->net_lease_s)) {
        say("--net-tap replaces the gateway: --net-forward and --net-lease-s do not apply");
        exit(2);
    }
    if (s->vmbus_cfg.response_delay_us &&
        !(s->vmbus_cfg.hazards & (HVSIM_VMBUS_DELAY_RESPONSES | HVSIM_VMBUS_REORDER_RESPONSES))) {
        say("--vmbus-delay-us needs --vmbus-hazard delay-responses or reorder-responses");
        exit(2);
    }
}

static void add_stats(struct hvsim_stats *to, const struct hvsim_stats *from)
{
    to->hypercalls += from->hypercalls;
    to->posts_ok += from->posts_ok;
    to->posts_failed += from->posts_failed;
    to->signals += from->signals;
    to->messages_delivered += from->messages_delivered;
    to->messages_queued += from->messages_queued;
    to->eoms += from->eoms;
    to->interrupts_raised += from->interrupts_raised;
    to->timer_expiries += from->timer_expiries;
    to->msr_faults += from->msr_faults;
}

static void add_vmbus_stats(struct hvsim_vmbus_stats *to, const struct hvsim_vmbus_stats *from)
{
    to->messages_in += from->messages_in;
    to->messages_out += from->messages_out;
    to->guest_errors += from->guest_errors;
    to->opens += from->opens;
    to->closes += from->closes;
    to->rescinds += from->rescinds;
    to->gpadls_created += from->gpadls_created;
    to->gpadls_torn_down += from->gpadls_torn_down;
    to->guest_signals += from->guest_signals;
    to->monitor_signals += from->monitor_signals;
    to->host_signals += from->host_signals;
    to->unloads += from->unloads;
    to->messages_conn_message += from->messages_conn_message;
    to->messages_conn_multiclient += from->messages_conn_multiclient;
    to->messages_conn_redirect += from->messages_conn_redirect;
    to->post_retries += from->post_retries;
}

static void destroy_model(struct server *s)
{
    if (!s->sim)
        return;
    if (s->vmbus) {
        struct hvsim_vmbus_stats vs;
        hvsim_vmbus_get_stats(s->vmbus, &vs);
        add_vmbus_stats(&s->vmbus_totals, &vs);
        if (vs.version)
            s->vmbus_version = vs.version;
        hvsim_vmbus_destroy(s->vmbus); /* before the model it sits on */
        s->vmbus = NULL;
    }
    struct hvsim_stats st;
    hvsim_get_stats(s->sim, &st);
    add_stats(&s->totals, &st);
    hvsim_destroy(s->sim); /* joins the timer thread: no raise runs after this */
    s->sim = NULL;
}

static void destroy_net(struct server *s)
{
    hvsim_netgw_destroy(s->netgw); /* detaches from the netvsp first */
    s->netgw = NULL;
    hvsim_netvsp_destroy(s->netvsp); /* after every VMBus server that used it */
    s->netvsp = NULL;
    free(s->devices);
    s->devices = NULL;
}

static void cleanup(struct server *s)
{
    destroy_model(s);
    destroy_net(s);
    if (s->conn_fd >= 0)
        close(s->conn_fd);
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    if (s->socket_bound)
        unlink(s->socket_path);
    if (s->mem)
        munmap(s->mem, s->mem_size);
    if (s->mem_created)
        unlink(s->mem_path);
}

static void fail(struct server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void fail(struct server *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("hvsim: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    cleanup(s);
    exit(1);
}

/* The guest RAM file: created if missing (and then unlinked at exit), sized, mapped shared. */
static void map_memory(struct server *s)
{
    int fd = open(s->mem_path, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd >= 0)
        s->mem_created = true;
    else if (errno == EEXIST)
        fd = open(s->mem_path, O_RDWR);
    if (fd < 0)
        fail(s, "%s: %s", s->mem_path, strerror(errno));
    if (ftruncate(fd, (off_t)s->mem_size) != 0) {
        int e = errno;
        close(fd);
        fail(s, "%s: cannot size to %llu bytes: %s", s->mem_path, (unsigned long long)s->mem_size, strerror(e));
    }
    void *m = mmap(NULL, s->mem_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED)
        fail(s, "%s: mmap: %s", s->mem_path, strerror(e));
    s->mem = m;
    s->ram_size = s->mem_size < LOW_RAM_LIMIT ? s->mem_size : LOW_RAM_LIMIT;
}

/* Binds and listens under a temporary name, then renames: whoever waits for PATH to appear (the
 * launcher, then QEMU) finds a socket that already accepts. */
static void listen_socket(struct server *s)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    char tmp[sizeof addr.sun_path];
    if (snprintf(tmp, sizeof tmp, "%s.%d", s->socket_path, (int)getpid()) >= (int)sizeof tmp)
        fail(s, "%s: socket path too long", s->socket_path);
    strcpy(addr.sun_path, tmp);
    struct stat st;
    if (lstat(s->socket_path, &st) == 0 && !S_ISSOCK(st.st_mode))
        fail(s, "%s exists and is not a socket", s->socket_path);
    s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->listen_fd < 0)
        fail(s, "socket: %s", strerror(errno));
    unlink(tmp);
    if (bind(s->listen_fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        fail(s, "%s: bind: %s", tmp, strerror(errno));
    if (listen(s->listen_fd, 1) != 0 || rename(tmp, s->socket_path) != 0) {
        int e = errno;
        unlink(tmp);
        fail(s, "%s: %s", s->socket_path, strerror(e));
    }
    s->socket_bound = true; /* a stale socket of the same name was replaced */
}

static void send_irq(struct server *s)
{
    uint8_t b = SIMDB_IRQ;
    for (;;) {
        ssize_t n = send(s->conn_fd, &b, 1, MSG_NOSIGNAL);
        if (n == 1) {
            s->irq_bytes++;
            return;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
            s->peer_closed = true;
            return;
        }
        s->fatal = "socket write failed";
        return;
    }
}

/* Raise callback: runs with the model's lock held, from this thread or the timer thread. */
static void raise_interrupt(void *ctx, uint32_t vp, uint8_t vector)
{
    struct server *s = ctx;
    simdb_set_pending(s->mailbox, vp, vector);
    uint64_t one = 1;
    ssize_t n = write(s->irq_fd, &one, sizeof one); /* fails only if 2^64-2 bumps are unread */
    (void)n;
}

static void on_hello(void *ctx, uint64_t gpa)
{
    struct server *s = ctx;
    const char *why;
    struct simdb_mailbox *mb = simdb_mailbox_at(s->mem, s->ram_size, gpa, &why);
    uint32_t vp_count = 0;
    if (mb)
        why = simdb_check_hello(mb, &vp_count);
    if (!why && s->expect_vcpus && vp_count != s->expect_vcpus)
        why = "VP count differs from --vcpus";
    if (why) {
        say("HELLO with mailbox 0x%llx ignored: %s (VPs %u)", (unsigned long long)gpa, why, vp_count);
        return;
    }
    /* The guest read its TSC just before sending; the delta is short by the doorbell latency. */
    int64_t delta = (int64_t)(simdb_hello_guest_tsc(mb) - s->rx_host_tsc);
    if (s->sim) {
        say("new HELLO (guest rebooted): resetting the model");
        destroy_model(s);
    }
    s->mailbox = mb;
    s->vp_count = vp_count;
    s->cfg.vp_count = vp_count;
    s->cfg.guest_tsc_delta = delta;
    s->sim = hvsim_create(&s->cfg, s->mem, s->ram_size, raise_interrupt, s);
    if (!s->sim || !hvsim_start_timer_thread(s->sim)) {
        s->fatal = "cannot create the model";
        return;
    }
    if (!s->no_vmbus && !(s->vmbus = hvsim_vmbus_create(s->sim, &s->vmbus_cfg))) {
        s->fatal = "cannot create the VMBus server";
        return;
    }
    s->hellos++;
    simdb_accept_hello(mb);
    send_irq(s);
    say("guest HELLO: mailbox 0x%llx, %u VPs, guest TSC = host TSC %+lld", (unsigned long long)gpa, vp_count,
        (long long)delta);
}

static void on_kick(void *ctx)
{
    struct server *s = ctx;
    if (!s->sim)
        return; /* before the first HELLO a KICK byte is firmware noise */
    s->kicks++;
    if (s->kicks == s->crash_after_kicks) {
        say("simulated crash on kick %llu (--crash-after-kicks)", (unsigned long long)s->kicks);
        _exit(CRASH_STATUS); /* no clean-up, no answer: the guest's request stays unserved */
    }
    simdb_serve(s->sim, s->mailbox, s->vp_count, NULL, NULL);
}

/* The netvsp, its gateway (or TAP device) and the device table with the NIC bound to it. Failures
 * (a port in use, no TAP permission) exit with status 1 before QEMU is waited for. */
static void start_net(struct server *s)
{
    if (s->no_vmbus || s->no_net)
        return;
    s->netvsp = hvsim_netvsp_create(&s->net_cfg);
    s->devices = calloc(hvsim_vmbus_default_device_count, sizeof *s->devices);
    if (!s->netvsp || !s->devices)
        fail(s, "cannot create the netvsp");
    for (uint32_t i = 0; i < hvsim_vmbus_default_device_count; i++)
        s->devices[i] = hvsim_vmbus_default_devices[i];
    struct hvsim_vmbus_device nic = hvsim_netvsp_device(s->netvsp);
    for (uint32_t i = 0; i < hvsim_vmbus_default_device_count; i++)
        if (strcmp(s->devices[i].name, nic.name) == 0)
            s->devices[i] = nic;
    s->vmbus_cfg.devices = s->devices;
    struct hvsim_netgw_config gc = { .nv = s->netvsp, .forwards = s->forwards, .forward_count = s->forward_count,
                                     .control = s->net_control, .control_port = s->net_control_port,
                                     .lease_s = s->net_lease_s, .tap = s->net_tap };
    char err[256];
    s->netgw = hvsim_netgw_create(&gc, err, sizeof err);
    if (!s->netgw)
        fail(s, "net: %s", err);
    uint8_t mac[6];
    hvsim_netvsp_mac(s->netvsp, mac);
    say("net: NIC %02x:%02x:%02x:%02x:%02x:%02x, %s", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5],
        s->net_tap ? "TAP mode" : "gateway 10.0.2.2, guest 10.0.2.15 (DHCP)");
    for (uint32_t i = 0; i < s->forward_count; i++)
        say("net: 127.0.0.1:%u/udp -> guest port %u", hvsim_netgw_forward_port(s->netgw, i), s->forwards[i].guest_port);
    if (s->net_control)
        say("net: control on 127.0.0.1:%u/udp", hvsim_netgw_control_port(s->netgw));
}

/* Waits for QEMU to connect (or a signal: false). */
static bool accept_peer(struct server *s)
{
    struct pollfd p[2] = { { .fd = s->listen_fd, .events = POLLIN }, { .fd = s->signal_fd, .events = POLLIN } };
    for (;;) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            fail(s, "poll: %s", strerror(errno));
        }
        if (p[1].revents)
            return false;
        if (p[0].revents) {
            s->conn_fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
            if (s->conn_fd >= 0)
                return true;
            if (errno != EINTR && errno != ECONNABORTED)
                fail(s, "accept: %s", strerror(errno));
        }
    }
}

/* Serves the connection until QEMU closes it or a signal arrives. */
static void serve(struct server *s)
{
    const struct simdb_sink sink = { .kick = on_kick, .hello = on_hello, .ctx = s };
    struct pollfd p[3] = { { .fd = s->conn_fd, .events = POLLIN },
                           { .fd = s->irq_fd, .events = POLLIN },
                           { .fd = s->signal_fd, .events = POLLIN } };
    uint8_t buf[4096];
    while (!s->peer_closed) {
        if (poll(p, 3, -1) < 0) {
            if (errno == EINTR)
                continue;
            fail(s, "poll: %s", strerror(errno));
        }
        if (p[2].revents) {
            struct signalfd_siginfo si;
            if (read(s->signal_fd, &si, sizeof si) == (ssize_t)sizeof si)
                say("%s: exiting", strsignal((int)si.ssi_signo));
            return;
        }
        if (p[0].revents) {
            ssize_t n = read(s->conn_fd, buf, sizeof buf);
            s->rx_host_tsc = hvsim_host_tsc();
            if (n == 0)
                return;
            if (n < 0) {
                if (errno == EINTR || errno == EAGAIN)
                    continue;
                if (errno == ECONNRESET)
                    return;
                fail(s, "socket read: %s", strerror(errno));
            }
            simdb_parse(&s->parser, buf, (size_t)n, &sink);
        }
        if (p[1].revents) {
            uint64_t count;
            if (read(s->irq_fd, &count, sizeof count) == (ssize_t)sizeof count)
                send_irq(s); /* one byte covers every vector set before it */
        }
        if (s->fatal)
            fail(s, "%s", s->fatal);
    }
}

int main(int argc, char **argv)
{
    struct server s = { .listen_fd = -1, .conn_fd = -1, .irq_fd = -1, .signal_fd = -1 };
    parse_args(&s, argc, argv);

    /* Blocked before any thread exists, so only the signalfd sees them. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigprocmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);
    s.signal_fd = signalfd(-1, &stop, SFD_CLOEXEC);
    s.irq_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s.signal_fd < 0 || s.irq_fd < 0)
        fail(&s, "signalfd/eventfd: %s", strerror(errno));

    start_net(&s);
    map_memory(&s);
    listen_socket(&s);
    say("listening on %s", s.socket_path);

    if (accept_peer(&s)) {
        close(s.listen_fd); /* one connection only */
        s.listen_fd = -1;
        serve(&s);
    } else {
        say("signal before QEMU connected: exiting");
    }

    destroy_model(&s);
    if (s.netvsp) {
        struct hvsim_netvsp_stats ns;
        char line[1024];
        hvsim_netvsp_get_stats(s.netvsp, &ns);
        hvsim_netvsp_format_stats(&ns, line, sizeof line);
        say("exit: netvsp: %s", line);
    }
    if (s.netgw) {
        struct hvsim_netgw_stats gs;
        char line[1024];
        hvsim_netgw_get_stats(s.netgw, &gs);
        hvsim_netgw_format_stats(&gs, line, sizeof line);
        say("exit: gateway: %s", line);
    }
    const struct hvsim_stats *t = &s.totals;
    const struct hvsim_vmbus_stats *v = &s.vmbus_totals;
    say("exit: %llu HELLOs, %llu kicks, %llu hypercalls (%llu posts ok, %llu failed, %llu signals), "
        "%llu messages delivered, %llu queued, %llu EOMs, %llu interrupts, %llu IRQ bytes, %llu timer expiries, "
        "%llu MSR faults",
        (unsigned long long)s.hellos, (unsigned long long)s.kicks, (unsigned long long)t->hypercalls,
        (unsigned long long)t->posts_ok, (unsigned long long)t->posts_failed, (unsigned long long)t->signals,
        (unsigned long long)t->messages_delivered, (unsigned long long)t->messages_queued,
        (unsigned long long)t->eoms, (unsigned long long)t->interrupts_raised, (unsigned long long)s.irq_bytes,
        (unsigned long long)t->timer_expiries, (unsigned long long)t->msr_faults);
    if (s.no_vmbus)
        say("exit: no VMBus server");
    else
        say("exit: VMBus %u.%u (last negotiated; 0.0: none), %llu messages in (%llu on connection 1, %llu on 4, "
            "%llu on 0x%x), %llu out (%llu retried), %llu guest errors, %llu opens, %llu closes, %llu rescinds, "
            "%llu GPADLs created, %llu torn down, %llu guest signals, %llu monitor signals, %llu host signals, "
            "%llu unloads",
            VMBUS_VERSION_MAJOR(s.vmbus_version), VMBUS_VERSION_MINOR(s.vmbus_version),
            (unsigned long long)v->messages_in, (unsigned long long)v->messages_conn_message,
            (unsigned long long)v->messages_conn_multiclient, (unsigned long long)v->messages_conn_redirect,
            HVSIM_VMBUS_CONN_REDIRECT, (unsigned long long)v->messages_out, (unsigned long long)v->post_retries,
            (unsigned long long)v->guest_errors, (unsigned long long)v->opens, (unsigned long long)v->closes,
            (unsigned long long)v->rescinds, (unsigned long long)v->gpadls_created,
            (unsigned long long)v->gpadls_torn_down, (unsigned long long)v->guest_signals,
            (unsigned long long)v->monitor_signals, (unsigned long long)v->host_signals,
            (unsigned long long)v->unloads);
    cleanup(&s);
    return 0;
}
