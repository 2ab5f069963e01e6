/*
 * ring_format: the VMBus ring buffer and packet formats on the wire (in shared memory). Layouts only:
 * no code, no state. Every number here comes from /work/shared/hyperv-facts.md sections 3.10 and
 * 3.11, which cite these sources (read for the facts; no code copied):
 *   - microsoft/mu_msvm:MsvmPkg/Include/Vmbus/VmbusPacketFormat.h (VMRCB, VMPACKET_DESCRIPTOR, ...)
 *   - microsoft/openvmm:vm/devices/vmbus/vmbus_ring/src/lib.rs (Control words, PacketDescriptor,
 *     TransferPageHeader, GpaDirectHeader, Footer) and gparange.rs (GpaRange)
 *   - torvalds/linux:include/linux/hyperv.h (hv_ring_buffer, vmpacket_descriptor, packet types)
 *
 * A ring is one control page (4096 bytes) followed by a data area whose size is a multiple of 4096
 * (kmcl/core/ring.h also accepts smaller multiples of 8 for tests). The write and read indices are byte
 * offsets into the data area; the area is circular; read == write means empty.
 *
 * Each packet in the data area, starting at an 8-byte aligned offset:
 *
 *   descriptor (16)  type-specific header  payload  padding to 8 | trailer (8)
 *   |<------------- len8 * 8 bytes -------------------------->|
 *   |<---- offset8 * 8 bytes ------------>|
 *
 * The trailer's upper 32 bits repeat the offset at which the packet starts (the writer's index
 * before the write); the lower 32 bits are reserved (written 0, ignored on read).
 *
 * All multi-byte fields are little-endian (x86).
 */
#ifndef KMCL_RING_FORMAT_H
#define KMCL_RING_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#define KMCL_PAGE_SIZE 4096u

/*
 * The control page. Source: mu_msvm VmbusPacketFormat.h VMRCB (OFFSET_OF(FeatureBits) == 64),
 * openvmm vmbus_ring Control (words 0, 1, 2, 3 and 16), linux hyperv.h struct hv_ring_buffer.
 *
 * Not `packed`, unlike the other wire structs: its words are read and written with atomic builtins,
 * which need natural alignment (and a packed member's address would draw -Waddress-of-packed-member).
 * Every field is naturally aligned at its wire offset, so the layout is the packed one; the asserts
 * below prove it.
 */
struct kmcl_ring_control {
    uint32_t write_index;     /* @0: next byte the writer will write (owned by the writer) */
    uint32_t read_index;      /* @4: next byte the reader will read (owned by the reader) */
    uint32_t interrupt_mask;  /* @8: reader sets non-zero while draining: "do not signal me" */
    uint32_t pending_send_sz; /* @12: writer sets the bytes it waits for when the ring was full */
    uint32_t reserved1[12];   /* @16 */
    uint32_t feature_bits;    /* @64: KMCL_RING_FEATURE_* */
    uint8_t reserved2[KMCL_PAGE_SIZE - 68];
};
_Static_assert(sizeof(struct kmcl_ring_control) == KMCL_PAGE_SIZE, "control page is one page");
_Static_assert(offsetof(struct kmcl_ring_control, write_index) == 0, "write_index @0");
_Static_assert(offsetof(struct kmcl_ring_control, read_index) == 4, "read_index @4");
_Static_assert(offsetof(struct kmcl_ring_control, interrupt_mask) == 8, "interrupt_mask @8");
_Static_assert(offsetof(struct kmcl_ring_control, pending_send_sz) == 12, "pending_send_sz @12");
_Static_assert(offsetof(struct kmcl_ring_control, feature_bits) == 64, "feature_bits @64");

/* feature_bits bit 0: pending_send_sz is in use on this ring (openvmm FEATURE_SUPPORTS_PENDING_SEND_SIZE;
 * linux feat_pending_send_sz; mu_msvm SupportsPendingSendSize). */
#define KMCL_RING_FEATURE_PENDING_SEND_SZ 0x1u

/* The data area starts one page after the control page. */
#define KMCL_RING_DATA_OFFSET KMCL_PAGE_SIZE

/*
 * The packet descriptor at the start of every packet. Source: linux hyperv.h struct
 * vmpacket_descriptor; openvmm vmbus_ring PacketDescriptor; mu_msvm VMPACKET_DESCRIPTOR.
 */
struct kmcl_pkt_desc {
    uint16_t type;     /* @0: KMCL_PKT_* */
    uint16_t offset8;  /* @2: offset of the payload from the descriptor, in 8-byte units (>= 2) */
    uint16_t len8;     /* @4: length of the packet in 8-byte units, trailer excluded */
    uint16_t flags;    /* @6: KMCL_PKT_FLAG_* */
    uint64_t trans_id; /* @8: transaction id, echoed by the completion */
} __attribute__((packed));
_Static_assert(sizeof(struct kmcl_pkt_desc) == 16, "descriptor is 16 bytes");
_Static_assert(offsetof(struct kmcl_pkt_desc, offset8) == 2, "offset8 @2");
_Static_assert(offsetof(struct kmcl_pkt_desc, len8) == 4, "len8 @4");
_Static_assert(offsetof(struct kmcl_pkt_desc, flags) == 6, "flags @6");
_Static_assert(offsetof(struct kmcl_pkt_desc, trans_id) == 8, "trans_id @8");

/* descriptor flags bit 0: the sender wants a completion packet (type 11) with the same trans_id. */
#define KMCL_PKT_FLAG_COMPLETION_REQUESTED 0x1u

/* Packet types (linux hyperv.h enum vmbus_packet_type; qemu vmbus-proto.h). The drivers use only
 * 6, 7, 9 and 11 (openvmm vmbus_ring PACKET_TYPE_*; DPDK rte_vmbus_reg.h). */
enum kmcl_pkt_type {
    KMCL_PKT_INVALID = 0,
    KMCL_PKT_SYNCH = 1,
    KMCL_PKT_ADD_XFER_PAGESET = 2,
    KMCL_PKT_RM_XFER_PAGESET = 3,
    KMCL_PKT_ESTABLISH_GPADL = 4,
    KMCL_PKT_TEARDOWN_GPADL = 5,
    KMCL_PKT_DATA_INBAND = 6,
    KMCL_PKT_DATA_XFER_PAGES = 7,
    KMCL_PKT_DATA_GPADL = 8,
    KMCL_PKT_DATA_GPA_DIRECT = 9,
    KMCL_PKT_CANCEL_REQUEST = 10,
    KMCL_PKT_COMPLETION = 11,
    KMCL_PKT_DATA_ADDITIONAL_PKT = 12,
    KMCL_PKT_ADDITIONAL_DATA = 13,
    KMCL_PKT_TYPE_MAX = 13, /* the highest named type; above it a packet is refused */
};

/*
 * Transfer-page packet (type 7): descriptor, this header, then range_cnt ranges; the payload starts
 * at offset8 * 8, after the ranges. Each range names bytes of a transfer page set (a buffer shared
 * earlier through a GPADL, e.g. netvsc's receive buffer). Source: linux hyperv.h
 * vmtransfer_page_packet_header / vmtransfer_page_range; openvmm TransferPageHeader,
 * TransferPageRange.
 */
struct kmcl_xfer_page_header {
    struct kmcl_pkt_desc desc; /* @0 */
    uint16_t xfer_pageset_id;  /* @16 */
    uint8_t sender_owns_set;   /* @18 */
    uint8_t reserved;          /* @19: may hold garbage (openvmm comment) */
    uint32_t range_cnt;        /* @20 */
} __attribute__((packed));
_Static_assert(sizeof(struct kmcl_xfer_page_header) == 24, "transfer-page header is 24 bytes");
_Static_assert(offsetof(struct kmcl_xfer_page_header, xfer_pageset_id) == 16, "pageset id @16");
_Static_assert(offsetof(struct kmcl_xfer_page_header, sender_owns_set) == 18, "sender_owns @18");
_Static_assert(offsetof(struct kmcl_xfer_page_header, range_cnt) == 20, "range_cnt @20");

struct kmcl_xfer_range {
    uint32_t byte_count;  /* @0 */
    uint32_t byte_offset; /* @4: from the start of the transfer page set */
} __attribute__((packed));
_Static_assert(sizeof(struct kmcl_xfer_range) == 8, "transfer range is 8 bytes");
_Static_assert(offsetof(struct kmcl_xfer_range, byte_offset) == 4, "byte_offset @4");

/*
 * GPA-direct packet (type 9): descriptor, this header, then range_cnt variable-length ranges, each
 * a kmcl_gpa_range_header followed by its page frame numbers; the payload starts at offset8 * 8.
 * The pfn count of a range is ceil((byte_offset + byte_count) / 4096), byte_offset < 4096 (within
 * the first page), byte_count > 0. Source: linux hyperv.h vmdata_gpa_direct / gpa_range;
 * openvmm GpaDirectHeader and gparange.rs (the same validation rules).
 */
struct kmcl_gpa_direct_header {
    struct kmcl_pkt_desc desc; /* @0 */
    uint32_t reserved;         /* @16: may hold garbage (openvmm comment) */
    uint32_t range_cnt;        /* @20 */
} __attribute__((packed));
_Static_assert(sizeof(struct kmcl_gpa_direct_header) == 24, "GPA-direct header is 24 bytes");
_Static_assert(offsetof(struct kmcl_gpa_direct_header, range_cnt) == 20, "range_cnt @20");

struct kmcl_gpa_range_header {
    uint32_t byte_count;  /* @0 */
    uint32_t byte_offset; /* @4: into the first page */
    /* uint64_t pfn[] @8 */
} __attribute__((packed));
_Static_assert(sizeof(struct kmcl_gpa_range_header) == 8, "GPA range header is 8 bytes");
_Static_assert(offsetof(struct kmcl_gpa_range_header, byte_offset) == 4, "byte_offset @4");

/* The 8-byte trailer after every packet: the packet's start offset in the upper 32 bits (linux
 * ring_buffer.c "<< 32"; openvmm Footer{reserved, offset}; DPDK save_windex << 32). */
typedef uint64_t kmcl_pkt_trailer_t;
#define KMCL_PKT_TRAILER(start_offset) ((uint64_t)(uint32_t)(start_offset) << 32)
#define KMCL_PKT_TRAILER_OFFSET(trailer) ((uint32_t)((trailer) >> 32))

#define KMCL_PKT_DESC_SIZE 16u
#define KMCL_PKT_TRAILER_SIZE 8u
#define KMCL_PKT_MAX_LEN (0xFFFFu * 8u) /* len8 is 16 bits */

#endif
