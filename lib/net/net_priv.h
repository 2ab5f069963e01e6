/*
 * net_priv: what the files of lib/net share and nobody else may use: byte order and unaligned
 * access, the RFC 1071 checksum primitives, counters, the lock, logging, and the entry points of
 * arp.c and dhcp.c. "_locked" functions are called with the stack's lock held.
 */
#ifndef APPS_NET_NET_PRIV_H
#define APPS_NET_NET_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/net/net.h"
#include "lib/net/net_wire.h"
#include "kernel/status.h"
#include "kernel/string.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "lib/net assumes a little-endian CPU (byte swaps and the checksum's native word order)"
#endif

/* The control counters: written with the lock held (timers, configuration, ARP/DHCP state, sends
 * from net_udp_send). */
#define NET_CTL NET_MAX_QUEUES

#define NET_NS_PER_S 1000000000ull
#define NET_LIKELY(x) __builtin_expect(!!(x), 1)
#define NET_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ---- byte order (a network-order value as it sits in memory, loaded as a native integer) ---- */
#define NET_BE16(x) ((uint16_t)((((x) & 0xFFu) << 8) | (((x) >> 8) & 0xFFu)))
#define NET_BE32(x)                                                                                          \
    ((uint32_t)((((x) & 0xFFu) << 24) | (((x) & 0xFF00u) << 8) | (((x) >> 8) & 0xFF00u) | (((x) >> 24) & 0xFFu)))
static inline uint16_t net_bswap16(uint16_t v)
{
    return __builtin_bswap16(v);
}
static inline uint32_t net_bswap32(uint32_t v)
{
    return __builtin_bswap32(v);
}

/* Unaligned loads and stores (frames start anywhere; the IP header sits at offset 14). The
 * __builtin_ form stays inline in the freestanding build (-ffreestanding implies -fno-builtin). */
static inline uint16_t net_ld16(const void *p)
{
    uint16_t v;
    __builtin_memcpy(&v, p, 2);
    return v;
}
static inline uint32_t net_ld32(const void *p)
{
    uint32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}
static inline uint64_t net_ld64(const void *p)
{
    uint64_t v;
    __builtin_memcpy(&v, p, 8);
    return v;
}
static inline void net_st16(void *p, uint16_t v)
{
    __builtin_memcpy(p, &v, 2);
}
static inline void net_st32(void *p, uint32_t v)
{
    __builtin_memcpy(p, &v, 4);
}
static inline void net_mac_copy(void *dst, const void *src)
{
    __builtin_memcpy(dst, src, 6);
}
static inline bool net_mac_eq(const uint8_t *a, const uint8_t *b)
{
    return net_ld32(a) == net_ld32(b) && net_ld16(a + 4) == net_ld16(b + 4);
}

/* ---- RFC 1071 checksum ----
 * A partial sum is a 64-bit one's complement sum of the bytes taken as native (little-endian)
 * words: one's complement addition commutes with the byte swap, so folding it to 16 bits and
 * storing the native value gives the right bytes on the wire (RFC 1071 2 (B)). Every range summed
 * separately must start at an even offset of the checksummed data (an odd trailing byte is the
 * high-order byte of a zero-padded 16-bit word in network order). */
uint64_t net_csum_partial(const void *data, size_t len, uint64_t sum);
/* The same, while copying len bytes from src to dst (non-overlapping). */
uint64_t net_csum_copy(void *dst, const void *src, size_t len, uint64_t sum);

static inline uint64_t net_csum_add(uint64_t a, uint64_t b)
{
    a += b;
    return a + (a < b); /* end-around carry */
}

/* 64 -> 16 bits; 0xFFFF for a range whose checksum verifies. */
static inline uint16_t net_csum_fold(uint64_t s)
{
    s = (s >> 32) + (s & 0xFFFFFFFFu);
    s = (s >> 32) + (s & 0xFFFFFFFFu);
    uint32_t t = (uint32_t)s;
    t = (t >> 16) + (t & 0xFFFFu);
    t = (t >> 16) + (t & 0xFFFFu);
    return (uint16_t)t;
}

/* The 20-byte IPv4 header checksum (five native words, no carry can leave 64 bits). */
static inline uint16_t net_ip_hdr_csum(const void *hdr)
{
    const uint8_t *h = hdr;
    uint64_t s = (uint64_t)net_ld32(h) + net_ld32(h + 4) + net_ld32(h + 8) + net_ld32(h + 12) + net_ld32(h + 16);
    return (uint16_t)~net_csum_fold(s);
}

/* ---- counters ---- */
static inline void net_cnt_add(struct net_counters *c, enum net_stat_id id, uint64_t v)
{
    /* Only the owner writes (one queue's net_input, or the lock holder): a relaxed load and store
     * (plain moves on x86) keep net_get_stats' concurrent reads race-free. */
    __atomic_store_n(&c->c[id], __atomic_load_n(&c->c[id], __ATOMIC_RELAXED) + v, __ATOMIC_RELAXED);
}
#define NET_CNT(ctr, name) net_cnt_add((ctr), NET_STAT_##name, 1)

static inline struct net_counters *net_ctl(struct net_if *nif)
{
    return &nif->q[NET_CTL];
}

/* ---- lock ---- */
static inline void net_lock(const struct net_if *nif)
{
    if (nif->ops.lock)
        nif->ops.lock(nif->ops.ctx);
}
static inline void net_unlock(const struct net_if *nif)
{
    if (nif->ops.unlock)
        nif->ops.unlock(nif->ops.ctx);
}

/* ---- time ---- */
static inline bool net_time_reached(uint64_t now, uint64_t deadline)
{
    return (int64_t)(now - deadline) >= 0;
}
static inline uint64_t net_sat_add(uint64_t a, uint64_t b)
{
    return a + b < a ? UINT64_MAX : a + b;
}

/* ---- addresses ---- */
static inline uint32_t net_addr_ip(uint64_t addr)
{
    return (uint32_t)addr;
}
static inline uint64_t net_load_addr(const struct net_if *nif)
{
    return __atomic_load_n(&nif->addr, __ATOMIC_ACQUIRE);
}
/* A unicast address a host may use or talk to: not 0.x, loopback, multicast/class E or broadcast
 * (network order). */
static inline bool net_ip_unicast(uint32_t ip_be)
{
    uint8_t a = (uint8_t)ip_be;
    return a != 0 && a != 127 && a < 224;
}

/* ---- net.c, shared ---- */
/* A log line through ops->log, rate-limited (lock held). */
void net_log_locked(struct net_if *nif, uint64_t now, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Builds and sends one UDP frame (headers, payload copied with the checksum, padding). */
status_t net_udp_tx(struct net_if *nif, uint32_t queue, struct net_counters *ctr, const uint8_t dst_mac[6],
                    uint32_t src_be, uint32_t dst_be, uint16_t sport_be, uint16_t dport_be, const void *payload,
                    uint32_t len);
/* Our address becomes ip/mask/gw (network order; ip 0: none). Announces a new address. */
void net_config_set_locked(struct net_if *nif, uint32_t ip_be, uint32_t mask_be, uint32_t gw_be, uint64_t now);
/* "10.0.0.2" into a 16-byte buffer (network order input) for logs. */
const char *net_ip_str(char buf[16], uint32_t ip_be);

/* ---- arp.c ---- */
/* An ARP frame (Ethernet header included) from net_input(queue); takes the lock itself. */
void net_arp_input(struct net_if *nif, uint32_t queue, struct net_counters *ctr, const uint8_t *frame,
                   uint32_t len, uint64_t now);
/* The MAC of an on-link address: STATUS_OK, or STATUS_RETRY (a request is out), or STATUS_NOT_FOUND
 * (it did not answer). Requests go on `queue`. */
status_t net_arp_resolve_locked(struct net_if *nif, uint32_t queue, uint32_t ip_be, uint64_t now, uint8_t mac[6]);
void net_arp_tick_locked(struct net_if *nif, uint64_t now);
void net_arp_flush_locked(struct net_if *nif);
/* Sends a gratuitous ARP for our address now and arms the second one. */
void net_arp_announce_locked(struct net_if *nif, uint64_t now);

/* ---- dhcp.c ---- */
/* The UDP payload of a datagram from port 67 to port 68 (checksums verified). src_mac: the frame's
 * source; src_be: the IP source. */
void net_dhcp_input_locked(struct net_if *nif, uint32_t queue, const uint8_t src_mac[6], uint32_t src_be,
                           const uint8_t *msg, uint32_t len, uint64_t now);
void net_dhcp_tick_locked(struct net_if *nif, uint64_t now);
void net_dhcp_link_up_locked(struct net_if *nif, uint64_t now);
status_t net_dhcp_start_locked(struct net_if *nif, uint64_t now);
void net_dhcp_stop_locked(struct net_if *nif);

#endif
