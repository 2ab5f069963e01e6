/*
 * packet: parsers and builders of VMBus packet bodies. Contract in kmcl/core/packet.h.
 */
#include "kmcl/core/packet.h"

#include "kernel/readonce.h"
#include "kernel/string.h"

/* Every field of the peer-writable packet is read once (kernel/readonce.h): what was checked is
 * what is used. */
#define read16 read_once_u16
#define read32 read_once_u32
#define read64 read_once_u64

static status_t bad(struct kmcl_ring_failure *why, const struct kmcl_ring_packet *p, const char *reason, uint64_t value,
                    uint64_t limit)
{
    why->reason = reason;
    why->offset = p->ring_offset;
    why->value = value;
    why->limit = limit;
    return STATUS_BAD_DATA;
}

#define EXT_HEADER_SIZE 24u /* descriptor + the 8 bytes of a transfer-page or GPA-direct header */

/* Checks the ranges of a transfer-page packet; copies them into out (if given). */
static status_t walk_xfer(const struct kmcl_ring_packet *p, uint32_t limit, struct kmcl_pkt_xfer *out,
                          struct kmcl_ring_failure *why)
{
    if (p->data_offset < EXT_HEADER_SIZE)
        return bad(why, p, "transfer-page packet too short for its header", p->data_offset, EXT_HEADER_SIZE);
    const uint8_t *b = p->bytes;
    uint32_t count = read32(b + offsetof(struct kmcl_xfer_page_header, range_cnt));
    uint64_t end = EXT_HEADER_SIZE + (uint64_t)count * sizeof(struct kmcl_xfer_range);
    if (end > p->data_offset)
        return bad(why, p, "transfer-page ranges extend past the data offset", end, p->data_offset);
    if (out) {
        out->range_count = count;
        out->pageset_id = read16(b + offsetof(struct kmcl_xfer_page_header, xfer_pageset_id));
        out->sender_owns = b[offsetof(struct kmcl_xfer_page_header, sender_owns_set)];
    }
    const uint8_t *range = b + EXT_HEADER_SIZE;
    for (uint32_t i = 0; i < count; i++, range += sizeof(struct kmcl_xfer_range)) {
        uint32_t byte_count = read32(range + offsetof(struct kmcl_xfer_range, byte_count));
        uint32_t byte_offset = read32(range + offsetof(struct kmcl_xfer_range, byte_offset));
        if (limit && (uint64_t)byte_offset + byte_count > limit)
            return bad(why, p, "transfer-page range ends outside the transfer page set",
                       (uint64_t)byte_offset + byte_count, limit);
        if (out && i < out->max_ranges) {
            out->ranges[i].byte_count = byte_count;
            out->ranges[i].byte_offset = byte_offset;
        }
    }
    return STATUS_OK;
}

/* Checks the ranges of a GPA-direct packet; copies them and their page numbers into out (if given,
 * as far as its storage goes). */
static status_t walk_gpa(const struct kmcl_ring_packet *p, struct kmcl_pkt_gpa *out, struct kmcl_ring_failure *why)
{
    if (p->data_offset < EXT_HEADER_SIZE)
        return bad(why, p, "GPA-direct packet too short for its header", p->data_offset, EXT_HEADER_SIZE);
    const uint8_t *b = p->bytes;
    uint32_t count = read32(b + offsetof(struct kmcl_gpa_direct_header, range_cnt));
    uint32_t pos = EXT_HEADER_SIZE;
    uint32_t pfn_total = 0;
    /* Each range takes at least 16 bytes, so a huge count fails after data_offset / 16 rounds. */
    for (uint32_t i = 0; i < count; i++) {
        if ((uint64_t)pos + sizeof(struct kmcl_gpa_range_header) > p->data_offset)
            return bad(why, p, "GPA range header extends past the data offset", (uint64_t)pos + 8, p->data_offset);
        uint32_t byte_count = read32(b + pos + offsetof(struct kmcl_gpa_range_header, byte_count));
        uint32_t byte_offset = read32(b + pos + offsetof(struct kmcl_gpa_range_header, byte_offset));
        if (byte_count == 0)
            return bad(why, p, "GPA range with a byte count of 0", i, count);
        if (byte_offset >= KMCL_PAGE_SIZE)
            return bad(why, p, "GPA range byte offset beyond its first page", byte_offset, KMCL_PAGE_SIZE - 1);
        uint64_t npfn = kmcl_pkt_gpa_pfn_count(byte_offset, byte_count);
        uint64_t end = (uint64_t)pos + sizeof(struct kmcl_gpa_range_header) + npfn * 8;
        if (end > p->data_offset)
            return bad(why, p, "GPA range page numbers extend past the data offset", end, p->data_offset);
        if (out) {
            if (i < out->max_ranges) {
                out->ranges[i].byte_count = byte_count;
                out->ranges[i].byte_offset = byte_offset;
                out->ranges[i].pfn_first = pfn_total;
                out->ranges[i].pfn_count = (uint32_t)npfn;
            }
            const uint8_t *pfn = b + pos + sizeof(struct kmcl_gpa_range_header);
            for (uint32_t k = 0; k < npfn; k++, pfn += 8)
                if (pfn_total + k < out->max_pfns)
                    out->pfns[pfn_total + k] = read64(pfn);
        }
        pfn_total += (uint32_t)npfn; /* npfn < data_offset / 8 < 2^16: no overflow */
        pos = (uint32_t)end;
    }
    if (out) {
        out->range_count = count;
        out->pfn_total = pfn_total;
    }
    return STATUS_OK;
}

status_t kmcl_pkt_check(const struct kmcl_ring_packet *p, uint32_t xfer_limit, struct kmcl_ring_failure *why)
{
    switch (p->desc.type) {
    case KMCL_PKT_DATA_XFER_PAGES:
        return walk_xfer(p, xfer_limit, 0, why);
    case KMCL_PKT_DATA_GPA_DIRECT:
        return walk_gpa(p, 0, why);
    default:
        return STATUS_OK;
    }
}

static void fill_common(const struct kmcl_ring_packet *p, uint64_t *trans_id, bool *completion_requested,
                        const uint8_t **payload, uint32_t *payload_len)
{
    *trans_id = p->desc.trans_id;
    *completion_requested = (p->desc.flags & KMCL_PKT_FLAG_COMPLETION_REQUESTED) != 0;
    *payload = kmcl_pkt_payload(p);
    *payload_len = kmcl_pkt_payload_len(p);
}

status_t kmcl_pkt_parse_inband(const struct kmcl_ring_packet *p, struct kmcl_pkt_inband *out)
{
    if (p->desc.type != KMCL_PKT_DATA_INBAND)
        return STATUS_INVALID_PARAMETER;
    fill_common(p, &out->trans_id, &out->completion_requested, &out->payload, &out->payload_len);
    return STATUS_OK;
}

status_t kmcl_pkt_parse_completion(const struct kmcl_ring_packet *p, struct kmcl_pkt_inband *out)
{
    if (p->desc.type != KMCL_PKT_COMPLETION)
        return STATUS_INVALID_PARAMETER;
    fill_common(p, &out->trans_id, &out->completion_requested, &out->payload, &out->payload_len);
    return STATUS_OK;
}

status_t kmcl_pkt_parse_xfer(const struct kmcl_ring_packet *p, uint32_t buffer_size, struct kmcl_pkt_xfer *out,
                             struct kmcl_ring_failure *why)
{
    if (p->desc.type != KMCL_PKT_DATA_XFER_PAGES || (out->max_ranges && !out->ranges))
        return STATUS_INVALID_PARAMETER;
    status_t s = walk_xfer(p, buffer_size, out, why);
    if (s != STATUS_OK)
        return s;
    fill_common(p, &out->trans_id, &out->completion_requested, &out->payload, &out->payload_len);
    return out->range_count > out->max_ranges ? STATUS_NO_SPACE : STATUS_OK;
}

status_t kmcl_pkt_parse_gpa(const struct kmcl_ring_packet *p, struct kmcl_pkt_gpa *out, struct kmcl_ring_failure *why)
{
    if (p->desc.type != KMCL_PKT_DATA_GPA_DIRECT || (out->max_ranges && !out->ranges) ||
        (out->max_pfns && !out->pfns))
        return STATUS_INVALID_PARAMETER;
    status_t s = walk_gpa(p, out, why);
    if (s != STATUS_OK)
        return s;
    fill_common(p, &out->trans_id, &out->completion_requested, &out->payload, &out->payload_len);
    return out->range_count > out->max_ranges || out->pfn_total > out->max_pfns ? STATUS_NO_SPACE : STATUS_OK;
}

/* ---- builders ---- */

/* The 8 bytes after the descriptor in a transfer-page or GPA-direct packet. */
struct ext_header {
    union {
        struct {
            uint16_t xfer_pageset_id;
            uint8_t sender_owns_set;
            uint8_t reserved;
        } __attribute__((packed)) xfer;
        uint32_t gpa_reserved;
    };
    uint32_t range_cnt;
} __attribute__((packed));
_Static_assert(sizeof(struct ext_header) == EXT_HEADER_SIZE - KMCL_PKT_DESC_SIZE, "extension header is 8 bytes");
_Static_assert(offsetof(struct ext_header, range_cnt) + KMCL_PKT_DESC_SIZE ==
                   offsetof(struct kmcl_xfer_page_header, range_cnt),
               "range_cnt where the wire has it");

status_t kmcl_pkt_send_xfer(struct kmcl_ring *r, uint64_t trans_id, uint16_t flags, uint16_t pageset_id,
                            uint8_t sender_owns, const struct kmcl_xfer_range *ranges, uint32_t range_count,
                            const struct kmcl_iov *payload, uint32_t payload_count, uint32_t write_flags,
                            bool *signal_reader)
{
    *signal_reader = false;
    if (payload_count > KMCL_PKT_MAX_PAYLOAD_IOV || (payload_count && !payload) ||
        range_count > KMCL_PKT_MAX_LEN / sizeof(struct kmcl_xfer_range) || (range_count && !ranges))
        return STATUS_INVALID_PARAMETER;
    struct ext_header h = {
        .xfer = { .xfer_pageset_id = pageset_id, .sender_owns_set = sender_owns, .reserved = 0 },
        .range_cnt = range_count,
    };
    struct kmcl_iov iov[2 + KMCL_PKT_MAX_PAYLOAD_IOV];
    iov[0] = (struct kmcl_iov){ &h, sizeof h };
    iov[1] = (struct kmcl_iov){ ranges, range_count * (uint32_t)sizeof(struct kmcl_xfer_range) };
    for (uint32_t i = 0; i < payload_count; i++)
        iov[2 + i] = payload[i];
    struct kmcl_ring_out out = {
        .type = KMCL_PKT_DATA_XFER_PAGES,
        .flags = flags,
        .trans_id = trans_id,
        .header_len = (uint32_t)sizeof h + range_count * (uint32_t)sizeof(struct kmcl_xfer_range),
        .iov = iov,
        .iov_count = 2 + payload_count,
    };
    return kmcl_ring_write(r, &out, write_flags, signal_reader);
}

status_t kmcl_pkt_send_gpa_direct(struct kmcl_ring *r, uint64_t trans_id, uint16_t flags,
                                  const struct kmcl_page_range *ranges, uint32_t range_count,
                                  const struct kmcl_iov *payload, uint32_t payload_count, uint32_t write_flags,
                                  bool *signal_reader)
{
    *signal_reader = false;
    if (payload_count > KMCL_PKT_MAX_PAYLOAD_IOV || (payload_count && !payload) ||
        range_count > KMCL_PKT_MAX_GPA_RANGES || (range_count && !ranges))
        return STATUS_INVALID_PARAMETER;
    struct ext_header h = { .gpa_reserved = 0, .range_cnt = range_count };
    struct kmcl_gpa_range_header rh[KMCL_PKT_MAX_GPA_RANGES];
    struct kmcl_iov iov[1 + 2 * KMCL_PKT_MAX_GPA_RANGES + KMCL_PKT_MAX_PAYLOAD_IOV];
    uint32_t n = 0;
    uint64_t header_len = sizeof h;
    iov[n++] = (struct kmcl_iov){ &h, sizeof h };
    for (uint32_t i = 0; i < range_count; i++) {
        const struct kmcl_page_range *g = &ranges[i];
        if (g->byte_count == 0 || g->byte_offset >= KMCL_PAGE_SIZE || !g->pfns)
            return STATUS_INVALID_PARAMETER;
        uint64_t npfn = kmcl_pkt_gpa_pfn_count(g->byte_offset, g->byte_count);
        header_len += sizeof rh[i] + npfn * 8;
        if (header_len > KMCL_PKT_MAX_LEN)
            return STATUS_INVALID_PARAMETER;
        rh[i].byte_count = g->byte_count;
        rh[i].byte_offset = g->byte_offset;
        iov[n++] = (struct kmcl_iov){ &rh[i], sizeof rh[i] };
        iov[n++] = (struct kmcl_iov){ g->pfns, (uint32_t)npfn * 8 };
    }
    for (uint32_t i = 0; i < payload_count; i++)
        iov[n++] = payload[i];
    struct kmcl_ring_out out = {
        .type = KMCL_PKT_DATA_GPA_DIRECT,
        .flags = flags,
        .trans_id = trans_id,
        .header_len = (uint32_t)header_len,
        .iov = iov,
        .iov_count = n,
    };
    return kmcl_ring_write(r, &out, write_flags, signal_reader);
}
