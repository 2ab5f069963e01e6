/*
 * netgw: hvsim's user-mode gateway behind the netvsp (sim/netvsp/netvsp.h): a tiny router that gives the
 * guest a network like QEMU's user networking, reaching this machine's real sockets without root.
 * Or, in TAP mode, a pipe between the netvsp and a Linux TAP device.
 *
 * ---- The guest's network (gateway mode) ----
 * 10.0.2.0/24: the gateway is 10.0.2.2 with MAC 52:55:0a:00:02:02; the guest gets 10.0.2.15 by DHCP.
 *  - ARP: requests for 10.0.2.2 are answered; the guest's MAC and address are learned from its
 *    frames (until then: the NIC's MAC and 10.0.2.15).
 *  - DHCP server (UDP 67, RFC 2131/2132): DISCOVER -> OFFER, REQUEST -> ACK for 10.0.2.15 (NAK for any
 *    other requested address; ignored when it names another server), INFORM -> ACK without a lease;
 *    RELEASE and DECLINE are counted. Offers and acks carry 53, 54 (10.0.2.2), 51 (the lease, default
 *    3600 s), 58 (lease / 2), 59 (lease * 7 / 8), 1 (255.255.255.0), 3 (10.0.2.2). Answers are
 *    broadcast (255.255.255.255, ff:ff:ff:ff:ff:ff) unless the client has an address (ciaddr):
 *    then unicast to it.
 *  - ICMP: echo requests to 10.0.2.2 are answered. hvsim_netgw_ping (and the control port's "ping")
 *    sends echo requests to the guest one at a time (the next when the reply came, or after the
 *    timeout) and collects the round-trip times.
 *  - UDP forwarding: each forward binds UDP 127.0.0.1:host_port. A datagram from a host peer becomes
 *    a frame from 10.0.2.2:M to the guest's guest_port, where M (HVSIM_NETGW_PEER_PORT_BASE + n) is
 *    the peer's entry in a NAT table (up to HVSIM_NETGW_MAX_PEERS peers, the least recently used one
 *    replaced); the guest's datagrams to 10.0.2.2:M go back through that socket to that peer.
 *  - Outbound UDP (unless no_outbound): a guest datagram to another address (10.0.2.2 with a port that
 *    is no NAT entry means this machine's 127.0.0.1, as QEMU's slirp maps it) is sent from an
 *    ephemeral host socket, one per guest source port (HVSIM_NETGW_MAX_FLOWS, idle ones expire after
 *    HVSIM_NETGW_FLOW_IDLE_S); datagrams coming back to that socket go to the guest from their
 *    source (127.0.0.1 shown as 10.0.2.2).
 *  - Every guest frame is parsed with bounds checks: Ethernet (for 10.0.2.2's MAC or broadcast),
 *    ARP, IPv4 (version, header length, total length, header checksum; fragments and protocols
 *    other than UDP and ICMP are dropped), UDP (length; checksum when not 0) and ICMP (checksum).
 *    Every drop is counted by reason. Frames to the guest carry correct IPv4 and UDP/ICMP checksums.
 *
 * ---- The control port ----
 * UDP 127.0.0.1:control_port takes one text command per datagram and answers one line to the
 * sender: "ping N [SIZE]" (N 1..1000 echo requests of SIZE 0..1472 payload bytes, default 56):
 * "ping: N sent, M received, rtt min/avg/max A/B/C us" when done; "link down" / "link up": "link:
 * down" / "link: up"; "stats": "stats: " and one line of the netvsp's and the gateway's counters;
 * "help". Anything else: "error: ...".
 *
 * ---- Threads ----
 * The gateway has one thread: poll() over its sockets, the TAP device and a wake pipe. Guest frames
 * arrive on the VMBus server's thread through the netvsp backend (hvsim_netgw_from_guest): copied
 * into a queue (HVSIM_NETGW_QUEUE frames; more are dropped and counted) and handled on the
 * gateway's thread, which alone calls hvsim_netvsp_deliver and hvsim_netvsp_set_link. In TAP mode
 * the backend writes the frame to the TAP device at once (non-blocking; a full device drops it).
 * Stats may be read from any thread.
 */
#ifndef SIM_NETGW_H
#define SIM_NETGW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sim/netvsp/netvsp.h"

#define HVSIM_NETGW_MAX_FORWARDS 16u
#define HVSIM_NETGW_MAX_PEERS 256u
#define HVSIM_NETGW_PEER_PORT_BASE 61000u
#define HVSIM_NETGW_MAX_FLOWS 64u
#define HVSIM_NETGW_FLOW_IDLE_S 120u
#define HVSIM_NETGW_QUEUE 1024u
#define HVSIM_NETGW_GUEST_IP 0x0A00020Fu   /* 10.0.2.15 */
#define HVSIM_NETGW_GATEWAY_IP 0x0A000202u /* 10.0.2.2 */
#define HVSIM_NETGW_NETMASK 0xFFFFFF00u

struct hvsim_netgw_forward {
    uint16_t host_port;  /* on 127.0.0.1; 0: an ephemeral port (hvsim_netgw_forward_port tells) */
    uint16_t guest_port;
};

struct hvsim_netgw_config {
    struct hvsim_netvsp *nv;   /* the NIC: the gateway becomes its backend until destroyed */
    const struct hvsim_netgw_forward *forwards;
    uint32_t forward_count;    /* at most HVSIM_NETGW_MAX_FORWARDS */
    bool control;              /* open the control port */
    uint16_t control_port;     /* 0 with control: an ephemeral port */
    uint32_t lease_s;          /* DHCP lease; 0: 3600 */
    const char *tap;           /* TAP mode: this interface instead of the gateway (needs CAP_NET_ADMIN) */
    bool no_outbound;          /* drop guest UDP to other hosts instead of relaying it */
    uint32_t ping_timeout_ms;  /* per echo request; 0: 1000 */
    /* One line ("net: ..."), no newline; NULL: stderr with "hvsim: " in front. Called on the
     * gateway's thread (and at create/destroy on the caller's). */
    void (*log)(void *ctx, const char *line);
    void *log_ctx;
};

struct hvsim_netgw;

/* Binds the sockets, opens the TAP device, starts the thread and sets itself as nv's backend.
 * NULL with a message in err (e.g. "cannot bind 127.0.0.1:5555/udp: Address already in use",
 * "cannot open TAP device tap0: Operation not permitted (needs root or CAP_NET_ADMIN)"). */
struct hvsim_netgw *hvsim_netgw_create(const struct hvsim_netgw_config *cfg, char *err, size_t err_size);
/* Detaches from the netvsp (waits for a backend call in progress), stops the thread, closes all. */
void hvsim_netgw_destroy(struct hvsim_netgw *gw);
/* The netvsp backend (ctx: the gateway). */
void hvsim_netgw_from_guest(void *gw, const uint8_t *frame, uint32_t len);
/* The port forward i is bound to, and the control port (0: none). */
uint16_t hvsim_netgw_forward_port(const struct hvsim_netgw *gw, uint32_t i);
uint16_t hvsim_netgw_control_port(const struct hvsim_netgw *gw);

struct hvsim_netgw_stats {
    uint32_t guest_ip;                  /* as learned (host order) */
    uint32_t peers, flows;              /* NAT entries now */
    uint64_t frames_in, frames_out, frames_out_dropped; /* from the guest / delivered / refused by netvsp */
    uint64_t queue_full;                /* guest frames dropped: the gateway's queue was full */
    uint64_t arp_requests, arp_replies;
    uint64_t dhcp_discovers, dhcp_offers, dhcp_requests, dhcp_acks, dhcp_naks, dhcp_releases, dhcp_other;
    uint64_t icmp_echo_requests, icmp_echo_replies; /* the guest's pings of 10.0.2.2, answered */
    uint64_t pings_sent, pings_received;           /* the gateway's pings of the guest */
    uint64_t udp_to_guest, udp_from_guest;         /* datagrams relayed each way */
    uint64_t host_send_errors, host_too_big;       /* sendto failures; host datagrams over 1472 bytes */
    uint64_t nat_peers_replaced, flows_refused;
    uint64_t drop_eth, drop_arp, drop_ip, drop_ip_checksum, drop_fragment, drop_protocol, drop_udp,
        drop_udp_checksum, drop_icmp, drop_no_route, drop_dhcp;
    uint64_t tap_in, tap_out, tap_errors;
};
void hvsim_netgw_get_stats(struct hvsim_netgw *gw, struct hvsim_netgw_stats *out);
void hvsim_netgw_format_stats(const struct hvsim_netgw_stats *s, char *buf, size_t size);

/* The result of a ping run (hvsim_netgw_ping, or the control port). */
struct hvsim_netgw_ping_result {
    uint32_t sent, received;
    uint64_t rtt_min_us, rtt_avg_us, rtt_max_us;
};
/* Pings the guest count times (1..1000) with size payload bytes (0..1472) from the gateway's thread
 * and waits for the result (up to count * timeout + 1 s). false: another ping runs, the gateway is in
 * TAP mode, or bad arguments. Not from the gateway's thread. */
bool hvsim_netgw_ping(struct hvsim_netgw *gw, uint32_t count, uint32_t size, struct hvsim_netgw_ping_result *out);

#endif
