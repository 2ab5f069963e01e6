/*
 * arp: ARP for IPv4 over Ethernet (RFC 826), the cache and the announcements (RFC 5227 2.3/2.4).
 *
 * Receive (RFC 826 "Packet Reception", restricted): a well-formed packet whose sender address is in
 * the cache updates that entry ("merge"); one whose target is our address also adds its sender and,
 * if a request, is answered on the queue it came in on. Everything else is counted and dropped.
 * A packet claiming our address from another MAC is a conflict: counted, logged, and defended with
 * one announcement at most every 10 s (RFC 5227 2.4 (b)); nothing is learned from it.
 *
 * The cache (NET_ARP_ENTRIES, linear search: only the control paths use it, under the lock):
 * INCOMPLETE (requests every NET_ARP_RETRY_NS, NET_ARP_TRIES of them) -> REACHABLE (for
 * NET_ARP_REACHABLE_NS after the last confirmation; in its last 30 s a use sends one unicast
 * request to refresh it, RFC 1122 2.3.2.1) or FAILED (NET_ARP_FAILED_NS, then freed). When full,
 * the least recently used entry is replaced.
 */
#include "lib/net/net_priv.h"

enum { ARP_FREE = 0, ARP_INCOMPLETE, ARP_REACHABLE, ARP_FAILED };

#define ARP_REFRESH_NS (30ull * NET_NS_PER_S)
#define ARP_DEFEND_NS (10ull * NET_NS_PER_S)

static const uint8_t bcast_mac[6] = { 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF };
static const uint8_t zero_mac[6];

/* One ARP frame: eth_dst, then the packet (sender: us). */
static void arp_send(struct net_if *nif, uint32_t queue, struct net_counters *ctr, uint16_t op,
                     const uint8_t eth_dst[6], const uint8_t tha[6], uint32_t tpa_be, uint32_t spa_be)
{
    const uint32_t flen = NET_ETH_HLEN + sizeof(struct net_arp);
    uint8_t *f = nif->ops.tx_begin(nif->ops.tx_ctx, queue, NET_ETH_MIN_FRAME);
    if (!f) {
        NET_CNT(ctr, tx_no_buffer);
        return;
    }
    net_mac_copy(f, eth_dst);
    net_mac_copy(f + 6, nif->mac);
    net_st16(f + 12, NET_BE16(NET_ETHERTYPE_ARP));
    uint8_t *a = f + NET_ETH_HLEN;
    net_st16(a, NET_BE16(NET_ARP_HTYPE_ETHER));
    net_st16(a + 2, NET_BE16(NET_ETHERTYPE_IPV4));
    a[4] = 6;
    a[5] = 4;
    net_st16(a + 6, net_bswap16(op));
    net_mac_copy(a + 8, nif->mac);
    net_st32(a + 14, spa_be);
    net_mac_copy(a + 18, tha);
    net_st32(a + 24, tpa_be);
    memset(f + flen, 0, NET_ETH_MIN_FRAME - flen);
    if (nif->ops.tx_end(nif->ops.tx_ctx, queue, f, NET_ETH_MIN_FRAME) != STATUS_OK) {
        NET_CNT(ctr, tx_errors);
        return;
    }
    NET_CNT(ctr, tx_frames);
    net_cnt_add(ctr, NET_STAT_tx_bytes, NET_ETH_MIN_FRAME);
}

/* A request for ip_be (broadcast, or unicast to a cached MAC for a refresh), lock held. */
static void arp_request_locked(struct net_if *nif, uint32_t queue, uint32_t ip_be, const uint8_t *to)
{
    if (!nif->link_up || !nif->ip_be)
        return;
    arp_send(nif, queue, net_ctl(nif), NET_ARP_OP_REQUEST, to ? to : bcast_mac, zero_mac, ip_be, nif->ip_be);
    NET_CNT(net_ctl(nif), arp_requests_out);
}

static void announce_locked(struct net_if *nif, uint32_t queue)
{
    if (!nif->link_up || !nif->ip_be)
        return;
    /* RFC 5227 2.3 ARP Announcement: a request with sender and target both our address. */
    arp_send(nif, queue, net_ctl(nif), NET_ARP_OP_REQUEST, bcast_mac, zero_mac, nif->ip_be, nif->ip_be);
    NET_CNT(net_ctl(nif), arp_announce_out);
}

void net_arp_announce_locked(struct net_if *nif, uint64_t now)
{
    announce_locked(nif, nif->ops.ctl_queue);
    nif->announce_left = 1;
    nif->announce_ns = now + NET_ANNOUNCE_GAP_NS;
}

static struct net_arp_entry *arp_find(struct net_if *nif, uint32_t ip_be)
{
    for (uint32_t i = 0; i < NET_ARP_ENTRIES; i++)
        if (nif->arp[i].state != ARP_FREE && nif->arp[i].ip_be == ip_be)
            return &nif->arp[i];
    return NULL;
}

/* A free entry, else the least recently used one (failed ones first). */
static struct net_arp_entry *arp_alloc(struct net_if *nif, uint32_t ip_be, uint64_t now)
{
    struct net_arp_entry *best = NULL;
    for (uint32_t i = 0; i < NET_ARP_ENTRIES; i++) {
        struct net_arp_entry *e = &nif->arp[i];
        if (e->state == ARP_FREE) {
            best = e;
            break;
        }
        if (!best || (e->state == ARP_FAILED && best->state != ARP_FAILED) ||
            ((e->state == ARP_FAILED) == (best->state == ARP_FAILED) && (int64_t)(e->used_ns - best->used_ns) < 0))
            best = e;
    }
    memset(best, 0, sizeof *best);
    best->ip_be = ip_be;
    best->used_ns = now;
    return best;
}

static void arp_confirm(struct net_arp_entry *e, const uint8_t mac[6], uint64_t now)
{
    net_mac_copy(e->mac, mac);
    e->state = ARP_REACHABLE;
    e->tries = 0;
    e->refreshing = false;
    e->deadline_ns = now + NET_ARP_REACHABLE_NS;
    e->used_ns = now;
}

void net_arp_input(struct net_if *nif, uint32_t queue, struct net_counters *ctr, const uint8_t *frame,
                   uint32_t len, uint64_t now)
{
    if (len < NET_ETH_HLEN + sizeof(struct net_arp)) { /* longer: Ethernet padding */
        NET_CNT(ctr, arp_bad);
        return;
    }
    const uint8_t *a = frame + NET_ETH_HLEN;
    uint16_t op = net_ld16(a + 6);
    uint8_t sha[6];
    net_mac_copy(sha, a + 8);
    uint32_t spa = net_ld32(a + 14), tpa = net_ld32(a + 24);
    if (net_ld16(a) != NET_BE16(NET_ARP_HTYPE_ETHER) || net_ld16(a + 2) != NET_BE16(NET_ETHERTYPE_IPV4) ||
        a[4] != 6 || a[5] != 4 || (op != NET_BE16(NET_ARP_OP_REQUEST) && op != NET_BE16(NET_ARP_OP_REPLY)) ||
        (sha[0] & 1) || net_mac_eq(sha, zero_mac) || (spa != 0 && !net_ip_unicast(spa))) {
        NET_CNT(ctr, arp_bad);
        return;
    }
    bool is_request = op == NET_BE16(NET_ARP_OP_REQUEST);

    net_lock(nif);
    nif->now_ns = now;
    uint32_t me = nif->ip_be;
    if (!me) {
        net_unlock(nif);
        NET_CNT(ctr, arp_ignored);
        return;
    }
    if (spa == me) {
        if (!net_mac_eq(sha, nif->mac)) {
            NET_CNT(ctr, arp_conflict);
            char ip[16], mac[18];
            net_format_mac(mac, sizeof mac, sha);
            net_log_locked(nif, now, "arp: address conflict: %s is also claimed by %s", net_ip_str(ip, me), mac);
            if (net_time_reached(now, nif->defend_ns + ARP_DEFEND_NS) || !nif->defend_ns) {
                nif->defend_ns = now ? now : 1;
                announce_locked(nif, nif->ops.ctl_queue);
            }
        } else {
            NET_CNT(ctr, arp_ignored); /* our own announcement reflected */
        }
        net_unlock(nif);
        return;
    }
    bool for_us = tpa == me;
    bool learned = false;
    if (spa != 0) { /* a probe (sender 0.0.0.0, RFC 5227 2.1.1) teaches nothing */
        struct net_arp_entry *e = arp_find(nif, spa);
        if (!e && for_us)
            e = arp_alloc(nif, spa, now);
        if (e) {
            arp_confirm(e, sha, now);
            learned = true;
        }
    }
    net_unlock(nif);

    if (for_us && is_request) {
        /* RFC 826: swap the fields, put ours in the sender's, send to the requester. */
        arp_send(nif, queue, ctr, NET_ARP_OP_REPLY, sha, sha, spa, me);
        NET_CNT(ctr, arp_requests_in);
    } else if (learned) {
        NET_CNT(ctr, arp_replies_in);
    } else {
        NET_CNT(ctr, arp_ignored);
    }
}

status_t net_arp_resolve_locked(struct net_if *nif, uint32_t queue, uint32_t ip_be, uint64_t now, uint8_t mac[6])
{
    struct net_arp_entry *e = arp_find(nif, ip_be);
    if (e) {
        e->used_ns = now;
        if (e->state == ARP_INCOMPLETE)
            return STATUS_RETRY;
        if (e->state == ARP_FAILED)
            return STATUS_NOT_FOUND;
        net_mac_copy(mac, e->mac);
        if (!e->refreshing && (int64_t)(e->deadline_ns - now) < (int64_t)ARP_REFRESH_NS) {
            e->refreshing = true;
            arp_request_locked(nif, queue, ip_be, e->mac);
        }
        return STATUS_OK;
    }
    e = arp_alloc(nif, ip_be, now);
    e->state = ARP_INCOMPLETE;
    e->tries = 1;
    e->deadline_ns = now + NET_ARP_RETRY_NS;
    arp_request_locked(nif, queue, ip_be, NULL);
    return STATUS_RETRY;
}

void net_arp_tick_locked(struct net_if *nif, uint64_t now)
{
    for (uint32_t i = 0; i < NET_ARP_ENTRIES; i++) {
        struct net_arp_entry *e = &nif->arp[i];
        if (e->state == ARP_FREE || !net_time_reached(now, e->deadline_ns))
            continue;
        if (e->state == ARP_INCOMPLETE && e->tries < NET_ARP_TRIES) {
            e->tries++;
            e->deadline_ns = now + NET_ARP_RETRY_NS;
            arp_request_locked(nif, nif->ops.ctl_queue, e->ip_be, NULL);
        } else if (e->state == ARP_INCOMPLETE) {
            e->state = ARP_FAILED;
            e->deadline_ns = now + NET_ARP_FAILED_NS;
        } else {
            memset(e, 0, sizeof *e); /* REACHABLE expired, FAILED hold over */
        }
    }
    if (nif->announce_left && net_time_reached(now, nif->announce_ns)) {
        nif->announce_left--;
        nif->announce_ns = now + NET_ANNOUNCE_GAP_NS;
        announce_locked(nif, nif->ops.ctl_queue);
    }
}

void net_arp_flush_locked(struct net_if *nif)
{
    memset(nif->arp, 0, sizeof nif->arp);
}
