/*
 * rndis_proto: Remote NDIS as the Hyper-V synthetic NIC uses it: message types, status codes, OIDs,
 * packet-filter bits, per-packet-info (PPI) types and the packed wire structs. RNDIS messages travel
 * inside NVSP SEND_RNDIS_PACKET messages (drivers/netvsc/proto/nvsp_proto.h): guest -> host in a send-buffer
 * section or GPA-direct ranges, host -> guest in receive-buffer sub-allocations named by the ranges
 * of a transfer-page packet (drivers/netvsc/proto/PROTOCOL.md).
 *
 * Offsets: every *_offset field inside a message counts from the byte after the 8-byte header
 * {type, msg_len} (i.e. from request_id, or from PACKET.data_offset), NOT from the message start.
 * RNDIS_OFFSET_BASE is that 8. Inside a PPI element, ppi_offset counts from the element's start.
 *
 * Portable: shared by the guest driver (drivers/netvsc) and hvsim's netvsp (sim/). Every struct is
 * packed little-endian and includes the 8-byte header.
 *
 * Sources (../shared/hyperv-facts.md §3.14), permissively licensed:
 *   microsoft/openvmm:vm/devices/net/netvsp/src/rndisprot.rs (the host, MIT; "openvmm:rndisprot.rs"),
 *   microsoft/openvmm:vm/devices/net/netvsp/src/buffers.rs and lib.rs (what the host writes),
 *   freebsd/freebsd-src:sys/net/rndis.h (BSD/ISC, from OpenBSD if_urndisreg.h),
 *   freebsd/freebsd-src:sys/dev/hyperv/netvsc/if_hnreg.h (hash PPIs), DPDK/dpdk:drivers/net/netvsc/ndis.h.
 */
#ifndef APPS_NETVSC_RNDIS_PROTO_H
#define APPS_NETVSC_RNDIS_PROTO_H

#include <stddef.h>
#include <stdint.h>

/* ---- message types (openvmm:rndisprot.rs MESSAGE_TYPE_*; freebsd:net/rndis.h REMOTE_NDIS_*) ---- */
#define RNDIS_MSG_PACKET 0x00000001u
#define RNDIS_MSG_INITIALIZE 0x00000002u
#define RNDIS_MSG_HALT 0x00000003u /* no RNDIS completion: "rely on NVS message send completion" (DPDK) */
#define RNDIS_MSG_QUERY 0x00000004u
#define RNDIS_MSG_SET 0x00000005u
#define RNDIS_MSG_RESET 0x00000006u
#define RNDIS_MSG_INDICATE_STATUS 0x00000007u /* device -> host driver: no completion */
#define RNDIS_MSG_KEEPALIVE 0x00000008u
#define RNDIS_MSG_COMPLETION 0x80000000u      /* completion = request | this */
#define RNDIS_MSG_INITIALIZE_CMPLT 0x80000002u
#define RNDIS_MSG_QUERY_CMPLT 0x80000004u
#define RNDIS_MSG_SET_CMPLT 0x80000005u
#define RNDIS_MSG_RESET_CMPLT 0x80000006u
#define RNDIS_MSG_KEEPALIVE_CMPLT 0x80000008u

#define RNDIS_MAJOR_VERSION 1u
#define RNDIS_MINOR_VERSION 0u
#define RNDIS_OFFSET_BASE 8u /* offsets count from here (the byte after {type, msg_len}) */

/* ---- status codes (NDIS_STATUS_*; each checked in openvmm:rndisprot.rs STATUS_* and, where
 * present, freebsd:net/rndis.h RNDIS_STATUS_*) ---- */
#define RNDIS_STATUS_SUCCESS 0x00000000u
#define RNDIS_STATUS_PENDING 0x00000103u
#define RNDIS_STATUS_MEDIA_CONNECT 0x4001000Bu
#define RNDIS_STATUS_MEDIA_DISCONNECT 0x4001000Cu
#define RNDIS_STATUS_LINK_SPEED_CHANGE 0x40010013u /* openvmm:rndisprot.rs (not in FreeBSD's list) */
#define RNDIS_STATUS_NETWORK_CHANGE 0x40010018u    /* freebsd:net/rndis.h (not in openvmm's list) */
#define RNDIS_STATUS_TASK_OFFLOAD_CURRENT_CONFIG 0x40020006u
#define RNDIS_STATUS_BUFFER_OVERFLOW 0x80000005u
#define RNDIS_STATUS_FAILURE 0xC0000001u
#define RNDIS_STATUS_RESOURCES 0xC000009Au
#define RNDIS_STATUS_NOT_SUPPORTED 0xC00000BBu
#define RNDIS_STATUS_BAD_VERSION 0xC0010004u
#define RNDIS_STATUS_INVALID_LENGTH 0xC0010014u
#define RNDIS_STATUS_INVALID_DATA 0xC0010015u
#define RNDIS_STATUS_BUFFER_TOO_SHORT 0xC0010016u
#define RNDIS_STATUS_INVALID_OID 0xC0010017u

/* ---- OIDs (hyperv-facts.md §3.14; each checked in openvmm:rndisprot.rs enum Oid and
 * freebsd:net/rndis.h) ---- */
#define RNDIS_OID_GEN_SUPPORTED_LIST 0x00010101u
#define RNDIS_OID_GEN_HARDWARE_STATUS 0x00010102u
#define RNDIS_OID_GEN_MEDIA_SUPPORTED 0x00010103u
#define RNDIS_OID_GEN_MEDIA_IN_USE 0x00010104u
#define RNDIS_OID_GEN_MAXIMUM_FRAME_SIZE 0x00010106u /* u32: MTU without the Ethernet header */
#define RNDIS_OID_GEN_LINK_SPEED 0x00010107u         /* u32, in 100 bit/s */
#define RNDIS_OID_GEN_CURRENT_PACKET_FILTER 0x0001010Eu /* u32: RNDIS_PACKET_TYPE_* */
#define RNDIS_OID_GEN_MAXIMUM_TOTAL_SIZE 0x00010111u
#define RNDIS_OID_GEN_MEDIA_CONNECT_STATUS 0x00010114u /* u32: RNDIS_MEDIA_STATE_* */
#define RNDIS_OID_GEN_RECEIVE_SCALE_CAPABILITIES 0x00010203u
#define RNDIS_OID_GEN_RECEIVE_SCALE_PARAMETERS 0x00010204u
#define RNDIS_OID_802_3_PERMANENT_ADDRESS 0x01010101u  /* 6 bytes */
#define RNDIS_OID_802_3_CURRENT_ADDRESS 0x01010102u    /* 6 bytes */
#define RNDIS_OID_802_3_MULTICAST_LIST 0x01010103u
#define RNDIS_OID_802_3_MAXIMUM_LIST_SIZE 0x01010104u
#define RNDIS_OID_TCP_OFFLOAD_PARAMETERS 0xFC01020Cu
#define RNDIS_OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES 0xFC01020Du /* not ...0F (hyperv-facts.md §3.19) */

/* ---- OID_GEN_CURRENT_PACKET_FILTER bits (freebsd:net/rndis.h NDIS_PACKET_TYPE_*) ---- */
#define RNDIS_PACKET_TYPE_DIRECTED 0x00000001u
#define RNDIS_PACKET_TYPE_MULTICAST 0x00000002u
#define RNDIS_PACKET_TYPE_ALL_MULTICAST 0x00000004u
#define RNDIS_PACKET_TYPE_BROADCAST 0x00000008u
#define RNDIS_PACKET_TYPE_PROMISCUOUS 0x00000020u
/* openvmm delivers no received frame while the filter is 0 (lib.rs process_endpoint_rx). */

/* ---- INITIALIZE_CMPLT fields (openvmm:rndisprot.rs; freebsd:net/rndis.h) ---- */
#define RNDIS_MEDIUM_802_3 0x00000000u
#define RNDIS_DF_CONNECTIONLESS 0x00000001u
#define RNDIS_MEDIA_STATE_CONNECTED 0u
#define RNDIS_MEDIA_STATE_DISCONNECTED 1u

/* ---- per-packet-info types (freebsd:net/rndis.h NDIS_PKTINFO_TYPE_*; hash types from
 * freebsd:if_hnreg.h HN_NDIS_PKTINFO_TYPE_HASHVAL / _HASHINF; openvmm:rndisprot.rs PPI_*) ---- */
#define RNDIS_PPI_CHECKSUM 0u    /* u32: tx NDIS_TXCSUM_INFO_* / rx NDIS_RXCSUM_INFO_* (DPDK:ndis.h) */
#define RNDIS_PPI_IPSEC 1u
#define RNDIS_PPI_LSO 2u         /* u32: NDIS_LSO2_INFO_* */
#define RNDIS_PPI_CLASSIFY 3u
#define RNDIS_PPI_SGLIST 5u
#define RNDIS_PPI_IEEE_8021Q 6u  /* u32: priority bits 0-2, CFI bit 3, VLAN id bits 4-15 */
#define RNDIS_PPI_ORIGINAL 7u
#define RNDIS_PPI_HASH_VALUE 8u  /* u32 RSS hash (the slot of PACKET_CANCEL_ID) */
#define RNDIS_PPI_HASH_INFO 9u   /* u32 NDIS_HASH_* (the slot of ORIGINAL_NET_BUFLIST) */
#define RNDIS_PPI_PKT_PAD 11u
#define RNDIS_PPI_INTERNAL 0x80000000u /* "high bit means internal" (openvmm:rndisprot.rs) */

/* Rx checksum PPI bits (DPDK:ndis.h NDIS_RXCSUM_INFO_*); VLAN info layout (DPDK:ndis.h). */
#define RNDIS_RXCSUM_TCP_FAILED 0x0001u
#define RNDIS_RXCSUM_UDP_FAILED 0x0002u
#define RNDIS_RXCSUM_IP_FAILED 0x0004u
#define RNDIS_RXCSUM_TCP_OK 0x0008u
#define RNDIS_RXCSUM_UDP_OK 0x0010u
#define RNDIS_RXCSUM_IP_OK 0x0020u
#define RNDIS_VLAN_INFO(id, pri) ((((uint32_t)(id) & 0xFFFu) << 4) | ((uint32_t)(pri) & 7u))
#define RNDIS_VLAN_INFO_ID(v) (((v) >> 4) & 0xFFFu)

/* ---- wire structs ---- */

struct rndis_hdr {
    uint32_t type;
    uint32_t msg_len; /* the whole message, this header included */
} __attribute__((packed));
_Static_assert(sizeof(struct rndis_hdr) == 8, "RNDIS header");

/* INITIALIZE (openvmm:rndisprot.rs InitializeRequest; freebsd:net/rndis.h rndis_init_req). */
struct rndis_init_req {
    struct rndis_hdr hdr;
    uint32_t request_id;
    uint32_t major, minor;  /* RNDIS_{MAJOR,MINOR}_VERSION */
    uint32_t max_xfer_size; /* openvmm ignores it */
} __attribute__((packed));
_Static_assert(sizeof(struct rndis_init_req) == 24, "INITIALIZE");

/* INITIALIZE_CMPLT (openvmm:rndisprot.rs InitializeComplete; freebsd rndis_init_comp, which accepts
 * a message that stops before af_list_size: RNDIS_INIT_COMP_SIZE_MIN = 48). openvmm sends
 * device_flags CONNECTIONLESS, medium 802.3, max_pkts_per_msg 8, max_xfer_size 0xEFFFFFFF,
 * pkt_align_factor 3 (2^3 bytes). */
struct rndis_init_cmplt {
    struct rndis_hdr hdr;
    uint32_t request_id;
    uint32_t status;
    uint32_t major, minor;
    uint32_t device_flags;
    uint32_t medium;
    uint32_t max_pkts_per_msg; /* PACKET messages the device takes in one transfer */
    uint32_t max_xfer_size;
    uint32_t pkt_align_factor; /* log2 of the alignment of concatenated PACKET messages */
    uint32_t af_list_offset;
    uint32_t af_list_size;
} __attribute__((packed));
_Static_assert(sizeof(struct rndis_init_cmplt) == 52, "INITIALIZE_CMPLT");
_Static_assert(offsetof(struct rndis_init_cmplt, af_list_size) == 48, "af_list_size @48");
#define RNDIS_INIT_CMPLT_MIN 48u

/* HALT, RESET request and KEEPALIVE request: a request id only (RESET's is "reserved"). */
struct rndis_rid_req {
    struct rndis_hdr hdr;
    uint32_t request_id;
} __attribute__((packed));
_Static_assert(sizeof(struct rndis_rid_req) == 12, "HALT/RESET/KEEPALIVE");

/* QUERY and SET (openvmm:rndisprot.rs QueryRequest/SetRequest; freebsd rndis_query_req). The input
 * information buffer follows the struct: info_buf_offset = 20 (RNDIS_QUERY_REQ_INFOBUFOFFSET). */
struct rndis_oid_req {
    struct rndis_hdr hdr;
    uint32_t request_id;
    uint32_t oid;
    uint32_t info_buf_len;
    uint32_t info_buf_offset; /* from request_id (RNDIS_OFFSET_BASE) */
    uint32_t device_vc_handle; /* 0 */
} __attribute__((packed));
_Static_assert(sizeof(struct rndis_oid_req) == 28, "QUERY/SET");
_Static_assert(offsetof(struct rndis_oid_req, info_buf_offset) == 20, "info_buf_offset @20");

/* QUERY_CMPLT (openvmm:rndisprot.rs QueryComplete: info_buf_offset = 16, the buffer follows). */
struct rndis_query_cmplt {
    struct rndis_hdr hdr;
    uint32_t request_id;
    uint32_t status;
    uint32_t info_buf_len;
    uint32_t info_buf_offset; /* from request_id */
} __attribute__((packed));
_Static_assert(sizeof(struct rndis_query_cmplt) == 24, "QUERY_CMPLT");

/* SET_CMPLT and KEEPALIVE_CMPLT. */
struct rndis_status_cmplt {
    struct rndis_hdr hdr;
    uint32_t request_id;
    uint32_t status;
} __attribute__((packed));
_Static_assert(sizeof(struct rndis_status_cmplt) == 16, "SET_CMPLT/KEEPALIVE_CMPLT");

/* RESET_CMPLT: no request id (freebsd rndis_reset_comp; openvmm ResetComplete). */
struct rndis_reset_cmplt {
    struct rndis_hdr hdr;
    uint32_t status;
    uint32_t addressing_reset;
} __attribute__((packed));
_Static_assert(sizeof(struct rndis_reset_cmplt) == 16, "RESET_CMPLT");

/* INDICATE_STATUS (openvmm:rndisprot.rs IndicateStatus; freebsd rndis_status_msg). openvmm sends
 * MEDIA_CONNECT/MEDIA_DISCONNECT with no buffer (offset 0) and TASK_OFFLOAD_CURRENT_CONFIG with
 * one at offset 12. */
struct rndis_indicate_status {
    struct rndis_hdr hdr;
    uint32_t status;
    uint32_t status_buf_len;
    uint32_t status_buf_offset; /* from status (RNDIS_OFFSET_BASE) */
} __attribute__((packed));
_Static_assert(sizeof(struct rndis_indicate_status) == 20, "INDICATE_STATUS");

/* PACKET (openvmm:rndisprot.rs Packet: "All Offset fields contain byte offsets from the beginning
 * of the RNDIS_PACKET structure", i.e. from data_offset; freebsd rndis_packet_msg with
 * RNDIS_PACKET_MSG_OFFSET_ABS(ofs) = ofs + 8). The smallest valid offset is 36 (right after this
 * struct); Hyper-V does not 4-align the data offset ("XXX Hyper-V does not meet data offset
 * alignment requirement", FreeBSD's hn_rndis_rx_data). openvmm's receive path writes the PPIs at
 * offset 36, the frame at offset 248 (256 from the start) and claims msg_len = the whole
 * sub-allocation (buffers.rs write_header). */
struct rndis_packet {
    struct rndis_hdr hdr;
    uint32_t data_offset; /* from this field */
    uint32_t data_len;
    uint32_t oob_data_offset;
    uint32_t oob_data_len;
    uint32_t num_oob_elements;
    uint32_t ppi_offset; /* from data_offset's field */
    uint32_t ppi_len;
    uint32_t vc_handle; /* 0 */
    uint32_t reserved;
} __attribute__((packed));
_Static_assert(sizeof(struct rndis_packet) == 44, "PACKET");
_Static_assert(offsetof(struct rndis_packet, data_offset) == RNDIS_OFFSET_BASE, "data_offset @8");
_Static_assert(offsetof(struct rndis_packet, ppi_offset) == 28, "ppi_offset @28");
#define RNDIS_PACKET_OFFSET_MIN (sizeof(struct rndis_packet) - RNDIS_OFFSET_BASE) /* 36 */

/* One per-packet-info element (openvmm:rndisprot.rs PerPacketInfo; freebsd rndis_pktinfo). size is
 * the whole element; the value starts ppi_offset bytes into the element (12 in every known sender). */
struct rndis_ppi {
    uint32_t size;
    uint32_t type; /* RNDIS_PPI_*, RNDIS_PPI_INTERNAL for private ones */
    uint32_t ppi_offset; /* from the element's start */
} __attribute__((packed));
_Static_assert(sizeof(struct rndis_ppi) == 12, "PPI element header");
#define RNDIS_PPI_U32_SIZE 16u /* an element carrying one u32 */

/* ---- RSS: the info buffer of SET OID_GEN_RECEIVE_SCALE_PARAMETERS (NDIS_RECEIVE_SCALE_PARAMETERS
 * revision 2; DPDK/dpdk:drivers/net/netvsc/ndis.h struct ndis_rss_params, freebsd ndis.h
 * ndis_rss_params; openvmm netvsp reads the same offsets). The indirection table (u32 queue
 * indexes) and the Toeplitz key follow at the offsets given, from the structure's start. ---- */
#define NDIS_OBJECT_TYPE_RSS_PARAMETERS 0x89u
#define NDIS_RSS_PARAMS_REVISION_2 2u
#define NDIS_RSS_HASH_FUNCTION_TOEPLITZ 0x00000001u
#define NDIS_RSS_HASH_IPV4 0x00000100u
#define NDIS_RSS_HASH_TCP_IPV4 0x00000200u
#define NDIS_RSS_HASH_UDP_IPV4 0x00004000u
#define NDIS_RSS_KEY_SIZE 40u            /* the Toeplitz key (NDIS_RSS_HASH_SECRET_KEY_MAX_SIZE_REVISION_1) */
#define NDIS_RSS_TABLE_MAX 128u          /* entries (NDIS_RSS_INDIRECTION_TABLE_MAX_SIZE_REVISION_1 / 4) */

struct ndis_rss_params {
    uint8_t type;               /* @0: NDIS_OBJECT_TYPE_RSS_PARAMETERS */
    uint8_t revision;           /* @1: 2 */
    uint16_t size;              /* @2: sizeof this structure (40) */
    uint16_t flags;             /* @4 */
    uint16_t base_cpu;          /* @6 */
    uint32_t hash_info;         /* @8: hash function | hash types */
    uint16_t table_size;        /* @12: bytes of the indirection table */
    uint16_t pad1;
    uint32_t table_offset;      /* @16 */
    uint16_t key_size;          /* @20 */
    uint16_t pad2;
    uint32_t key_offset;        /* @24 */
    uint32_t cpu_masks_offset;  /* @28 */
    uint32_t cpu_masks_count;   /* @32 */
    uint32_t cpu_masks_size;    /* @36 */
} __attribute__((packed));
_Static_assert(sizeof(struct ndis_rss_params) == 40, "NDIS_RECEIVE_SCALE_PARAMETERS revision 2");
_Static_assert(offsetof(struct ndis_rss_params, hash_info) == 8, "hash_info @8");
_Static_assert(offsetof(struct ndis_rss_params, table_offset) == 16, "table_offset @16");
_Static_assert(offsetof(struct ndis_rss_params, key_offset) == 24, "key_offset @24");

#endif
