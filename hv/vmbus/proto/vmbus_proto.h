/*
 * vmbus_proto: the VMBus channel-management protocol as numbers and wire structs: versions,
 * connection ids, channel message types and layouts, the interrupt page and the monitor page, and
 * the device GUIDs. Channel messages travel as the payload of SynIC messages of type
 * HV_MESSAGE_VMBUS (guest -> host: HvPostMessage on the message connection id; host -> guest: the
 * SINT VMBUS_MESSAGE_SINT slot), at most 240 bytes.
 *
 * Portable: shared by the guest (hv/vmbus*.c), hvsim's VMBus server (sim/) and the tests. Every
 * struct is packed little-endian; sizes include the 8-byte channel message header. Sources
 * (../shared/hyperv-facts.md §3.7-3.13): torvalds/linux:include/linux/hyperv.h (field lists only),
 * microsoft/openvmm:vm/devices/vmbus/vmbus_core/src/protocol.rs (openvmm:protocol.rs),
 * microsoft/mu_msvm:MsvmPkg/VmbusDxe/ChannelMessages.h, qemu/qemu:include/hw/hyperv/vmbus-proto.h.
 */
#ifndef HV_VMBUS_PROTO_H
#define HV_VMBUS_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hv/proto/hvdefs.h"

/* ---- versions (major << 16 | minor; openvmm:protocol.rs enum Version) ---- */
#define VMBUS_VERSION_WS2008   0x0000000Du /* 0.13 */
#define VMBUS_VERSION_WIN7     0x00010001u /* 1.1 */
#define VMBUS_VERSION_WIN8     0x00020004u /* 2.4 */
#define VMBUS_VERSION_WIN8_1   0x00030000u /* 3.0: WS2012 R2, the oldest host that runs Gen2 VMs */
#define VMBUS_VERSION_WIN10    0x00040000u /* 4.0: WS2016 */
#define VMBUS_VERSION_WIN10_RS3 0x00040001u /* 4.1: MODIFYCHANNEL */
#define VMBUS_VERSION_WIN10_V5 0x00050000u /* 5.0: multiclient connection id, message SINT choice */
#define VMBUS_VERSION_WIN10_V5_1 0x00050001u
#define VMBUS_VERSION_WIN10_V5_2 0x00050002u
#define VMBUS_VERSION_WIN10_V5_3 0x00050003u /* Iron: MODIFYCHANNEL_RESPONSE */
#define VMBUS_VERSION_COPPER   0x00060000u /* 6.0: feature flags */
#define VMBUS_VERSION_MAJOR(v) ((v) >> 16)
#define VMBUS_VERSION_MINOR(v) ((v) & 0xffffu)

/* ---- connection ids and SINTs (linux:drivers/hv/hyperv_vmbus.h) ---- */
#define VMBUS_CONN_MESSAGE            1u /* channel messages before 5.0 (and the fallback) */
#define VMBUS_CONN_EVENT              2u /* WS2008 signalling */
#define VMBUS_CONN_MONITOR            3u
#define VMBUS_CONN_MESSAGE_MULTICLIENT 4u /* INITIATE_CONTACT from 5.0 on */
#define VMBUS_MESSAGE_SINT            2u
#define VMBUS_MAX_RELID               2047u /* relids are 1..2047: bits of SINT2's event-flag block */
#define VMBUS_MAX_RELID_LEGACY        255u
#define VMBUS_TARGET_VP_NO_INTERRUPT  0xffffffffu /* openvmm:protocol.rs VP_INDEX_DISABLE_INTERRUPT */

/* 6.0 (Copper) feature flags, carried in INITIATE_CONTACT's upper 32 bits of the target info and
 * answered in VERSION_RESPONSE2's supported_features (openvmm:protocol.rs FeatureFlags). */
#define VMBUS_FEATURE_GUEST_SIGNAL_PARAMS    0x01u
#define VMBUS_FEATURE_CHANNEL_INTR_REDIRECT  0x02u
#define VMBUS_FEATURE_MODIFY_CONNECTION      0x04u
#define VMBUS_FEATURE_CLIENT_ID              0x08u
#define VMBUS_FEATURE_CONFIDENTIAL_CHANNELS  0x10u
#define VMBUS_FEATURE_PAUSE_RESUME           0x20u
#define VMBUS_FEATURE_SERVER_MONITOR_PAGES   0x40u
#define VMBUS_FEATURE_GPA_PINNING            0x80u

/* ---- channel message types (u32 at payload offset 0; linux:hyperv.h, openvmm:protocol.rs) ---- */
enum vmbus_msg_type {
    VMBUS_MSG_INVALID = 0,
    VMBUS_MSG_OFFERCHANNEL = 1,
    VMBUS_MSG_RESCIND_CHANNELOFFER = 2,
    VMBUS_MSG_REQUESTOFFERS = 3,
    VMBUS_MSG_ALLOFFERS_DELIVERED = 4,
    VMBUS_MSG_OPENCHANNEL = 5,
    VMBUS_MSG_OPENCHANNEL_RESULT = 6,
    VMBUS_MSG_CLOSECHANNEL = 7,
    VMBUS_MSG_GPADL_HEADER = 8,
    VMBUS_MSG_GPADL_BODY = 9,
    VMBUS_MSG_GPADL_CREATED = 10,
    VMBUS_MSG_GPADL_TEARDOWN = 11,
    VMBUS_MSG_GPADL_TORNDOWN = 12,
    VMBUS_MSG_RELID_RELEASED = 13,
    VMBUS_MSG_INITIATE_CONTACT = 14,
    VMBUS_MSG_VERSION_RESPONSE = 15,
    VMBUS_MSG_UNLOAD = 16,
    VMBUS_MSG_UNLOAD_RESPONSE = 17,
    VMBUS_MSG_OPEN_RESERVED_CHANNEL = 18,
    VMBUS_MSG_CLOSE_RESERVED_CHANNEL = 19,
    VMBUS_MSG_CLOSE_RESERVED_RESPONSE = 20,
    VMBUS_MSG_TL_CONNECT_REQUEST = 21,
    VMBUS_MSG_MODIFYCHANNEL = 22,
    VMBUS_MSG_TL_CONNECT_RESULT = 23,
    VMBUS_MSG_MODIFYCHANNEL_RESPONSE = 24,
    VMBUS_MSG_MODIFY_CONNECTION = 25,
    VMBUS_MSG_MODIFY_CONNECTION_RESPONSE = 26,
    VMBUS_MSG_PAUSE = 27,
    VMBUS_MSG_PAUSE_RESPONSE = 28,
    VMBUS_MSG_RESUME = 29,
    VMBUS_MSG_COUNT
};

struct vmbus_guid {
    uint8_t b[16]; /* wire order: the first three fields little-endian */
};
_Static_assert(sizeof(struct vmbus_guid) == 16, "GUID");

struct vmbus_msg_header {
    uint32_t type;
    uint32_t padding;
} __attribute__((packed));
_Static_assert(sizeof(struct vmbus_msg_header) == 8, "channel message header");

/* The offer proper (linux:hyperv.h struct vmbus_channel_offer). */
#define VMBUS_OFFER_USER_DEFINED 120
struct vmbus_offer {
    struct vmbus_guid if_type;
    struct vmbus_guid if_instance;
    uint64_t reserved1, reserved2;
    uint16_t chn_flags;
    uint16_t mmio_megabytes;
    uint8_t user_defined[VMBUS_OFFER_USER_DEFINED]; /* pipe mode: u32 pipe_mode + 116 bytes */
    uint16_t sub_channel_index;
    uint16_t reserved3;
} __attribute__((packed));
_Static_assert(sizeof(struct vmbus_offer) == 176, "vmbus_channel_offer");
_Static_assert(offsetof(struct vmbus_offer, chn_flags) == 48, "chn_flags @48");
_Static_assert(offsetof(struct vmbus_offer, user_defined) == 52, "user_def @52");
_Static_assert(offsetof(struct vmbus_offer, sub_channel_index) == 172, "sub_channel_index @172");

/* Offer flags (linux:hyperv.h VMBUS_CHANNEL_*). */
#define VMBUS_OFFER_ENUMERATE_DEVICE_INTERFACE 0x0001u
#define VMBUS_OFFER_SERVER_SUPPORTS_TRANSFER_PAGES 0x0002u
#define VMBUS_OFFER_SERVER_SUPPORTS_GPADLS 0x0004u
#define VMBUS_OFFER_NAMED_PIPE_MODE 0x0010u
#define VMBUS_OFFER_LOOPBACK 0x0100u
#define VMBUS_OFFER_PARENT_OFFER 0x0200u
#define VMBUS_OFFER_REQUEST_MONITORED_NOTIFICATION 0x0400u
#define VMBUS_OFFER_TLNPI_PROVIDER 0x2000u

struct vmbus_msg_offer_channel {
    struct vmbus_msg_header hdr;
    struct vmbus_offer offer;
    uint32_t child_relid;
    uint8_t monitor_id;
    uint8_t monitor_allocated; /* bit 0 */
    uint16_t is_dedicated_interrupt; /* bit 0 */
    uint32_t connection_id;
} __attribute__((packed));
_Static_assert(sizeof(struct vmbus_msg_offer_channel) == 196, "OFFERCHANNEL");
_Static_assert(offsetof(struct vmbus_msg_offer_channel, child_relid) == 184, "child_relid @184");
_Static_assert(offsetof(struct vmbus_msg_offer_channel, monitor_id) == 188, "monitorid @188");
_Static_assert(offsetof(struct vmbus_msg_offer_channel, is_dedicated_interrupt) == 190, "dedicated @190");
_Static_assert(offsetof(struct vmbus_msg_offer_channel, connection_id) == 192, "connection_id @192");

/* RESCIND_CHANNELOFFER, CLOSECHANNEL, RELID_RELEASED. */
struct vmbus_msg_relid {
    struct vmbus_msg_header hdr;
    uint32_t child_relid;
} __attribute__((packed));
_Static_assert(sizeof(struct vmbus_msg_relid) == 12, "relid message");

/* INITIATE_CONTACT. target_info: < 5.0 the GPA of the interrupt page; from 5.0 msg_sint (bits 0-7),
 * msg_vtl (8-15) and, at 6.0, feature flags in bits 32-63 (openvmm:protocol.rs TargetInfo). */
struct vmbus_msg_initiate_contact {
    struct vmbus_msg_header hdr;
    uint32_t version;
    uint32_t target_vcpu;
    uint64_t target_info;
    uint64_t monitor_page1; /* parent -> child */
    uint64_t monitor_page2; /* child -> parent */
} __attribute__((packed));
_Static_assert(sizeof(struct vmbus_msg_initiate_contact) == 40, "INITIATE_CONTACT");
_Static_assert(offsetof(struct vmbus_msg_initiate_contact, target_info) == 16, "interrupt page @16");
_Static_assert(offsetof(struct vmbus_msg_initiate_contact, monitor_page2) == 32, "monitor_page2 @32");
#define VMBUS_TARGET_INFO(sint, vtl, features) \
    ((uint64_t)(uint8_t)(sint) | ((uint64_t)(uint8_t)(vtl) << 8) | ((uint64_t)(uint32_t)(features) << 32))

/* VERSION_RESPONSE; from 6.0 the host may append supported_features (VersionResponse2). */
struct vmbus_msg_version_response {
    struct vmbus_msg_header hdr;
    uint8_t version_supported;
    uint8_t connection_state; /* 0 successful */
    uint16_t padding;
    uint32_t msg_conn_id;     /* from 5.0: the connection id for all later messages */
} __attribute__((packed));
_Static_assert(sizeof(struct vmbus_msg_version_response) == 16, "VERSION_RESPONSE");
_Static_assert(offsetof(struct vmbus_msg_version_response, msg_conn_id) == 12, "msg_conn_id @12");
struct vmbus_msg_version_response2 {
    struct vmbus_msg_version_response v1;
    uint32_t supported_features;
} __attribute__((packed));
_Static_assert(sizeof(struct vmbus_msg_version_response2) == 20, "VERSION_RESPONSE2");

struct vmbus_msg_open_channel {
    struct vmbus_msg_header hdr;
    uint32_t child_relid;
    uint32_t open_id;
    uint32_t ring_gpadl;
    uint32_t target_vp;
    uint32_t downstream_ring_page_offset; /* pages of the guest -> host ring at the GPADL's start */
    uint8_t user_data[VMBUS_OFFER_USER_DEFINED];
} __attribute__((packed));
_Static_assert(sizeof(struct vmbus_msg_open_channel) == 148, "OPENCHANNEL");
_Static_assert(offsetof(struct vmbus_msg_open_channel, downstream_ring_page_offset) == 24, "page offset @24");
_Static_assert(offsetof(struct vmbus_msg_open_channel, user_data) == 28, "userdata @28");

struct vmbus_msg_open_result {
    struct vmbus_msg_header hdr;
    uint32_t child_relid;
    uint32_t open_id;
    uint32_t status; /* 0: opened */
} __attribute__((packed));
_Static_assert(sizeof(struct vmbus_msg_open_result) == 20, "OPENCHANNEL_RESULT");

/* GPADL_HEADER carries one range: {byte_count, byte_offset, pfn[]}, the PFNs that do not fit follow
 * in GPADL_BODY messages. */
struct vmbus_msg_gpadl_header {
    struct vmbus_msg_header hdr;
    uint32_t child_relid;
    uint32_t gpadl;
    uint16_t range_buflen; /* bytes of the range array: 8 + 8 * page count */
    uint16_t range_count;  /* 1 */
    uint32_t byte_count;
    uint32_t byte_offset;
    uint64_t pfn[];
} __attribute__((packed));
_Static_assert(sizeof(struct vmbus_msg_gpadl_header) == 28, "GPADL_HEADER fixed part");
_Static_assert(offsetof(struct vmbus_msg_gpadl_header, range_buflen) == 16, "range_buflen @16");
_Static_assert(offsetof(struct vmbus_msg_gpadl_header, pfn) == 28, "pfn array @28");

struct vmbus_msg_gpadl_body {
    struct vmbus_msg_header hdr;
    uint32_t msg_number;
    uint32_t gpadl;
    uint64_t pfn[];
} __attribute__((packed));
_Static_assert(sizeof(struct vmbus_msg_gpadl_body) == 16, "GPADL_BODY fixed part");

#define VMBUS_GPADL_HEADER_PFNS ((HV_MESSAGE_PAYLOAD_MAX - sizeof(struct vmbus_msg_gpadl_header)) / 8)
#define VMBUS_GPADL_BODY_PFNS ((HV_MESSAGE_PAYLOAD_MAX - sizeof(struct vmbus_msg_gpadl_body)) / 8)
_Static_assert(VMBUS_GPADL_HEADER_PFNS == 26, "26 PFNs in a GPADL_HEADER");
_Static_assert(VMBUS_GPADL_BODY_PFNS == 28, "28 PFNs in a GPADL_BODY");
/* The largest GPADL: range_buflen is a u16 holding 8 + 8 bytes per page (its one range), so 8190
 * pages (65528 bytes); 8191 would need 65536. More ranges do not help: range_buflen counts them all.
 * FreeBSD refuses more (vmbus_chan.c vmbus_chan_gpadl_connect: range_len > UINT16_MAX), OpenVMM
 * reads len / 8 words of ranges (vmbus_server channels.rs handle_gpadl_header). */
#define VMBUS_GPADL_MAX_PAGES 8190u
_Static_assert(8 + 8 * VMBUS_GPADL_MAX_PAGES <= 0xffff && 8 + 8 * (VMBUS_GPADL_MAX_PAGES + 1) > 0xffff,
               "VMBUS_GPADL_MAX_PAGES is the most range_buflen can describe");
#define VMBUS_GPADL_FIRST_HANDLE 0xE1E10u /* linux:connection.c, freebsd:vmbus.c VMBUS_GPADL_START */

struct vmbus_msg_gpadl_created {
    struct vmbus_msg_header hdr;
    uint32_t child_relid;
    uint32_t gpadl;
    uint32_t status; /* 0: created */
} __attribute__((packed));
_Static_assert(sizeof(struct vmbus_msg_gpadl_created) == 20, "GPADL_CREATED");

struct vmbus_msg_gpadl_teardown {
    struct vmbus_msg_header hdr;
    uint32_t child_relid;
    uint32_t gpadl;
} __attribute__((packed));
_Static_assert(sizeof(struct vmbus_msg_gpadl_teardown) == 16, "GPADL_TEARDOWN");

struct vmbus_msg_gpadl_torndown {
    struct vmbus_msg_header hdr;
    uint32_t gpadl;
} __attribute__((packed));
_Static_assert(sizeof(struct vmbus_msg_gpadl_torndown) == 12, "GPADL_TORNDOWN");

struct vmbus_msg_modify_channel {
    struct vmbus_msg_header hdr;
    uint32_t child_relid;
    uint32_t target_vp;
} __attribute__((packed));
_Static_assert(sizeof(struct vmbus_msg_modify_channel) == 16, "MODIFYCHANNEL");

struct vmbus_msg_modify_channel_response {
    struct vmbus_msg_header hdr;
    uint32_t child_relid;
    uint32_t status; /* 0: done */
} __attribute__((packed));
_Static_assert(sizeof(struct vmbus_msg_modify_channel_response) == 16, "MODIFYCHANNEL_RESPONSE");

/* ---- the interrupt page (given in INITIATE_CONTACT below 5.0): one 4 KiB page, the first half
 * parent -> child (bit relid set by the host on WS2008/WIN7), the second half child -> parent (the
 * guest sets bit relid before signalling a channel without a dedicated interrupt). ---- */
#define VMBUS_INTERRUPT_PAGE_HALF 2048u /* bytes */

/* ---- the monitor (MNF) page (DPDK:drivers/bus/vmbus/rte_vmbus_reg.h; ipxe:hyperv.h) ---- */
struct vmbus_monitor_trigger_group {
    uint32_t pending;
    uint32_t armed;
} __attribute__((packed));
struct vmbus_monitor_parameter {
    uint32_t connection_id;
    uint16_t flag_number;
    uint16_t reserved;
} __attribute__((packed));
struct vmbus_monitor_page {
    uint32_t trigger_state;
    uint32_t reserved1;
    struct vmbus_monitor_trigger_group trigger_group[4];
    uint8_t reserved2[536];
    uint16_t latency[4][32]; /* host scan latency per monitor id, in 100 ns */
    uint8_t reserved3[256];
    struct vmbus_monitor_parameter parameter[4][32];
    uint8_t reserved4[1984];
} __attribute__((packed));
_Static_assert(sizeof(struct vmbus_monitor_page) == 4096, "monitor page");
_Static_assert(offsetof(struct vmbus_monitor_page, trigger_group) == 8, "trigger groups @8");
_Static_assert(offsetof(struct vmbus_monitor_page, latency) == 576, "latency @576");
_Static_assert(offsetof(struct vmbus_monitor_page, parameter) == 1088, "parameters @1088");
#define VMBUS_MONITOR_IDS 128u /* 4 groups of 32 */

/* ---- device GUIDs (hyperv-facts.md §3.13; text a-b-c-d-e, wire: a, b, c little-endian) ---- */
#define VMBUS_GUID_INIT(a, b, c, d0, d1, e0, e1, e2, e3, e4, e5)                                            \
    { { (a) & 0xff, ((a) >> 8) & 0xff, ((a) >> 16) & 0xff, ((a) >> 24) & 0xff, (b) & 0xff, ((b) >> 8) & 0xff, \
        (c) & 0xff, ((c) >> 8) & 0xff, (d0), (d1), (e0), (e1), (e2), (e3), (e4), (e5) } }
#define VMBUS_GUID_NIC      VMBUS_GUID_INIT(0xf8615163, 0xdf3e, 0x46c5, 0x91, 0x3f, 0xf2, 0xd2, 0xf9, 0x65, 0xed, 0x0e)
#define VMBUS_GUID_SCSI     VMBUS_GUID_INIT(0xba6163d9, 0x04a1, 0x4d29, 0xb6, 0x05, 0x72, 0xe2, 0xff, 0xb1, 0xdc, 0x7f)
#define VMBUS_GUID_SHUTDOWN VMBUS_GUID_INIT(0x0e0b6031, 0x5213, 0x4934, 0x81, 0x8b, 0x38, 0xd9, 0x0c, 0xed, 0x39, 0xdb)
#define VMBUS_GUID_TIMESYNC VMBUS_GUID_INIT(0x9527e630, 0xd0ae, 0x497b, 0xad, 0xce, 0xe8, 0x0a, 0xb0, 0x17, 0x5c, 0xaf)
#define VMBUS_GUID_HEARTBEAT VMBUS_GUID_INIT(0x57164f39, 0x9115, 0x4e78, 0xab, 0x55, 0x38, 0x2f, 0x3b, 0xd5, 0x42, 0x2d)
#define VMBUS_GUID_KVP      VMBUS_GUID_INIT(0xa9a0f4e7, 0x5a45, 0x4d96, 0xb8, 0x27, 0x8a, 0x84, 0x1e, 0x8c, 0x03, 0xe6)
#define VMBUS_GUID_VSS      VMBUS_GUID_INIT(0x35fa2e29, 0xea23, 0x4236, 0x96, 0xae, 0x3a, 0x6e, 0xba, 0xcb, 0xa4, 0x40)
#define VMBUS_GUID_IDE      VMBUS_GUID_INIT(0x32412632, 0x86cb, 0x44a2, 0x9b, 0x5c, 0x50, 0xd1, 0x41, 0x73, 0x54, 0xf5)
#define VMBUS_GUID_BALLOON  VMBUS_GUID_INIT(0x525074dc, 0x8985, 0x46e2, 0x80, 0x57, 0xa3, 0x07, 0xdc, 0x18, 0xa5, 0x02)
#define VMBUS_GUID_KEYBOARD VMBUS_GUID_INIT(0xf912ad6d, 0x2b17, 0x48ea, 0xbd, 0x65, 0xf9, 0x27, 0xa6, 0x1c, 0x76, 0x84)
#define VMBUS_GUID_MOUSE    VMBUS_GUID_INIT(0xcfa8b69e, 0x5b4a, 0x4cc0, 0xb9, 0x8b, 0x8b, 0xa1, 0xa1, 0xf3, 0xf9, 0x5a)
#define VMBUS_GUID_VIDEO    VMBUS_GUID_INIT(0xda0a7802, 0xe377, 0x4aac, 0x8e, 0x77, 0x05, 0x58, 0xeb, 0x10, 0x73, 0xf8)
#define VMBUS_GUID_FCOPY    VMBUS_GUID_INIT(0x34d14be3, 0xdee4, 0x41c8, 0x9a, 0xe7, 0x6b, 0x17, 0x49, 0x77, 0xc1, 0x92)
#define VMBUS_GUID_VPCI     VMBUS_GUID_INIT(0x44c4f61d, 0x4444, 0x4400, 0x9d, 0x52, 0x80, 0x2e, 0x27, 0xed, 0xe1, 0x9f)
/* hvsim's own test device for the packet engine (a random GUID of this project's). */
#define VMBUS_GUID_HVSIM_TEST VMBUS_GUID_INIT(0x6876726d, 0x7465, 0x4573, 0x9a, 0x1e, 0x68, 0x76, 0x73, 0x69, 0x6d, 0x74)

static inline bool vmbus_guid_equal(const struct vmbus_guid *a, const struct vmbus_guid *b)
{
    return __builtin_memcmp(a->b, b->b, 16) == 0;
}

/* ---- checking a channel message (hv/vmbus/proto/vmbus_msg.c; pure, fuzzed by test/fuzz/fuzz_vmbusmsg.c) ---- */

/* The smallest size of a well-formed message of `type` (0 for types this project does not know).
 * GPADL_HEADER/BODY are variable: the size given is the fixed part. */
uint32_t vmbus_msg_min_size(uint32_t type);
const char *vmbus_msg_name(uint32_t type); /* "OFFERCHANNEL", ...; "unknown" */
/* A known type the host sends (false for the guest's, and for unknown types). */
bool vmbus_msg_from_host(uint32_t type);

/* Checks a channel message of `size` bytes (<= 240) as received: a known type, at least its
 * minimum size, and for the variable ones the declared counts within the bytes given. Returns NULL
 * when well-formed, else a short reason for the log ("too short for OFFERCHANNEL: 20 < 196"
 * is built by the caller from vmbus_msg_min_size). Any relid inside is NOT checked here. */
const char *vmbus_msg_check(const void *msg, uint32_t size, uint32_t *type_out);

/* The stateless checks of an OFFERCHANNEL (already vmbus_msg_check'ed): relid in 1..2047. Returns
 * NULL or the reason. Duplicates and a sub-channel's primary are the registry's to check. */
const char *vmbus_offer_check(const struct vmbus_msg_offer_channel *m);

/* A GPADL_HEADER's page count and how many of its PFNs are in the header itself; false if the
 * header's fields disagree (range_count != 1, range_buflen != 8 + 8 * pages, byte_offset >= 4096,
 * byte_count not covering the pages, more than VMBUS_GPADL_MAX_PAGES). */
bool vmbus_gpadl_header_pages(const struct vmbus_msg_gpadl_header *h, uint32_t size, uint32_t *pages,
                              uint32_t *pfns_here);

#endif
