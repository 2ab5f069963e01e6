/*
 * ring: one endpoint of a VMBus ring buffer. Contract in kmcl/core/ring.h.
 *
 * Memory orders. The shared words are the four control words; the packet bytes are plain memory
 * whose hand-over is ordered by the indices:
 *   - the writer stores write_index with RELEASE (at least) after copying a packet in; the reader
 *     loads it with ACQUIRE before reading packet bytes;
 *   - the reader stores read_index with RELEASE (at least) after it is done with the consumed bytes;
 *     the writer loads it with ACQUIRE before overwriting them.
 * Two store-then-load handshakes need more: each side stores one word and then loads the word the
 * other side stores, and at least one of them must see the other's store (otherwise an x86 store
 * buffer can hide both and a wake-up is lost). Both stores and both loads are SEQ_CST, which C11
 * guarantees for this pattern (all SEQ_CST operations are in one total order); on x86 that is an
 * `xchg` for the store and plain loads. (Not `atomic_thread_fence`: ThreadSanitizer does not model
 * fences, and the code must run under it.)
 *   - signal on write:   writer: store write_index; load interrupt_mask, read_index (publish_write)
 *                        reader: store interrupt_mask = 0; load write_index (end_read)
 *   - pending send size: writer: store pending_send_sz; load read_index (reserve_slow)
 *                        reader: store read_index; load pending_send_sz, write_index (publish_read)
 * Other loads of the peer's index are ACQUIRE, as above. The remaining stores are RELAXED:
 * interrupt_mask = 1 at begin_read is only a hint, clearing pending_send_sz after a write only
 * stops signals we no longer need, and an INIT attach runs before any peer does. The inline fast
 * paths in ring.h (kmcl_ring_write_buf_inline: publish_write; kmcl_ring_peek_inline: the ACQUIRE
 * load of write_index; kmcl_ring_publish_read_inline: publish_read) use the same orders.
 *
 * What the endpoint remembers of the peer: `peer`, its index as last loaded and validated (never a
 * count kept by subtraction: the free or published bytes are always computed from two valid
 * indices, so no sequence of host writes can make them exceed the data area), and for the inline
 * fast paths `write_end` / `read_end` (see struct kmcl_ring), recomputed whenever pos wraps, peer
 * changes or pending_send_sz is set or cleared, and 0 whenever the fast path must not run.
 */
#include "kmcl/core/ring.h"

#include "kernel/string.h"
#include "kmcl/core/packet.h"

static inline uint32_t load_acquire(const uint32_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline void store_relaxed(uint32_t *p, uint32_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

static inline uint32_t load_seq_cst(const uint32_t *p)
{
    return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

static inline void store_seq_cst(uint32_t *p, uint32_t v)
{
    __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
}

static status_t fail(struct kmcl_ring *r, const char *reason, uint32_t offset, uint64_t value, uint64_t limit)
{
    if (!r->failure.reason) {
        r->failure.reason = reason;
        r->failure.offset = offset;
        r->failure.value = value;
        r->failure.limit = limit;
    }
    r->live_role = 0; /* every entry point now takes its slow branch */
    r->peeked = 0;
    r->read_end = 0; /* and the inline fast paths theirs */
    r->write_end = 0;
    return STATUS_BAD_DATA;
}

void kmcl_ring_fail(struct kmcl_ring *r, const struct kmcl_ring_failure *why)
{
    (void)fail(r, why && why->reason ? why->reason : "failed by the caller", why ? why->offset : 0,
               why ? why->value : 0, why ? why->limit : 0);
}

const struct kmcl_ring_failure *kmcl_ring_failure(const struct kmcl_ring *r)
{
    return r->failure.reason ? &r->failure : 0;
}

/* What a call on an endpoint that is not a healthy `role` returns. */
static status_t not_live(const struct kmcl_ring *r)
{
    return r->failure.reason ? STATUS_BAD_DATA : STATUS_INVALID_PARAMETER;
}

/* An index read from the peer: inside the data area and 8-byte aligned, or the ring fails. */
static inline bool index_ok(struct kmcl_ring *r, uint32_t v, const char *which_range, const char *which_align)
{
    if (__builtin_expect(v >= r->size, 0)) {
        (void)fail(r, which_range, v, v, r->size);
        return false;
    }
    if (__builtin_expect(v & 7u, 0)) {
        (void)fail(r, which_align, v, v, 8);
        return false;
    }
    return true;
}

static inline bool write_index_ok(struct kmcl_ring *r, uint32_t v)
{
    return index_ok(r, v, "write index outside the data area", "write index not 8-byte aligned");
}

static inline bool read_index_ok(struct kmcl_ring *r, uint32_t v)
{
    return index_ok(r, v, "read index outside the data area", "read index not 8-byte aligned");
}

/* off + n, wrapped; off < size and n <= size. */
static inline uint32_t ring_add(const struct kmcl_ring *r, uint32_t off, uint32_t n)
{
    off += n;
    return off >= r->size ? off - r->size : off;
}

/* Bytes between read and write (the packets waiting). */
static inline uint32_t used_bytes(const struct kmcl_ring *r, uint32_t write, uint32_t read)
{
    return write >= read ? write - read : r->size - (read - write);
}

/* The largest packet (ring bytes) the writer may add: 8 bytes always stay free so that a full ring
 * is never mistaken for an empty one (read == write). */
static inline uint32_t space_bytes(const struct kmcl_ring *r, uint32_t write, uint32_t read)
{
    return r->size - used_bytes(r, write, read) - 8;
}

/* Reader: r->read_end for our position rd and a write index w (both valid), no packet peeked. */
static inline uint32_t reader_end(const struct kmcl_ring *r, uint32_t rd, uint32_t w)
{
    return w >= rd ? w : r->size - 8; /* a packet ending exactly at the end is for the slow path */
}

/* Writer: recomputes r->write_end from pos and the read index last seen (see struct kmcl_ring). */
static void writer_end(struct kmcl_ring *r)
{
    if (r->pending_set || r->live_role != KMCL_RING_WRITER) {
        r->write_end = 0;
        return;
    }
    uint32_t space = space_bytes(r, r->pos, r->peer);
    uint32_t lim = (space < r->max_need ? space : r->max_need) + 1; /* need <= space, need <= max_need */
    uint32_t room = r->size - r->pos;                               /* pos + need < size: no wrap */
    r->write_end = r->pos + (lim < room ? lim : room);
}

static void copy_to_ring(struct kmcl_ring *r, uint32_t off, const void *src, uint32_t len)
{
    uint32_t first = r->size - off;
    if (len <= first) {
        memcpy(r->data + off, src, len);
    } else {
        memcpy(r->data + off, src, first);
        memcpy(r->data, (const uint8_t *)src + first, len - first);
    }
}

static void copy_from_ring(const struct kmcl_ring *r, uint32_t off, void *dst, uint32_t len)
{
    uint32_t first = r->size - off;
    if (len <= first) {
        memcpy(dst, r->data + off, len);
    } else {
        memcpy(dst, r->data + off, first);
        memcpy((uint8_t *)dst + first, r->data, len - first);
    }
}

status_t kmcl_ring_attach(struct kmcl_ring *r, enum kmcl_ring_role role, struct kmcl_ring_control *control,
                          void *data, uint32_t data_size, uint32_t flags)
{
    memset(r, 0, sizeof *r);
    if (!control || !data || (role != KMCL_RING_READER && role != KMCL_RING_WRITER) ||
        data_size < KMCL_RING_MIN_DATA_SIZE || data_size > KMCL_RING_MAX_DATA_SIZE || (data_size & 7u) ||
        ((uintptr_t)data & 7u) || ((uintptr_t)control & 7u) || (flags & ~KMCL_RING_ATTACH_INIT)) {
        (void)fail(r, "bad arguments to kmcl_ring_attach", 0, data_size, KMCL_RING_MAX_DATA_SIZE);
        return STATUS_INVALID_PARAMETER;
    }
    r->control = control;
    r->data = data;
    r->size = data_size;
    r->role = (uint8_t)role;
    r->live_role = (uint8_t)role;
    /* A packet may not fill the ring (8 bytes stay free) and its len8 is 16 bits. */
    r->max_need = data_size - 8 < KMCL_PKT_MAX_LEN + KMCL_PKT_TRAILER_SIZE ? data_size - 8
                                                                           : KMCL_PKT_MAX_LEN + KMCL_PKT_TRAILER_SIZE;

    if (flags & KMCL_RING_ATTACH_INIT) {
        store_relaxed(&control->write_index, 0);
        store_relaxed(&control->read_index, 0);
        store_relaxed(&control->interrupt_mask, 0);
        store_relaxed(&control->pending_send_sz, 0);
        /* The guest allocates both rings and sets the bit in each: as writer it may use
         * pending_send_sz, as reader it honours it (mu_msvm RingBuffer.c; LIS ring_buffer.c). */
        store_relaxed(&control->feature_bits, KMCL_RING_FEATURE_PENDING_SEND_SZ);
    }

    uint32_t w = load_acquire(&control->write_index);
    uint32_t rd = load_acquire(&control->read_index);
    if (!write_index_ok(r, w) || !read_index_ok(r, rd))
        return STATUS_BAD_DATA;
    if (role == KMCL_RING_WRITER) {
        r->pos = r->published = w;
        r->peer = rd;
        writer_end(r);
        /* The sending side announces that it uses pending_send_sz (openvmm OutgoingRing::new) and
         * starts without asking for a signal. */
        __atomic_fetch_or(&control->feature_bits, KMCL_RING_FEATURE_PENDING_SEND_SZ, __ATOMIC_RELAXED);
        store_relaxed(&control->pending_send_sz, 0);
    } else {
        r->pos = r->published = rd;
        r->peer = w;
        r->read_end = reader_end(r, rd, w);
    }
    return STATUS_OK;
}

status_t kmcl_ring_attach_pages(struct kmcl_ring *r, enum kmcl_ring_role role, void *ring_mem, uint32_t ring_bytes,
                                uint32_t flags)
{
    if (!ring_mem || ring_bytes < KMCL_RING_DATA_OFFSET + KMCL_RING_MIN_DATA_SIZE) {
        memset(r, 0, sizeof *r);
        (void)fail(r, "bad arguments to kmcl_ring_attach_pages", 0, ring_bytes,
                   KMCL_RING_DATA_OFFSET + KMCL_RING_MIN_DATA_SIZE);
        return STATUS_INVALID_PARAMETER;
    }
    return kmcl_ring_attach(r, role, ring_mem, (uint8_t *)ring_mem + KMCL_RING_DATA_OFFSET,
                            ring_bytes - KMCL_RING_DATA_OFFSET, flags);
}

void kmcl_ring_set_xfer_limit(struct kmcl_ring *r, uint32_t bytes)
{
    r->xfer_limit = bytes;
}

/* ---- writer ---- */

/* Publishes the write index; returns "signal the reader". Healthy writer only. */
static inline bool publish_write(struct kmcl_ring *r)
{
    uint32_t old = r->published, now = r->pos;
    if (old == now)
        return false;
    /* SEQ_CST (so also RELEASE: the packet bytes are visible before the index that covers them).
     * Handshake with end_read (reader: store mask = 0; load write_index): either we see the mask
     * clear here and signal, or the reader sees our index and drains again. */
    store_seq_cst(&r->control->write_index, now);
    r->published = now;
    if (load_seq_cst(&r->control->interrupt_mask) != 0)
        return false;
    /* Signal only on empty -> non-empty: the reader had consumed (and published) up to where our
     * first new packet starts. Otherwise it still has packets to get to and will see ours. */
    return load_seq_cst(&r->control->read_index) == old;
}

bool kmcl_ring_flush(struct kmcl_ring *r)
{
    if (r->live_role != KMCL_RING_WRITER)
        return false;
    return publish_write(r);
}

/* Makes sure `need` ring bytes are free at pos, reloading the read index and asking the reader for
 * a signal (pending_send_sz) if not. */
static __attribute__((noinline)) status_t reserve_slow(struct kmcl_ring *r, uint32_t need, bool *signal_reader)
{
    /* ACQUIRE: the reader's reads of the bytes we will overwrite happened before. */
    uint32_t rd = load_acquire(&r->control->read_index);
    if (!read_index_ok(r, rd))
        return STATUS_BAD_DATA;
    r->peer = rd;
    if (space_bytes(r, r->pos, rd) >= need)
        return STATUS_OK;

    /* Full. Publish what we deferred first: the reader computes the crossing of pending_send_sz
     * from the published write index, which must then be ours. */
    *signal_reader = publish_write(r);
    /* Handshake with publish_read (reader: store read_index; load pending_send_sz): either the
     * reader sees our pending size, or we see its new read index now. */
    store_seq_cst(&r->control->pending_send_sz, need);
    r->pending_set = true;
    r->write_end = 0; /* every write takes the slow path until one clears pending_send_sz */
    rd = load_seq_cst(&r->control->read_index);
    if (!read_index_ok(r, rd))
        return STATUS_BAD_DATA;
    r->peer = rd;
    if (space_bytes(r, r->pos, rd) >= need)
        return STATUS_OK;
    return STATUS_NO_SPACE;
}

/* The packet crosses the end of the data area: piece by piece. */
static __attribute__((noinline)) void write_wrapped(struct kmcl_ring *r, const struct kmcl_pkt_desc *desc,
                                                    const struct kmcl_iov *iov, uint32_t count, uint32_t start,
                                                    uint32_t len, uint32_t body)
{
    static const uint8_t zeros[8];
    uint32_t off = start;
    copy_to_ring(r, off, desc, sizeof *desc);
    off = ring_add(r, off, sizeof *desc);
    for (uint32_t i = 0; i < count; i++) {
        uint32_t n = iov[i].len;
        if (n) {
            copy_to_ring(r, off, iov[i].base, n);
            off = ring_add(r, off, n);
        }
    }
    uint32_t pad = len - KMCL_PKT_DESC_SIZE - body;
    if (pad) {
        copy_to_ring(r, off, zeros, pad);
        off = ring_add(r, off, pad);
    }
    uint64_t trailer = KMCL_PKT_TRAILER(start);
    copy_to_ring(r, off, &trailer, sizeof trailer); /* 8-aligned: never split */
}

/* The writer, inlined into kmcl_ring_write (any gather list) and kmcl_ring_write_buf (count 1,
 * which the compiler then specialises). */
static inline __attribute__((always_inline)) status_t write_packet(struct kmcl_ring *r, uint16_t type,
                                                                   uint16_t pkt_flags, uint64_t trans_id,
                                                                   uint32_t header_len, const struct kmcl_iov *iov,
                                                                   uint32_t count, uint32_t flags,
                                                                   bool *signal_reader)
{
    *signal_reader = false;
    if (__builtin_expect(r->live_role != KMCL_RING_WRITER, 0))
        return not_live(r);

    uint64_t body = 0;
    for (uint32_t i = 0; i < count; i++) {
        if (__builtin_expect(!iov[i].base, 0) && iov[i].len)
            return STATUS_INVALID_PARAMETER;
        body += iov[i].len;
    }
    /* need: descriptor + body padded to 8 + trailer; more than max_need can never fit (no retry
     * can help, so not NO_SPACE). */
    uint64_t need64 = ((KMCL_PKT_DESC_SIZE + body + 7) & ~(uint64_t)7) + KMCL_PKT_TRAILER_SIZE;
    if (__builtin_expect((flags & ~KMCL_RING_WRITE_DEFER) || (header_len & 7u) || header_len > body ||
                             need64 > r->max_need,
                         0))
        return STATUS_INVALID_PARAMETER;
    uint32_t need = (uint32_t)need64;
    uint32_t len = need - KMCL_PKT_TRAILER_SIZE;

    if (space_bytes(r, r->pos, r->peer) < need) {
        status_t s = reserve_slow(r, need, signal_reader);
        if (s != STATUS_OK)
            return s;
    }

    uint32_t start = r->pos;
    r->pos = ring_add(r, start, need); /* private until published */
    if (__builtin_expect(start + need <= r->size, 1)) {
        /* The packet and its trailer are contiguous: descriptor fields straight into the ring,
         * then padding and trailer, then the payload last (fewer registers live across memcpy). */
        uint8_t *p = r->data + start;
        struct kmcl_pkt_desc *d = (struct kmcl_pkt_desc *)p;
        d->type = type;
        d->offset8 = (uint16_t)((KMCL_PKT_DESC_SIZE + header_len) / 8);
        d->len8 = (uint16_t)(len / 8);
        d->flags = pkt_flags;
        d->trans_id = trans_id;
        /* Padding (< 8 bytes): 8 zero bytes after the payload; the surplus lands on the
         * trailer's place and is overwritten next. */
        uint64_t zero = 0, trailer = KMCL_PKT_TRAILER(start);
        __builtin_memcpy(p + KMCL_PKT_DESC_SIZE + body, &zero, sizeof zero);
        __builtin_memcpy(p + len, &trailer, sizeof trailer);
        p += KMCL_PKT_DESC_SIZE;
        for (uint32_t i = 0; i < count; i++) {
            uint32_t n = iov[i].len;
            if (n) { /* base may be NULL for an empty piece */
                memcpy(p, iov[i].base, n);
                p += n;
            }
        }
    } else {
        struct kmcl_pkt_desc desc = {
            .type = type,
            .offset8 = (uint16_t)((KMCL_PKT_DESC_SIZE + header_len) / 8),
            .len8 = (uint16_t)(len / 8),
            .flags = pkt_flags,
            .trans_id = trans_id,
        };
        write_wrapped(r, &desc, iov, count, start, len, (uint32_t)body);
    }

    if (__builtin_expect(r->pending_set, 0)) {
        /* The space we waited for came: stop asking for a signal. */
        store_relaxed(&r->control->pending_send_sz, 0);
        r->pending_set = false;
    }
    if (!(flags & KMCL_RING_WRITE_DEFER) && publish_write(r))
        *signal_reader = true; /* keep a signal reserve_slow's publish may have asked for */
    writer_end(r); /* pos may have wrapped, peer and pending_set changed */
    return STATUS_OK;
}

status_t kmcl_ring_write(struct kmcl_ring *r, const struct kmcl_ring_out *pkt, uint32_t flags, bool *signal_reader)
{
    if (pkt->iov_count && !pkt->iov) {
        *signal_reader = false;
        return STATUS_INVALID_PARAMETER;
    }
    return write_packet(r, pkt->type, pkt->flags, pkt->trans_id, pkt->header_len, pkt->iov, pkt->iov_count, flags,
                        signal_reader);
}

status_t kmcl_ring_write_slow(struct kmcl_ring *r, uint16_t type, uint16_t pkt_flags, uint64_t trans_id,
                              const void *payload, uint32_t len, uint32_t flags, bool *signal_reader)
{
    struct kmcl_iov iov = { payload, len };
    return write_packet(r, type, pkt_flags, trans_id, 0, &iov, 1, flags, signal_reader);
}

status_t kmcl_ring_write_buf(struct kmcl_ring *r, uint16_t type, uint16_t pkt_flags, uint64_t trans_id,
                             const void *payload, uint32_t len, uint32_t flags, bool *signal_reader)
{
    return kmcl_ring_write_buf_impl_(r, type, pkt_flags, trans_id, payload, len, flags, signal_reader, false);
}

uint32_t kmcl_ring_write_space(struct kmcl_ring *r)
{
    if (r->live_role != KMCL_RING_WRITER)
        return 0;
    uint32_t rd = load_acquire(&r->control->read_index);
    if (!read_index_ok(r, rd))
        return 0;
    r->peer = rd;
    writer_end(r);
    return space_bytes(r, r->pos, rd);
}

/* ---- reader ---- */

void kmcl_ring_begin_read(struct kmcl_ring *r)
{
    if (r->live_role == KMCL_RING_READER)
        store_relaxed(&r->control->interrupt_mask, 1);
}

/* The descriptor at rd broke a rule: say which (out of line: never on a good packet's path). */
static __attribute__((noinline)) status_t bad_descriptor(struct kmcl_ring *r, const struct kmcl_pkt_desc *d,
                                                         uint32_t rd, uint32_t avail)
{
    uint32_t len = (uint32_t)d->len8 * 8, off = (uint32_t)d->offset8 * 8;
    if (d->type == KMCL_PKT_INVALID || d->type > KMCL_PKT_TYPE_MAX)
        return fail(r, "unknown packet type", rd, d->type, KMCL_PKT_TYPE_MAX);
    if (len < KMCL_PKT_DESC_SIZE)
        return fail(r, "packet length shorter than its descriptor", rd, len, KMCL_PKT_DESC_SIZE);
    if (len + KMCL_PKT_TRAILER_SIZE > avail)
        return fail(r, "packet length (with trailer) exceeds the bytes available", rd, len + KMCL_PKT_TRAILER_SIZE,
                    avail);
    if (off < KMCL_PKT_DESC_SIZE)
        return fail(r, "data offset inside the descriptor", rd, off, KMCL_PKT_DESC_SIZE);
    return fail(r, "data offset beyond the packet length", rd, off, len);
}

/*
 * The whole of peek, every case: what kmcl_ring_peek_inline falls back to (a wrapped packet or
 * descriptor, a transfer-page or GPA-direct packet, an empty ring, any failure). It starts over:
 * nothing the inline part read is used.
 */
status_t kmcl_ring_peek_slow(struct kmcl_ring *r, struct kmcl_ring_packet *pkt, void *bounce, uint32_t bounce_size)
{
    if (r->live_role != KMCL_RING_READER)
        return not_live(r);
    r->peeked = 0;
    r->read_end = 0; /* set again at the end if the packet leaves pos short of the end */
    uint32_t rd = r->pos;
    /* Published and not consumed, by the write index last seen; reloaded only when used up. */
    uint32_t avail = used_bytes(r, r->peer, rd);
    if (avail == 0) {
        /* ACQUIRE: the packet bytes the writer wrote before publishing are visible to us. */
        uint32_t w = load_acquire(&r->control->write_index);
        if (!write_index_ok(r, w))
            return STATUS_BAD_DATA;
        if (rd == w)
            return STATUS_NOT_FOUND;
        r->peer = w;
        avail = used_bytes(r, w, rd); /* <= size - 8: both indices are valid */
    }
    if (avail < KMCL_PKT_DESC_SIZE + KMCL_PKT_TRAILER_SIZE)
        return fail(r, "fewer bytes published than a descriptor and a trailer", rd, avail,
                    KMCL_PKT_DESC_SIZE + KMCL_PKT_TRAILER_SIZE);

    /* Snapshot the descriptor into the caller's view; only the snapshot is checked and used. */
    copy_from_ring(r, rd, &pkt->desc, sizeof pkt->desc);
    const struct kmcl_pkt_desc *d = &pkt->desc;
    uint32_t len = (uint32_t)d->len8 * 8;
    uint32_t off = (uint32_t)d->offset8 * 8;
    /* type in 1..KMCL_PKT_TYPE_MAX; 16 <= off <= len; len + trailer <= avail (len >= 16 follows). */
    if ((uint16_t)(d->type - 1) >= KMCL_PKT_TYPE_MAX || off < KMCL_PKT_DESC_SIZE || off > len ||
        len + KMCL_PKT_TRAILER_SIZE > avail)
        return bad_descriptor(r, d, rd, avail);

    uint64_t trailer;
    memcpy(&trailer, r->data + ring_add(r, rd, len), sizeof trailer); /* 8-aligned: never split */
    if (KMCL_PKT_TRAILER_OFFSET(trailer) != rd)
        return fail(r, "trailer does not hold the packet's start offset", rd, KMCL_PKT_TRAILER_OFFSET(trailer), rd);

    pkt->len = len;
    pkt->data_offset = off;
    pkt->ring_offset = rd;
    if (rd + len <= r->size) {
        pkt->bytes = r->data + rd;
        pkt->bounced = false;
    } else {
        if (!bounce || bounce_size < len) {
            pkt->bytes = 0;
            pkt->bounced = false;
            return STATUS_NO_SPACE;
        }
        copy_from_ring(r, rd, bounce, len);
        /* The descriptor in the bounce copy was read a second time: keep the checked one. */
        memcpy(bounce, &pkt->desc, sizeof pkt->desc);
        pkt->bytes = bounce;
        pkt->bounced = true;
    }
    if (d->type == KMCL_PKT_DATA_XFER_PAGES || d->type == KMCL_PKT_DATA_GPA_DIRECT) {
        struct kmcl_ring_failure why;
        if (kmcl_pkt_check(pkt, r->xfer_limit, &why) != STATUS_OK) {
            why.offset = rd;
            kmcl_ring_fail(r, &why);
            return STATUS_BAD_DATA;
        }
    }
    uint32_t n = len + KMCL_PKT_TRAILER_SIZE; /* < size */
    if (rd + n < r->size) {
        r->peeked = n;
        /* The inline peek may go on after this packet. */
        r->read_end = reader_end(r, rd, r->peer);
    } else {
        r->peeked = n - r->size; /* consume wraps pos: rd + n - size */
    }
    return STATUS_OK;
}

status_t kmcl_ring_peek(struct kmcl_ring *r, struct kmcl_ring_packet *pkt, void *bounce, uint32_t bounce_size)
{
    return kmcl_ring_peek_impl_(r, pkt, bounce, bounce_size, false);
}

/* The writer has set pending_send_sz (low bits masked, non-zero): does the publication of our read
 * index from old to r->published make at least that much free? (kmcl_ring_publish_read_inline) */
bool kmcl_ring_publish_read_slow(struct kmcl_ring *r, uint32_t old, uint32_t pending)
{
    /* Low 3 bits masked by the caller: some writers ask for "ring size - 1", which can never be free
     * (openvmm commit_read). Honoured whether or not the feature bit is set: a spurious signal costs
     * an interrupt, a missed one a hang. */
    uint32_t w = load_seq_cst(&r->control->write_index);
    if (w >= r->size || (w & 7u))
        return false; /* the next peek fails the ring on it */
    return space_bytes(r, w, old) < pending && space_bytes(r, w, r->published) >= pending;
}

bool kmcl_ring_publish_read(struct kmcl_ring *r)
{
    /* SEQ_CST store of read_index (so also RELEASE: we are done with the consumed bytes before the
     * writer may reuse them), then pending_send_sz: the handshake with the writer's reserve_slow
     * (store pending_send_sz; load read_index). */
    return kmcl_ring_publish_read_inline(r);
}

/* Reader: the write index w (valid) was just loaded. */
static void reader_saw(struct kmcl_ring *r, uint32_t w)
{
    r->peer = w;
    /* With a packet peeked, consuming it may wrap pos: leave read_end to the next peek. */
    r->read_end = r->peeked ? 0 : reader_end(r, r->pos, w);
}

bool kmcl_ring_end_read(struct kmcl_ring *r, bool *signal_writer)
{
    *signal_writer = kmcl_ring_publish_read_inline(r);
    if (r->live_role != KMCL_RING_READER)
        return false;
    /* Handshake with publish_write (writer: store write_index; load interrupt_mask). */
    store_seq_cst(&r->control->interrupt_mask, 0);
    uint32_t w = load_seq_cst(&r->control->write_index);
    if (!write_index_ok(r, w))
        return false;
    reader_saw(r, w);
    return w != r->pos;
}

uint32_t kmcl_ring_read_available(struct kmcl_ring *r)
{
    if (r->live_role != KMCL_RING_READER)
        return 0;
    uint32_t w = load_acquire(&r->control->write_index);
    if (!write_index_ok(r, w))
        return 0;
    reader_saw(r, w);
    return used_bytes(r, w, r->pos);
}

bool kmcl_ring_is_empty(struct kmcl_ring *r)
{
    if (r->role == KMCL_RING_READER)
        return kmcl_ring_read_available(r) == 0;
    if (r->live_role != KMCL_RING_WRITER)
        return false;
    uint32_t rd = load_acquire(&r->control->read_index);
    if (!read_index_ok(r, rd))
        return false;
    r->peer = rd;
    writer_end(r);
    return rd == r->published;
}
