/*
 * The network path end to end, hosted: the guest's netvsc driver (drivers/netvsc/netvsc.c) and IPv4
 * stack (lib/net) on VP threads (test/hosted/) with kmcl and VMBus, against hvsim's netvsp
 * (sim/netvsp/netvsp.h) in-process. The test plays the peer on the host side: it builds UDP/IPv4 frames
 * to the guest's echo port, hands them to the netvsp (which writes them into the receive buffer and
 * sends transfer-page packets), and checks every echoed frame the guest transmits through its send
 * buffer, byte for byte. One queue and, with NVSP 5+, several (vRSS sub-channels, flows hashed by
 * the netvsp). Also: bad frames from the host counted and dropped, link down/up, older NVSP versions.
 *
 * NETSYS_BENCH=1 (make bench-netsys, an -O2 build without sanitizers) measures echoes per second
 * for 64- and 1400-byte payloads, one queue and two.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <time.h>

#include <cmocka.h>

#include "lib/net/net.h"
#include "lib/netattach/net_attach.h"
#include "drivers/netvsc/netvsc.h"
#include "drivers/netvsc/proto/nvsp_proto.h"
#include "drivers/netvsc/proto/rndis_msg.h"
#include "hv/hv.h"
#include "hv/vmbus/vmbus.h"
#include "kernel/app.h"
#include "kernel/cmdline.h"
#include "kernel/netdev.h"
#include "kernel/percpu.h"
#include "kernel/thread.h"
#include "sim/hvsim.h"
#include "sim/netvsp/netgw.h"
#include "sim/netvsp/netvsp.h"
#include "sim/vmbus_server.h"
#include "test/hosted/hosted.h"
#include "test/lib/test_util.h"

#define VPS 4 /* VP 0 runs the test's jobs; the queues' DPCs and workers run on 1.. (hosted threads are
                 jobs on a VP: a channel's worker would keep VP 0); the binding's thread on VP 3 */
#define APP_VP 2 /* the applications (and probes configured from the command line: queues from CPU 0) */
static uint32_t guest_vp; /* where the test's guest jobs run: a VP no kmcl worker occupies */
#define RAM (128u << 20)
#define GUEST_IP 0x0a000002u /* 10.0.0.2 */
#define PEER_IP 0x0a000001u  /* 10.0.0.1 */
#define ECHO_PORT 7
#define MAX_PAYLOAD 1472u

static const uint8_t peer_mac[6] = { 0x02, 0, 0, 0, 0, 0x01 };
static uint32_t test_mtu; /* 0: 1500 on both sides */

static struct hvsim_vmbus *vb;
static struct hvsim_netvsp *nvsp;
static struct hvsim_vmbus_device devices[16];

/* ---- the guest ---- */

/* The NIC as the guest's applications see it: the netdev netvsc registered when vmbus_init bound it,
 * with the stack on it through lib/net's net_attach (no glue of the test's own). */
static struct net_attach *g_na;
static struct net_if *g_nif;
static struct netdev *g_dev;
static struct netvsc *g_nv;
static volatile uint32_t guest_link_events;

static struct cmdline test_cmdline; /* what kernel_cmdline() gives the guest (netvsc, net_attach) */
const struct cmdline *kernel_cmdline(void) { return &test_cmdline; }
static void set_cmdline(const char *text) { cmdline_parse(&test_cmdline, text, NULL, NULL); }
/* The host's view of the NIC's MAC (the guest's may be in the middle of going away). */
static void guest_mac(uint8_t mac[6]) { hvsim_netvsp_mac(nvsp, mac); }

static void g_on_event(struct net_attach *a, void *ctx, enum net_attach_event ev)
{
    (void)a;
    (void)ctx;
    if (ev == NET_ATTACH_LINK_UP || ev == NET_ATTACH_LINK_DOWN)
        __atomic_add_fetch(&guest_link_events, 1, __ATOMIC_RELEASE);
}

static void g_echo(struct net_if *n, uint32_t queue, const struct net_udp_meta *m, const void *payload, uint32_t len,
                   void *arg)
{
    (void)arg;
    (void)net_udp_reply(n, queue, m, payload, len);
}

struct attach_job {
    uint32_t max_version, queues;
    bool from_cmdline; /* netvsc's configuration from the command line (queues=, nvsp=, rxbuf=) */
    status_t status;
};

static void attach_job(void *arg)
{
    struct attach_job *j = arg;
    struct netvsc_config cfg = { .max_nvsp_version = j->max_version, .queues = j->queues,
                                 .recv_buf_bytes = 2u << 20, .send_buf_bytes = 1u << 20, .first_cpu = 1,
                                 .mtu = test_mtu };
    netvsc_configure(j->from_cmdline ? NULL : &cfg);
    j->status = vmbus_init(0); /* binds netvsc (VMBUS_DRIVER): its probe registers the netdev */
    if (j->status != STATUS_OK)
        return;
    g_dev = netdev_first();
    g_nv = netvsc_from_netdev(g_dev);
    if (!g_nv) {
        j->status = STATUS_NOT_FOUND;
        return;
    }
    struct net_attach_config acfg = { .ip = "10.0.0.2/24", .thread_cpu = VPS - 1, .event = g_on_event };
    j->status = net_attach(g_dev, &acfg, &g_na);
    if (j->status != STATUS_OK)
        return;
    g_nif = net_attach_if(g_na);
    j->status = net_udp_bind(g_nif, ECHO_PORT, g_echo, NULL);
}

struct keepalive {
    status_t status;
};

static void keepalive_job(void *arg)
{
    ((struct keepalive *)arg)->status = netvsc_keepalive(g_nv);
}

static void detach_job(void *arg)
{
    (void)arg;
    if (g_na)
        net_detach(g_na);
    g_na = NULL;
    g_nif = NULL;
    if (g_dev)
        netdev_put(g_dev);
    g_dev = NULL;
    g_nv = NULL;
    vmbus_driver_unregister(&netvsc_driver); /* remove: HALT, buffers revoked, channels closed */
}

/* ---- the peer (host side) ---- */

struct peer {
    volatile uint32_t replies, bad, other;
    uint32_t expect_len[65536]; /* by sequence number mod 65536: the payload length sent, 0: none */
    uint32_t queue_seen[8];
};
static struct peer *peer;

static uint32_t csum_add(uint32_t sum, const void *data, size_t len)
{
    const uint8_t *p = data;
    for (size_t i = 0; i + 1 < len; i += 2)
        sum += (uint32_t)p[i] << 8 | p[i + 1];
    if (len & 1)
        sum += (uint32_t)p[len - 1] << 8;
    return sum;
}

static uint16_t csum_fold(uint32_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)(v >> 16)); put16(p + 2, (uint16_t)v); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)get16(p) << 16 | get16(p + 2); }

static void payload_bytes(uint8_t *p, uint32_t seq, uint32_t len)
{
    for (uint32_t k = 0; k < len; k++)
        p[k] = k < 4 ? (uint8_t)(seq >> (8 * k)) : (uint8_t)(seq * 7 + k);
}

/* A UDP/IPv4 frame from the peer to the guest's echo port; returns its length. */
static uint32_t build_udp(uint8_t *f, const uint8_t guest_mac[6], uint16_t src_port, uint32_t seq, uint32_t len)
{
    memcpy(f, guest_mac, 6);
    memcpy(f + 6, peer_mac, 6);
    put16(f + 12, 0x0800);
    uint8_t *ip = f + 14;
    memset(ip, 0, 20);
    ip[0] = 0x45;
    put16(ip + 2, (uint16_t)(20 + 8 + len));
    put16(ip + 4, (uint16_t)seq);
    ip[8] = 64;
    ip[9] = 17;
    put32(ip + 12, PEER_IP);
    put32(ip + 16, GUEST_IP);
    put16(ip + 10, csum_fold(csum_add(0, ip, 20)));
    uint8_t *udp = ip + 20;
    put16(udp, src_port);
    put16(udp + 2, ECHO_PORT);
    put16(udp + 4, (uint16_t)(8 + len));
    put16(udp + 6, 0);
    payload_bytes(udp + 8, seq, len);
    uint32_t sum = csum_add(0, ip + 12, 8); /* pseudo-header: addresses, protocol, length */
    sum += 17 + 8 + len;
    sum = csum_add(sum, udp, 8 + len);
    uint16_t c = csum_fold(sum);
    put16(udp + 6, c ? c : 0xffff);
    uint32_t n = 14 + 20 + 8 + len;
    if (n < 60) {
        memset(f + n, 0, 60 - n);
        n = 60;
    }
    return n;
}

/* The netvsp's backend: frames the guest sent. Checks echo replies completely (headers, both
 * checksums, the payload). Server thread: no calls into the netvsp. */
static void sink(void *ctx, const uint8_t *f, uint32_t len)
{
    (void)ctx;
    struct peer *p = peer;
    if (len < 14 + 20 + 8 || get16(f + 12) != 0x0800 || f[14 + 9] != 17) {
        __atomic_add_fetch(&p->other, 1, __ATOMIC_RELAXED); /* gratuitous ARP and the like */
        return;
    }
    const uint8_t *ip = f + 14, *udp = ip + 20;
    uint32_t ulen = get16(udp + 4);
    bool ok = memcmp(f, peer_mac, 6) == 0 && ip[0] == 0x45 && csum_fold(csum_add(0, ip, 20)) == 0 &&
              get32(ip + 12) == GUEST_IP && get32(ip + 16) == PEER_IP && get16(udp) == ECHO_PORT && ulen >= 12 &&
              14 + 20 + ulen <= len;
    if (ok && get16(udp + 6)) {
        uint32_t sum = csum_add(0, ip + 12, 8) + 17 + ulen;
        ok = csum_fold(csum_add(sum, udp, ulen)) == 0;
    }
    if (ok) {
        uint32_t plen = ulen - 8;
        const uint8_t *pl = udp + 8;
        uint32_t seq = (uint32_t)pl[0] | (uint32_t)pl[1] << 8 | (uint32_t)pl[2] << 16 | (uint32_t)pl[3] << 24;
        uint32_t want = __atomic_exchange_n(&p->expect_len[seq & 0xffff], 0, __ATOMIC_ACQ_REL);
        ok = want == plen;
        for (uint32_t k = 0; ok && k < plen; k++)
            ok = pl[k] == (k < 4 ? (uint8_t)(seq >> (8 * k)) : (uint8_t)(seq * 7 + k));
    }
    __atomic_add_fetch(ok ? &p->replies : &p->bad, 1, __ATOMIC_RELEASE);
}

/* Sends count datagrams (sizes cycling through `sizes`, source ports over `flows`) keeping at most
 * `window` unanswered; returns the time taken in ns, or 0 if replies stopped coming. */
static uint64_t pump(uint32_t count, const uint32_t *sizes, uint32_t nsizes, uint32_t flows, uint32_t window)
{
    uint8_t mac[6];
    static uint8_t frame[9216];
    guest_mac(mac);
    uint32_t base = peer->replies;
    int64_t t0 = now_ns(), last_progress = t0;
    uint32_t last_replies = base;
    for (uint32_t i = 0; i < count;) {
        uint32_t done = __atomic_load_n(&peer->replies, __ATOMIC_ACQUIRE) - base + peer->bad;
        if (i - done < window) {
            uint32_t len = sizes[i % nsizes];
            uint32_t seq = base + i;
            __atomic_store_n(&peer->expect_len[seq & 0xffff], len, __ATOMIC_RELEASE);
            uint32_t n = build_udp(frame, mac, (uint16_t)(1024 + i % flows), seq, len);
            if (!hvsim_netvsp_deliver(nvsp, frame, n)) {
                __atomic_store_n(&peer->expect_len[seq & 0xffff], 0, __ATOMIC_RELEASE);
                sleep_us(50); /* no receive buffer free: the guest is behind; offer it again */
                continue;
            }
            i++;
            continue;
        }
        uint32_t r = __atomic_load_n(&peer->replies, __ATOMIC_ACQUIRE);
        if (r != last_replies) {
            last_replies = r;
            last_progress = now_ns();
        } else if (now_ns() - last_progress > 20000000000ll) {
            fprintf(stderr, "pump: stuck at %u of %u (window %u)\n", r - base, count, window);
            return 0;
        }
        sched_yield();
    }
    while (__atomic_load_n(&peer->replies, __ATOMIC_ACQUIRE) - base + peer->bad < count) {
        if (now_ns() - t0 > 60000000000ll)
            return 0;
        sched_yield();
    }
    return (uint64_t)(now_ns() - t0);
}

/* ---- set-up ---- */

/* The host side: the VPs, hvsim, its netvsp (cfg) and VMBus server offering it. */
static void start_host(const struct hvsim_netvsp_config *nc)
{
    hosted_log_quiet(!getenv("VERBOSE"));
    hosted_start(VPS, RAM, NULL);
    hosted_log_clear();
    assert_int_equal(hv_init(), STATUS_OK);
    nvsp = hvsim_netvsp_create(nc);
    assert_non_null(nvsp);
    peer = calloc(1, sizeof *peer);
    assert_non_null(peer);
    hvsim_netvsp_set_backend(nvsp, sink, NULL);
    uint32_t n = hvsim_vmbus_default_device_count;
    assert_true(n <= 16);
    for (uint32_t i = 0; i < n; i++) {
        devices[i] = hvsim_vmbus_default_devices[i];
        if (vmbus_guid_equal(&devices[i].type, &(struct vmbus_guid)VMBUS_GUID_NIC))
            devices[i] = hvsim_netvsp_device(nvsp);
    }
    struct hvsim_vmbus_config c = { .devices = devices, .device_count = n };
    vb = hvsim_vmbus_create(hosted_sim(), &c);
    assert_non_null(vb);
}

/* The host, then the guest: netvsc bound by vmbus_init (configured, or from the command line),
 * the stack on its netdev with 10.0.0.2/24, echo on ECHO_PORT. */
static void start_with(uint32_t host_version, uint32_t host_queues, uint32_t guest_version, uint32_t guest_queues,
                       const char *cmdline)
{
    set_cmdline(cmdline);
    struct hvsim_netvsp_config nc = { .max_version = host_version, .queues = host_queues, .mtu = test_mtu };
    start_host(&nc);
    struct attach_job j = { .max_version = guest_version, .queues = guest_queues, .from_cmdline = cmdline != NULL };
    /* From the command line the queues start at CPU 0, and a kmcl channel's worker is a job on its
     * CPU (hosted), running until the channel closes: the test's jobs go to a VP no queue uses. */
    guest_vp = cmdline ? APP_VP : 0;
    hosted_run_on(guest_vp, attach_job, &j);
    assert_int_equal(j.status, STATUS_OK);
}

static void start(uint32_t host_version, uint32_t host_queues, uint32_t guest_version, uint32_t guest_queues)
{
    start_with(host_version, host_queues, guest_version, guest_queues, NULL);
}

/* The guest's power-off (UNLOAD), then the host side goes. */
static void stop_host(void)
{
    guest_vp = 0;
    hosted_power_off();
    hvsim_vmbus_destroy(vb);
    vb = NULL;
    hvsim_netvsp_destroy(nvsp);
    nvsp = NULL;
    hosted_stop();
    free(peer);
    peer = NULL;
}

static void stop(void)
{
    hosted_run_on(guest_vp, detach_job, NULL);
    stop_host();
}

static bool log_has(void *ctx) { return hosted_log_contains(ctx); }
static bool wait_log(const char *needle, unsigned ms) { return hosted_wait_for(log_has, (void *)needle, ms); }

/* ---- tests ---- */

static const uint32_t mixed[] = { 4, 18, 64, 200, 512, 1000, 1400, MAX_PAYLOAD, 7, 333 };

static void test_echo_one_queue(void **state)
{
    (void)state;
    start(0, 1, 0, 1);
    assert_int_equal(netvsc_nvsp_version(g_nv), NVSP_VERSION_61);
    assert_int_equal(netvsc_queue_count(g_nv), 1);
    assert_true(netvsc_link_up(g_nv));
    assert_true(pump(20000, mixed, 10, 1, 32) > 0);
    assert_int_equal(peer->bad, 0);
    struct netvsc_stats vs;
    netvsc_get_stats(g_nv, &vs);
    assert_true(vs.rx_frames >= 20000);
    assert_true(vs.tx_frames >= 20000);
    assert_int_equal(vs.rx_bad_range + vs.rx_bad_rndis + vs.rx_bad_nvsp + vs.rx_bad_frame, 0);
    struct hvsim_netvsp_stats hs;
    hvsim_netvsp_get_stats(nvsp, &hs);
    assert_int_equal(hs.tx_bad_rndis + hs.tx_bad_section + hs.tx_bad_range + hs.nvsp_errors + hs.channel_failures, 0);
    /* RNDIS keep-alive: the device answers. */
    struct keepalive k = { 0 };
    hosted_run_on(guest_vp, keepalive_job, &k);
    assert_int_equal(k.status, STATUS_OK);
    netvsc_get_stats(g_nv, &vs);
    assert_int_equal(vs.keepalives, 1);
    stop();
}

static void test_echo_multi_queue(void **state)
{
    (void)state;
    start(0, 2, 0, 2);
    assert_int_equal(netvsc_queue_count(g_nv), 2);
    assert_true(netvsc_rss_enabled(g_nv));
    assert_true(pump(20000, mixed, 10, 64, 64) > 0);
    assert_int_equal(peer->bad, 0);
    /* 64 flows hashed by the host with our key and table: both queues carry traffic. */
    assert_true(netvsc_queue_rx_frames(g_nv, 0) > 1000);
    assert_true(netvsc_queue_rx_frames(g_nv, 1) > 1000);
    struct net_stats ns;
    net_get_stats(g_nif, &ns);
    assert_true(ns.udp_in >= 20000);
    stop();
}

/* Every NVSP version the driver knows, against a host that accepts it as its newest. */
static void test_versions(void **state)
{
    (void)state;
    static const uint32_t v[] = { NVSP_VERSION_6, NVSP_VERSION_5, NVSP_VERSION_4, NVSP_VERSION_2, NVSP_VERSION_1 };
    for (unsigned i = 0; i < sizeof v / sizeof v[0]; i++) {
        start(v[i], 1, 0, 1);
        assert_int_equal(netvsc_nvsp_version(g_nv), v[i]);
        assert_int_equal(netvsc_ndis_version(g_nv), v[i] >= NVSP_VERSION_5 ? NVSP_NDIS_VERSION_6_30 : NVSP_NDIS_VERSION_6_1);
        assert_true(pump(500, mixed, 10, 1, 16) > 0);
        assert_int_equal(peer->bad, 0);
        stop();
    }
}

/* Frames the host gets wrong reach the stack and are dropped there, counted; echo goes on. */
static void test_bad_frames_dropped(void **state)
{
    (void)state;
    start(0, 1, 0, 1);
    uint8_t mac[6], f[1600];
    guest_mac(mac);
    struct net_stats before;
    net_get_stats(g_nif, &before);
    uint32_t n = build_udp(f, mac, 1000, 1, 64);
    f[14 + 10] ^= 0xff; /* IPv4 header checksum */
    assert_true(hvsim_netvsp_deliver(nvsp, f, n));
    n = build_udp(f, mac, 1000, 2, 64);
    f[14 + 20 + 6] ^= 0x01; /* UDP checksum */
    assert_true(hvsim_netvsp_deliver(nvsp, f, n));
    n = build_udp(f, mac, 1000, 3, 64);
    f[14 + 6] = 0x20; /* more fragments */
    f[14 + 10] = f[14 + 11] = 0;
    put16(f + 14 + 10, csum_fold(csum_add(0, f + 14, 20)));
    assert_true(hvsim_netvsp_deliver(nvsp, f, n));
    assert_true(pump(100, mixed, 10, 1, 8) > 0);
    struct net_stats after;
    net_get_stats(g_nif, &after);
    assert_int_equal(after.bad_ip_checksum - before.bad_ip_checksum, 1);
    assert_int_equal(after.bad_udp_checksum - before.bad_udp_checksum, 1);
    assert_int_equal(after.fragments - before.fragments, 1);
    stop();
}

/* A lying host: transfer-page packets whose ranges leave the receive buffer, name another page set
 * or carry another NVSP message; RNDIS messages whose lengths and offsets lie; frames too short and
 * too long; an unknown RNDIS type. Each is dropped and counted by netvsc (a rate-limited log line),
 * the packet is completed (the sub-allocation comes back), and echo goes on. */
static uint32_t rndis_frame(uint8_t *out, uint32_t frame_len)
{
    uint32_t h = rndis_build_packet(out, 64, NULL, 0, frame_len);
    assert_int_equal(h, sizeof(struct rndis_packet));
    memset(out + h, 0x5a, frame_len);
    return h + frame_len;
}

static void test_hostile_host(void **state)
{
    (void)state;
    start(0, 1, 0, 1);
    static uint8_t b[2048];
    struct netvsc_stats before, after;
    netvsc_get_stats(g_nv, &before);
    struct hvsim_netvsp_stats hs0;
    hvsim_netvsp_get_stats(nvsp, &hs0);
    uint32_t n = rndis_frame(b, 60);
    struct hvsim_netvsp_raw outside = { .range_offset_delta = 3 << 20 };
    assert_true(hvsim_netvsp_deliver_raw(nvsp, b, n, &outside));
    struct hvsim_netvsp_raw wrapped = { .range_offset_delta = -(int64_t)(4u << 20) };
    assert_true(hvsim_netvsp_deliver_raw(nvsp, b, n, &wrapped));
    struct hvsim_netvsp_raw too_long = { .range_len = 0x7fffffffu };
    assert_true(hvsim_netvsp_deliver_raw(nvsp, b, n, &too_long));
    struct hvsim_netvsp_raw other_set = { .pageset_id = 0x1234 };
    assert_true(hvsim_netvsp_deliver_raw(nvsp, b, n, &other_set));
    struct hvsim_netvsp_raw other_msg = { .nvsp_type = 999 };
    assert_true(hvsim_netvsp_deliver_raw(nvsp, b, n, &other_msg));
    const uint32_t bad_ranges = 4, bad_nvsp = 1;
    /* RNDIS lies, inside an honest range */
    uint32_t msg_len_at = 4, data_offset_at = 8;
    uint32_t lie = 5000;
    n = rndis_frame(b, 60);
    memcpy(b + msg_len_at, &lie, 4); /* msg_len past the range */
    assert_true(hvsim_netvsp_deliver_raw(nvsp, b, n, NULL));
    n = rndis_frame(b, 60);
    lie = 4000;
    memcpy(b + data_offset_at, &lie, 4); /* data past the message */
    assert_true(hvsim_netvsp_deliver_raw(nvsp, b, n, NULL));
    n = rndis_frame(b, 60);
    lie = 2;
    memcpy(b + data_offset_at, &lie, 4); /* data inside the header */
    assert_true(hvsim_netvsp_deliver_raw(nvsp, b, n, NULL));
    n = rndis_frame(b, 60);
    lie = 0x55;
    memcpy(b, &lie, 4); /* an RNDIS type no host sends */
    assert_true(hvsim_netvsp_deliver_raw(nvsp, b, n, NULL));
    const uint32_t bad_rndis = 4;
    /* frames netvsc refuses: shorter than an Ethernet header, longer than MTU + 14 */
    n = rndis_frame(b, 10);
    assert_true(hvsim_netvsp_deliver_raw(nvsp, b, n, NULL));
    n = rndis_frame(b, 1600);
    assert_true(hvsim_netvsp_deliver_raw(nvsp, b, n, NULL));
    const uint32_t bad_frames = 2;
    /* every one of those came back (completed) and the NIC still echoes */
    assert_true(pump(300, mixed, 10, 1, 16) > 0);
    assert_int_equal(peer->bad, 0);
    netvsc_get_stats(g_nv, &after);
    assert_int_equal(after.rx_bad_range - before.rx_bad_range, bad_ranges);
    assert_int_equal(after.rx_bad_nvsp - before.rx_bad_nvsp, bad_nvsp);
    assert_int_equal(after.rx_bad_rndis - before.rx_bad_rndis, bad_rndis);
    assert_int_equal(after.rx_bad_frame - before.rx_bad_frame, bad_frames);
    /* The guest completes each transfer-page packet after its echo went out: the last completions
     * may still be on their way to the host when the echoes are all in. */
    struct hvsim_netvsp_stats hs;
    uint64_t want = 300 + bad_ranges + bad_nvsp + bad_rndis + bad_frames;
    int64_t deadline = now_ns() + 10000000000ll;
    do {
        hvsim_netvsp_get_stats(nvsp, &hs);
        if (hs.rx_completions - hs0.rx_completions >= want)
            break;
        sleep_us(1000);
    } while (now_ns() < deadline);
    assert_true(hs.rx_completions - hs0.rx_completions >= want);
    assert_int_equal(hs.channel_failures, 0);
    assert_true(hosted_log_contains("netvsc: queue 0:")); /* logged, rate-limited */
    stop();
}

/* A 9000-byte MTU on both sides: frames larger than a 6144-byte send-buffer section go out
 * GPA-direct from the queue's bounce; every echo still byte for byte. */
static void test_jumbo_frames(void **state)
{
    (void)state;
    test_mtu = 9000;
    start(0, 1, 0, 1);
    assert_int_equal(netvsc_mtu(g_nv), 9000);
    static const uint32_t jumbo[] = { 64, 1472, 6000, 6100, 7000, 8972, 3000 };
    assert_true(pump(2000, jumbo, 7, 1, 16) > 0);
    assert_int_equal(peer->bad, 0);
    struct netvsc_stats vs;
    netvsc_get_stats(g_nv, &vs);
    assert_true(vs.tx_gpa_direct >= 2000 * 3 / 7); /* 7000 and 8972 always, 6100 with headers */
    assert_int_equal(vs.tx_host_errors, 0);
    stop();
    test_mtu = 0;
}

static void test_link_down_up(void **state)
{
    (void)state;
    start(0, 1, 0, 1);
    guest_link_events = 0;
    hvsim_netvsp_set_link(nvsp, false);
    assert_true(hosted_wait_count(&guest_link_events, 1, 10000));
    assert_false(netvsc_link_up(g_nv));
    uint8_t mac[6], f[1600];
    guest_mac(mac);
    uint32_t n = build_udp(f, mac, 1000, 1, 64);
    assert_false(hvsim_netvsp_deliver(nvsp, f, n)); /* the host does not deliver while unplugged */
    hvsim_netvsp_set_link(nvsp, true);
    assert_true(hosted_wait_count(&guest_link_events, 2, 10000));
    assert_true(netvsc_link_up(g_nv));
    assert_true(pump(200, mixed, 10, 1, 8) > 0);
    assert_int_equal(peer->bad, 0);
    stop();
}

/* ---- the device going away (issue 13 item 5) ---- */

static void find_nic_relid(struct vmbus_channel *c, void *ctx)
{
    if (vmbus_channel_sub_index(c) == 0 &&
        vmbus_guid_equal(&vmbus_channel_offer(c)->if_type, &(struct vmbus_guid)VMBUS_GUID_NIC))
        *(uint32_t *)ctx = vmbus_channel_relid(c);
}

static void relid_job(void *arg) { vmbus_for_each_channel(find_nic_relid, arg); }

static uint32_t nic_relid(void)
{
    uint32_t relid = 0;
    hosted_run_on(guest_vp, relid_job, &relid);
    assert_int_not_equal(relid, 0);
    return relid;
}

static bool attach_gone(void *ctx)
{
    (void)ctx;
    return net_attach_gone(g_na);
}

/* What a sender sees once the NIC is gone: each call's status and how long the whole took. */
struct after_gone {
    status_t send, check, keepalive, udp;
    bool tx_begin_null, findable;
    int64_t took_ns;
};

static void after_gone_job(void *arg)
{
    struct after_gone *r = arg;
    uint8_t frame[60] = { 0 };
    memcpy(frame, peer_mac, 6);
    int64_t t0 = now_ns();
    r->send = netdev_send(g_dev, 0, frame, sizeof frame);
    r->tx_begin_null = netdev_tx_begin(g_dev, 0, sizeof frame) == NULL;
    r->udp = net_udp_reply(g_nif, 0, &(struct net_udp_meta){ .src_ip = PEER_IP, .src_port = 9, .dst_port = ECHO_PORT },
                           "x", 1);
    r->check = netdev_check(g_dev);
    r->keepalive = netvsc_keepalive(g_nv);
    r->took_ns = now_ns() - t0;
    struct netdev *d = netdev_first();
    r->findable = d != NULL;
    if (d)
        netdev_put(d);
}

static void let_go_job(void *arg)
{
    int64_t *took = arg;
    int64_t t0 = now_ns();
    net_detach(g_na);
    g_na = NULL;
    g_nif = NULL;
    netdev_put(g_dev); /* the last reference: the release tears the NIC down here */
    g_dev = NULL;
    g_nv = NULL;
    *took = now_ns() - t0;
}

static void check_gone_fast(void)
{
    struct after_gone r;
    hosted_run_on(guest_vp, after_gone_job, &r);
    assert_int_equal(r.send, STATUS_CANCELLED);
    assert_true(r.tx_begin_null);
    assert_int_equal(r.udp, STATUS_NO_SPACE); /* the stack's tx_begin got nothing */
    assert_int_equal(r.check, STATUS_CANCELLED);
    assert_int_equal(r.keepalive, STATUS_CANCELLED);
    assert_false(r.findable);
    assert_true(r.took_ns < 100000000ll); /* at once: nothing waited for the host */
}

/* The host rescinds the NIC (primary and sub-channel) while the stack holds it and traffic flows:
 * the holder is told, every send fails at once, and letting go tears the NIC down without waiting
 * for the host; the relids are released. */
static void test_rescind_while_held(void **state)
{
    (void)state;
    start(0, 2, 0, 2);
    assert_int_equal(netvsc_queue_count(g_nv), 2);
    assert_true(pump(2000, mixed, 10, 64, 32) > 0);
    struct hvsim_vmbus_stats before, after;
    hvsim_vmbus_get_stats(vb, &before);
    assert_true(hvsim_vmbus_rescind(vb, nic_relid()));
    assert_true(hosted_wait_for(attach_gone, NULL, 5000));
    assert_true(netvsc_gone(g_nv));
    assert_true(wait_log("went away", 5000)); /* the binding told the application */
    check_gone_fast();
    int64_t took = 0;
    hosted_run_on(guest_vp, let_go_job, &took);
    assert_true(took < 3000000000ll);
    assert_true(hvsim_vmbus_flush(vb, 5000));
    hvsim_vmbus_get_stats(vb, &after);
    assert_int_equal(before.offers - after.offers, 2); /* primary + sub-channel: RELID_RELEASED for each */
    assert_int_equal(after.channels_open, 0);
    assert_true(hosted_log_contains("netvsc: the host rescinded the network adapter"));
    stop();
}

static void reap_job(void *arg)
{
    (void)arg;
    devreg_reap();
}

static void close_job(void *arg)
{
    (void)arg;
    net_detach(g_na);
    g_na = NULL;
    g_nif = NULL;
    netdev_put(g_dev);
    g_dev = NULL;
    g_nv = NULL;
}

/* Rescinded while nobody holds it: its release waits for PASSIVE and runs at the next call into the
 * registry; the relid is released then. */
static void test_rescind_unheld(void **state)
{
    (void)state;
    start(0, 1, 0, 1);
    assert_true(pump(200, mixed, 10, 1, 8) > 0);
    uint32_t relid = nic_relid();
    hosted_run_on(guest_vp, close_job, NULL);
    struct hvsim_vmbus_stats before, after;
    hvsim_vmbus_get_stats(vb, &before);
    assert_true(hvsim_vmbus_rescind(vb, relid));
    assert_true(wait_log("netvsc: the host rescinded", 5000));
    hosted_run_on(guest_vp, reap_job, NULL);
    assert_true(hvsim_vmbus_flush(vb, 5000));
    hvsim_vmbus_get_stats(vb, &after);
    assert_int_equal(before.offers - after.offers, 1);
    stop();
}

struct unregister_job {
    volatile int done;
};

static void unregister_fn(void *arg)
{
    struct unregister_job *u = arg;
    vmbus_driver_unregister(&netvsc_driver);
    __atomic_store_n(&u->done, 1, __ATOMIC_RELEASE);
}

/* The driver is removed while the stack holds the NIC: the holder is told (gone), its sends fail
 * at once, the removal waits until it let go, then halts the NIC (RNDIS HALT, buffers revoked). */
static void test_remove_while_held(void **state)
{
    (void)state;
    start(0, 1, 0, 1);
    assert_true(pump(200, mixed, 10, 1, 8) > 0);
    struct unregister_job u = { 0 };
    struct thread *t;
    assert_int_equal(thread_create("unregister", unregister_fn, &u, 2, &t), STATUS_OK);
    assert_true(hosted_wait_for(attach_gone, NULL, 5000));
    assert_false(netvsc_gone(g_nv)); /* not rescinded: the host still answers */
    sleep_us(100000);
    assert_false(__atomic_load_n(&u.done, __ATOMIC_ACQUIRE)); /* waits for the holder */
    struct after_gone r;
    hosted_run_on(guest_vp, after_gone_job, &r);
    assert_int_equal(r.send, STATUS_CANCELLED);
    assert_true(r.tx_begin_null);
    assert_int_equal(r.check, STATUS_CANCELLED);
    hosted_run_on(guest_vp, close_job, NULL);
    thread_join(t);
    assert_true(u.done);
    struct hvsim_netvsp_stats hs;
    hvsim_netvsp_get_stats(nvsp, &hs);
    assert_int_equal(hs.queues_open, 0);
    assert_true(hs.revokes >= 1); /* the full detach: not skipped as after a rescind */
    stop();
}

/* netvsc's configuration from the kernel command line, as udp-echo has always taken it. */
static void test_cmdline_config(void **state)
{
    (void)state;
    start_with(0, 2, 0, 0, "queues=2 nvsp=5 rxbuf=2048");
    assert_int_equal(netvsc_nvsp_version(g_nv), NVSP_VERSION_5);
    assert_int_equal(netvsc_queue_count(g_nv), 2);
    assert_true(hosted_log_contains("receive buffer 2048 KiB"));
    assert_true(pump(500, mixed, 10, 64, 16) > 0);
    assert_int_equal(peer->bad, 0);
    stop();
}

/* ---- the applications, hosted: their app_main on VP 0 against hvsim ---- */

#define app_main udp_echo_app_main
#define app_name udp_echo_app_name
#define app_cmdline_keys udp_echo_app_cmdline_keys
#include "apps/udp-echo/main.c"
#undef app_main
#undef app_name
#undef app_cmdline_keys
#define app_main netup_app_main
#define app_name netup_app_name
#define app_cmdline_keys netup_app_cmdline_keys
#include "apps/netup/main.c"
#undef app_main
#undef app_name
#undef app_cmdline_keys

struct app_run {
    int (*main)(void);
    int code;
    volatile int done;
};

static void app_fn(void *arg)
{
    struct app_run *a = arg;
    a->code = a->main();
    __atomic_store_n(&a->done, 1, __ATOMIC_RELEASE);
}

static bool app_done(void *ctx) { return __atomic_load_n(&((struct app_run *)ctx)->done, __ATOMIC_ACQUIRE); }

/* The guest's application as the image runs it: hv_init, vmbus_init and the rest in app_main. */
static struct thread *app_start(struct app_run *a, const char *cmdline)
{
    set_cmdline(cmdline);
    netvsc_configure(NULL); /* the command line's keys, as in the image */
    guest_vp = 1;           /* queue 0 (and its kmcl worker) on VP 0, the app on APP_VP */
    struct thread *t;
    assert_int_equal(thread_create("app", app_fn, a, APP_VP, &t), STATUS_OK);
    return t;
}

/* After the app returned: the driver removed (what it left bound), power-off, the host side gone. */
static void app_stop(void)
{
    hosted_run_on(guest_vp, detach_job, NULL);
    stop_host();
}

static void test_udp_echo_rescind(void **state)
{
    (void)state;
    struct hvsim_netvsp_config nc = { 0 };
    start_host(&nc);
    struct app_run a = { .main = udp_echo_app_main };
    struct thread *t = app_start(&a, "ip=10.0.0.2/24 report=0 keepalive=1 seconds=120 queues=1");
    assert_true(wait_log("udp-echo: address 10.0.0.2/24 gateway none (static)", 10000));
    assert_true(pump(2000, mixed, 10, 1, 16) > 0);
    assert_int_equal(peer->bad, 0);
    int64_t t0 = now_ns();
    assert_true(hvsim_vmbus_rescind(vb, nic_relid()));
    assert_true(hosted_wait_for(app_done, &a, 5000)); /* stops by itself, nothing hangs */
    assert_true(now_ns() - t0 < 3000000000ll);
    thread_join(t);
    assert_int_equal(a.code, 7);
    assert_true(hosted_log_contains("udp-echo: the network adapter is gone (net"));
    assert_true(hosted_log_contains(" netvsc, withdrawn by the host): stopping"));
    assert_true(hosted_log_contains("udp-echo: exit: rx "));
    assert_false(hosted_log_contains("did not answer a keep-alive"));
    struct hvsim_vmbus_stats vs;
    assert_true(hvsim_vmbus_flush(vb, 5000));
    hvsim_vmbus_get_stats(vb, &vs);
    assert_int_equal(vs.channels_open, 0);
    app_stop();
}

static void power_off_job(void *arg)
{
    (void)arg;
    hosted_power_off();
}

/* udp-echo ends (a "quit" datagram) with the NIC still bound, as every image does: the power-off halts the
 * NIC and closes its channels before the bus unloads (nothing of it runs while the bus goes down),
 * and frees it, nobody holding it any more. */
static void test_udp_echo_exit_power_off(void **state)
{
    (void)state;
    struct hvsim_netvsp_config nc = { 0 };
    start_host(&nc);
    struct app_run a = { .main = udp_echo_app_main };
    struct thread *t = app_start(&a, "ip=10.0.0.2/24 report=0 keepalive=0 quit_port=9 queues=1");
    assert_true(wait_log("udp-echo: address 10.0.0.2/24", 10000));
    assert_true(pump(500, mixed, 10, 1, 16) > 0);
    uint8_t mac[6], f[128];
    guest_mac(mac);
    uint32_t n = build_udp(f, mac, 1000, 0, 4);
    put16(f + 14 + 20 + 2, 9);       /* to the quit port */
    memcpy(f + 14 + 20 + 8, "quit", 4);
    put16(f + 14 + 20 + 6, 0);       /* no UDP checksum */
    assert_true(hvsim_netvsp_deliver(nvsp, f, n));
    assert_true(hosted_wait_for(app_done, &a, 10000));
    assert_true(hosted_log_contains("udp-echo: quit requested on udp port 9"));
    thread_join(t);
    assert_int_equal(a.code, 0);
    /* The image's power-off: the hooks, newest first, on a VP that no kmcl worker occupies (queue
     * 0's is on VP 0 until the hook closes its channel). */
    hosted_run_on(APP_VP, power_off_job, NULL);
    struct hvsim_netvsp_stats hs;
    hvsim_netvsp_get_stats(nvsp, &hs);
    assert_true(hs.revokes >= 1); /* halted by the driver, not just dropped by UNLOAD */
    assert_int_equal(hs.queues_open, 0);
    stop_host();
}

/* A new application that names drivers/netvsc and lib/net and writes nothing else (apps/netup):
 * the NIC gets a DHCP address from hvsim's gateway. */
static void test_netup_dhcp(void **state)
{
    (void)state;
    struct hvsim_netvsp_config nc = { 0 };
    start_host(&nc);
    char err[256];
    struct hvsim_netgw_config gc = { .nv = nvsp, .no_outbound = true };
    struct hvsim_netgw *gw = hvsim_netgw_create(&gc, err, sizeof err);
    assert_non_null(gw);
    struct app_run a = { .main = netup_app_main };
    struct thread *t = app_start(&a, "queues=1");
    assert_true(hosted_wait_for(app_done, &a, 30000));
    thread_join(t);
    assert_int_equal(a.code, 0);
    assert_true(hosted_log_contains("netup: net"));
    assert_true(hosted_log_contains(": 10.0.2.15/24 gateway 10.0.2.2 (dhcp)"));
    struct hvsim_netgw_stats gs;
    hvsim_netgw_get_stats(gw, &gs);
    assert_true(gs.dhcp_acks >= 1);
    hvsim_netgw_destroy(gw);
    app_stop();
}

/* ---- the benchmark ---- */

static void bench(void)
{
    printf("netsys bench: guest netvsc + IPv4 stack on hosted VP threads, hvsim's netvsp in-process, one\n"
           "process on this machine's cores; each datagram: built by the peer, delivered by the netvsp\n"
           "(receive buffer + transfer-page packet), echoed by the guest (send buffer + NVSP packet),\n"
           "checked byte for byte by the peer; 64 in flight. Wall-clock rates: noisy on a shared machine.\n");
    static const uint32_t s64[] = { 64 }, s1400[] = { 1400 };
    struct {
        const char *name;
        const uint32_t *size;
        uint32_t queues, flows;
    } cases[] = { { "64-byte payload, 1 queue", s64, 1, 1 },
                  { "1400-byte payload, 1 queue", s1400, 1, 1 },
                  { "64-byte payload, 2 queues", s64, 2, 64 },
                  { "1400-byte payload, 2 queues", s1400, 2, 64 } };
    uint32_t count = (uint32_t)strtoul(getenv("NETSYS_COUNT") ? getenv("NETSYS_COUNT") : "200000", NULL, 10);
    const char *only = getenv("NETSYS_CASE"); /* a case's index: for callgrind, one case per run */
    for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (only && (unsigned)atoi(only) != i)
            continue;
        start(0, cases[i].queues, 0, cases[i].queues);
        (void)pump(2000, cases[i].size, 1, cases[i].flows, 64); /* warm-up */
        uint64_t ns = pump(count, cases[i].size, 1, cases[i].flows, 64);
        printf("  %-30s %8.0f echoes/s  (%u in %.2f s, %u bad)\n", cases[i].name,
               ns ? count / (ns / 1e9) : 0.0, count, ns / 1e9, peer->bad);
        stop();
    }
}

int main(void)
{
    if (getenv("NETSYS_BENCH")) {
        bench();
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_echo_one_queue),   cmocka_unit_test(test_echo_multi_queue),
        cmocka_unit_test(test_versions),         cmocka_unit_test(test_bad_frames_dropped),
        cmocka_unit_test(test_link_down_up),     cmocka_unit_test(test_jumbo_frames),
        cmocka_unit_test(test_hostile_host),     cmocka_unit_test(test_rescind_while_held),
        cmocka_unit_test(test_rescind_unheld),   cmocka_unit_test(test_remove_while_held),
        cmocka_unit_test(test_cmdline_config),   cmocka_unit_test(test_udp_echo_rescind),
        cmocka_unit_test(test_udp_echo_exit_power_off), cmocka_unit_test(test_netup_dhcp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
