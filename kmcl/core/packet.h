/*
 * packet: the bodies of VMBus packets. Parsers read a packet peeked from a ring (kmcl/core/ring.h) —
 * in-band (6), transfer pages (7), GPA direct (9), completion (11) — and builders write them
 * through kmcl_ring_write. Formats in kmcl/core/ring_format.h.
 *
 * Parsers trust nothing in the packet: each field is read from the packet bytes once (they may sit
 * in memory the peer can still change) and checked before use; counts, offsets and lengths are
 * computed in 64 bits. Ranges and page numbers are copied into caller storage, so what the caller
 * uses is exactly what was checked. A bad packet gives STATUS_BAD_DATA and a reason in *why (same
 * form as a ring failure: pass it to kmcl_ring_fail to fail the ring). Payload pointers point into
 * the packet view (ring or bounce buffer), see kmcl/core/ring.h for how long they stay valid.
 *
 * IRQL: any, up to HIGH; nothing blocks, allocates or logs. Thread-safety: pure functions of their
 * arguments (builders use the ring under the ring's own rules: one writer at a time).
 */
#ifndef KMCL_PACKET_H
#define KMCL_PACKET_H

#include <stdbool.h>
#include <stdint.h>

#include "kernel/status.h"
#include "kmcl/core/ring.h"
#include "kmcl/core/ring_format.h"

/* Builders take at most this many payload pieces and GPA ranges (their gather list is on the stack). */
#define KMCL_PKT_MAX_PAYLOAD_IOV 8u
#define KMCL_PKT_MAX_GPA_RANGES 16u

/* The payload of any peeked packet: bytes[data_offset .. len). */
static inline const uint8_t *kmcl_pkt_payload(const struct kmcl_ring_packet *p)
{
    return p->bytes + p->data_offset;
}

static inline uint32_t kmcl_pkt_payload_len(const struct kmcl_ring_packet *p)
{
    return p->len - p->data_offset;
}

/* Pages spanned by a GPA range (byte_offset < 4096 into the first page, byte_count > 0). */
static inline uint64_t kmcl_pkt_gpa_pfn_count(uint32_t byte_offset, uint32_t byte_count)
{
    return ((uint64_t)byte_offset + byte_count + KMCL_PAGE_SIZE - 1) / KMCL_PAGE_SIZE;
}

/*
 * The structural check kmcl_ring_peek runs on every packet: for type 7, the ranges fit before the
 * data offset and (xfer_limit != 0) each lies within [0, xfer_limit); for type 9, every range
 * header and its page numbers fit before the data offset, byte_count > 0 and byte_offset < 4096.
 * Other types have no type-specific header. STATUS_OK or STATUS_BAD_DATA with *why.
 */
status_t kmcl_pkt_check(const struct kmcl_ring_packet *p, uint32_t xfer_limit, struct kmcl_ring_failure *why);

/* ---- parsers ---- */

/* In-band (6) or completion (11): the transaction and the payload. */
struct kmcl_pkt_inband {
    uint64_t trans_id;
    bool completion_requested;
    const uint8_t *payload;
    uint32_t payload_len;
};

/* STATUS_OK; STATUS_INVALID_PARAMETER if the packet is not of type 6 (resp. 11). */
status_t kmcl_pkt_parse_inband(const struct kmcl_ring_packet *p, struct kmcl_pkt_inband *out) WARN_UNUSED;
status_t kmcl_pkt_parse_completion(const struct kmcl_ring_packet *p, struct kmcl_pkt_inband *out) WARN_UNUSED;

/* Transfer pages (7). The caller sets ranges/max_ranges (storage, may be NULL/0); the parser fills
 * the rest and copies the first min(range_count, max_ranges) ranges. */
struct kmcl_pkt_xfer {
    struct kmcl_xfer_range *ranges; /* in: caller storage */
    uint32_t max_ranges;            /* in */
    uint32_t range_count;           /* out: as sent (all of them checked) */
    uint16_t pageset_id;
    uint8_t sender_owns;
    uint64_t trans_id;
    bool completion_requested;
    const uint8_t *payload;
    uint32_t payload_len;
};

/*
 * Checks every range against buffer_size (the transfer page set's size; 0: unchecked) and the
 * packet, copies them. STATUS_OK; STATUS_NO_SPACE if range_count > max_ranges (all checked, the
 * first max_ranges copied); STATUS_BAD_DATA with *why; STATUS_INVALID_PARAMETER for another type.
 */
status_t kmcl_pkt_parse_xfer(const struct kmcl_ring_packet *p, uint32_t buffer_size, struct kmcl_pkt_xfer *out,
                             struct kmcl_ring_failure *why) WARN_UNUSED;

/* One GPA range as parsed: its page numbers are pfns[pfn_first .. pfn_first + pfn_count) of the
 * caller's array. */
struct kmcl_gpa_range {
    uint32_t byte_count;
    uint32_t byte_offset;
    uint32_t pfn_first;
    uint32_t pfn_count;
};

/* GPA direct (9). The caller sets the storage fields; the parser fills the rest. */
struct kmcl_pkt_gpa {
    struct kmcl_gpa_range *ranges; /* in: caller storage */
    uint32_t max_ranges;           /* in */
    uint64_t *pfns;                /* in: caller storage */
    uint32_t max_pfns;             /* in */
    uint32_t range_count;          /* out: as sent */
    uint32_t pfn_total;            /* out: page numbers in all ranges */
    uint64_t trans_id;
    bool completion_requested;
    const uint8_t *payload;
    uint32_t payload_len;
};

/* STATUS_OK; STATUS_NO_SPACE if the ranges or page numbers exceed the storage (all checked; none
 * copied past the storage, counts tell the need); STATUS_BAD_DATA with *why; STATUS_INVALID_PARAMETER
 * for another type. */
status_t kmcl_pkt_parse_gpa(const struct kmcl_ring_packet *p, struct kmcl_pkt_gpa *out,
                            struct kmcl_ring_failure *why) WARN_UNUSED;

/* ---- builders (write side; results as kmcl_ring_write) ---- */

/* In-band (6). flags: KMCL_PKT_FLAG_COMPLETION_REQUESTED to ask for a completion. (Inline: a
 * descriptor template for kmcl_ring_write; a one-piece payload takes kmcl_ring_write_buf_inline.) */
static inline WARN_UNUSED status_t kmcl_pkt_send_inband(struct kmcl_ring *r, uint64_t trans_id, uint16_t flags,
                                                        const struct kmcl_iov *payload, uint32_t payload_count,
                                                        uint32_t write_flags, bool *signal_reader)
{
    if (payload_count == 1)
        return kmcl_ring_write_buf_inline(r, KMCL_PKT_DATA_INBAND, flags, trans_id, payload->base, payload->len,
                                          write_flags, signal_reader);
    struct kmcl_ring_out out = {
        .type = KMCL_PKT_DATA_INBAND,
        .flags = flags,
        .trans_id = trans_id,
        .header_len = 0,
        .iov = payload,
        .iov_count = payload_count,
    };
    return kmcl_ring_write(r, &out, write_flags, signal_reader);
}

/* Completion (11) of the transaction trans_id. */
static inline WARN_UNUSED status_t kmcl_pkt_send_completion(struct kmcl_ring *r, uint64_t trans_id,
                                                            const struct kmcl_iov *payload, uint32_t payload_count,
                                                            uint32_t write_flags, bool *signal_reader)
{
    if (payload_count == 1)
        return kmcl_ring_write_buf_inline(r, KMCL_PKT_COMPLETION, 0, trans_id, payload->base, payload->len,
                                          write_flags, signal_reader);
    struct kmcl_ring_out out = {
        .type = KMCL_PKT_COMPLETION,
        .flags = 0,
        .trans_id = trans_id,
        .header_len = 0,
        .iov = payload,
        .iov_count = payload_count,
    };
    return kmcl_ring_write(r, &out, write_flags, signal_reader);
}

/* A range of guest pages for GPA direct: pfns holds kmcl_pkt_gpa_pfn_count(byte_offset, byte_count)
 * page numbers. */
struct kmcl_page_range {
    uint32_t byte_count;  /* > 0 */
    uint32_t byte_offset; /* < 4096 */
    const uint64_t *pfns;
};

/* GPA direct (9): external data as page ranges, then the payload. */
status_t kmcl_pkt_send_gpa_direct(struct kmcl_ring *r, uint64_t trans_id, uint16_t flags,
                                  const struct kmcl_page_range *ranges, uint32_t range_count,
                                  const struct kmcl_iov *payload, uint32_t payload_count, uint32_t write_flags,
                                  bool *signal_reader) WARN_UNUSED;

/* Transfer pages (7): ranges of the transfer page set pageset_id, then the payload (the host side
 * of netvsc sends these). */
status_t kmcl_pkt_send_xfer(struct kmcl_ring *r, uint64_t trans_id, uint16_t flags, uint16_t pageset_id,
                            uint8_t sender_owns, const struct kmcl_xfer_range *ranges, uint32_t range_count,
                            const struct kmcl_iov *payload, uint32_t payload_count, uint32_t write_flags,
                            bool *signal_reader) WARN_UNUSED;

#endif
