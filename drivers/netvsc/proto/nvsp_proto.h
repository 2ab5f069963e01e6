/*
 * nvsp_proto: the Network Virtual Service Protocol (NVSP), the message layer of the Hyper-V synthetic
 * NIC, as numbers and wire structs. NVSP messages are the payload of VMBus packets on the netvsc
 * channel(s): in-band (type 6), transfer-page (7, the receive path), GPA-direct (9, transmit) and
 * completion (11) packets; see drivers/netvsc/proto/PROTOCOL.md for who sends what in which packet.
 *
 * Portable: shared by the guest driver (drivers/netvsc) and hvsim's netvsp (sim/). Every struct is
 * packed little-endian and includes the 4-byte message type at offset 0. Sizes are the "natural"
 * sizes (the fields that mean something); on the wire the messages are padded, see NVSP_MSG_SIZE_*.
 *
 * Sources (../shared/hyperv-facts.md §3.14), all permissively licensed:
 *   microsoft/openvmm:vm/devices/net/netvsp/src/protocol.rs (the host, MIT; "openvmm:protocol.rs"),
 *   microsoft/openvmm:vm/devices/net/netvsp/src/lib.rs (what the host does with them),
 *   microsoft/mu_msvm:MsvmPkg/NetvscDxe/nvspprotocol.h (Microsoft's own header, BSD-2-Clause-Patent),
 *   DPDK/dpdk:drivers/net/netvsc/hn_nvs.h, hn_nvs.c (a guest, BSD-3),
 *   freebsd/freebsd-src:sys/dev/hyperv/netvsc/if_hnreg.h (a guest, BSD-2).
 */
#ifndef APPS_NETVSC_NVSP_PROTO_H
#define APPS_NETVSC_NVSP_PROTO_H

#include <stddef.h>
#include <stdint.h>

/* ---- protocol versions: major << 16 | minor (openvmm:protocol.rs enum Version; DPDK:hn_nvs.h
 * NVS_VERSION_*; mu_msvm:nvspprotocol.h NVSP_PROTOCOL_VERSION_*). v1 is (0, 2) and v2 is (3, 2). ---- */
#define NVSP_VERSION_1  0x00000002u
#define NVSP_VERSION_2  0x00030002u
#define NVSP_VERSION_4  0x00040000u
#define NVSP_VERSION_5  0x00050000u
#define NVSP_VERSION_6  0x00060000u
#define NVSP_VERSION_61 0x00060001u
#define NVSP_VERSION_INVALID 0xFFFFFFFFu /* openvmm:protocol.rs INVALID_PROTOCOL_VERSION */
#define NVSP_VERSION_MAJOR(v) ((v) >> 16)
#define NVSP_VERSION_MINOR(v) ((v) & 0xFFFFu)

/* The NDIS version a guest announces in SEND_NDIS_VERSION: 6.30 with NVSP >= 5, else 6.1
 * (DPDK:hn_nvs.c hn_nvs_init; freebsd:hn_nvs.c). major << 16 | minor. */
#define NVSP_NDIS_VERSION_6_1  0x00060001u
#define NVSP_NDIS_VERSION_6_20 0x00060014u
#define NVSP_NDIS_VERSION_6_30 0x0006001Eu

/* ---- message types (u32 at offset 0; openvmm:protocol.rs MESSAGE*_TYPE_*, DPDK:hn_nvs.h NVS_TYPE_*) ---- */
enum nvsp_msg_type {
    NVSP_MSG_NONE = 0,
    NVSP_MSG_INIT = 1,          /* guest -> host, completion requested */
    NVSP_MSG_INIT_COMPLETE = 2, /* host -> guest, in the VMBus completion of INIT */

    /* version 1 */
    NVSP_MSG1_SEND_NDIS_VERSION = 100,
    NVSP_MSG1_SEND_RECEIVE_BUFFER = 101,
    NVSP_MSG1_SEND_RECEIVE_BUFFER_COMPLETE = 102,
    NVSP_MSG1_REVOKE_RECEIVE_BUFFER = 103,
    NVSP_MSG1_SEND_SEND_BUFFER = 104,
    NVSP_MSG1_SEND_SEND_BUFFER_COMPLETE = 105,
    NVSP_MSG1_REVOKE_SEND_BUFFER = 106,
    NVSP_MSG1_SEND_RNDIS_PACKET = 107,
    NVSP_MSG1_SEND_RNDIS_PACKET_COMPLETE = 108,

    /* version 2: 109..124 are chimney (TCP offload) and deprecated VMQ messages, 126/127 chimney
     * handles; nobody sends them (openvmm:protocol.rs MESSAGE2_*). */
    NVSP_MSG2_FIRST_CHIMNEY = 109,
    NVSP_MSG2_SEND_NDIS_CONFIG = 125,
    NVSP_MSG2_LAST = 127,

    /* version 4 */
    NVSP_MSG4_SEND_VF_ASSOCIATION = 128,
    NVSP_MSG4_SWITCH_DATA_PATH = 129,
    NVSP_MSG4_UPLINK_CONNECT_STATE_DEPRECATED = 130,

    /* version 5 */
    NVSP_MSG5_OID_QUERY_EX = 131,
    NVSP_MSG5_OID_QUERY_EX_COMPLETE = 132,
    NVSP_MSG5_SUB_CHANNEL = 133, /* request (guest) and completion (host) share the type */
    NVSP_MSG5_SEND_INDIRECTION_TABLE = 134,

    /* version 6 (packet direct; not used by this project) */
    NVSP_MSG6_PD_API = 135,
    NVSP_MSG6_PD_POST_BATCH = 136,
};

/* ---- NVSP status (openvmm:protocol.rs enum Status; mu_msvm:nvspprotocol.h NVSP_STATUS;
 * DPDK:hn_nvs.h NVS_STATUS_OK 1 / FAILED 2). 3 and 4 were version-range errors, now deprecated. ---- */
#define NVSP_STATUS_NONE 0u                 /* openvmm answers an unsupported INIT version with it */
#define NVSP_STATUS_SUCCESS 1u
#define NVSP_STATUS_FAILURE 2u
#define NVSP_STATUS_INVALID_RNDIS_PACKET 5u
#define NVSP_STATUS_BUSY 6u
#define NVSP_STATUS_PROTOCOL_VERSION_UNSUPPORTED 7u

/* ---- constants (DPDK:hn_nvs.h; openvmm:protocol.rs; openvmm:lib.rs) ---- */
#define NVSP_RECV_BUF_ID 0xCAFEu     /* NVS_RXBUF_SIG: the id of the receive buffer (and its transfer-page set) */
#define NVSP_SEND_BUF_ID 0xFACEu     /* NVS_CHIM_SIG: the id of the send ("chimney") buffer */
#define NVSP_CHANNEL_TYPE_DATA 0u    /* SEND_RNDIS_PACKET.channel_type: an RNDIS PACKET message */
#define NVSP_CHANNEL_TYPE_CONTROL 1u /* any other RNDIS message */
#define NVSP_NO_SECTION 0xFFFFFFFFu  /* send_buf_section_index: the send buffer is not used */
#define NVSP_MAX_PACKETS_PER_RECEIVE 375u /* ranges in one transfer-page packet (openvmm:protocol.rs) */
#define NVSP_SEND_TABLE_ENTRIES 16u  /* VMS_SWITCH_RSS_MAX_SEND_INDIRECTION_TABLE_ENTRIES */
#define NVSP_RSS_TABLE_MIN 16u       /* VMS_SWITCH_RSS_MIN_INDIRECTION_TABLE_ENTRIES */
#define NVSP_RSS_TABLE_MAX 128u      /* VMS_SWITCH_RSS_MAX_INDIRECTION_TABLE_ENTRIES */
#define NVSP_SUBCHANNEL_ALLOCATE 1u  /* SUB_CHANNEL.op (NvspSubchannelAllocate) */
#define NVSP_DATA_PATH_SYNTHETIC 0u
#define NVSP_DATA_PATH_VF 1u

/* SEND_NDIS_CONFIG capability bits (openvmm:protocol.rs NdisConfigCapabilities; DPDK:hn_nvs.h
 * NVS_NDIS_CONF_SRIOV 0x4, _VLAN 0x8). */
#define NVSP_NDIS_CAP_VMQ 0x01u
#define NVSP_NDIS_CAP_CHIMNEY 0x02u
#define NVSP_NDIS_CAP_SRIOV 0x04u
#define NVSP_NDIS_CAP_IEEE_8021Q 0x08u
#define NVSP_NDIS_CAP_CORRELATION_ID 0x10u
#define NVSP_NDIS_CAP_TEAMING 0x20u
#define NVSP_NDIS_CAP_VIRTUAL_SUBNET_ID 0x40u
#define NVSP_NDIS_CAP_RSC_OVER_VMBUS 0x80u

/* ---- sizes on the wire ----
 * Hosts pad what they send to a fixed NVSP message size: 0x1c (28) bytes for NVSP < 6.1 (the
 * header plus the largest v1 body, RECEIVE_BUFFER_COMPLETE with one section) and 0x28 (40) bytes
 * from 6.1 on, "only needed for Windows guests, which are picky about packet sizes"; the VMBus
 * packet rounds it up to 8 again (openvmm:protocol.rs PACKET_SIZE_V1/PACKET_SIZE_V61, lib.rs
 * NvspMessage::aligned_payload). INIT_COMPLETE is sent at the v1 size (the version is not agreed
 * yet). SEND_INDIRECTION_TABLE is longer (the table follows) and is not padded.
 * Guests: Hyper-V ignores shorter requests: "if only 12B data were sent, Hypervisor would never
 * reply" (freebsd:if_hnreg.h HN_NVS_REQSIZE_MIN 32); DPDK pads every request to 40 bytes
 * (DPDK:hn_nvs.h rsvd[]), mu_msvm's NVSP_MESSAGE is 32 bytes. openvmm's host accepts the natural
 * size. This project's guest sends NVSP_GUEST_MSG_SIZE. */
#define NVSP_MSG_SIZE_LEGACY 28u     /* 0x1c: hosts, NVSP < 6.1 */
#define NVSP_MSG_SIZE_V61 40u        /* 0x28: hosts, NVSP >= 6.1 */
#define NVSP_HYPERV_MIN_REQ_SIZE 32u /* a guest request shorter than this gets no answer on Hyper-V */
#define NVSP_GUEST_MSG_SIZE 40u      /* what this project's guest sends (as DPDK) */

/* ---- wire structs ---- */

struct nvsp_hdr {
    uint32_t type; /* enum nvsp_msg_type */
} __attribute__((packed));
_Static_assert(sizeof(struct nvsp_hdr) == 4, "NVSP header");

/* INIT (openvmm:protocol.rs MessageInit; DPDK:hn_nvs.h hn_nvs_init). The fields were min/max
 * version; hosts look at the first one only (openvmm:lib.rs initialize: check_version(
 * init.protocol_version)), so guests send min == max and walk their list from the newest down. */
struct nvsp_msg_init {
    struct nvsp_hdr hdr;
    uint32_t ver_min; /* "protocol_version": the one the host checks */
    uint32_t ver_max; /* "protocol_version2" */
} __attribute__((packed));
_Static_assert(sizeof(struct nvsp_msg_init) == 12, "INIT");
_Static_assert(offsetof(struct nvsp_msg_init, ver_min) == 4, "INIT.ver_min @4");

/* INIT_COMPLETE (openvmm:protocol.rs MessageInitComplete; mu_msvm:nvspprotocol.h
 * NVSP_MESSAGE_INIT_COMPLETE; DPDK:hn_nvs.h hn_nvs_init_resp {ver, rsvd, status}). Note the order:
 * the status is the LAST field. openvmm sends negotiated_version = 0xFFFFFFFF (or 2 for v1),
 * max_mdl_chain_len 34 and status SUCCESS, or NONE (0) for a version it does not support. */
struct nvsp_msg_init_complete {
    struct nvsp_hdr hdr;
    uint32_t negotiated_version; /* deprecated: "was NegotiatedProtocolVersion (2) in Win6" */
    uint32_t max_mdl_chain_len;
    uint32_t status;             /* NVSP_STATUS_* */
} __attribute__((packed));
_Static_assert(sizeof(struct nvsp_msg_init_complete) == 16, "INIT_COMPLETE");
_Static_assert(offsetof(struct nvsp_msg_init_complete, status) == 12, "INIT_COMPLETE.status @12");

/* SEND_NDIS_VERSION (openvmm:protocol.rs Message1SendNdisVersion; DPDK hn_nvs_ndis_init). */
struct nvsp_msg_ndis_version {
    struct nvsp_hdr hdr;
    uint32_t major;
    uint32_t minor;
} __attribute__((packed));
_Static_assert(sizeof(struct nvsp_msg_ndis_version) == 12, "SEND_NDIS_VERSION");

/* SEND_RECEIVE_BUFFER and SEND_SEND_BUFFER (openvmm:protocol.rs Message1SendReceiveBuffer /
 * Message1SendSendBuffer with a reserved u16; mu_msvm's packed struct ends after id, at 10 bytes,
 * which is therefore the minimum accepted). */
struct nvsp_msg_send_buf {
    struct nvsp_hdr hdr;
    uint32_t gpadl;
    uint16_t id; /* NVSP_RECV_BUF_ID / NVSP_SEND_BUF_ID */
    uint16_t reserved;
} __attribute__((packed));
_Static_assert(sizeof(struct nvsp_msg_send_buf) == 12, "SEND_*_BUFFER");
_Static_assert(offsetof(struct nvsp_msg_send_buf, id) == 8, "SEND_*_BUFFER.id @8");
#define NVSP_MSG_SEND_BUF_MIN 10u

/* One section of the receive buffer (openvmm:protocol.rs ReceiveBufferSection; DPDK:hn_nvs.h
 * hn_nvs_rxbuf_sect {start, slotsz, slotcnt, end}). */
struct nvsp_recv_section {
    uint32_t offset;         /* of the section's first sub-allocation in the buffer */
    uint32_t sub_alloc_size; /* bytes per sub-allocation (one received frame each) */
    uint32_t num_sub_allocs;
    uint32_t end_offset;     /* of the section's end */
} __attribute__((packed));
_Static_assert(sizeof(struct nvsp_recv_section) == 16, "receive buffer section");

/* SEND_RECEIVE_BUFFER_COMPLETE: fixed part + num_sections sections. "No VSP has ever sent more than
 * 1 section" (openvmm:protocol.rs); openvmm sends {offset 0, size, count, end = size * count};
 * DPDK requires exactly one (hn_nvs.c hn_nvs_conn_rxbuf). */
struct nvsp_msg_recv_buf_complete {
    struct nvsp_hdr hdr;
    uint32_t status;
    uint32_t num_sections;
    struct nvsp_recv_section sections[];
} __attribute__((packed));
_Static_assert(sizeof(struct nvsp_msg_recv_buf_complete) == 12, "RECEIVE_BUFFER_COMPLETE fixed part");
_Static_assert(offsetof(struct nvsp_msg_recv_buf_complete, sections) == 12, "sections @12");
#define NVSP_RECV_SECTIONS_MAX 4u /* this project's bound (checker); one is all anyone sends */

/* REVOKE_RECEIVE_BUFFER and REVOKE_SEND_BUFFER (openvmm:protocol.rs Message1Revoke*Buffer; DPDK
 * hn_nvs_rxbuf_disconn). Sent without completion; DPDK "lingers" 200 ms afterwards. */
struct nvsp_msg_revoke_buf {
    struct nvsp_hdr hdr;
    uint16_t id;
} __attribute__((packed));
_Static_assert(sizeof(struct nvsp_msg_revoke_buf) == 6, "REVOKE_*_BUFFER");

/* SEND_SEND_BUFFER_COMPLETE: the host picks the section size (openvmm: 6144). DPDK refuses a size
 * of 0 or not a multiple of 4 (hn_nvs.c hn_nvs_conn_chim). */
struct nvsp_msg_send_buf_complete {
    struct nvsp_hdr hdr;
    uint32_t status;
    uint32_t section_size;
} __attribute__((packed));
_Static_assert(sizeof(struct nvsp_msg_send_buf_complete) == 12, "SEND_SEND_BUFFER_COMPLETE");

/* SEND_RNDIS_PACKET, both directions (openvmm:protocol.rs Message1SendRndisPacket; DPDK hn_nvs_rndis).
 * Guest -> host: the RNDIS message is in the send buffer (section index/size) or in the GPA ranges
 * of a GPA-direct packet (index NVSP_NO_SECTION, size 0). Host -> guest: in the transfer-page
 * ranges of the receive buffer (index NVSP_NO_SECTION, size 0). */
struct nvsp_msg_rndis_pkt {
    struct nvsp_hdr hdr;
    uint32_t channel_type;          /* NVSP_CHANNEL_TYPE_* */
    uint32_t send_buf_section_index; /* NVSP_NO_SECTION if the send buffer is not used */
    uint32_t send_buf_section_size;  /* bytes used in that section */
} __attribute__((packed));
_Static_assert(sizeof(struct nvsp_msg_rndis_pkt) == 16, "SEND_RNDIS_PACKET");
_Static_assert(offsetof(struct nvsp_msg_rndis_pkt, send_buf_section_index) == 8, "section index @8");

/* SEND_RNDIS_PACKET_COMPLETE, both directions, in a VMBus completion packet (DPDK hn_nvs_rndis_ack). */
struct nvsp_msg_rndis_pkt_complete {
    struct nvsp_hdr hdr;
    uint32_t status;
} __attribute__((packed));
_Static_assert(sizeof(struct nvsp_msg_rndis_pkt_complete) == 8, "SEND_RNDIS_PACKET_COMPLETE");

/* SEND_NDIS_CONFIG, v2+ (openvmm:protocol.rs Message2SendNdisConfig; DPDK hn_nvs_ndis_conf, which
 * sends mtu = MTU + 14, the Ethernet header included; openvmm falls back to 1514 outside
 * 1514..9216). */
struct nvsp_msg_ndis_config {
    struct nvsp_hdr hdr;
    uint32_t mtu;
    uint32_t reserved;
    uint64_t capabilities; /* NVSP_NDIS_CAP_* */
} __attribute__((packed));
_Static_assert(sizeof(struct nvsp_msg_ndis_config) == 20, "SEND_NDIS_CONFIG");
_Static_assert(offsetof(struct nvsp_msg_ndis_config, capabilities) == 12, "capabilities @12");

/* SEND_VF_ASSOCIATION, v4, host -> guest (openvmm:protocol.rs Message4SendVfAssociation). */
struct nvsp_msg_vf_association {
    struct nvsp_hdr hdr;
    uint32_t allocated; /* 1: serial is valid */
    uint32_t serial;
} __attribute__((packed));
_Static_assert(sizeof(struct nvsp_msg_vf_association) == 12, "SEND_VF_ASSOCIATION");

/* SWITCH_DATA_PATH, v4, both directions (openvmm:protocol.rs Message4SwitchDataPath). */
struct nvsp_msg_switch_data_path {
    struct nvsp_hdr hdr;
    uint32_t active_path; /* NVSP_DATA_PATH_* */
} __attribute__((packed));
_Static_assert(sizeof(struct nvsp_msg_switch_data_path) == 8, "SWITCH_DATA_PATH");

/* OID_QUERY_EX and its completion, v5 (openvmm:protocol.rs Message5OidQueryEx{,Complete}; openvmm
 * answers every one with NOT_SUPPORTED). */
struct nvsp_msg_oid_query_ex {
    struct nvsp_hdr hdr;
    uint8_t ndis_obj_type, ndis_obj_rev;
    uint16_t ndis_obj_size;
    uint32_t oid;
} __attribute__((packed));
_Static_assert(sizeof(struct nvsp_msg_oid_query_ex) == 12, "OID_QUERY_EX");
struct nvsp_msg_oid_query_ex_complete {
    struct nvsp_hdr hdr;
    uint32_t status; /* an RNDIS/NDIS status */
    uint32_t bytes;  /* written, or needed */
} __attribute__((packed));
_Static_assert(sizeof(struct nvsp_msg_oid_query_ex_complete) == 12, "OID_QUERY_EX_COMPLETE");

/* SUB_CHANNEL request (guest, v5) and its completion (host; same type 133, DPDK:hn_nvs.h
 * "NVS_TYPE_SUBCH_RESP 133 same as SUBCH_REQ"); openvmm:protocol.rs Message5Subchannel{Request,
 * Complete}. The host grants num_subchannels < its queue count and then offers that many
 * sub-channels. */
struct nvsp_msg_subchannel {
    struct nvsp_hdr hdr;
    uint32_t op_or_status;    /* request: NVSP_SUBCHANNEL_ALLOCATE; completion: NVSP_STATUS_* */
    uint32_t num_subchannels; /* request: wanted; completion: granted */
} __attribute__((packed));
_Static_assert(sizeof(struct nvsp_msg_subchannel) == 12, "SUB_CHANNEL");

/* SEND_INDIRECTION_TABLE, v5, host -> guest, in-band without completion (openvmm:protocol.rs
 * Message5SendIndirectionTable; lib.rs guest_send_indirection_table). table_offset is counted from
 * the start of the NVSP message, i.e. from the type field: openvmm sends 12, the table right after
 * this struct, count 16 ("The offset to the send indirection table from the beginning of the NVSP
 * message"). Hyper-V hosts up to NVSP 6 send an offset that is too small ("host bug"; Linux commit
 * "hv_netvsc: Fix send_table offset in case of a host bug", 2019, then uses 4 + 36 = 40 when the
 * message is long enough); FreeBSD and DPDK ignore the message. Entries are sub-channel indexes. */
struct nvsp_msg_indirection_table {
    struct nvsp_hdr hdr;
    uint32_t count;
    uint32_t offset; /* from the start of the message (the type field) */
} __attribute__((packed));
_Static_assert(sizeof(struct nvsp_msg_indirection_table) == 12, "SEND_INDIRECTION_TABLE fixed part");
#define NVSP_INDIRECTION_TABLE_HYPERV_OFFSET 40u /* 4 + sizeof(NVSP_6_MESSAGE_UBER) (see above) */

#endif
