/*
 * net_wire: the wire formats of lib/net as packed structs, every multi-byte field in network byte
 * order (big-endian) exactly as on the wire. Sources are named per struct; numbers from the RFCs.
 * Portable (guest, hosted tests, fuzzers).
 */
#ifndef APPS_NET_NET_WIRE_H
#define APPS_NET_NET_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* ---- Ethernet II (DIX / IEEE 802.3 type field; IPv4 over Ethernet: RFC 894) ---- */
struct net_eth_hdr {
    uint8_t dst[6];
    uint8_t src[6];
    uint16_t type;
} __attribute__((packed));
_Static_assert(sizeof(struct net_eth_hdr) == 14, "Ethernet II header");
_Static_assert(offsetof(struct net_eth_hdr, src) == 6, "eth src @6");
_Static_assert(offsetof(struct net_eth_hdr, type) == 12, "eth type @12");

#define NET_ETHERTYPE_IPV4 0x0800u
#define NET_ETHERTYPE_ARP 0x0806u
#define NET_ETHERTYPE_VLAN 0x8100u  /* IEEE 802.1Q */
#define NET_ETHERTYPE_QINQ 0x88A8u  /* IEEE 802.1ad */
#define NET_ETHERTYPE_QINQ_OLD 0x9100u

/* ---- ARP for IPv4 over Ethernet (RFC 826, "Packet format") ---- */
struct net_arp {
    uint16_t htype; /* ar$hrd: 1 = Ethernet */
    uint16_t ptype; /* ar$pro: 0x0800 */
    uint8_t hlen;   /* ar$hln: 6 */
    uint8_t plen;   /* ar$pln: 4 */
    uint16_t op;    /* ar$op: 1 request, 2 reply */
    uint8_t sha[6]; /* ar$sha */
    uint32_t spa;   /* ar$spa */
    uint8_t tha[6]; /* ar$tha */
    uint32_t tpa;   /* ar$tpa */
} __attribute__((packed));
_Static_assert(sizeof(struct net_arp) == 28, "ARP for IPv4 over Ethernet");
_Static_assert(offsetof(struct net_arp, op) == 6, "arp op @6");
_Static_assert(offsetof(struct net_arp, sha) == 8, "arp sha @8");
_Static_assert(offsetof(struct net_arp, spa) == 14, "arp spa @14");
_Static_assert(offsetof(struct net_arp, tha) == 18, "arp tha @18");
_Static_assert(offsetof(struct net_arp, tpa) == 24, "arp tpa @24");

#define NET_ARP_HTYPE_ETHER 1u
#define NET_ARP_OP_REQUEST 1u
#define NET_ARP_OP_REPLY 2u

/* ---- IPv4 header without options (RFC 791 3.1) ---- */
struct net_ip_hdr {
    uint8_t ver_ihl;    /* version (4) << 4 | IHL in 32-bit words (>= 5) */
    uint8_t tos;
    uint16_t total_len; /* header + data, bytes */
    uint16_t id;
    uint16_t frag;      /* flags (reserved, DF, MF) << 13 | fragment offset in 8-byte units */
    uint8_t ttl;
    uint8_t proto;
    uint16_t csum;      /* RFC 1071 over the header (IHL * 4 bytes) */
    uint32_t src;
    uint32_t dst;
} __attribute__((packed));
_Static_assert(sizeof(struct net_ip_hdr) == 20, "IPv4 header without options");
_Static_assert(offsetof(struct net_ip_hdr, total_len) == 2, "ip total length @2");
_Static_assert(offsetof(struct net_ip_hdr, frag) == 6, "ip flags/fragment offset @6");
_Static_assert(offsetof(struct net_ip_hdr, ttl) == 8, "ip ttl @8");
_Static_assert(offsetof(struct net_ip_hdr, proto) == 9, "ip protocol @9");
_Static_assert(offsetof(struct net_ip_hdr, csum) == 10, "ip checksum @10");
_Static_assert(offsetof(struct net_ip_hdr, src) == 12, "ip src @12");
_Static_assert(offsetof(struct net_ip_hdr, dst) == 16, "ip dst @16");

#define NET_IP_DF 0x4000u
#define NET_IP_MF 0x2000u
#define NET_IP_OFFSET_MASK 0x1FFFu
#define NET_IP_PROTO_ICMP 1u
#define NET_IP_PROTO_UDP 17u
#define NET_IP_TTL 64u /* sent (RFC 1700 default) */

/* ---- ICMP echo / echo reply (RFC 792, "Echo or Echo Reply Message") ---- */
struct net_icmp_echo {
    uint8_t type;  /* 8 echo, 0 echo reply */
    uint8_t code;  /* 0 */
    uint16_t csum; /* RFC 1071 over the whole ICMP message */
    uint16_t id;
    uint16_t seq;
} __attribute__((packed));
_Static_assert(sizeof(struct net_icmp_echo) == 8, "ICMP echo header");
_Static_assert(offsetof(struct net_icmp_echo, csum) == 2, "icmp checksum @2");
_Static_assert(offsetof(struct net_icmp_echo, id) == 4, "icmp id @4");
_Static_assert(offsetof(struct net_icmp_echo, seq) == 6, "icmp seq @6");

#define NET_ICMP_ECHO_REPLY 0u
#define NET_ICMP_ECHO 8u

/* ---- UDP header (RFC 768) ---- */
struct net_udp_hdr {
    uint16_t sport;
    uint16_t dport;
    uint16_t len;  /* header + data */
    uint16_t csum; /* over pseudo-header + header + data; 0: none; a computed 0 is sent as 0xFFFF */
} __attribute__((packed));
_Static_assert(sizeof(struct net_udp_hdr) == 8, "UDP header");
_Static_assert(offsetof(struct net_udp_hdr, len) == 4, "udp length @4");
_Static_assert(offsetof(struct net_udp_hdr, csum) == 6, "udp checksum @6");

/* The three headers of every UDP frame the stack sends (no IP options). */
struct net_udp_frame {
    struct net_eth_hdr eth;
    struct net_ip_hdr ip;
    struct net_udp_hdr udp;
} __attribute__((packed));
_Static_assert(sizeof(struct net_udp_frame) == 42, "Ethernet + IPv4 + UDP headers");
_Static_assert(offsetof(struct net_udp_frame, ip) == 14, "IPv4 header @14");
_Static_assert(offsetof(struct net_udp_frame, udp) == 34, "UDP header @34");

/* ---- DHCP / BOOTP fixed part and the magic cookie (RFC 2131 2, figure 1; RFC 2132 2) ---- */
struct net_dhcp_msg {
    uint8_t op;     /* 1 BOOTREQUEST, 2 BOOTREPLY */
    uint8_t htype;  /* 1 Ethernet */
    uint8_t hlen;   /* 6 */
    uint8_t hops;
    uint32_t xid;
    uint16_t secs;  /* seconds since the client began the exchange */
    uint16_t flags; /* 0x8000: broadcast */
    uint32_t ciaddr;
    uint32_t yiaddr;
    uint32_t siaddr;
    uint32_t giaddr;
    uint8_t chaddr[16];
    uint8_t sname[64];
    uint8_t file[128];
    uint32_t cookie; /* 99.130.83.99 */
    /* options follow (RFC 2132): code, length, data; 0 pad and 255 end have no length */
} __attribute__((packed));
_Static_assert(sizeof(struct net_dhcp_msg) == 240, "BOOTP fixed part + cookie");
_Static_assert(offsetof(struct net_dhcp_msg, xid) == 4, "dhcp xid @4");
_Static_assert(offsetof(struct net_dhcp_msg, secs) == 8, "dhcp secs @8");
_Static_assert(offsetof(struct net_dhcp_msg, ciaddr) == 12, "dhcp ciaddr @12");
_Static_assert(offsetof(struct net_dhcp_msg, yiaddr) == 16, "dhcp yiaddr @16");
_Static_assert(offsetof(struct net_dhcp_msg, siaddr) == 20, "dhcp siaddr @20");
_Static_assert(offsetof(struct net_dhcp_msg, chaddr) == 28, "dhcp chaddr @28");
_Static_assert(offsetof(struct net_dhcp_msg, sname) == 44, "dhcp sname @44");
_Static_assert(offsetof(struct net_dhcp_msg, file) == 108, "dhcp file @108");
_Static_assert(offsetof(struct net_dhcp_msg, cookie) == 236, "dhcp magic cookie @236");

#define NET_DHCP_SERVER_PORT 67u
#define NET_DHCP_CLIENT_PORT 68u
#define NET_DHCP_COOKIE 0x63825363u
#define NET_BOOTREQUEST 1u
#define NET_BOOTREPLY 2u
#define NET_DHCP_MIN_MSG 300u /* BOOTP messages are at least 300 bytes (RFC 1542 2.1): we pad to it */

/* Options (RFC 2132) */
#define NET_DHCP_OPT_PAD 0u
#define NET_DHCP_OPT_MASK 1u         /* 3.3 subnet mask, 4 bytes */
#define NET_DHCP_OPT_ROUTER 3u       /* 3.5 routers, 4n bytes, n >= 1 */
#define NET_DHCP_OPT_REQ_IP 50u      /* 9.1 requested IP address, 4 */
#define NET_DHCP_OPT_LEASE 51u       /* 9.2 lease time, 4, seconds */
#define NET_DHCP_OPT_OVERLOAD 52u    /* 9.3 option overload, 1 (ignored: sname/file never parsed) */
#define NET_DHCP_OPT_MSG_TYPE 53u    /* 9.6 message type, 1 */
#define NET_DHCP_OPT_SERVER_ID 54u   /* 9.7 server identifier, 4 */
#define NET_DHCP_OPT_PARAM_LIST 55u  /* 9.8 parameter request list, n */
#define NET_DHCP_OPT_T1 58u          /* 9.11 renewal time, 4 */
#define NET_DHCP_OPT_T2 59u          /* 9.12 rebinding time, 4 */
#define NET_DHCP_OPT_CLIENT_ID 61u   /* 9.14 client identifier, n >= 2 */
#define NET_DHCP_OPT_END 255u

/* Message types (option 53, RFC 2132 9.6) */
#define NET_DHCPDISCOVER 1u
#define NET_DHCPOFFER 2u
#define NET_DHCPREQUEST 3u
#define NET_DHCPDECLINE 4u
#define NET_DHCPACK 5u
#define NET_DHCPNAK 6u
#define NET_DHCPRELEASE 7u
#define NET_DHCPINFORM 8u

#endif
