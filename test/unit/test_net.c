/*
 * Unit tests for the IPv4 stack (lib/net/net.h).
 *
 * The stack runs against a fake driver written here: tx_begin hands out a heap buffer of exactly
 * the length asked (ASan catches any write past it), tx_end records the frame; the lock callbacks
 * check that the lock is never taken recursively and count how often it is taken (the per-packet
 * path must not take it); the log callback keeps the lines. Frames in and out are built and checked
 * with code independent of the stack's (a plain 16-bit big-endian RFC 1071 sum, byte-by-byte
 * header builders). The DHCP tests play a server that reads the client's messages.
 *
 * Besides the rule-by-rule tests: a truncation sweep (every prefix of valid frames of each kind, in
 * each state), a byte-corruption sweep, and a multi-threaded test (two receive queues echoing while
 * another thread runs the timers, ARP, DHCP, binds and statistics; built with ThreadSanitizer as
 * test_net_tsan).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/net/net.h"
#include "lib/net/net_wire.h"
#include "test/lib/test_util.h"

#define S_NS 1000000000ull
#define MS_NS 1000000ull
#define T0 (1000 * S_NS) /* the tests' clock starts here */

/* ---- addresses ---- */
static const uint8_t OUR_MAC[6] = { 0x02, 0x15, 0x5d, 0x00, 0x00, 0x01 };
static const uint8_t PEER_MAC[6] = { 0x02, 0x15, 0x5d, 0x00, 0x00, 0x02 };
static const uint8_t GW_MAC[6] = { 0x02, 0x15, 0x5d, 0x00, 0x00, 0x03 };
static const uint8_t SRV_MAC[6] = { 0x02, 0x15, 0x5d, 0x00, 0x00, 0x04 };
static const uint8_t BCAST[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
static const uint8_t ZERO6[6];
#define IP(a, b, c, d) ((uint32_t)(a) << 24 | (uint32_t)(b) << 16 | (uint32_t)(c) << 8 | (uint32_t)(d))
#define OUR_IP IP(10, 0, 2, 15)
#define PEER_IP IP(10, 0, 2, 20)
#define GW_IP IP(10, 0, 2, 2)
#define SRV_IP IP(10, 0, 2, 3)
#define MASK24 0xFFFFFF00u
#define FAR_IP IP(192, 0, 2, 7)

/* ---- byte helpers and the reference checksum ---- */
static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)(v >> 16));
    put16(p + 2, (uint16_t)v);
}
static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)get16(p) << 16 | get16(p + 2);
}

static uint32_t ref_sum(const uint8_t *p, size_t n, uint32_t s)
{
    for (size_t i = 0; i + 1 < n; i += 2)
        s += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (n & 1)
        s += (uint32_t)p[n - 1] << 8;
    return s;
}
static uint16_t ref_fold(uint32_t s)
{
    while (s >> 16)
        s = (s & 0xFFFF) + (s >> 16);
    return (uint16_t)s;
}
static uint16_t ref_csum(const uint8_t *p, size_t n)
{
    return (uint16_t)~ref_fold(ref_sum(p, n, 0));
}
static uint32_t ref_pseudo(uint32_t src, uint32_t dst, uint8_t proto, uint16_t len)
{
    return (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + proto + len;
}

/* ---- frame builders (independent of the stack) ---- */
static size_t put_eth(uint8_t *f, const uint8_t dst[6], const uint8_t src[6], uint16_t type)
{
    memcpy(f, dst, 6);
    memcpy(f + 6, src, 6);
    put16(f + 12, type);
    return 14;
}

/* IPv4 header at h with `opt` option bytes (IHL 5 + opt/4), checksum filled. */
static size_t put_ip(uint8_t *h, uint8_t proto, uint32_t src, uint32_t dst, size_t payload, size_t opt)
{
    size_t hl = 20 + opt;
    memset(h, 0, hl);
    h[0] = (uint8_t)(0x40 | hl / 4);
    put16(h + 2, (uint16_t)(hl + payload));
    put16(h + 4, 0x1234);
    h[8] = 64;
    h[9] = proto;
    put32(h + 12, src);
    put32(h + 16, dst);
    for (size_t i = 0; i < opt; i++)
        h[20 + i] = 1; /* NOP options */
    put16(h + 10, ref_csum(h, hl));
    return hl;
}

struct udp_spec {
    const uint8_t *dst_mac, *src_mac;
    uint32_t src, dst;
    uint16_t sport, dport;
    bool no_csum;
};

static size_t build_udp(uint8_t *f, const struct udp_spec *s, const void *payload, size_t len)
{
    size_t o = put_eth(f, s->dst_mac, s->src_mac, 0x0800);
    o += put_ip(f + o, 17, s->src, s->dst, 8 + len, 0);
    uint8_t *u = f + o;
    put16(u, s->sport);
    put16(u + 2, s->dport);
    put16(u + 4, (uint16_t)(8 + len));
    put16(u + 6, 0);
    memcpy(u + 8, payload, len);
    if (!s->no_csum) {
        uint16_t c = (uint16_t)~ref_fold(ref_sum(u, 8 + len, ref_pseudo(s->src, s->dst, 17, (uint16_t)(8 + len))));
        put16(u + 6, c ? c : 0xFFFF);
    }
    return o + 8 + len;
}

static size_t build_echo(uint8_t *f, uint32_t src, uint32_t dst, uint16_t id, uint16_t seq, const void *data,
                         size_t len, size_t ip_opt)
{
    size_t o = put_eth(f, OUR_MAC, PEER_MAC, 0x0800);
    o += put_ip(f + o, 1, src, dst, 8 + len, ip_opt);
    uint8_t *c = f + o;
    c[0] = 8;
    c[1] = 0;
    put16(c + 2, 0);
    put16(c + 4, id);
    put16(c + 6, seq);
    memcpy(c + 8, data, len);
    put16(c + 2, ref_csum(c, 8 + len));
    return o + 8 + len;
}

static size_t build_arp(uint8_t *f, const uint8_t eth_dst[6], uint16_t op, const uint8_t sha[6], uint32_t spa,
                        const uint8_t tha[6], uint32_t tpa)
{
    size_t o = put_eth(f, eth_dst, sha, 0x0806);
    uint8_t *a = f + o;
    put16(a, 1);
    put16(a + 2, 0x0800);
    a[4] = 6;
    a[5] = 4;
    put16(a + 6, op);
    memcpy(a + 8, sha, 6);
    put32(a + 14, spa);
    memcpy(a + 18, tha, 6);
    put32(a + 24, tpa);
    return o + 28;
}

/* Recomputes the IPv4 header checksum of the frame (after a test edited the header). */
static void fix_ip_csum(uint8_t *f)
{
    uint8_t *h = f + 14;
    size_t hl = (size_t)(h[0] & 15) * 4;
    put16(h + 10, 0);
    put16(h + 10, ref_csum(h, hl));
}

/* ---- the fake driver ---- */
#define MAX_TX 256

struct txrec {
    uint32_t queue;
    uint32_t len;
    uint64_t when;
    uint8_t *data;
};

struct harness {
    struct net_if nif;
    struct net_ops ops;
    uint64_t now;
    struct txrec tx[MAX_TX];
    unsigned ntx;
    void *pending;        /* the buffer handed out by tx_begin, not yet back */
    uint32_t pending_len;
    uint32_t pending_queue;
    bool fail_begin;
    status_t end_status;
    int lock_depth;
    unsigned locks;
    struct reports logs;
    /* the recording UDP handler */
    unsigned udp_calls;
    struct net_udp_meta last_meta;
    uint8_t last_payload[2048];
    uint32_t last_len;
    uint32_t last_queue;
    bool echo; /* the handler replies with the same payload */
    status_t echo_status;
};

static void *h_tx_begin(void *ctx, uint32_t queue, uint32_t len)
{
    struct harness *h = ctx;
    assert_null(h->pending); /* one frame at a time in these single-threaded tests */
    assert_true(queue < h->nif.queues);
    assert_true(len >= NET_ETH_MIN_FRAME && len <= h->nif.mtu + 14);
    if (h->fail_begin)
        return NULL;
    h->pending = malloc(len);
    memset(h->pending, 0xCC, len);
    h->pending_len = len;
    h->pending_queue = queue;
    return h->pending;
}

static status_t h_tx_end(void *ctx, uint32_t queue, void *frame, uint32_t len)
{
    struct harness *h = ctx;
    assert_ptr_equal(frame, h->pending);
    assert_int_equal(queue, h->pending_queue);
    assert_true(len <= h->pending_len && len >= NET_ETH_MIN_FRAME);
    h->pending = NULL;
    if (h->end_status != STATUS_OK) {
        free(frame);
        return h->end_status;
    }
    assert_true(h->ntx < MAX_TX);
    h->tx[h->ntx++] = (struct txrec){ queue, len, h->now, frame };
    return STATUS_OK;
}

static void h_lock(void *ctx)
{
    struct harness *h = ctx;
    assert_int_equal(h->lock_depth, 0);
    h->lock_depth++;
    h->locks++;
}

static void h_unlock(void *ctx)
{
    struct harness *h = ctx;
    assert_int_equal(h->lock_depth, 1);
    h->lock_depth--;
}

static void h_log(void *ctx, const char *line)
{
    struct harness *h = ctx;
    assert_int_equal(h->lock_depth, 1); /* documented: called with the lock held */
    assert_null(strchr(line, '\n'));
    reports_record(&h->logs, line);
}

static void h_udp(struct net_if *nif, uint32_t queue, const struct net_udp_meta *m, const void *payload,
                  uint32_t len, void *arg)
{
    struct harness *h = arg;
    assert_ptr_equal(nif, &h->nif);
    assert_int_equal(h->lock_depth, 0);
    h->udp_calls++;
    h->last_meta = *m;
    assert_true(len <= sizeof h->last_payload);
    memcpy(h->last_payload, payload, len);
    h->last_len = len;
    h->last_queue = queue;
    if (h->echo)
        h->echo_status = net_udp_reply(nif, queue, m, payload, len);
}

static void tx_clear(struct harness *h)
{
    for (unsigned i = 0; i < h->ntx; i++)
        free(h->tx[i].data);
    h->ntx = 0;
}

static struct harness *harness_new(uint32_t queues)
{
    struct harness *h = calloc(1, sizeof *h);
    assert_non_null(h);
    h->ops = (struct net_ops){ .ctx = h, .tx_begin = h_tx_begin, .tx_end = h_tx_end, .lock = h_lock,
                               .unlock = h_unlock, .log = h_log, .ctl_queue = 0 };
    h->now = T0;
    assert_int_equal(net_if_init(&h->nif, OUR_MAC, 1500, queues, &h->ops), STATUS_OK);
    return h;
}

static void harness_free(struct harness *h)
{
    tx_clear(h);
    assert_null(h->pending);
    assert_int_equal(h->lock_depth, 0);
    free(h);
}

static int setup(void **state)
{
    *state = harness_new(4);
    return 0;
}

static int teardown(void **state)
{
    harness_free(*state);
    return 0;
}

static void input(struct harness *h, uint32_t queue, const uint8_t *f, size_t len)
{
    /* An exact-size heap copy: ASan reports any read past the frame. */
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, f, len);
    net_input(&h->nif, queue, copy, (uint32_t)len, h->now);
    free(copy);
}

static void tick_to(struct harness *h, uint64_t until)
{
    while (h->now + 100 * MS_NS <= until) {
        h->now += 100 * MS_NS;
        net_tick(&h->nif, h->now);
    }
}

static struct net_stats stats(struct harness *h)
{
    struct net_stats s;
    net_get_stats(&h->nif, &s);
    return s;
}

static void configure(struct harness *h)
{
    assert_int_equal(net_set_static(&h->nif, OUR_IP, MASK24, GW_IP, h->now), STATUS_OK);
    tx_clear(h);
    tick_to(h, h->now + 3 * S_NS); /* past the second announcement */
    tx_clear(h);
}

/* Teaches the stack a MAC through an ARP reply to us. */
static void learn(struct harness *h, const uint8_t mac[6], uint32_t ip)
{
    uint8_t f[64];
    size_t n = build_arp(f, OUR_MAC, 2, mac, ip, OUR_MAC, OUR_IP);
    input(h, 0, f, n);
}

/* ---- checks of frames the stack sent ---- */

struct ip_view {
    const uint8_t *eth, *ip, *l4;
    uint32_t l4len, src, dst;
    uint8_t proto, tos, ttl;
};

/* Every IPv4 frame sent: Ethernet II from our MAC, version 4, IHL 5, DF, TTL 64, total length
 * within the frame, header checksum right (reference sum). */
static struct ip_view check_ip(const struct txrec *t)
{
    struct ip_view v = { 0 };
    assert_true(t->len >= 34);
    v.eth = t->data;
    assert_memory_equal(v.eth + 6, OUR_MAC, 6);
    assert_int_equal(get16(v.eth + 12), 0x0800);
    v.ip = v.eth + 14;
    assert_int_equal(v.ip[0], 0x45);
    uint16_t total = get16(v.ip + 2);
    assert_true(total >= 20 && 14u + total <= t->len);
    if (14u + total < NET_ETH_MIN_FRAME)
        assert_int_equal(t->len, NET_ETH_MIN_FRAME);
    else
        assert_int_equal(t->len, 14u + total);
    for (uint32_t i = 14 + total; i < t->len; i++)
        assert_int_equal(t->data[i], 0); /* padding zeroed */
    assert_int_equal(get16(v.ip + 6), 0x4000);
    assert_int_equal(v.ip[8], 64);
    assert_int_equal(ref_fold(ref_sum(v.ip, 20, 0)), 0xFFFF);
    v.proto = v.ip[9];
    v.tos = v.ip[1];
    v.ttl = v.ip[8];
    v.src = get32(v.ip + 12);
    v.dst = get32(v.ip + 16);
    v.l4 = v.ip + 20;
    v.l4len = total - 20u;
    return v;
}

struct udp_view {
    struct ip_view ip;
    uint16_t sport, dport;
    const uint8_t *payload;
    uint32_t len;
};

static struct udp_view check_udp(const struct txrec *t)
{
    struct udp_view u;
    u.ip = check_ip(t);
    assert_int_equal(u.ip.proto, 17);
    const uint8_t *p = u.ip.l4;
    assert_true(u.ip.l4len >= 8);
    assert_int_equal(get16(p + 4), u.ip.l4len);
    u.sport = get16(p);
    u.dport = get16(p + 2);
    assert_int_not_equal(get16(p + 6), 0); /* the stack always sends a checksum */
    assert_int_equal(ref_fold(ref_sum(p, u.ip.l4len, ref_pseudo(u.ip.src, u.ip.dst, 17, (uint16_t)u.ip.l4len))),
                     0xFFFF);
    u.payload = p + 8;
    u.len = u.ip.l4len - 8;
    return u;
}

struct arp_view {
    const uint8_t *eth_dst;
    uint16_t op;
    const uint8_t *sha, *tha;
    uint32_t spa, tpa;
};

static struct arp_view check_arp(const struct txrec *t)
{
    struct arp_view v;
    assert_int_equal(t->len, 60);
    assert_memory_equal(t->data + 6, OUR_MAC, 6);
    assert_int_equal(get16(t->data + 12), 0x0806);
    const uint8_t *a = t->data + 14;
    assert_int_equal(get16(a), 1);
    assert_int_equal(get16(a + 2), 0x0800);
    assert_int_equal(a[4], 6);
    assert_int_equal(a[5], 4);
    for (int i = 42; i < 60; i++)
        assert_int_equal(t->data[i], 0);
    v.eth_dst = t->data;
    v.op = get16(a + 6);
    v.sha = a + 8;
    v.spa = get32(a + 14);
    v.tha = a + 18;
    v.tpa = get32(a + 24);
    assert_memory_equal(v.sha, OUR_MAC, 6);
    return v;
}

static bool is_arp(const struct txrec *t)
{
    return get16(t->data + 12) == 0x0806;
}

/* ======================================================================================== */
/* set-up */

static void test_init_params(void **state)
{
    (void)state;
    struct net_if *nif = malloc(sizeof *nif);
    struct net_ops ops = { .tx_begin = h_tx_begin, .tx_end = h_tx_end };
    static const uint8_t mcast[6] = { 0x01, 0, 0x5e, 0, 0, 1 };
    assert_int_equal(net_if_init(nif, OUR_MAC, 1500, 1, &ops), STATUS_OK);
    assert_int_equal(net_if_init(nif, mcast, 1500, 1, &ops), STATUS_INVALID_PARAMETER);
    assert_int_equal(net_if_init(nif, ZERO6, 1500, 1, &ops), STATUS_INVALID_PARAMETER);
    assert_int_equal(net_if_init(nif, OUR_MAC, 575, 1, &ops), STATUS_INVALID_PARAMETER);
    assert_int_equal(net_if_init(nif, OUR_MAC, 9001, 1, &ops), STATUS_INVALID_PARAMETER);
    assert_int_equal(net_if_init(nif, OUR_MAC, 1500, 0, &ops), STATUS_INVALID_PARAMETER);
    assert_int_equal(net_if_init(nif, OUR_MAC, 1500, NET_MAX_QUEUES + 1, &ops), STATUS_INVALID_PARAMETER);
    assert_int_equal(net_if_init(nif, OUR_MAC, 1500, NET_MAX_QUEUES, &ops), STATUS_OK);
    ops.ctl_queue = 1;
    assert_int_equal(net_if_init(nif, OUR_MAC, 1500, 1, &ops), STATUS_INVALID_PARAMETER);
    ops.ctl_queue = 0;
    ops.lock = h_lock; /* lock without unlock */
    assert_int_equal(net_if_init(nif, OUR_MAC, 1500, 1, &ops), STATUS_INVALID_PARAMETER);
    ops.lock = NULL;
    ops.tx_end = NULL;
    assert_int_equal(net_if_init(nif, OUR_MAC, 1500, 1, &ops), STATUS_INVALID_PARAMETER);
    assert_int_equal(net_if_init(nif, OUR_MAC, 1500, 1, NULL), STATUS_INVALID_PARAMETER);
    free(nif);
}

static void test_checksum_matches_reference(void **state)
{
    (void)state;
    struct rng r;
    rng_seed(&r, 7);
    uint8_t *buf = malloc(2100);
    for (size_t off = 0; off < 8; off++)
        for (size_t len = 0; len <= 2048; len += len < 80 ? 1 : 37) {
            for (size_t i = 0; i < len; i++)
                buf[off + i] = (uint8_t)rng_next(&r);
            if (len > 4 && (len & 8))
                memset(buf + off, 0xFF, len); /* carry-heavy */
            uint16_t want = ref_csum(buf + off, len);
            assert_int_equal(net_checksum(buf + off, len), want);
        }
    /* A header whose checksum is right sums to 0. */
    uint8_t hdr[20];
    put_ip(hdr, 17, OUR_IP, PEER_IP, 100, 0);
    assert_int_equal(net_checksum(hdr, 20), 0);
    free(buf);
}

/* ======================================================================================== */
/* Ethernet */

static void test_eth_drops(void **state)
{
    struct harness *h = *state;
    configure(h);
    uint8_t f[1600];
    uint8_t pl[4] = { 1, 2, 3, 4 };
    struct udp_spec s = { OUR_MAC, PEER_MAC, PEER_IP, OUR_IP, 1000, 7, false };
    size_t n = build_udp(f, &s, pl, sizeof pl);

    input(h, 0, f, 13);
    assert_int_equal(stats(h).too_short, 1);
    input(h, 0, f, 0);
    assert_int_equal(stats(h).too_short, 2);
    memset(f + n, 0, sizeof f - n);
    input(h, 0, f, 1515);
    assert_int_equal(stats(h).too_long, 1);
    input(h, 0, f, 1514); /* mtu + 14 is fine (IP total length says less: Ethernet padding) */
    assert_int_equal(stats(h).too_long, 1);
    assert_int_equal(stats(h).no_port, 1);

    uint8_t g[1600];
    memcpy(g, f, n);
    g[0] = 0x01; /* multicast */
    input(h, 0, g, n);
    assert_int_equal(stats(h).multicast, 1);
    memcpy(g, f, n);
    g[5] ^= 1; /* another unicast MAC */
    input(h, 0, g, n);
    assert_int_equal(stats(h).not_for_us, 1);
    memcpy(g, f, n);
    g[6] |= 1; /* group source */
    input(h, 0, g, n);
    assert_int_equal(stats(h).bad_src_mac, 1);
    memcpy(g, f, n);
    put16(g + 12, 0x8100); /* 802.1Q */
    input(h, 0, g, n);
    put16(g + 12, 0x88A8);
    input(h, 0, g, n);
    assert_int_equal(stats(h).vlan, 2);
    put16(g + 12, 0x86DD); /* IPv6 */
    input(h, 0, g, n);
    assert_int_equal(stats(h).ethertype, 1);
    struct net_stats st = stats(h);
    assert_int_equal(st.rx_frames, 10);
    assert_int_equal(h->ntx, 0);
}

/* ======================================================================================== */
/* ARP */

static void test_arp_request_answered(void **state)
{
    struct harness *h = *state;
    configure(h);
    uint8_t f[64];
    size_t n = build_arp(f, BCAST, 1, PEER_MAC, PEER_IP, ZERO6, OUR_IP);
    memset(f + n, 0, 18); /* padded to 60 as on the wire */
    h->locks = 0;
    input(h, 2, f, 60);
    assert_int_equal(h->ntx, 1);
    assert_int_equal(h->tx[0].queue, 2); /* answered on the queue it came in on */
    struct arp_view v = check_arp(&h->tx[0]);
    assert_memory_equal(v.eth_dst, PEER_MAC, 6);
    assert_int_equal(v.op, 2);
    assert_int_equal(v.spa, OUR_IP);
    assert_memory_equal(v.tha, PEER_MAC, 6);
    assert_int_equal(v.tpa, PEER_IP);
    assert_int_equal(stats(h).arp_requests_in, 1);
    /* The requester was learned: a send to it goes out at once, without a request. */
    tx_clear(h);
    assert_int_equal(net_udp_send(&h->nif, 0, PEER_IP, 9, 1234, "x", 1), STATUS_OK);
    assert_int_equal(h->ntx, 1);
    struct udp_view u = check_udp(&h->tx[0]);
    assert_memory_equal(u.ip.eth, PEER_MAC, 6);
    assert_int_equal(u.ip.dst, PEER_IP);
    assert_int_equal(u.ip.src, OUR_IP);
    assert_int_equal(u.dport, 9);
    assert_int_equal(u.sport, 1234);
    assert_int_equal(u.len, 1);
}

static void test_arp_not_for_us_not_learned(void **state)
{
    struct harness *h = *state;
    configure(h);
    uint8_t f[64];
    size_t n = build_arp(f, BCAST, 1, PEER_MAC, PEER_IP, ZERO6, IP(10, 0, 2, 99));
    input(h, 0, f, n);
    assert_int_equal(h->ntx, 0);
    assert_int_equal(stats(h).arp_ignored, 1);
    /* Not learned: sending to PEER_IP needs a request. */
    assert_int_equal(net_udp_send(&h->nif, 0, PEER_IP, 9, 1234, "x", 1), STATUS_RETRY);
    assert_int_equal(h->ntx, 1);
    struct arp_view v = check_arp(&h->tx[0]);
    assert_memory_equal(v.eth_dst, BCAST, 6);
    assert_int_equal(v.op, 1);
    assert_int_equal(v.spa, OUR_IP);
    assert_int_equal(v.tpa, PEER_IP);
    assert_memory_equal(v.tha, ZERO6, 6);
    /* A request from it about someone else now updates (merges) the pending entry. */
    tx_clear(h);
    input(h, 0, f, n);
    assert_int_equal(net_udp_send(&h->nif, 0, PEER_IP, 9, 1234, "x", 1), STATUS_OK);
    assert_int_equal(h->ntx, 1);
    assert_memory_equal(h->tx[0].data, PEER_MAC, 6);
}

static void test_arp_unconfigured_ignored(void **state)
{
    struct harness *h = *state;
    uint8_t f[64];
    size_t n = build_arp(f, BCAST, 1, PEER_MAC, PEER_IP, ZERO6, OUR_IP);
    input(h, 0, f, n);
    assert_int_equal(h->ntx, 0);
    assert_int_equal(stats(h).arp_ignored, 1);
}

static void test_arp_resolve_retries_and_fails(void **state)
{
    struct harness *h = *state;
    configure(h);
    uint64_t start = h->now;
    assert_int_equal(net_udp_send(&h->nif, 1, PEER_IP, 9, 1234, "x", 1), STATUS_RETRY);
    assert_int_equal(h->ntx, 1);
    assert_int_equal(h->tx[0].queue, 1); /* the first request on the caller's queue */
    /* Pending: no second request from the send path. */
    assert_int_equal(net_udp_send(&h->nif, 1, PEER_IP, 9, 1234, "x", 1), STATUS_RETRY);
    assert_int_equal(h->ntx, 1);
    tick_to(h, start + 1 * S_NS);
    assert_int_equal(h->ntx, 2);
    assert_int_equal(h->tx[1].queue, 0); /* retries on ctl_queue */
    tick_to(h, start + 2 * S_NS);
    assert_int_equal(h->ntx, 3);
    for (unsigned i = 0; i < 3; i++) {
        struct arp_view v = check_arp(&h->tx[i]);
        assert_int_equal(v.op, 1);
        assert_int_equal(v.tpa, PEER_IP);
    }
    tick_to(h, start + 3 * S_NS);
    assert_int_equal(h->ntx, 3); /* NET_ARP_TRIES = 3: no more */
    assert_int_equal(net_udp_send(&h->nif, 1, PEER_IP, 9, 1234, "x", 1), STATUS_NOT_FOUND);
    assert_int_equal(h->ntx, 3);
    tick_to(h, start + 3 * S_NS + NET_ARP_FAILED_NS + 200 * MS_NS);
    assert_int_equal(net_udp_send(&h->nif, 1, PEER_IP, 9, 1234, "x", 1), STATUS_RETRY); /* tries again */
    assert_int_equal(h->ntx, 4);
    assert_true(stats(h).tx_unresolved >= 4);
}

static void test_arp_reply_resolves(void **state)
{
    struct harness *h = *state;
    configure(h);
    assert_int_equal(net_udp_send(&h->nif, 0, PEER_IP, 9, 1234, "x", 1), STATUS_RETRY);
    tx_clear(h);
    learn(h, PEER_MAC, PEER_IP);
    assert_int_equal(stats(h).arp_replies_in, 1);
    assert_int_equal(h->ntx, 0); /* a reply is not answered */
    assert_int_equal(net_udp_send(&h->nif, 0, PEER_IP, 9, 1234, "hello", 5), STATUS_OK);
    assert_int_equal(h->ntx, 1);
    struct udp_view u = check_udp(&h->tx[0]);
    assert_memory_equal(u.ip.eth, PEER_MAC, 6);
    assert_memory_equal(u.payload, "hello", 5);
    tick_to(h, h->now + 5 * S_NS); /* resolved: no retries */
    assert_int_equal(h->ntx, 1);
}

static void test_arp_expiry_and_refresh(void **state)
{
    struct harness *h = *state;
    configure(h);
    learn(h, PEER_MAC, PEER_IP);
    uint64_t learned = h->now;
    /* In the last 30 s of its life, a use sends one unicast request to refresh the entry. */
    tick_to(h, learned + NET_ARP_REACHABLE_NS - 20 * S_NS);
    assert_int_equal(net_udp_send(&h->nif, 0, PEER_IP, 9, 1234, "x", 1), STATUS_OK);
    assert_int_equal(h->ntx, 2);
    struct arp_view v = check_arp(&h->tx[0]);
    assert_memory_equal(v.eth_dst, PEER_MAC, 6);
    assert_int_equal(v.tpa, PEER_IP);
    check_udp(&h->tx[1]);
    assert_int_equal(net_udp_send(&h->nif, 0, PEER_IP, 9, 1234, "x", 1), STATUS_OK);
    assert_int_equal(h->ntx, 3); /* only one refresh */
    /* Unanswered: the entry expires. */
    tick_to(h, learned + NET_ARP_REACHABLE_NS + 200 * MS_NS);
    tx_clear(h);
    assert_int_equal(net_udp_send(&h->nif, 0, PEER_IP, 9, 1234, "x", 1), STATUS_RETRY);
    assert_int_equal(h->ntx, 1);
    assert_memory_equal(check_arp(&h->tx[0]).eth_dst, BCAST, 6);
    /* Answered refresh keeps it alive. */
    learn(h, PEER_MAC, PEER_IP);
    learned = h->now;
    tick_to(h, learned + NET_ARP_REACHABLE_NS - 10 * S_NS);
    assert_int_equal(net_udp_send(&h->nif, 0, PEER_IP, 9, 1234, "x", 1), STATUS_OK);
    learn(h, PEER_MAC, PEER_IP);
    tick_to(h, learned + NET_ARP_REACHABLE_NS + 60 * S_NS);
    tx_clear(h);
    assert_int_equal(net_udp_send(&h->nif, 0, PEER_IP, 9, 1234, "x", 1), STATUS_OK);
}

static void test_arp_cache_lru(void **state)
{
    struct harness *h = *state;
    configure(h);
    uint8_t mac[6] = { 0x02, 0, 0, 0, 0, 0 };
    for (unsigned i = 0; i < NET_ARP_ENTRIES; i++) {
        mac[5] = (uint8_t)(i + 1);
        learn(h, mac, IP(10, 0, 2, 100 + i));
        h->now += MS_NS;
    }
    /* Use the oldest (.100) so that .101 becomes the least recently used. */
    assert_int_equal(net_udp_send(&h->nif, 0, IP(10, 0, 2, 100), 9, 1, "x", 1), STATUS_OK);
    mac[5] = 0xEE;
    learn(h, mac, IP(10, 0, 2, 250));
    tx_clear(h);
    assert_int_equal(net_udp_send(&h->nif, 0, IP(10, 0, 2, 250), 9, 1, "x", 1), STATUS_OK);
    assert_int_equal(net_udp_send(&h->nif, 0, IP(10, 0, 2, 100), 9, 1, "x", 1), STATUS_OK);
    assert_int_equal(net_udp_send(&h->nif, 0, IP(10, 0, 2, 102), 9, 1, "x", 1), STATUS_OK);
    assert_int_equal(net_udp_send(&h->nif, 0, IP(10, 0, 2, 101), 9, 1, "x", 1), STATUS_RETRY); /* evicted */
}

static void test_arp_malformed(void **state)
{
    struct harness *h = *state;
    configure(h);
    uint8_t f[64], g[64];
    size_t n = build_arp(f, BCAST, 1, PEER_MAC, PEER_IP, ZERO6, OUR_IP);
    unsigned bad = 0;
    input(h, 0, f, n - 1); /* short */
    assert_int_equal(stats(h).arp_bad, ++bad);
    struct {
        size_t off;
        uint8_t val;
    } edits[] = {
        { 15, 6 },    /* hardware type 6 */
        { 16, 0x86 }, /* protocol type 0x86dd */
        { 18, 8 },    /* hlen */
        { 19, 16 },   /* plen */
        { 21, 3 },    /* op 3 */
        { 22, 0x01 }, /* multicast sender MAC */
        { 28, 224 },  /* multicast sender IP */
        { 28, 127 },  /* loopback sender IP */
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        memcpy(g, f, n);
        g[edits[i].off] = edits[i].val;
        input(h, 0, g, n);
        assert_int_equal(stats(h).arp_bad, ++bad);
    }
    memcpy(g, f, n);
    memset(g + 22, 0, 6); /* zero sender MAC */
    input(h, 0, g, n);
    assert_int_equal(stats(h).arp_bad, ++bad);
    assert_int_equal(h->ntx, 0);
    /* A probe (sender IP 0, RFC 5227) is answered but teaches nothing. */
    n = build_arp(f, BCAST, 1, PEER_MAC, 0, ZERO6, OUR_IP);
    input(h, 0, f, n);
    assert_int_equal(h->ntx, 1);
    struct arp_view v = check_arp(&h->tx[0]);
    assert_int_equal(v.op, 2);
    assert_int_equal(v.tpa, 0);
    assert_memory_equal(v.eth_dst, PEER_MAC, 6);
}

static void test_gratuitous_arp(void **state)
{
    struct harness *h = *state;
    assert_int_equal(net_set_static(&h->nif, OUR_IP, MASK24, GW_IP, h->now), STATUS_OK);
    assert_int_equal(h->ntx, 1);
    struct arp_view v = check_arp(&h->tx[0]);
    assert_memory_equal(v.eth_dst, BCAST, 6);
    assert_int_equal(v.op, 1);
    assert_int_equal(v.spa, OUR_IP);
    assert_int_equal(v.tpa, OUR_IP);
    assert_memory_equal(v.tha, ZERO6, 6);
    uint64_t t = h->now;
    tick_to(h, t + NET_ANNOUNCE_GAP_NS - 200 * MS_NS);
    assert_int_equal(h->ntx, 1);
    tick_to(h, t + NET_ANNOUNCE_GAP_NS + 100 * MS_NS);
    assert_int_equal(h->ntx, 2);
    v = check_arp(&h->tx[1]);
    assert_int_equal(v.spa, OUR_IP);
    assert_int_equal(v.tpa, OUR_IP);
    tick_to(h, t + 20 * S_NS);
    assert_int_equal(h->ntx, 2);
    assert_int_equal(stats(h).arp_announce_out, 2);
    assert_int_equal(reports_matching(&h->logs, "static address 10.0.2.15/24 gw 10.0.2.2"), 1);
    /* Our own announcement reflected back is ignored, not a conflict. */
    uint8_t f[64];
    size_t n = build_arp(f, BCAST, 1, OUR_MAC, OUR_IP, ZERO6, OUR_IP);
    input(h, 0, f, n);
    assert_int_equal(stats(h).arp_conflict, 0);
}

static void test_arp_conflict_defended(void **state)
{
    struct harness *h = *state;
    configure(h);
    uint8_t f[64];
    size_t n = build_arp(f, BCAST, 1, PEER_MAC, OUR_IP, ZERO6, OUR_IP);
    input(h, 0, f, n);
    assert_int_equal(stats(h).arp_conflict, 1);
    assert_int_equal(reports_matching(&h->logs, "address conflict", "10.0.2.15", "02:15:5d:00:00:02"), 1);
    assert_int_equal(h->ntx, 1); /* defended with an announcement */
    struct arp_view v = check_arp(&h->tx[0]);
    assert_int_equal(v.spa, OUR_IP);
    assert_int_equal(v.tpa, OUR_IP);
    input(h, 0, f, n);
    assert_int_equal(h->ntx, 1); /* at most once per 10 s */
    h->now += 11 * S_NS;
    input(h, 0, f, n);
    assert_int_equal(h->ntx, 2);
    assert_int_equal(stats(h).arp_conflict, 3);
    /* Nothing learned: PEER_IP still unresolved. */
    assert_int_equal(net_udp_send(&h->nif, 0, PEER_IP, 9, 1234, "x", 1), STATUS_RETRY);
}

/* ======================================================================================== */
/* IPv4 */

static size_t good_udp(uint8_t *f, uint16_t dport)
{
    static const uint8_t pl[16] = "0123456789abcdef";
    struct udp_spec s = { OUR_MAC, PEER_MAC, PEER_IP, OUR_IP, 5000, dport, false };
    return build_udp(f, &s, pl, sizeof pl);
}

static void bind_recorder(struct harness *h, uint16_t port)
{
    assert_int_equal(net_udp_bind(&h->nif, port, h_udp, h), STATUS_OK);
}

static void test_ip_bad_header(void **state)
{
    struct harness *h = *state;
    configure(h);
    bind_recorder(h, 7);
    uint8_t f[200], g[200];
    size_t n = good_udp(f, 7);
    input(h, 0, f, n);
    assert_int_equal(h->udp_calls, 1);
    unsigned bad = 0;

    memcpy(g, f, n);
    g[14] = 0x65; /* version 6 */
    fix_ip_csum(g);
    input(h, 0, g, n);
    assert_int_equal(stats(h).bad_ip_header, ++bad);

    memcpy(g, f, n);
    g[14] = 0x44; /* IHL 4 */
    input(h, 0, g, n);
    assert_int_equal(stats(h).bad_ip_header, ++bad);

    memcpy(g, f, n);
    g[14] = 0x4F; /* IHL 15 = 60 bytes: past the 58 bytes after the Ethernet header */
    input(h, 0, g, 14 + 58);
    assert_int_equal(stats(h).bad_ip_header, ++bad);

    memcpy(g, f, n);
    put16(g + 16, 19); /* total length < header */
    fix_ip_csum(g);
    input(h, 0, g, n);
    assert_int_equal(stats(h).bad_ip_header, ++bad);

    input(h, 0, f, 14 + 19); /* too short for any header */
    assert_int_equal(stats(h).bad_ip_header, ++bad);

    memcpy(g, f, n);
    put16(g + 16, (uint16_t)(n - 14 + 1)); /* total length past the frame */
    fix_ip_csum(g);
    input(h, 0, g, n);
    assert_int_equal(stats(h).ip_truncated, 1);

    memcpy(g, f, n);
    g[24] ^= 0x40; /* TTL changed, checksum not */
    input(h, 0, g, n);
    assert_int_equal(stats(h).bad_ip_checksum, 1);

    assert_int_equal(h->udp_calls, 1);
}

static void test_ip_fragments_dropped(void **state)
{
    struct harness *h = *state;
    configure(h);
    bind_recorder(h, 7);
    uint8_t f[200], g[200];
    size_t n = good_udp(f, 7);
    uint16_t frags[] = { 0x2000 /* MF */, 0x0001 /* offset 8 */, 0x3FFF, 0x6000 /* DF|MF */ };
    for (unsigned i = 0; i < 4; i++) {
        memcpy(g, f, n);
        put16(g + 20, frags[i]);
        fix_ip_csum(g);
        input(h, 0, g, n);
        assert_int_equal(stats(h).fragments, i + 1);
    }
    memcpy(g, f, n);
    put16(g + 20, 0x4000); /* DF alone is fine */
    fix_ip_csum(g);
    input(h, 0, g, n);
    assert_int_equal(h->udp_calls, 1);
}

static void test_ip_destination_and_source(void **state)
{
    struct harness *h = *state;
    configure(h);
    bind_recorder(h, 7);
    uint8_t f[200], g[200];
    size_t n = good_udp(f, 7);
    /* Not ours. */
    memcpy(g, f, n);
    put32(g + 30, IP(10, 0, 2, 16));
    fix_ip_csum(g);
    input(h, 0, g, n);
    assert_int_equal(stats(h).ip_not_for_us, 1);
    /* Multicast destination (in a unicast frame). */
    put32(g + 30, IP(224, 0, 0, 1));
    fix_ip_csum(g);
    input(h, 0, g, n);
    assert_int_equal(stats(h).ip_not_for_us, 2);
    /* Unicast IP in a link-layer broadcast (RFC 1122 3.3.6). */
    memcpy(g, f, n);
    memset(g, 0xFF, 6);
    input(h, 0, g, n);
    assert_int_equal(stats(h).ip_not_for_us, 3);
    assert_int_equal(h->udp_calls, 0);
    /* Bad sources. */
    uint32_t srcs[] = { 0, 0xFFFFFFFFu, IP(224, 1, 2, 3), IP(240, 0, 0, 1), IP(127, 0, 0, 1), OUR_IP,
                        IP(10, 0, 2, 255) /* our subnet's broadcast */ };
    for (unsigned i = 0; i < sizeof srcs / sizeof srcs[0]; i++) {
        struct udp_spec s = { OUR_MAC, PEER_MAC, srcs[i], OUR_IP, 5000, 7, false };
        n = build_udp(g, &s, "abc", 3);
        input(h, 0, g, n);
        assert_int_equal(stats(h).bad_ip_src, i + 1);
    }
    assert_int_equal(h->udp_calls, 0);
    /* Limited and subnet broadcasts are delivered, flagged. */
    struct udp_spec b = { BCAST, PEER_MAC, PEER_IP, 0xFFFFFFFFu, 5000, 7, false };
    n = build_udp(g, &b, "abc", 3);
    input(h, 0, g, n);
    assert_int_equal(h->udp_calls, 1);
    assert_true(h->last_meta.broadcast);
    assert_int_equal(h->last_meta.dst_ip, 0xFFFFFFFFu);
    b.dst = IP(10, 0, 2, 255);
    n = build_udp(g, &b, "abc", 3);
    input(h, 0, g, n);
    assert_int_equal(h->udp_calls, 2);
    assert_true(h->last_meta.broadcast);
    /* Other protocols. */
    n = good_udp(g, 7);
    g[23] = 6; /* TCP */
    fix_ip_csum(g);
    input(h, 0, g, n);
    assert_int_equal(stats(h).ip_proto, 1);
}

static void test_ip_options_and_padding(void **state)
{
    struct harness *h = *state;
    configure(h);
    bind_recorder(h, 7);
    /* IHL 6 (4 option bytes) with a UDP datagram behind. */
    uint8_t f[200];
    size_t o = put_eth(f, OUR_MAC, PEER_MAC, 0x0800);
    o += put_ip(f + o, 17, PEER_IP, OUR_IP, 8 + 3, 4);
    uint8_t *u = f + o;
    put16(u, 5000);
    put16(u + 2, 7);
    put16(u + 4, 11);
    put16(u + 6, 0);
    memcpy(u + 8, "xyz", 3);
    put16(u + 6, (uint16_t)~ref_fold(ref_sum(u, 11, ref_pseudo(PEER_IP, OUR_IP, 17, 11))));
    size_t n = o + 11;
    memset(f + n, 0xAB, 60 - n); /* Ethernet padding, not part of the datagram */
    input(h, 0, f, 60);
    assert_int_equal(h->udp_calls, 1);
    assert_int_equal(h->last_len, 3);
    assert_memory_equal(h->last_payload, "xyz", 3);
    assert_int_equal(h->last_meta.src_port, 5000);
    assert_int_equal(h->last_meta.src_ip, PEER_IP);
    assert_int_equal(h->last_meta.ttl, 64);
    /* TTL 0 or 1 is not a reason to drop at a host (RFC 1122 3.2.1.7). */
    f[22] = 0;
    fix_ip_csum(f);
    input(h, 0, f, 60);
    assert_int_equal(h->udp_calls, 2);
}

/* ======================================================================================== */
/* ICMP */

static void check_echo_reply(struct harness *h, const struct txrec *t, uint16_t id, uint16_t seq, const uint8_t *data,
                             size_t len)
{
    (void)h;
    struct ip_view v = check_ip(t);
    assert_memory_equal(v.eth, PEER_MAC, 6);
    assert_int_equal(v.proto, 1);
    assert_int_equal(v.src, OUR_IP);
    assert_int_equal(v.dst, PEER_IP);
    assert_int_equal(v.l4len, 8 + len);
    const uint8_t *c = v.l4;
    assert_int_equal(c[0], 0);
    assert_int_equal(c[1], 0);
    assert_int_equal(get16(c + 4), id);
    assert_int_equal(get16(c + 6), seq);
    assert_memory_equal(c + 8, data, len);
    assert_int_equal(ref_fold(ref_sum(c, v.l4len, 0)), 0xFFFF);
    /* The checksum independently: over the message with the field zeroed. */
    uint8_t *copy = malloc(v.l4len);
    memcpy(copy, c, v.l4len);
    put16(copy + 2, 0);
    assert_int_equal(get16(c + 2), ref_csum(copy, v.l4len));
    free(copy);
}

static void test_icmp_echo_reply(void **state)
{
    struct harness *h = *state;
    configure(h);
    uint8_t data[1472];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 7 + 3);
    size_t lens[] = { 0, 1, 7, 56, 57, 1000, 1472 };
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        uint8_t f[1600];
        size_t n = build_echo(f, PEER_IP, OUR_IP, 0xBEEF, (uint16_t)k, data, lens[k], 0);
        tx_clear(h);
        h->locks = 0;
        input(h, 3, f, n);
        assert_int_equal(h->locks, 0); /* the per-packet path takes no lock */
        assert_int_equal(h->ntx, 1);
        assert_int_equal(h->tx[0].queue, 3);
        check_echo_reply(h, &h->tx[0], 0xBEEF, (uint16_t)k, data, lens[k]);
        /* Byte-exact: the same frame as a reference built here. */
        uint8_t want[1600];
        size_t wn = put_eth(want, PEER_MAC, OUR_MAC, 0x0800);
        const uint8_t *got_ip = h->tx[0].data + 14;
        wn += put_ip(want + wn, 1, OUR_IP, PEER_IP, 8 + lens[k], 0);
        put16(want + 14 + 4, get16(got_ip + 4)); /* the identification is the stack's choice */
        put16(want + 14 + 6, 0x4000);
        fix_ip_csum(want);
        uint8_t *c = want + wn;
        c[0] = 0;
        c[1] = 0;
        put16(c + 2, 0);
        put16(c + 4, 0xBEEF);
        put16(c + 6, (uint16_t)k);
        memcpy(c + 8, data, lens[k]);
        put16(c + 2, ref_csum(c, 8 + lens[k]));
        wn += 8 + lens[k];
        assert_memory_equal(h->tx[0].data, want, wn);
    }
    assert_int_equal(stats(h).icmp_echo, sizeof lens / sizeof lens[0]);
    /* With IP options in the request: the reply has none. */
    uint8_t f[200];
    size_t n = build_echo(f, PEER_IP, OUR_IP, 1, 2, data, 10, 8);
    tx_clear(h);
    input(h, 0, f, n);
    assert_int_equal(h->ntx, 1);
    check_echo_reply(h, &h->tx[0], 1, 2, data, 10);
}

static void test_icmp_other_and_bad(void **state)
{
    struct harness *h = *state;
    configure(h);
    uint8_t f[200], g[200];
    size_t n = build_echo(f, PEER_IP, OUR_IP, 1, 1, "abcdefgh", 8, 0);
    /* Echo reply, destination unreachable: counted, not answered. */
    memcpy(g, f, n);
    g[34] = 0;
    put16(g + 36, 0);
    put16(g + 36, ref_csum(g + 34, n - 34));
    input(h, 0, g, n);
    g[34] = 3;
    put16(g + 36, 0);
    put16(g + 36, ref_csum(g + 34, n - 34));
    input(h, 0, g, n);
    assert_int_equal(stats(h).icmp_other, 2);
    /* Echo with code 1: not an echo request. */
    memcpy(g, f, n);
    g[35] = 1;
    put16(g + 36, 0);
    put16(g + 36, ref_csum(g + 34, n - 34));
    input(h, 0, g, n);
    assert_int_equal(stats(h).icmp_other, 3);
    /* Bad checksum, and too short. */
    memcpy(g, f, n);
    g[n - 1] ^= 1;
    input(h, 0, g, n);
    assert_int_equal(stats(h).bad_icmp, 1);
    size_t o = put_eth(g, OUR_MAC, PEER_MAC, 0x0800);
    o += put_ip(g + o, 1, PEER_IP, OUR_IP, 4, 0);
    memset(g + o, 0, 4);
    put16(g + o, 0x0800);
    put16(g + o + 2, ref_csum(g + o, 4));
    input(h, 0, g, o + 4);
    assert_int_equal(stats(h).bad_icmp, 2);
    /* To a broadcast address: not answered. */
    memcpy(g, f, n);
    memset(g, 0xFF, 6);
    put32(g + 30, 0xFFFFFFFFu);
    fix_ip_csum(g);
    input(h, 0, g, n);
    assert_int_equal(stats(h).icmp_broadcast, 1);
    assert_int_equal(h->ntx, 0);
    assert_int_equal(stats(h).icmp_echo, 0);
}

/* ======================================================================================== */
/* UDP */

static void test_udp_echo_byte_exact(void **state)
{
    struct harness *h = *state;
    configure(h);
    bind_recorder(h, 7);
    h->echo = true;
    uint8_t data[1472];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(0xA5 ^ i);
    size_t lens[] = { 0, 1, 2, 3, 17, 64, 65, 1400, 1472 };
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        uint8_t f[1600];
        struct udp_spec s = { OUR_MAC, GW_MAC, FAR_IP, OUR_IP, 40000 + (uint16_t)k, 7, false };
        size_t n = build_udp(f, &s, data, lens[k]);
        tx_clear(h);
        h->locks = 0;
        input(h, 1, f, n);
        assert_int_equal(h->locks, 0);
        assert_int_equal(h->echo_status, STATUS_OK);
        assert_int_equal(h->last_queue, 1);
        assert_int_equal(h->ntx, 1);
        assert_int_equal(h->tx[0].queue, 1);
        struct udp_view u = check_udp(&h->tx[0]); /* checksums verified with the reference sum */
        assert_memory_equal(u.ip.eth, GW_MAC, 6); /* to the frame's source: the router, no ARP */
        assert_int_equal(u.ip.src, OUR_IP);
        assert_int_equal(u.ip.dst, FAR_IP);
        assert_int_equal(u.sport, 7);
        assert_int_equal(u.dport, 40000 + k);
        assert_int_equal(u.len, lens[k]);
        assert_memory_equal(u.payload, data, lens[k]);
        /* Byte-exact against a frame built here (IP id is the stack's). */
        uint8_t want[1600];
        struct udp_spec r = { GW_MAC, OUR_MAC, OUR_IP, FAR_IP, 7, 40000 + (uint16_t)k, false };
        size_t wn = build_udp(want, &r, data, lens[k]);
        put16(want + 18, get16(h->tx[0].data + 18));
        put16(want + 20, 0x4000);
        fix_ip_csum(want);
        assert_memory_equal(h->tx[0].data, want, wn);
    }
    struct net_stats st = stats(h);
    assert_int_equal(st.udp_in, sizeof lens / sizeof lens[0]);
    assert_int_equal(st.udp_out, sizeof lens / sizeof lens[0]);
}

/* The hooks' contexts and the clock: tx_ctx goes to tx_begin/tx_end (a NIC's own functions
 * plugged in directly), ctx to the others; net_input with NET_NOW reads ops->clock, and the UDP
 * handler sees the time its frame came in (meta.rx_ns) either way. */
struct ctl_ctx {
    unsigned locks, logs;
};

static uint64_t fixed_now;
static uint64_t fixed_clock(void) { return fixed_now; }
static void c_lock(void *ctx) { ((struct ctl_ctx *)ctx)->locks++; }
static void c_unlock(void *ctx) { (void)ctx; }
static void c_log(void *ctx, const char *line)
{
    (void)line;
    ((struct ctl_ctx *)ctx)->logs++;
}

static void test_tx_ctx_and_clock(void **state)
{
    (void)state;
    struct harness *h = harness_new(2);
    struct ctl_ctx c = { 0 };
    struct net_ops ops = { .ctx = &c, .tx_ctx = h, .tx_begin = h_tx_begin, .tx_end = h_tx_end, .lock = c_lock,
                           .unlock = c_unlock, .log = c_log, .clock = fixed_clock };
    assert_int_equal(net_if_init(&h->nif, OUR_MAC, 1500, 2, &ops), STATUS_OK);
    assert_int_equal(net_set_static(&h->nif, OUR_IP, MASK24, GW_IP, h->now), STATUS_OK);
    assert_true(c.locks >= 1);   /* the control hooks got ctx */
    assert_true(h->ntx >= 1);    /* the announcement went through tx_ctx (h_tx_begin asserts its ctx) */
    assert_true(c.logs >= 1);
    tx_clear(h);
    bind_recorder(h, 7);
    h->echo = true;
    uint8_t f[200], data[32] = { 1, 2, 3 };
    struct udp_spec sp = { OUR_MAC, GW_MAC, FAR_IP, OUR_IP, 40000, 7, false };
    size_t n = build_udp(f, &sp, data, sizeof data);
    fixed_now = 123456789;
    net_input(&h->nif, 1, f, (uint32_t)n, NET_NOW);
    assert_int_equal(h->udp_calls, 1);
    assert_int_equal(h->last_meta.rx_ns, 123456789);
    assert_int_equal(h->ntx, 1); /* the echo, through tx_ctx */
    net_input(&h->nif, 1, f, (uint32_t)n, 42);
    assert_int_equal(h->last_meta.rx_ns, 42);
    /* without a clock NET_NOW reads as 0 */
    ops.clock = NULL;
    struct harness *g = harness_new(1);
    ops.tx_ctx = g;
    assert_int_equal(net_if_init(&g->nif, OUR_MAC, 1500, 1, &ops), STATUS_OK);
    assert_int_equal(net_set_static(&g->nif, OUR_IP, MASK24, GW_IP, 5), STATUS_OK);
    tx_clear(g);
    bind_recorder(g, 7);
    net_input(&g->nif, 0, f, (uint32_t)n, NET_NOW);
    assert_int_equal(g->udp_calls, 1);
    assert_int_equal(g->last_meta.rx_ns, 0);
    harness_free(h);
    harness_free(g);
}

static void test_udp_checksum_rules(void **state)
{
    struct harness *h = *state;
    configure(h);
    bind_recorder(h, 7);
    uint8_t f[200];
    /* 0 = no checksum: accepted. */
    struct udp_spec s = { OUR_MAC, PEER_MAC, PEER_IP, OUR_IP, 5000, 7, true };
    size_t n = build_udp(f, &s, "nocsum", 6);
    assert_int_equal(get16(f + 40), 0);
    input(h, 0, f, n);
    assert_int_equal(h->udp_calls, 1);
    /* Bad checksum: dropped. */
    s.no_csum = false;
    n = build_udp(f, &s, "bad", 3);
    f[n - 1] ^= 0x10;
    input(h, 0, f, n);
    assert_int_equal(stats(h).bad_udp_checksum, 1);
    assert_int_equal(h->udp_calls, 1);
    /* A payload whose checksum computes to 0 is received with 0xFFFF and accepted... */
    uint8_t pl[4] = { 0, 0, 0, 0 };
    uint16_t partial = ref_fold(ref_sum(pl, 0, 0) + ref_pseudo(PEER_IP, OUR_IP, 17, 12) + 5000 + 7 + 12);
    put16(pl, (uint16_t)(0xFFFF - partial)); /* makes the sum 0xFFFF, the checksum 0 */
    n = build_udp(f, &s, pl, 4);
    assert_int_equal(get16(f + 40), 0xFFFF);
    input(h, 0, f, n);
    assert_int_equal(h->udp_calls, 2);
    /* ...and the stack sends such a checksum as 0xFFFF too. */
    h->echo = true;
    tx_clear(h);
    uint8_t pl2[4];
    uint16_t p2 = ref_fold(ref_pseudo(OUR_IP, PEER_IP, 17, 12) + 7 + 5000 + 12);
    put16(pl2, (uint16_t)(0xFFFF - p2));
    put16(pl2 + 2, 0);
    n = build_udp(f, &s, pl2, 4);
    input(h, 0, f, n);
    assert_int_equal(h->ntx, 1);
    struct udp_view u = check_udp(&h->tx[0]);
    assert_int_equal(get16(u.ip.l4 + 6), 0xFFFF);
}

static void test_udp_length_rules(void **state)
{
    struct harness *h = *state;
    configure(h);
    bind_recorder(h, 7);
    uint8_t f[200], g[200];
    struct udp_spec s = { OUR_MAC, PEER_MAC, PEER_IP, OUR_IP, 5000, 7, true };
    size_t n = build_udp(f, &s, "0123456789", 10);
    /* UDP length < 8 */
    memcpy(g, f, n);
    put16(g + 38, 7);
    input(h, 0, g, n);
    assert_int_equal(stats(h).bad_udp_length, 1);
    /* UDP length > IP payload */
    memcpy(g, f, n);
    put16(g + 38, 19);
    input(h, 0, g, n);
    assert_int_equal(stats(h).bad_udp_length, 2);
    /* IP payload < 8 */
    size_t o = put_eth(g, OUR_MAC, PEER_MAC, 0x0800);
    o += put_ip(g + o, 17, PEER_IP, OUR_IP, 6, 0);
    memset(g + o, 0, 6);
    input(h, 0, g, o + 6);
    assert_int_equal(stats(h).bad_udp_length, 3);
    assert_int_equal(h->udp_calls, 0);
    /* UDP length < IP payload: the datagram is the UDP length. */
    memcpy(g, f, n);
    put16(g + 38, 12);
    input(h, 0, g, n);
    assert_int_equal(h->udp_calls, 1);
    assert_int_equal(h->last_len, 4);
    assert_memory_equal(h->last_payload, "0123", 4);
    /* Unbound port. */
    n = build_udp(f, &(struct udp_spec){ OUR_MAC, PEER_MAC, PEER_IP, OUR_IP, 5000, 9999, false }, "x", 1);
    input(h, 0, f, n);
    assert_int_equal(stats(h).no_port, 1);
    assert_int_equal(h->ntx, 0);
}

static void test_udp_bind_rules(void **state)
{
    struct harness *h = *state;
    configure(h);
    assert_int_equal(net_udp_bind(&h->nif, 0, h_udp, h), STATUS_INVALID_PARAMETER);
    assert_int_equal(net_udp_bind(&h->nif, 7, NULL, h), STATUS_INVALID_PARAMETER);
    for (unsigned i = 0; i < NET_UDP_BINDINGS; i++)
        assert_int_equal(net_udp_bind(&h->nif, (uint16_t)(100 + i), h_udp, h), STATUS_OK);
    assert_int_equal(net_udp_bind(&h->nif, 100, h_udp, h), STATUS_EXISTS);
    assert_int_equal(net_udp_bind(&h->nif, 99, h_udp, h), STATUS_NO_SPACE);
    assert_int_equal(net_udp_unbind(&h->nif, 99), STATUS_NOT_FOUND);
    assert_int_equal(net_udp_unbind(&h->nif, 105), STATUS_OK);
    assert_int_equal(net_udp_bind(&h->nif, 99, h_udp, h), STATUS_OK);
    uint8_t f[200];
    size_t n = good_udp(f, 105);
    input(h, 0, f, n);
    assert_int_equal(stats(h).no_port, 1);
    n = good_udp(f, 99);
    input(h, 0, f, n);
    n = good_udp(f, 115);
    input(h, 0, f, n);
    assert_int_equal(h->udp_calls, 2);
    assert_int_equal(h->last_meta.dst_port, 115);
}

static void test_udp_reply_errors(void **state)
{
    struct harness *h = *state;
    struct net_udp_meta m = { .src_port = 5000, .dst_port = 7, .src_ip = PEER_IP, .dst_ip = OUR_IP };
    memcpy(m.src_mac, PEER_MAC, 6);
    static uint8_t big[1500];
    assert_int_equal(net_udp_reply(&h->nif, 0, &m, "x", 1), STATUS_INVALID_STATE); /* no address */
    configure(h);
    struct net_stats st0 = stats(h);
    assert_int_equal(net_udp_reply(&h->nif, 0, &m, big, 1473), STATUS_INVALID_PARAMETER);
    assert_int_equal(net_udp_reply(&h->nif, 4, &m, "x", 1), STATUS_INVALID_PARAMETER);
    assert_int_equal(net_udp_reply(&h->nif, 0, &m, big, 1472), STATUS_OK);
    h->fail_begin = true;
    assert_int_equal(net_udp_reply(&h->nif, 0, &m, "x", 1), STATUS_NO_SPACE);
    assert_int_equal(stats(h).tx_no_buffer, 1);
    h->fail_begin = false;
    h->end_status = STATUS_DEVICE_ERROR;
    assert_int_equal(net_udp_reply(&h->nif, 0, &m, "x", 1), STATUS_DEVICE_ERROR);
    assert_int_equal(stats(h).tx_errors, 1);
    h->end_status = STATUS_OK;
    struct net_stats st = stats(h);
    assert_int_equal(st.tx_frames - st0.tx_frames, 1);
    assert_int_equal(st.udp_out - st0.udp_out, 1);
    assert_int_equal(st.tx_bytes - st0.tx_bytes, 1514);
    /* A frame below 60 bytes is padded. */
    tx_clear(h);
    assert_int_equal(net_udp_reply(&h->nif, 0, &m, "x", 1), STATUS_OK);
    assert_int_equal(h->tx[0].len, 60);
    check_udp(&h->tx[0]);
}

static void test_udp_send_routing(void **state)
{
    struct harness *h = *state;
    assert_int_equal(net_udp_send(&h->nif, 0, PEER_IP, 9, 1, "x", 1), STATUS_INVALID_STATE);
    configure(h);
    assert_int_equal(net_udp_send(&h->nif, 0, IP(224, 0, 0, 251), 9, 1, "x", 1), STATUS_NOT_SUPPORTED);
    assert_int_equal(net_udp_send(&h->nif, 0, 0, 9, 1, "x", 1), STATUS_INVALID_PARAMETER);
    assert_int_equal(net_udp_send(&h->nif, 0, PEER_IP, 0, 1, "x", 1), STATUS_INVALID_PARAMETER);
    assert_int_equal(net_udp_send(&h->nif, 9, PEER_IP, 9, 1, "x", 1), STATUS_INVALID_PARAMETER);
    static uint8_t big[1500];
    assert_int_equal(net_udp_send(&h->nif, 0, PEER_IP, 9, 1, big, 1473), STATUS_INVALID_PARAMETER);
    /* Off-link: through the gateway. */
    assert_int_equal(net_udp_send(&h->nif, 0, FAR_IP, 9, 1, "x", 1), STATUS_RETRY);
    assert_int_equal(h->ntx, 1);
    assert_int_equal(check_arp(&h->tx[0]).tpa, GW_IP);
    learn(h, GW_MAC, GW_IP);
    tx_clear(h);
    assert_int_equal(net_udp_send(&h->nif, 0, FAR_IP, 9, 1, "far", 3), STATUS_OK);
    struct udp_view u = check_udp(&h->tx[0]);
    assert_memory_equal(u.ip.eth, GW_MAC, 6);
    assert_int_equal(u.ip.dst, FAR_IP);
    /* Broadcasts: limited and subnet, to the Ethernet broadcast address, no ARP. */
    tx_clear(h);
    assert_int_equal(net_udp_send(&h->nif, 2, 0xFFFFFFFFu, 9, 1, "b", 1), STATUS_OK);
    assert_int_equal(net_udp_send(&h->nif, 2, IP(10, 0, 2, 255), 9, 1, "b", 1), STATUS_OK);
    assert_int_equal(h->ntx, 2);
    for (int i = 0; i < 2; i++) {
        u = check_udp(&h->tx[i]);
        assert_memory_equal(u.ip.eth, BCAST, 6);
        assert_int_equal(h->tx[i].queue, 2);
    }
    /* Without a gateway, off-link is unreachable. */
    assert_int_equal(net_set_static(&h->nif, OUR_IP, MASK24, 0, h->now), STATUS_OK);
    assert_int_equal(net_udp_send(&h->nif, 0, FAR_IP, 9, 1, "x", 1), STATUS_NOT_FOUND);
    /* /32: everything off-link, via the gateway... which must then be on-link: refused. */
    assert_int_equal(net_set_static(&h->nif, OUR_IP, 0xFFFFFFFFu, GW_IP, h->now), STATUS_INVALID_PARAMETER);
}

/* ======================================================================================== */
/* static configuration, link, queues */

static void test_static_config(void **state)
{
    struct harness *h = *state;
    assert_false(net_configured(&h->nif));
    assert_int_equal(net_set_static(&h->nif, OUR_IP, 0xFFFF00FFu, GW_IP, h->now), STATUS_INVALID_PARAMETER);
    assert_int_equal(net_set_static(&h->nif, OUR_IP, MASK24, IP(10, 0, 3, 1), h->now), STATUS_INVALID_PARAMETER);
    assert_int_equal(net_set_static(&h->nif, OUR_IP, MASK24, OUR_IP, h->now), STATUS_INVALID_PARAMETER);
    assert_int_equal(net_set_static(&h->nif, IP(10, 0, 2, 0), MASK24, 0, h->now), STATUS_INVALID_PARAMETER);
    assert_int_equal(net_set_static(&h->nif, IP(10, 0, 2, 255), MASK24, 0, h->now), STATUS_INVALID_PARAMETER);
    assert_int_equal(net_set_static(&h->nif, IP(127, 0, 0, 1), 0xFF000000u, 0, h->now), STATUS_INVALID_PARAMETER);
    assert_int_equal(net_set_static(&h->nif, IP(224, 0, 0, 1), 0xF0000000u, 0, h->now), STATUS_INVALID_PARAMETER);
    assert_int_equal(net_set_static(&h->nif, OUR_IP, 0, 0, h->now), STATUS_INVALID_PARAMETER);
    assert_int_equal(net_set_static(&h->nif, 0, MASK24, 0, h->now), STATUS_INVALID_PARAMETER);
    assert_int_equal(h->ntx, 0);
    assert_int_equal(net_set_static(&h->nif, OUR_IP, MASK24, GW_IP, h->now), STATUS_OK);
    assert_true(net_configured(&h->nif));
    assert_int_equal(net_ip(&h->nif), OUR_IP);
    struct net_config c;
    net_get_config(&h->nif, h->now, &c);
    assert_int_equal(c.ip, OUR_IP);
    assert_int_equal(c.mask, MASK24);
    assert_int_equal(c.gw, GW_IP);
    assert_int_equal(c.dhcp, NET_DHCP_OFF);
    assert_int_equal(c.lease_s, 0);
    assert_true(c.link_up);
    /* /31 (RFC 3021): both addresses usable, no subnet broadcast. */
    assert_int_equal(net_set_static(&h->nif, IP(10, 9, 9, 1), 0xFFFFFFFEu, IP(10, 9, 9, 0), h->now), STATUS_OK);
    bind_recorder(h, 7);
    uint8_t f[200];
    struct udp_spec s = { OUR_MAC, PEER_MAC, IP(10, 9, 9, 0), IP(10, 9, 9, 1), 5000, 7, false };
    size_t n = build_udp(f, &s, "a", 1);
    input(h, 0, f, n);
    assert_int_equal(h->udp_calls, 1);
    assert_false(h->last_meta.broadcast);
    /* Remove. */
    assert_int_equal(net_set_static(&h->nif, 0, 0, 0, h->now), STATUS_OK);
    assert_false(net_configured(&h->nif));
    input(h, 0, f, n);
    assert_int_equal(h->udp_calls, 1);
    assert_int_equal(stats(h).ip_not_for_us, 1);
}

static void test_link_down_up_static(void **state)
{
    struct harness *h = *state;
    configure(h);
    learn(h, PEER_MAC, PEER_IP);
    net_link_changed(&h->nif, false, h->now);
    assert_int_equal(reports_matching(&h->logs, "link down"), 1);
    assert_int_equal(net_udp_send(&h->nif, 0, FAR_IP, 9, 1, "x", 1), STATUS_RETRY);
    tick_to(h, h->now + 5 * S_NS);
    assert_int_equal(h->ntx, 0); /* nothing from the timers while down */
    net_get_config(&h->nif, h->now, &(struct net_config){ 0 });
    net_link_changed(&h->nif, true, h->now);
    assert_int_equal(reports_matching(&h->logs, "link up"), 1);
    assert_int_equal(h->ntx, 1); /* announced again */
    struct arp_view v = check_arp(&h->tx[0]);
    assert_int_equal(v.spa, OUR_IP);
    assert_int_equal(v.tpa, OUR_IP);
    tick_to(h, h->now + 3 * S_NS);
    assert_int_equal(stats(h).arp_announce_out, 4);
    /* The cache was flushed: the peer must be resolved again. */
    tx_clear(h);
    assert_int_equal(net_udp_send(&h->nif, 0, PEER_IP, 9, 1, "x", 1), STATUS_RETRY);
}

static void test_queue_counters_summed(void **state)
{
    struct harness *h = *state;
    configure(h);
    bind_recorder(h, 7);
    uint8_t f[200];
    size_t n = good_udp(f, 7);
    for (uint32_t q = 0; q < 4; q++)
        for (uint32_t i = 0; i <= q; i++)
            input(h, q, f, n);
    input(h, 7, f, n); /* out of range: ignored */
    struct net_stats st = stats(h);
    assert_int_equal(st.udp_in, 10);
    assert_int_equal(st.rx_frames, 10);
    assert_int_equal(st.rx_bytes, 10 * n);
    for (uint32_t q = 0; q < 4; q++)
        assert_int_equal(h->nif.q[q].c[NET_STAT_udp_in], q + 1);
    assert_int_equal(st.bad_queue, 1);
}

/* ======================================================================================== */
/* DHCP: a fake server */

struct dhcp_view {
    struct udp_view u;
    uint8_t op, type;
    uint32_t xid, ciaddr, yiaddr;
    uint16_t secs, flags;
    bool has50, has54, has61, has55;
    uint32_t req_ip, server;
    uint8_t cid[16];
    uint8_t cid_len;
    uint8_t params[32];
    uint8_t nparams;
};

static struct dhcp_view parse_client(const struct txrec *t)
{
    struct dhcp_view d;
    memset(&d, 0, sizeof d);
    d.u = check_udp(t);
    assert_int_equal(d.u.sport, 68);
    assert_int_equal(d.u.dport, 67);
    const uint8_t *m = d.u.payload;
    assert_true(d.u.len >= 300); /* RFC 1542 minimum */
    d.op = m[0];
    assert_int_equal(d.op, 1);
    assert_int_equal(m[1], 1);
    assert_int_equal(m[2], 6);
    d.xid = get32(m + 4);
    d.secs = get16(m + 8);
    d.flags = get16(m + 10);
    d.ciaddr = get32(m + 12);
    d.yiaddr = get32(m + 16);
    assert_memory_equal(m + 28, OUR_MAC, 6);
    assert_int_equal(get32(m + 236), 0x63825363);
    size_t i = 240;
    bool end = false;
    while (i < d.u.len && !end) {
        uint8_t code = m[i];
        if (code == 0) {
            i++;
            continue;
        }
        if (code == 255) {
            end = true;
            break;
        }
        uint8_t len = m[i + 1];
        const uint8_t *v = m + i + 2;
        assert_true(i + 2 + len <= d.u.len);
        switch (code) {
        case 53:
            assert_int_equal(len, 1);
            d.type = v[0];
            break;
        case 50:
            assert_int_equal(len, 4);
            d.has50 = true;
            d.req_ip = get32(v);
            break;
        case 54:
            assert_int_equal(len, 4);
            d.has54 = true;
            d.server = get32(v);
            break;
        case 61:
            d.has61 = true;
            d.cid_len = len;
            memcpy(d.cid, v, len);
            break;
        case 55:
            d.has55 = true;
            d.nparams = len;
            memcpy(d.params, v, len);
            break;
        }
        i += 2 + len;
    }
    assert_true(end);
    return d;
}

struct srv_opts {
    uint8_t type;
    uint32_t server;   /* 0: omit 54 */
    uint32_t mask;     /* 0: omit 1 */
    uint32_t router;   /* 0: omit 3 */
    uint32_t lease;    /* 0: omit 51 */
    uint32_t t1, t2;   /* 0: omit */
};

static size_t put_opt4(uint8_t *o, uint8_t code, uint32_t v)
{
    o[0] = code;
    o[1] = 4;
    put32(o + 2, v);
    return 6;
}

/* A server reply: frame to eth_dst/ip_dst from the server, BOOTP with xid, yiaddr, our chaddr, and
 * the options (raw `extra` bytes replace the standard ones when given). */
static size_t build_dhcp(uint8_t *f, const uint8_t eth_dst[6], uint32_t ip_dst, uint32_t xid, uint32_t yiaddr,
                         const struct srv_opts *so, const uint8_t *extra, size_t extra_len)
{
    uint8_t m[600];
    memset(m, 0, sizeof m);
    m[0] = 2;
    m[1] = 1;
    m[2] = 6;
    put32(m + 4, xid);
    put32(m + 16, yiaddr);
    put32(m + 20, SRV_IP);
    memcpy(m + 28, OUR_MAC, 6);
    put32(m + 236, 0x63825363);
    size_t o = 240;
    if (extra) {
        memcpy(m + o, extra, extra_len);
        o += extra_len;
    } else {
        m[o++] = 53;
        m[o++] = 1;
        m[o++] = so->type;
        if (so->server)
            o += put_opt4(m + o, 54, so->server);
        if (so->mask)
            o += put_opt4(m + o, 1, so->mask);
        if (so->router)
            o += put_opt4(m + o, 3, so->router);
        if (so->lease)
            o += put_opt4(m + o, 51, so->lease);
        if (so->t1)
            o += put_opt4(m + o, 58, so->t1);
        if (so->t2)
            o += put_opt4(m + o, 59, so->t2);
        m[o++] = 255;
    }
    struct udp_spec s = { eth_dst, SRV_MAC, SRV_IP, ip_dst, 67, 68, false };
    return build_udp(f, &s, m, o);
}

static struct srv_opts offer_opts(void)
{
    return (struct srv_opts){ .type = 2, .server = SRV_IP, .mask = MASK24, .router = GW_IP, .lease = 86400 };
}
static struct srv_opts ack_opts(uint32_t lease)
{
    return (struct srv_opts){ .type = 5, .server = SRV_IP, .mask = MASK24, .router = GW_IP, .lease = lease };
}

/* The last frame sent, as a DHCP message (asserts it is one). */
static struct dhcp_view last_dhcp(struct harness *h)
{
    assert_true(h->ntx > 0);
    for (unsigned i = h->ntx; i-- > 0;)
        if (!is_arp(&h->tx[i]))
            return parse_client(&h->tx[i]);
    fail_msg("no DHCP frame sent");
    return (struct dhcp_view){ 0 };
}

static unsigned count_dhcp(struct harness *h)
{
    unsigned n = 0;
    for (unsigned i = 0; i < h->ntx; i++)
        n += !is_arp(&h->tx[i]);
    return n;
}

/* Runs DISCOVER -> OFFER -> REQUEST -> ACK with the given lease; returns the REQUEST's xid. */
static uint32_t dhcp_bind(struct harness *h, uint32_t lease)
{
    assert_int_equal(net_dhcp_start(&h->nif, h->now), STATUS_OK);
    struct dhcp_view d = last_dhcp(h);
    assert_int_equal(d.type, 1);
    uint8_t f[700];
    struct srv_opts o = offer_opts();
    o.lease = lease;
    size_t n = build_dhcp(f, OUR_MAC, OUR_IP, d.xid, OUR_IP, &o, NULL, 0);
    tx_clear(h);
    input(h, 0, f, n);
    d = last_dhcp(h);
    assert_int_equal(d.type, 3);
    struct srv_opts a = ack_opts(lease);
    n = build_dhcp(f, OUR_MAC, OUR_IP, d.xid, OUR_IP, &a, NULL, 0);
    tx_clear(h);
    input(h, 0, f, n);
    assert_true(net_configured(&h->nif));
    tx_clear(h);
    return d.xid;
}

static void test_dhcp_full_exchange(void **state)
{
    struct harness *h = *state;
    bind_recorder(h, 7);
    assert_int_equal(net_dhcp_start(&h->nif, h->now), STATUS_OK);
    assert_int_equal(net_dhcp_start(&h->nif, h->now), STATUS_INVALID_STATE);
    assert_int_equal(h->ntx, 1);
    /* DISCOVER */
    assert_int_equal(h->tx[0].queue, 0);
    struct dhcp_view d = parse_client(&h->tx[0]);
    assert_memory_equal(d.u.ip.eth, BCAST, 6);
    assert_int_equal(d.u.ip.src, 0);
    assert_int_equal(d.u.ip.dst, 0xFFFFFFFFu);
    assert_int_equal(d.type, 1);
    assert_int_equal(d.ciaddr, 0);
    assert_false(d.has50);
    assert_false(d.has54);
    assert_true(d.has61);
    assert_int_equal(d.cid_len, 7);
    assert_int_equal(d.cid[0], 1);
    assert_memory_equal(d.cid + 1, OUR_MAC, 6);
    assert_true(d.has55);
    bool want[256] = { false };
    for (unsigned i = 0; i < d.nparams; i++)
        want[d.params[i]] = true;
    assert_true(want[1] && want[3] && want[51] && want[54] && want[58] && want[59]);
    uint32_t xid = d.xid;
    struct net_config c;
    net_get_config(&h->nif, h->now, &c);
    assert_int_equal(c.dhcp, NET_DHCP_SELECTING);

    /* OFFER (unicast to the offered address, as many servers do): REQUEST, same xid, 50 and 54. */
    uint8_t f[700];
    struct srv_opts o = offer_opts();
    size_t n = build_dhcp(f, OUR_MAC, OUR_IP, xid, OUR_IP, &o, NULL, 0);
    tx_clear(h);
    h->now += 300 * MS_NS;
    input(h, 2, f, n);
    assert_int_equal(h->ntx, 1);
    assert_int_equal(h->tx[0].queue, 2); /* answers go out on the queue of the offer */
    d = parse_client(&h->tx[0]);
    assert_memory_equal(d.u.ip.eth, BCAST, 6);
    assert_int_equal(d.u.ip.src, 0);
    assert_int_equal(d.u.ip.dst, 0xFFFFFFFFu);
    assert_int_equal(d.type, 3);
    assert_int_equal(d.xid, xid);
    assert_int_equal(d.ciaddr, 0);
    assert_true(d.has50);
    assert_int_equal(d.req_ip, OUR_IP);
    assert_true(d.has54);
    assert_int_equal(d.server, SRV_IP);
    assert_false(net_configured(&h->nif));
    net_get_config(&h->nif, h->now, &c);
    assert_int_equal(c.dhcp, NET_DHCP_REQUESTING);

    /* A second OFFER is ignored now. */
    input(h, 0, f, n);
    assert_int_equal(h->ntx, 1);
    assert_int_equal(stats(h).dhcp_ignored, 1);

    /* UDP to us, or broadcast, before the ACK: not delivered (no address yet); nor echo requests. */
    uint8_t g[200];
    size_t gn = good_udp(g, 7);
    input(h, 0, g, gn);
    assert_int_equal(h->udp_calls, 0);
    uint8_t b[200];
    size_t bn = build_udp(b, &(struct udp_spec){ BCAST, PEER_MAC, PEER_IP, 0xFFFFFFFFu, 5000, 7, false }, "b", 1);
    input(h, 0, b, bn);
    assert_int_equal(h->udp_calls, 0);
    bn = build_echo(b, PEER_IP, 0xFFFFFFFFu, 1, 1, "e", 1, 0);
    memset(b, 0xFF, 6);
    input(h, 0, b, bn);
    assert_int_equal(stats(h).icmp_broadcast, 0);
    assert_int_equal(stats(h).ip_not_for_us, 3);

    /* ACK (broadcast): configured, announced, logged. */
    struct srv_opts a = ack_opts(86400);
    n = build_dhcp(f, BCAST, 0xFFFFFFFFu, xid, OUR_IP, &a, NULL, 0);
    tx_clear(h);
    input(h, 0, f, n);
    assert_true(net_configured(&h->nif));
    net_get_config(&h->nif, h->now, &c);
    assert_int_equal(c.ip, OUR_IP);
    assert_int_equal(c.mask, MASK24);
    assert_int_equal(c.gw, GW_IP);
    assert_int_equal(c.dhcp, NET_DHCP_BOUND);
    assert_int_equal(c.dhcp_server, SRV_IP);
    assert_int_equal(c.lease_s, 86400);
    assert_int_equal(c.lease_left_ns, 86400 * S_NS);
    assert_int_equal(c.t1_left_ns, 43200 * S_NS);
    assert_int_equal(c.t2_left_ns, 75600 * S_NS);
    assert_int_equal(h->ntx, 1);
    struct arp_view v = check_arp(&h->tx[0]);
    assert_int_equal(v.spa, OUR_IP);
    assert_int_equal(v.tpa, OUR_IP);
    if (reports_matching(&h->logs, "dhcp: bound 10.0.2.15/24 gw 10.0.2.2 lease 86400 s") != 1)
        reports_dump(&h->logs);
    assert_int_equal(reports_matching(&h->logs, "dhcp: bound 10.0.2.15/24 gw 10.0.2.2 lease 86400 s"), 1);
    assert_int_equal(stats(h).dhcp_in, 2);
    assert_int_equal(stats(h).dhcp_out, 2);
    input(h, 0, g, gn);
    assert_int_equal(h->udp_calls, 1);
    /* A late duplicate ACK changes nothing. */
    input(h, 0, f, n);
    assert_int_equal(stats(h).dhcp_ignored, 2);
    /* Without DHCP running, port 68 is an ordinary (unbound) port. */
    net_dhcp_stop(&h->nif);
    assert_false(net_configured(&h->nif));
}

static void test_dhcp_nak_restarts(void **state)
{
    struct harness *h = *state;
    assert_int_equal(net_dhcp_start(&h->nif, h->now), STATUS_OK);
    uint32_t xid = last_dhcp(h).xid;
    uint8_t f[700];
    struct srv_opts o = offer_opts();
    size_t n = build_dhcp(f, BCAST, 0xFFFFFFFFu, xid, OUR_IP, &o, NULL, 0);
    input(h, 0, f, n);
    assert_int_equal(last_dhcp(h).type, 3);
    /* A NAK from another server (its id differs) is ignored in REQUESTING. */
    struct srv_opts k = { .type = 6, .server = IP(10, 0, 2, 9) };
    n = build_dhcp(f, BCAST, 0xFFFFFFFFu, xid, 0, &k, NULL, 0);
    tx_clear(h);
    input(h, 0, f, n);
    assert_int_equal(h->ntx, 0);
    k.server = SRV_IP;
    n = build_dhcp(f, BCAST, 0xFFFFFFFFu, xid, 0, &k, NULL, 0);
    input(h, 0, f, n);
    assert_int_equal(h->ntx, 1);
    struct dhcp_view d = last_dhcp(h);
    assert_int_equal(d.type, 1);
    assert_int_not_equal(d.xid, xid); /* a new exchange */
    assert_int_equal(reports_matching(&h->logs, "NAK from 10.0.2.3"), 1);
    assert_false(net_configured(&h->nif));
    /* NAK while bound (renewing) removes the address. */
    tx_clear(h);
    net_dhcp_stop(&h->nif);
    dhcp_bind(h, 600);
    tick_to(h, h->now + 301 * S_NS); /* T1 */
    d = last_dhcp(h);
    assert_int_equal(d.type, 3);
    n = build_dhcp(f, OUR_MAC, OUR_IP, d.xid, 0, &k, NULL, 0);
    input(h, 0, f, n);
    assert_false(net_configured(&h->nif));
    assert_int_equal(last_dhcp(h).type, 1);
}

static void test_dhcp_retransmit_timing(void **state)
{
    struct harness *h = *state;
    uint64_t start = h->now;
    assert_int_equal(net_dhcp_start(&h->nif, h->now), STATUS_OK);
    tick_to(h, start + 300 * S_NS);
    /* DISCOVERs at 0, then after 4, 8, 16, 32, 64, 64... s, each +-1 s (plus the 100 ms tick). */
    unsigned nd = count_dhcp(h);
    assert_true(nd >= 7);
    uint32_t xid = parse_client(&h->tx[0]).xid;
    uint64_t prev = h->tx[0].when;
    assert_int_equal(prev, start);
    uint64_t base[] = { 4, 8, 16, 32, 64, 64, 64 };
    for (unsigned i = 1; i < 7; i++) {
        struct dhcp_view d = parse_client(&h->tx[i]);
        assert_int_equal(d.type, 1);
        assert_int_equal(d.xid, xid);
        uint64_t gap = h->tx[i].when - prev;
        if (gap < (base[i - 1] - 1) * S_NS || gap > (base[i - 1] + 1) * S_NS + 100 * MS_NS)
            fail_msg("retransmission %u after %llu ms, want %llu s +-1 s", i, (unsigned long long)(gap / MS_NS),
                     (unsigned long long)base[i - 1]);
        prev = h->tx[i].when;
        if (i >= 2)
            assert_true(d.secs >= 4); /* seconds since the exchange began */
    }
    /* REQUESTING: 4 REQUESTs (0, +4, +8, +16 s) then back to DISCOVER. */
    tx_clear(h);
    uint8_t f[700];
    struct srv_opts o = offer_opts();
    size_t n = build_dhcp(f, BCAST, 0xFFFFFFFFu, xid, OUR_IP, &o, NULL, 0);
    input(h, 0, f, n);
    uint64_t t = h->now;
    tick_to(h, t + 70 * S_NS);
    unsigned req = 0, disc = 0;
    for (unsigned i = 0; i < h->ntx; i++) {
        struct dhcp_view d = parse_client(&h->tx[i]);
        if (d.type == 3) {
            assert_int_equal(disc, 0);
            req++;
        } else if (d.type == 1) {
            disc++;
        }
    }
    assert_int_equal(req, 4);
    assert_true(disc >= 1);
    assert_int_equal(reports_matching(&h->logs, "no answer to REQUEST"), 1);
}

static void test_dhcp_renew_rebind_expire(void **state)
{
    struct harness *h = *state;
    uint64_t bound = h->now;
    dhcp_bind(h, 1000); /* T1 500 s, T2 875 s */
    bind_recorder(h, 7);
    tick_to(h, bound + 499 * S_NS);
    assert_int_equal(count_dhcp(h), 0);
    tick_to(h, bound + 500 * S_NS + 100 * MS_NS);
    assert_int_equal(count_dhcp(h), 1);
    /* RENEWING: unicast to the server (its MAC from the ACK), from our address, ciaddr set, no 50/54. */
    struct dhcp_view d = last_dhcp(h);
    assert_int_equal(d.type, 3);
    assert_memory_equal(d.u.ip.eth, SRV_MAC, 6);
    assert_int_equal(d.u.ip.src, OUR_IP);
    assert_int_equal(d.u.ip.dst, SRV_IP);
    assert_int_equal(d.ciaddr, OUR_IP);
    assert_false(d.has50);
    assert_false(d.has54);
    struct net_config c;
    net_get_config(&h->nif, h->now, &c);
    assert_int_equal(c.dhcp, NET_DHCP_RENEWING);
    /* Retransmission: half the time to T2 (375 s / 2 = 187.5 s), at least 60 s. */
    tick_to(h, bound + 500 * S_NS + 187 * S_NS);
    assert_int_equal(count_dhcp(h), 1);
    tick_to(h, bound + 500 * S_NS + 188 * S_NS);
    assert_int_equal(count_dhcp(h), 2);
    /* Then 60 s (the minimum: (875-687.5)/2 = 94 s > 60 → 94 s) */
    tick_to(h, bound + 874 * S_NS);
    unsigned renews = count_dhcp(h);
    assert_true(renews >= 3);
    for (unsigned i = 0; i < h->ntx; i++)
        if (!is_arp(&h->tx[i]))
            assert_memory_equal(parse_client(&h->tx[i]).u.ip.eth, SRV_MAC, 6);
    /* T2: REBINDING, broadcast. */
    tx_clear(h);
    tick_to(h, bound + 875 * S_NS + 100 * MS_NS);
    assert_int_equal(count_dhcp(h), 1);
    d = last_dhcp(h);
    assert_int_equal(d.type, 3);
    assert_memory_equal(d.u.ip.eth, BCAST, 6);
    assert_int_equal(d.u.ip.dst, 0xFFFFFFFFu);
    assert_int_equal(d.u.ip.src, OUR_IP);
    assert_int_equal(d.ciaddr, OUR_IP);
    assert_false(d.has50);
    assert_false(d.has54);
    net_get_config(&h->nif, h->now, &c);
    assert_int_equal(c.dhcp, NET_DHCP_REBINDING);
    assert_true(net_configured(&h->nif));
    /* Lease end: address removed, DISCOVER. */
    tx_clear(h);
    tick_to(h, bound + 1000 * S_NS + 100 * MS_NS);
    assert_false(net_configured(&h->nif));
    d = last_dhcp(h);
    assert_int_equal(d.type, 1);
    assert_int_equal(d.u.ip.src, 0);
    assert_int_equal(reports_matching(&h->logs, "lease of 10.0.2.15 expired"), 1);
    net_get_config(&h->nif, h->now, &c);
    assert_int_equal(c.dhcp, NET_DHCP_SELECTING);
    assert_int_equal(c.ip, 0);
    uint8_t g[200];
    size_t gn = good_udp(g, 7);
    input(h, 0, g, gn);
    assert_int_equal(h->udp_calls, 0);
}

static void test_dhcp_renew_acked(void **state)
{
    struct harness *h = *state;
    uint64_t bound = h->now;
    dhcp_bind(h, 1000);
    tick_to(h, bound + 500 * S_NS + 100 * MS_NS);
    struct dhcp_view d = last_dhcp(h);
    uint8_t f[700];
    struct srv_opts a = ack_opts(2000);
    a.t1 = 100;
    a.t2 = 200;
    size_t n = build_dhcp(f, OUR_MAC, OUR_IP, d.xid, OUR_IP, &a, NULL, 0);
    input(h, 0, f, n);
    struct net_config c;
    net_get_config(&h->nif, h->now, &c);
    assert_int_equal(c.dhcp, NET_DHCP_BOUND);
    assert_int_equal(c.lease_s, 2000);
    assert_int_equal(c.t1_left_ns, 100 * S_NS);
    assert_int_equal(c.t2_left_ns, 200 * S_NS);
    assert_int_equal(reports_matching(&h->logs, "dhcp: renewed 10.0.2.15/24"), 1);
    /* T1 > T2 from the server: defaults (lease/2, lease*7/8). */
    tx_clear(h);
    tick_to(h, h->now + 100 * S_NS + 100 * MS_NS);
    d = last_dhcp(h);
    a.t1 = 900;
    a.t2 = 800;
    n = build_dhcp(f, OUR_MAC, OUR_IP, d.xid, OUR_IP, &a, NULL, 0);
    input(h, 0, f, n);
    net_get_config(&h->nif, h->now, &c);
    assert_int_equal(c.t2_left_ns, 800 * S_NS);
    assert_int_equal(c.t1_left_ns, 800 * S_NS); /* T1 > T2: min(lease/2, T2) */
    a.t1 = 0;
    a.t2 = 3000; /* T2 > lease */
    tx_clear(h);
    tick_to(h, h->now + 800 * S_NS + 100 * MS_NS);
    d = last_dhcp(h);
    n = build_dhcp(f, BCAST, 0xFFFFFFFFu, d.xid, OUR_IP, &a, NULL, 0);
    input(h, 0, f, n);
    net_get_config(&h->nif, h->now, &c);
    assert_int_equal(c.t2_left_ns, 1750 * S_NS);
    assert_int_equal(c.t1_left_ns, 1000 * S_NS);
    /* Infinite lease: nothing more. */
    tx_clear(h);
    tick_to(h, h->now + 1000 * S_NS + 100 * MS_NS);
    d = last_dhcp(h);
    struct srv_opts inf = ack_opts(0xFFFFFFFFu);
    n = build_dhcp(f, OUR_MAC, OUR_IP, d.xid, OUR_IP, &inf, NULL, 0);
    input(h, 0, f, n);
    net_get_config(&h->nif, h->now, &c);
    assert_int_equal(c.lease_left_ns, UINT64_MAX);
    tx_clear(h);
    tick_to(h, h->now + 5000 * S_NS);
    assert_int_equal(count_dhcp(h), 0);
}

static void test_dhcp_malformed(void **state)
{
    struct harness *h = *state;
    assert_int_equal(net_dhcp_start(&h->nif, h->now), STATUS_OK);
    uint32_t xid = last_dhcp(h).xid;
    tx_clear(h);
    uint8_t f[700];
    unsigned bad = 0, ignored = 0;
    struct {
        const char *what;
        uint8_t opts[40];
        size_t len;
        bool is_bad;
    } cases[] = {
        { "length past the end", { 53, 1, 2, 54, 4, 10, 0, 2, 3, 1, 200, 1, 2 }, 13, true },
        { "no end", { 53, 1, 2, 54, 4, 10, 0, 2, 3 }, 9, true },
        { "no length byte", { 53, 1, 2, 54, 4, 10, 0, 2, 3, 61 }, 10, true },
        { "53 missing", { 54, 4, 10, 0, 2, 3, 255 }, 7, true },
        { "53 length 2", { 53, 2, 2, 0, 54, 4, 10, 0, 2, 3, 255 }, 11, true },
        { "54 length 3", { 53, 1, 2, 54, 3, 10, 0, 2, 255 }, 9, true },
        { "1 length 5", { 53, 1, 2, 54, 4, 10, 0, 2, 3, 1, 5, 255, 255, 255, 0, 0, 255 }, 17, true },
        { "3 length 6", { 53, 1, 2, 54, 4, 10, 0, 2, 3, 3, 6, 10, 0, 2, 2, 0, 0, 255 }, 18, true },
        { "52 length 2", { 53, 1, 2, 54, 4, 10, 0, 2, 3, 52, 2, 1, 1, 255 }, 14, true },
        { "offer without 54", { 53, 1, 2, 51, 4, 0, 0, 1, 0, 255 }, 10, true },
        { "server id multicast", { 53, 1, 2, 54, 4, 224, 0, 0, 1, 255 }, 10, true },
        { "only pads", { 0, 0, 0, 0 }, 4, true },
        { "empty", { 0 }, 0, true },
        { "ACK while selecting", { 53, 1, 5, 54, 4, 10, 0, 2, 3, 51, 4, 0, 0, 1, 0, 255 }, 16, false },
        { "type 9", { 53, 1, 9, 255 }, 4, false },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = build_dhcp(f, BCAST, 0xFFFFFFFFu, xid, OUR_IP, NULL, cases[i].opts, cases[i].len);
        input(h, 0, f, n);
        struct net_stats st = stats(h);
        if (cases[i].is_bad)
            bad++;
        else
            ignored++;
        if (st.dhcp_bad != bad || st.dhcp_ignored != ignored)
            fail_msg("case '%s': dhcp_bad %llu (want %u), dhcp_ignored %llu (want %u)", cases[i].what,
                     (unsigned long long)st.dhcp_bad, bad, (unsigned long long)st.dhcp_ignored, ignored);
        assert_int_equal(h->ntx, 0);
    }
    /* Fixed part: short, op, htype, hlen, cookie; xid and chaddr. */
    struct srv_opts o = offer_opts();
    size_t n = build_dhcp(f, BCAST, 0xFFFFFFFFu, xid, OUR_IP, &o, NULL, 0);
    uint8_t g[700];
    struct {
        size_t off;
        uint8_t val;
        bool is_bad;
    } edits[] = { { 42, 1, true }, { 43, 6, true }, { 44, 16, true }, { 42 + 236, 0xFF, true },
                  { 42 + 4, 0xAA, false }, { 42 + 33, 0x77, false } };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        memcpy(g, f, n);
        g[edits[i].off] ^= edits[i].val;
        put16(g + 40, 0); /* UDP checksum off */
        input(h, 0, g, n);
        if (edits[i].is_bad)
            bad++;
        else
            ignored++;
        assert_int_equal(stats(h).dhcp_bad, bad);
        assert_int_equal(stats(h).dhcp_ignored, ignored);
    }
    /* A BOOTP message shorter than 240 bytes. */
    struct udp_spec s = { BCAST, SRV_MAC, SRV_IP, 0xFFFFFFFFu, 67, 68, false };
    memcpy(g, f + 42, 239);
    n = build_udp(g + 300, &s, g, 239);
    input(h, 0, g + 300, n);
    assert_int_equal(stats(h).dhcp_bad, ++bad);
    assert_int_equal(h->ntx, 0);
    /* Still selecting: a good offer works. */
    n = build_dhcp(f, BCAST, 0xFFFFFFFFu, xid, OUR_IP, &o, NULL, 0);
    input(h, 0, f, n);
    assert_int_equal(last_dhcp(h).type, 3);
    /* ACK without a lease time: bad. ACK for another address: ignored. */
    tx_clear(h);
    struct srv_opts a = ack_opts(0);
    n = build_dhcp(f, BCAST, 0xFFFFFFFFu, xid, OUR_IP, &a, NULL, 0);
    input(h, 0, f, n);
    assert_int_equal(stats(h).dhcp_bad, ++bad);
    a.lease = 3600;
    n = build_dhcp(f, BCAST, 0xFFFFFFFFu, xid, OUR_IP + 1, &a, NULL, 0);
    input(h, 0, f, n);
    assert_int_equal(stats(h).dhcp_ignored, ++ignored);
    /* ACK with a mask that is not contiguous: bad. Without a mask: classful (10/8). */
    a.mask = 0xFF00FF00u;
    n = build_dhcp(f, BCAST, 0xFFFFFFFFu, xid, OUR_IP, &a, NULL, 0);
    input(h, 0, f, n);
    assert_int_equal(stats(h).dhcp_bad, ++bad);
    assert_false(net_configured(&h->nif));
    a.mask = 0;
    a.router = IP(192, 168, 0, 1); /* not on-link: ignored with a log line */
    n = build_dhcp(f, BCAST, 0xFFFFFFFFu, xid, OUR_IP, &a, NULL, 0);
    input(h, 0, f, n);
    struct net_config c;
    net_get_config(&h->nif, h->now, &c);
    assert_int_equal(c.ip, OUR_IP);
    assert_int_equal(c.mask, 0xFF000000u);
    assert_int_equal(c.gw, 0);
    assert_int_equal(reports_matching(&h->logs, "router 192.168.0.1 is not on-link"), 1);
}

static void test_dhcp_link_reverify(void **state)
{
    struct harness *h = *state;
    dhcp_bind(h, 86400);
    net_link_changed(&h->nif, false, h->now);
    h->now += 10 * S_NS;
    tick_to(h, h->now + S_NS);
    assert_int_equal(h->ntx, 0);
    net_link_changed(&h->nif, true, h->now);
    /* INIT-REBOOT: REQUEST with 50 = our address, ciaddr 0, no 54, broadcast from 0.0.0.0. */
    struct dhcp_view d = last_dhcp(h);
    assert_int_equal(d.type, 3);
    assert_true(d.has50);
    assert_int_equal(d.req_ip, OUR_IP);
    assert_false(d.has54);
    assert_int_equal(d.ciaddr, 0);
    assert_int_equal(d.u.ip.src, 0);
    assert_memory_equal(d.u.ip.eth, BCAST, 6);
    assert_true(net_configured(&h->nif)); /* kept meanwhile */
    struct net_config c;
    net_get_config(&h->nif, h->now, &c);
    assert_int_equal(c.dhcp, NET_DHCP_REBOOTING);
    uint8_t f[700];
    struct srv_opts a = ack_opts(86400);
    size_t n = build_dhcp(f, BCAST, 0xFFFFFFFFu, d.xid, OUR_IP, &a, NULL, 0);
    input(h, 0, f, n);
    net_get_config(&h->nif, h->now, &c);
    assert_int_equal(c.dhcp, NET_DHCP_BOUND);
    assert_int_equal(reports_matching(&h->logs, "dhcp: confirmed 10.0.2.15/24"), 1);

    /* No answer to INIT-REBOOT: 4 tries, then the lease is kept. */
    net_link_changed(&h->nif, true, h->now);
    tx_clear(h);
    uint64_t up = h->now;
    tick_to(h, up + 40 * S_NS);
    assert_int_equal(count_dhcp(h), 3); /* the first went out before tx_clear: 4 in all */
    net_get_config(&h->nif, h->now, &c);
    assert_int_equal(c.dhcp, NET_DHCP_REBOOTING); /* the 4th try gets its answer time (32 s) */
    tick_to(h, up + 62 * S_NS);
    assert_int_equal(count_dhcp(h), 3);
    net_get_config(&h->nif, h->now, &c);
    assert_int_equal(c.dhcp, NET_DHCP_BOUND);
    assert_true(net_configured(&h->nif));
    assert_int_equal(reports_matching(&h->logs, "keeping 10.0.2.15"), 1);

    /* NAK to INIT-REBOOT: removed, DISCOVER. */
    net_link_changed(&h->nif, true, h->now);
    d = last_dhcp(h);
    struct srv_opts k = { .type = 6, .server = SRV_IP };
    n = build_dhcp(f, BCAST, 0xFFFFFFFFu, d.xid, 0, &k, NULL, 0);
    tx_clear(h);
    input(h, 0, f, n);
    assert_false(net_configured(&h->nif));
    assert_int_equal(last_dhcp(h).type, 1);

    /* Link up while selecting: a fresh DISCOVER (new xid). */
    uint32_t xid = last_dhcp(h).xid;
    tx_clear(h);
    net_link_changed(&h->nif, true, h->now);
    d = last_dhcp(h);
    assert_int_equal(d.type, 1);
    assert_int_not_equal(d.xid, xid);
}

static void test_static_stops_dhcp(void **state)
{
    struct harness *h = *state;
    dhcp_bind(h, 86400);
    assert_int_equal(net_set_static(&h->nif, PEER_IP, MASK24, GW_IP, h->now), STATUS_OK);
    struct net_config c;
    net_get_config(&h->nif, h->now, &c);
    assert_int_equal(c.dhcp, NET_DHCP_OFF);
    assert_int_equal(c.ip, PEER_IP);
    tx_clear(h);
    tick_to(h, h->now + 50000 * S_NS);
    assert_int_equal(count_dhcp(h), 0);
    /* Port 68 now is an ordinary port. */
    bind_recorder(h, 68);
    uint8_t f[700];
    struct srv_opts a = ack_opts(100);
    struct udp_spec s = { OUR_MAC, SRV_MAC, SRV_IP, PEER_IP, 67, 68, false };
    uint8_t m[4] = { 1, 2, 3, 4 };
    (void)a;
    size_t n = build_udp(f, &s, m, 4);
    input(h, 0, f, n);
    assert_int_equal(h->udp_calls, 1);
}

/* ======================================================================================== */
/* logging, parse helpers */

static void test_log_rate_limited(void **state)
{
    struct harness *h = *state;
    configure(h);
    reports_clear(&h->logs);
    uint8_t f[64];
    size_t n = build_arp(f, BCAST, 2, PEER_MAC, OUR_IP, ZERO6, OUR_IP);
    for (int i = 0; i < 1000; i++)
        input(h, 0, f, n); /* 1000 conflicts in one instant */
    assert_true(h->logs.count <= 20);
    assert_true(h->logs.count >= 10);
    h->now += 10 * S_NS;
    input(h, 0, f, n);
    assert_true(reports_matching(&h->logs, "log lines suppressed") == 1);
    /* A flood of bad frames is summarised once per 10 s, not per packet. */
    reports_clear(&h->logs);
    uint8_t g[200];
    size_t gn = good_udp(g, 7);
    g[gn - 1] ^= 1;
    tick_to(h, h->now + 11 * S_NS); /* the summary of the conflicts */
    reports_clear(&h->logs);
    for (int i = 0; i < 500; i++)
        input(h, 0, g, gn);
    tick_to(h, h->now + 11 * S_NS);
    assert_int_equal(reports_matching(&h->logs, "dropped in the last 10 s", "bad_udp_checksum 500"), 1);
    tick_to(h, h->now + 30 * S_NS);
    assert_int_equal(reports_matching(&h->logs, "dropped in the last 10 s"), 1);
}

static void test_parse_helpers(void **state)
{
    (void)state;
    uint32_t ip = 1, mask = 1;
    assert_int_equal(net_parse_ipv4("10.0.0.2", &ip), STATUS_OK);
    assert_int_equal(ip, IP(10, 0, 0, 2));
    assert_int_equal(net_parse_ipv4("255.255.255.255", &ip), STATUS_OK);
    assert_int_equal(ip, 0xFFFFFFFFu);
    assert_int_equal(net_parse_ipv4("0.0.0.0", &ip), STATUS_OK);
    assert_int_equal(ip, 0);
    const char *bad[] = { "", "1", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.4 ", " 1.2.3.4", "1..2.3",
                          "1.2.3.", ".1.2.3", "01.2.3.4", "1.2.3.-4", "+1.2.3.4", "1.2.3.4/24", "a.b.c.d",
                          "1.2.3.4x", "4294967296.1.1.1", "1.2.3.99999999999" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ip = 7;
        if (net_parse_ipv4(bad[i], &ip) != STATUS_BAD_DATA)
            fail_msg("'%s' accepted", bad[i]);
        assert_int_equal(ip, 7);
    }
    assert_int_equal(net_parse_ipv4(NULL, &ip), STATUS_BAD_DATA);
    assert_int_equal(net_parse_ipv4_cidr("10.0.2.15/24", &ip, &mask), STATUS_OK);
    assert_int_equal(ip, OUR_IP);
    assert_int_equal(mask, MASK24);
    assert_int_equal(net_parse_ipv4_cidr("10.0.2.15/0", &ip, &mask), STATUS_OK);
    assert_int_equal(mask, 0);
    assert_int_equal(net_parse_ipv4_cidr("10.0.2.15/32", &ip, &mask), STATUS_OK);
    assert_int_equal(mask, 0xFFFFFFFFu);
    assert_int_equal(net_parse_ipv4_cidr("10.0.2.15/9", &ip, &mask), STATUS_OK);
    assert_int_equal(mask, 0xFF800000u);
    assert_int_equal(net_parse_ipv4_cidr("10.0.2.15", &ip, &mask), STATUS_OK); /* default /24 */
    assert_int_equal(mask, MASK24);
    const char *badc[] = { "10.0.2.15/", "10.0.2.15/33", "10.0.2.15/024", "10.0.2.15/-1", "10.0.2.15/24/",
                           "10.0.2.15/2x", "/24", "10.0.2/24", "10.0.2.15 /24" };
    for (size_t i = 0; i < sizeof badc / sizeof badc[0]; i++)
        if (net_parse_ipv4_cidr(badc[i], &ip, &mask) != STATUS_BAD_DATA)
            fail_msg("'%s' accepted", badc[i]);
    char buf[32];
    assert_int_equal(net_format_ipv4(buf, sizeof buf, OUR_IP), 9);
    assert_string_equal(buf, "10.0.2.15");
    assert_int_equal(net_format_ipv4(buf, sizeof buf, 0xFFFFFFFFu), 15);
    assert_string_equal(buf, "255.255.255.255");
    assert_int_equal(net_format_ipv4(buf, 5, 0xFFFFFFFFu), 15);
    assert_string_equal(buf, "255.");
    assert_int_equal(net_format_ipv4(NULL, 0, 0), 7);
    assert_int_equal(net_format_mac(buf, sizeof buf, OUR_MAC), 17);
    assert_string_equal(buf, "02:15:5d:00:00:01");
    assert_int_equal(net_mask_prefix(MASK24), 24);
    assert_int_equal(net_mask_prefix(0), 0);
    assert_int_equal(net_mask_prefix(0xFFFFFFFFu), 32);
    assert_int_equal(net_mask_prefix(0xFF00FF00u), -1);
    assert_int_equal(net_mask_prefix(0x00FFFFFFu), -1);
    assert_int_equal(net_prefix_mask(0), 0);
    assert_int_equal(net_prefix_mask(1), 0x80000000u);
    assert_int_equal(net_prefix_mask(32), 0xFFFFFFFFu);
    assert_string_equal(net_dhcp_state_name(NET_DHCP_BOUND), "bound");
    assert_string_equal(net_dhcp_state_name((enum net_dhcp_state)99), "unknown");
}

/* ======================================================================================== */
/* sweeps: every prefix and byte corruption of valid frames, in each state */

struct sample {
    uint8_t f[700];
    size_t n;
};

static unsigned make_samples(struct harness *h, struct sample *s, uint32_t xid)
{
    unsigned k = 0;
    s[k].n = build_arp(s[k].f, BCAST, 1, PEER_MAC, PEER_IP, ZERO6, OUR_IP), k++;
    s[k].n = build_arp(s[k].f, OUR_MAC, 2, GW_MAC, GW_IP, OUR_MAC, OUR_IP), k++;
    s[k].n = build_echo(s[k].f, PEER_IP, OUR_IP, 9, 9, "0123456789abcdef", 16, 0), k++;
    s[k].n = build_echo(s[k].f, PEER_IP, OUR_IP, 9, 9, "0123456789abcde", 15, 12), k++;
    s[k].n = good_udp(s[k].f, 7), k++;
    struct srv_opts o = offer_opts();
    s[k].n = build_dhcp(s[k].f, BCAST, 0xFFFFFFFFu, xid, OUR_IP, &o, NULL, 0), k++;
    struct srv_opts a = ack_opts(600);
    a.t1 = 100;
    a.t2 = 200;
    s[k].n = build_dhcp(s[k].f, OUR_MAC, OUR_IP, xid, OUR_IP, &a, NULL, 0), k++;
    struct srv_opts n = { .type = 6, .server = SRV_IP };
    s[k].n = build_dhcp(s[k].f, BCAST, 0xFFFFFFFFu, xid, 0, &n, NULL, 0), k++;
    (void)h;
    return k;
}

/* One fresh interface per state: 0 unconfigured + DHCP selecting, 1 requesting, 2 static. */
static struct harness *state_harness(int st, uint32_t *xid)
{
    struct harness *h = harness_new(2);
    h->echo = true;
    assert_int_equal(net_udp_bind(&h->nif, 7, h_udp, h), STATUS_OK);
    *xid = 0;
    if (st == 2) {
        assert_int_equal(net_set_static(&h->nif, OUR_IP, MASK24, GW_IP, h->now), STATUS_OK);
    } else {
        assert_int_equal(net_dhcp_start(&h->nif, h->now), STATUS_OK);
        *xid = last_dhcp(h).xid;
        if (st == 1) {
            uint8_t f[700];
            struct srv_opts o = offer_opts();
            size_t n = build_dhcp(f, BCAST, 0xFFFFFFFFu, *xid, OUR_IP, &o, NULL, 0);
            input(h, 0, f, n);
        }
    }
    tx_clear(h);
    return h;
}

static void test_truncation_sweep(void **state)
{
    (void)state;
    static struct sample s[16];
    for (int st = 0; st < 3; st++) {
        uint32_t xid;
        struct harness *h = state_harness(st, &xid);
        unsigned k = make_samples(h, s, xid);
        for (unsigned i = 0; i < k; i++) {
            for (size_t len = 0; len <= s[i].n; len++) {
                input(h, (uint32_t)(len & 1), s[i].f, len);
                tx_clear(h);
            }
        }
        harness_free(h);
        /* Each full sample, once, in a fresh state, does something (no counter of "nothing"). */
        h = state_harness(st, &xid);
        k = make_samples(h, s, xid);
        for (unsigned i = 0; i < k; i++) {
            struct net_stats before = stats(h);
            input(h, 0, s[i].f, s[i].n);
            struct net_stats after = stats(h);
            assert_int_equal(after.rx_frames, before.rx_frames + 1);
            tx_clear(h);
        }
        harness_free(h);
    }
}

static void test_corruption_sweep(void **state)
{
    (void)state;
    static struct sample s[16];
    struct rng r;
    rng_seed(&r, 12345);
    for (int st = 0; st < 3; st++) {
        uint32_t xid;
        struct harness *h = state_harness(st, &xid);
        unsigned k = make_samples(h, s, xid);
        for (unsigned i = 0; i < k; i++)
            for (size_t b = 0; b < s[i].n; b++)
                for (int v = 0; v < 3; v++) {
                    uint8_t g[700];
                    memcpy(g, s[i].f, s[i].n);
                    g[b] = v == 0 ? 0 : v == 1 ? 0xFF : (uint8_t)rng_next(&r);
                    if (b >= 14 && (rng_next(&r) & 1)) {
                        /* repair the IP header checksum so the corruption reaches deeper */
                        if (get16(g + 12) == 0x0800 && (g[14] & 15) >= 5 && 14 + (size_t)(g[14] & 15) * 4 <= s[i].n)
                            fix_ip_csum(g);
                        size_t uo = 14 + (size_t)(g[14] & 15) * 4; /* and turn the UDP checksum off */
                        if (get16(g + 12) == 0x0800 && g[23] == 17 && uo + 8 <= s[i].n)
                            put16(g + uo + 6, 0);
                    }
                    input(h, 0, g, s[i].n);
                    h->now += MS_NS;
                    if ((b & 63) == 0)
                        net_tick(&h->nif, h->now);
                    tx_clear(h);
                }
        harness_free(h);
    }
}

/* ======================================================================================== */
/* threads: two queues echoing while the control paths run (TSan build: test_net_tsan) */

struct mt {
    struct net_if nif;
    pthread_mutex_t mu;
    uint64_t clock; /* atomic, ns */
    unsigned long sent[2], echoed;
    int stop;
};

static void *mt_tx_begin(void *ctx, uint32_t queue, uint32_t len)
{
    (void)ctx;
    (void)queue;
    return malloc(len);
}
static status_t mt_tx_end(void *ctx, uint32_t queue, void *frame, uint32_t len)
{
    (void)ctx;
    (void)queue;
    (void)len;
    free(frame);
    return STATUS_OK;
}
static void mt_lock(void *ctx)
{
    pthread_mutex_lock(&((struct mt *)ctx)->mu);
}
static void mt_unlock(void *ctx)
{
    pthread_mutex_unlock(&((struct mt *)ctx)->mu);
}
static void mt_log(void *ctx, const char *line)
{
    (void)ctx;
    (void)line;
}
static unsigned long mt_no_address; /* atomic: replies refused because the address was just removed */

static void mt_echo(struct net_if *nif, uint32_t queue, const struct net_udp_meta *m, const void *payload,
                    uint32_t len, void *arg)
{
    (void)arg;
    status_t st = net_udp_reply(nif, queue, m, payload, len);
    if (st == STATUS_INVALID_STATE) /* the control thread removed the address since the receive check */
        __atomic_fetch_add(&mt_no_address, 1, __ATOMIC_RELAXED);
    else if (st != STATUS_OK)
        abort();
}

struct mt_rx {
    struct mt *mt;
    uint32_t queue;
    unsigned long frames;
};

static void *mt_rx_thread(void *p)
{
    struct mt_rx *rx = p;
    uint8_t f[200];
    struct udp_spec s = { OUR_MAC, PEER_MAC, PEER_IP, OUR_IP, (uint16_t)(5000 + rx->queue), 7, false };
    for (unsigned long i = 0; i < rx->frames; i++) {
        uint8_t pl[32];
        memset(pl, (int)i, sizeof pl);
        size_t n = build_udp(f, &s, pl, sizeof pl);
        net_input(&rx->mt->nif, rx->queue, f, (uint32_t)n, __atomic_load_n(&rx->mt->clock, __ATOMIC_RELAXED));
        if (i % 64 == 0) { /* some ARP on the receive path too */
            uint8_t a[64];
            size_t an = build_arp(a, BCAST, 1, PEER_MAC, PEER_IP, ZERO6, OUR_IP);
            net_input(&rx->mt->nif, rx->queue, a, (uint32_t)an, __atomic_load_n(&rx->mt->clock, __ATOMIC_RELAXED));
        }
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    struct mt *mt = calloc(1, sizeof *mt);
    pthread_mutex_init(&mt->mu, NULL);
    struct net_ops ops = { .ctx = mt, .tx_begin = mt_tx_begin, .tx_end = mt_tx_end, .lock = mt_lock,
                           .unlock = mt_unlock, .log = mt_log };
    assert_int_equal(net_if_init(&mt->nif, OUR_MAC, 1500, 2, &ops), STATUS_OK);
    mt->clock = T0;
    assert_int_equal(net_set_static(&mt->nif, OUR_IP, MASK24, GW_IP, T0), STATUS_OK);
    assert_int_equal(net_udp_bind(&mt->nif, 7, mt_echo, NULL), STATUS_OK);
    const unsigned long frames = 20000;
    struct mt_rx rx[2] = { { mt, 0, frames }, { mt, 1, frames } };
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, mt_rx_thread, &rx[i]);
    /* The control thread: timers, binds, sends, stats, config reads, link flaps, DHCP on/off. */
    for (int i = 0; i < 3000; i++) {
        uint64_t now = __atomic_add_fetch(&mt->clock, 100 * MS_NS, __ATOMIC_RELAXED);
        net_tick(&mt->nif, now);
        struct net_stats st;
        net_get_stats(&mt->nif, &st);
        struct net_config c;
        net_get_config(&mt->nif, now, &c);
        (void)net_udp_send(&mt->nif, 0, PEER_IP, 9, 1000, "ctl", 3);
        assert_int_equal(net_udp_bind(&mt->nif, 9000, mt_echo, NULL), STATUS_OK);
        assert_int_equal(net_udp_unbind(&mt->nif, 9000), STATUS_OK);
        if (i % 500 == 250)
            net_link_changed(&mt->nif, true, now);
        if (i % 1000 == 999) {
            assert_int_equal(net_dhcp_start(&mt->nif, now), STATUS_OK);
            net_dhcp_stop(&mt->nif);
            assert_int_equal(net_set_static(&mt->nif, OUR_IP, MASK24, GW_IP, now), STATUS_OK);
        }
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    struct net_stats st;
    net_get_stats(&mt->nif, &st);
    /* Every datagram either echoed, or dropped while the address was briefly gone (DHCP on/off). */
    assert_int_equal(st.rx_frames, 2 * frames + 2 * ((frames + 63) / 64));
    assert_int_equal(st.udp_in + st.ip_not_for_us, 2 * frames);
    /* (Not "most were echoed": if this thread is preempted between net_dhcp_start and
     * net_set_static, the receive threads rightly drop everything meanwhile.) */
    assert_true(st.udp_in > 0);
    assert_true(st.udp_out + mt_no_address >= st.udp_in);
    print_message("threads: %llu echoed, %llu dropped or refused while the address was being replaced\n",
                  (unsigned long long)st.udp_in, (unsigned long long)(st.ip_not_for_us + mt_no_address));
    pthread_mutex_destroy(&mt->mu);
    free(mt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_params),
        cmocka_unit_test(test_tx_ctx_and_clock),
        cmocka_unit_test(test_checksum_matches_reference),
        cmocka_unit_test_setup_teardown(test_eth_drops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_arp_request_answered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_arp_not_for_us_not_learned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_arp_unconfigured_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_arp_resolve_retries_and_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_arp_reply_resolves, setup, teardown),
        cmocka_unit_test_setup_teardown(test_arp_expiry_and_refresh, setup, teardown),
        cmocka_unit_test_setup_teardown(test_arp_cache_lru, setup, teardown),
        cmocka_unit_test_setup_teardown(test_arp_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gratuitous_arp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_arp_conflict_defended, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ip_bad_header, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ip_fragments_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ip_destination_and_source, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ip_options_and_padding, setup, teardown),
        cmocka_unit_test_setup_teardown(test_icmp_echo_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_icmp_other_and_bad, setup, teardown),
        cmocka_unit_test_setup_teardown(test_udp_echo_byte_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_udp_checksum_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_udp_length_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_udp_bind_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_udp_reply_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_udp_send_routing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_static_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_link_down_up_static, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_counters_summed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dhcp_full_exchange, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dhcp_nak_restarts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dhcp_retransmit_timing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dhcp_renew_rebind_expire, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dhcp_renew_acked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dhcp_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dhcp_link_reverify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_static_stops_dhcp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_rate_limited, setup, teardown),
        cmocka_unit_test(test_parse_helpers),
        cmocka_unit_test(test_truncation_sweep),
        cmocka_unit_test(test_corruption_sweep),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
