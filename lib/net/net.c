/*
 * net: set-up, the receive path (Ethernet II, IPv4, ICMP echo, UDP), the UDP transmit paths, the
 * configuration, the timers and the counters. ARP is in arp.c, the DHCP client in dhcp.c, the
 * command-line helpers in util.c, the checksum in csum.c. Contract: net.h.
 *
 * The per-packet path (net_input -> handler -> net_udp_reply) touches: the frame, nif's read-mostly
 * words (mac, mtu, addr, the bindings), the queue's own counters and the tx buffer. No lock, no
 * shared writes, no ARP lookup (replies go to the frame's source MAC).
 */
#include <stdarg.h>

#include "lib/net/net_priv.h"
#include "kernel/fmt.h"

/* ---- logging (lock held) ---- */

#define LOG_BURST 20000u             /* milli-lines */
#define LOG_NS_PER_MILLI 100000ull   /* 10 lines per second */
#define SUMMARY_NS (10ull * NET_NS_PER_S)

void net_log_locked(struct net_if *nif, uint64_t now, const char *fmt, ...)
{
    if (!nif->ops.log)
        return;
    if (net_time_reached(now, nif->log_ns)) {
        uint64_t add = (now - nif->log_ns) / LOG_NS_PER_MILLI;
        if (add) {
            nif->log_tokens = add >= LOG_BURST - nif->log_tokens ? LOG_BURST : nif->log_tokens + (uint32_t)add;
            nif->log_ns += add * LOG_NS_PER_MILLI;
        }
    } else {
        nif->log_ns = now; /* the caller's clock went backwards: restart the refill from here */
    }
    if (nif->log_tokens < 1000) {
        nif->log_suppressed++;
        return;
    }
    char line[160];
    if (nif->log_suppressed) {
        if (nif->log_tokens < 2000) {
            nif->log_suppressed++;
            return;
        }
        nif->log_tokens -= 1000;
        fmt_snprintf(line, sizeof line, "net: %u log lines suppressed (rate limit)", nif->log_suppressed);
        nif->log_suppressed = 0;
        nif->ops.log(nif->ops.ctx, line);
    }
    nif->log_tokens -= 1000;
    va_list ap;
    va_start(ap, fmt);
    fmt_vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    nif->ops.log(nif->ops.ctx, line);
}

const char *net_ip_str(char buf[16], uint32_t ip_be)
{
    net_format_ipv4(buf, 16, net_bswap32(ip_be));
    return buf;
}

/* ---- set-up ---- */

status_t net_if_init(struct net_if *nif, const uint8_t mac[6], uint32_t mtu, uint32_t queues,
                     const struct net_ops *ops)
{
    if (!nif || !mac || !ops || !ops->tx_begin || !ops->tx_end || (mac[0] & 1) || mtu < NET_MTU_MIN ||
        mtu > NET_MTU_MAX || queues < 1 || queues > NET_MAX_QUEUES || ops->ctl_queue >= queues ||
        !(ops->lock == NULL) != !(ops->unlock == NULL))
        return STATUS_INVALID_PARAMETER;
    static const uint8_t zero[6];
    if (memcmp(mac, zero, 6) == 0)
        return STATUS_INVALID_PARAMETER;
    memset(nif, 0, sizeof *nif);
    net_mac_copy(nif->mac, mac);
    nif->mtu = mtu;
    nif->queues = queues;
    nif->ops = *ops;
    if (!nif->ops.tx_ctx)
        nif->ops.tx_ctx = nif->ops.ctx;
    nif->link_up = true;
    nif->log_tokens = LOG_BURST;
    for (uint32_t q = 0; q <= NET_MAX_QUEUES; q++)
        nif->q[q].ip_id = (uint16_t)(q << 10);
    /* The DHCP client's random numbers: seeded from the MAC (distinct per interface); each start
     * mixes the time in too. */
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < 6; i++)
        seed = (seed ^ mac[i]) * 0x100000001B3ull;
    nif->dhcp.rng = seed | 1;
    return STATUS_OK;
}

/* ---- transmit ---- */

static inline __attribute__((always_inline)) void put_ip_hdr(uint8_t *h, uint8_t tos, uint32_t total, uint16_t id,
                                                             uint8_t proto, uint32_t src_be, uint32_t dst_be)
{
    h[0] = 0x45;
    h[1] = tos;
    net_st16(h + 2, net_bswap16((uint16_t)total));
    net_st16(h + 4, id);
    net_st16(h + 6, NET_BE16(NET_IP_DF));
    h[8] = NET_IP_TTL;
    h[9] = proto;
    net_st16(h + 10, 0);
    net_st32(h + 12, src_be);
    net_st32(h + 16, dst_be);
    net_st16(h + 10, net_ip_hdr_csum(h));
}

static inline __attribute__((always_inline)) status_t tx_finish(struct net_if *nif, uint32_t queue,
                                                                struct net_counters *ctr, uint8_t *f, uint32_t flen)
{
    uint32_t alen = flen;
    if (flen < NET_ETH_MIN_FRAME) {
        memset(f + flen, 0, NET_ETH_MIN_FRAME - flen);
        alen = NET_ETH_MIN_FRAME;
    }
    status_t st = nif->ops.tx_end(nif->ops.tx_ctx, queue, f, alen);
    if (NET_UNLIKELY(st != STATUS_OK)) {
        NET_CNT(ctr, tx_errors);
        return st;
    }
    NET_CNT(ctr, tx_frames);
    net_cnt_add(ctr, NET_STAT_tx_bytes, alen);
    return STATUS_OK;
}

static inline __attribute__((always_inline)) uint8_t *tx_start(struct net_if *nif, uint32_t queue,
                                                               struct net_counters *ctr, uint32_t flen)
{
    uint8_t *f = nif->ops.tx_begin(nif->ops.tx_ctx, queue, flen < NET_ETH_MIN_FRAME ? NET_ETH_MIN_FRAME : flen);
    if (NET_UNLIKELY(!f))
        NET_CNT(ctr, tx_no_buffer);
    return f;
}

static inline __attribute__((always_inline)) status_t udp_tx(struct net_if *nif, uint32_t queue,
                                                             struct net_counters *ctr, const uint8_t dst_mac[6],
                                                             uint32_t src_be, uint32_t dst_be, uint16_t sport_be,
                                                             uint16_t dport_be, const void *payload, uint32_t len)
{
    uint32_t flen = NET_UDP_HLEN + len;
    uint8_t *f = tx_start(nif, queue, ctr, flen);
    if (NET_UNLIKELY(!f))
        return STATUS_NO_SPACE;
    net_mac_copy(f, dst_mac);
    net_mac_copy(f + 6, nif->mac);
    net_st16(f + 12, NET_BE16(NET_ETHERTYPE_IPV4));
    uint16_t id = ctr->ip_id++;
    put_ip_hdr(f + 14, 0, 28 + len, id, NET_IP_PROTO_UDP, src_be, dst_be);
    uint16_t ulen_be = net_bswap16((uint16_t)(8 + len));
    uint8_t *u = f + 34;
    net_st16(u, sport_be);
    net_st16(u + 2, dport_be);
    net_st16(u + 4, ulen_be);
    /* pseudo-header (src, dst, 0/17, length) + the header (ports, length; checksum 0) + data */
    uint64_t s = (uint64_t)src_be + dst_be + NET_BE16(NET_IP_PROTO_UDP) + 2u * ulen_be + sport_be + dport_be;
    s = net_csum_copy(u + 8, payload, len, s);
    uint16_t c = (uint16_t)~net_csum_fold(s);
    net_st16(u + 6, c ? c : 0xFFFF);
    status_t st = tx_finish(nif, queue, ctr, f, flen);
    if (NET_LIKELY(st == STATUS_OK))
        NET_CNT(ctr, udp_out);
    return st;
}

status_t net_udp_tx(struct net_if *nif, uint32_t queue, struct net_counters *ctr, const uint8_t dst_mac[6],
                    uint32_t src_be, uint32_t dst_be, uint16_t sport_be, uint16_t dport_be, const void *payload,
                    uint32_t len)
{
    return udp_tx(nif, queue, ctr, dst_mac, src_be, dst_be, sport_be, dport_be, payload, len);
}

status_t net_udp_reply(struct net_if *nif, uint32_t queue, const struct net_udp_meta *m, const void *payload,
                       uint32_t len)
{
    if (NET_UNLIKELY(queue >= nif->queues)) {
        __atomic_fetch_add(&net_ctl(nif)->c[NET_STAT_bad_queue], 1, __ATOMIC_RELAXED);
        return STATUS_INVALID_PARAMETER;
    }
    if (NET_UNLIKELY(len > NET_UDP_MAX_PAYLOAD(nif->mtu)))
        return STATUS_INVALID_PARAMETER;
    uint32_t me = net_addr_ip(net_load_addr(nif));
    if (NET_UNLIKELY(!me))
        return STATUS_INVALID_STATE;
    return udp_tx(nif, queue, &nif->q[queue], m->src_mac, me, net_bswap32(m->src_ip), net_bswap16(m->dst_port),
                  net_bswap16(m->src_port), payload, len);
}

status_t net_udp_send(struct net_if *nif, uint32_t queue, uint32_t dst_ip, uint16_t dst_port, uint16_t src_port,
                      const void *payload, uint32_t len)
{
    if (queue >= nif->queues || len > NET_UDP_MAX_PAYLOAD(nif->mtu) || dst_ip == 0 || dst_port == 0 ||
        src_port == 0 || (!payload && len))
        return STATUS_INVALID_PARAMETER;
    uint32_t dst_be = net_bswap32(dst_ip);
    if (dst_ip >= 0xE0000000u && dst_ip != 0xFFFFFFFFu)
        return STATUS_NOT_SUPPORTED; /* multicast, class E */
    net_lock(nif);
    struct net_counters *ctr = net_ctl(nif);
    status_t st;
    uint8_t mac[6];
    uint32_t me = nif->ip_be, mask = nif->mask_be;
    if (!me) {
        st = STATUS_INVALID_STATE;
    } else if (dst_be == 0xFFFFFFFFu || (mask != 0xFFFFFFFFu && mask != NET_BE32(0xFFFFFFFEu) &&
                                         dst_be == (me | ~mask))) {
        memset(mac, 0xFF, 6);
        st = STATUS_OK;
    } else {
        uint32_t hop = dst_be;
        if ((dst_be & mask) != (me & mask))
            hop = nif->gw_be;
        st = hop ? net_arp_resolve_locked(nif, queue, hop, nif->now_ns, mac) : STATUS_NOT_FOUND;
    }
    if (st == STATUS_OK)
        st = udp_tx(nif, queue, ctr, mac, me, dst_be, net_bswap16(src_port), net_bswap16(dst_port), payload, len);
    else if (st == STATUS_RETRY || st == STATUS_NOT_FOUND)
        NET_CNT(ctr, tx_unresolved);
    net_unlock(nif);
    return st;
}

/* ---- receive ---- */

static void icmp_input(struct net_if *nif, uint32_t queue, struct net_counters *ctr, const uint8_t *f,
                       const uint8_t *ip, const uint8_t *icmp, uint32_t len, uint32_t me, uint32_t src_be, bool bcast)
{
    if (len < sizeof(struct net_icmp_echo) || net_csum_fold(net_csum_partial(icmp, len, 0)) != 0xFFFF) {
        NET_CNT(ctr, bad_icmp);
        return;
    }
    if (net_ld16(icmp) != NET_ICMP_ECHO) { /* type 8, code 0 as a native word */
        NET_CNT(ctr, icmp_other);
        return;
    }
    if (bcast) { /* RFC 1122 3.2.2.6: MAY be silently discarded (and is: no smurf amplifier) */
        NET_CNT(ctr, icmp_broadcast);
        return;
    }
    uint32_t flen = 34 + len;
    uint8_t *o = tx_start(nif, queue, ctr, flen);
    if (!o)
        return;
    net_mac_copy(o, f + 6);
    net_mac_copy(o + 6, nif->mac);
    net_st16(o + 12, NET_BE16(NET_ETHERTYPE_IPV4));
    uint16_t id = ctr->ip_id++;
    put_ip_hdr(o + 14, ip[1], 20 + len, id, NET_IP_PROTO_ICMP, me, src_be);
    /* Echo reply: type 0, code 0, the request's identifier, sequence and data; the checksum over
     * the whole message is computed while copying (what is sent is what is summed). */
    uint8_t *r = o + 34;
    net_st32(r, 0);
    uint64_t s = net_csum_copy(r + 4, icmp + 4, len - 4, 0);
    net_st16(r + 2, (uint16_t)~net_csum_fold(s));
    if (tx_finish(nif, queue, ctr, o, flen) == STATUS_OK)
        NET_CNT(ctr, icmp_echo);
}

/* mode: 0 unicast to us, 1 broadcast, 2 not ours but UDP while the DHCP client listens */
static inline __attribute__((always_inline)) void udp_input(struct net_if *nif, uint32_t queue,
                                                            struct net_counters *ctr, const uint8_t *f,
                                                            const uint8_t *ip, const uint8_t *u, uint32_t len,
                                                            uint32_t src_be, uint32_t dst_be, int mode, uint64_t now)
{
    if (NET_UNLIKELY(len < sizeof(struct net_udp_hdr))) {
        NET_CNT(ctr, bad_udp_length);
        return;
    }
    uint32_t ulen = net_bswap16(net_ld16(u + 4));
    if (NET_UNLIKELY(ulen < 8 || ulen > len)) { /* shorter than the IP payload: the rest is ignored */
        NET_CNT(ctr, bad_udp_length);
        return;
    }
    if (net_ld16(u + 6)) {
        uint64_t s = (uint64_t)src_be + dst_be + NET_BE16(NET_IP_PROTO_UDP) + net_bswap16((uint16_t)ulen);
        if (NET_UNLIKELY(net_csum_fold(net_csum_partial(u, ulen, s)) != 0xFFFF)) {
            NET_CNT(ctr, bad_udp_checksum);
            return;
        }
    }
    uint16_t sport = net_bswap16(net_ld16(u)), dport = net_bswap16(net_ld16(u + 2));
    if (NET_UNLIKELY(dport == NET_DHCP_CLIENT_PORT && sport == NET_DHCP_SERVER_PORT &&
                     __atomic_load_n(&nif->dhcp_listen, __ATOMIC_RELAXED))) {
        net_lock(nif);
        net_dhcp_input_locked(nif, queue, f + 6, src_be, u + 8, ulen - 8, now);
        net_unlock(nif);
        return;
    }
    if (NET_UNLIKELY(mode == 2)) {
        NET_CNT(ctr, ip_not_for_us);
        return;
    }
    uint32_t n = __atomic_load_n(&nif->nbind, __ATOMIC_ACQUIRE);
    for (uint32_t i = 0; i < n; i++) {
        const struct net_binding *b = &nif->bind[i];
        if (__atomic_load_n(&b->port, __ATOMIC_ACQUIRE) != dport)
            continue;
        net_udp_handler fn = b->fn;
        void *arg = b->arg;
        struct net_udp_meta m;
        net_mac_copy(m.src_mac, f + 6);
        m.src_port = sport;
        m.dst_port = dport;
        m.src_ip = net_bswap32(src_be);
        m.dst_ip = net_bswap32(dst_be);
        m.tos = ip[1];
        m.ttl = ip[8];
        m.broadcast = mode == 1;
        m.rx_ns = now;
        NET_CNT(ctr, udp_in);
        fn(nif, queue, &m, u + 8, ulen - 8, arg);
        return;
    }
    NET_CNT(ctr, no_port);
}

static inline __attribute__((always_inline)) void ip_input(struct net_if *nif, uint32_t queue,
                                                           struct net_counters *ctr, const uint8_t *f, uint32_t len,
                                                           bool l2bcast, uint64_t now)
{
    const uint8_t *ip = f + NET_ETH_HLEN;
    uint32_t avail = len - NET_ETH_HLEN;
    if (NET_UNLIKELY(avail < sizeof(struct net_ip_hdr))) {
        NET_CNT(ctr, bad_ip_header);
        return;
    }
    uint32_t vihl = ip[0];
    uint32_t ihl = (vihl & 15) * 4;
    uint32_t total = net_bswap16(net_ld16(ip + 2));
    if (NET_UNLIKELY((vihl >> 4) != 4 || ihl < 20 || ihl > avail || total < ihl)) {
        NET_CNT(ctr, bad_ip_header);
        return;
    }
    if (NET_UNLIKELY(total > avail)) { /* shorter: the rest is Ethernet padding, ignored */
        NET_CNT(ctr, ip_truncated);
        return;
    }
    uint16_t csum = ihl == 20 ? (uint16_t)~net_ip_hdr_csum(ip) : net_csum_fold(net_csum_partial(ip, ihl, 0));
    if (NET_UNLIKELY(csum != 0xFFFF)) {
        NET_CNT(ctr, bad_ip_checksum);
        return;
    }
    if (NET_UNLIKELY(net_ld16(ip + 6) & NET_BE16(NET_IP_MF | NET_IP_OFFSET_MASK))) {
        NET_CNT(ctr, fragments);
        return;
    }
    /* A host does not drop for a low TTL (RFC 1122 3.2.1.7); options are skipped (RFC 1122 3.2.1.8
     * lets a host ignore the ones it does not implement). */
    uint32_t src_be = net_ld32(ip + 12), dst_be = net_ld32(ip + 16);
    uint64_t addr = net_load_addr(nif);
    uint32_t me = (uint32_t)addr, bc = (uint32_t)(addr >> 32);
    if (NET_UNLIKELY(!net_ip_unicast(src_be) || (me && (src_be == me || src_be == bc)))) {
        NET_CNT(ctr, bad_ip_src); /* RFC 1122 3.2.1.3: a host discards these sources */
        return;
    }
    uint8_t proto = ip[9];
    int mode;
    if (me && dst_be == me && !l2bcast)
        mode = 0;
    else if (me && (dst_be == 0xFFFFFFFFu || dst_be == bc))
        mode = 1; /* without an address only the DHCP client hears broadcasts */
    else if (proto == NET_IP_PROTO_UDP && __atomic_load_n(&nif->dhcp_listen, __ATOMIC_RELAXED))
        mode = 2; /* the DHCP client's answers may come to the offered address, or in a link broadcast */
    else {
        NET_CNT(ctr, ip_not_for_us); /* incl. unicast IP in a link broadcast (RFC 1122 3.3.6) */
        return;
    }
    const uint8_t *pl = ip + ihl;
    uint32_t plen = total - ihl;
    if (NET_LIKELY(proto == NET_IP_PROTO_UDP))
        udp_input(nif, queue, ctr, f, ip, pl, plen, src_be, dst_be, mode, now);
    else if (proto == NET_IP_PROTO_ICMP && mode != 2)
        icmp_input(nif, queue, ctr, f, ip, pl, plen, me, src_be, mode == 1);
    else if (mode == 2)
        NET_CNT(ctr, ip_not_for_us);
    else
        NET_CNT(ctr, ip_proto);
}

void net_input(struct net_if *nif, uint32_t queue, const void *frame, uint32_t len, uint64_t now_ns)
{
    if (now_ns == NET_NOW)
        now_ns = nif->ops.clock ? nif->ops.clock() : 0;
    if (NET_UNLIKELY(queue >= nif->queues)) {
        __atomic_fetch_add(&net_ctl(nif)->c[NET_STAT_bad_queue], 1, __ATOMIC_RELAXED);
        return;
    }
    struct net_counters *ctr = &nif->q[queue];
    NET_CNT(ctr, rx_frames);
    net_cnt_add(ctr, NET_STAT_rx_bytes, len);
    if (NET_UNLIKELY(len < NET_ETH_HLEN)) {
        NET_CNT(ctr, too_short);
        return;
    }
    if (NET_UNLIKELY(len > nif->mtu + NET_ETH_HLEN)) {
        NET_CNT(ctr, too_long);
        return;
    }
    const uint8_t *f = frame;
    uint32_t d0 = net_ld32(f);
    uint16_t d1 = net_ld16(f + 4);
    bool l2bcast = false;
    if (NET_UNLIKELY(d0 & 1)) { /* group address */
        if (d0 != 0xFFFFFFFFu || d1 != 0xFFFF) {
            NET_CNT(ctr, multicast);
            return;
        }
        l2bcast = true;
    } else if (NET_UNLIKELY(d0 != net_ld32(nif->mac) || d1 != net_ld16(nif->mac + 4))) {
        NET_CNT(ctr, not_for_us);
        return;
    }
    if (NET_UNLIKELY(f[6] & 1)) {
        NET_CNT(ctr, bad_src_mac);
        return;
    }
    uint16_t type = net_ld16(f + 12);
    if (NET_LIKELY(type == NET_BE16(NET_ETHERTYPE_IPV4)))
        ip_input(nif, queue, ctr, f, len, l2bcast, now_ns);
    else if (type == NET_BE16(NET_ETHERTYPE_ARP))
        net_arp_input(nif, queue, ctr, f, len, now_ns);
    else if (type == NET_BE16(NET_ETHERTYPE_VLAN) || type == NET_BE16(NET_ETHERTYPE_QINQ) ||
             type == NET_BE16(NET_ETHERTYPE_QINQ_OLD))
        NET_CNT(ctr, vlan);
    else
        NET_CNT(ctr, ethertype);
}

/* ---- UDP bindings ---- */

status_t net_udp_bind(struct net_if *nif, uint16_t port, net_udp_handler fn, void *arg)
{
    if (port == 0 || !fn)
        return STATUS_INVALID_PARAMETER;
    net_lock(nif);
    status_t st = STATUS_NO_SPACE;
    int free_slot = -1;
    for (uint32_t i = 0; i < NET_UDP_BINDINGS; i++) {
        uint16_t p = nif->bind[i].port;
        if (p == port) {
            st = STATUS_EXISTS;
            free_slot = -1;
            break;
        }
        if (p == 0 && free_slot < 0)
            free_slot = (int)i;
    }
    if (free_slot >= 0) {
        struct net_binding *b = &nif->bind[free_slot];
        b->fn = fn;
        b->arg = arg;
        __atomic_store_n(&b->port, port, __ATOMIC_RELEASE);
        if ((uint32_t)free_slot >= nif->nbind)
            __atomic_store_n(&nif->nbind, (uint16_t)(free_slot + 1), __ATOMIC_RELEASE);
        st = STATUS_OK;
    }
    net_unlock(nif);
    return st;
}

status_t net_udp_unbind(struct net_if *nif, uint16_t port)
{
    if (port == 0)
        return STATUS_INVALID_PARAMETER;
    net_lock(nif);
    status_t st = STATUS_NOT_FOUND;
    for (uint32_t i = 0; i < NET_UDP_BINDINGS; i++)
        if (nif->bind[i].port == port) {
            __atomic_store_n(&nif->bind[i].port, 0, __ATOMIC_RELEASE);
            st = STATUS_OK;
            break;
        }
    net_unlock(nif);
    return st;
}

/* ---- configuration ---- */

void net_config_set_locked(struct net_if *nif, uint32_t ip_be, uint32_t mask_be, uint32_t gw_be, uint64_t now)
{
    bool changed = ip_be != nif->ip_be;
    nif->ip_be = ip_be;
    nif->mask_be = ip_be ? mask_be : 0;
    nif->gw_be = ip_be ? gw_be : 0;
    /* /31 and /32 have no broadcast address of their own (RFC 3021): only 255.255.255.255. */
    int prefix = net_mask_prefix(net_bswap32(mask_be));
    uint32_t bc = ip_be && prefix >= 0 && prefix <= 30 ? (ip_be | ~mask_be) : 0xFFFFFFFFu;
    if (!ip_be)
        bc = 0;
    __atomic_store_n(&nif->addr, (uint64_t)bc << 32 | ip_be, __ATOMIC_RELEASE);
    if (changed) {
        net_arp_flush_locked(nif); /* entries about a previous subnet */
        nif->announce_left = 0;
    }
    if (ip_be && changed)
        net_arp_announce_locked(nif, now);
}

status_t net_set_static(struct net_if *nif, uint32_t ip, uint32_t mask, uint32_t gw, uint64_t now_ns)
{
    if (ip == 0) {
        if (mask || gw)
            return STATUS_INVALID_PARAMETER;
    } else {
        int prefix = net_mask_prefix(mask);
        uint32_t ip_be = net_bswap32(ip), gw_be = net_bswap32(gw);
        if (!net_ip_unicast(ip_be) || prefix < 1)
            return STATUS_INVALID_PARAMETER;
        if (prefix <= 30 && ((ip & ~mask) == 0 || (ip & ~mask) == ~mask))
            return STATUS_INVALID_PARAMETER; /* the subnet's network or broadcast address */
        if (gw && (!net_ip_unicast(gw_be) || gw == ip || (gw & mask) != (ip & mask)))
            return STATUS_INVALID_PARAMETER;
    }
    net_lock(nif);
    nif->now_ns = now_ns;
    net_dhcp_stop_locked(nif);
    net_config_set_locked(nif, net_bswap32(ip), net_bswap32(mask), net_bswap32(gw), now_ns);
    nif->configured_static = ip != 0;
    if (ip) {
        char a[16], g[16];
        net_log_locked(nif, now_ns, "net: static address %s/%d gw %s", net_ip_str(a, net_bswap32(ip)),
                       net_mask_prefix(mask), gw ? net_ip_str(g, net_bswap32(gw)) : "none");
    } else {
        net_log_locked(nif, now_ns, "net: address removed");
    }
    net_unlock(nif);
    return STATUS_OK;
}

status_t net_dhcp_start(struct net_if *nif, uint64_t now_ns)
{
    net_lock(nif);
    nif->now_ns = now_ns;
    status_t st = net_dhcp_start_locked(nif, now_ns);
    if (st == STATUS_OK)
        nif->configured_static = false;
    net_unlock(nif);
    return st;
}

void net_dhcp_stop(struct net_if *nif)
{
    net_lock(nif);
    net_dhcp_stop_locked(nif);
    net_unlock(nif);
}

void net_link_changed(struct net_if *nif, bool up, uint64_t now_ns)
{
    net_lock(nif);
    nif->now_ns = now_ns;
    bool was = nif->link_up;
    nif->link_up = up;
    if (up != was)
        net_log_locked(nif, now_ns, "net: link %s", up ? "up" : "down");
    if (up) {
        net_arp_flush_locked(nif);
        if (nif->configured_static && nif->ip_be)
            net_arp_announce_locked(nif, now_ns);
        net_dhcp_link_up_locked(nif, now_ns);
    }
    net_unlock(nif);
}

bool net_configured(const struct net_if *nif)
{
    return net_addr_ip(net_load_addr(nif)) != 0;
}

uint32_t net_ip(const struct net_if *nif)
{
    return net_bswap32(net_addr_ip(net_load_addr(nif)));
}

void net_get_config(const struct net_if *nif, uint64_t now_ns, struct net_config *out)
{
    net_lock(nif);
    const struct net_dhcp *d = &nif->dhcp;
    out->ip = net_bswap32(nif->ip_be);
    out->mask = net_bswap32(nif->mask_be);
    out->gw = net_bswap32(nif->gw_be);
    out->dhcp = (enum net_dhcp_state)d->state;
    out->link_up = nif->link_up;
    out->dhcp_server = 0;
    out->lease_s = 0;
    out->lease_left_ns = out->t1_left_ns = out->t2_left_ns = 0;
    if (d->have_lease) {
        out->dhcp_server = net_bswap32(d->server_be);
        out->lease_s = d->lease_s;
        if (d->lease_s == 0xFFFFFFFFu) {
            out->lease_left_ns = out->t1_left_ns = out->t2_left_ns = UINT64_MAX;
        } else {
            uint64_t at[3] = { d->lease_s, d->t1_s, d->t2_s }, left[3];
            for (int i = 0; i < 3; i++) {
                uint64_t end = net_sat_add(d->bound_ns, at[i] * NET_NS_PER_S);
                left[i] = net_time_reached(now_ns, end) ? 0 : end - now_ns;
            }
            out->lease_left_ns = left[0];
            out->t1_left_ns = left[1];
            out->t2_left_ns = left[2];
        }
    }
    net_unlock(nif);
}

/* ---- timers ---- */

static bool summary_counts(enum net_stat_id id)
{
    /* Malformed input and transmit trouble; not the normal chatter of a LAN (other MACs,
     * multicast, unbound ports, IPv6, other ICMP). */
    switch (id) {
    case NET_STAT_too_short:
    case NET_STAT_too_long:
    case NET_STAT_bad_src_mac:
    case NET_STAT_bad_ip_header:
    case NET_STAT_ip_truncated:
    case NET_STAT_bad_ip_checksum:
    case NET_STAT_bad_ip_src:
    case NET_STAT_fragments:
    case NET_STAT_bad_icmp:
    case NET_STAT_bad_udp_length:
    case NET_STAT_bad_udp_checksum:
    case NET_STAT_arp_bad:
    case NET_STAT_arp_conflict:
    case NET_STAT_dhcp_bad:
    case NET_STAT_tx_no_buffer:
    case NET_STAT_tx_errors:
        return true;
    default:
        return false;
    }
}

static const char *const stat_names[NET_STAT__COUNT] = {
#define NET_STATS_NAME(name, what) #name,
    NET_STATS(NET_STATS_NAME)
#undef NET_STATS_NAME
};

static void stats_sum(const struct net_if *nif, uint64_t sum[NET_STAT__COUNT])
{
    for (int i = 0; i < NET_STAT__COUNT; i++)
        sum[i] = 0;
    for (uint32_t q = 0; q <= NET_MAX_QUEUES; q++) {
        if (q >= nif->queues && q != NET_CTL)
            continue;
        for (int i = 0; i < NET_STAT__COUNT; i++)
            sum[i] += __atomic_load_n(&nif->q[q].c[i], __ATOMIC_RELAXED);
    }
}

static void drop_summary_locked(struct net_if *nif, uint64_t now)
{
    if (!nif->summary_started) {
        nif->summary_started = true;
        nif->summary_ns = now + SUMMARY_NS;
        stats_sum(nif, nif->summary_prev);
        return;
    }
    if (!net_time_reached(now, nif->summary_ns))
        return;
    nif->summary_ns = now + SUMMARY_NS;
    uint64_t cur[NET_STAT__COUNT];
    stats_sum(nif, cur);
    char line[160];
    size_t n = (size_t)fmt_snprintf(line, sizeof line, "net: dropped in the last 10 s:");
    bool any = false;
    for (int i = 0; i < NET_STAT__COUNT; i++) {
        uint64_t d = cur[i] - nif->summary_prev[i];
        nif->summary_prev[i] = cur[i];
        if (!d || !summary_counts((enum net_stat_id)i) || n >= sizeof line)
            continue;
        any = true;
        n += (size_t)fmt_snprintf(line + n, sizeof line - n, " %s %llu", stat_names[i], (unsigned long long)d);
    }
    if (any)
        net_log_locked(nif, now, "%s", line);
}

void net_tick(struct net_if *nif, uint64_t now_ns)
{
    net_lock(nif);
    nif->now_ns = now_ns;
    net_arp_tick_locked(nif, now_ns);
    net_dhcp_tick_locked(nif, now_ns);
    drop_summary_locked(nif, now_ns);
    net_unlock(nif);
}

/* ---- counters ---- */

_Static_assert(sizeof(struct net_stats) == NET_STAT__COUNT * sizeof(uint64_t), "net_stats is the counter array");

void net_get_stats(const struct net_if *nif, struct net_stats *out)
{
    uint64_t sum[NET_STAT__COUNT];
    stats_sum(nif, sum);
    memcpy(out, sum, sizeof sum);
}
