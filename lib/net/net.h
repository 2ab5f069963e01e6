/*
 * net: a small IPv4 host stack for one Ethernet interface: Ethernet II, ARP (RFC 826), IPv4
 * (RFC 791, no fragments, options skipped), ICMP echo (RFC 792), UDP (RFC 768) and a DHCP client
 * (RFC 2131/2132). Portable C: freestanding in the guest (no libc beyond kernel/string.h and
 * kernel/fmt.h, no allocation, no floating point, no kernel locks or threads), hosted in the tests.
 * Overview, limits and the design notes: lib/net/README.md.
 *
 * The caller owns everything: the struct net_if (allocate it, e.g. static; net_if_init fills it),
 * the receive frames (borrowed for the duration of net_input only; never written) and the transmit
 * buffers (ops->tx_begin hands one out, the stack fills it and hands it back with ops->tx_end).
 *
 * Concurrency (the contract the driver and the application rely on):
 *   - net_input(nif, q, ...) may run on several CPUs at once, at most one call per queue q at a time.
 *     Its per-packet path (UDP to a bound port, ICMP echo) takes no lock: each queue has its own
 *     counters, and the address, the bindings and the DHCP "listening" flag are read lock-free
 *     (single aligned words, __atomic loads). ARP and DHCP frames take the lock (ops->lock) briefly.
 *   - A UDP handler runs inside net_input(q), without the lock, and may call net_udp_reply(q)
 *     (counted in q's counters: call it only from q's net_input or from a context the caller
 *     guarantees never overlaps it) and net_udp_send (any queue; it takes the lock).
 *   - Everything else (net_tick, net_set_static, net_dhcp_start/stop, net_link_changed,
 *     net_udp_bind/unbind, net_udp_send, net_get_config, net_get_stats) may be called from any CPU at
 *     any time, concurrently with each other and with net_input; they serialise on ops->lock.
 *     net_get_stats and net_ip read without the lock.
 *   - ops->lock may be NULL only if the caller never overlaps two calls into the stack.
 *   - IRQL: every function may be called at DISPATCH_LEVEL or below (nothing blocks, allocates or
 *     sleeps); the lock is the caller's (a spinlock at DISPATCH in the guest).
 *
 * Transmit queues: frames caused by a received frame (echo replies, ARP replies, DHCP requests that
 * answer an offer) are sent on the queue the frame came in on, from inside that net_input; UDP sends
 * go on the queue the caller names; frames the timers and the configuration calls originate
 * (ARP requests and announcements, DHCP discover/retransmit/renew) go on ops->ctl_queue, from
 * whichever CPU calls net_tick/net_set_static/net_dhcp_start/net_link_changed. So tx_begin/tx_end
 * for one queue can overlap only if the caller calls those from elsewhere than that queue's receive
 * context, or calls net_udp_send/net_udp_reply from elsewhere; a driver that may see that serialises
 * per queue. tx_begin/tx_end and log are called with or without the stack's lock held and must not
 * call back into the stack.
 *
 * Untrusted input: every length and offset of a received frame is checked before use and read once
 * into a local (the frame may sit in memory the host can still write); anything bad is dropped and
 * counted by reason (struct net_stats). The per-packet path never logs; malformed-input counters
 * are summarised by net_tick at most once per 10 s, and every log line is rate-limited (burst 20,
 * then 10 lines per second, suppressed lines counted and reported).
 *
 * Byte order: every address and port in this interface is in host byte order (10.0.0.2 is
 * 0x0A000002); wire structs are in lib/net/net_wire.h.
 */
#ifndef APPS_NET_NET_H
#define APPS_NET_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernel/status.h"

struct net_if;

/* ---- limits ---- */
#define NET_MAX_QUEUES 64u    /* receive/transmit queues (netvsc: primary channel + sub-channels) */
#define NET_UDP_BINDINGS 16u  /* bound UDP ports */
#define NET_ARP_ENTRIES 64u   /* ARP cache size (LRU replacement) */
#define NET_MTU_MIN 576u      /* IP MTU limits accepted by net_if_init (576: RFC 791 / DHCP) */
#define NET_MTU_MAX 9000u
#define NET_ETH_HLEN 14u      /* Ethernet II header (no FCS in any frame this interface handles) */
#define NET_UDP_HLEN 42u      /* Ethernet + IPv4 (no options) + UDP headers of every UDP frame sent */
#define NET_ETH_MIN_FRAME 60u /* frames shorter than this are zero-padded before tx_end */
/* The largest UDP payload net_udp_reply / net_udp_send accept on an interface with this MTU. */
#define NET_UDP_MAX_PAYLOAD(mtu) ((mtu) - 28u)

/* Timings (ns). */
#define NET_ARP_REACHABLE_NS (300ull * 1000000000ull) /* cache entry life after the last confirmation */
#define NET_ARP_RETRY_NS (1000ull * 1000000ull)       /* between ARP requests for an unresolved address */
#define NET_ARP_TRIES 3u                              /* requests before the address is unreachable */
#define NET_ARP_FAILED_NS (5000ull * 1000000ull)      /* an unreachable address answers NOT_FOUND this long */
#define NET_ANNOUNCE_GAP_NS (2000ull * 1000000ull)    /* between the two gratuitous ARPs (RFC 5227 2.3) */

/* ---- the driver's side ---- */
struct net_ops {
    void *ctx;    /* passed to every callback but tx_begin and tx_end */
    void *tx_ctx; /* passed to tx_begin and tx_end; NULL: ctx (a NIC's transmit functions can be
                     plugged in directly, with the NIC's own context: no hop in between) */
    /* Zero-copy transmit: a buffer of at least len bytes for one frame on `queue` (NULL: no room;
     * the stack counts tx_no_buffer and fails the send), then the filled frame, len bytes from its
     * start, handed back (the driver sends it or drops it; either way the buffer is the driver's
     * again). len <= mtu + 14; frames are at least NET_ETH_MIN_FRAME bytes, no FCS. Required. */
    void *(*tx_begin)(void *ctx, uint32_t queue, uint32_t len);
    status_t (*tx_end)(void *ctx, uint32_t queue, void *frame, uint32_t len);
    /* Around the shared state (ARP cache, DHCP, configuration, bindings, control counters).
     * NULL: the caller serialises every call into the stack itself. Never taken recursively. */
    void (*lock)(void *ctx);
    void (*unlock)(void *ctx);
    /* One line of text, NUL-terminated, without a newline ("dhcp: bound 10.0.2.15/24 ..."). May be
     * NULL. Called with the lock held: must not call into the stack. */
    void (*log)(void *ctx, const char *line);
    /* The queue of the frames the timers and configuration calls originate (< queues; usually 0). */
    uint32_t ctl_queue;
    /* A monotonic time in ns (any origin), read by net_input when it is given NET_NOW instead of a
     * time: a driver's receive upcall can then be net_input itself, give or take one argument. Any
     * context. May be NULL if net_input always gets a time. */
    uint64_t (*clock)(void);
};

/* net_input's now_ns: take the time from ops->clock (0 without one). */
#define NET_NOW UINT64_MAX

/* ---- counters (struct net_stats); NET_STATS(X) lists them as X(name, description) ---- */
#define NET_STATS(X)                                                                                        \
    X(rx_frames, "frames received (every net_input call)")                                                  \
    X(rx_bytes, "bytes received")                                                                           \
    X(tx_frames, "frames handed to tx_end successfully")                                                    \
    X(tx_bytes, "bytes handed to tx_end successfully")                                                      \
    X(udp_in, "UDP datagrams delivered to a handler")                                                       \
    X(udp_out, "UDP datagrams sent (net_udp_reply, net_udp_send)")                                          \
    X(icmp_echo, "ICMP echo requests answered")                                                             \
    X(arp_requests_in, "ARP requests for our address answered")                                             \
    X(arp_replies_in, "ARP replies (and announcements) learned from")                                       \
    X(arp_requests_out, "ARP requests sent (resolution, refresh)")                                          \
    X(arp_announce_out, "gratuitous ARP announcements sent")                                                \
    X(dhcp_in, "DHCP messages accepted by the client")                                                      \
    X(dhcp_out, "DHCP messages sent")                                                                       \
    /* drops on receive, by reason */                                                                       \
    X(too_short, "drop: frame shorter than an Ethernet header")                                                 \
    X(too_long, "drop: frame longer than mtu + 14")                                                         \
    X(not_for_us, "drop: unicast to another MAC")                                                           \
    X(multicast, "drop: multicast destination MAC")                                                         \
    X(bad_src_mac, "drop: multicast or broadcast source MAC")                                               \
    X(vlan, "drop: 802.1Q/802.1ad tagged")                                                                  \
    X(ethertype, "drop: neither IPv4 nor ARP (IPv6, ...)")                                                  \
    X(bad_ip_header, "drop: IPv4 header too short, version, IHL < 5 or past the frame, total < IHL")        \
    X(ip_truncated, "drop: IPv4 total length past the end of the frame")                                    \
    X(bad_ip_checksum, "drop: IPv4 header checksum")                                                        \
    X(bad_ip_src, "drop: source 0, broadcast, multicast, loopback or our own address")                      \
    X(fragments, "drop: IPv4 fragment (MF set or offset != 0)")                                             \
    X(ip_not_for_us, "drop: IPv4 destination not ours (or unicast IP in a link broadcast)")                 \
    X(ip_proto, "drop: IPv4 protocol other than ICMP and UDP")                                              \
    X(bad_icmp, "drop: ICMP message shorter than 8 bytes or bad checksum")                                  \
    X(icmp_other, "drop: ICMP other than echo request")                                                     \
    X(icmp_broadcast, "drop: echo request to a broadcast address")                                          \
    X(bad_udp_length, "drop: UDP length < 8 or past the IP payload")                                        \
    X(bad_udp_checksum, "drop: UDP checksum")                                                               \
    X(no_port, "drop: UDP to an unbound port")                                                              \
    X(arp_bad, "drop: ARP malformed (length, hardware/protocol type or size, op, sender)")                  \
    X(arp_ignored, "drop: ARP neither for our address nor about a cached one")                              \
    X(arp_conflict, "ARP from another MAC claiming our address")                                            \
    X(dhcp_bad, "drop: DHCP malformed (fixed part, cookie, options, missing or bad option 53/54/51)")       \
    X(dhcp_ignored, "drop: DHCP not for the current exchange (xid, chaddr, type, server, state)")           \
    /* transmit */                                                                                          \
    X(tx_no_buffer, "transmit: tx_begin returned NULL")                                                     \
    X(tx_errors, "transmit: tx_end failed")                                                                 \
    X(tx_unresolved, "transmit: net_udp_send with the next hop not resolved yet (RETRY/NOT_FOUND)")         \
    X(bad_queue, "caller error: net_input/net_udp_reply with a queue out of range (ignored)")

struct net_stats {
#define NET_STATS_FIELD(name, what) uint64_t name;
    NET_STATS(NET_STATS_FIELD)
#undef NET_STATS_FIELD
};

/* Every counter summed over the queues and the control counters. Lock-free (each word read
 * atomically; the sum is not one instant's snapshot). Any context. */
void net_get_stats(const struct net_if *nif, struct net_stats *out);

/* ---- set-up ---- */

/* Initialises nif (overwriting it entirely): MAC (unicast, not zero), IP MTU (NET_MTU_MIN..MAX: the
 * largest IP datagram; frames are up to mtu + 14 bytes), queues (1..NET_MAX_QUEUES), ops (copied;
 * tx_begin and tx_end required, ctl_queue < queues). Link up, no address, DHCP off, no bindings.
 * STATUS_INVALID_PARAMETER if anything is out of range. Not concurrent with anything on this nif. */
status_t net_if_init(struct net_if *nif, const uint8_t mac[6], uint32_t mtu, uint32_t queues,
                     const struct net_ops *ops) __attribute__((warn_unused_result));

/* ---- the data path ---- */

/* One received Ethernet frame (no FCS) on `queue`; now_ns: a monotonic time (any origin), or NET_NOW
 * (ops->clock, read once the frame passed the Ethernet checks). See the concurrency notes above. The
 * frame is only read, and only during the call. */
void net_input(struct net_if *nif, uint32_t queue, const void *frame, uint32_t len, uint64_t now_ns);

/* What a UDP handler learns of a datagram (host byte order). */
struct net_udp_meta {
    uint8_t src_mac[6]; /* the frame's source: where a reply goes (the sender, or the router) */
    uint16_t src_port;
    uint16_t dst_port;
    uint32_t src_ip;
    uint32_t dst_ip;    /* ours, or a broadcast address */
    uint8_t tos;
    uint8_t ttl;
    bool broadcast;     /* sent to 255.255.255.255 or our subnet's broadcast address */
    uint64_t rx_ns;     /* the now_ns net_input was called with (e.g. for the handler's latency) */
};

/* Called for each datagram to a bound port, inside net_input(queue), without the lock. payload is
 * len bytes inside the received frame, valid only during the call. */
typedef void (*net_udp_handler)(struct net_if *nif, uint32_t queue, const struct net_udp_meta *m,
                                const void *payload, uint32_t len, void *arg);

/* Binds port (1..65535) to fn/arg. STATUS_EXISTS if bound, STATUS_NO_SPACE if NET_UDP_BINDINGS are
 * in use, STATUS_INVALID_PARAMETER for port 0 or fn NULL. Port 68 reaches the binding only while
 * the DHCP client is off. Takes the lock; safe while traffic flows. */
status_t net_udp_bind(struct net_if *nif, uint16_t port, net_udp_handler fn, void *arg)
    __attribute__((warn_unused_result));
/* Unbinds port (STATUS_NOT_FOUND if not bound). A net_input already running may still call the old
 * handler: before freeing arg or re-binding, wait until every net_input that started before has
 * returned (e.g. each queue's DPC ran once more). */
status_t net_udp_unbind(struct net_if *nif, uint16_t port) __attribute__((warn_unused_result));

/* Replies to the datagram m describes: to its source MAC, IP and port, from our address and m's
 * destination port, with payload (len bytes, any memory, e.g. the received payload itself).
 * The fast path: no lock, no ARP lookup; the frame is built directly in the tx buffer (one copy of
 * the payload, fused with the UDP checksum). Counted in queue's counters (see the notes above).
 * STATUS_INVALID_PARAMETER: len > NET_UDP_MAX_PAYLOAD(mtu) or queue out of range; STATUS_INVALID_STATE:
 * no address; STATUS_NO_SPACE: tx_begin gave no buffer; else tx_end's status. */
status_t net_udp_reply(struct net_if *nif, uint32_t queue, const struct net_udp_meta *m, const void *payload,
                       uint32_t len);

/* Sends a datagram to dst_ip:dst_port from our address and src_port on `queue`. The next hop is
 * dst_ip when on-link, else the gateway; broadcasts (255.255.255.255, the subnet's) go to the
 * Ethernet broadcast address. Takes the lock (ARP lookup, and held while sending).
 * Not resolved yet: one ARP request is sent and STATUS_RETRY returned (the datagram is not kept;
 * net_tick retries the request every second, NET_ARP_TRIES times); an address that did not answer
 * gives STATUS_NOT_FOUND for NET_ARP_FAILED_NS. STATUS_NOT_FOUND also when off-link without a
 * gateway; STATUS_NOT_SUPPORTED for multicast; STATUS_INVALID_STATE without an address;
 * STATUS_INVALID_PARAMETER for a too large payload, dst 0, port 0 or a bad queue; STATUS_NO_SPACE
 * when tx_begin gives no buffer. */
status_t net_udp_send(struct net_if *nif, uint32_t queue, uint32_t dst_ip, uint16_t dst_port, uint16_t src_port,
                      const void *payload, uint32_t len);

/* ---- timers, link, configuration ---- */

/* Runs the timers: ARP retries, expiry and refresh, the second announcement, DHCP retransmits,
 * renewal (T1), rebinding (T2) and expiry, and the summary of malformed-input drops. Call every
 * ~100 ms (the timers' resolution is the call interval). Takes the lock. */
void net_tick(struct net_if *nif, uint64_t now_ns);

/* Link state from the driver. Down: nothing is transmitted by the timers (they keep running; the
 * lease may expire). Up (after down, or again): the ARP cache is flushed; a static address is
 * announced again (two gratuitous ARPs); DHCP re-verifies: a held lease with INIT-REBOOT (REQUEST
 * with option 50, keeping the address meanwhile; no answer after 4 tries: the lease is kept), an
 * exchange in progress restarts with DISCOVER. Takes the lock. */
void net_link_changed(struct net_if *nif, bool up, uint64_t now_ns);

/* A static address: ip (a unicast address), mask (contiguous, /1../32), gw (0 = none, else on-link
 * and not ip). Stops the DHCP client, replaces the address, announces it (gratuitous ARP now and
 * after 2 s). ip == 0 (with mask and gw 0) removes the address. STATUS_INVALID_PARAMETER for anything
 * else out of range. Takes the lock. */
status_t net_set_static(struct net_if *nif, uint32_t ip, uint32_t mask, uint32_t gw, uint64_t now_ns)
    __attribute__((warn_unused_result));

/* Starts the DHCP client: removes the current address and sends DISCOVER (retransmitted after
 * 4, 8, 16, 32, 64, 64... s, each +-1 s). STATUS_INVALID_STATE if it already runs. Takes the lock. */
status_t net_dhcp_start(struct net_if *nif, uint64_t now_ns) __attribute__((warn_unused_result));
/* Stops it and removes a DHCP address (no DHCPRELEASE is sent). No-op when off. Takes the lock. */
void net_dhcp_stop(struct net_if *nif);

enum net_dhcp_state {
    NET_DHCP_OFF = 0,    /* not running (no address, or a static one) */
    NET_DHCP_SELECTING,  /* DISCOVER sent, waiting for an OFFER */
    NET_DHCP_REQUESTING, /* REQUEST for an offer sent, waiting for the ACK */
    NET_DHCP_BOUND,      /* address in use until T1 */
    NET_DHCP_RENEWING,   /* T1 passed: REQUEST unicast to the server */
    NET_DHCP_REBINDING,  /* T2 passed: REQUEST broadcast */
    NET_DHCP_REBOOTING,  /* link came back: REQUEST (INIT-REBOOT) for the address held */
};
const char *net_dhcp_state_name(enum net_dhcp_state s); /* "bound", ...; never NULL */

struct net_config {
    uint32_t ip, mask, gw;      /* host order; 0 = none */
    enum net_dhcp_state dhcp;
    uint32_t dhcp_server;       /* server identifier of the lease (0: none) */
    uint32_t lease_s;           /* lease granted, s (0xffffffff: infinite; 0: no lease) */
    uint64_t lease_left_ns;     /* at now_ns (UINT64_MAX: infinite) */
    uint64_t t1_left_ns, t2_left_ns; /* until renewing / rebinding (0 once passed) */
    bool link_up;
};
/* A consistent copy of the configuration (takes the lock). */
void net_get_config(const struct net_if *nif, uint64_t now_ns, struct net_config *out);
/* True when an address is configured (lock-free). */
bool net_configured(const struct net_if *nif);
/* Our address, host order, 0 if none (lock-free). */
uint32_t net_ip(const struct net_if *nif);

/* ---- helpers (the command line, logs); pure functions ---- */

/* "10.0.0.2": exactly four decimal octets 0..255, no sign, spaces, leading zeros ("010": it reads as
 * octal elsewhere) or anything after. STATUS_BAD_DATA otherwise (ip untouched). */
status_t net_parse_ipv4(const char *s, uint32_t *ip) __attribute__((warn_unused_result));
/* "10.0.0.2/24": an address and a prefix length 0..32 (decimal, no leading zeros). Without "/N"
 * the prefix is 24 (documented default: the common small LAN). STATUS_BAD_DATA otherwise. */
status_t net_parse_ipv4_cidr(const char *s, uint32_t *ip, uint32_t *mask) __attribute__((warn_unused_result));
/* Writes "a.b.c.d" (NUL-terminated when size > 0); returns the length it would have (like snprintf). */
int net_format_ipv4(char *buf, size_t size, uint32_t ip);
/* Writes "aa:bb:cc:dd:ee:ff"; returns 17 (like snprintf). */
int net_format_mac(char *buf, size_t size, const uint8_t mac[6]);
/* Prefix length of a contiguous mask (0..32), -1 if not contiguous. */
int net_mask_prefix(uint32_t mask);
/* The mask of a prefix length (0..32; larger: 32). */
uint32_t net_prefix_mask(unsigned prefix);

/* RFC 1071 Internet checksum of len bytes (the value to store, in host order: for a header whose
 * checksum field is already right, 0). Exposed for the tests and drivers. */
uint16_t net_checksum(const void *data, size_t len);

/* ====================================================================================================
 * Private: the layout of struct net_if, so that the caller can allocate it (sizeof(struct net_if)).
 * Do not touch the fields; they change without notice.
 * ==================================================================================================== */

enum net_stat_id {
#define NET_STATS_ID(name, what) NET_STAT_##name,
    NET_STATS(NET_STATS_ID)
#undef NET_STATS_ID
    NET_STAT__COUNT
};

/* Counters of one queue (written only by that queue's net_input/net_udp_reply), or the control
 * counters (written only with the lock held). One cache line boundary each: no false sharing. */
struct net_counters {
    uint64_t c[NET_STAT__COUNT];
    uint16_t ip_id; /* IPv4 identification of the next frame sent from this context */
} __attribute__((aligned(64)));

struct net_binding {
    uint16_t port;       /* 0: free (atomic; written last on bind, first on unbind) */
    net_udp_handler fn;
    void *arg;
};

struct net_arp_entry {
    uint32_t ip_be;       /* network order; 0 for a free entry */
    uint8_t mac[6];
    uint8_t state;        /* enum in arp.c */
    uint8_t tries;        /* requests sent while INCOMPLETE */
    bool refreshing;      /* a unicast refresh request is out */
    uint64_t deadline_ns; /* REACHABLE: expiry; INCOMPLETE: next request; FAILED: end of hold */
    uint64_t used_ns;     /* last use or confirmation (LRU) */
};

struct net_dhcp {
    uint8_t state;         /* enum net_dhcp_state */
    uint8_t tries;         /* transmissions in this state */
    bool have_lease;       /* the address below came from DHCP */
    uint32_t xid;
    uint32_t offered_be;   /* REQUESTING/REBOOTING: the address asked for */
    uint32_t server_be;    /* chosen server's identifier (option 54) */
    uint8_t server_mac[6]; /* link source of the last ACK: unicast renewals go there */
    uint32_t lease_s, t1_s, t2_s;
    uint64_t start_ns;     /* when the current exchange began ("secs") */
    uint64_t next_ns;      /* next transmission */
    uint64_t bound_ns;     /* when the lease was granted */
    uint64_t rng;          /* xorshift state: xids, jitter */
};

struct net_if {
    /* read by the per-packet path; written by net_if_init only, or atomically */
    uint8_t mac[6];
    uint32_t mtu;
    uint32_t queues;
    struct net_ops ops;
    uint64_t addr;         /* atomic: our IP (network order) | subnet broadcast (network order) << 32 */
    uint8_t dhcp_listen;   /* atomic: the DHCP client takes UDP 67 -> 68 */
    uint16_t nbind;        /* atomic: bindings [0, nbind) may be in use */
    struct net_binding bind[NET_UDP_BINDINGS];

    /* under the lock */
    uint64_t now_ns;            /* the latest time a call brought (net_udp_send has none of its own) */
    uint32_t ip_be, mask_be, gw_be;
    bool link_up;
    bool configured_static;
    uint8_t announce_left;      /* gratuitous ARPs still to send */
    uint64_t announce_ns;       /* when the next one is due */
    uint64_t defend_ns;         /* last conflict defence (RFC 5227 2.4 (b)) */
    struct net_arp_entry arp[NET_ARP_ENTRIES];
    struct net_dhcp dhcp;
    uint32_t log_tokens;        /* rate limiter: lines allowed now (milli-lines) */
    uint64_t log_ns;            /* time of the last refill */
    uint32_t log_suppressed;
    uint64_t summary_ns;        /* next drop summary */
    uint64_t summary_prev[NET_STAT__COUNT];
    bool summary_started;

    /* per queue [0, queues), and [NET_MAX_QUEUES]: the control counters (under the lock; but
     * bad_queue there only by atomic increments, from anywhere) */
    struct net_counters q[NET_MAX_QUEUES + 1];
};

#endif
