/*
 * libFuzzer harness for the kmcl ring reader and packet parsers (kmcl/core/ring.h, kmcl/core/packet.h): the
 * input is an inbound ring exactly as a hostile host could leave it.
 *
 * Input (little-endian; test/fuzz/gen_ring_seeds.py writes valid ones):
 *   @0  u16 size selector: data area = 64 + 8 * (sel % 1017) bytes (64 .. 8192)
 *   @2  u8  options: bit 0 set the transfer-page limit (@20); bit 1 change packet bytes after the
 *       peek, before parsing (the host racing the parser); bit 2 also run a writer on the ring;
 *       bit 3 peek without a bounce buffer
 *   @3  u8  byte offset into the packet that bit 1 changes
 *   @4  u32 write_index   @8 u32 read_index   @12 u32 interrupt_mask   @16 u32 pending_send_sz
 *   @20 u32 transfer-page set size (limit)    @24 u32 value bit 1 writes   @28 u32 unused
 *   @32 the data area (zero-filled past the input's end)
 *
 * The data area and the bounce buffer are heap blocks of exactly their size, so ASan sees any
 * access outside them. Checked: a healthy reader only returns packets whose every byte lies inside
 * the ring or the bounce buffer, with 16 <= data offset <= length <= published bytes - 8; the
 * reader consumes at most what was published and then stops (NOT_FOUND) or fails with a reason;
 * every parser result is internally consistent (ranges within the limit and the packet, page
 * counts matching byte offset and count, storage never overrun) even when the packet bytes change
 * between the peek and the parse. With bit 2, a writer attached to the same memory either writes
 * or refuses with a defined status.
 *
 * Seeds: test/fuzz/corpus/ring.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmcl/core/packet.h"
#include "kmcl/core/ring.h"
#include "kmcl/core/ring_format.h"

#define CHECK(cond)                                                                                            \
    do {                                                                                                       \
        if (!(cond)) {                                                                                         \
            fprintf(stderr, "fuzz_ring: invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);          \
            abort();                                                                                           \
        }                                                                                                      \
    } while (0)

#define HEADER 32u

static uint32_t get32(const uint8_t *d, size_t n, size_t at)
{
    uint32_t v = 0;
    for (unsigned i = 0; i < 4; i++)
        if (at + i < n)
            v |= (uint32_t)d[at + i] << (8 * i);
    return v;
}

static bool inside(const uint8_t *p, uint32_t len, const uint8_t *base, uint32_t size)
{
    return p >= base && p <= base + size && len <= (uint32_t)(base + size - p);
}

static void parse_all(struct kmcl_ring_packet *pk, uint32_t limit)
{
    struct kmcl_ring_failure why = { 0 };
    const uint8_t *pl = kmcl_pkt_payload(pk);
    uint32_t pl_len = kmcl_pkt_payload_len(pk);
    CHECK(pl == pk->bytes + pk->data_offset && pl_len == pk->len - pk->data_offset);

    struct kmcl_pkt_inband in;
    status_t s = kmcl_pkt_parse_inband(pk, &in);
    CHECK(s == (pk->desc.type == KMCL_PKT_DATA_INBAND ? STATUS_OK : STATUS_INVALID_PARAMETER));
    s = kmcl_pkt_parse_completion(pk, &in);
    CHECK(s == (pk->desc.type == KMCL_PKT_COMPLETION ? STATUS_OK : STATUS_INVALID_PARAMETER));
    if (s == STATUS_OK)
        CHECK(in.payload == pl && in.payload_len == pl_len && in.trans_id == pk->desc.trans_id);

    /* Small and large storage: the parser must never write past max_*. */
    for (unsigned round = 0; round < 2; round++) {
        uint32_t max = round ? 64 : 2;
        struct kmcl_xfer_range *xr = malloc(max * sizeof *xr);
        struct kmcl_pkt_xfer x = { .ranges = xr, .max_ranges = max };
        s = kmcl_pkt_parse_xfer(pk, limit, &x, &why);
        if (pk->desc.type != KMCL_PKT_DATA_XFER_PAGES) {
            CHECK(s == STATUS_INVALID_PARAMETER);
        } else if (s == STATUS_BAD_DATA) {
            CHECK(why.reason != NULL);
        } else {
            CHECK(s == STATUS_OK || s == STATUS_NO_SPACE);
            CHECK((s == STATUS_NO_SPACE) == (x.range_count > max));
            CHECK(24 + (uint64_t)x.range_count * 8 <= pk->data_offset);
            for (uint32_t i = 0; i < x.range_count && i < max; i++)
                CHECK(!limit || (uint64_t)xr[i].byte_offset + xr[i].byte_count <= limit);
            CHECK(x.payload == pl && x.payload_len == pl_len);
        }
        free(xr);

        struct kmcl_gpa_range *gr = malloc(max * sizeof *gr);
        uint64_t *pfns = malloc(max * 2 * sizeof *pfns);
        struct kmcl_pkt_gpa g = { .ranges = gr, .max_ranges = max, .pfns = pfns, .max_pfns = max * 2 };
        s = kmcl_pkt_parse_gpa(pk, &g, &why);
        if (pk->desc.type != KMCL_PKT_DATA_GPA_DIRECT) {
            CHECK(s == STATUS_INVALID_PARAMETER);
        } else if (s == STATUS_BAD_DATA) {
            CHECK(why.reason != NULL);
        } else {
            CHECK(s == STATUS_OK || s == STATUS_NO_SPACE);
            CHECK((s == STATUS_NO_SPACE) == (g.range_count > max || g.pfn_total > max * 2));
            CHECK(24 + (uint64_t)g.range_count * 16 <= pk->data_offset);
            CHECK(24 + (uint64_t)g.range_count * 8 + (uint64_t)g.pfn_total * 8 <= pk->data_offset);
            uint64_t next = 0;
            for (uint32_t i = 0; i < g.range_count && i < max; i++) {
                CHECK(gr[i].byte_count > 0 && gr[i].byte_offset < KMCL_PAGE_SIZE);
                CHECK(gr[i].pfn_count == kmcl_pkt_gpa_pfn_count(gr[i].byte_offset, gr[i].byte_count));
                CHECK(gr[i].pfn_first == next);
                next += gr[i].pfn_count;
            }
            CHECK(next <= g.pfn_total);
        }
        free(gr);
        free(pfns);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    uint32_t size = 64 + 8 * ((uint32_t)(get32(d, n, 0) & 0xFFFF) % 1017);
    uint8_t opts = n > 2 ? d[2] : 0;
    uint8_t mutate_at = n > 3 ? d[3] : 0;
    uint32_t limit = (opts & 1) ? get32(d, n, 20) : 0;

    static struct kmcl_ring_control ctrl __attribute__((aligned(4096)));
    memset(&ctrl, 0, sizeof ctrl);
    ctrl.write_index = get32(d, n, 4);
    ctrl.read_index = get32(d, n, 8);
    ctrl.interrupt_mask = get32(d, n, 12);
    ctrl.pending_send_sz = get32(d, n, 16);
    uint8_t *data = malloc(size);
    memset(data, 0, size);
    if (n > HEADER)
        memcpy(data, d + HEADER, n - HEADER < size ? n - HEADER : size);
    uint8_t *bounce = malloc(size);

    struct kmcl_ring r;
    status_t s = kmcl_ring_attach(&r, KMCL_RING_READER, &ctrl, data, size, 0);
    if (s != STATUS_OK) {
        CHECK(s == STATUS_BAD_DATA && kmcl_ring_failure(&r) != NULL);
        CHECK(ctrl.write_index >= size || ctrl.read_index >= size || (ctrl.write_index & 7) || (ctrl.read_index & 7));
    } else {
        uint32_t start = ctrl.read_index; /* the reader publishes its index as it goes */
        uint32_t published = (ctrl.write_index + size - start) % size;
        CHECK(kmcl_ring_read_available(&r) == published);
        kmcl_ring_set_xfer_limit(&r, limit);
        uint64_t consumed = 0;
        unsigned packets = 0;
        bool more = true;
        for (unsigned rounds = 0; more && rounds < 2; rounds++) {
            kmcl_ring_begin_read(&r);
            struct kmcl_ring_packet pk;
            while ((s = kmcl_ring_peek(&r, &pk, (opts & 8) ? NULL : bounce, (opts & 8) ? 0 : size)) == STATUS_OK) {
                CHECK(pk.len >= 16 && pk.data_offset >= 16 && pk.data_offset <= pk.len);
                CHECK(pk.len + 8 <= published - consumed);
                CHECK(pk.ring_offset == (start + consumed) % size);
                if (pk.bounced)
                    CHECK(pk.bytes == bounce && pk.len <= size);
                else
                    CHECK(inside(pk.bytes, pk.len, data, size));
                CHECK(pk.desc.type >= 1 && pk.desc.type <= KMCL_PKT_TYPE_MAX);
                if ((opts & 2) && pk.len) {
                    /* The host changes a word of the packet after the reader checked it. */
                    uint32_t at = mutate_at % pk.len & ~3u;
                    uint32_t v = get32(d, n, 24);
                    uint8_t *p = (uint8_t *)pk.bytes + at; /* ring or bounce: both writable here */
                    memcpy(p, &v, at + 4 <= pk.len ? 4 : pk.len - at);
                }
                parse_all(&pk, limit);
                consumed += pk.len + 8;
                kmcl_ring_consume(&r);
                CHECK(++packets <= size / 24);
                if (packets % 3 == 0) {
                    bool signal_writer = kmcl_ring_publish_read(&r);
                    (void)signal_writer; /* no writer here to signal */
                }
            }
            if (s == STATUS_NO_SPACE) {
                CHECK(opts & 8); /* only without a bounce buffer */
                more = false;
            } else if (s == STATUS_BAD_DATA) {
                const struct kmcl_ring_failure *f = kmcl_ring_failure(&r);
                CHECK(f != NULL && f->reason != NULL && f->reason[0]);
                CHECK(kmcl_ring_peek(&r, &pk, bounce, size) == STATUS_BAD_DATA);
                more = false;
            } else {
                CHECK(s == STATUS_NOT_FOUND && consumed == published);
                bool sig;
                more = kmcl_ring_end_read(&r, &sig);
                CHECK(!more); /* nobody writes: nothing can race in */
            }
        }
        if (!kmcl_ring_failure(&r))
            CHECK(ctrl.read_index < size && (ctrl.read_index & 7) == 0); /* what we published */
    }

    if (opts & 4) {
        /* A writer on the same (possibly corrupt) control page: it writes or refuses, never
         * touches memory outside the ring. */
        struct kmcl_ring w;
        if (kmcl_ring_attach(&w, KMCL_RING_WRITER, &ctrl, data, size, 0) == STATUS_OK) {
            for (unsigned i = 0; i < 8; i++) {
                uint32_t len = get32(d, n, 32 + 4 * i) % (size + 64);
                bool sig;
                static const uint8_t source[8192];
                struct kmcl_iov iov = { source, len <= size ? len : size };
                s = kmcl_pkt_send_inband(&w, i, (uint16_t)i, &iov, 1, (i & 1) ? KMCL_RING_WRITE_DEFER : 0, &sig);
                CHECK(s == STATUS_OK || s == STATUS_NO_SPACE || s == STATUS_INVALID_PARAMETER || s == STATUS_BAD_DATA);
                if (s == STATUS_INVALID_PARAMETER)
                    CHECK(kmcl_ring_packet_bytes(0, iov.len) > size - 8);
            }
            bool signal_reader = kmcl_ring_flush(&w);
            (void)signal_reader;
            CHECK(ctrl.write_index < size && (ctrl.write_index & 7) == 0);
        }
    }
    free(data);
    free(bounce);
    return 0;
}
