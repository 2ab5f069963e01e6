/*
 * ring: one endpoint of a VMBus ring buffer (format in kmcl/core/ring_format.h). An endpoint attaches to
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
 * be read once and checked (the kmcl/core/packet.h parsers do so).
 *
 * Fast paths: kmcl_ring_write_buf_inline, kmcl_ring_peek_inline and kmcl_ring_publish_read_inline
 * are the same functions as kmcl_ring_write_buf, kmcl_ring_peek and kmcl_ring_publish_read, with the
 * same contracts and the same checks, expanded into the caller (a few hundred bytes of code each)
 * for the common case and calling the out-of-line kmcl_ring_*_slow for everything else; the
 * out-of-line functions are the same code. kmcl_pkt_send_inband and kmcl_pkt_send_completion use
 * the inline write. Drivers' per-packet loops should use them; anything else may call either.
 */
#ifndef KMCL_RING_H
#define KMCL_RING_H

#include <stdbool.h>
#include <stdint.h>

#include "kernel/status.h"
#include "kmcl/core/ring_format.h"

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
    uint8_t live_role;   /* role while healthy, 0 once FAILED */
    bool pending_set;    /* writer: pending_send_sz was set by us and not yet cleared */
    uint32_t max_need;   /* writer: the largest packet (ring bytes) this ring can ever take */
    uint32_t pos;        /* our own index: reader, next packet; writer, next byte to write */
    uint32_t published;  /* our index as last stored into the control page */
    uint32_t peer;       /* the peer's index as last seen, validated: writer, read index; reader, write index */
    uint32_t read_end;   /* reader: the bytes [pos, read_end) are published (by `peer`) and contiguous, and
                            read_end < size; the inline peek takes a packet ending there without reloading
                            anything. 0 for a writer or a FAILED endpoint, and whenever it is unknown. */
    uint32_t write_end;  /* writer: a packet of `need` ring bytes may be written at pos by the inline write
                            iff pos + need < write_end (fits the free space known from `peer`, never wraps,
                            at most max_need). 0 for a reader, a FAILED endpoint, or while pending_set. */
    uint32_t peeked;     /* reader: what consume adds to pos (mod 2^32) to move past the packet peeked at pos:
                            its ring bytes with trailer, minus size if it reaches the end; 0 = none */
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
 * completion packets mostly): the shortest path (kmcl_ring_write_buf_inline below is this function
 * expanded into the caller). */
status_t kmcl_ring_write_buf(struct kmcl_ring *r, uint16_t type, uint16_t pkt_flags, uint64_t trans_id,
                             const void *payload, uint32_t len, uint32_t flags, bool *signal_reader) WARN_UNUSED;

/* Internal: the out-of-line halves of the inline fast paths below, each the complete function
 * (every check, every case; kmcl_ring_peek_slow also reloads the write index itself). Call the
 * documented functions instead. */
status_t kmcl_ring_write_slow(struct kmcl_ring *r, uint16_t type, uint16_t pkt_flags, uint64_t trans_id,
                              const void *payload, uint32_t len, uint32_t flags, bool *signal_reader) WARN_UNUSED;
status_t kmcl_ring_peek_slow(struct kmcl_ring *r, struct kmcl_ring_packet *pkt, void *bounce,
                             uint32_t bounce_size) WARN_UNUSED;
bool kmcl_ring_publish_read_slow(struct kmcl_ring *r, uint32_t old, uint32_t pending) WARN_UNUSED;

/* Internal: the body of kmcl_ring_write_buf_inline (in_caller) and of kmcl_ring_write_buf (not:
 * signal_reader is then handed straight to the slow path). */
static inline __attribute__((always_inline)) WARN_UNUSED status_t
kmcl_ring_write_buf_impl_(struct kmcl_ring *r, uint16_t type, uint16_t pkt_flags, uint64_t trans_id,
                          const void *payload, uint32_t len, uint32_t flags, bool *signal_reader, bool in_caller)
{
    /* descriptor + payload padded to 8 + trailer; 64-bit, so a huge len cannot wrap */
    uint64_t need = ((uint64_t)len + KMCL_PKT_DESC_SIZE + 7 + KMCL_PKT_TRAILER_SIZE) & ~(uint64_t)7;
    uint32_t start = r->pos;
    if (__builtin_expect(start + need >= r->write_end || !payload || (flags & ~KMCL_RING_WRITE_DEFER), 0)) {
        if (!in_caller)
            return kmcl_ring_write_slow(r, type, pkt_flags, trans_id, payload, len, flags, signal_reader);
        bool slow_signal; /* not signal_reader itself: the caller's flag then stays in a register */
        status_t s = kmcl_ring_write_slow(r, type, pkt_flags, trans_id, payload, len, flags, &slow_signal);
        *signal_reader = slow_signal;
        return s;
    }
    uint8_t *p = r->data + start;
    r->pos = start + (uint32_t)need; /* private until published */
    uint64_t d0 = (uint64_t)type | (uint64_t)(KMCL_PKT_DESC_SIZE / 8) << 16 | (need - KMCL_PKT_TRAILER_SIZE) << 29 |
                  (uint64_t)pkt_flags << 48; /* type, offset8, len8 = (need - 8) / 8, flags */
    uint64_t zero = 0, trailer = (uint64_t)start << 32;
    __builtin_memcpy(p, &d0, 8);
    __builtin_memcpy(p + 8, &trans_id, 8);
    /* Padding (< 8 bytes): 8 zero bytes after the payload, the surplus overwritten by the trailer. */
    __builtin_memcpy(p + KMCL_PKT_DESC_SIZE + len, &zero, 8);
    __builtin_memcpy(p + need - KMCL_PKT_TRAILER_SIZE, &trailer, 8);
    __builtin_memcpy(p + KMCL_PKT_DESC_SIZE, payload, len);
    bool signal = false;
    if (!(flags & KMCL_RING_WRITE_DEFER)) {
        /* As kmcl_ring_flush (memory orders in ring.c): SEQ_CST store of write_index, then the
         * reader's mask and whether the ring was empty before this packet. now != old: the
         * unpublished bytes are fewer than the ring size. (Read from *r after the copy rather than
         * kept across it: fewer registers to save.) */
        struct kmcl_ring_control *control = r->control;
        uint32_t old = r->published, now = r->pos;
        r->published = now;
        __atomic_store_n(&control->write_index, now, __ATOMIC_SEQ_CST);
        signal = __atomic_load_n(&control->interrupt_mask, __ATOMIC_SEQ_CST) == 0 &&
                 __atomic_load_n(&control->read_index, __ATOMIC_SEQ_CST) == old;
    }
    *signal_reader = signal;
    return STATUS_OK;
}

/*
 * kmcl_ring_write_buf expanded into the caller: the same contract, results and checks. The common
 * case (a healthy writer, pending_send_sz not set, the packet fits the free space the writer
 * already knows of and does not reach the end of the data area, flags 0 or KMCL_RING_WRITE_DEFER,
 * payload not NULL) is four 8-byte stores (descriptor, padding, trailer), the payload copy and,
 * unless deferred, the publication and signal decision; anything else is kmcl_ring_write_slow. One
 * compare against r->write_end covers the role, a failure, pending_send_sz, the free space, the
 * end of the data area and the largest packet (see struct kmcl_ring).
 */
static inline __attribute__((always_inline)) WARN_UNUSED status_t
kmcl_ring_write_buf_inline(struct kmcl_ring *r, uint16_t type, uint16_t pkt_flags, uint64_t trans_id,
                           const void *payload, uint32_t len, uint32_t flags, bool *signal_reader)
{
    return kmcl_ring_write_buf_impl_(r, type, pkt_flags, trans_id, payload, len, flags, signal_reader, true);
}

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

/* Descriptor words (type | offset8 << 16) the inline peek takes: in-band and completion packets
 * whose payload follows the descriptor, as every sender writes them. Other packets, just as valid,
 * go through kmcl_ring_peek_slow. */
#define KMCL_RING_FAST_INBAND (KMCL_PKT_DATA_INBAND | (KMCL_PKT_DESC_SIZE / 8) << 16)
#define KMCL_RING_FAST_COMPLETION (KMCL_PKT_COMPLETION | (KMCL_PKT_DESC_SIZE / 8) << 16)

/* Internal: the body of kmcl_ring_peek_inline (in_caller) and of kmcl_ring_peek (not: the view is
 * written with two stores for the descriptor and handed straight to the slow path). */
static inline __attribute__((always_inline)) WARN_UNUSED status_t
kmcl_ring_peek_impl_(struct kmcl_ring *r, struct kmcl_ring_packet *pkt, void *bounce, uint32_t bounce_size,
                     bool in_caller)
{
    uint32_t rd = r->pos, end = r->read_end;
    if (__builtin_expect(rd + KMCL_PKT_DESC_SIZE + KMCL_PKT_TRAILER_SIZE > end, 0)) {
        /* What the write index published before is used up (or unknown): load it again. */
        if (__builtin_expect(r->live_role != KMCL_RING_READER, 0))
            goto slow;
        uint32_t w = __atomic_load_n(&r->control->write_index, __ATOMIC_ACQUIRE);
        if (__builtin_expect(w >= r->size || (w & 7u), 0))
            goto slow; /* fails the ring with the reason */
        if (__builtin_expect(w > rd, 1)) {
            end = w;
        } else {
            if (w == rd) {
                r->peeked = 0;
                if (in_caller) /* the view is defined on every result (kmcl_ring_peek_inline) */
                    *pkt = (struct kmcl_ring_packet){ 0 };
                return STATUS_NOT_FOUND;
            }
            /* The published bytes wrap: up to the end of the data area, where a packet ending
             * exactly at the end is left to the slow path (consuming it wraps pos). */
            end = r->size - 8;
        }
        r->peer = w;
        r->read_end = end;
        /* w > rd: rd <= size - 16, the descriptor is inside the data area, and the length check
         * below finds fewer than 24 published bytes. The wrapped case must check here. */
        if (__builtin_expect(w < rd && rd + KMCL_PKT_DESC_SIZE + KMCL_PKT_TRAILER_SIZE > end, 0))
            goto slow;
    }
    {
        const uint8_t *p = r->data + rd;
        uint64_t d0, trans_id;
        __builtin_memcpy(&d0, p, 8);
        __builtin_memcpy(&trans_id, p + 8, 8);
        /* The snapshot: opaque to the compiler, so it is never read again from the ring. */
        __asm__("" : "+r"(d0), "+r"(trans_id));
        uint32_t head = (uint32_t)d0, len8 = (uint16_t)(d0 >> 32);
        uint32_t pkt_end = rd + len8 * 8 + KMCL_PKT_TRAILER_SIZE;
        /* type 6 or 11 and offset8 2 (so 1 <= type <= 13, offset >= 16); len8 >= offset8; the packet
         * and its trailer within the published bytes. */
        if (__builtin_expect((head != KMCL_RING_FAST_INBAND && head != KMCL_RING_FAST_COMPLETION) ||
                                 len8 < KMCL_PKT_DESC_SIZE / 8 || pkt_end > end,
                             0))
            goto slow;
        uint64_t trailer;
        __builtin_memcpy(&trailer, p + len8 * 8, 8);
        if (__builtin_expect((uint32_t)(trailer >> 32) != rd, 0))
            goto slow;
        if (in_caller) { /* field by field: the compiler keeps what the caller uses in registers */
            pkt->desc.type = (uint16_t)head;
            pkt->desc.offset8 = KMCL_PKT_DESC_SIZE / 8;
            pkt->desc.len8 = (uint16_t)len8;
            pkt->desc.flags = (uint16_t)(d0 >> 48);
            pkt->desc.trans_id = trans_id;
        } else { /* two stores */
            __builtin_memcpy(&pkt->desc, &d0, 8);
            __builtin_memcpy((uint8_t *)&pkt->desc + 8, &trans_id, 8);
        }
        pkt->bytes = p;
        pkt->len = len8 * 8;
        pkt->data_offset = KMCL_PKT_DESC_SIZE;
        pkt->ring_offset = rd;
        pkt->bounced = false;
        r->peeked = pkt_end - rd;
        return STATUS_OK;
    }
slow:
    if (!in_caller)
        return kmcl_ring_peek_slow(r, pkt, bounce, bounce_size);
    {
        /* Through a copy, so that the caller's view does not escape and the compiler may keep the
         * fields the caller uses in registers (the copy is on the slow path only). */
        struct kmcl_ring_packet view; /* every field written for OK and NO_SPACE */
        status_t s = kmcl_ring_peek_slow(r, &view, bounce, bounce_size);
        if (s != STATUS_OK && s != STATUS_NO_SPACE)
            view = (struct kmcl_ring_packet){ 0 };
        *pkt = view;
        return s;
    }
}

/*
 * kmcl_ring_peek expanded into the caller: the same contract, results and checks. The common case
 * is checked here: an in-band or completion packet (type 6 or 11, data offset 16) lying whole
 * before the end of the data area, with the write index already loaded or loaded now (validated:
 * inside the data area, 8-aligned). The descriptor is read once into registers; then its type and
 * data offset, 16 <= length, length + trailer within the published bytes, and the trailer's start
 * offset are checked. Anything else (other types and data offsets, a packet that wraps or reaches
 * the end of the data area, every failure) is kmcl_ring_peek_slow, which starts over with the
 * complete checks and reports the reason. The write index is re-read only when the bytes it
 * published before are used up (r->read_end). One difference: *pkt is zeroed on results other than
 * STATUS_OK and STATUS_NO_SPACE (so the compiler sees it written on every path).
 */
static inline __attribute__((always_inline)) WARN_UNUSED status_t
kmcl_ring_peek_inline(struct kmcl_ring *r, struct kmcl_ring_packet *pkt, void *bounce, uint32_t bounce_size)
{
    return kmcl_ring_peek_impl_(r, pkt, bounce, bounce_size, true);
}

/* Moves past the packet the last successful peek returned (does nothing if there is none). The
 * space is given back to the writer only when published. (Inline: it is on every packet's path.) */
static inline void kmcl_ring_consume(struct kmcl_ring *r)
{
    /* 0 unless the last peek succeeded and nothing failed since; already wrapped (see struct
     * kmcl_ring), so pos stays below size. */
    r->pos += r->peeked;
    r->peeked = 0;
}

/* Publishes the read index after the consumed packets; returns true when the caller must signal
 * the writer (its pending_send_sz is now satisfied and was not before). */
bool kmcl_ring_publish_read(struct kmcl_ring *r) WARN_UNUSED;

/* kmcl_ring_publish_read expanded into the caller: the same contract (the crossing test, when the
 * writer has set pending_send_sz, is kmcl_ring_publish_read_slow). */
static inline __attribute__((always_inline)) WARN_UNUSED bool kmcl_ring_publish_read_inline(struct kmcl_ring *r)
{
    uint32_t old = r->published, now = r->pos;
    if (old == now || r->live_role != KMCL_RING_READER)
        return false;
    /* SEQ_CST: the handshake with the writer's pending_send_sz (ring.c). */
    struct kmcl_ring_control *control = r->control;
    __atomic_store_n(&control->read_index, now, __ATOMIC_SEQ_CST);
    r->published = now;
    uint32_t pending = __atomic_load_n(&control->pending_send_sz, __ATOMIC_SEQ_CST) & ~7u;
    if (__builtin_expect(!pending, 1))
        return false;
    return kmcl_ring_publish_read_slow(r, old, pending);
}

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
