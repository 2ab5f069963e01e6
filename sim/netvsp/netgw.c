/*
 * netgw: the user-mode gateway (contract and behaviour: sim/netvsp/netgw.h). Written from the RFCs: Ethernet
 * II, ARP (RFC 826), IPv4 (RFC 791, checksum RFC 1071), UDP (RFC 768), ICMP echo (RFC 792), DHCP
 * (RFC 2131, options RFC 2132).
 *
 * State: everything but the guest frame queue, the ping request hand-over and the counters belongs
 * to the gateway's thread. gw->qlock guards the queue and the ping hand-over (a leaf lock); the
 * counters are atomics.
 */
#define _GNU_SOURCE /* pipe2 */
#include "sim/netvsp/netgw.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define GW_ETH_HLEN 14u
#define GW_ETH_P_IP 0x0800u
#define GW_ETH_P_ARP 0x0806u
#define IP_HLEN 20u
#define UDP_HLEN 8u
#define ICMP_HLEN 8u
#define IPPROTO_ICMP_ 1u
#define IPPROTO_UDP_ 17u
#define MAX_UDP_PAYLOAD 1472u /* 1500 - 20 - 8: no fragments */
#define FRAME_MAX 1514u
#define DHCP_SERVER_PORT 67u
#define DHCP_CLIENT_PORT 68u
#define DHCP_FIXED 240u       /* op .. cookie */
#define DHCP_COOKIE 0x63825363u
#define DHCP_MIN_LEN 300u     /* BOOTP's minimum message */
#define PING_ID 0x6876u       /* "hv" */
#define PING_MAX 1000u
#define RECV_BUDGET 64u       /* datagrams read from one socket per poll round */
#define DEFAULT_LEASE 3600u
#define DEFAULT_PING_TIMEOUT_MS 1000u

enum { DHCPDISCOVER = 1, DHCPOFFER, DHCPREQUEST, DHCPDECLINE, DHCPACK, DHCPNAK, DHCPRELEASE, DHCPINFORM };

static const uint8_t gw_mac[6] = { 0x52, 0x55, 0x0a, 0x00, 0x02, 0x02 };
static const uint8_t bcast_mac[6] = { 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF };

#define COUNT(gw, field, n) __atomic_fetch_add(&(gw)->st.field, (uint64_t)(n), __ATOMIC_RELAXED)

struct peer {                 /* forward NAT: a host peer of forward `fwd` shown as 10.0.2.2:port */
    bool used;
    uint32_t fwd;
    struct sockaddr_in addr;
    int64_t last_ns;
};

struct flow {                 /* outbound: the guest's source port and its host socket */
    bool used;
    int fd;
    uint16_t guest_port;
    int64_t last_ns;
};

enum ping_origin { PING_CONTROL, PING_API };

struct ping_run {
    bool active;
    enum ping_origin origin;
    struct sockaddr_in requester; /* PING_CONTROL */
    uint32_t count, size, sent, received;
    uint16_t seq;                 /* of the request in flight */
    bool waiting;
    int64_t sent_ns, deadline_ns;
    uint64_t rtt_min, rtt_max, rtt_sum; /* ns */
};

struct hvsim_netgw {
    struct hvsim_netgw_config cfg;
    struct hvsim_netgw_forward fwd[HVSIM_NETGW_MAX_FORWARDS];
    int fwd_fd[HVSIM_NETGW_MAX_FORWARDS];
    uint16_t fwd_port[HVSIM_NETGW_MAX_FORWARDS];
    int ctl_fd, tap_fd;
    uint16_t ctl_port;
    int wake[2];
    pthread_t thread;
    bool thread_started;
    char tap_name[IFNAMSIZ];

    pthread_mutex_t qlock;
    pthread_cond_t ping_done;
    /* ---- qlock ---- */
    uint8_t *queue[HVSIM_NETGW_QUEUE];
    uint32_t queue_len[HVSIM_NETGW_QUEUE];
    uint32_t q_head, q_count;
    bool stop;
    bool ping_requested, ping_finished;
    uint32_t ping_req_count, ping_req_size;
    struct hvsim_netgw_ping_result ping_result;

    /* ---- the gateway's thread ---- */
    uint8_t guest_mac[6];
    uint32_t guest_ip;
    uint16_t ip_id;
    struct peer peers[HVSIM_NETGW_MAX_PEERS];
    struct flow flows[HVSIM_NETGW_MAX_FLOWS];
    struct ping_run ping;
    uint16_t ping_seq;
    int64_t next_expiry_ns;

    struct hvsim_netgw_stats st; /* counters: atomics; guest_ip/peers/flows: atomics too */
};

/* ---- small helpers ---- */

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000ll + t.tv_nsec;
}

static void gw_log(struct hvsim_netgw *gw, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void gw_log(struct hvsim_netgw *gw, const char *fmt, ...)
{
    char line[400];
    int n = snprintf(line, sizeof line, "net: ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    if (gw->cfg.log)
        gw->cfg.log(gw->cfg.log_ctx, line);
    else
        fprintf(stderr, "hvsim: %s\n", line);
}

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* The one's complement sum of RFC 1071, not yet folded. */
static uint32_t csum_add(uint32_t sum, const uint8_t *p, uint32_t n)
{
    for (uint32_t i = 0; i + 1 < n; i += 2)
        sum += (uint32_t)p[i] << 8 | p[i + 1];
    if (n & 1)
        sum += (uint32_t)p[n - 1] << 8;
    return sum;
}

static uint16_t csum_fold(uint32_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    return (uint16_t)~sum;
}

/* The pseudo header of UDP (RFC 768) for src, dst and the UDP length. */
static uint32_t pseudo_sum(uint32_t src, uint32_t dst, uint8_t proto, uint32_t len)
{
    uint8_t ph[12];
    wr32(ph, src);
    wr32(ph + 4, dst);
    ph[8] = 0;
    ph[9] = proto;
    wr16(ph + 10, (uint16_t)len);
    return csum_add(0, ph, sizeof ph);
}

static bool in_subnet(uint32_t ip)
{
    return (ip & HVSIM_NETGW_NETMASK) == (HVSIM_NETGW_GATEWAY_IP & HVSIM_NETGW_NETMASK);
}

static const char *ip_str(uint32_t ip, char buf[16])
{
    snprintf(buf, 16, "%u.%u.%u.%u", ip >> 24, (ip >> 16) & 255, (ip >> 8) & 255, ip & 255);
    return buf;
}

/* ---- frames to the guest ---- */

static void to_guest(struct hvsim_netgw *gw, const uint8_t *frame, uint32_t len)
{
    if (hvsim_netvsp_deliver(gw->cfg.nv, frame, len))
        COUNT(gw, frames_out, 1);
    else
        COUNT(gw, frames_out_dropped, 1);
}

/* Ethernet + IPv4 header around l4 (len bytes), then to the guest. */
static void send_ipv4(struct hvsim_netgw *gw, const uint8_t *dst_mac, uint32_t src, uint32_t dst, uint8_t proto,
                      const uint8_t *l4, uint32_t len)
{
    uint8_t f[FRAME_MAX];
    if (len > FRAME_MAX - GW_ETH_HLEN - IP_HLEN)
        return;
    memcpy(f, dst_mac, 6);
    memcpy(f + 6, gw_mac, 6);
    wr16(f + 12, GW_ETH_P_IP);
    uint8_t *ip = f + GW_ETH_HLEN;
    ip[0] = 0x45;
    ip[1] = 0;
    wr16(ip + 2, (uint16_t)(IP_HLEN + len));
    wr16(ip + 4, gw->ip_id++);
    wr16(ip + 6, 0); /* no fragments here */
    ip[8] = 64;
    ip[9] = proto;
    wr16(ip + 10, 0);
    wr32(ip + 12, src);
    wr32(ip + 16, dst);
    wr16(ip + 10, csum_fold(csum_add(0, ip, IP_HLEN)));
    memcpy(ip + IP_HLEN, l4, len);
    to_guest(gw, f, GW_ETH_HLEN + IP_HLEN + len);
}

static void send_udp(struct hvsim_netgw *gw, const uint8_t *dst_mac, uint32_t src, uint16_t sport, uint32_t dst,
                     uint16_t dport, const uint8_t *payload, uint32_t len)
{
    uint8_t u[UDP_HLEN + MAX_UDP_PAYLOAD];
    if (len > MAX_UDP_PAYLOAD)
        return;
    wr16(u, sport);
    wr16(u + 2, dport);
    wr16(u + 4, (uint16_t)(UDP_HLEN + len));
    wr16(u + 6, 0);
    memcpy(u + UDP_HLEN, payload, len);
    uint16_t c = csum_fold(csum_add(pseudo_sum(src, dst, IPPROTO_UDP_, UDP_HLEN + len), u, UDP_HLEN + len));
    wr16(u + 6, c ? c : 0xFFFF); /* 0 means "no checksum" (RFC 768) */
    send_ipv4(gw, dst_mac, src, dst, IPPROTO_UDP_, u, UDP_HLEN + len);
    COUNT(gw, udp_to_guest, 1);
}

/* ---- ARP ---- */

static void learn(struct hvsim_netgw *gw, const uint8_t *mac, uint32_t ip)
{
    if (!(mac[0] & 1))
        memcpy(gw->guest_mac, mac, 6);
    uint32_t host = ip & ~HVSIM_NETGW_NETMASK;
    if (ip && in_subnet(ip) && ip != HVSIM_NETGW_GATEWAY_IP && host != 0 && host != 255 && ip != gw->guest_ip) {
        char b[16];
        gw->guest_ip = ip;
        __atomic_store_n(&gw->st.guest_ip, ip, __ATOMIC_RELAXED);
        gw_log(gw, "guest is %s", ip_str(ip, b));
    }
}

static void arp_in(struct hvsim_netgw *gw, const uint8_t *a, uint32_t len)
{
    if (len < 28 || rd16(a) != 1 || rd16(a + 2) != GW_ETH_P_IP || a[4] != 6 || a[5] != 4) {
        COUNT(gw, drop_arp, 1);
        return;
    }
    uint16_t op = rd16(a + 6);
    const uint8_t *sha = a + 8;
    uint32_t spa = rd32(a + 14), tpa = rd32(a + 24);
    if ((op != 1 && op != 2) || (sha[0] & 1)) {
        COUNT(gw, drop_arp, 1);
        return;
    }
    learn(gw, sha, spa);
    if (op != 1 || tpa != HVSIM_NETGW_GATEWAY_IP || spa == HVSIM_NETGW_GATEWAY_IP)
        return;
    COUNT(gw, arp_requests, 1);
    uint8_t f[GW_ETH_HLEN + 28];
    memcpy(f, sha, 6);
    memcpy(f + 6, gw_mac, 6);
    wr16(f + 12, GW_ETH_P_ARP);
    uint8_t *r = f + GW_ETH_HLEN;
    wr16(r, 1);
    wr16(r + 2, GW_ETH_P_IP);
    r[4] = 6;
    r[5] = 4;
    wr16(r + 6, 2);
    memcpy(r + 8, gw_mac, 6);
    wr32(r + 14, HVSIM_NETGW_GATEWAY_IP);
    memcpy(r + 18, sha, 6);
    wr32(r + 24, spa);
    to_guest(gw, f, sizeof f);
    COUNT(gw, arp_replies, 1);
}

/* ---- DHCP ---- */

struct dhcp_opts {
    int type;            /* -1: none */
    bool has_requested, has_server;
    uint32_t requested, server;
};

/* false: malformed options (a length beyond the message, no END). */
static bool dhcp_options(const uint8_t *o, uint32_t len, struct dhcp_opts *out)
{
    memset(out, 0, sizeof *out);
    out->type = -1;
    bool seen_type = false, seen_req = false, seen_srv = false;
    for (uint32_t i = 0; i < len;) {
        uint8_t code = o[i];
        if (code == 0) {
            i++;
            continue;
        }
        if (code == 255)
            return true;
        if (i + 1 >= len || i + 2u + o[i + 1] > len)
            return false;
        uint8_t n = o[i + 1];
        const uint8_t *v = o + i + 2;
        if (code == 53 && n == 1 && !seen_type) {
            out->type = v[0];
            seen_type = true;
        } else if (code == 50 && n == 4 && !seen_req) {
            out->requested = rd32(v);
            out->has_requested = seen_req = true;
        } else if (code == 54 && n == 4 && !seen_srv) {
            out->server = rd32(v);
            out->has_server = seen_srv = true;
        }
        i += 2u + n;
    }
    return false; /* no END */
}

static uint32_t put_opt(uint8_t *o, uint32_t n, uint8_t code, uint8_t len, const void *v)
{
    o[n] = code;
    o[n + 1] = len;
    memcpy(o + n + 2, v, len);
    return n + 2u + len;
}

static uint32_t put_opt32(uint8_t *o, uint32_t n, uint8_t code, uint32_t v)
{
    uint8_t b[4];
    wr32(b, v);
    return put_opt(o, n, code, 4, b);
}

static void dhcp_in(struct hvsim_netgw *gw, const uint8_t *src_mac, const uint8_t *d, uint32_t len)
{
    struct dhcp_opts op;
    if (len < DHCP_FIXED || d[0] != 1 || d[1] != 1 || d[2] != 6 || rd32(d + 236) != DHCP_COOKIE ||
        !dhcp_options(d + DHCP_FIXED, len - DHCP_FIXED, &op) || op.type < 0) {
        COUNT(gw, drop_dhcp, 1);
        return;
    }
    const uint8_t *chaddr = d + 28;
    uint32_t ciaddr = rd32(d + 12), lease = gw->cfg.lease_s;
    int reply;
    char b1[16], b2[16];
    switch (op.type) {
    case DHCPDISCOVER:
        COUNT(gw, dhcp_discovers, 1);
        reply = DHCPOFFER;
        break;
    case DHCPREQUEST: {
        COUNT(gw, dhcp_requests, 1);
        if (op.has_server && op.server != HVSIM_NETGW_GATEWAY_IP) { /* the client chose another server */
            COUNT(gw, dhcp_other, 1);
            return;
        }
        uint32_t want = op.has_requested ? op.requested : ciaddr;
        reply = want == HVSIM_NETGW_GUEST_IP ? DHCPACK : DHCPNAK;
        if (reply == DHCPNAK)
            gw_log(gw, "DHCP REQUEST for %s: NAK (the address here is %s)", ip_str(want, b1),
                   ip_str(HVSIM_NETGW_GUEST_IP, b2));
        break;
    }
    case DHCPINFORM:
        reply = DHCPACK;
        break;
    case DHCPRELEASE:
        COUNT(gw, dhcp_releases, 1);
        return;
    default: /* DECLINE, and anything a server does not take */
        COUNT(gw, dhcp_other, 1);
        return;
    }
    uint8_t m[DHCP_MIN_LEN + 64];
    memset(m, 0, sizeof m);
    m[0] = 2; /* BOOTREPLY */
    m[1] = 1;
    m[2] = 6;
    memcpy(m + 4, d + 4, 4);   /* xid */
    memcpy(m + 10, d + 10, 2); /* flags */
    if (op.type == DHCPINFORM || (reply == DHCPACK && ciaddr))
        wr32(m + 12, ciaddr);
    if (reply != DHCPNAK && op.type != DHCPINFORM)
        wr32(m + 16, HVSIM_NETGW_GUEST_IP);
    memcpy(m + 24, d + 24, 4);   /* giaddr */
    memcpy(m + 28, chaddr, 16);
    wr32(m + 236, DHCP_COOKIE);
    uint8_t *o = m + DHCP_FIXED;
    uint32_t n = 0;
    uint8_t t = (uint8_t)reply;
    n = put_opt(o, n, 53, 1, &t);
    n = put_opt32(o, n, 54, HVSIM_NETGW_GATEWAY_IP);
    if (reply != DHCPNAK) {
        if (op.type != DHCPINFORM) {
            n = put_opt32(o, n, 51, lease);
            n = put_opt32(o, n, 58, lease / 2);
            n = put_opt32(o, n, 59, (uint32_t)((uint64_t)lease * 7 / 8));
        }
        n = put_opt32(o, n, 1, HVSIM_NETGW_NETMASK);
        n = put_opt32(o, n, 3, HVSIM_NETGW_GATEWAY_IP);
    }
    o[n++] = 255;
    uint32_t total = DHCP_FIXED + n < DHCP_MIN_LEN ? DHCP_MIN_LEN : DHCP_FIXED + n;
    /* RFC 2131 4.1: to a client with an address, unicast; else broadcast (always understood). */
    bool unicast = reply != DHCPNAK && ciaddr && in_subnet(ciaddr);
    send_udp(gw, unicast ? (const uint8_t *)chaddr : bcast_mac, HVSIM_NETGW_GATEWAY_IP, DHCP_SERVER_PORT,
             unicast ? ciaddr : 0xFFFFFFFFu, DHCP_CLIENT_PORT, m, total);
    (void)src_mac;
    if (reply == DHCPOFFER) {
        COUNT(gw, dhcp_offers, 1);
    } else if (reply == DHCPACK) {
        COUNT(gw, dhcp_acks, 1);
        if (op.type != DHCPINFORM) {
            learn(gw, chaddr, HVSIM_NETGW_GUEST_IP);
            gw_log(gw, "DHCP ACK: %s for %u s", ip_str(HVSIM_NETGW_GUEST_IP, b1), lease);
        }
    } else {
        COUNT(gw, dhcp_naks, 1);
    }
}

/* ---- UDP ---- */

static struct peer *peer_for_host(struct hvsim_netgw *gw, uint32_t fwd, const struct sockaddr_in *a, uint16_t *port)
{
    struct peer *victim = NULL; /* a free entry, else the least recently used one */
    uint32_t vi = 0;
    for (uint32_t i = 0; i < HVSIM_NETGW_MAX_PEERS; i++) {
        struct peer *p = &gw->peers[i];
        if (p->used && p->fwd == fwd && p->addr.sin_addr.s_addr == a->sin_addr.s_addr &&
            p->addr.sin_port == a->sin_port) {
            *port = (uint16_t)(HVSIM_NETGW_PEER_PORT_BASE + i);
            p->last_ns = now_ns();
            return p;
        }
        bool better = !victim || (victim->used && (!p->used || p->last_ns < victim->last_ns));
        if (better) {
            victim = p;
            vi = i;
        }
    }
    if (victim->used)
        COUNT(gw, nat_peers_replaced, 1);
    else
        __atomic_fetch_add(&gw->st.peers, 1, __ATOMIC_RELAXED);
    *victim = (struct peer){ .used = true, .fwd = fwd, .addr = *a, .last_ns = now_ns() };
    *port = (uint16_t)(HVSIM_NETGW_PEER_PORT_BASE + vi);
    return victim;
}

static void flow_close(struct hvsim_netgw *gw, struct flow *f)
{
    close(f->fd);
    f->used = false;
    f->fd = -1;
    __atomic_fetch_sub(&gw->st.flows, 1, __ATOMIC_RELAXED);
}

static struct flow *flow_for_guest(struct hvsim_netgw *gw, uint16_t guest_port)
{
    struct flow *free_slot = NULL, *oldest = NULL;
    for (uint32_t i = 0; i < HVSIM_NETGW_MAX_FLOWS; i++) {
        struct flow *f = &gw->flows[i];
        if (f->used && f->guest_port == guest_port)
            return f;
        if (!f->used && !free_slot)
            free_slot = f;
        if (f->used && (!oldest || f->last_ns < oldest->last_ns))
            oldest = f;
    }
    if (!free_slot) {
        flow_close(gw, oldest); /* the least recently used one makes room */
        free_slot = oldest;
    }
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        COUNT(gw, flows_refused, 1);
        return NULL;
    }
    *free_slot = (struct flow){ .used = true, .fd = fd, .guest_port = guest_port, .last_ns = now_ns() };
    __atomic_fetch_add(&gw->st.flows, 1, __ATOMIC_RELAXED);
    return free_slot;
}

static void host_send(struct hvsim_netgw *gw, int fd, const struct sockaddr_in *to, const uint8_t *p, uint32_t n)
{
    if (sendto(fd, p, n, MSG_DONTWAIT, (const struct sockaddr *)to, sizeof *to) < 0)
        COUNT(gw, host_send_errors, 1);
}

static void udp_in(struct hvsim_netgw *gw, const uint8_t *src_mac, uint32_t src, uint32_t dst, const uint8_t *u,
                   uint32_t len)
{
    if (len < UDP_HLEN || rd16(u + 4) < UDP_HLEN || rd16(u + 4) > len) {
        COUNT(gw, drop_udp, 1);
        return;
    }
    uint32_t ulen = rd16(u + 4);
    if (rd16(u + 6) && csum_fold(csum_add(pseudo_sum(src, dst, IPPROTO_UDP_, ulen), u, ulen)) != 0) {
        COUNT(gw, drop_udp_checksum, 1);
        return;
    }
    uint16_t sport = rd16(u), dport = rd16(u + 2);
    const uint8_t *payload = u + UDP_HLEN;
    uint32_t plen = ulen - UDP_HLEN;
    if (dport == DHCP_SERVER_PORT && (dst == 0xFFFFFFFFu || dst == HVSIM_NETGW_GATEWAY_IP)) {
        dhcp_in(gw, src_mac, payload, plen);
        return;
    }
    if (!src || !in_subnet(src)) { /* only the guest's own address sends (DHCP aside) */
        COUNT(gw, drop_no_route, 1);
        return;
    }
    COUNT(gw, udp_from_guest, 1);
    if (dst == HVSIM_NETGW_GATEWAY_IP && dport >= HVSIM_NETGW_PEER_PORT_BASE &&
        dport < HVSIM_NETGW_PEER_PORT_BASE + HVSIM_NETGW_MAX_PEERS && gw->peers[dport - HVSIM_NETGW_PEER_PORT_BASE].used) {
        struct peer *p = &gw->peers[dport - HVSIM_NETGW_PEER_PORT_BASE];
        p->last_ns = now_ns();
        host_send(gw, gw->fwd_fd[p->fwd], &p->addr, payload, plen);
        return;
    }
    uint32_t host = dst & ~HVSIM_NETGW_NETMASK;
    if (dst == 0xFFFFFFFFu || (dst >> 28) == 14 || (in_subnet(dst) && dst != HVSIM_NETGW_GATEWAY_IP) ||
        host == 255 || gw->cfg.no_outbound) {
        COUNT(gw, drop_no_route, 1); /* broadcasts, multicasts, nobody else on 10.0.2.0/24, or no relay */
        return;
    }
    struct flow *f = flow_for_guest(gw, sport);
    if (!f)
        return;
    f->last_ns = now_ns();
    struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(dport),
                              .sin_addr.s_addr = htonl(dst == HVSIM_NETGW_GATEWAY_IP ? INADDR_LOOPBACK : dst) };
    host_send(gw, f->fd, &to, payload, plen);
}

/* ---- ICMP ---- */

static void ping_send_next(struct hvsim_netgw *gw);

static void icmp_in(struct hvsim_netgw *gw, const uint8_t *src_mac, uint32_t src, uint32_t dst, const uint8_t *c,
                    uint32_t len)
{
    if (len < ICMP_HLEN || csum_fold(csum_add(0, c, len)) != 0) {
        COUNT(gw, drop_icmp, 1);
        return;
    }
    if (dst != HVSIM_NETGW_GATEWAY_IP) {
        COUNT(gw, drop_no_route, 1);
        return;
    }
    if (c[0] == 8 && c[1] == 0) { /* echo request: the same back as a reply */
        COUNT(gw, icmp_echo_requests, 1);
        uint8_t r[FRAME_MAX];
        if (len > sizeof r - GW_ETH_HLEN - IP_HLEN)
            return;
        memcpy(r, c, len);
        r[0] = 0;
        wr16(r + 2, 0);
        wr16(r + 2, csum_fold(csum_add(0, r, len)));
        send_ipv4(gw, src_mac, HVSIM_NETGW_GATEWAY_IP, src, IPPROTO_ICMP_, r, len);
        COUNT(gw, icmp_echo_replies, 1);
        return;
    }
    if (c[0] == 0 && c[1] == 0 && rd16(c + 4) == PING_ID) { /* a reply to our ping */
        struct ping_run *p = &gw->ping;
        if (p->active && p->waiting && rd16(c + 6) == p->seq) {
            uint64_t rtt = (uint64_t)(now_ns() - p->sent_ns);
            p->waiting = false;
            p->received++;
            p->rtt_sum += rtt;
            if (p->received == 1 || rtt < p->rtt_min)
                p->rtt_min = rtt;
            if (rtt > p->rtt_max)
                p->rtt_max = rtt;
            COUNT(gw, pings_received, 1);
            ping_send_next(gw);
        }
        return;
    }
    COUNT(gw, drop_icmp, 1);
}

/* ---- a guest frame ---- */

static void ipv4_in(struct hvsim_netgw *gw, const uint8_t *src_mac, const uint8_t *ip, uint32_t len)
{
    if (len < IP_HLEN || (ip[0] >> 4) != 4) {
        COUNT(gw, drop_ip, 1);
        return;
    }
    uint32_t ihl = (ip[0] & 15u) * 4u, total = rd16(ip + 2);
    if (ihl < IP_HLEN || ihl > len || total < ihl || total > len) {
        COUNT(gw, drop_ip, 1);
        return;
    }
    if (csum_fold(csum_add(0, ip, ihl)) != 0) {
        COUNT(gw, drop_ip_checksum, 1);
        return;
    }
    if ((rd16(ip + 6) & 0x3FFF) != 0) { /* MF or a fragment offset */
        COUNT(gw, drop_fragment, 1);
        return;
    }
    uint32_t src = rd32(ip + 12), dst = rd32(ip + 16);
    if (src)
        learn(gw, src_mac, src);
    if (ip[9] == IPPROTO_UDP_)
        udp_in(gw, src_mac, src, dst, ip + ihl, total - ihl);
    else if (ip[9] == IPPROTO_ICMP_)
        icmp_in(gw, src_mac, src, dst, ip + ihl, total - ihl);
    else
        COUNT(gw, drop_protocol, 1);
}

static void frame_in(struct hvsim_netgw *gw, const uint8_t *f, uint32_t len)
{
    COUNT(gw, frames_in, 1);
    if (len < GW_ETH_HLEN || (f[6] & 1)) {
        COUNT(gw, drop_eth, 1);
        return;
    }
    bool bcast = memcmp(f, bcast_mac, 6) == 0;
    if (!bcast && memcmp(f, gw_mac, 6) != 0) { /* another MAC, or multicast */
        COUNT(gw, drop_eth, 1);
        return;
    }
    uint16_t type = rd16(f + 12);
    if (type == GW_ETH_P_ARP)
        arp_in(gw, f + GW_ETH_HLEN, len - GW_ETH_HLEN);
    else if (type == GW_ETH_P_IP)
        ipv4_in(gw, f + 6, f + GW_ETH_HLEN, len - GW_ETH_HLEN);
    else
        COUNT(gw, drop_eth, 1); /* VLAN tags, IPv6, ... */
}

void hvsim_netgw_from_guest(void *ctx, const uint8_t *frame, uint32_t len)
{
    struct hvsim_netgw *gw = ctx;
    if (gw->tap_fd >= 0) {
        if (write(gw->tap_fd, frame, len) == (ssize_t)len)
            COUNT(gw, tap_out, 1);
        else
            COUNT(gw, tap_errors, 1);
        return;
    }
    if (len > FRAME_MAX + 4) { /* jumbo frames: nothing here takes them */
        COUNT(gw, frames_in, 1);
        COUNT(gw, drop_eth, 1);
        return;
    }
    uint8_t *copy = malloc(len ? len : 1);
    if (copy)
        memcpy(copy, frame, len);
    pthread_mutex_lock(&gw->qlock);
    bool ok = copy && gw->q_count < HVSIM_NETGW_QUEUE && !gw->stop;
    if (ok) {
        uint32_t i = (gw->q_head + gw->q_count++) % HVSIM_NETGW_QUEUE;
        gw->queue[i] = copy;
        gw->queue_len[i] = len;
    }
    pthread_mutex_unlock(&gw->qlock);
    if (!ok) {
        free(copy);
        COUNT(gw, queue_full, 1);
        return;
    }
    uint8_t one = 1;
    ssize_t n = write(gw->wake[1], &one, 1); /* a full pipe already wakes the thread */
    (void)n;
}

/* ---- pings ---- */

static void ping_finish(struct hvsim_netgw *gw)
{
    struct ping_run *p = &gw->ping;
    struct hvsim_netgw_ping_result r = { .sent = p->sent, .received = p->received };
    if (p->received) {
        r.rtt_min_us = p->rtt_min / 1000;
        r.rtt_avg_us = p->rtt_sum / p->received / 1000;
        r.rtt_max_us = p->rtt_max / 1000;
    }
    p->active = false;
    if (p->origin == PING_CONTROL) {
        char line[160];
        int n = snprintf(line, sizeof line, "ping: %u sent, %u received, rtt min/avg/max %llu/%llu/%llu us", r.sent,
                         r.received, (unsigned long long)r.rtt_min_us, (unsigned long long)r.rtt_avg_us,
                         (unsigned long long)r.rtt_max_us);
        host_send(gw, gw->ctl_fd, &p->requester, (const uint8_t *)line, (uint32_t)n);
    } else {
        pthread_mutex_lock(&gw->qlock);
        gw->ping_result = r;
        gw->ping_finished = true;
        pthread_cond_broadcast(&gw->ping_done);
        pthread_mutex_unlock(&gw->qlock);
    }
}

static void ping_send_next(struct hvsim_netgw *gw)
{
    struct ping_run *p = &gw->ping;
    if (p->sent == p->count) {
        ping_finish(gw);
        return;
    }
    uint8_t c[ICMP_HLEN + MAX_UDP_PAYLOAD];
    p->seq = ++gw->ping_seq;
    c[0] = 8;
    c[1] = 0;
    wr16(c + 2, 0);
    wr16(c + 4, PING_ID);
    wr16(c + 6, p->seq);
    for (uint32_t i = 0; i < p->size; i++)
        c[ICMP_HLEN + i] = (uint8_t)(i + p->seq);
    wr16(c + 2, csum_fold(csum_add(0, c, ICMP_HLEN + p->size)));
    p->sent++;
    p->waiting = true;
    p->sent_ns = now_ns();
    p->deadline_ns = p->sent_ns + (int64_t)gw->cfg.ping_timeout_ms * 1000000ll;
    COUNT(gw, pings_sent, 1);
    send_ipv4(gw, gw->guest_mac, HVSIM_NETGW_GATEWAY_IP, gw->guest_ip, IPPROTO_ICMP_, c, ICMP_HLEN + p->size);
}

static bool ping_start(struct hvsim_netgw *gw, enum ping_origin origin, const struct sockaddr_in *req, uint32_t count,
                       uint32_t size)
{
    if (gw->ping.active || count == 0 || count > PING_MAX || size > MAX_UDP_PAYLOAD)
        return false;
    gw->ping = (struct ping_run){ .active = true, .origin = origin, .count = count, .size = size };
    if (req)
        gw->ping.requester = *req;
    ping_send_next(gw);
    return true;
}

/* ---- the control port ---- */

static void control_in(struct hvsim_netgw *gw, char *cmd, const struct sockaddr_in *from)
{
    char out[2200];
    size_t n = strlen(cmd);
    while (n && (cmd[n - 1] == '\n' || cmd[n - 1] == '\r' || cmd[n - 1] == ' '))
        cmd[--n] = '\0';
    unsigned long count, size = 56;
    char extra;
    int k;
    if ((k = sscanf(cmd, "ping %lu %lu %c", &count, &size, &extra)) >= 1 && k <= 2) {
        if (gw->tap_fd >= 0)
            snprintf(out, sizeof out, "error: ping is not available in TAP mode");
        else if (gw->ping.active)
            snprintf(out, sizeof out, "error: a ping is running");
        else if (count < 1 || count > PING_MAX || size > MAX_UDP_PAYLOAD)
            snprintf(out, sizeof out, "error: ping N [SIZE]: N 1..%u, SIZE 0..%u", PING_MAX, MAX_UDP_PAYLOAD);
        else if (ping_start(gw, PING_CONTROL, from, (uint32_t)count, (uint32_t)size))
            return; /* the answer comes when the run is over */
        else
            snprintf(out, sizeof out, "error: ping could not start");
    } else if (strcmp(cmd, "link down") == 0 || strcmp(cmd, "link up") == 0) {
        bool up = cmd[5] == 'u';
        hvsim_netvsp_set_link(gw->cfg.nv, up);
        snprintf(out, sizeof out, "link: %s", up ? "up" : "down");
    } else if (strcmp(cmd, "stats") == 0) {
        struct hvsim_netvsp_stats ns;
        struct hvsim_netgw_stats gs;
        char a[1024], b[1024];
        hvsim_netvsp_get_stats(gw->cfg.nv, &ns);
        hvsim_netvsp_format_stats(&ns, a, sizeof a);
        hvsim_netgw_get_stats(gw, &gs);
        hvsim_netgw_format_stats(&gs, b, sizeof b);
        snprintf(out, sizeof out, "stats: netvsp: %s; gateway: %s", a, b);
    } else if (strcmp(cmd, "help") == 0) {
        snprintf(out, sizeof out, "commands: ping N [SIZE], link down, link up, stats, help");
    } else {
        snprintf(out, sizeof out, "error: unknown command \"%.64s\" (ping N [SIZE], link down, link up, stats, help)",
                 cmd);
    }
    host_send(gw, gw->ctl_fd, from, (const uint8_t *)out, (uint32_t)strlen(out));
}

/* ---- the thread ---- */

static void read_forward(struct hvsim_netgw *gw, uint32_t i)
{
    uint8_t buf[65536];
    for (uint32_t k = 0; k < RECV_BUDGET; k++) {
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(gw->fwd_fd[i], buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
        if (n < 0)
            return;
        if ((size_t)n > MAX_UDP_PAYLOAD) {
            COUNT(gw, host_too_big, 1);
            continue;
        }
        uint16_t port;
        peer_for_host(gw, i, &from, &port);
        send_udp(gw, gw->guest_mac, HVSIM_NETGW_GATEWAY_IP, port, gw->guest_ip, gw->fwd[i].guest_port, buf,
                 (uint32_t)n);
    }
}

static void read_flow(struct hvsim_netgw *gw, struct flow *f)
{
    uint8_t buf[65536];
    for (uint32_t k = 0; k < RECV_BUDGET && f->used; k++) {
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(f->fd, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
        if (n < 0)
            return;
        if ((size_t)n > MAX_UDP_PAYLOAD) {
            COUNT(gw, host_too_big, 1);
            continue;
        }
        f->last_ns = now_ns();
        uint32_t src = ntohl(from.sin_addr.s_addr);
        if ((src >> 24) == 127)
            src = HVSIM_NETGW_GATEWAY_IP; /* this machine, as the guest sees it */
        send_udp(gw, gw->guest_mac, src, ntohs(from.sin_port), gw->guest_ip, f->guest_port, buf, (uint32_t)n);
    }
}

static void read_control(struct hvsim_netgw *gw)
{
    char buf[512];
    for (uint32_t k = 0; k < RECV_BUDGET; k++) {
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(gw->ctl_fd, buf, sizeof buf - 1, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
        if (n < 0)
            return;
        buf[n] = '\0';
        control_in(gw, buf, &from);
    }
}

static void read_tap(struct hvsim_netgw *gw)
{
    uint8_t buf[HVSIM_NETVSP_MAX_FRAME + 64];
    for (uint32_t k = 0; k < RECV_BUDGET; k++) {
        ssize_t n = read(gw->tap_fd, buf, sizeof buf);
        if (n <= 0)
            return;
        COUNT(gw, tap_in, 1);
        to_guest(gw, buf, (uint32_t)n);
    }
}

/* Takes the queued guest frames; false: stop. */
static bool drain_queue(struct hvsim_netgw *gw)
{
    uint8_t b[64];
    while (read(gw->wake[0], b, sizeof b) > 0)
        ;
    for (;;) {
        pthread_mutex_lock(&gw->qlock);
        bool stop = gw->stop;
        uint8_t *f = NULL;
        uint32_t len = 0;
        if (!stop && gw->q_count) {
            f = gw->queue[gw->q_head];
            len = gw->queue_len[gw->q_head];
            gw->q_head = (gw->q_head + 1) % HVSIM_NETGW_QUEUE;
            gw->q_count--;
        }
        bool start_ping = !stop && gw->ping_requested;
        uint32_t pc = gw->ping_req_count, ps = gw->ping_req_size;
        gw->ping_requested = false;
        pthread_mutex_unlock(&gw->qlock);
        if (stop)
            return false;
        if (start_ping && !ping_start(gw, PING_API, NULL, pc, ps)) {
            pthread_mutex_lock(&gw->qlock);
            gw->ping_result = (struct hvsim_netgw_ping_result){ 0 };
            gw->ping_finished = true;
            pthread_cond_broadcast(&gw->ping_done);
            pthread_mutex_unlock(&gw->qlock);
        }
        if (!f)
            return true;
        frame_in(gw, f, len);
        free(f);
    }
}

static void timers(struct hvsim_netgw *gw, int64_t now)
{
    struct ping_run *p = &gw->ping;
    if (p->active && p->waiting && now >= p->deadline_ns) {
        p->waiting = false;
        ping_send_next(gw);
    }
    if (now >= gw->next_expiry_ns) {
        gw->next_expiry_ns = now + 1000000000ll;
        for (uint32_t i = 0; i < HVSIM_NETGW_MAX_FLOWS; i++)
            if (gw->flows[i].used && now - gw->flows[i].last_ns > (int64_t)HVSIM_NETGW_FLOW_IDLE_S * 1000000000ll)
                flow_close(gw, &gw->flows[i]);
    }
}

static void *thread_main(void *arg)
{
    struct hvsim_netgw *gw = arg;
    enum { MAX_FDS = 3 + HVSIM_NETGW_MAX_FORWARDS + HVSIM_NETGW_MAX_FLOWS };
    struct pollfd pfd[MAX_FDS];
    struct flow *flow_of[MAX_FDS];
    for (;;) {
        int n = 0;
        pfd[n++] = (struct pollfd){ .fd = gw->wake[0], .events = POLLIN };
        int ctl = -1, tap = -1, fwd0 = -1, flow0 = -1;
        if (gw->ctl_fd >= 0) {
            ctl = n;
            pfd[n++] = (struct pollfd){ .fd = gw->ctl_fd, .events = POLLIN };
        }
        if (gw->tap_fd >= 0) {
            tap = n;
            pfd[n++] = (struct pollfd){ .fd = gw->tap_fd, .events = POLLIN };
        }
        fwd0 = n;
        for (uint32_t i = 0; i < gw->cfg.forward_count; i++)
            pfd[n++] = (struct pollfd){ .fd = gw->fwd_fd[i], .events = POLLIN };
        flow0 = n;
        for (uint32_t i = 0; i < HVSIM_NETGW_MAX_FLOWS; i++)
            if (gw->flows[i].used) {
                flow_of[n] = &gw->flows[i];
                pfd[n++] = (struct pollfd){ .fd = gw->flows[i].fd, .events = POLLIN };
            }
        int64_t now = now_ns(), wake = gw->next_expiry_ns;
        if (gw->ping.active && gw->ping.waiting && gw->ping.deadline_ns < wake)
            wake = gw->ping.deadline_ns;
        int timeout = wake <= now ? 0 : (int)((wake - now) / 1000000 + 1);
        if (poll(pfd, (nfds_t)n, timeout) < 0 && errno != EINTR) {
            gw_log(gw, "gateway: poll: %s", strerror(errno));
            return NULL;
        }
        if (!drain_queue(gw))
            return NULL;
        if (ctl >= 0 && pfd[ctl].revents)
            read_control(gw);
        if (tap >= 0 && pfd[tap].revents)
            read_tap(gw);
        for (int i = fwd0; i < flow0; i++)
            if (pfd[i].revents)
                read_forward(gw, (uint32_t)(i - fwd0));
        for (int i = flow0; i < n; i++)
            if (pfd[i].revents && flow_of[i]->used && flow_of[i]->fd == pfd[i].fd)
                read_flow(gw, flow_of[i]);
        timers(gw, now_ns());
    }
}

/* ---- life ---- */

static int bind_udp(uint16_t port, uint16_t *bound, char *err, size_t err_size, const char *what)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &al) != 0) {
        snprintf(err, err_size, "%s: cannot bind 127.0.0.1:%u/udp: %s", what, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *bound = ntohs(a.sin_port);
    return fd;
}

static int open_tap(const char *name, char *err, size_t err_size)
{
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(err, err_size, "cannot open TAP device %s: /dev/net/tun: %s%s", name, strerror(e),
                 e == EACCES || e == EPERM ? " (needs root or CAP_NET_ADMIN)" : "");
        return -1;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", name);
    if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
        int e = errno;
        snprintf(err, err_size, "cannot open TAP device %s: TUNSETIFF: %s%s", name, strerror(e),
                 e == EPERM || e == EACCES ? " (needs root or CAP_NET_ADMIN)" : "");
        close(fd);
        return -1;
    }
    return fd;
}

static void close_all(struct hvsim_netgw *gw)
{
    for (uint32_t i = 0; i < HVSIM_NETGW_MAX_FORWARDS; i++)
        if (gw->fwd_fd[i] >= 0)
            close(gw->fwd_fd[i]);
    for (uint32_t i = 0; i < HVSIM_NETGW_MAX_FLOWS; i++)
        if (gw->flows[i].used)
            close(gw->flows[i].fd);
    if (gw->ctl_fd >= 0)
        close(gw->ctl_fd);
    if (gw->tap_fd >= 0)
        close(gw->tap_fd);
    if (gw->wake[0] >= 0)
        close(gw->wake[0]);
    if (gw->wake[1] >= 0)
        close(gw->wake[1]);
    while (gw->q_count) {
        free(gw->queue[gw->q_head]);
        gw->q_head = (gw->q_head + 1) % HVSIM_NETGW_QUEUE;
        gw->q_count--;
    }
}

struct hvsim_netgw *hvsim_netgw_create(const struct hvsim_netgw_config *cfg, char *err, size_t err_size)
{
    if (!cfg || !cfg->nv || cfg->forward_count > HVSIM_NETGW_MAX_FORWARDS || (cfg->forward_count && !cfg->forwards)) {
        snprintf(err, err_size, "bad gateway configuration");
        return NULL;
    }
    struct hvsim_netgw *gw = calloc(1, sizeof *gw);
    if (!gw) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    gw->cfg = *cfg;
    gw->cfg.forwards = NULL;
    if (!gw->cfg.lease_s)
        gw->cfg.lease_s = DEFAULT_LEASE;
    if (!gw->cfg.ping_timeout_ms)
        gw->cfg.ping_timeout_ms = DEFAULT_PING_TIMEOUT_MS;
    gw->ctl_fd = gw->tap_fd = gw->wake[0] = gw->wake[1] = -1;
    for (uint32_t i = 0; i < HVSIM_NETGW_MAX_FORWARDS; i++)
        gw->fwd_fd[i] = -1;
    for (uint32_t i = 0; i < HVSIM_NETGW_MAX_FLOWS; i++)
        gw->flows[i].fd = -1;
    hvsim_netvsp_mac(cfg->nv, gw->guest_mac);
    gw->guest_ip = HVSIM_NETGW_GUEST_IP;
    gw->st.guest_ip = gw->guest_ip;
    pthread_mutex_init(&gw->qlock, NULL);
    pthread_cond_init(&gw->ping_done, NULL);
    bool ok = pipe2(gw->wake, O_NONBLOCK | O_CLOEXEC) == 0;
    if (!ok)
        snprintf(err, err_size, "pipe: %s", strerror(errno));
    for (uint32_t i = 0; ok && i < cfg->forward_count; i++) {
        gw->fwd[i] = cfg->forwards[i];
        char what[48];
        snprintf(what, sizeof what, "--net-forward %u:%u", cfg->forwards[i].host_port, cfg->forwards[i].guest_port);
        gw->fwd_fd[i] = bind_udp(cfg->forwards[i].host_port, &gw->fwd_port[i], err, err_size, what);
        ok = gw->fwd_fd[i] >= 0;
    }
    if (ok && cfg->control) {
        gw->ctl_fd = bind_udp(cfg->control_port, &gw->ctl_port, err, err_size, "--net-control");
        ok = gw->ctl_fd >= 0;
    }
    if (ok && cfg->tap) {
        snprintf(gw->tap_name, sizeof gw->tap_name, "%s", cfg->tap);
        gw->cfg.tap = gw->tap_name;
        gw->tap_fd = open_tap(cfg->tap, err, err_size);
        ok = gw->tap_fd >= 0;
    }
    if (ok) {
        ok = pthread_create(&gw->thread, NULL, thread_main, gw) == 0;
        if (!ok)
            snprintf(err, err_size, "cannot start the gateway's thread");
        gw->thread_started = ok;
    }
    if (!ok) {
        close_all(gw);
        pthread_cond_destroy(&gw->ping_done);
        pthread_mutex_destroy(&gw->qlock);
        free(gw);
        return NULL;
    }
    hvsim_netvsp_set_backend(cfg->nv, hvsim_netgw_from_guest, gw);
    if (gw->tap_fd >= 0)
        gw_log(gw, "TAP mode: frames to and from %s", gw->tap_name);
    return gw;
}

void hvsim_netgw_destroy(struct hvsim_netgw *gw)
{
    if (!gw)
        return;
    hvsim_netvsp_set_backend(gw->cfg.nv, NULL, NULL); /* no call of ours runs after this */
    pthread_mutex_lock(&gw->qlock);
    gw->stop = true;
    pthread_mutex_unlock(&gw->qlock);
    uint8_t one = 1;
    ssize_t n = write(gw->wake[1], &one, 1);
    (void)n;
    if (gw->thread_started)
        pthread_join(gw->thread, NULL);
    close_all(gw);
    pthread_cond_destroy(&gw->ping_done);
    pthread_mutex_destroy(&gw->qlock);
    free(gw);
}

uint16_t hvsim_netgw_forward_port(const struct hvsim_netgw *gw, uint32_t i)
{
    return i < gw->cfg.forward_count ? gw->fwd_port[i] : 0;
}

uint16_t hvsim_netgw_control_port(const struct hvsim_netgw *gw)
{
    return gw->ctl_fd >= 0 ? gw->ctl_port : 0;
}

bool hvsim_netgw_ping(struct hvsim_netgw *gw, uint32_t count, uint32_t size, struct hvsim_netgw_ping_result *out)
{
    memset(out, 0, sizeof *out);
    if (gw->tap_fd >= 0 || count == 0 || count > PING_MAX || size > MAX_UDP_PAYLOAD)
        return false;
    pthread_mutex_lock(&gw->qlock);
    gw->ping_requested = true;
    gw->ping_finished = false;
    gw->ping_req_count = count;
    gw->ping_req_size = size;
    pthread_mutex_unlock(&gw->qlock);
    uint8_t one = 1;
    ssize_t w = write(gw->wake[1], &one, 1);
    (void)w;
    int64_t deadline = now_ns() + (int64_t)count * gw->cfg.ping_timeout_ms * 1000000ll + 1000000000ll;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t rt = (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec + (deadline - now_ns());
    ts.tv_sec = rt / 1000000000ll;
    ts.tv_nsec = rt % 1000000000ll;
    pthread_mutex_lock(&gw->qlock);
    while (!gw->ping_finished && now_ns() < deadline)
        pthread_cond_timedwait(&gw->ping_done, &gw->qlock, &ts);
    bool ok = gw->ping_finished && gw->ping_result.sent == count;
    *out = gw->ping_result;
    pthread_mutex_unlock(&gw->qlock);
    return ok;
}

#define LOAD(field) out->field = __atomic_load_n(&gw->st.field, __ATOMIC_RELAXED)

void hvsim_netgw_get_stats(struct hvsim_netgw *gw, struct hvsim_netgw_stats *out)
{
    memset(out, 0, sizeof *out);
    LOAD(guest_ip);
    LOAD(peers);
    LOAD(flows);
    LOAD(frames_in);
    LOAD(frames_out);
    LOAD(frames_out_dropped);
    LOAD(queue_full);
    LOAD(arp_requests);
    LOAD(arp_replies);
    LOAD(dhcp_discovers);
    LOAD(dhcp_offers);
    LOAD(dhcp_requests);
    LOAD(dhcp_acks);
    LOAD(dhcp_naks);
    LOAD(dhcp_releases);
    LOAD(dhcp_other);
    LOAD(icmp_echo_requests);
    LOAD(icmp_echo_replies);
    LOAD(pings_sent);
    LOAD(pings_received);
    LOAD(udp_to_guest);
    LOAD(udp_from_guest);
    LOAD(host_send_errors);
    LOAD(host_too_big);
    LOAD(nat_peers_replaced);
    LOAD(flows_refused);
    LOAD(drop_eth);
    LOAD(drop_arp);
    LOAD(drop_ip);
    LOAD(drop_ip_checksum);
    LOAD(drop_fragment);
    LOAD(drop_protocol);
    LOAD(drop_udp);
    LOAD(drop_udp_checksum);
    LOAD(drop_icmp);
    LOAD(drop_no_route);
    LOAD(drop_dhcp);
    LOAD(tap_in);
    LOAD(tap_out);
    LOAD(tap_errors);
}

void hvsim_netgw_format_stats(const struct hvsim_netgw_stats *s, char *buf, size_t size)
{
    char ip[16];
    snprintf(buf, size,
             "guest %s, %llu frames in, %llu out (%llu refused by the NIC, %llu queue full), ARP %llu/%llu, DHCP "
             "discover %llu offer %llu request %llu ack %llu nak %llu release %llu other %llu, ICMP echo %llu/%llu, "
             "pings %llu/%llu, UDP %llu to guest %llu from guest, %u peers %u flows, host errors %llu too big %llu, "
             "drops: eth %llu arp %llu ip %llu ip-csum %llu frag %llu proto %llu udp %llu udp-csum %llu icmp %llu "
             "no-route %llu dhcp %llu, tap in %llu out %llu errors %llu",
             ip_str(s->guest_ip, ip), (unsigned long long)s->frames_in, (unsigned long long)s->frames_out,
             (unsigned long long)s->frames_out_dropped, (unsigned long long)s->queue_full,
             (unsigned long long)s->arp_requests, (unsigned long long)s->arp_replies,
             (unsigned long long)s->dhcp_discovers, (unsigned long long)s->dhcp_offers,
             (unsigned long long)s->dhcp_requests, (unsigned long long)s->dhcp_acks, (unsigned long long)s->dhcp_naks,
             (unsigned long long)s->dhcp_releases, (unsigned long long)s->dhcp_other,
             (unsigned long long)s->icmp_echo_requests, (unsigned long long)s->icmp_echo_replies,
             (unsigned long long)s->pings_sent, (unsigned long long)s->pings_received,
             (unsigned long long)s->udp_to_guest, (unsigned long long)s->udp_from_guest, s->peers, s->flows,
             (unsigned long long)s->host_send_errors, (unsigned long long)s->host_too_big,
             (unsigned long long)s->drop_eth, (unsigned long long)s->drop_arp, (unsigned long long)s->drop_ip,
             (unsigned long long)s->drop_ip_checksum, (unsigned long long)s->drop_fragment,
             (unsigned long long)s->drop_protocol, (unsigned long long)s->drop_udp,
             (unsigned long long)s->drop_udp_checksum, (unsigned long long)s->drop_icmp,
             (unsigned long long)s->drop_no_route, (unsigned long long)s->drop_dhcp, (unsigned long long)s->tap_in,
             (unsigned long long)s->tap_out, (unsigned long long)s->tap_errors);
}
