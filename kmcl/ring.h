/*
 * ring: one endpoint of a VMBus ring buffer (format in kmcl/ring_format.h). An endpoint attaches to
 * ring memory the caller owns (a control page and a data area) as the WRITER or the READER of
 * that ring; the other end is another endpoint (this code on another thread, hvsim) or the host.
 *
 * Writer: kmcl_ring_write copies one packet (descriptor, gathered pieces, padding, trailer) in,
 * publishes the write index and says whether the reader must be signalled: only when the ring was
 * empty before the write and the reader's interrupt_mask is clear. KMCL_RING_WRITE_DEFER leaves the
 * index unpublished so that several packets are published, and signalled, once (kmcl_ring_flush).
 * When the ring is too full the writer stores the bytes it needs in pending_send_sz (so that the
 * reader signals it once that much is free) and returns STATUS_NO_SPACE.
 *
 * Reader: kmcl_ring_begin_read (mask interrupts), then kmcl_ring_peek / kmcl_ring_consume per
 * packet, kmcl_ring_publish_read once per batch, and kmcl_ring_end_read (unmask, re-check: true
 * means a packet raced in and the caller drains again). Publishing returns "signal the writer"
 * when the free space crosses the writer's pending_send_sz.
 *
 * Untrusted peer: everything read from shared memory is checked before use (indices, lengths,
 * offsets, trailer, type, the type-specific headers through kmcl_pkt_check). The first violation
 * puts the endpoint into a sticky FAILED state with a reason (kmcl_ring_failure); it then never
 * reads or writes the ring again and every call returns STATUS_BAD_DATA or does nothing. The
 * endpoint keeps its own copy of its index and never re-reads it from the shared page.
 *
 * IRQL: every function may be called at any IRQL up to HIGH; none blocks, allocates or logs.
 * Thread-safety: one thread (or CPU, with the caller's lock) at a time per endpoint; the writer
 * endpoint and the reader endpoint of one ring may run concurrently with each other. Shared words
 * are accessed with __atomic builtins; the orders are commented in ring.c.
 *
 * Memory ownership: the caller owns the ring memory and the struct kmcl_ring and keeps both alive
 * while attached (there is no detach: stop calling and free). A peeked packet's bytes point into
 * the ring (valid until the read index is published: kmcl_ring_publish_read / kmcl_ring_end_read)
 * or, when the packet wraps around the end of the data area, into the caller's bounce buffer (valid
 * until the next peek). Bytes in the ring are shared with the peer, which may change them at any
 * time: the descriptor in the view is a validated snapshot, but anything parsed from `bytes` must
 * be read once and checked (the kmcl/packet.h parsers do so).
 */
#ifndef KMCL_RING_H
#define KMCL_RING_H

#include <stdbool.h>
#include <stdint.h>

#include "kernel/status.h"
#include "kmcl/ring_format.h"

/* Smallest and largest data areas accepted (real channels use multiples of 4096; tests go smaller). */
#define KMCL_RING_MIN_DATA_SIZE 64u
#define KMCL_RING_MAX_DATA_SIZE (1u << 30)

enum kmcl_ring_role {
    KMCL_RING_READER = 1,
    KMCL_RING_WRITER = 2,
};

/* kmcl_ring_attach flags */
#define KMCL_RING_ATTACH_INIT 0x1u /* fresh memory: zero the indices, mask and pending size, and set
                                      feature bit 0 (the guest does this for both rings it allocates) */

/* kmcl_ring_write flags */
#define KMCL_RING_WRITE_DEFER 0x1u /* copy the packet but do not publish it yet (kmcl_ring_flush) */

/* One piece of a gather list. */
struct kmcl_iov {
    const void *base;
    uint32_t len;
};

/* Why an endpoint failed: a static reason and the numbers behind it. reason is NULL while healthy. */
struct kmcl_ring_failure {
    const char *reason; /* e.g. "packet length exceeds the bytes available" */
    uint32_t offset;    /* ring offset concerned: the packet's start, or the bad index itself */
    uint64_t value;     /* the offending number (a length, an index, a count...) */
    uint64_t limit;     /* what it was checked against */
};

/* An endpoint. Private fields: use the functions. */
struct kmcl_ring {
    struct kmcl_ring_control *control;
    uint8_t *data;
    uint32_t size;       /* bytes in the data area */
    uint8_t role;        /* enum kmcl_ring_role */
    uint8_t live_role;   /* role while healthy, 0 once FAILED: one compare on the fast paths */
    bool pending_set;    /* writer: pending_send_sz was set by us and not yet cleared */
    uint32_t max_need;   /* writer: the largest packet (ring bytes) this ring can ever take */
    uint32_t pos;        /* our own index: reader, next packet; writer, next byte to write */
    uint32_t published;  /* our index as last stored into the control page */
    uint32_t known;      /* from the peer's index as last seen (validated): writer, free bytes a
                            packet may use; reader, bytes published and not consumed */
    uint32_t peeked;     /* reader: ring bytes (with trailer) of the packet peeked at pos; 0 = none */
    uint32_t xfer_limit; /* reader: transfer-page ranges must end within this many bytes (0: unchecked) */
    struct kmcl_ring_failure failure;
};

/* A packet to write. The gather list holds the type-specific header (header_len bytes, a multiple
 * of 8; 0 for in-band and completion packets) followed by the payload; the writer adds the
 * descriptor in front, pads to 8 and appends the trailer. offset8 = (16 + header_len) / 8. */
struct kmcl_ring_out {
    uint16_t type;   /* KMCL_PKT_* */
    uint16_t flags;  /* KMCL_PKT_FLAG_* */
    uint64_t trans_id;
    uint32_t header_len;
    const struct kmcl_iov *iov;
    uint32_t iov_count;
};

/* A peeked packet: a view, see the ownership notes at the top. */
struct kmcl_ring_packet {
    struct kmcl_pkt_desc desc; /* validated snapshot of the descriptor */
    const uint8_t *bytes;      /* the packet from its descriptor on, `len` contiguous bytes */
    uint32_t len;              /* desc.len8 * 8 (trailer excluded) */
    uint32_t data_offset;      /* desc.offset8 * 8: the payload is bytes[data_offset .. len) */
    uint32_t ring_offset;      /* where the packet starts in the data area */
    bool bounced;              /* bytes is the caller's bounce buffer (the packet wrapped) */
};

/*
 * Attaches r to a ring whose control page and data area (data_size bytes, a multiple of 8 within
 * [KMCL_RING_MIN_DATA_SIZE, KMCL_RING_MAX_DATA_SIZE], 8-byte aligned) the caller provides. Without
 * KMCL_RING_ATTACH_INIT the endpoint takes over the indices it finds (checked). A writer sets
 * feature bit 0 in its ring (it uses pending_send_sz) and clears pending_send_sz.
 * STATUS_INVALID_PARAMETER for bad arguments, STATUS_BAD_DATA if an index found is invalid (the
 * endpoint is then FAILED with the reason).
 */
status_t kmcl_ring_attach(struct kmcl_ring *r, enum kmcl_ring_role role, struct kmcl_ring_control *control,
                          void *data, uint32_t data_size, uint32_t flags) WARN_UNUSED;

/* The same for ring memory laid out as on the wire: control page, then the data area (ring_bytes
 * includes the control page). */
status_t kmcl_ring_attach_pages(struct kmcl_ring *r, enum kmcl_ring_role role, void *ring_mem, uint32_t ring_bytes,
                                uint32_t flags) WARN_UNUSED;

/* Reader: transfer-page ranges (type 7) must lie within [0, bytes) of the transfer page set; 0 turns
 * the check off. A range outside fails the ring at peek. */
void kmcl_ring_set_xfer_limit(struct kmcl_ring *r, uint32_t bytes);

/* Ring bytes a packet occupies: descriptor + header + payload, padded to 8, + trailer. */
static inline uint64_t kmcl_ring_packet_bytes(uint32_t header_len, uint64_t payload_len)
{
    return ((KMCL_PKT_DESC_SIZE + (uint64_t)header_len + payload_len + 7) & ~(uint64_t)7) + KMCL_PKT_TRAILER_SIZE;
}

/* ---- writer ---- */

/*
 * Writes one packet. *signal_reader is set when the caller must signal the reader now (only when
 * this call published: not with KMCL_RING_WRITE_DEFER).
 *   STATUS_OK
 *   STATUS_NO_SPACE: not enough room now; pending_send_sz holds the bytes needed, and any deferred
 *     packets were published first (see *signal_reader). Retry after the reader's signal.
 *   STATUS_INVALID_PARAMETER: the packet can never fit this ring, or a malformed request
 *   STATUS_BAD_DATA: the endpoint is FAILED (the read index it found was invalid)
 */
status_t kmcl_ring_write(struct kmcl_ring *r, const struct kmcl_ring_out *pkt, uint32_t flags,
                         bool *signal_reader) WARN_UNUSED;

/* The same for a packet without a type-specific header whose payload is one buffer (in-band and
 * completion packets mostly): the shortest path. */
status_t kmcl_ring_write_buf(struct kmcl_ring *r, uint16_t type, uint16_t pkt_flags, uint64_t trans_id,
                             const void *payload, uint32_t len, uint32_t flags, bool *signal_reader) WARN_UNUSED;

/* Publishes deferred packets; returns true when the caller must signal the reader. */
bool kmcl_ring_flush(struct kmcl_ring *r) WARN_UNUSED;

/* Largest kmcl_ring_packet_bytes() that fits now (the ring never fills completely: 8 bytes stay
 * free so that read == write keeps meaning empty). 0 when FAILED. */
uint32_t kmcl_ring_write_space(struct kmcl_ring *r);

/* ---- reader ---- */

/* Sets interrupt_mask: the writer need not signal while we drain. */
void kmcl_ring_begin_read(struct kmcl_ring *r);

/*
 * Validates the next packet and describes it in *pkt (repeated peeks return the same packet until
 * kmcl_ring_consume).
 *   STATUS_OK
 *   STATUS_NOT_FOUND: the ring is empty
 *   STATUS_NO_SPACE: the packet wraps around the end of the data area and needs a bounce buffer of
 *     pkt->len bytes (bounce is NULL or smaller); nothing consumed, not a failure
 *   STATUS_BAD_DATA: the endpoint is FAILED (now or before); see kmcl_ring_failure
 */
status_t kmcl_ring_peek(struct kmcl_ring *r, struct kmcl_ring_packet *pkt, void *bounce,
                        uint32_t bounce_size) WARN_UNUSED;

/* Moves past the packet the last successful peek returned (does nothing if there is none). The
 * space is given back to the writer only when published. (Inline: it is on every packet's path.) */
static inline void kmcl_ring_consume(struct kmcl_ring *r)
{
    uint32_t n = r->peeked; /* 0 unless the last peek succeeded and nothing failed since */
    if (n) {
        uint32_t pos = r->pos + n;
        r->pos = pos >= r->size ? pos - r->size : pos;
        r->known -= n;
        r->peeked = 0;
    }
}

/* Publishes the read index after the consumed packets; returns true when the caller must signal
 * the writer (its pending_send_sz is now satisfied and was not before). */
bool kmcl_ring_publish_read(struct kmcl_ring *r) WARN_UNUSED;

/* Publishes (as kmcl_ring_publish_read, result in *signal_writer), clears interrupt_mask, and checks
 * once more: returns true if packets are waiting (raced in), in which case the caller should begin
 * and drain again. */
bool kmcl_ring_end_read(struct kmcl_ring *r, bool *signal_writer) WARN_UNUSED;

/* Bytes the writer has published that we have not consumed (0 when FAILED). */
uint32_t kmcl_ring_read_available(struct kmcl_ring *r);

/* ---- both ---- */

/* Reader: nothing to read. Writer: the reader has consumed everything we published. */
bool kmcl_ring_is_empty(struct kmcl_ring *r);

/* The failure, or NULL while healthy. */
const struct kmcl_ring_failure *kmcl_ring_failure(const struct kmcl_ring *r);

/* Puts the endpoint into FAILED with this reason (a parser found the packet bad, the caller gave up
 * on the peer...). The first failure is kept. */
void kmcl_ring_fail(struct kmcl_ring *r, const struct kmcl_ring_failure *why);

#endif
