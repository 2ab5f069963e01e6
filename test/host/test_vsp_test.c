/*
 * Unit tests for the test device's VSP (sim/vsp/vsp_test.h) behind hvsim's VMBus server.
 *
 * Each test builds an hvsim model over 32 MiB of guest RAM with the VMBus server on top (the default
 * devices; the test device served by an instance of its own, so the counters are the test's), and
 * plays the guest on the test thread with the shared fake guest (test/lib/fake_guest.h): the SynIC
 * set up through hvsim_wrmsr, channel messages posted with HvCallPostMessage and read from the
 * SINT's message slot, the rings allocated and initialised in guest RAM, and kmcl endpoints as the
 * GUEST side of both rings: a writer on the guest -> host ring and a reader on the host -> guest ring.
 * The guest signals the host with HvSignalEvent on the channel's connection id (or the monitor page)
 * when its writer or reader says so, and waits for the host's signal (the relid's SIEF bit) when it
 * has nothing to do: a lost signal on either side shows as a wait that times out, not as a slow pass
 * (the channels' when_full is FG_FULL_WAIT_SIGNAL).
 * Waits are bounded and generous (the suite also runs under ASan/UBSan and TSan).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hv/proto/hvdefs.h"
#include "hv/vmbus/proto/vmbus_proto.h"
#include "kmcl/core/packet.h"
#include "kmcl/core/ring.h"
#include "kmcl/core/xact.h"
#include "sim/hvsim.h"
#include "sim/vmbus_server.h"
#include "sim/vsp/vsp_test.h"
#include "test/lib/fake_guest.h"
#include "test/lib/test_util.h"

#define RAM_SIZE (32u << 20)
#define TEST_RELID 7 /* the test device on a fresh server (the 7th default device) */
#define SUB1_RELID 8 /* its sub-channels, offered when the primary opens */
#define SUB2_RELID 9

struct fixture {
    struct fake_guest fg;
    struct hvsim_vsp_test *vsp; /* NULL: the default table as is (the default instance) */
    struct hvsim_vmbus_device *devs;
    unsigned failed_lines;      /* log lines saying a ring failed (fg.lock) */
    char failed_line[REPORT_LEN];
};

static uint32_t round8(uint32_t n)
{
    return (n + 7u) & ~7u;
}

static uint32_t fnv1a(uint32_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * HVSIM_VSP_TEST_FNV_PRIME;
    return h;
}

/* ---- fixture ---- */

/* Each log line, fg.lock held: the ones saying a ring failed are counted. */
static void count_failed(void *ctx, const char *line)
{
    struct fixture *f = ctx;
    if (strstr(line, "ring failed")) {
        f->failed_lines++;
        snprintf(f->failed_line, sizeof f->failed_line, "%s", line);
    }
}

static unsigned failed_lines(struct fixture *f, char *last, size_t size)
{
    pthread_mutex_lock(&f->fg.lock);
    unsigned n = f->failed_lines;
    if (last)
        snprintf(last, size, "%s", f->failed_line);
    pthread_mutex_unlock(&f->fg.lock);
    return n;
}

static struct hvsim_vsp_test_stats vstats(struct fixture *f)
{
    struct hvsim_vsp_test_stats s;
    hvsim_vsp_test_get_stats(f->vsp, &s);
    return s;
}

static void fx_release(void *fixture)
{
    struct fixture *f = fixture;
    hvsim_vmbus_destroy(f->fg.vb); /* closes what is open: on_close for each */
    f->fg.vb = NULL;
    if (f->vsp) {
        struct hvsim_vsp_test_stats s;
        hvsim_vsp_test_get_stats(f->vsp, &s);
        if (s.channels != 0 || s.opens != s.closes || s.backlog != 0)
            fprintf(stderr, "vsp state left after the server's destruction: %llu channels, %llu opens, %llu closes\n",
                    (unsigned long long)s.channels, (unsigned long long)s.opens, (unsigned long long)s.closes);
        hvsim_vsp_test_destroy(f->vsp);
    }
    fg_destroy(&f->fg);
    free(f->devs);
}

/* A model (1 VP, SynIC on) and a server with the default devices, connected at 6.0 with the
 * offers taken. own_instance: the test device gets an instance of the test's own. */
static struct fixture *fx_new(uint32_t hazards, bool own_instance)
{
    struct fixture *f = fg_fixture_new(sizeof *f, fx_release);
    struct fg_config gc = { .hv = { .vp_count = 1 }, .ram_size = RAM_SIZE, .on_log = count_failed, .on_log_ctx = f };
    fg_init(&f->fg, &gc);
    fg_ready(&f->fg);

    struct hvsim_vmbus_config cfg = { .hazards = hazards };
    if (own_instance) {
        f->vsp = hvsim_vsp_test_create();
        assert_non_null(f->vsp);
        f->devs = fg_default_devices();
        f->devs[TEST_RELID - 1] = hvsim_vsp_test_device(f->vsp);
        assert_string_equal(f->devs[TEST_RELID - 1].name, "hvsim-test");
        assert_ptr_equal(f->devs[TEST_RELID - 1].ctx, f->vsp);
        cfg.devices = f->devs;
    } else {
        cfg.devices = hvsim_vmbus_default_devices;
    }
    cfg.device_count = hvsim_vmbus_default_device_count;
    fg_vmbus_start(&f->fg, &cfg);
    fg_connect(&f->fg, VMBUS_VERSION_COPPER);
    fg_request_offers(&f->fg);
    assert_int_equal(f->fg.offer_count, hvsim_vmbus_default_device_count);
    assert_non_null(fg_offer_of(&f->fg, TEST_RELID));
    return f;
}

/* ---- the test device's requests ---- */

static void tx_op(struct fixture *f, struct fg_channel *g, uint64_t trans, uint16_t flags, uint32_t op, fg_pkt_fn fn,
                  void *ctx)
{
    uint32_t words[2] = { op, 0 };
    fg_ch_inband(&f->fg, g, trans, flags, words, sizeof words, fn, ctx);
}

/* ECHO of `len` bytes on g, answer checked. */
static void echo_once(struct fixture *f, struct fg_channel *g, uint64_t trans, uint32_t len)
{
    uint8_t buf[256] = { 0 };
    assert_true(len >= 4 && len <= sizeof buf);
    uint32_t op = HVSIM_VSP_TEST_OP_ECHO;
    memcpy(buf, &op, 4);
    for (uint32_t k = 4; k < len; k++)
        buf[k] = (uint8_t)(trans * 3 + k);
    fg_ch_inband(&f->fg, g, trans, 0, buf, len, fg_no_pkt, NULL);
    struct fg_copy c = { 0 };
    fg_ch_one(&f->fg, g, &c);
    assert_int_equal(c.desc.type, KMCL_PKT_DATA_INBAND);
    assert_int_equal(c.desc.trans_id, trans);
    assert_int_equal(c.desc.flags, 0);
    assert_int_equal(c.len, round8(len));
    assert_memory_equal(c.payload, buf, len);
}

/* ---- tests ---- */

/* In-band echo of every size class from 8 to 4000 bytes through 4 KiB rings (each packet fills
 * most of a ring): thousands of wrap-arounds both ways, wrapped packets on both sides, and the
 * guest's writer waiting for the host to make room (pending_send_sz) while it reads the echoes. */
#define ECHO_COUNT 2000u

struct echo_check {
    unsigned received;
    uint64_t bytes;
};

static uint32_t echo_size(unsigned i)
{
    return 8u + (i * 997u) % 3993u; /* 8 .. 4000 */
}

static void echo_fill(uint8_t *buf, unsigned i, uint32_t len)
{
    uint32_t head[2] = { HVSIM_VSP_TEST_OP_ECHO, i };
    memcpy(buf, head, sizeof head);
    for (uint32_t k = sizeof head; k < len; k++)
        buf[k] = (uint8_t)(i * 7u + k);
}

static void echo_check_pkt(void *ctx, const struct kmcl_ring_packet *p)
{
    struct echo_check *e = ctx;
    unsigned i = e->received++;
    uint32_t len = echo_size(i);
    static uint8_t want[4096];
    echo_fill(want, i, len);
    assert_int_equal(p->desc.type, KMCL_PKT_DATA_INBAND);
    assert_int_equal(p->desc.trans_id, 1000000u + i);
    assert_int_equal(p->desc.flags, 0);
    assert_int_equal(kmcl_pkt_payload_len(p), round8(len));
    assert_memory_equal(kmcl_pkt_payload(p), want, len);
    for (uint32_t k = len; k < round8(len); k++)
        assert_int_equal(kmcl_pkt_payload(p)[k], 0); /* the writer's padding */
    e->bytes += p->len;
}

static void test_echo_sizes_wrap(void **state)
{
    (void)state;
    struct fixture *f = fx_new(0, true);
    struct fg_channel g;
    fg_ch_open(&f->fg, &g, TEST_RELID, 2, 2); /* 4 KiB of data each way */
    struct echo_check e = { 0 };
    static uint8_t buf[4096];
    for (unsigned i = 0; i < ECHO_COUNT; i++) {
        uint32_t len = echo_size(i);
        echo_fill(buf, i, len);
        fg_ch_inband(&f->fg, &g, 1000000u + i, 0, buf, len, echo_check_pkt, &e);
    }
    while (e.received < ECHO_COUNT)
        if (!fg_ch_more(&f->fg, &g, echo_check_pkt, &e))
            fail_msg("echo %u of %u did not come", e.received, ECHO_COUNT);
    fg_ch_expect_none(&f->fg, &g);
    assert_true(e.bytes / 4096 > 500); /* that many laps of the host -> guest ring */
    assert_true(g.bounced > 100);      /* wrapped packets read through the guest's bounce buffer */
    struct hvsim_vsp_test_stats s = vstats(f);
    assert_int_equal(s.echoes, ECHO_COUNT);
    assert_int_equal(s.packets_in[KMCL_PKT_DATA_INBAND], ECHO_COUNT);
    assert_int_equal(s.packets_out[KMCL_PKT_DATA_INBAND], ECHO_COUNT);
    assert_int_equal(s.failures, 0);
    assert_int_equal(s.too_big, 0);
    assert_int_equal(s.channels, 1);
    assert_true(s.signals_out > 0);
    assert_int_equal(failed_lines(f, NULL, 0), 0);
    fg_ch_free(&g);
}

/* Completions: ECHO_COMPLETION with the flag gets a completion with its trans_id and payload;
 * without it, nothing; ECHO with the flag gets the echo, then the completion. The ids come from a
 * kmcl transaction table, so a wrong or duplicated trans_id fails kmcl_xact_complete. */
struct xact_check {
    struct kmcl_xact_table t;
    unsigned completions, echoes;
    uint64_t last_echo; /* trans_id of the last echo, whose completion must follow it */
};

static void xact_pkt(void *ctx, const struct kmcl_ring_packet *p)
{
    struct xact_check *x = ctx;
    uint32_t words[2];
    assert_true(kmcl_pkt_payload_len(p) >= sizeof words);
    memcpy(words, kmcl_pkt_payload(p), sizeof words);
    void *context;
    if (p->desc.type == KMCL_PKT_DATA_INBAND) {
        assert_int_equal(words[0], HVSIM_VSP_TEST_OP_ECHO);
        assert_int_equal(kmcl_xact_lookup(&x->t, p->desc.trans_id, &context), STATUS_OK);
        assert_int_equal((uintptr_t)context, words[1]);
        x->echoes++;
        x->last_echo = p->desc.trans_id;
        return;
    }
    assert_int_equal(p->desc.type, KMCL_PKT_COMPLETION);
    if (words[0] == HVSIM_VSP_TEST_OP_ECHO) {
        assert_int_equal(p->desc.trans_id, x->last_echo); /* right after its echo */
        x->last_echo = 0;
    } else {
        assert_int_equal(words[0], HVSIM_VSP_TEST_OP_ECHO_COMPLETION);
    }
    assert_int_equal(kmcl_xact_complete(&x->t, p->desc.trans_id, &context), STATUS_OK);
    assert_int_equal((uintptr_t)context, words[1]); /* the request's own payload */
    x->completions++;
}

static void test_completion_echo(void **state)
{
    (void)state;
    struct fixture *f = fx_new(0, true);
    struct fg_channel g;
    fg_ch_open(&f->fg, &g, TEST_RELID, 8, 2); /* room for every request; 4 KiB for the answers */
    struct kmcl_xact_slot slots[32];
    struct xact_check x = { 0 };
    assert_int_equal(kmcl_xact_init(&x.t, slots, 32), STATUS_OK);
    unsigned want_completions = 0, want_echoes = 0, unrequested = 0;
    for (uint32_t i = 1; i <= 300; i++) {
        uint32_t kind = i % 3;
        /* 400 bytes: the answers of the 32 requests the guest sends before it reads (its
         * transaction table is full) need several times the 4 KiB ring: the host waits for room. */
        uint32_t words[100] = { kind == 1 ? HVSIM_VSP_TEST_OP_ECHO : HVSIM_VSP_TEST_OP_ECHO_COMPLETION, i, ~i, i * 5 };
        if (kind == 2) { /* no completion asked: dropped */
            fg_ch_inband(&f->fg, &g, 0xabc00000u + i, 0, words, sizeof words, xact_pkt, &x);
            unrequested++;
            continue;
        }
        uint64_t id;
        while (kmcl_xact_alloc(&x.t, (void *)(uintptr_t)i, &id) == STATUS_NO_SPACE) { /* wait for completions */
            fg_flush(&f->fg); /* the host has taken what it can: its ring is full of answers, the rest queued */
            assert_true(fg_ch_more(&f->fg, &g, xact_pkt, &x));
        }
        fg_ch_inband(&f->fg, &g, id, KMCL_PKT_FLAG_COMPLETION_REQUESTED, words, sizeof words, xact_pkt, &x);
        want_completions++;
        want_echoes += kind == 1;
    }
    while (kmcl_xact_outstanding(&x.t))
        if (!fg_ch_more(&f->fg, &g, xact_pkt, &x))
            fail_msg("%u completions outstanding", kmcl_xact_outstanding(&x.t));
    fg_ch_expect_none(&f->fg, &g);
    assert_int_equal(x.completions, want_completions);
    assert_int_equal(x.echoes, want_echoes);
    struct hvsim_vsp_test_stats s = vstats(f);
    assert_int_equal(s.completions_out, want_completions);
    assert_int_equal(s.packets_out[KMCL_PKT_COMPLETION], want_completions);
    assert_int_equal(s.echoes, want_echoes);
    assert_int_equal(s.completion_unrequested, unrequested);
    assert_int_equal(s.packets_in[KMCL_PKT_DATA_INBAND], 300);
    assert_true(s.ring_full > 0);

    /* An echo that fits the ring with room for its completion only once the guest has read it:
     * the host stops between the two and, on the guest's signal, sends the completion, not the
     * echo again. */
    static uint8_t big[2500];
    uint32_t op = HVSIM_VSP_TEST_OP_ECHO;
    memcpy(big, &op, sizeof op);
    fg_ch_inband(&f->fg, &g, 0xb16, KMCL_PKT_FLAG_COMPLETION_REQUESTED, big, sizeof big, fg_no_pkt, NULL);
    fg_flush(&f->fg);
    uint64_t full_before = s.ring_full;
    s = vstats(f);
    assert_int_equal(s.ring_full, full_before + 1);
    assert_int_equal(s.echoes, want_echoes + 1);
    struct fg_copy c = { 0 };
    fg_ch_one(&f->fg, &g, &c);
    assert_int_equal(c.desc.type, KMCL_PKT_DATA_INBAND);
    assert_int_equal(c.desc.trans_id, 0xb16);
    assert_int_equal(c.len, round8(sizeof big));
    fg_ch_one(&f->fg, &g, &c);
    assert_int_equal(c.desc.type, KMCL_PKT_COMPLETION);
    assert_int_equal(c.desc.trans_id, 0xb16);
    assert_memory_equal(c.payload, big, sizeof big);
    fg_ch_expect_none(&f->fg, &g);
    s = vstats(f);
    assert_int_equal(s.echoes, want_echoes + 1);
    assert_int_equal(s.completions_out, want_completions + 1);
    assert_int_equal(s.packets_in[KMCL_PKT_DATA_INBAND], 301);
    fg_ch_free(&g);
}

/* SEND_N of 10,000 packets into a 4 KiB ring whose reader takes a few packets at a time: the host
 * stops each time the ring is full and resumes on the guest's signal (pending_send_sz). The
 * completion comes after the last packet, and an ECHO sent behind the SEND_N after that. */
#define SEND_N_COUNT 10000u
#define SEND_N_SIZE 100u

struct send_n_check {
    uint32_t next_seq;
    bool completed, echoed;
};

static void send_n_pkt(void *ctx, const struct kmcl_ring_packet *p)
{
    struct send_n_check *c = ctx;
    const uint8_t *b = kmcl_pkt_payload(p);
    if (p->desc.type == KMCL_PKT_COMPLETION) {
        assert_false(c->completed);
        assert_int_equal(c->next_seq, SEND_N_COUNT);
        assert_int_equal(p->desc.trans_id, 0x5e4du);
        struct hvsim_vsp_test_send_n_result r;
        assert_int_equal(kmcl_pkt_payload_len(p), round8(sizeof r));
        memcpy(&r, b, sizeof r);
        assert_int_equal(r.status, HVSIM_VSP_TEST_STATUS_OK);
        assert_int_equal(r.count, SEND_N_COUNT);
        c->completed = true;
        return;
    }
    assert_int_equal(p->desc.type, KMCL_PKT_DATA_INBAND);
    if (p->desc.trans_id == 0xec0u) {
        assert_true(c->completed); /* answers keep their order */
        c->echoed = true;
        return;
    }
    assert_int_equal(p->desc.trans_id, 0x5e4du);
    assert_int_equal(kmcl_pkt_payload_len(p), round8(SEND_N_SIZE));
    struct hvsim_vsp_test_data_header h;
    memcpy(&h, b, sizeof h);
    assert_int_equal(h.op, HVSIM_VSP_TEST_OP_DATA);
    assert_int_equal(h.seq, c->next_seq);
    for (uint32_t k = sizeof h; k < SEND_N_SIZE; k++)
        if (b[k] != (uint8_t)(h.seq + k))
            fail_msg("seq %u byte %u: 0x%02x", h.seq, k, b[k]);
    c->next_seq++;
}

static void test_send_n_backpressure(void **state)
{
    (void)state;
    struct fixture *f = fx_new(0, true);
    struct fg_channel g;
    fg_ch_open(&f->fg, &g, TEST_RELID, 2, 2);
    struct send_n_check c = { 0 };
    struct hvsim_vsp_test_send_n req = { .op = HVSIM_VSP_TEST_OP_SEND_N, .count = SEND_N_COUNT, .size = SEND_N_SIZE };
    fg_ch_inband(&f->fg, &g, 0x5e4du, KMCL_PKT_FLAG_COMPLETION_REQUESTED, &req, sizeof req, send_n_pkt, &c);
    tx_op(f, &g, 0xec0u, 0, HVSIM_VSP_TEST_OP_ECHO, send_n_pkt, &c);
    uint32_t peak_backlog = 0;
    while (!c.echoed) {
        unsigned n = fg_ch_drain(&f->fg, &g, 7, send_n_pkt, &c); /* a slow reader: 7 packets, then a pause */
        if (n) {
            if (c.next_seq % 1000 < 7) {
                uint64_t b = vstats(f).backlog;
                peak_backlog = b > peak_backlog ? (uint32_t)b : peak_backlog;
            }
            sleep_us(5);
            continue;
        }
        if (!fg_wait_signal(&f->fg, g.relid, FG_WAIT_MS)) { /* strict: a lost signal fails */
            fg_dump_logs(&f->fg);
            fail_msg("SEND_N stalled at seq %u: no signal for %d ms", c.next_seq, FG_WAIT_MS);
        }
    }
    fg_ch_expect_none(&f->fg, &g);
    assert_int_equal(c.next_seq, SEND_N_COUNT);
    struct hvsim_vsp_test_stats s = vstats(f);
    assert_int_equal(s.send_n_requests, 1);
    assert_int_equal(s.send_n_packets, SEND_N_COUNT);
    assert_int_equal(s.backlog, 0);
    assert_true(peak_backlog > 0);
    assert_true(s.ring_full > 10); /* it really waited for room, many times */
    assert_int_equal(s.packets_out[KMCL_PKT_DATA_INBAND], SEND_N_COUNT + 1);
    assert_int_equal(s.packets_out[KMCL_PKT_COMPLETION], 1);
    assert_int_equal(s.failures, 0);
    fg_ch_free(&g);
}

/* GPA direct: the checksum of a buffer of several pages in two ranges, a range outside RAM, a pfn
 * whose address overflows, and a request without the completion flag (no answer). */
static void test_gpa_checksum(void **state)
{
    (void)state;
    struct fixture *f = fx_new(0, true);
    struct fg_channel g;
    fg_ch_open(&f->fg, &g, TEST_RELID, 4, 2);
    uint64_t buf = fg_alloc_pages(&f->fg, 6);
    struct rng r;
    rng_seed(&r, 42);
    for (uint32_t i = 0; i < 6 * 4096; i++)
        f->fg.ram[buf + i] = (uint8_t)rng_next(&r);
    /* Range 1: 12,788 bytes from offset 100 of page 0 (4 pages); range 2: 1 byte at page 5's end;
     * the pages of range 1 given out of order to check that they are followed as listed. */
    uint64_t pfn1[4] = { (buf >> 12) + 0, (buf >> 12) + 2, (buf >> 12) + 1, (buf >> 12) + 3 };
    uint64_t pfn2[1] = { (buf >> 12) + 5 };
    struct kmcl_page_range ranges[2] = { { .byte_count = 3 * 4096 + 500, .byte_offset = 100, .pfns = pfn1 },
                                         { .byte_count = 1, .byte_offset = 4095, .pfns = pfn2 } };
    uint32_t want = HVSIM_VSP_TEST_FNV_BASIS;
    want = fnv1a(want, f->fg.ram + buf + 100, 4096 - 100);
    want = fnv1a(want, f->fg.ram + buf + 2 * 4096, 4096);
    want = fnv1a(want, f->fg.ram + buf + 1 * 4096, 4096);
    want = fnv1a(want, f->fg.ram + buf + 3 * 4096, 500 + 100);
    want = fnv1a(want, f->fg.ram + buf + 5 * 4096 + 4095, 1);
    uint32_t tag = 0x77;
    struct kmcl_iov payload = { .base = &tag, .len = sizeof tag };
    bool signal = false;
    assert_int_equal(kmcl_pkt_send_gpa_direct(&g.tx, 0x9a0, KMCL_PKT_FLAG_COMPLETION_REQUESTED, ranges, 2, &payload,
                                              1, 0, &signal),
                     STATUS_OK);
    if (signal)
        fg_guest_signal(&f->fg, g.relid);
    struct fg_copy c = { 0 };
    fg_ch_one(&f->fg, &g, &c);
    assert_int_equal(c.desc.type, KMCL_PKT_COMPLETION);
    assert_int_equal(c.desc.trans_id, 0x9a0);
    struct hvsim_vsp_test_gpa_result res;
    assert_int_equal(c.len, round8(sizeof res));
    memcpy(&res, c.payload, sizeof res);
    assert_int_equal(res.status, HVSIM_VSP_TEST_STATUS_OK);
    assert_int_equal(res.byte_count, 3 * 4096 + 500 + 1);
    assert_int_equal(res.checksum, want);

    /* A page past the end of RAM, and one whose address overflows 64 bits. */
    uint64_t bad[2] = { RAM_SIZE / 4096 + 10, 1ull << 60 };
    for (int i = 0; i < 2; i++) {
        struct kmcl_page_range br[2] = { ranges[1], { .byte_count = 64, .byte_offset = 0, .pfns = &bad[i] } };
        assert_int_equal(kmcl_pkt_send_gpa_direct(&g.tx, 0x9b0 + i, KMCL_PKT_FLAG_COMPLETION_REQUESTED, br, 2, NULL, 0,
                                                  0, &signal),
                         STATUS_OK);
        if (signal)
            fg_guest_signal(&f->fg, g.relid);
        fg_ch_one(&f->fg, &g, &c);
        assert_int_equal(c.desc.type, KMCL_PKT_COMPLETION);
        assert_int_equal(c.desc.trans_id, 0x9b0 + i);
        memcpy(&res, c.payload, sizeof res);
        assert_int_equal(res.status, HVSIM_VSP_TEST_STATUS_BAD_RANGE);
        assert_int_equal(res.byte_count, 0);
        assert_int_equal(res.checksum, 0);
    }
    /* Without the flag: checksummed, no answer. */
    assert_int_equal(kmcl_pkt_send_gpa_direct(&g.tx, 0x9c0, 0, ranges, 1, NULL, 0, 0, &signal), STATUS_OK);
    if (signal)
        fg_guest_signal(&f->fg, g.relid);
    fg_ch_expect_none(&f->fg, &g);
    struct hvsim_vsp_test_stats s = vstats(f);
    assert_int_equal(s.packets_in[KMCL_PKT_DATA_GPA_DIRECT], 4);
    assert_int_equal(s.gpa_requests, 4);
    assert_int_equal(s.gpa_bad_ranges, 2);
    assert_int_equal(s.gpa_bytes, (3 * 4096 + 500 + 1) + (3 * 4096 + 500));
    assert_int_equal(s.completions_out, 3);
    assert_int_equal(s.failures, 0);
    fg_ch_free(&g);
}

/* SIGNAL_ONLY: a signal, no packet. A guest signal with nothing in the ring: answered by a signal,
 * through HvSignalEvent and through the monitor page (the raw-VMBus probe's check). */
static void test_signal_only_and_idle(void **state)
{
    (void)state;
    struct fixture *f = fx_new(0, true);
    struct fg_channel g;
    fg_ch_open(&f->fg, &g, TEST_RELID, 2, 2);
    fg_flush(&f->fg);
    (void)fg_take_signal(&f->fg, g.relid);
    tx_op(f, &g, 0x51, 0, HVSIM_VSP_TEST_OP_SIGNAL_ONLY, fg_no_pkt, NULL);
    assert_true(fg_wait_signal(&f->fg, g.relid, FG_WAIT_MS));
    fg_ch_expect_none(&f->fg, &g);
    struct hvsim_vsp_test_stats s = vstats(f);
    assert_int_equal(s.signal_only, 1);
    assert_int_equal(s.idle_signals, 0);
    assert_false(fg_take_signal(&f->fg, g.relid)); /* exactly one */

    fg_guest_signal(&f->fg, g.relid); /* nothing in the ring */
    assert_true(fg_wait_signal(&f->fg, g.relid, FG_WAIT_MS));
    assert_int_equal(vstats(f).idle_signals, 1);

    /* The monitor page: the test device is monitored. */
    const struct vmbus_msg_offer_channel *o = fg_offer_of(&f->fg, TEST_RELID);
    assert_int_equal(o->monitor_allocated & 1, 1);
    uint32_t *pending = (uint32_t *)(f->fg.ram + FG_MON2_GPA + offsetof(struct vmbus_monitor_page, trigger_group) +
                                     (o->monitor_id / 32) * sizeof(struct vmbus_monitor_trigger_group) +
                                     offsetof(struct vmbus_monitor_trigger_group, pending));
    __atomic_fetch_or(pending, 1u << (o->monitor_id % 32), __ATOMIC_SEQ_CST);
    assert_true(fg_wait_signal(&f->fg, g.relid, FG_WAIT_MS));
    fg_flush(&f->fg);
    assert_int_equal(vstats(f).idle_signals, 2);
    fg_ch_expect_none(&f->fg, &g);
    fg_ch_free(&g);
}

/* Unknown opcodes, transfer-page packets and malformed requests: counted, refused with a status
 * completion when one was asked for (every packet is completed), nothing else; the channel keeps
 * working. */
static void test_unknown_and_bad_requests(void **state)
{
    (void)state;
    struct fixture *f = fx_new(0, true);
    struct fg_channel g;
    fg_ch_open(&f->fg, &g, TEST_RELID, 2, 2);
    struct {
        uint64_t trans;
        uint32_t status;
    } refusals[] = { { 1, HVSIM_VSP_TEST_STATUS_UNKNOWN_OPCODE }, { 3, HVSIM_VSP_TEST_STATUS_BAD_REQUEST },
                     { 6, HVSIM_VSP_TEST_STATUS_BAD_REQUEST } };
    tx_op(f, &g, 1, KMCL_PKT_FLAG_COMPLETION_REQUESTED, 99, fg_no_pkt, NULL);  /* unknown opcode */
    tx_op(f, &g, 2, 0, 0, fg_no_pkt, NULL);                                    /* opcode 0, no flag */
    fg_ch_inband(&f->fg, &g, 3, KMCL_PKT_FLAG_COMPLETION_REQUESTED, NULL, 0, fg_no_pkt, NULL); /* no opcode */
    uint32_t short_send_n[2] = { HVSIM_VSP_TEST_OP_SEND_N, 5 };             /* no size, no flag */
    fg_ch_inband(&f->fg, &g, 4, 0, short_send_n, sizeof short_send_n, fg_no_pkt, NULL);
    uint32_t done = 0;
    struct kmcl_iov iov = { .base = &done, .len = sizeof done };
    struct kmcl_xfer_range xr = { .byte_count = 8, .byte_offset = 0 };
    bool signal = false;
    assert_int_equal(kmcl_pkt_send_xfer(&g.tx, 5, 0, 1, 0, &xr, 1, &iov, 1, 0, &signal), STATUS_OK); /* type 7 */
    if (signal)
        fg_guest_signal(&f->fg, g.relid);
    assert_int_equal(kmcl_pkt_send_xfer(&g.tx, 6, KMCL_PKT_FLAG_COMPLETION_REQUESTED, 1, 0, &xr, 1, &iov, 1, 0,
                                        &signal),
                     STATUS_OK);
    if (signal)
        fg_guest_signal(&f->fg, g.relid);
    for (unsigned i = 0; i < sizeof refusals / sizeof refusals[0]; i++) {
        struct fg_copy c = { 0 };
        fg_ch_one(&f->fg, &g, &c);
        assert_int_equal(c.desc.type, KMCL_PKT_COMPLETION);
        assert_int_equal(c.desc.trans_id, refusals[i].trans);
        uint32_t status;
        assert_true(c.len >= sizeof status);
        memcpy(&status, c.payload, sizeof status);
        assert_int_equal(status, refusals[i].status);
    }
    fg_ch_expect_none(&f->fg, &g);
    /* SEND_N with sizes that cannot be sent: no packets; with the flag, a BAD_REQUEST completion. */
    struct hvsim_vsp_test_send_n bad_sizes[3] = { { HVSIM_VSP_TEST_OP_SEND_N, 3, 4 },
                                                  { HVSIM_VSP_TEST_OP_SEND_N, 3, 4096 },
                                                  { HVSIM_VSP_TEST_OP_SEND_N, 3, 0xFFFFFFFFu } };
    for (int i = 0; i < 3; i++) {
        fg_ch_inband(&f->fg, &g, 10 + i, KMCL_PKT_FLAG_COMPLETION_REQUESTED, &bad_sizes[i], sizeof bad_sizes[i],
                     fg_no_pkt, NULL);
        struct fg_copy c = { 0 };
        fg_ch_one(&f->fg, &g, &c);
        assert_int_equal(c.desc.type, KMCL_PKT_COMPLETION);
        assert_int_equal(c.desc.trans_id, 10 + i);
        struct hvsim_vsp_test_send_n_result r;
        memcpy(&r, c.payload, sizeof r);
        assert_int_equal(r.status, HVSIM_VSP_TEST_STATUS_BAD_REQUEST);
        assert_int_equal(r.count, 0);
    }
    /* The largest size this 4 KiB ring takes works (4096 - 8 free - 16 descriptor - 8 trailer). */
    struct hvsim_vsp_test_send_n big = { HVSIM_VSP_TEST_OP_SEND_N, 2, 4064 };
    fg_ch_inband(&f->fg, &g, 20, 0, &big, sizeof big, fg_no_pkt, NULL);
    struct fg_copy c = { 0 };
    fg_ch_one(&f->fg, &g, &c);
    fg_ch_one(&f->fg, &g, &c);
    assert_int_equal(c.count, 2);
    assert_int_equal(c.len, 4064);
    echo_once(f, &g, 30, 24);
    fg_ch_expect_none(&f->fg, &g);
    struct hvsim_vsp_test_stats s = vstats(f);
    assert_int_equal(s.unknown_opcodes, 2);
    assert_int_equal(s.bad_requests, 2 + 3);
    assert_int_equal(s.unknown_types, 2);
    assert_int_equal(s.packets_in[KMCL_PKT_DATA_XFER_PAGES], 2);
    assert_int_equal(s.send_n_requests, 4);
    assert_int_equal(s.send_n_packets, 2);
    assert_int_equal(s.failures, 0);
    assert_int_equal(failed_lines(f, NULL, 0), 0);
    fg_ch_free(&g);
}

/* Packets that get no answer (ECHO_COMPLETION and unknown opcodes without the completion flag),
 * many times the guest -> host ring. The guest writes deferred (KMCL_RING_WRITE_DEFER): nothing is published, so the host
 * does not run, until the ring is full; then kmcl publishes the batch, asks for room
 * (pending_send_sz) and says to signal. Each round the host drains the ring and only its "room
 * again" signal wakes the guest: a host that forgets it fails here. */
static void test_flood_without_answers(void **state)
{
    (void)state;
    struct fixture *f = fx_new(0, true);
    struct fg_channel g;
    fg_ch_open(&f->fg, &g, TEST_RELID, 2, 2);
    static uint8_t body[400];
    unsigned waits = 0;
    for (uint32_t i = 0; i < 2000; i++) {
        uint32_t op = i % 2 ? 1000 + i : HVSIM_VSP_TEST_OP_ECHO_COMPLETION;
        memcpy(body, &op, sizeof op);
        struct kmcl_iov iov = { .base = body, .len = 8 + (i * 56) % sizeof body };
        struct kmcl_ring_out out = { .type = KMCL_PKT_DATA_INBAND, .trans_id = i, .iov = &iov, .iov_count = 1 };
        for (;;) {
            bool signal = false;
            status_t st = kmcl_ring_write(&g.tx, &out, KMCL_RING_WRITE_DEFER, &signal);
            if (signal)
                fg_guest_signal(&f->fg, g.relid);
            if (st == STATUS_OK)
                break;
            assert_int_equal(st, STATUS_NO_SPACE);
            waits++;
            if (!fg_wait_signal(&f->fg, g.relid, FG_WAIT_MS)) {
                fg_dump_logs(&f->fg);
                fail_msg("packet %u: no \"room again\" signal from the host for %d ms", i, FG_WAIT_MS);
            }
        }
    }
    if (kmcl_ring_flush(&g.tx))
        fg_guest_signal(&f->fg, g.relid);
    fg_ch_expect_none(&f->fg, &g);
    assert_true(waits > 50); /* about 460 KB through a 4 KiB ring */
    struct hvsim_vsp_test_stats s = vstats(f);
    assert_int_equal(s.completion_unrequested, 1000);
    assert_int_equal(s.unknown_opcodes, 1000);
    assert_int_equal(s.packets_out[KMCL_PKT_DATA_INBAND] + s.packets_out[KMCL_PKT_COMPLETION], 0);
    assert_true(s.signals_out >= waits);
    fg_ch_free(&g);
}

/* HVSIM_VMBUS_SEND_ON_OPEN: a HELLO is in the ring when the open result arrives (primary and
 * sub-channel), the channel is signalled, and the channel works as usual afterwards. */
static void test_send_on_open(void **state)
{
    (void)state;
    struct fixture *f = fx_new(HVSIM_VMBUS_SEND_ON_OPEN, true);
    struct fg_channel g[2];
    uint32_t relids[2] = { TEST_RELID, SUB1_RELID };
    for (int i = 0; i < 2; i++) {
        if (i)
            fg_wait_offer(&f->fg, relids[i]);
        fg_ch_open(&f->fg, &g[i], relids[i], 2, 2);
        /* Right at the open result, before any signal or read of ours: the packet is there. */
        assert_true(kmcl_ring_read_available(&g[i].rx) > 0);
        assert_true(fg_wait_signal(&f->fg, relids[i], FG_WAIT_MS)); /* the server's signal after the result */
        struct fg_copy c = { 0 };
        fg_ch_one(&f->fg, &g[i], &c);
        assert_int_equal(c.desc.type, KMCL_PKT_DATA_INBAND);
        assert_int_equal(c.desc.trans_id, 0);
        struct hvsim_vsp_test_hello h;
        assert_int_equal(c.len, sizeof h);
        memcpy(&h, c.payload, sizeof h);
        assert_int_equal(h.op, HVSIM_VSP_TEST_OP_HELLO);
        assert_int_equal(h.relid, relids[i]);
    }
    echo_once(f, &g[0], 1, 16);
    echo_once(f, &g[1], 2, 200);
    fg_ch_expect_none(&f->fg, &g[0]);
    fg_ch_expect_none(&f->fg, &g[1]);
    assert_int_equal(vstats(f).hellos, 2);
    fg_ch_free(&g[0]);
    fg_ch_free(&g[1]);
}

/* Hostile rings: each failure is one log line, the channel is no longer served (no answers, no
 * signals), the others go on, nothing crashes. (a) the guest -> host write index outside the data
 * area; (b) a packet whose length exceeds what was published; (c) indices already bad at open;
 * (d) a bad read index in the host -> guest ring, found when the host waits for room. */
static void test_garbage_rings_fail(void **state)
{
    (void)state;
    struct fixture *f = fx_new(0, true);
    struct fg_channel a, b, c, d;
    char line[REPORT_LEN];
    fg_ch_open(&f->fg, &a, TEST_RELID, 2, 2);
    fg_wait_offer(&f->fg, SUB1_RELID);
    fg_wait_offer(&f->fg, SUB2_RELID);
    fg_ch_open(&f->fg, &b, SUB1_RELID, 2, 2);

    /* (a) */
    echo_once(f, &a, 1, 8);
    __atomic_store_n(&fg_ch_tx_control(&f->fg, &a)->write_index, 0x7ffffff8u, __ATOMIC_RELEASE);
    fg_guest_signal(&f->fg, a.relid);
    fg_flush(&f->fg);
    assert_int_equal(failed_lines(f, line, sizeof line), 1);
    assert_non_null(strstr(line, "hvsim-test relid 7: guest -> host ring failed: write index outside the data area"));
    assert_non_null(strstr(line, "channel no longer served"));
    (void)fg_take_signal(&f->fg, a.relid);
    fg_guest_signal(&f->fg, a.relid); /* no idle answer from a failed channel */
    fg_flush(&f->fg);
    assert_false(fg_take_signal(&f->fg, a.relid));
    assert_int_equal(vstats(f).failures, 1);

    /* (b): written deferred, then its length made to exceed the ring's contents, then published. */
    echo_once(f, &b, 2, 8);
    uint32_t words[2] = { HVSIM_VSP_TEST_OP_ECHO, 0 };
    bool signal = false;
    uint32_t at = b.tx.pos;
    assert_int_equal(kmcl_ring_write_buf(&b.tx, KMCL_PKT_DATA_INBAND, 0, 3, words, sizeof words, KMCL_RING_WRITE_DEFER,
                                         &signal),
                     STATUS_OK);
    struct kmcl_pkt_desc *desc = (struct kmcl_pkt_desc *)(f->fg.ram + b.gpa + 4096 + at);
    desc->len8 = 200;
    if (kmcl_ring_flush(&b.tx))
        fg_guest_signal(&f->fg, b.relid);
    fg_flush(&f->fg);
    assert_int_equal(failed_lines(f, line, sizeof line), 2);
    assert_non_null(strstr(line, "relid 8: guest -> host ring failed: packet length"));
    fg_ch_expect_none(&f->fg, &b);

    /* (c) */
    fg_ch_rings(&f->fg, &c, SUB2_RELID, 2, 2);
    __atomic_store_n(&fg_ch_tx_control(&f->fg, &c)->read_index, 13u, __ATOMIC_RELEASE);
    fg_ch_open_rings(&f->fg, &c);
    fg_flush(&f->fg);
    assert_int_equal(failed_lines(f, line, sizeof line), 3);
    assert_non_null(strstr(line, "relid 9: guest -> host ring failed: read index"));
    fg_guest_signal(&f->fg, c.relid);
    fg_ch_expect_none(&f->fg, &c);

    /* (d): the same relid again, fresh rings; the host fills the guest's ring and waits. */
    fg_ch_close(&f->fg, &c);
    fg_ch_free(&c);
    fg_ch_open(&f->fg, &d, SUB2_RELID, 2, 2);
    struct hvsim_vsp_test_send_n req = { HVSIM_VSP_TEST_OP_SEND_N, 1000, 1000 };
    fg_ch_inband(&f->fg, &d, 4, 0, &req, sizeof req, fg_no_pkt, NULL);
    fg_flush(&f->fg);
    struct hvsim_vsp_test_stats s = vstats(f);
    assert_true(s.backlog > 900);
    __atomic_store_n(&fg_ch_rx_control(&f->fg, &d)->read_index, 5u, __ATOMIC_RELEASE);
    fg_guest_signal(&f->fg, d.relid);
    fg_flush(&f->fg);
    assert_int_equal(failed_lines(f, line, sizeof line), 4);
    assert_non_null(strstr(line, "relid 9: host -> guest ring failed: read index"));
    /* Its guest -> host ring is still sound, but a failed channel is not read any more. */
    (void)fg_take_signal(&f->fg, d.relid);
    uint64_t inband_before = vstats(f).packets_in[KMCL_PKT_DATA_INBAND];
    tx_op(f, &d, 5, 0, HVSIM_VSP_TEST_OP_SIGNAL_ONLY, fg_no_pkt, NULL);
    fg_flush(&f->fg);
    assert_false(fg_take_signal(&f->fg, d.relid));
    s = vstats(f);
    assert_int_equal(s.packets_in[KMCL_PKT_DATA_INBAND], inband_before);
    assert_int_equal(s.failures, 4);
    assert_int_equal(s.backlog, 0); /* the batch of a failed channel is dropped */
    assert_true(s.backlog_dropped > 900);
    assert_int_equal(s.channels, 3);
    fg_ch_free(&a);
    fg_ch_free(&b);
    fg_ch_free(&d);
}

/* A channel closed while a SEND_N batch is owed and requests wait behind it: the state goes at
 * on_close (batch counted as dropped), and the relid opened again on fresh rings starts clean. */
static void test_close_with_backlog(void **state)
{
    (void)state;
    struct fixture *f = fx_new(0, true);
    struct fg_channel g;
    fg_ch_open(&f->fg, &g, TEST_RELID, 2, 2);
    struct hvsim_vsp_test_send_n req = { HVSIM_VSP_TEST_OP_SEND_N, 100000, 64 };
    fg_ch_inband(&f->fg, &g, 1, KMCL_PKT_FLAG_COMPLETION_REQUESTED, &req, sizeof req, fg_no_pkt, NULL);
    fg_flush(&f->fg);
    for (uint32_t i = 0; i < 10; i++) /* queued behind the batch: the host does not read them */
        tx_op(f, &g, 100 + i, KMCL_PKT_FLAG_COMPLETION_REQUESTED, HVSIM_VSP_TEST_OP_ECHO, fg_no_pkt, NULL);
    fg_guest_signal(&f->fg, g.relid);
    fg_flush(&f->fg);
    struct hvsim_vsp_test_stats s = vstats(f);
    assert_int_equal(s.packets_in[KMCL_PKT_DATA_INBAND], 1);
    uint64_t owed = s.backlog;
    assert_true(owed > 99000);
    assert_int_equal(s.send_n_packets + owed, 100000);
    fg_ch_close(&f->fg, &g);
    s = vstats(f);
    assert_int_equal(s.closes, 1);
    assert_int_equal(s.channels, 0);
    assert_int_equal(s.backlog, 0);
    assert_int_equal(s.backlog_dropped, owed);
    /* A signal on the closed channel's connection: nobody is served, nothing breaks. */
    (void)hvsim_hypercall(f->fg.sim, 0, HV_CALL_SIGNAL_EVENT | HV_HYPERCALL_FAST,
                          HVSIM_VMBUS_CONN_CHANNEL_BASE + TEST_RELID, 0);
    fg_flush(&f->fg);
    fg_ch_free(&g);

    struct fg_channel again;
    fg_ch_open(&f->fg, &again, TEST_RELID, 2, 2);
    echo_once(f, &again, 7, 40);
    fg_ch_expect_none(&f->fg, &again);
    s = vstats(f);
    assert_int_equal(s.channels, 1);
    assert_int_equal(s.opens, 2);
    assert_int_equal(s.echoes, 1);
    assert_int_equal(s.failures, 0);
    fg_ch_free(&again);
}

/* The primary and both sub-channels served at once, each its own rings and answers; then the server
 * destroyed with them open and a batch owed: every channel gets its on_close. */
static void test_sub_channels_and_destroy(void **state)
{
    (void)state;
    struct fixture *f = fx_new(0, true);
    struct fg_channel g[3];
    uint32_t relids[3] = { TEST_RELID, SUB1_RELID, SUB2_RELID };
    fg_ch_open(&f->fg, &g[0], relids[0], 2, 3);
    fg_wait_offer(&f->fg, SUB1_RELID);
    fg_wait_offer(&f->fg, SUB2_RELID);
    fg_ch_open(&f->fg, &g[1], relids[1], 3, 2);
    fg_ch_open(&f->fg, &g[2], relids[2], 2, 2);
    for (uint32_t round = 0; round < 50; round++)
        for (int i = 0; i < 3; i++)
            echo_once(f, &g[i], relids[i] * 1000 + round, 8 + (round * 8 + (uint32_t)i * 24) % 200);
    struct hvsim_vsp_test_send_n req = { HVSIM_VSP_TEST_OP_SEND_N, 5000, 256 };
    fg_ch_inband(&f->fg, &g[1], 1, 0, &req, sizeof req, fg_no_pkt, NULL);
    fg_flush(&f->fg);
    struct hvsim_vsp_test_stats s = vstats(f);
    assert_int_equal(s.channels, 3);
    assert_int_equal(s.echoes, 150);
    assert_true(s.backlog > 0);
    hvsim_vmbus_destroy(f->fg.vb);
    f->fg.vb = NULL;
    s = vstats(f);
    assert_int_equal(s.channels, 0);
    assert_int_equal(s.closes, 3);
    assert_int_equal(s.backlog, 0);
    assert_true(s.backlog_dropped > 0);
    for (int i = 0; i < 3; i++)
        fg_ch_free(&g[i]);
}

/* The default device table as hvsim uses it (ctx NULL: the process's default instance): the test
 * device echoes, and answers a signal on an empty ring by a signal. */
static void test_default_table(void **state)
{
    (void)state;
    struct hvsim_vsp_test_stats before, after;
    hvsim_vsp_test_get_stats(NULL, &before);
    struct fixture *f = fx_new(0, false);
    struct fg_channel g;
    fg_ch_open(&f->fg, &g, TEST_RELID, 2, 2);
    fg_flush(&f->fg);
    (void)fg_take_signal(&f->fg, g.relid);
    fg_guest_signal(&f->fg, g.relid);
    assert_true(fg_wait_signal(&f->fg, g.relid, FG_WAIT_MS));
    echo_once(f, &g, 0x77, 64);
    fg_ch_expect_none(&f->fg, &g);
    hvsim_vsp_test_get_stats(NULL, &after);
    assert_int_equal(after.opens - before.opens, 1);
    assert_int_equal(after.idle_signals - before.idle_signals, 1);
    assert_int_equal(after.echoes - before.echoes, 1);
    assert_int_equal(after.channels - before.channels, 1);
    fg_ch_free(&g);
    fg_teardown(NULL);
    hvsim_vsp_test_get_stats(NULL, &after);
    assert_int_equal(after.channels, before.channels);
    assert_int_equal(after.closes - before.closes, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_echo_sizes_wrap, fg_teardown),
        cmocka_unit_test_teardown(test_completion_echo, fg_teardown),
        cmocka_unit_test_teardown(test_send_n_backpressure, fg_teardown),
        cmocka_unit_test_teardown(test_gpa_checksum, fg_teardown),
        cmocka_unit_test_teardown(test_signal_only_and_idle, fg_teardown),
        cmocka_unit_test_teardown(test_unknown_and_bad_requests, fg_teardown),
        cmocka_unit_test_teardown(test_flood_without_answers, fg_teardown),
        cmocka_unit_test_teardown(test_send_on_open, fg_teardown),
        cmocka_unit_test_teardown(test_garbage_rings_fail, fg_teardown),
        cmocka_unit_test_teardown(test_close_with_backlog, fg_teardown),
        cmocka_unit_test_teardown(test_sub_channels_and_destroy, fg_teardown),
        cmocka_unit_test_teardown(test_default_table, fg_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
