/*
 * libFuzzer harness for the IPv4 stack (lib/net/net.h): hostile frames into an interface in one of
 * several states, mixed with timer ticks, link flaps, sends and reconfiguration.
 *
 * Input: one set-up byte (bits 0-2 mod 5, the state: 0 unconfigured with DHCP SELECTING, 1 DHCP
 * REQUESTING, 2 static 10.0.2.15/24, 3 DHCP BOUND (lease 600 s, T1 100 s, T2 200 s), 4 unconfigured,
 * DHCP off; bits 3-4, the driver after set-up: 1 every third tx_begin gives no buffer, 2 every
 * third tx_end fails), then records, each an op byte:
 *   op & 7 in 0..3: a frame. op >> 3: bit 0 queue (0/1), bit 1 repair (IPv4 total length, header
 *       checksum, UDP length and checksum, ICMP checksum made right, so the fuzzer gets past them),
 *       bit 2 DHCP patch (xid of the client's last message and our MAC in chaddr, when the frame
 *       is UDP to port 68), bits 3-4 destination MAC (0 as is, 1 ours, 2 broadcast). Then a 16-bit
 *       length (mod 1531: up to 16 bytes too long) and that many bytes (fewer if the input ends).
 *   4: tick: a 16-bit count of 10 ms steps, then net_tick.
 *   5: link: down or up (next byte, bit 0).
 *   6: net_udp_send to an address (4 bytes) and port (2 bytes), a few payload bytes.
 *   7: next byte: 0 DHCP start, 1 DHCP stop, 2 static address, 3 remove the address, 4 a jump of
 *      one hour, 5 net_get_config, else bind/unbind port (next 2 bytes).
 * Every frame is an exact-size heap copy (ASan catches a read past it).
 *
 * Checked for every frame the stack sends (tx_end): length 60..mtu+14, our source MAC, and either a
 * well-formed ARP packet from us or an IPv4 frame with version 4/IHL 5, the total length inside the
 * frame, a right header checksum, and for UDP a right length and checksum (reference sum), for
 * ICMP an echo reply with a right checksum. tx_begin/tx_end pair up; the lock is never taken
 * recursively and is free between calls; the handler runs without the lock; rx_frames counts every
 * frame; a configured address is a usable unicast address.
 *
 * Seeds: test/fuzz/corpus/net (written by test/fuzz/gen_net_seeds.py).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/net/net.h"
#include "test/fuzz/fuzz_input.h"

#define CHECK(cond)                                                                                            \
    do {                                                                                                       \
        if (!(cond)) {                                                                                         \
            fprintf(stderr, "fuzz_net: invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);           \
            abort();                                                                                           \
        }                                                                                                      \
    } while (0)

#define MTU 1500u
#define MS 1000000ull
#define S (1000ull * MS)

static const uint8_t OUR_MAC[6] = { 0x02, 0x15, 0x5d, 0, 0, 1 };
static const uint8_t SRV_MAC[6] = { 0x02, 0x15, 0x5d, 0, 0, 4 };
#define OUR_IP 0x0A00020Fu
#define SRV_IP 0x0A000203u
#define GW_IP 0x0A000202u

struct fz {
    struct net_if nif;
    uint64_t now;
    void *pending;
    uint32_t pending_len;
    int lock_depth;
    bool in_handler;
    uint32_t last_xid; /* of the client's last DHCP message */
    unsigned fail_mode, tx_calls;
    uint64_t inputs;
    uint8_t scratch[2048];
};

static struct fz *F;

/* ---- reference checksum (independent of the stack's) ---- */
static uint16_t g16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}
static uint32_t g32(const uint8_t *p)
{
    return (uint32_t)g16(p) << 16 | g16(p + 2);
}
static void p16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static void p32(uint8_t *p, uint32_t v)
{
    p16(p, (uint16_t)(v >> 16));
    p16(p + 2, (uint16_t)v);
}
static uint32_t rsum(const uint8_t *p, size_t n, uint32_t s)
{
    for (size_t i = 0; i + 1 < n; i += 2)
        s += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (n & 1)
        s += (uint32_t)p[n - 1] << 8;
    return s;
}
static uint16_t rfold(uint32_t s)
{
    while (s >> 16)
        s = (s & 0xFFFF) + (s >> 16);
    return (uint16_t)s;
}
static uint32_t pseudo(uint32_t src, uint32_t dst, uint16_t len)
{
    return (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + 17 + len;
}

/* ---- the fake driver ---- */
static void *fz_tx_begin(void *ctx, uint32_t queue, uint32_t len)
{
    struct fz *f = ctx;
    CHECK(f->pending == NULL);
    CHECK(queue < 2);
    CHECK(len >= 60 && len <= MTU + 14);
    if (f->fail_mode == 1 && ++f->tx_calls % 3 == 0)
        return NULL;
    f->pending = malloc(len);
    memset(f->pending, 0xCC, len);
    f->pending_len = len;
    return f->pending;
}

static void check_tx(struct fz *f, const uint8_t *p, uint32_t len)
{
    CHECK(memcmp(p + 6, OUR_MAC, 6) == 0);
    uint16_t type = g16(p + 12);
    if (type == 0x0806) {
        CHECK(len == 60);
        const uint8_t *a = p + 14;
        CHECK(g16(a) == 1 && g16(a + 2) == 0x0800 && a[4] == 6 && a[5] == 4);
        CHECK(g16(a + 6) == 1 || g16(a + 6) == 2);
        CHECK(memcmp(a + 8, OUR_MAC, 6) == 0);
        CHECK(!(p[0] & 1) || memcmp(p, "\xff\xff\xff\xff\xff\xff", 6) == 0);
        return;
    }
    CHECK(type == 0x0800);
    const uint8_t *ip = p + 14;
    CHECK(ip[0] == 0x45);
    uint16_t total = g16(ip + 2);
    CHECK(total >= 20 && 14u + total <= len);
    CHECK(len == (14u + total < 60 ? 60 : 14u + total));
    CHECK(rfold(rsum(ip, 20, 0)) == 0xFFFF);
    const uint8_t *l4 = ip + 20;
    uint16_t l4len = (uint16_t)(total - 20);
    if (ip[9] == 17) {
        CHECK(l4len >= 8 && g16(l4 + 4) == l4len);
        CHECK(g16(l4 + 6) != 0);
        CHECK(rfold(rsum(l4, l4len, pseudo(g32(ip + 12), g32(ip + 16), l4len))) == 0xFFFF);
        /* The client's messages (a handler the fuzzer bound to 68 may echo to 67 too: not DHCP). */
        if (g16(l4) == 68 && g16(l4 + 2) == 67 && l4len >= 8 + 300 && l4[8] == 1 && g32(l4 + 8 + 236) == 0x63825363)
            f->last_xid = g32(l4 + 8 + 4);
    } else {
        CHECK(ip[9] == 1);
        CHECK(l4len >= 8 && l4[0] == 0 && l4[1] == 0);
        CHECK(rfold(rsum(l4, l4len, 0)) == 0xFFFF);
    }
}

static status_t fz_tx_end(void *ctx, uint32_t queue, void *frame, uint32_t len)
{
    struct fz *f = ctx;
    CHECK(queue < 2);
    CHECK(frame == f->pending);
    CHECK(len >= 60 && len <= f->pending_len);
    check_tx(f, frame, len);
    free(frame);
    f->pending = NULL;
    if (f->fail_mode == 2 && ++f->tx_calls % 3 == 0)
        return STATUS_DEVICE_ERROR;
    return STATUS_OK;
}

static void fz_lock(void *ctx)
{
    struct fz *f = ctx;
    CHECK(f->lock_depth == 0);
    f->lock_depth++;
}

static void fz_unlock(void *ctx)
{
    struct fz *f = ctx;
    CHECK(f->lock_depth == 1);
    f->lock_depth--;
}

static void fz_log(void *ctx, const char *line)
{
    struct fz *f = ctx;
    CHECK(f->lock_depth == 1);
    CHECK(strlen(line) < 200);
}

static void fz_echo(struct net_if *nif, uint32_t queue, const struct net_udp_meta *m, const void *payload,
                    uint32_t len, void *arg)
{
    struct fz *f = arg;
    CHECK(f->lock_depth == 0);
    CHECK(len <= MTU - 28);
    volatile uint8_t sink = 0;
    for (uint32_t i = 0; i < len; i++)
        sink ^= ((const uint8_t *)payload)[i];
    (void)sink;
    status_t st = net_udp_reply(nif, queue, m, payload, len);
    CHECK(st == STATUS_OK || (f->fail_mode == 1 && st == STATUS_NO_SPACE) ||
          (f->fail_mode == 2 && st == STATUS_DEVICE_ERROR));
}

/* ---- frames the harness builds (set-up) ---- */

static size_t dhcp_reply(uint8_t *p, uint8_t type, uint32_t xid, uint32_t lease)
{
    memset(p, 0, 42 + 300);
    memcpy(p, OUR_MAC, 6);
    memcpy(p + 6, SRV_MAC, 6);
    p16(p + 12, 0x0800);
    uint8_t *m = p + 42;
    m[0] = 2;
    m[1] = 1;
    m[2] = 6;
    p32(m + 4, xid);
    p32(m + 16, OUR_IP);
    memcpy(m + 28, OUR_MAC, 6);
    p32(m + 236, 0x63825363);
    uint8_t *o = m + 240;
    uint8_t opts[] = { 53, 1, type, 54, 4, 10, 0, 2, 3, 1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 2, 2,
                       51, 4, 0, 0, 0, 0, 58, 4, 0, 0, 0, 100, 59, 4, 0, 0, 0, 200, 255 };
    p32(opts + 23, lease);
    memcpy(o, opts, sizeof opts);
    size_t mlen = 240 + sizeof opts;
    uint8_t *ip = p + 14;
    ip[0] = 0x45;
    p16(ip + 2, (uint16_t)(28 + mlen));
    ip[8] = 64;
    ip[9] = 17;
    p32(ip + 12, SRV_IP);
    p32(ip + 16, OUR_IP);
    p16(ip + 10, (uint16_t)~rfold(rsum(ip, 20, 0)));
    uint8_t *u = p + 34;
    p16(u, 67);
    p16(u + 2, 68);
    p16(u + 4, (uint16_t)(8 + mlen));
    return 42 + mlen;
}

static void feed(struct fz *f, uint32_t queue, const uint8_t *frame, size_t len)
{
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, frame, len);
    net_input(&f->nif, queue, copy, (uint32_t)len, f->now);
    free(copy);
    f->inputs++;
    CHECK(f->lock_depth == 0 && f->pending == NULL);
}

static void setup(struct fz *f, uint8_t state)
{
    memset(f, 0, sizeof *f);
    f->now = 5 * S;
    struct net_ops ops = { .ctx = f, .tx_begin = fz_tx_begin, .tx_end = fz_tx_end, .lock = fz_lock,
                           .unlock = fz_unlock, .log = fz_log, .ctl_queue = 0 };
    CHECK(net_if_init(&f->nif, OUR_MAC, MTU, 2, &ops) == STATUS_OK);
    CHECK(net_udp_bind(&f->nif, 7, fz_echo, f) == STATUS_OK);
    switch (state % 5) {
    case 0:
        CHECK(net_dhcp_start(&f->nif, f->now) == STATUS_OK);
        break;
    case 1:
    case 3: {
        CHECK(net_dhcp_start(&f->nif, f->now) == STATUS_OK);
        size_t n = dhcp_reply(f->scratch, 2, f->last_xid, 600);
        feed(f, 0, f->scratch, n);
        if (state % 5 == 3) {
            n = dhcp_reply(f->scratch, 5, f->last_xid, 600);
            feed(f, 0, f->scratch, n);
            CHECK(net_configured(&f->nif));
        }
        break;
    }
    case 2:
        CHECK(net_set_static(&f->nif, OUR_IP, 0xFFFFFF00u, GW_IP, f->now) == STATUS_OK);
        break;
    default:
        break;
    }
}

/* ---- repairs, so that mutations reach past the checksums ---- */

static void repair(struct fz *f, uint8_t *p, size_t n, bool dhcp)
{
    if (n < 34 || g16(p + 12) != 0x0800)
        return;
    uint8_t *ip = p + 14;
    size_t ihl = (size_t)(ip[0] & 15) * 4;
    if (ihl < 20 || 14 + ihl > n)
        return;
    size_t total = g16(ip + 2);
    if (total < ihl || 14 + total > n)
        total = n - 14;
    p16(ip + 2, (uint16_t)total);
    uint8_t *l4 = ip + ihl;
    size_t l4len = total - ihl;
    if (ip[9] == 17 && l4len >= 8) {
        size_t ulen = g16(l4 + 4);
        if (ulen < 8 || ulen > l4len)
            p16(l4 + 4, (uint16_t)(ulen = l4len));
        if (dhcp && g16(l4 + 2) == 68 && ulen >= 8 + 240) {
            p32(l4 + 8 + 4, f->last_xid);
            memcpy(l4 + 8 + 28, OUR_MAC, 6);
        }
        p16(l4 + 6, 0);
        uint16_t c = (uint16_t)~rfold(rsum(l4, ulen, pseudo(g32(ip + 12), g32(ip + 16), (uint16_t)ulen)));
        p16(l4 + 6, c ? c : 0xFFFF);
    } else if (ip[9] == 1 && l4len >= 4) {
        p16(l4 + 2, 0);
        p16(l4 + 2, (uint16_t)~rfold(rsum(l4, l4len, 0)));
    }
    p16(ip + 10, 0);
    p16(ip + 10, (uint16_t)~rfold(rsum(ip, ihl, 0)));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!F)
        F = malloc(sizeof *F);
    struct fz *f = F;
    struct reader r = { data, size };
    uint8_t set = take8(&r);
    setup(f, set);
    f->fail_mode = (set >> 3) & 3;
    unsigned ops = 0;
    while (r.n && ops++ < 256) {
        uint8_t op = take8(&r);
        switch (op & 7) {
        case 0:
        case 1:
        case 2:
        case 3: {
            uint8_t fl = op >> 3;
            size_t len = take16(&r) % (MTU + 31);
            if (len > r.n)
                len = r.n;
            uint8_t *p = malloc(len ? len : 1);
            memcpy(p, r.p, len);
            r.p += len;
            r.n -= len;
            uint32_t mac_mode = (fl >> 3) & 3;
            if (len >= 6 && mac_mode == 1)
                memcpy(p, OUR_MAC, 6);
            else if (len >= 6 && mac_mode == 2)
                memset(p, 0xFF, 6);
            if (fl & 2)
                repair(f, p, len, fl & 4);
            struct net_stats before;
            net_get_stats(&f->nif, &before);
            net_input(&f->nif, fl & 1, p, (uint32_t)len, f->now);
            free(p);
            f->inputs++;
            struct net_stats after;
            net_get_stats(&f->nif, &after);
            CHECK(after.rx_frames == before.rx_frames + 1);
            break;
        }
        case 4:
            f->now += (uint64_t)take16(&r) * 10 * MS;
            net_tick(&f->nif, f->now);
            break;
        case 5:
            net_link_changed(&f->nif, take8(&r) & 1, f->now);
            break;
        case 6: {
            uint32_t ip = (uint32_t)take16(&r) << 16;
            ip |= take16(&r);
            uint16_t port = take16(&r);
            status_t st = net_udp_send(&f->nif, 0, ip, port, 4000, "fuzz", 4);
            CHECK(st == STATUS_OK || st == STATUS_RETRY || st == STATUS_NOT_FOUND || st == STATUS_INVALID_STATE ||
                  st == STATUS_INVALID_PARAMETER || st == STATUS_NOT_SUPPORTED ||
                  (f->fail_mode == 1 && st == STATUS_NO_SPACE) || (f->fail_mode == 2 && st == STATUS_DEVICE_ERROR));
            break;
        }
        default: {
            uint8_t what = take8(&r);
            if (what == 0) {
                status_t st = net_dhcp_start(&f->nif, f->now);
                CHECK(st == STATUS_OK || st == STATUS_INVALID_STATE);
            } else if (what == 1) {
                net_dhcp_stop(&f->nif);
            } else if (what == 2) {
                CHECK(net_set_static(&f->nif, OUR_IP, 0xFFFFFF00u, GW_IP, f->now) == STATUS_OK);
            } else if (what == 3) {
                CHECK(net_set_static(&f->nif, 0, 0, 0, f->now) == STATUS_OK);
            } else if (what == 4) {
                f->now += 3600 * S;
                net_tick(&f->nif, f->now);
            } else if (what == 5) {
                struct net_config c;
                net_get_config(&f->nif, f->now, &c);
                CHECK(c.dhcp <= NET_DHCP_REBOOTING);
            } else {
                uint16_t port = take16(&r);
                if (what & 1)
                    (void)!net_udp_bind(&f->nif, port, fz_echo, f);
                else
                    (void)!net_udp_unbind(&f->nif, port);
            }
            break;
        }
        }
        CHECK(f->lock_depth == 0 && f->pending == NULL);
        uint32_t ip = net_ip(&f->nif);
        if (ip) {
            uint8_t a = (uint8_t)(ip >> 24);
            CHECK(a != 0 && a != 127 && a < 224);
        }
    }
    struct net_stats st;
    net_get_stats(&f->nif, &st);
    CHECK(st.rx_frames == f->inputs);
    CHECK(st.udp_in <= st.rx_frames);
    static int trace = -1;
    if (trace < 0)
        trace = getenv("FUZZ_NET_TRACE") != NULL;
    if (trace) { /* which counters moved: shows what a seed reaches */
        const uint64_t *c = (const uint64_t *)&st;
        static const char *const names[] = {
#define NAME(n, w) #n,
            NET_STATS(NAME)
#undef NAME
        };
        fprintf(stderr, "fuzz_net: state %u, %s:", size ? data[0] % 5 : 0,
                net_dhcp_state_name((enum net_dhcp_state)f->nif.dhcp.state));
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (c[i])
                fprintf(stderr, " %s=%llu", names[i], (unsigned long long)c[i]);
        fprintf(stderr, "\n");
    }
    return 0;
}
