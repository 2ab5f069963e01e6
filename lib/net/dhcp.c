/*
 * dhcp: the DHCP client (RFC 2131 4.4, figure 5; options RFC 2132), every function with the lock held.
 *
 *   start ----> SELECTING --OFFER--> REQUESTING --ACK--> BOUND --T1--> RENEWING --T2--> REBINDING
 *                  ^  DISCOVER          | REQUEST(50,54)   ^              | unicast       | broadcast
 *                  |                    | 4 tries          |--ACK---------+---------------+
 *                  +----NAK, no ACK, lease expiry----------+-----------NAK---------------+
 *   link up with a lease: REBOOTING (INIT-REBOOT: REQUEST with 50, broadcast) --ACK--> BOUND,
 *   --NAK--> SELECTING, no answer after 4 tries --> BOUND with the lease held (RFC 2131 3.2 4).
 *
 * Retransmissions (RFC 2131 4.1): 4, 8, 16, 32, 64, 64... s after the previous one, each +-1 s
 * (uniform, from a xorshift generator seeded with the MAC and the start time). RENEWING/REBINDING:
 * half the time left until T2 / the lease end, at least 60 s (RFC 2131 4.4.5). One xid per
 * exchange (DISCOVER...ACK, each renewal, each INIT-REBOOT); replies must carry it and our MAC in
 * chaddr. The address is not ARP-probed before use (no DHCPDECLINE); it is announced.
 *
 * Received messages: the fixed part (op BOOTREPLY, Ethernet, hlen 6, cookie), then the options,
 * bounded by the UDP payload: every option's length byte must be inside and its data must end
 * inside; END is required; 53 must be present with length 1; 1, 51, 54, 58, 59 must have length 4
 * and 3 a multiple of 4 (first router used); the first occurrence counts. Option 52 (overload) is
 * recognised but sname/file are never parsed for options.
 */
#include "lib/net/net_priv.h"

#define DHCP_REQUEST_TRIES 4
#define DHCP_MIN_WAIT_NS (60ull * NET_NS_PER_S)
#define DHCP_INFINITE 0xFFFFFFFFu

static const uint8_t bcast_mac[6] = { 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF };

const char *net_dhcp_state_name(enum net_dhcp_state s)
{
    switch (s) {
    case NET_DHCP_OFF: return "off";
    case NET_DHCP_SELECTING: return "selecting";
    case NET_DHCP_REQUESTING: return "requesting";
    case NET_DHCP_BOUND: return "bound";
    case NET_DHCP_RENEWING: return "renewing";
    case NET_DHCP_REBINDING: return "rebinding";
    case NET_DHCP_REBOOTING: return "rebooting";
    }
    return "unknown";
}

static uint64_t rng_next(struct net_dhcp *d)
{
    uint64_t x = d->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    d->rng = x;
    return x;
}

/* The wait after the tries-th transmission of a message: 4 << (tries - 1) s, at most 64 s, +-1 s. */
static uint64_t backoff_ns(struct net_dhcp *d)
{
    unsigned k = d->tries > 1 ? d->tries - 1u : 0u;
    uint64_t base = 4ull << (k < 4 ? k : 4);
    uint64_t jitter_ms = rng_next(d) % 2001; /* 0..2000 -> -1000..+1000 ms */
    return base * NET_NS_PER_S + jitter_ms * 1000000ull - 1000ull * 1000000ull;
}

/* RENEWING/REBINDING: half of what is left until `end`, at least 60 s, not past `end`. */
static uint64_t half_way_ns(uint64_t now, uint64_t end)
{
    uint64_t left = net_time_reached(now, end) ? 0 : end - now;
    uint64_t wait = left / 2 > DHCP_MIN_WAIT_NS ? left / 2 : DHCP_MIN_WAIT_NS;
    return wait < left ? now + wait : end;
}

static uint64_t lease_at(const struct net_dhcp *d, uint32_t s)
{
    return net_sat_add(d->bound_ns, (uint64_t)s * NET_NS_PER_S);
}

/* ---- sending ---- */

static void put_opt(uint8_t *o, uint32_t *n, uint8_t code, uint8_t len, const void *data)
{
    o[(*n)++] = code;
    o[(*n)++] = len;
    memcpy(o + *n, data, len);
    *n += len;
}

/* One client message of `type` for the current state. queue: where it goes out. */
static void dhcp_send(struct net_if *nif, uint32_t queue, uint8_t type, uint64_t now)
{
    struct net_dhcp *d = &nif->dhcp;
    if (!nif->link_up)
        return;
    struct {
        struct net_dhcp_msg m;
        uint8_t opts[NET_DHCP_MIN_MSG - sizeof(struct net_dhcp_msg)];
    } __attribute__((packed)) pkt;
    _Static_assert(sizeof pkt == NET_DHCP_MIN_MSG, "DHCP message buffer");
    memset(&pkt, 0, sizeof pkt);
    struct net_dhcp_msg *m = &pkt.m;
    bool renewing = d->state == NET_DHCP_RENEWING, rebinding = d->state == NET_DHCP_REBINDING;
    uint32_t ciaddr = renewing || rebinding ? nif->ip_be : 0;
    m->op = NET_BOOTREQUEST;
    m->htype = NET_ARP_HTYPE_ETHER;
    m->hlen = 6;
    m->xid = d->xid;
    uint64_t secs = net_time_reached(now, d->start_ns) ? (now - d->start_ns) / NET_NS_PER_S : 0;
    m->secs = net_bswap16((uint16_t)(secs > 0xFFFF ? 0xFFFF : secs));
    m->ciaddr = ciaddr;
    net_mac_copy(m->chaddr, nif->mac);
    m->cookie = NET_BE32(NET_DHCP_COOKIE);
    uint8_t *o = pkt.opts;
    uint32_t n = 0;
    put_opt(o, &n, NET_DHCP_OPT_MSG_TYPE, 1, &type);
    uint8_t cid[7] = { NET_ARP_HTYPE_ETHER };
    net_mac_copy(cid + 1, nif->mac);
    put_opt(o, &n, NET_DHCP_OPT_CLIENT_ID, sizeof cid, cid);
    if (type == NET_DHCPREQUEST && (d->state == NET_DHCP_REQUESTING || d->state == NET_DHCP_REBOOTING))
        put_opt(o, &n, NET_DHCP_OPT_REQ_IP, 4, &d->offered_be);
    if (type == NET_DHCPREQUEST && d->state == NET_DHCP_REQUESTING)
        put_opt(o, &n, NET_DHCP_OPT_SERVER_ID, 4, &d->server_be);
    static const uint8_t params[] = { NET_DHCP_OPT_MASK, NET_DHCP_OPT_ROUTER, NET_DHCP_OPT_LEASE,
                                      NET_DHCP_OPT_SERVER_ID, NET_DHCP_OPT_T1, NET_DHCP_OPT_T2 };
    put_opt(o, &n, NET_DHCP_OPT_PARAM_LIST, sizeof params, params);
    o[n++] = NET_DHCP_OPT_END;
    _Static_assert(sizeof(struct net_dhcp_msg) + 3 + 9 + 6 + 6 + 8 + 1 <= NET_DHCP_MIN_MSG, "options fit");
    /* RENEWING: unicast to the server through the MAC its last ACK came from; else broadcast. */
    bool unicast = renewing && d->server_be;
    status_t st = net_udp_tx(nif, queue, net_ctl(nif), unicast ? d->server_mac : bcast_mac, ciaddr,
                             unicast ? d->server_be : 0xFFFFFFFFu, NET_BE16(NET_DHCP_CLIENT_PORT),
                             NET_BE16(NET_DHCP_SERVER_PORT), &pkt, sizeof pkt);
    if (st == STATUS_OK)
        NET_CNT(net_ctl(nif), dhcp_out);
}

/* ---- states ---- */

static void new_exchange(struct net_dhcp *d, uint64_t now)
{
    d->xid = (uint32_t)rng_next(d);
    d->start_ns = now;
    d->tries = 0;
}

/* Transmits the current state's message and schedules the retransmission. */
static void transmit(struct net_if *nif, uint32_t queue, uint64_t now)
{
    struct net_dhcp *d = &nif->dhcp;
    if (d->tries < 255)
        d->tries++;
    switch (d->state) {
    case NET_DHCP_SELECTING:
        dhcp_send(nif, queue, NET_DHCPDISCOVER, now);
        d->next_ns = now + backoff_ns(d);
        break;
    case NET_DHCP_REQUESTING:
    case NET_DHCP_REBOOTING:
        dhcp_send(nif, queue, NET_DHCPREQUEST, now);
        d->next_ns = now + backoff_ns(d);
        break;
    case NET_DHCP_RENEWING:
        dhcp_send(nif, queue, NET_DHCPREQUEST, now);
        d->next_ns = half_way_ns(now, lease_at(d, d->t2_s));
        break;
    case NET_DHCP_REBINDING:
        dhcp_send(nif, queue, NET_DHCPREQUEST, now);
        d->next_ns = half_way_ns(now, lease_at(d, d->lease_s));
        break;
    default:
        break;
    }
}

static void enter(struct net_if *nif, uint32_t queue, uint8_t state, uint64_t now)
{
    struct net_dhcp *d = &nif->dhcp;
    d->state = state;
    new_exchange(d, now);
    if (state == NET_DHCP_SELECTING)
        d->offered_be = d->server_be = 0;
    transmit(nif, queue, now);
}

static void drop_lease(struct net_if *nif, uint64_t now)
{
    struct net_dhcp *d = &nif->dhcp;
    if (d->have_lease)
        net_config_set_locked(nif, 0, 0, 0, now);
    d->have_lease = false;
    d->lease_s = d->t1_s = d->t2_s = 0;
}

status_t net_dhcp_start_locked(struct net_if *nif, uint64_t now)
{
    struct net_dhcp *d = &nif->dhcp;
    if (d->state != NET_DHCP_OFF)
        return STATUS_INVALID_STATE;
    net_config_set_locked(nif, 0, 0, 0, now);
    d->have_lease = false;
    d->rng ^= (now + 0x9E3779B97F4A7C15ull) * 0xBF58476D1CE4E5B9ull;
    if (!d->rng)
        d->rng = 1;
    __atomic_store_n(&nif->dhcp_listen, 1, __ATOMIC_RELEASE);
    net_log_locked(nif, now, "dhcp: started");
    enter(nif, nif->ops.ctl_queue, NET_DHCP_SELECTING, now);
    return STATUS_OK;
}

void net_dhcp_stop_locked(struct net_if *nif)
{
    struct net_dhcp *d = &nif->dhcp;
    if (d->state == NET_DHCP_OFF)
        return;
    drop_lease(nif, nif->now_ns);
    d->state = NET_DHCP_OFF;
    __atomic_store_n(&nif->dhcp_listen, 0, __ATOMIC_RELEASE);
}

void net_dhcp_link_up_locked(struct net_if *nif, uint64_t now)
{
    struct net_dhcp *d = &nif->dhcp;
    switch (d->state) {
    case NET_DHCP_OFF:
        return;
    case NET_DHCP_SELECTING:
    case NET_DHCP_REQUESTING:
        enter(nif, nif->ops.ctl_queue, NET_DHCP_SELECTING, now);
        return;
    default: /* a lease is held: verify it (INIT-REBOOT, RFC 2131 3.2) */
        d->offered_be = nif->ip_be;
        enter(nif, nif->ops.ctl_queue, NET_DHCP_REBOOTING, now);
        return;
    }
}

void net_dhcp_tick_locked(struct net_if *nif, uint64_t now)
{
    struct net_dhcp *d = &nif->dhcp;
    uint32_t q = nif->ops.ctl_queue;
    char a[16];
    if (d->state == NET_DHCP_OFF)
        return;
    if (d->have_lease && d->lease_s != DHCP_INFINITE) {
        if (net_time_reached(now, lease_at(d, d->lease_s))) {
            net_log_locked(nif, now, "dhcp: lease of %s expired: address removed", net_ip_str(a, nif->ip_be));
            drop_lease(nif, now);
            enter(nif, q, NET_DHCP_SELECTING, now);
            return;
        }
        if (d->state == NET_DHCP_BOUND && net_time_reached(now, lease_at(d, d->t1_s)) &&
            !net_time_reached(now, lease_at(d, d->t2_s))) {
            net_log_locked(nif, now, "dhcp: renewing %s", net_ip_str(a, nif->ip_be));
            enter(nif, q, NET_DHCP_RENEWING, now);
            return;
        }
        if ((d->state == NET_DHCP_BOUND || d->state == NET_DHCP_RENEWING) &&
            net_time_reached(now, lease_at(d, d->t2_s))) {
            net_log_locked(nif, now, "dhcp: rebinding %s", net_ip_str(a, nif->ip_be));
            enter(nif, q, NET_DHCP_REBINDING, now);
            return;
        }
    }
    if (d->state == NET_DHCP_BOUND || !net_time_reached(now, d->next_ns))
        return;
    if (d->state == NET_DHCP_REQUESTING && d->tries >= DHCP_REQUEST_TRIES) {
        net_log_locked(nif, now, "dhcp: no answer to REQUEST for %s: restarting", net_ip_str(a, d->offered_be));
        enter(nif, q, NET_DHCP_SELECTING, now);
        return;
    }
    if (d->state == NET_DHCP_REBOOTING && d->tries >= DHCP_REQUEST_TRIES) {
        /* RFC 2131 3.2 step 4: no answer: keep using the address for the rest of the lease. */
        net_log_locked(nif, now, "dhcp: no answer to INIT-REBOOT: keeping %s for the rest of the lease",
                       net_ip_str(a, nif->ip_be));
        d->state = NET_DHCP_BOUND;
        d->tries = 0;
        return;
    }
    transmit(nif, q, now);
}

/* ---- receiving ---- */

struct dhcp_opts {
    uint8_t type;
    bool has_mask, has_router, has_lease, has_server, has_t1, has_t2;
    uint32_t mask_be, router_be, server_be;
    uint32_t lease, t1, t2; /* host order, seconds */
};

/* false: malformed (see the header comment). */
static bool parse_options(const uint8_t *o, uint32_t n, struct dhcp_opts *out)
{
    memset(out, 0, sizeof *out);
    uint32_t i = 0;
    while (i < n) {
        uint8_t code = o[i];
        if (code == NET_DHCP_OPT_PAD) {
            i++;
            continue;
        }
        if (code == NET_DHCP_OPT_END)
            return out->type != 0;
        if (n - i < 2)
            return false; /* no length byte */
        uint32_t len = o[i + 1];
        if (len > n - i - 2)
            return false; /* runs past the end */
        const uint8_t *v = o + i + 2;
        switch (code) {
        case NET_DHCP_OPT_MSG_TYPE:
            if (len != 1 || v[0] == 0)
                return false;
            if (!out->type)
                out->type = v[0];
            break;
        case NET_DHCP_OPT_MASK:
        case NET_DHCP_OPT_SERVER_ID:
        case NET_DHCP_OPT_LEASE:
        case NET_DHCP_OPT_T1:
        case NET_DHCP_OPT_T2: {
            if (len != 4)
                return false;
            uint32_t be = net_ld32(v);
            bool *has = code == NET_DHCP_OPT_MASK        ? &out->has_mask
                        : code == NET_DHCP_OPT_SERVER_ID ? &out->has_server
                        : code == NET_DHCP_OPT_LEASE     ? &out->has_lease
                        : code == NET_DHCP_OPT_T1        ? &out->has_t1
                                                         : &out->has_t2;
            if (*has)
                break;
            *has = true;
            if (code == NET_DHCP_OPT_MASK)
                out->mask_be = be;
            else if (code == NET_DHCP_OPT_SERVER_ID)
                out->server_be = be;
            else if (code == NET_DHCP_OPT_LEASE)
                out->lease = net_bswap32(be);
            else if (code == NET_DHCP_OPT_T1)
                out->t1 = net_bswap32(be);
            else
                out->t2 = net_bswap32(be);
            break;
        }
        case NET_DHCP_OPT_ROUTER:
            if (len < 4 || len % 4)
                return false;
            if (!out->has_router) {
                out->has_router = true;
                out->router_be = net_ld32(v);
            }
            break;
        case NET_DHCP_OPT_OVERLOAD:
            if (len != 1)
                return false;
            break;
        default:
            break;
        }
        i += 2 + len;
    }
    return false; /* no END */
}

static uint32_t classful_mask_be(uint32_t ip_be)
{
    uint8_t a = (uint8_t)ip_be;
    return net_bswap32(a < 128 ? 0xFF000000u : a < 192 ? 0xFFFF0000u : 0xFFFFFF00u);
}

static void on_ack(struct net_if *nif, const uint8_t src_mac[6], uint32_t src_be, uint32_t yiaddr,
                   const struct dhcp_opts *op, uint64_t now)
{
    struct net_dhcp *d = &nif->dhcp;
    uint32_t mask_be = op->has_mask ? op->mask_be : classful_mask_be(yiaddr);
    int prefix = net_mask_prefix(net_bswap32(mask_be));
    uint32_t gw_be = op->has_router ? op->router_be : 0;
    char a[16], g[16], s[16];
    if (gw_be && (!net_ip_unicast(gw_be) || gw_be == yiaddr || (gw_be & mask_be) != (yiaddr & mask_be))) {
        net_log_locked(nif, now, "dhcp: router %s is not on-link for %s/%d: ignored", net_ip_str(g, gw_be),
                       net_ip_str(a, yiaddr), prefix);
        gw_be = 0;
    }
    uint8_t prev = d->state;
    uint32_t lease = op->lease, t1, t2;
    if (lease == DHCP_INFINITE) {
        t1 = t2 = DHCP_INFINITE;
    } else {
        t2 = op->has_t2 && op->t2 <= lease ? op->t2 : (uint32_t)((uint64_t)lease * 7 / 8);
        t1 = op->has_t1 && op->t1 <= t2 ? op->t1 : (lease / 2 < t2 ? lease / 2 : t2);
    }
    d->lease_s = lease;
    d->t1_s = t1;
    d->t2_s = t2;
    d->bound_ns = now;
    d->have_lease = true;
    if (op->has_server)
        d->server_be = op->server_be;
    else if (!d->server_be)
        d->server_be = src_be;
    net_mac_copy(d->server_mac, src_mac);
    d->state = NET_DHCP_BOUND;
    d->tries = 0;
    bool same = nif->ip_be == yiaddr && nif->mask_be == mask_be && nif->gw_be == gw_be;
    if (!same)
        net_config_set_locked(nif, yiaddr, mask_be, gw_be, now);
    const char *what = prev == NET_DHCP_REQUESTING ? "bound" : prev == NET_DHCP_REBOOTING ? "confirmed" : "renewed";
    net_log_locked(nif, now, "dhcp: %s %s/%d gw %s lease %u s (server %s)", what, net_ip_str(a, yiaddr), prefix,
                   gw_be ? net_ip_str(g, gw_be) : "none", lease, net_ip_str(s, d->server_be));
}

void net_dhcp_input_locked(struct net_if *nif, uint32_t queue, const uint8_t src_mac[6], uint32_t src_be,
                           const uint8_t *msg, uint32_t len, uint64_t now)
{
    struct net_dhcp *d = &nif->dhcp;
    struct net_counters *ctr = net_ctl(nif);
    nif->now_ns = now;
    if (d->state == NET_DHCP_OFF) {
        NET_CNT(ctr, dhcp_ignored);
        return;
    }
    if (len < sizeof(struct net_dhcp_msg) || msg[0] != NET_BOOTREPLY || msg[1] != NET_ARP_HTYPE_ETHER ||
        msg[2] != 6 || net_ld32(msg + 236) != NET_BE32(NET_DHCP_COOKIE)) {
        NET_CNT(ctr, dhcp_bad);
        return;
    }
    if (net_ld32(msg + 4) != d->xid || !net_mac_eq(msg + 28, nif->mac)) {
        NET_CNT(ctr, dhcp_ignored);
        return;
    }
    struct dhcp_opts op;
    if (!parse_options(msg + sizeof(struct net_dhcp_msg), len - (uint32_t)sizeof(struct net_dhcp_msg), &op)) {
        NET_CNT(ctr, dhcp_bad);
        return;
    }
    uint32_t yiaddr = net_ld32(msg + 16);
    uint8_t st = d->state;
    bool waiting = st == NET_DHCP_REQUESTING || st == NET_DHCP_RENEWING || st == NET_DHCP_REBINDING ||
                   st == NET_DHCP_REBOOTING;
    char a[16], s[16];
    switch (op.type) {
    case NET_DHCPOFFER:
        if (st != NET_DHCP_SELECTING) {
            NET_CNT(ctr, dhcp_ignored);
            return;
        }
        if (!op.has_server || !net_ip_unicast(op.server_be) || !net_ip_unicast(yiaddr)) {
            NET_CNT(ctr, dhcp_bad);
            return;
        }
        NET_CNT(ctr, dhcp_in);
        d->offered_be = yiaddr;
        d->server_be = op.server_be;
        net_log_locked(nif, now, "dhcp: offer of %s from %s", net_ip_str(a, yiaddr), net_ip_str(s, op.server_be));
        d->state = NET_DHCP_REQUESTING; /* same xid (RFC 2131 4.4.1) */
        d->tries = 0;
        transmit(nif, queue, now);
        return;
    case NET_DHCPACK: {
        if (!waiting || (st == NET_DHCP_REQUESTING && op.has_server && op.server_be != d->server_be) ||
            ((st == NET_DHCP_REQUESTING || st == NET_DHCP_REBOOTING) && yiaddr != d->offered_be)) {
            NET_CNT(ctr, dhcp_ignored);
            return;
        }
        int prefix = net_mask_prefix(net_bswap32(op.has_mask ? op.mask_be : classful_mask_be(yiaddr)));
        if (!op.has_lease || op.lease == 0 || !net_ip_unicast(yiaddr) || prefix < 1) {
            NET_CNT(ctr, dhcp_bad);
            return;
        }
        NET_CNT(ctr, dhcp_in);
        on_ack(nif, src_mac, src_be, yiaddr, &op, now);
        return;
    }
    case NET_DHCPNAK:
        if (!waiting || (st == NET_DHCP_REQUESTING && op.has_server && op.server_be != d->server_be)) {
            NET_CNT(ctr, dhcp_ignored);
            return;
        }
        NET_CNT(ctr, dhcp_in);
        net_log_locked(nif, now, "dhcp: NAK from %s while %s: %srestarting",
                       net_ip_str(s, op.has_server ? op.server_be : src_be),
                       net_dhcp_state_name((enum net_dhcp_state)st), d->have_lease ? "address removed, " : "");
        drop_lease(nif, now);
        enter(nif, queue, NET_DHCP_SELECTING, now);
        return;
    default:
        NET_CNT(ctr, dhcp_ignored);
        return;
    }
}
