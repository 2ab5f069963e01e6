/*
 * Unit tests for hvsim's netvsp (sim/netvsp/netvsp.h) and its user-mode gateway (sim/netvsp/netgw.h).
 *
 * Each test builds an hvsim model over 32 MiB of guest RAM with the VMBus server on top (the default
 * devices, the NIC bound to a netvsp of the test's own) and plays the guest on the test thread with
 * the shared fake guest (test/lib/fake_guest.h): the SynIC set up through hvsim_wrmsr, channel
 * messages posted with HvCallPostMessage and read from the SINT's message slot, rings and buffers in
 * guest RAM, kmcl's ring layer as the guest's endpoints. On top of that a small fake netvsc guest
 * (struct gnic) speaks NVSP and RNDIS with the shared builders and checkers
 * (drivers/netvsc/proto/nvsp_msg.h, rndis_msg.h): it reads every transfer-page packet's ranges out of
 * its receive buffer (through its own page list, which may be scattered) and completes them, or holds
 * them back when a test wants the host's sub-allocations to run out. Frames the guest sends reach a
 * capture backend, or the gateway with real loopback sockets.
 * Waits are bounded and generous (the suite also runs under ASan/UBSan and TSan).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "drivers/netvsc/proto/nvsp_msg.h"
#include "drivers/netvsc/proto/rndis_msg.h"
#include "hv/proto/hvdefs.h"
#include "hv/vmbus/proto/vmbus_proto.h"
#include "kmcl/core/packet.h"
#include "kmcl/core/ring.h"
#include "sim/hvsim.h"
#include "sim/netvsp/netgw.h"
#include "sim/netvsp/netvsp.h"
#include "sim/vmbus_server.h"
#include "test/lib/fake_guest.h"
#include "test/lib/test_util.h"

#define RAM_SIZE (32u << 20)
#define NIC_RELID 1 /* the NIC on a fresh server (the first default device) */
#define MAX_Q HVSIM_NETVSP_MAX_QUEUES
#define PAGE 4096u
#define MAX_FRAMES 1024u
#define CAP_MAX 512u

static const uint8_t nic_mac[6] = { 0x00, 0x15, 0x5d, 0x00, 0x00, 0x01 };
static const uint8_t gw_mac[6] = { 0x52, 0x55, 0x0a, 0x00, 0x02, 0x02 };
static const uint8_t bcast[6] = { 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF };

struct fx_opts {
    uint32_t max_version; /* 0: 6.1 */
    uint32_t queues;
    bool rx_compact, gateway, link_down;
    uint32_t lease_s;
};

struct fixture {
    struct fake_guest fg;
    struct hvsim_netvsp *nv;
    struct hvsim_netgw *gw;
    struct hvsim_vmbus_device *devs;
    struct gnic *nic; /* gnic_new's */
    unsigned caps; /* captured frames (fg.lock: the netvsp's thread adds them) */
    uint32_t cap_len[CAP_MAX];
    uint8_t *cap[CAP_MAX];
};

struct rxframe {
    unsigned queue;
    uint32_t len, msg_len, range_len, data_offset;
    uint8_t data[HVSIM_NETVSP_MAX_FRAME];
};

struct ctlmsg {
    uint32_t len, range_len;
    uint8_t data[512];
};

struct held {
    unsigned queue;
    uint64_t trans;
};

struct pctx {
    struct gnic *g;
    unsigned q;
};

/* The fake netvsc guest. */
struct gnic {
    struct fixture *f;
    struct fg_channel ch[MAX_Q];
    struct pctx pc[MAX_Q];
    unsigned nch;
    uint32_t version;
    uint64_t *rb_pfns;
    uint32_t rb_pages, rb_gpadl, sub_size, sub_count;
    uint16_t rb_id;
    uint64_t sb_gpa;
    uint32_t sb_pages, sb_gpadl, section;
    uint64_t scratch; /* pages for GPA-direct messages */
    uint64_t next_trans;
    bool hold;        /* keep transfer-page packets (no completion) */
    struct {
        bool used;
        uint64_t trans;
        uint32_t len;
        uint8_t data[128];
    } comp[64];
    struct rxframe *frames;
    unsigned nframes;       /* kept (the first MAX_FRAMES) */
    unsigned frames_total;  /* received */
    void (*on_frame)(struct gnic *g, const struct rxframe *fr); /* each received frame, kept or not */
    struct ctlmsg ctl[64];
    unsigned nctl;
    struct held held[1024];
    unsigned nheld;
    struct held pend[1024];
    unsigned npend;
    uint32_t table[NVSP_SEND_TABLE_ENTRIES];
    uint32_t table_count, table_offset, tables;
};

/* ---- the log and the capture backend ---- */

/* NETVSP_TEST_VERBOSE=1 shows the host's log lines as they come (fg.lock held). */
static void echo_log(void *ctx, const char *line)
{
    (void)ctx;
    if (getenv("NETVSP_TEST_VERBOSE"))
        fprintf(stderr, "log: %s\n", line);
}

static void capture(void *ctx, const uint8_t *frame, uint32_t len)
{
    struct fixture *f = ctx;
    pthread_mutex_lock(&f->fg.lock);
    if (f->caps < CAP_MAX) {
        f->cap[f->caps] = malloc(len);
        memcpy(f->cap[f->caps], frame, len);
        f->cap_len[f->caps] = len;
    }
    f->caps++;
    pthread_mutex_unlock(&f->fg.lock);
}

static unsigned captured(struct fixture *f)
{
    return fg_count(&f->fg, &f->caps);
}

/* ---- fixture ---- */

static void fx_release(void *fixture)
{
    struct fixture *f = fixture;
    hvsim_vmbus_destroy(f->fg.vb);
    f->fg.vb = NULL;
    hvsim_netgw_destroy(f->gw);
    if (f->nv) {
        struct hvsim_netvsp_stats s;
        hvsim_netvsp_get_stats(f->nv, &s);
        if (s.opens != s.closes || s.queues_open)
            fprintf(stderr, "netvsp state left after the server's destruction: %llu opens, %llu closes, %u open\n",
                    (unsigned long long)s.opens, (unsigned long long)s.closes, s.queues_open);
        hvsim_netvsp_destroy(f->nv);
    }
    fg_destroy(&f->fg);
    for (unsigned i = 0; i < f->caps && i < CAP_MAX; i++)
        free(f->cap[i]);
    free(f->devs);
    if (f->nic) {
        for (unsigned i = 0; i < MAX_Q; i++)
            fg_ch_free(&f->nic->ch[i]);
        free(f->nic->rb_pfns);
        free(f->nic->frames);
        free(f->nic);
    }
}

static struct fixture *fx_new(const struct fx_opts *o)
{
    struct fixture *f = fg_fixture_new(sizeof *f, fx_release);
    struct fg_config gc = { .hv = { .vp_count = 1 }, .ram_size = RAM_SIZE, .on_log = echo_log };
    fg_init(&f->fg, &gc);
    fg_ready(&f->fg);

    struct hvsim_netvsp_config nc = { .max_version = o ? o->max_version : 0, .queues = o ? o->queues : 0,
                                      .rx_compact = o && o->rx_compact, .link_down = o && o->link_down,
                                      .log = fg_log, .log_ctx = &f->fg };
    f->nv = hvsim_netvsp_create(&nc);
    assert_non_null(f->nv);
    if (o && o->gateway) {
        static const struct hvsim_netgw_forward fw[2] = { { 0, 7 }, { 0, 9 } };
        struct hvsim_netgw_config gwc = { .nv = f->nv, .forwards = fw, .forward_count = 2, .control = true,
                                          .lease_s = o->lease_s, .ping_timeout_ms = 2000, .log = fg_log,
                                          .log_ctx = &f->fg };
        char err[256];
        f->gw = hvsim_netgw_create(&gwc, err, sizeof err);
        if (!f->gw)
            fail_msg("gateway: %s", err);
    } else {
        hvsim_netvsp_set_backend(f->nv, capture, f);
    }
    f->devs = fg_default_devices();
    f->devs[NIC_RELID - 1] = hvsim_netvsp_device(f->nv);
    assert_string_equal(f->devs[NIC_RELID - 1].name, "netvsc");
    struct hvsim_vmbus_config cfg = { .devices = f->devs, .device_count = hvsim_vmbus_default_device_count };
    fg_vmbus_start(&f->fg, &cfg);
    fg_connect(&f->fg, VMBUS_VERSION_COPPER);
    fg_request_offers(&f->fg);
    assert_non_null(fg_offer_of(&f->fg, NIC_RELID));
    return f;
}

static struct hvsim_netvsp_stats nstats(struct fixture *f)
{
    struct hvsim_netvsp_stats s;
    hvsim_netvsp_get_stats(f->nv, &s);
    return s;
}

/* A NIC channel (c: zeroed or opened before): its writers poll while the guest -> host ring is full
 * (these tests are about the netvsp; the ring's signalling is test_vsp_test.c's subject). */
static void nic_ch_open(struct fixture *f, struct fg_channel *c, uint32_t relid, uint32_t tx_pages, uint32_t rx_pages)
{
    fg_ch_free(c);
    fg_ch_open(&f->fg, c, relid, tx_pages, rx_pages);
    c->when_full = FG_FULL_POLL;
}

/* ---- the fake netvsc guest ---- */

static void on_pkt(void *ctx, const struct kmcl_ring_packet *p);

static unsigned pump_once(struct gnic *g);

/* Writes one packet into channel q's guest -> host ring, reading the host's packets while it is full. */
static void q_write(struct gnic *g, unsigned q, const struct kmcl_ring_out *out)
{
    fg_ch_write(&g->f->fg, &g->ch[q], out, on_pkt, &g->pc[q]);
}

static void send_completion(struct gnic *g, unsigned q, uint64_t trans)
{
    uint8_t m[NVSP_GUEST_MSG_SIZE];
    uint32_t n = nvsp_build_rndis_pkt_complete(m, sizeof m, NVSP_GUEST_MSG_SIZE, NVSP_STATUS_SUCCESS);
    struct kmcl_iov iov = { m, n };
    struct kmcl_ring_out out = { .type = KMCL_PKT_COMPLETION, .trans_id = trans, .iov = &iov, .iov_count = 1 };
    q_write(g, q, &out);
}

/* Reads [off, off + len) of the receive buffer through the guest's page list. */
static void rb_read(struct gnic *g, uint64_t off, uint8_t *dst, uint32_t len)
{
    while (len) {
        uint32_t in = (uint32_t)(off % PAGE), n = PAGE - in < len ? PAGE - in : len;
        assert_true(off / PAGE < g->rb_pages);
        memcpy(dst, g->f->fg.ram + g->rb_pfns[off / PAGE] * PAGE + in, n);
        dst += n;
        off += n;
        len -= n;
    }
}

static void on_xfer(struct gnic *g, unsigned q, const struct kmcl_ring_packet *p)
{
    struct kmcl_xfer_range r[8];
    struct kmcl_pkt_xfer x = { .ranges = r, .max_ranges = 8 };
    struct kmcl_ring_failure why;
    assert_int_equal(kmcl_pkt_parse_xfer(p, g->rb_pages * PAGE, &x, &why), STATUS_OK);
    assert_int_equal(x.pageset_id, g->rb_id);
    assert_true(x.completion_requested);
    assert_int_equal(x.range_count, 1); /* one frame per packet */
    struct nvsp_msg m;
    const char *w;
    assert_int_equal(nvsp_msg_check(x.payload, x.payload_len, NVSP_TO_GUEST, &m, &w), STATUS_OK);
    assert_int_equal(m.type, NVSP_MSG1_SEND_RNDIS_PACKET);
    assert_int_equal(m.u.rndis_pkt.section_index, NVSP_NO_SECTION);
    assert_int_equal(x.payload_len, (uint32_t)((nvsp_host_msg_size(g->version) + 7) & ~7u));
    static uint8_t buf[16384];
    assert_true(r[0].byte_count <= sizeof buf);
    rb_read(g, r[0].byte_offset, buf, r[0].byte_count);
    struct rndis_iter it;
    struct rndis_msg rm;
    rndis_iter_init(&it, buf, r[0].byte_count, RNDIS_ITER_ONE);
    status_t st = rndis_iter_next(&it, &rm, &w);
    if (st != STATUS_OK)
        fail_msg("received RNDIS message: %s", w);
    if (rm.type == RNDIS_MSG_PACKET) {
        assert_int_equal(m.u.rndis_pkt.channel_type, NVSP_CHANNEL_TYPE_DATA);
        static struct rxframe spare; /* beyond MAX_FRAMES: checked, not kept */
        struct rxframe *fr = g->nframes < MAX_FRAMES ? &g->frames[g->nframes++] : &spare;
        g->frames_total++;
        fr->queue = q;
        fr->len = rm.u.packet.data_len;
        fr->msg_len = rm.msg_len;
        fr->range_len = r[0].byte_count;
        fr->data_offset = rm.u.packet.data_offset;
        assert_true(fr->len <= sizeof fr->data);
        memcpy(fr->data, rm.u.packet.data, fr->len);
        if (g->on_frame)
            g->on_frame(g, fr);
    } else {
        assert_int_equal(m.u.rndis_pkt.channel_type, NVSP_CHANNEL_TYPE_CONTROL);
        assert_int_equal(q, 0);
        assert_true(g->nctl < 64);
        struct ctlmsg *c = &g->ctl[g->nctl++];
        c->len = rm.msg_len < sizeof c->data ? rm.msg_len : (uint32_t)sizeof c->data;
        c->range_len = r[0].byte_count;
        memcpy(c->data, buf, c->len);
    }
    struct held h = { q, x.trans_id };
    if (g->hold) {
        assert_true(g->nheld < 1024);
        g->held[g->nheld++] = h;
    } else {
        assert_true(g->npend < 1024);
        g->pend[g->npend++] = h;
    }
}

static void on_pkt(void *ctx, const struct kmcl_ring_packet *p)
{
    struct pctx *c = ctx;
    struct gnic *g = c->g;
    if (p->desc.type == KMCL_PKT_COMPLETION) {
        unsigned i = 0;
        while (i < 64 && g->comp[i].used)
            i++;
        assert_true(i < 64);
        g->comp[i].used = true;
        g->comp[i].trans = p->desc.trans_id;
        g->comp[i].len = kmcl_pkt_payload_len(p) < 128 ? kmcl_pkt_payload_len(p) : 128;
        memcpy(g->comp[i].data, kmcl_pkt_payload(p), g->comp[i].len);
    } else if (p->desc.type == KMCL_PKT_DATA_XFER_PAGES) {
        on_xfer(g, c->q, p);
    } else if (p->desc.type == KMCL_PKT_DATA_INBAND) {
        struct nvsp_msg m;
        const char *w;
        assert_int_equal(nvsp_msg_check(kmcl_pkt_payload(p), kmcl_pkt_payload_len(p), NVSP_TO_GUEST, &m, &w),
                         STATUS_OK);
        assert_int_equal(m.type, NVSP_MSG5_SEND_INDIRECTION_TABLE);
        assert_int_equal(c->q, 0);
        assert_false(p->desc.flags & KMCL_PKT_FLAG_COMPLETION_REQUESTED);
        g->table_count = m.u.indirection_table.count;
        g->table_offset = m.u.indirection_table.offset;
        nvsp_indirection_table_copy(&m, g->table, NVSP_SEND_TABLE_ENTRIES);
        g->tables++;
    } else {
        fail_msg("unexpected packet type %u from the host", p->desc.type);
    }
}

static unsigned pump_once(struct gnic *g)
{
    unsigned n = 0;
    for (unsigned q = 0; q < g->nch; q++)
        n += fg_ch_drain(&g->f->fg, &g->ch[q], ~0u, on_pkt, &g->pc[q]);
    while (g->npend) {
        struct held h = g->pend[0];
        memmove(g->pend, g->pend + 1, --g->npend * sizeof h);
        send_completion(g, h.queue, h.trans);
    }
    return n;
}

typedef bool (*cond_fn)(struct gnic *g, uintptr_t arg);

static void pump_until(struct gnic *g, cond_fn cond, uintptr_t arg, const char *what)
{
    int64_t deadline = now_ns() + (int64_t)FG_WAIT_MS * 1000000;
    for (;;) {
        unsigned n = pump_once(g);
        if (cond(g, arg))
            return;
        if (now_ns() > deadline) {
            fg_dump_logs(&g->f->fg);
            fail_msg("waited %d ms for %s", FG_WAIT_MS, what);
        }
        if (!n) {
            bool any = false;
            for (unsigned q = 0; q < g->nch; q++)
                any |= fg_take_signal(&g->f->fg, g->ch[q].relid);
            if (!any)
                sleep_us(50);
        }
    }
}

static bool have_comp(struct gnic *g, uintptr_t trans)
{
    for (unsigned i = 0; i < 64; i++)
        if (g->comp[i].used && g->comp[i].trans == trans)
            return true;
    return false;
}

static bool have_frames(struct gnic *g, uintptr_t n)
{
    return g->frames_total >= n;
}

static bool have_ctl(struct gnic *g, uintptr_t n)
{
    return g->nctl >= n;
}

/* The completion of trans: its payload (len returned). */
static uint32_t take_comp(struct gnic *g, uint64_t trans, uint8_t *out)
{
    pump_until(g, have_comp, (uintptr_t)trans, "a completion");
    for (unsigned i = 0; i < 64; i++)
        if (g->comp[i].used && g->comp[i].trans == trans) {
            g->comp[i].used = false;
            memcpy(out, g->comp[i].data, g->comp[i].len);
            return g->comp[i].len;
        }
    return 0;
}

/* Nothing more comes from the host: an idle server, empty rings. */
static void expect_quiet(struct gnic *g)
{
    fg_flush(&g->f->fg);
    sleep_us(2000);
    unsigned frames = g->frames_total, ctl = g->nctl, tables = g->tables;
    pump_once(g);
    assert_int_equal(g->frames_total, frames);
    assert_int_equal(g->nctl, ctl);
    assert_int_equal(g->tables, tables);
    for (unsigned i = 0; i < 64; i++)
        assert_false(g->comp[i].used);
}

static void send_inband(struct gnic *g, unsigned q, uint64_t trans, bool rc, const void *msg, uint32_t len)
{
    struct kmcl_iov iov = { msg, len };
    struct kmcl_ring_out out = { .type = KMCL_PKT_DATA_INBAND, .flags = rc ? KMCL_PKT_FLAG_COMPLETION_REQUESTED : 0,
                                 .trans_id = trans, .iov = &iov, .iov_count = 1 };
    q_write(g, q, &out);
}

/* An NVSP request with RC; its completion's payload into out (length returned). */
static uint32_t nvsp_call(struct gnic *g, const void *msg, uint32_t len, uint8_t *out)
{
    uint64_t t = ++g->next_trans;
    send_inband(g, 0, t, true, msg, len);
    return take_comp(g, t, out);
}

/* One GPA-direct packet, as fg_ch_send writes it. */
struct gpa_send {
    uint64_t trans;
    uint16_t flags;
    const struct kmcl_page_range *range;
    const struct kmcl_iov *iov;
};

static status_t gpa_write(struct kmcl_ring *tx, void *ctx, bool *signal)
{
    const struct gpa_send *s = ctx;
    return kmcl_pkt_send_gpa_direct(tx, s->trans, s->flags, s->range, 1, s->iov, 1, 0, signal);
}

/* GPA direct: bytes at guest address gpa (contiguous), the NVSP message as payload. */
static void send_gpa(struct gnic *g, unsigned q, uint64_t trans, uint16_t flags, uint64_t gpa, uint32_t len,
                     const void *nvsp, uint32_t nlen)
{
    uint64_t pfns[32];
    uint32_t np = (uint32_t)kmcl_pkt_gpa_pfn_count(gpa % PAGE, len);
    assert_true(np <= 32);
    for (uint32_t i = 0; i < np; i++)
        pfns[i] = gpa / PAGE + i;
    struct kmcl_page_range r = { .byte_count = len, .byte_offset = (uint32_t)(gpa % PAGE), .pfns = pfns };
    struct kmcl_iov iov = { nvsp, nlen };
    struct gpa_send s = { trans, flags, &r, &iov };
    fg_ch_send(&g->f->fg, &g->ch[q], gpa_write, &s, on_pkt, &g->pc[q]);
}

static uint32_t rndis_pkt_msg(uint8_t *buf, uint32_t channel_type, uint32_t index, uint32_t size)
{
    uint32_t n = nvsp_build_rndis_pkt(buf, NVSP_GUEST_MSG_SIZE, NVSP_GUEST_MSG_SIZE, channel_type, index, size);
    assert_int_equal(n, NVSP_GUEST_MSG_SIZE);
    return n;
}

/* SEND_RNDIS_PACKET by GPA direct from the scratch pages; the NVSP completion's status. */
static uint32_t send_rndis_gpa(struct gnic *g, unsigned q, const void *rndis, uint32_t len, uint32_t channel_type)
{
    memcpy(g->f->fg.ram + g->scratch, rndis, len);
    uint8_t nv[NVSP_GUEST_MSG_SIZE];
    uint32_t n = rndis_pkt_msg(nv, channel_type, NVSP_NO_SECTION, 0);
    uint64_t t = ++g->next_trans;
    send_gpa(g, q, t, KMCL_PKT_FLAG_COMPLETION_REQUESTED, g->scratch, len, nv, n);
    uint8_t c[128];
    uint32_t cl = take_comp(g, t, c);
    struct nvsp_msg m;
    const char *w;
    assert_int_equal(nvsp_msg_check(c, cl, NVSP_TO_GUEST, &m, &w), STATUS_OK);
    assert_int_equal(m.type, NVSP_MSG1_SEND_RNDIS_PACKET_COMPLETE);
    assert_int_equal(cl, (nvsp_host_msg_size(g->version) + 7) & ~7u);
    return m.u.rndis_pkt_complete.status;
}

/* An RNDIS control message and its answer (the next control message that arrives). */
static const struct ctlmsg *rndis_call(struct gnic *g, const void *msg, uint32_t len, struct rndis_msg *out)
{
    unsigned before = g->nctl;
    assert_int_equal(send_rndis_gpa(g, 0, msg, len, NVSP_CHANNEL_TYPE_CONTROL), NVSP_STATUS_SUCCESS);
    pump_until(g, have_ctl, before + 1, "an RNDIS answer");
    const struct ctlmsg *c = &g->ctl[before];
    const char *w;
    assert_int_equal(rndis_msg_check(c->data, c->len, out, &w), STATUS_OK);
    assert_int_equal(c->range_len, out->msg_len); /* control ranges are the message (openvmm) */
    return c;
}

static void rndis_query(struct gnic *g, uint32_t rid, uint32_t oid, struct rndis_msg *out)
{
    uint8_t m[64];
    uint32_t n = rndis_build_query(m, sizeof m, rid, oid, NULL, 0);
    rndis_call(g, m, n, out);
    assert_int_equal(out->type, RNDIS_MSG_QUERY_CMPLT);
    assert_int_equal(out->request_id, rid);
}

static uint32_t rndis_set(struct gnic *g, uint32_t rid, uint32_t oid, const void *info, uint32_t len)
{
    uint8_t m[1024];
    uint32_t n = rndis_build_set(m, sizeof m, rid, oid, info, len);
    assert_true(n > 0);
    struct rndis_msg r;
    rndis_call(g, m, n, &r);
    assert_int_equal(r.type, RNDIS_MSG_SET_CMPLT);
    assert_int_equal(r.request_id, rid);
    return r.status;
}

static struct gnic *gnic_new(struct fixture *f)
{
    struct gnic *g = calloc(1, sizeof *g);
    assert_non_null(g);
    f->nic = g;
    g->f = f;
    g->frames = calloc(MAX_FRAMES, sizeof *g->frames);
    assert_non_null(g->frames);
    for (unsigned i = 0; i < MAX_Q; i++)
        g->pc[i] = (struct pctx){ g, i };
    g->scratch = fg_alloc_pages(&f->fg, 20);
    g->next_trans = 0x1000;
    nic_ch_open(f, &g->ch[0], NIC_RELID, 8, 16);
    g->nch = 1;
    return g;
}

/* INIT {v}: the INIT_COMPLETE status. */
static uint32_t nvsp_init(struct gnic *g, uint32_t v)
{
    uint8_t m[NVSP_GUEST_MSG_SIZE], c[128];
    uint32_t n = nvsp_build_init(m, sizeof m, NVSP_GUEST_MSG_SIZE, v, v);
    uint32_t cl = nvsp_call(g, m, n, c);
    struct nvsp_msg r;
    const char *w;
    assert_int_equal(nvsp_msg_check(c, cl, NVSP_TO_GUEST, &r, &w), STATUS_OK);
    assert_int_equal(r.type, NVSP_MSG_INIT_COMPLETE);
    assert_int_equal(cl, 32); /* 28 bytes, rounded to 8 by the ring */
    assert_int_equal(r.u.init_complete.max_mdl_chain_len, 34);
    if (r.u.init_complete.status == NVSP_STATUS_SUCCESS) {
        g->version = v;
        assert_int_equal(r.u.init_complete.negotiated_version, v == NVSP_VERSION_1 ? NVSP_VERSION_1 : NVSP_VERSION_INVALID);
    }
    return r.u.init_complete.status;
}

/* NDIS config (v >= 2) with the MTU, and the NDIS version; both with RC: empty completions. */
static void nvsp_ndis(struct gnic *g, uint32_t mtu)
{
    uint8_t m[NVSP_GUEST_MSG_SIZE], c[128];
    if (g->version >= NVSP_VERSION_2) {
        uint32_t n = nvsp_build_ndis_config(m, sizeof m, NVSP_GUEST_MSG_SIZE, mtu, NVSP_NDIS_CAP_IEEE_8021Q);
        assert_int_equal(nvsp_call(g, m, n, c), 0);
    }
    uint32_t n = nvsp_build_ndis_version(m, sizeof m, NVSP_GUEST_MSG_SIZE, nvsp_ndis_version_for(g->version));
    assert_int_equal(nvsp_call(g, m, n, c), 0);
}

/* The receive buffer over `pages` pages, their order in guest memory shuffled when `scatter`.
 * Returns the completion's status (sections checked on success). */
static uint32_t nvsp_recv_buf(struct gnic *g, uint32_t pages, bool scatter, uint32_t handle_override)
{
    struct fixture *f = g->f;
    free(g->rb_pfns);
    g->rb_pfns = malloc(pages * sizeof *g->rb_pfns);
    uint64_t base = fg_alloc_pages(&f->fg, pages);
    for (uint32_t i = 0; i < pages; i++)
        g->rb_pfns[i] = base / PAGE + i;
    if (scatter) /* every other page swapped with the one after: nothing contiguous across pairs */
        for (uint32_t i = 0; i + 1 < pages; i += 2) {
            uint64_t t = g->rb_pfns[i];
            g->rb_pfns[i] = g->rb_pfns[i + 1];
            g->rb_pfns[i + 1] = t;
        }
    g->rb_pages = pages;
    g->rb_gpadl = fg_next_gpadl(&f->fg);
    assert_int_equal(fg_create_gpadl(&f->fg, NIC_RELID, g->rb_gpadl, g->rb_pfns, pages), 0);
    g->rb_id = NVSP_RECV_BUF_ID;
    uint8_t m[NVSP_GUEST_MSG_SIZE], c[128];
    uint32_t n = nvsp_build_send_recv_buf(m, sizeof m, NVSP_GUEST_MSG_SIZE,
                                          handle_override ? handle_override : g->rb_gpadl, NVSP_RECV_BUF_ID);
    uint32_t cl = nvsp_call(g, m, n, c);
    struct nvsp_msg r;
    const char *w;
    assert_int_equal(nvsp_msg_check(c, cl, NVSP_TO_GUEST, &r, &w), STATUS_OK);
    assert_int_equal(r.type, NVSP_MSG1_SEND_RECEIVE_BUFFER_COMPLETE);
    assert_int_equal(cl, (nvsp_host_msg_size(g->version) + 7) & ~7u);
    if (r.u.recv_buf_complete.status != NVSP_STATUS_SUCCESS) {
        assert_int_equal(r.u.recv_buf_complete.num_sections, 0);
        return r.u.recv_buf_complete.status;
    }
    assert_int_equal(r.u.recv_buf_complete.num_sections, 1);
    const struct nvsp_recv_section *s = &r.u.recv_buf_complete.sections[0];
    assert_int_equal(s->offset, 0);
    assert_true(nvsp_recv_section_fits(s, pages * PAGE));
    assert_int_equal(s->end_offset, s->sub_alloc_size * s->num_sub_allocs);
    assert_int_equal(s->num_sub_allocs, pages * PAGE / s->sub_alloc_size);
    g->sub_size = s->sub_alloc_size;
    g->sub_count = s->num_sub_allocs;
    return NVSP_STATUS_SUCCESS;
}

static void nvsp_send_buf(struct gnic *g, uint32_t pages)
{
    g->sb_pages = pages;
    g->sb_gpa = fg_alloc_pages(&g->f->fg, pages);
    g->sb_gpadl = fg_next_gpadl(&g->f->fg);
    fg_create_gpadl_at(&g->f->fg, NIC_RELID, g->sb_gpadl, g->sb_gpa, pages);
    uint8_t m[NVSP_GUEST_MSG_SIZE], c[128];
    uint32_t n = nvsp_build_send_send_buf(m, sizeof m, NVSP_GUEST_MSG_SIZE, g->sb_gpadl, NVSP_SEND_BUF_ID);
    uint32_t cl = nvsp_call(g, m, n, c);
    struct nvsp_msg r;
    const char *w;
    assert_int_equal(nvsp_msg_check(c, cl, NVSP_TO_GUEST, &r, &w), STATUS_OK);
    assert_int_equal(r.type, NVSP_MSG1_SEND_SEND_BUFFER_COMPLETE);
    assert_int_equal(r.u.send_buf_complete.status, NVSP_STATUS_SUCCESS);
    assert_int_equal(r.u.send_buf_complete.section_size, 6144);
    g->section = r.u.send_buf_complete.section_size;
}

static void rndis_init(struct gnic *g)
{
    uint8_t m[64];
    uint32_t n = rndis_build_init(m, sizeof m, 1, 0x4000);
    struct rndis_msg r;
    rndis_call(g, m, n, &r);
    assert_int_equal(r.type, RNDIS_MSG_INITIALIZE_CMPLT);
    assert_int_equal(r.request_id, 1);
    assert_int_equal(r.status, RNDIS_STATUS_SUCCESS);
    assert_int_equal(r.u.init_cmplt.major, 1);
    assert_int_equal(r.u.init_cmplt.device_flags, RNDIS_DF_CONNECTIONLESS);
    assert_int_equal(r.u.init_cmplt.medium, RNDIS_MEDIUM_802_3);
    assert_int_equal(r.u.init_cmplt.max_pkts_per_msg, 8);
    assert_int_equal(r.u.init_cmplt.max_xfer_size, 0xEFFFFFFFu);
    assert_int_equal(r.u.init_cmplt.pkt_align_factor, 3);
}

#define FILTER_STD (RNDIS_PACKET_TYPE_DIRECTED | RNDIS_PACKET_TYPE_BROADCAST)

/* The whole handshake as PROTOCOL.md section 1 lists it (DPDK's order), at version v. */
static struct gnic *gnic_up(struct fixture *f, uint32_t v, uint32_t rb_pages, uint32_t filter)
{
    struct gnic *g = gnic_new(f);
    assert_int_equal(nvsp_init(g, v), NVSP_STATUS_SUCCESS);
    nvsp_ndis(g, 1514);
    assert_int_equal(nvsp_recv_buf(g, rb_pages, true, 0), NVSP_STATUS_SUCCESS);
    assert_int_equal(g->sub_size, 1806); /* 256 + 1514 + 36 (openvmm) */
    nvsp_send_buf(g, 16);
    rndis_init(g);
    struct rndis_msg r;
    rndis_query(g, 2, RNDIS_OID_802_3_PERMANENT_ADDRESS, &r);
    assert_int_equal(r.status, RNDIS_STATUS_SUCCESS);
    assert_int_equal(r.u.query_cmplt.info_len, 6);
    assert_memory_equal(r.u.query_cmplt.info, nic_mac, 6);
    if (filter)
        assert_int_equal(rndis_set(g, 3, RNDIS_OID_GEN_CURRENT_PACKET_FILTER, &filter, 4), RNDIS_STATUS_SUCCESS);
    return g;
}

/* ---- frames ---- */

static uint16_t csum(const uint8_t *p, uint32_t n, uint32_t sum)
{
    for (uint32_t i = 0; i + 1 < n; i += 2)
        sum += (uint32_t)p[i] << 8 | p[i + 1];
    if (n & 1)
        sum += (uint32_t)p[n - 1] << 8;
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    return (uint16_t)~sum;
}

static void be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void be32(uint8_t *p, uint32_t v)
{
    be16(p, (uint16_t)(v >> 16));
    be16(p + 2, (uint16_t)v);
}

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)rd16(p) << 16 | rd16(p + 2);
}

static uint32_t pseudo(uint32_t src, uint32_t dst, uint8_t proto, uint32_t len)
{
    uint8_t ph[12];
    be32(ph, src);
    be32(ph + 4, dst);
    ph[8] = 0;
    ph[9] = proto;
    be16(ph + 10, (uint16_t)len);
    uint32_t s = 0;
    for (int i = 0; i < 12; i += 2)
        s += (uint32_t)ph[i] << 8 | ph[i + 1];
    return s;
}

/* An Ethernet + IPv4 frame with proto's l4 bytes; the UDP checksum (proto 17) or ICMP checksum
 * (proto 1) filled in. Returns the length. */
static uint32_t ip_frame(uint8_t *f, const uint8_t *dst_mac, const uint8_t *src_mac, uint32_t src, uint32_t dst,
                         uint8_t proto, const uint8_t *l4, uint32_t len)
{
    memcpy(f, dst_mac, 6);
    memcpy(f + 6, src_mac, 6);
    be16(f + 12, 0x0800);
    uint8_t *ip = f + 14;
    memset(ip, 0, 20);
    ip[0] = 0x45;
    be16(ip + 2, (uint16_t)(20 + len));
    be16(ip + 4, 0x1234);
    ip[8] = 64;
    ip[9] = proto;
    be32(ip + 12, src);
    be32(ip + 16, dst);
    be16(ip + 10, csum(ip, 20, 0));
    memcpy(ip + 20, l4, len);
    uint8_t *l = ip + 20;
    if (proto == 17) {
        be16(l + 6, 0);
        uint16_t c = csum(l, len, pseudo(src, dst, 17, len));
        be16(l + 6, c ? c : 0xFFFF);
    } else if (proto == 1) {
        be16(l + 2, 0);
        be16(l + 2, csum(l, len, 0));
    }
    return 14 + 20 + len;
}

static uint32_t udp_frame(uint8_t *f, const uint8_t *dst_mac, const uint8_t *src_mac, uint32_t src, uint16_t sport,
                          uint32_t dst, uint16_t dport, const void *payload, uint32_t plen)
{
    uint8_t u[1600];
    be16(u, sport);
    be16(u + 2, dport);
    be16(u + 4, (uint16_t)(8 + plen));
    be16(u + 6, 0);
    memcpy(u + 8, payload, plen);
    return ip_frame(f, dst_mac, src_mac, src, dst, 17, u, 8 + plen);
}

/* A received IPv4 frame: headers and checksums checked; the L4 part returned. */
static const uint8_t *check_ipv4(const struct rxframe *fr, uint8_t proto, uint32_t *src, uint32_t *dst, uint32_t *l4len)
{
    assert_true(fr->len >= 34);
    assert_int_equal(rd16(fr->data + 12), 0x0800);
    const uint8_t *ip = fr->data + 14;
    assert_int_equal(ip[0], 0x45);
    assert_int_equal(csum(ip, 20, 0), 0);
    assert_int_equal(ip[9], proto);
    uint32_t total = rd16(ip + 2);
    assert_true(total >= 20 && 14 + total <= fr->len);
    *src = rd32(ip + 12);
    *dst = rd32(ip + 16);
    *l4len = total - 20;
    const uint8_t *l = ip + 20;
    if (proto == 17) {
        assert_true(*l4len >= 8);
        assert_int_equal(rd16(l + 4), *l4len);
        assert_true(rd16(l + 6) != 0);
        assert_int_equal(csum(l, *l4len, pseudo(*src, *dst, 17, *l4len)), 0);
    } else if (proto == 1) {
        assert_int_equal(csum(l, *l4len, 0), 0);
    }
    return l;
}

/* A frame in an RNDIS PACKET (built with the shared builder) at dst; its msg_len. */
static uint32_t rndis_packet(uint8_t *dst, uint32_t cap, const uint8_t *frame, uint32_t len)
{
    uint32_t h = rndis_build_packet(dst, cap, NULL, 0, len);
    assert_true(h > 0 && h + len <= cap);
    memcpy(dst + h, frame, len);
    return h + len;
}

/* Sends frame by the send buffer's section `index` (RNDIS PACKETs back to back: count copies). */
static uint32_t send_frames_section(struct gnic *g, unsigned q, uint32_t index, const uint8_t *frame, uint32_t len,
                                    unsigned count)
{
    uint8_t *sec = g->f->fg.ram + g->sb_gpa + (uint64_t)index * g->section;
    uint32_t used = 0;
    for (unsigned i = 0; i < count; i++)
        used += rndis_packet(sec + used, g->section - used, frame, len);
    uint8_t nv[NVSP_GUEST_MSG_SIZE], c[128];
    uint32_t n = rndis_pkt_msg(nv, NVSP_CHANNEL_TYPE_DATA, index, used);
    uint64_t t = ++g->next_trans;
    send_inband(g, q, t, true, nv, n);
    uint32_t cl = take_comp(g, t, c);
    struct nvsp_msg m;
    const char *w;
    assert_int_equal(nvsp_msg_check(c, cl, NVSP_TO_GUEST, &m, &w), STATUS_OK);
    assert_int_equal(m.type, NVSP_MSG1_SEND_RNDIS_PACKET_COMPLETE);
    return m.u.rndis_pkt_complete.status;
}

static uint32_t send_frame_gpa(struct gnic *g, unsigned q, const uint8_t *frame, uint32_t len)
{
    uint8_t buf[2048];
    uint32_t n = rndis_packet(buf, sizeof buf, frame, len);
    return send_rndis_gpa(g, q, buf, n, NVSP_CHANNEL_TYPE_DATA);
}

static uint32_t test_frame(uint8_t *f, const uint8_t *dst_mac, uint32_t len, uint8_t seed)
{
    memcpy(f, dst_mac, 6);
    memcpy(f + 6, gw_mac, 6);
    be16(f + 12, 0x88B5); /* local experimental */
    for (uint32_t i = 14; i < len; i++)
        f[i] = (uint8_t)(seed + i * 7);
    return len;
}

static void complete_held(struct gnic *g)
{
    for (unsigned i = 0; i < g->nheld; i++)
        send_completion(g, g->held[i].queue, g->held[i].trans);
    g->nheld = 0;
}

/* ---- tests ---- */

/* The handshake at each NVSP version, the host's highest being the guest's (6.1 down to 1):
 * message sizes, the receive buffer section, RNDIS, and a frame each way. */
static void test_handshake_each_version(void **state)
{
    (void)state;
    static const uint32_t versions[] = { NVSP_VERSION_61, NVSP_VERSION_6, NVSP_VERSION_5,
                                         NVSP_VERSION_4,  NVSP_VERSION_2, NVSP_VERSION_1 };
    for (unsigned i = 0; i < 6; i++) {
        struct fx_opts o = { .max_version = versions[i] };
        struct fixture *f = fx_new(&o);
        struct gnic *g = gnic_up(f, versions[i], 32, FILTER_STD);
        uint8_t fr[200];
        uint32_t n = test_frame(fr, nic_mac, sizeof fr, (uint8_t)i);
        assert_true(hvsim_netvsp_deliver(f->nv, fr, n));
        pump_until(g, have_frames, 1, "the frame");
        assert_int_equal(g->frames[0].len, n);
        assert_memory_equal(g->frames[0].data, fr, n);
        assert_int_equal(send_frame_gpa(g, 0, fr, n), NVSP_STATUS_SUCCESS);
        assert_int_equal(captured(f), 1);
        assert_memory_equal(f->cap[0], fr, n);
        struct hvsim_netvsp_stats s = nstats(f);
        assert_int_equal(s.version, versions[i]);
        assert_true(s.rndis_ready);
        assert_int_equal(s.packet_filter, FILTER_STD);
        assert_int_equal(s.nvsp_errors, 0);
        assert_int_equal(s.rx_frames, 1);
        assert_int_equal(s.tx_frames, 1);
        expect_quiet(g);
        assert_int_equal(nstats(f).rx_completions, 4); /* INIT_CMPLT, QUERY_CMPLT, SET_CMPLT, the frame */
        fg_teardown(NULL);
    }
}

/* A host capped at NVSP 4: the guest walks down from 6.1 (status NONE for 6.1, 6, 5) to 4; then a
 * v5 message (SUB_CHANNEL) is a protocol error: the channel fails, nothing answers. */
static void test_version_walk_down(void **state)
{
    (void)state;
    struct fx_opts o = { .max_version = NVSP_VERSION_4 };
    struct fixture *f = fx_new(&o);
    struct gnic *g = gnic_new(f);
    assert_int_equal(nvsp_init(g, NVSP_VERSION_61), NVSP_STATUS_NONE);
    assert_int_equal(nvsp_init(g, NVSP_VERSION_6), NVSP_STATUS_NONE);
    assert_int_equal(nvsp_init(g, NVSP_VERSION_5), NVSP_STATUS_NONE);
    assert_int_equal(nvsp_init(g, 0x12345678), NVSP_STATUS_NONE); /* not a version at all */
    assert_int_equal(nvsp_init(g, NVSP_VERSION_4), NVSP_STATUS_SUCCESS);
    assert_int_equal(nstats(f).version, NVSP_VERSION_4);
    nvsp_ndis(g, 1514);
    assert_int_equal(nvsp_recv_buf(g, 16, false, 0), NVSP_STATUS_SUCCESS);
    nvsp_send_buf(g, 4);
    rndis_init(g);
    uint8_t m[NVSP_GUEST_MSG_SIZE];
    uint32_t n = nvsp_build_subchannel_req(m, sizeof m, NVSP_GUEST_MSG_SIZE, 1);
    send_inband(g, 0, 77, true, m, n);
    fg_flush(&f->fg);
    expect_quiet(g);
    struct hvsim_netvsp_stats s = nstats(f);
    assert_int_equal(s.nvsp_errors, 1);
    assert_int_equal(s.channel_failures, 1);
    assert_int_equal(s.queues_open, 0);
    assert_true(fg_log_matches(&f->fg, "SUB_CHANNEL is newer than the negotiated NVSP 4", NULL) >= 1);
}

/* The receive buffer: sub-allocation sizes follow the NDIS MTU (openvmm: 256 + MTU + 36, an MTU
 * outside 1514..9216 taken as 1514); refusals with FAILURE for a missing NDIS config, an unknown
 * GPADL, a buffer smaller than one sub-allocation. */
static void test_receive_buffer(void **state)
{
    (void)state;
    struct fixture *f = fx_new(NULL);
    struct gnic *g = gnic_new(f);
    assert_int_equal(nvsp_init(g, NVSP_VERSION_61), NVSP_STATUS_SUCCESS);
    uint8_t m[NVSP_GUEST_MSG_SIZE], c[128];
    /* No NDIS config yet (NVSP >= 2 needs it first). */
    assert_int_equal(nvsp_recv_buf(g, 8, false, 0), NVSP_STATUS_FAILURE);
    uint32_t n = nvsp_build_ndis_config(m, sizeof m, NVSP_GUEST_MSG_SIZE, 9014, 0);
    assert_int_equal(nvsp_call(g, m, n, c), 0);
    n = nvsp_build_ndis_version(m, sizeof m, NVSP_GUEST_MSG_SIZE, NVSP_NDIS_VERSION_6_30);
    assert_int_equal(nvsp_call(g, m, n, c), 0);
    /* An unknown GPADL, and one page (4096 < 9306). */
    assert_int_equal(nvsp_recv_buf(g, 4, false, 0xDEAD), NVSP_STATUS_FAILURE);
    assert_int_equal(nvsp_recv_buf(g, 1, false, 0), NVSP_STATUS_FAILURE);
    assert_int_equal(nvsp_recv_buf(g, 16, true, 0), NVSP_STATUS_SUCCESS);
    assert_int_equal(g->sub_size, 256 + 9014 + 36);
    assert_int_equal(g->sub_count, 16 * 4096 / 9306);
    struct hvsim_netvsp_stats s = nstats(f);
    assert_int_equal(s.buffer_refusals, 3);
    assert_int_equal(s.nvsp_errors, 0);
    assert_int_equal(s.rx_sub_allocs, g->sub_count);
    nvsp_send_buf(g, 2);
    rndis_init(g);
    struct rndis_msg r;
    rndis_query(g, 9, RNDIS_OID_GEN_MAXIMUM_FRAME_SIZE, &r);
    uint32_t v;
    memcpy(&v, r.u.query_cmplt.info, 4);
    assert_int_equal(v, 1500); /* capped by the host's MTU */
    /* A jumbo frame fits the guest's MTU and arrives whole across the scattered pages. */
    uint32_t filter = FILTER_STD;
    assert_int_equal(rndis_set(g, 3, RNDIS_OID_GEN_CURRENT_PACKET_FILTER, &filter, 4), RNDIS_STATUS_SUCCESS);
    static uint8_t big[9014];
    test_frame(big, nic_mac, sizeof big, 3);
    assert_true(hvsim_netvsp_deliver(f->nv, big, sizeof big));
    pump_until(g, have_frames, 1, "the jumbo frame");
    assert_int_equal(g->frames[0].len, sizeof big);
    assert_true(memcmp(g->frames[0].data, big, sizeof big) == 0);

    /* MTU 100 (outside 1514..9216) is taken as 1514: a fresh fixture. */
    fg_teardown(NULL);
    f = fx_new(NULL);
    g = gnic_new(f);
    assert_int_equal(nvsp_init(g, NVSP_VERSION_5), NVSP_STATUS_SUCCESS);
    nvsp_ndis(g, 100);
    assert_int_equal(nvsp_recv_buf(g, 8, false, 0), NVSP_STATUS_SUCCESS);
    assert_int_equal(g->sub_size, 1806);
    /* A second receive buffer is a protocol error (openvmm SendReceiveBufferExists). */
    n = nvsp_build_send_recv_buf(m, sizeof m, NVSP_GUEST_MSG_SIZE, g->rb_gpadl, NVSP_RECV_BUF_ID);
    send_inband(g, 0, 5, true, m, n);
    fg_flush(&f->fg);
    expect_quiet(g);
    assert_int_equal(nstats(f).nvsp_errors, 1);
    assert_int_equal(nstats(f).channel_failures, 1);
}

/* RNDIS queries and sets, KEEPALIVE, HALT (no answer), a second INITIALIZE (FAILURE). */
static void test_rndis_control(void **state)
{
    (void)state;
    struct fx_opts o = { .queues = 4 };
    struct fixture *f = fx_new(&o);
    struct gnic *g = gnic_up(f, NVSP_VERSION_61, 32, 0);
    struct rndis_msg r;
    uint32_t v;
    rndis_query(g, 10, RNDIS_OID_GEN_MAXIMUM_FRAME_SIZE, &r);
    memcpy(&v, r.u.query_cmplt.info, 4);
    assert_int_equal(v, 1500);
    rndis_query(g, 11, RNDIS_OID_GEN_LINK_SPEED, &r);
    memcpy(&v, r.u.query_cmplt.info, 4);
    assert_int_equal(v, 100000000); /* 10 Gbit/s in 100 bit/s */
    rndis_query(g, 12, RNDIS_OID_GEN_MEDIA_CONNECT_STATUS, &r);
    memcpy(&v, r.u.query_cmplt.info, 4);
    assert_int_equal(v, RNDIS_MEDIA_STATE_CONNECTED);
    rndis_query(g, 13, RNDIS_OID_802_3_CURRENT_ADDRESS, &r);
    assert_memory_equal(r.u.query_cmplt.info, nic_mac, 6);
    rndis_query(g, 14, RNDIS_OID_GEN_RECEIVE_SCALE_CAPABILITIES, &r);
    assert_int_equal(r.status, RNDIS_STATUS_SUCCESS);
    assert_int_equal(r.u.query_cmplt.info_len, 18);
    assert_int_equal(r.u.query_cmplt.info[0], 0x88);
    memcpy(&v, r.u.query_cmplt.info + 12, 4);
    assert_int_equal(v, 4); /* receive queues */
    rndis_query(g, 15, RNDIS_OID_GEN_SUPPORTED_LIST, &r);
    assert_int_equal(r.status, RNDIS_STATUS_SUCCESS);
    assert_true(r.u.query_cmplt.info_len >= 40 && r.u.query_cmplt.info_len % 4 == 0);
    rndis_query(g, 16, 0x00010116u /* OID_GEN_VENDOR_DRIVER_VERSION */, &r);
    assert_int_equal(r.status, RNDIS_STATUS_NOT_SUPPORTED);
    assert_int_equal(r.u.query_cmplt.info_len, 0);
    uint32_t zero = 0;
    assert_int_equal(rndis_set(g, 17, RNDIS_OID_TCP_OFFLOAD_PARAMETERS, &zero, 4), RNDIS_STATUS_NOT_SUPPORTED);
    assert_int_equal(rndis_set(g, 18, RNDIS_OID_GEN_CURRENT_PACKET_FILTER, &zero, 2), RNDIS_STATUS_INVALID_LENGTH);
    uint8_t m[64];
    uint32_t n = rndis_build_keepalive(m, sizeof m, 19);
    rndis_call(g, m, n, &r);
    assert_int_equal(r.type, RNDIS_MSG_KEEPALIVE_CMPLT);
    assert_int_equal(r.request_id, 19);
    assert_int_equal(r.status, RNDIS_STATUS_SUCCESS);
    n = rndis_build_init(m, sizeof m, 20, 0x4000);
    rndis_call(g, m, n, &r);
    assert_int_equal(r.type, RNDIS_MSG_INITIALIZE_CMPLT);
    assert_int_equal(r.status, RNDIS_STATUS_FAILURE);
    /* HALT: the NVSP completion, no RNDIS answer. */
    n = rndis_build_halt(m, sizeof m, 21);
    assert_int_equal(send_rndis_gpa(g, 0, m, n, NVSP_CHANNEL_TYPE_CONTROL), NVSP_STATUS_SUCCESS);
    expect_quiet(g);
    struct hvsim_netvsp_stats s = nstats(f);
    assert_int_equal(s.oids_unsupported, 2);
    assert_int_equal(s.rndis_control, 14);
    assert_int_equal(s.rndis_answers, 13); /* all but HALT */
    assert_int_equal(s.nvsp_errors, 0);
}

/* No frame while the packet filter is 0 (openvmm); then the filter decides by destination. */
static void test_packet_filter(void **state)
{
    (void)state;
    struct fixture *f = fx_new(NULL);
    struct gnic *g = gnic_up(f, NVSP_VERSION_61, 32, 0);
    uint8_t fr[100], other[6] = { 0x02, 1, 2, 3, 4, 5 }, mcast[6] = { 0x01, 0x00, 0x5e, 0, 0, 1 };
    test_frame(fr, bcast, sizeof fr, 1);
    assert_false(hvsim_netvsp_deliver(f->nv, fr, sizeof fr));
    test_frame(fr, nic_mac, sizeof fr, 2);
    assert_false(hvsim_netvsp_deliver(f->nv, fr, sizeof fr));
    expect_quiet(g);
    assert_int_equal(nstats(f).rx_filtered, 2);
    uint32_t filter = FILTER_STD;
    assert_int_equal(rndis_set(g, 3, RNDIS_OID_GEN_CURRENT_PACKET_FILTER, &filter, 4), RNDIS_STATUS_SUCCESS);
    assert_true(hvsim_netvsp_deliver(f->nv, fr, sizeof fr));
    test_frame(fr, bcast, sizeof fr, 3);
    assert_true(hvsim_netvsp_deliver(f->nv, fr, sizeof fr));
    test_frame(fr, other, sizeof fr, 4);
    assert_false(hvsim_netvsp_deliver(f->nv, fr, sizeof fr));
    test_frame(fr, mcast, sizeof fr, 5);
    assert_false(hvsim_netvsp_deliver(f->nv, fr, sizeof fr));
    pump_until(g, have_frames, 2, "two frames");
    filter = RNDIS_PACKET_TYPE_PROMISCUOUS;
    assert_int_equal(rndis_set(g, 4, RNDIS_OID_GEN_CURRENT_PACKET_FILTER, &filter, 4), RNDIS_STATUS_SUCCESS);
    test_frame(fr, other, sizeof fr, 6);
    assert_true(hvsim_netvsp_deliver(f->nv, fr, sizeof fr));
    pump_until(g, have_frames, 3, "the promiscuous frame");
    assert_memory_equal(g->frames[2].data, fr, sizeof fr);
    /* Too short, too long: refused before anything else. */
    assert_false(hvsim_netvsp_deliver(f->nv, fr, 13));
    static uint8_t huge[1515];
    test_frame(huge, nic_mac, sizeof huge, 7);
    assert_false(hvsim_netvsp_deliver(f->nv, huge, sizeof huge));
    expect_quiet(g);
    struct hvsim_netvsp_stats s = nstats(f);
    assert_int_equal(s.rx_filtered, 4);
    assert_int_equal(s.rx_bad, 2);
    assert_int_equal(s.rx_frames, 3);
}

/* Guest -> host frames: by send-buffer sections (one PACKET, and three back to back in one section)
 * and by GPA direct (a frame across a page boundary), every byte reaching the backend in order. */
static void test_tx_paths(void **state)
{
    (void)state;
    struct fixture *f = fx_new(NULL);
    struct gnic *g = gnic_up(f, NVSP_VERSION_61, 32, FILTER_STD);
    uint8_t fr[1514];
    for (uint32_t i = 0; i < 10; i++) {
        uint32_t len = 60 + i * 140;
        test_frame(fr, gw_mac, len, (uint8_t)i);
        assert_int_equal(send_frames_section(g, 0, i, fr, len, 1), NVSP_STATUS_SUCCESS);
    }
    test_frame(fr, gw_mac, 1000, 42);
    assert_int_equal(send_frames_section(g, 0, 9, fr, 1000, 3), NVSP_STATUS_SUCCESS); /* 3 PACKETs */
    /* GPA direct with the message starting 4000 bytes into a page: it crosses into the next one. */
    uint8_t buf[2048];
    test_frame(fr, gw_mac, 1514, 77);
    uint32_t n = rndis_packet(buf, sizeof buf, fr, 1514);
    memcpy(f->fg.ram + g->scratch + 4000, buf, n);
    uint8_t nv[NVSP_GUEST_MSG_SIZE], c[128];
    rndis_pkt_msg(nv, NVSP_CHANNEL_TYPE_DATA, NVSP_NO_SECTION, 0);
    send_gpa(g, 0, 999, KMCL_PKT_FLAG_COMPLETION_REQUESTED, g->scratch + 4000, n, nv, sizeof nv);
    take_comp(g, 999, c);
    assert_int_equal(c[4], NVSP_STATUS_SUCCESS);
    assert_int_equal(captured(f), 14);
    for (uint32_t i = 0; i < 10; i++) {
        uint32_t len = 60 + i * 140;
        test_frame(fr, gw_mac, len, (uint8_t)i);
        assert_int_equal(f->cap_len[i], len);
        assert_memory_equal(f->cap[i], fr, len);
    }
    test_frame(fr, gw_mac, 1000, 42);
    for (uint32_t i = 10; i < 13; i++)
        assert_memory_equal(f->cap[i], fr, 1000);
    test_frame(fr, gw_mac, 1514, 77);
    assert_int_equal(f->cap_len[13], 1514);
    assert_memory_equal(f->cap[13], fr, 1514);
    struct hvsim_netvsp_stats s = nstats(f);
    assert_int_equal(s.tx_frames, 14);
    assert_int_equal(s.tx_bad_rndis + s.tx_bad_section + s.tx_bad_range + s.tx_dropped, 0);
}

/* Host -> guest: the openvmm layout (msg_len = the sub-allocation, frame at 256), sub-allocations
 * running out while the guest holds its completions (rx_no_buffer), recycled once it completes them,
 * and many more frames than sub-allocations through a receive buffer of scattered pages. */
static void test_rx_recycling(void **state)
{
    (void)state;
    struct fixture *f = fx_new(NULL);
    struct gnic *g = gnic_up(f, NVSP_VERSION_61, 8, FILTER_STD); /* 18 sub-allocations: 9 for control */
    assert_int_equal(g->sub_count, 18);
    struct hvsim_netvsp_stats s0 = nstats(f);
    assert_int_equal(s0.rx_sub_allocs, 18);
    g->hold = true;
    uint8_t fr[1514];
    unsigned ok = 0;
    for (unsigned i = 0; i < 12; i++) {
        test_frame(fr, nic_mac, 64 + i * 100, (uint8_t)i);
        ok += hvsim_netvsp_deliver(f->nv, fr, 64 + i * 100);
    }
    assert_int_equal(ok, 9);
    assert_int_equal(nstats(f).rx_no_buffer, 3);
    pump_until(g, have_frames, 9, "nine frames");
    for (unsigned i = 0; i < 9; i++) {
        const struct rxframe *r = &g->frames[i];
        test_frame(fr, nic_mac, 64 + i * 100, (uint8_t)i);
        assert_int_equal(r->len, 64 + i * 100);
        assert_memory_equal(r->data, fr, r->len);
        assert_int_equal(r->msg_len, 1806);
        assert_int_equal(r->range_len, 1806);
        assert_int_equal(r->data_offset, 256);
    }
    assert_int_equal(g->nheld, 9);
    complete_held(g);
    g->hold = false;
    fg_flush(&f->fg);
    int64_t deadline = now_ns() + (int64_t)FG_WAIT_MS * 1000000;
    while (nstats(f).rx_sub_allocs_free != 18 && now_ns() < deadline)
        sleep_us(100);
    assert_int_equal(nstats(f).rx_sub_allocs_free, 18);
    /* 500 frames through 9 data sub-allocations: deliver while the guest completes. */
    unsigned sent = 0;
    deadline = now_ns() + (int64_t)FG_WAIT_MS * 1000000;
    while (sent < 500 && now_ns() < deadline) {
        test_frame(fr, nic_mac, 60 + sent % 1400, (uint8_t)sent);
        if (hvsim_netvsp_deliver(f->nv, fr, 60 + sent % 1400))
            sent++;
        else
            pump_once(g);
    }
    assert_int_equal(sent, 500);
    pump_until(g, have_frames, 509, "500 more frames");
    for (unsigned i = 0; i < 500; i++) {
        test_frame(fr, nic_mac, 60 + i % 1400, (uint8_t)i);
        assert_int_equal(g->frames[9 + i].len, 60 + i % 1400);
        assert_memory_equal(g->frames[9 + i].data, fr, 60 + i % 1400);
    }
    expect_quiet(g);
    struct hvsim_netvsp_stats s = nstats(f);
    assert_int_equal(s.rx_frames, 509);
    assert_int_equal(s.rx_completions, 509 + 3);
    assert_int_equal(s.rx_sub_allocs_free, 18);
}

/* The compact layout: the frame right after the header and one PPI, msg_len = the message. */
static void test_rx_compact_layout(void **state)
{
    (void)state;
    struct fx_opts o = { .rx_compact = true };
    struct fixture *f = fx_new(&o);
    struct gnic *g = gnic_up(f, NVSP_VERSION_5, 16, FILTER_STD);
    uint8_t fr[300];
    test_frame(fr, nic_mac, sizeof fr, 9);
    assert_true(hvsim_netvsp_deliver(f->nv, fr, sizeof fr));
    pump_until(g, have_frames, 1, "the frame");
    assert_int_equal(g->frames[0].msg_len, 44 + 16 + sizeof fr);
    assert_int_equal(g->frames[0].range_len, g->frames[0].msg_len);
    assert_int_equal(g->frames[0].data_offset, 60);
    assert_memory_equal(g->frames[0].data, fr, sizeof fr);
}

/* Link down: INDICATE_STATUS MEDIA_DISCONNECT, no frame either way, the OID says disconnected; up:
 * MEDIA_CONNECT and frames flow again. */
static void test_link_down_up(void **state)
{
    (void)state;
    struct fixture *f = fx_new(NULL);
    struct gnic *g = gnic_up(f, NVSP_VERSION_61, 32, FILTER_STD);
    unsigned before = g->nctl;
    hvsim_netvsp_set_link(f->nv, false);
    pump_until(g, have_ctl, before + 1, "MEDIA_DISCONNECT");
    struct rndis_msg r;
    const char *w;
    assert_int_equal(rndis_msg_check(g->ctl[before].data, g->ctl[before].len, &r, &w), STATUS_OK);
    assert_int_equal(r.type, RNDIS_MSG_INDICATE_STATUS);
    assert_int_equal(r.status, RNDIS_STATUS_MEDIA_DISCONNECT);
    assert_int_equal(r.u.indicate.len, 0);
    assert_false(hvsim_netvsp_link_up(f->nv));
    uint8_t fr[100];
    test_frame(fr, nic_mac, sizeof fr, 1);
    assert_false(hvsim_netvsp_deliver(f->nv, fr, sizeof fr));
    assert_int_equal(send_frame_gpa(g, 0, fr, sizeof fr), NVSP_STATUS_SUCCESS); /* taken, not sent */
    assert_int_equal(captured(f), 0);
    rndis_query(g, 30, RNDIS_OID_GEN_MEDIA_CONNECT_STATUS, &r);
    uint32_t v;
    memcpy(&v, r.u.query_cmplt.info, 4);
    assert_int_equal(v, RNDIS_MEDIA_STATE_DISCONNECTED);
    hvsim_netvsp_set_link(f->nv, false); /* no change: no indication */
    before = g->nctl;
    hvsim_netvsp_set_link(f->nv, true);
    pump_until(g, have_ctl, before + 1, "MEDIA_CONNECT");
    assert_int_equal(rndis_msg_check(g->ctl[before].data, g->ctl[before].len, &r, &w), STATUS_OK);
    assert_int_equal(r.status, RNDIS_STATUS_MEDIA_CONNECT);
    assert_true(hvsim_netvsp_deliver(f->nv, fr, sizeof fr));
    pump_until(g, have_frames, 1, "the frame");
    assert_int_equal(send_frame_gpa(g, 0, fr, sizeof fr), NVSP_STATUS_SUCCESS);
    assert_int_equal(captured(f), 1);
    expect_quiet(g);
    struct hvsim_netvsp_stats s = nstats(f);
    assert_int_equal(s.link_changes, 2);
    assert_int_equal(s.indications, 2);
    assert_int_equal(s.rx_link_down, 1);
    assert_int_equal(s.tx_dropped, 1);
}

/* The RSS verification vectors of "Verifying the RSS Hash Calculation" (MicrosoftDocs/
 * windows-driver-docs, network/verifying-the-rss-hash-calculation.md). */
static const uint8_t ms_key[40] = { 0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3,
                                    0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3,
                                    0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa };

static bool have_table(struct gnic *g, uintptr_t n)
{
    return g->tables >= n;
}

/* Sub-channels: SUB_CHANNEL 3 on a 4-queue NIC, the offers, the indirection table once all are
 * open; frames spread over the queues by hash, each completed on its channel; RSS parameters with
 * Microsoft's Toeplitz vectors steer two flows to the expected queues; a request for too many
 * sub-channels fails; frames from the guest on a sub-channel reach the backend. */
static void test_sub_channels(void **state)
{
    (void)state;
    struct fx_opts o = { .queues = 4 };
    struct fixture *f = fx_new(&o);
    struct gnic *g = gnic_up(f, NVSP_VERSION_61, 64, FILTER_STD);
    uint8_t m[NVSP_GUEST_MSG_SIZE], c[128];
    uint32_t n = nvsp_build_subchannel_req(m, sizeof m, NVSP_GUEST_MSG_SIZE, 4);
    uint32_t cl = nvsp_call(g, m, n, c);
    struct nvsp_msg r;
    const char *w;
    assert_int_equal(nvsp_msg_check(c, cl, NVSP_TO_GUEST, &r, &w), STATUS_OK);
    assert_int_equal(r.type, NVSP_MSG5_SUB_CHANNEL);
    assert_int_equal(r.u.subchannel_complete.status, NVSP_STATUS_FAILURE);
    assert_int_equal(r.u.subchannel_complete.num_subchannels, 0);
    n = nvsp_build_subchannel_req(m, sizeof m, NVSP_GUEST_MSG_SIZE, 3);
    cl = nvsp_call(g, m, n, c);
    assert_int_equal(nvsp_msg_check(c, cl, NVSP_TO_GUEST, &r, &w), STATUS_OK);
    assert_int_equal(r.u.subchannel_complete.status, NVSP_STATUS_SUCCESS);
    assert_int_equal(r.u.subchannel_complete.num_subchannels, 3);
    uint32_t first = hvsim_vmbus_default_device_count + 1;
    for (uint32_t i = 0; i < 3; i++) {
        fg_wait_offer(&f->fg, first + i);
        const struct vmbus_msg_offer_channel *of = fg_offer_of(&f->fg, first + i);
        assert_int_equal(of->offer.sub_channel_index, i + 1);
    }
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(g->tables, 0); /* only once every channel is open */
        nic_ch_open(f, &g->ch[i + 1], first + i, 4, 8);
        g->nch++;
    }
    pump_until(g, have_table, 1, "SEND_INDIRECTION_TABLE");
    assert_int_equal(g->table_count, 16);
    assert_int_equal(g->table_offset, 12);
    for (uint32_t i = 0; i < 16; i++)
        assert_int_equal(g->table[i], i % 4);
    assert_int_equal(nstats(f).queues_open, 4);
    /* 64 flows by the default hash. */
    uint8_t fr[200];
    unsigned per_queue[MAX_Q] = { 0 };
    for (uint16_t i = 0; i < 64; i++) {
        uint8_t payload[32] = { (uint8_t)i };
        n = udp_frame(fr, nic_mac, gw_mac, 0x0A000202, (uint16_t)(1000 + i * 13), 0x0A00020F, 7, payload, sizeof payload);
        assert_true(hvsim_netvsp_deliver(f->nv, fr, n));
    }
    pump_until(g, have_frames, 64, "64 frames");
    for (unsigned i = 0; i < 64; i++)
        per_queue[g->frames[i].queue]++;
    unsigned used = 0;
    for (unsigned q = 0; q < 4; q++)
        used += per_queue[q] > 0;
    assert_true(used >= 3);
    /* A non-IP frame goes to the primary. */
    test_frame(fr, nic_mac, 80, 1);
    assert_true(hvsim_netvsp_deliver(f->nv, fr, 80));
    pump_until(g, have_frames, 65, "the ARP-like frame");
    assert_int_equal(g->frames[64].queue, 0);
    /* RSS: Toeplitz with the key, table[i] = 3 - i % 4; UDP ports hashed. */
    uint8_t p[28 + 40 + 128 * 4];
    memset(p, 0, sizeof p);
    p[0] = 0x89; /* NDIS_OBJECT_TYPE_RSS_PARAMETERS */
    p[1] = 1;
    p[2] = 28;
    uint32_t hash_info = 0x1 /* Toeplitz */ | 0x100 /* IPV4 */ | 0x4000 /* UDP_IPV4 */;
    memcpy(p + 8, &hash_info, 4);
    uint16_t table_size = 128 * 4, key_size = 40;
    uint32_t table_off = 68, key_off = 28;
    memcpy(p + 12, &table_size, 2);
    memcpy(p + 16, &table_off, 4);
    memcpy(p + 20, &key_size, 2);
    memcpy(p + 24, &key_off, 4);
    memcpy(p + key_off, ms_key, 40);
    for (uint32_t i = 0; i < 128; i++) {
        uint32_t e = 3 - i % 4;
        memcpy(p + table_off + 4 * i, &e, 4);
    }
    assert_int_equal(rndis_set(g, 40, RNDIS_OID_GEN_RECEIVE_SCALE_PARAMETERS, p, sizeof p), RNDIS_STATUS_SUCCESS);
    /* 66.9.149.187:2794 -> 161.142.100.80:1766: 0x51ccc178, index 0x78 = 120 -> queue 3;
     * 199.92.111.2:14230 -> 65.69.140.83:4739: 0xc626b0ea, index 0x6a = 106 -> queue 1. */
    uint8_t pl[8] = { 0 };
    n = udp_frame(fr, nic_mac, gw_mac, 0x420995BB, 2794, 0xA18E6450, 1766, pl, sizeof pl);
    assert_true(hvsim_netvsp_deliver(f->nv, fr, n));
    pump_until(g, have_frames, 66, "the first RSS frame");
    assert_int_equal(g->frames[65].queue, 3);
    n = udp_frame(fr, nic_mac, gw_mac, 0xC75C6F02, 14230, 0x41458C53, 4739, pl, sizeof pl);
    assert_true(hvsim_netvsp_deliver(f->nv, fr, n));
    pump_until(g, have_frames, 67, "the second RSS frame");
    assert_int_equal(g->frames[66].queue, 1);
    /* A table entry beyond the queues: INVALID_DATA. */
    uint32_t bad = 4;
    memcpy(p + table_off, &bad, 4);
    assert_int_equal(rndis_set(g, 41, RNDIS_OID_GEN_RECEIVE_SCALE_PARAMETERS, p, sizeof p), RNDIS_STATUS_INVALID_DATA);
    /* Transmit on a sub-channel. */
    test_frame(fr, gw_mac, 150, 5);
    assert_int_equal(send_frames_section(g, 2, 0, fr, 150, 1), NVSP_STATUS_SUCCESS);
    assert_int_equal(captured(f), 1);
    /* A control message on a sub-channel: FAILURE (openvmm NotSupportedOnSubChannel). */
    n = rndis_build_keepalive(m, sizeof m, 50);
    assert_int_equal(send_rndis_gpa(g, 1, m, n, NVSP_CHANNEL_TYPE_CONTROL), NVSP_STATUS_FAILURE);
    expect_quiet(g);
    struct hvsim_netvsp_stats s = nstats(f);
    assert_int_equal(s.sub_channels_offered, 3);
    assert_int_equal(s.indirection_tables, 1);
    assert_int_equal(s.nvsp_errors, 0);
    assert_int_equal(s.rx_frames, 67);
    assert_int_equal(s.rx_completions, 67 + 5); /* + INIT, QUERY, three SETs */
    /* Closing the primary closes (and rescinds) the sub-channels. */
    struct vmbus_msg_relid cm = { .hdr.type = VMBUS_MSG_CLOSECHANNEL, .child_relid = NIC_RELID };
    fg_post(&f->fg, &cm, sizeof cm);
    fg_flush(&f->fg);
    s = nstats(f);
    assert_int_equal(s.queues_open, 0);
    assert_int_equal(s.closes, 4);
    assert_int_equal(s.version, 0);
}

/* Bad input on the data path: lying RNDIS lengths and offsets, a section out of range or too
 * large, a range outside RAM, no completion request: each counted, the packet completed with
 * FAILURE (or dropped), the channel still served. */
static void test_bad_rndis(void **state)
{
    (void)state;
    struct fixture *f = fx_new(NULL);
    struct gnic *g = gnic_up(f, NVSP_VERSION_61, 32, FILTER_STD);
    uint8_t fr[200], buf[512];
    test_frame(fr, gw_mac, sizeof fr, 1);
    uint32_t n = rndis_packet(buf, sizeof buf, fr, sizeof fr);
    /* msg_len beyond the bytes sent */
    uint32_t v = n + 100;
    memcpy(buf + 4, &v, 4);
    assert_int_equal(send_rndis_gpa(g, 0, buf, n, NVSP_CHANNEL_TYPE_DATA), NVSP_STATUS_FAILURE);
    /* data beyond the message */
    v = n;
    memcpy(buf + 4, &v, 4);
    v = 400;
    memcpy(buf + 8, &v, 4);
    assert_int_equal(send_rndis_gpa(g, 0, buf, n, NVSP_CHANNEL_TYPE_DATA), NVSP_STATUS_FAILURE);
    /* data offset inside the header */
    v = 4;
    memcpy(buf + 8, &v, 4);
    assert_int_equal(send_rndis_gpa(g, 0, buf, n, NVSP_CHANNEL_TYPE_DATA), NVSP_STATUS_FAILURE);
    /* a PPI element of size 0 */
    n = rndis_build_packet(buf, sizeof buf, (const struct rndis_ppi_u32[]){ { RNDIS_PPI_CHECKSUM, 0 } }, 1, 100);
    memcpy(buf + n, fr, 100);
    v = 0;
    memcpy(buf + 44, &v, 4);
    assert_int_equal(send_rndis_gpa(g, 0, buf, n + 100, NVSP_CHANNEL_TYPE_DATA), NVSP_STATUS_FAILURE);
    /* a VC handle; OOB data (openvmm refuses both) */
    n = rndis_packet(buf, sizeof buf, fr, 100);
    v = 1;
    memcpy(buf + 36, &v, 4);
    assert_int_equal(send_rndis_gpa(g, 0, buf, n, NVSP_CHANNEL_TYPE_DATA), NVSP_STATUS_FAILURE);
    /* trailing garbage after the PACKET */
    n = rndis_packet(buf, sizeof buf, fr, 100);
    assert_int_equal(send_rndis_gpa(g, 0, buf, n + 4, NVSP_CHANNEL_TYPE_DATA), NVSP_STATUS_FAILURE);
    /* an unknown RNDIS type */
    v = 0x77;
    memcpy(buf, &v, 4);
    assert_int_equal(send_rndis_gpa(g, 0, buf, n, NVSP_CHANNEL_TYPE_CONTROL), NVSP_STATUS_FAILURE);
    uint32_t bad_rndis = 7;
    /* send-buffer sections: index past the buffer (16 pages: 10 sections), size > 6144, size 0 */
    uint8_t nv[NVSP_GUEST_MSG_SIZE], c[128];
    static const uint32_t sect[3][2] = { { 1000, 100 }, { 11, 100 }, { 0, 6145 } }; /* 10 is partly inside */
    for (int i = 0; i < 3; i++) {
        rndis_pkt_msg(nv, 0, sect[i][0], sect[i][1]);
        send_inband(g, 0, 300 + (uint64_t)i, true, nv, sizeof nv);
        take_comp(g, 300 + (uint64_t)i, c);
        assert_int_equal(c[4], NVSP_STATUS_FAILURE);
    }
    rndis_pkt_msg(nv, 0, 9, 0); /* the last section, empty */
    send_inband(g, 0, 310, true, nv, sizeof nv);
    take_comp(g, 310, c);
    assert_int_equal(c[4], NVSP_STATUS_FAILURE);
    /* in-band without a section: no data at all */
    rndis_pkt_msg(nv, 0, NVSP_NO_SECTION, 0);
    send_inband(g, 0, 311, true, nv, sizeof nv);
    take_comp(g, 311, c);
    assert_int_equal(c[4], NVSP_STATUS_FAILURE);
    /* a GPA range outside RAM */
    uint64_t pfn = RAM_SIZE / PAGE + 5;
    struct kmcl_page_range r = { .byte_count = 100, .byte_offset = 0, .pfns = &pfn };
    struct kmcl_iov iov = { nv, sizeof nv };
    bool signal = false;
    assert_int_equal(kmcl_pkt_send_gpa_direct(&g->ch[0].tx, 312, KMCL_PKT_FLAG_COMPLETION_REQUESTED, &r, 1, &iov, 1,
                                              0, &signal),
                     STATUS_OK);
    if (signal)
        fg_guest_signal(&f->fg, NIC_RELID);
    take_comp(g, 312, c);
    assert_int_equal(c[4], NVSP_STATUS_FAILURE);
    /* no completion request: dropped, nothing answers */
    n = rndis_packet(buf, sizeof buf, fr, 100);
    memcpy(f->fg.ram + g->scratch, buf, n);
    send_gpa(g, 0, 313, 0, g->scratch, n, nv, sizeof nv);
    expect_quiet(g);
    /* still served */
    assert_int_equal(send_frame_gpa(g, 0, fr, 100), NVSP_STATUS_SUCCESS);
    assert_int_equal(captured(f), 1);
    struct hvsim_netvsp_stats s = nstats(f);
    assert_int_equal(s.tx_bad_rndis, bad_rndis);
    assert_int_equal(s.tx_bad_section, 4);
    assert_int_equal(s.tx_bad_range, 2);
    assert_int_equal(s.tx_no_rc, 1);
    assert_int_equal(s.tx_frames, 1);
    assert_int_equal(s.nvsp_errors, 0);
    assert_int_equal(s.channel_failures, 0);
    assert_true(fg_log_matches(&f->fg, "completed FAILURE", NULL) >= 10);
}

/* Protocol errors fail the channel (openvmm ends its worker): an unknown NVSP type; in another
 * fixture a completion for a transfer-page packet the host never sent (kmcl's rule). Neither
 * crashes; the rest of the bus goes on. */
static void test_protocol_errors(void **state)
{
    (void)state;
    struct fixture *f = fx_new(NULL);
    struct gnic *g = gnic_up(f, NVSP_VERSION_61, 32, FILTER_STD);
    uint32_t t = 999;
    uint8_t m[NVSP_GUEST_MSG_SIZE] = { 0 };
    memcpy(m, &t, 4);
    send_inband(g, 0, 1, true, m, sizeof m);
    fg_flush(&f->fg);
    expect_quiet(g);
    struct hvsim_netvsp_stats s = nstats(f);
    assert_int_equal(s.nvsp_errors, 1);
    assert_int_equal(s.channel_failures, 1);
    assert_int_equal(s.queues_open, 0);
    assert_true(fg_log_matches(&f->fg, "unknown NVSP message type", NULL) >= 1);
    uint8_t fr[100];
    test_frame(fr, nic_mac, sizeof fr, 1);
    assert_false(hvsim_netvsp_deliver(f->nv, fr, sizeof fr));
    fg_teardown(NULL);

    f = fx_new(NULL);
    g = gnic_up(f, NVSP_VERSION_61, 32, FILTER_STD);
    g->hold = true;
    assert_true(hvsim_netvsp_deliver(f->nv, fr, sizeof fr));
    pump_until(g, have_frames, 1, "a frame");
    send_completion(g, 0, g->held[0].trans ^ 0x5555); /* an id the host never handed out */
    fg_flush(&f->fg);
    int64_t deadline = now_ns() + (int64_t)FG_WAIT_MS * 1000000;
    while (nstats(f).channel_failures == 0 && now_ns() < deadline)
        sleep_us(100);
    s = nstats(f);
    assert_int_equal(s.channel_failures, 1);
    assert_int_equal(s.queues_open, 0);
    assert_true(fg_log_matches(&f->fg, "completion for a transaction id never sent", NULL) >= 1);
    assert_false(hvsim_netvsp_deliver(f->nv, fr, sizeof fr));
    /* The guest closes the failed channel: its packets are cancelled, the sub-allocations come back. */
    struct vmbus_msg_relid cm = { .hdr.type = VMBUS_MSG_CLOSECHANNEL, .child_relid = NIC_RELID };
    fg_post(&f->fg, &cm, sizeof cm);
    fg_flush(&f->fg);
    assert_int_equal(nstats(f).closes, 1);
    g->nheld = 0;
}

/* Messages out of order: anything before INIT, a v2 message at v1, SEND_RNDIS_PACKET before the
 * buffers; and a REVOKE, after which the primary is no longer read and frames are refused. */
static void test_order_and_revoke(void **state)
{
    (void)state;
    static const char *const why[] = { "before INIT", "newer than the negotiated NVSP 1",
                                       "SEND_RNDIS_PACKET before the NDIS version" };
    for (int i = 0; i < 3; i++) {
        struct fixture *f = fx_new(NULL);
        struct gnic *g = gnic_new(f);
        uint8_t m[NVSP_GUEST_MSG_SIZE];
        uint32_t n;
        if (i == 0) {
            n = nvsp_build_ndis_version(m, sizeof m, NVSP_GUEST_MSG_SIZE, NVSP_NDIS_VERSION_6_30);
        } else {
            assert_int_equal(nvsp_init(g, i == 1 ? NVSP_VERSION_1 : NVSP_VERSION_61), NVSP_STATUS_SUCCESS);
            n = i == 1 ? nvsp_build_ndis_config(m, sizeof m, NVSP_GUEST_MSG_SIZE, 1514, 0)
                       : rndis_pkt_msg(m, 1, 0, 10);
        }
        send_inband(g, 0, 1, true, m, n);
        fg_flush(&f->fg);
        expect_quiet(g);
        assert_int_equal(nstats(f).nvsp_errors, 1);
        assert_true(fg_log_matches(&f->fg, why[i], NULL) >= 1);
        fg_teardown(NULL);
    }
    struct fixture *f = fx_new(NULL);
    struct gnic *g = gnic_up(f, NVSP_VERSION_61, 32, FILTER_STD);
    uint8_t m[NVSP_GUEST_MSG_SIZE];
    uint32_t n = nvsp_build_revoke_recv_buf(m, sizeof m, NVSP_GUEST_MSG_SIZE, NVSP_RECV_BUF_ID);
    send_inband(g, 0, 2, false, m, n);
    fg_flush(&f->fg);
    uint8_t fr[100];
    test_frame(fr, nic_mac, sizeof fr, 1);
    assert_false(hvsim_netvsp_deliver(f->nv, fr, sizeof fr));
    struct hvsim_netvsp_stats s = nstats(f);
    assert_int_equal(s.revokes, 1);
    assert_int_equal(s.rx_not_ready, 1);
    assert_int_equal(s.rx_sub_allocs, 0);
    /* The primary is no longer read: a request stays unanswered. */
    n = rndis_build_keepalive(m, sizeof m, 5);
    memcpy(f->fg.ram + g->scratch, m, n);
    uint8_t nv[NVSP_GUEST_MSG_SIZE];
    rndis_pkt_msg(nv, 1, NVSP_NO_SECTION, 0);
    send_gpa(g, 0, 3, KMCL_PKT_FLAG_COMPLETION_REQUESTED, g->scratch, n, nv, sizeof nv);
    expect_quiet(g);
}

/* ---- the gateway, end to end with real loopback sockets ---- */

static int host_socket(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    if (port)
        *port = ntohs(a.sin_port);
    struct timeval tv = { .tv_sec = FG_WAIT_MS / 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static void host_send(int fd, uint16_t port, const void *p, size_t n)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    assert_int_equal(sendto(fd, p, n, 0, (struct sockaddr *)&a, sizeof a), (ssize_t)n);
}

static ssize_t host_recv(int fd, void *buf, size_t cap, uint16_t *from_port)
{
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    ssize_t n = recvfrom(fd, buf, cap, 0, (struct sockaddr *)&a, &al);
    if (from_port)
        *from_port = ntohs(a.sin_port);
    return n;
}

/* A DHCP client message (BOOTREQUEST) of `type` from the NIC's MAC. */
static uint32_t dhcp_frame(uint8_t *fr, uint8_t type, uint32_t xid, uint32_t ciaddr, uint32_t requested,
                           uint32_t server, uint32_t src_ip, uint32_t dst_ip, const uint8_t *dst_mac)
{
    uint8_t d[300];
    memset(d, 0, sizeof d);
    d[0] = 1;
    d[1] = 1;
    d[2] = 6;
    be32(d + 4, xid);
    be32(d + 12, ciaddr);
    memcpy(d + 28, nic_mac, 6);
    be32(d + 236, 0x63825363);
    uint32_t o = 240;
    d[o++] = 53;
    d[o++] = 1;
    d[o++] = type;
    if (requested) {
        d[o++] = 50;
        d[o++] = 4;
        be32(d + o, requested);
        o += 4;
    }
    if (server) {
        d[o++] = 54;
        d[o++] = 4;
        be32(d + o, server);
        o += 4;
    }
    d[o++] = 55; /* parameter request list: mask, router */
    d[o++] = 2;
    d[o++] = 1;
    d[o++] = 3;
    d[o++] = 255;
    return udp_frame(fr, dst_mac, nic_mac, src_ip, 68, dst_ip, 67, d, sizeof d);
}

struct dhcp_reply {
    uint32_t dst_ip, yiaddr, ciaddr, xid, server, lease, t1, t2, mask, router;
    int type;
    bool bcast_mac;
};

static void parse_dhcp_reply(const struct rxframe *fr, struct dhcp_reply *r)
{
    uint32_t src, dst, l4;
    const uint8_t *u = check_ipv4(fr, 17, &src, &dst, &l4);
    assert_int_equal(src, 0x0A000202);
    assert_int_equal(rd16(u), 67);
    assert_int_equal(rd16(u + 2), 68);
    const uint8_t *d = u + 8;
    uint32_t len = l4 - 8;
    assert_true(len >= 300);
    assert_int_equal(d[0], 2);
    assert_int_equal(rd32(d + 236), 0x63825363);
    assert_memory_equal(d + 28, nic_mac, 6);
    memset(r, 0, sizeof *r);
    r->type = -1;
    r->dst_ip = dst;
    r->xid = rd32(d + 4);
    r->ciaddr = rd32(d + 12);
    r->yiaddr = rd32(d + 16);
    r->bcast_mac = memcmp(fr->data, bcast, 6) == 0;
    for (uint32_t i = 240; i < len && d[i] != 255;) {
        if (d[i] == 0) {
            i++;
            continue;
        }
        uint8_t c = d[i], n = d[i + 1];
        const uint8_t *v = d + i + 2;
        assert_true(i + 2u + n <= len);
        if (c == 53)
            r->type = v[0];
        else if (c == 54)
            r->server = rd32(v);
        else if (c == 51)
            r->lease = rd32(v);
        else if (c == 58)
            r->t1 = rd32(v);
        else if (c == 59)
            r->t2 = rd32(v);
        else if (c == 1)
            r->mask = rd32(v);
        else if (c == 3)
            r->router = rd32(v);
        i += 2u + n;
    }
}

/* Sends a frame from the guest and waits until the host -> guest frame count reaches want. */
static void guest_exchange(struct gnic *g, const uint8_t *fr, uint32_t n, unsigned want, const char *what)
{
    assert_int_equal(send_frame_gpa(g, 0, fr, n), NVSP_STATUS_SUCCESS);
    pump_until(g, have_frames, want, what);
}

/* Answers every echo request among the frames not seen yet; returns how many. */
static unsigned answer_pings(struct gnic *g, unsigned *seen)
{
    unsigned answered = 0;
    for (; *seen < g->nframes; (*seen)++) {
        const struct rxframe *fr = &g->frames[*seen];
        if (fr->len < 42 || rd16(fr->data + 12) != 0x0800 || fr->data[14 + 9] != 1)
            continue;
        uint32_t src, dst, l4;
        const uint8_t *c = check_ipv4(fr, 1, &src, &dst, &l4);
        if (c[0] != 8)
            continue;
        assert_int_equal(src, 0x0A000202);
        assert_int_equal(dst, 0x0A00020F);
        uint8_t reply[1600], out[1600];
        memcpy(reply, c, l4);
        reply[0] = 0;
        uint32_t n = ip_frame(out, gw_mac, nic_mac, dst, src, 1, reply, l4);
        assert_int_equal(send_frame_gpa(g, 0, out, n), NVSP_STATUS_SUCCESS);
        answered++;
    }
    return answered;
}

static unsigned ping_seen, ping_answered;

static bool answered_pings(struct gnic *g, uintptr_t n)
{
    ping_answered += answer_pings(g, &ping_seen);
    return ping_answered >= n;
}

/* The gateway: DHCP (DISCOVER/OFFER, REQUEST/ACK, NAK, renewal), ARP, a host datagram forwarded to
 * the guest's port 7 and the guest's reply back byte for byte, a second host peer, outbound UDP to
 * a host socket through 10.0.2.2, the guest pinging 10.0.2.2, pings and link changes from the
 * control port, bad frames counted. */
static void test_gateway(void **state)
{
    (void)state;
    struct fx_opts o = { .gateway = true, .lease_s = 30 };
    struct fixture *f = fx_new(&o);
    struct gnic *g = gnic_up(f, NVSP_VERSION_61, 64, FILTER_STD);
    uint8_t fr[1600];
    unsigned want = 0;

    /* DHCP */
    uint32_t n = dhcp_frame(fr, 1, 0xABCD0001, 0, 0, 0, 0, 0xFFFFFFFF, bcast);
    guest_exchange(g, fr, n, ++want, "DHCP OFFER");
    struct dhcp_reply r;
    parse_dhcp_reply(&g->frames[want - 1], &r);
    assert_int_equal(r.type, 2);
    assert_int_equal(r.xid, 0xABCD0001);
    assert_int_equal(r.yiaddr, 0x0A00020F);
    assert_int_equal(r.server, 0x0A000202);
    assert_int_equal(r.lease, 30);
    assert_int_equal(r.t1, 15);
    assert_int_equal(r.t2, 26);
    assert_int_equal(r.mask, 0xFFFFFF00);
    assert_int_equal(r.router, 0x0A000202);
    assert_int_equal(r.dst_ip, 0xFFFFFFFF);
    assert_true(r.bcast_mac);
    n = dhcp_frame(fr, 3, 0xABCD0001, 0, 0x0A00020F, 0x0A000202, 0, 0xFFFFFFFF, bcast);
    guest_exchange(g, fr, n, ++want, "DHCP ACK");
    parse_dhcp_reply(&g->frames[want - 1], &r);
    assert_int_equal(r.type, 5);
    assert_int_equal(r.yiaddr, 0x0A00020F);
    assert_int_equal(r.lease, 30);
    n = dhcp_frame(fr, 3, 0xABCD0002, 0, 0x0A000263, 0x0A000202, 0, 0xFFFFFFFF, bcast);
    guest_exchange(g, fr, n, ++want, "DHCP NAK");
    parse_dhcp_reply(&g->frames[want - 1], &r);
    assert_int_equal(r.type, 6);
    assert_int_equal(r.yiaddr, 0);
    /* renewal: unicast to the server with ciaddr, answered by unicast */
    n = dhcp_frame(fr, 3, 0xABCD0003, 0x0A00020F, 0, 0, 0x0A00020F, 0x0A000202, gw_mac);
    guest_exchange(g, fr, n, ++want, "DHCP ACK (renewal)");
    parse_dhcp_reply(&g->frames[want - 1], &r);
    assert_int_equal(r.type, 5);
    assert_int_equal(r.dst_ip, 0x0A00020F);
    assert_int_equal(r.ciaddr, 0x0A00020F);
    assert_false(r.bcast_mac);
    assert_memory_equal(g->frames[want - 1].data, nic_mac, 6);
    /* a REQUEST for another server: ignored */
    n = dhcp_frame(fr, 3, 0xABCD0004, 0, 0x0A00020F, 0x0A000203, 0, 0xFFFFFFFF, bcast);
    assert_int_equal(send_frame_gpa(g, 0, fr, n), NVSP_STATUS_SUCCESS);

    /* ARP for the gateway */
    memcpy(fr, bcast, 6);
    memcpy(fr + 6, nic_mac, 6);
    be16(fr + 12, 0x0806);
    uint8_t *a = fr + 14;
    be16(a, 1);
    be16(a + 2, 0x0800);
    a[4] = 6;
    a[5] = 4;
    be16(a + 6, 1);
    memcpy(a + 8, nic_mac, 6);
    be32(a + 14, 0x0A00020F);
    memset(a + 18, 0, 6);
    be32(a + 24, 0x0A000202);
    guest_exchange(g, fr, 42, ++want, "the ARP reply");
    const struct rxframe *ar = &g->frames[want - 1];
    assert_int_equal(rd16(ar->data + 12), 0x0806);
    assert_memory_equal(ar->data, nic_mac, 6);
    assert_int_equal(rd16(ar->data + 14 + 6), 2);
    assert_memory_equal(ar->data + 14 + 8, gw_mac, 6);
    assert_int_equal(rd32(ar->data + 14 + 14), 0x0A000202);
    assert_int_equal(rd32(ar->data + 14 + 24), 0x0A00020F);

    /* A host datagram to the forward, to the guest's port 7; the guest's answer goes back. */
    uint16_t hport;
    int h = host_socket(&hport);
    uint16_t fwd = hvsim_netgw_forward_port(f->gw, 0);
    assert_true(fwd != 0);
    uint8_t data[1472];
    for (unsigned i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 3 + 1);
    host_send(h, fwd, data, sizeof data);
    pump_until(g, have_frames, ++want, "the forwarded datagram");
    uint32_t src, dst, l4;
    const struct rxframe *uf = &g->frames[want - 1];
    assert_int_equal(uf->len, 1514);
    assert_memory_equal(uf->data, nic_mac, 6);
    assert_memory_equal(uf->data + 6, gw_mac, 6);
    const uint8_t *u = check_ipv4(uf, 17, &src, &dst, &l4);
    assert_int_equal(src, 0x0A000202);
    assert_int_equal(dst, 0x0A00020F);
    assert_int_equal(rd16(u + 2), 7);
    uint16_t mapped = rd16(u);
    assert_int_equal(mapped, HVSIM_NETGW_PEER_PORT_BASE);
    assert_int_equal(l4, 8 + sizeof data);
    assert_memory_equal(u + 8, data, sizeof data);
    uint8_t echo[1472];
    for (unsigned i = 0; i < sizeof echo; i++)
        echo[i] = (uint8_t)(255 - data[i]);
    n = udp_frame(fr, gw_mac, nic_mac, 0x0A00020F, 7, 0x0A000202, mapped, echo, sizeof echo);
    assert_int_equal(send_frame_gpa(g, 0, fr, n), NVSP_STATUS_SUCCESS);
    uint8_t got[2048];
    uint16_t from;
    assert_int_equal(host_recv(h, got, sizeof got, &from), (ssize_t)sizeof echo);
    assert_int_equal(from, fwd);
    assert_memory_equal(got, echo, sizeof echo);
    /* A second peer gets its own mapped port; a 1-byte datagram; the second forward's port 9. */
    uint16_t hport2;
    int h2 = host_socket(&hport2);
    host_send(h2, fwd, "x", 1);
    pump_until(g, have_frames, ++want, "the second peer's datagram");
    u = check_ipv4(&g->frames[want - 1], 17, &src, &dst, &l4);
    uint16_t mapped2 = rd16(u);
    assert_int_equal(mapped2, HVSIM_NETGW_PEER_PORT_BASE + 1);
    assert_int_equal(l4, 9);
    host_send(h2, hvsim_netgw_forward_port(f->gw, 1), "yz", 2);
    pump_until(g, have_frames, ++want, "the datagram to port 9");
    u = check_ipv4(&g->frames[want - 1], 17, &src, &dst, &l4);
    assert_int_equal(rd16(u + 2), 9);
    assert_int_equal(rd16(u), mapped2 + 1); /* a peer per forward */
    n = udp_frame(fr, gw_mac, nic_mac, 0x0A00020F, 7, 0x0A000202, mapped2, "ok", 2);
    assert_int_equal(send_frame_gpa(g, 0, fr, n), NVSP_STATUS_SUCCESS);
    assert_int_equal(host_recv(h2, got, sizeof got, NULL), 2);
    assert_memory_equal(got, "ok", 2);

    /* Outbound: the guest to 10.0.2.2:hport reaches 127.0.0.1:hport; the answer comes back. */
    n = udp_frame(fr, gw_mac, nic_mac, 0x0A00020F, 5000, 0x0A000202, hport, "out", 3);
    assert_int_equal(send_frame_gpa(g, 0, fr, n), NVSP_STATUS_SUCCESS);
    uint16_t relay;
    assert_int_equal(host_recv(h, got, sizeof got, &relay), 3);
    assert_memory_equal(got, "out", 3);
    host_send(h, relay, "back", 4);
    pump_until(g, have_frames, ++want, "the outbound answer");
    u = check_ipv4(&g->frames[want - 1], 17, &src, &dst, &l4);
    assert_int_equal(src, 0x0A000202);
    assert_int_equal(rd16(u), hport);
    assert_int_equal(rd16(u + 2), 5000);
    assert_memory_equal(u + 8, "back", 4);

    /* The guest pings 10.0.2.2. */
    uint8_t icmp[64];
    memset(icmp, 0xA5, sizeof icmp);
    icmp[0] = 8;
    icmp[1] = 0;
    be16(icmp + 4, 0x77);
    be16(icmp + 6, 1);
    n = ip_frame(fr, gw_mac, nic_mac, 0x0A00020F, 0x0A000202, 1, icmp, sizeof icmp);
    guest_exchange(g, fr, n, ++want, "the echo reply");
    const uint8_t *c = check_ipv4(&g->frames[want - 1], 1, &src, &dst, &l4);
    assert_int_equal(c[0], 0);
    assert_int_equal(l4, sizeof icmp);
    assert_memory_equal(c + 4, icmp + 4, sizeof icmp - 4);

    /* Bad frames: IP checksum, a fragment, TCP, a short UDP length, a wrong UDP checksum, VLAN. */
    n = udp_frame(fr, gw_mac, nic_mac, 0x0A00020F, 7, 0x0A000202, mapped, "bad", 3);
    fr[14 + 10] ^= 1;
    assert_int_equal(send_frame_gpa(g, 0, fr, n), NVSP_STATUS_SUCCESS);
    n = udp_frame(fr, gw_mac, nic_mac, 0x0A00020F, 7, 0x0A000202, mapped, "bad", 3);
    fr[14 + 6] = 0x20; /* MF */
    be16(fr + 14 + 10, 0);
    be16(fr + 14 + 10, csum(fr + 14, 20, 0));
    assert_int_equal(send_frame_gpa(g, 0, fr, n), NVSP_STATUS_SUCCESS);
    n = ip_frame(fr, gw_mac, nic_mac, 0x0A00020F, 0x0A000202, 6, icmp, 20);
    assert_int_equal(send_frame_gpa(g, 0, fr, n), NVSP_STATUS_SUCCESS);
    n = udp_frame(fr, gw_mac, nic_mac, 0x0A00020F, 7, 0x0A000202, mapped, "bad", 3);
    be16(fr + 34 + 4, 200); /* UDP length beyond the IP payload */
    assert_int_equal(send_frame_gpa(g, 0, fr, n), NVSP_STATUS_SUCCESS);
    n = udp_frame(fr, gw_mac, nic_mac, 0x0A00020F, 7, 0x0A000202, mapped, "bad", 3);
    fr[34 + 8] ^= 0xFF;
    assert_int_equal(send_frame_gpa(g, 0, fr, n), NVSP_STATUS_SUCCESS);
    n = test_frame(fr, gw_mac, 60, 1);
    be16(fr + 12, 0x8100);
    assert_int_equal(send_frame_gpa(g, 0, fr, n), NVSP_STATUS_SUCCESS);

    /* The control port: ping 3, stats, link down/up, an unknown command. */
    uint16_t ctl = hvsim_netgw_control_port(f->gw);
    assert_true(ctl != 0);
    int cs = host_socket(NULL);
    host_send(cs, ctl, "ping 3 100\n", 11);
    ping_seen = want;
    ping_answered = 0;
    pump_until(g, answered_pings, 3, "three pings");
    want = g->nframes;
    char line[4096];
    ssize_t ln = host_recv(cs, line, sizeof line - 1, NULL);
    assert_true(ln > 0);
    line[ln] = '\0';
    unsigned sent_n, recv_n;
    assert_int_equal(sscanf(line, "ping: %u sent, %u received", &sent_n, &recv_n), 2);
    assert_int_equal(sent_n, 3);
    assert_int_equal(recv_n, 3);
    assert_non_null(strstr(line, "rtt min/avg/max"));
    host_send(cs, ctl, "stats", 5);
    ln = host_recv(cs, line, sizeof line - 1, NULL);
    assert_true(ln > 0);
    line[ln] = '\0';
    assert_int_equal(strncmp(line, "stats: netvsp: NVSP 6.1, link up", 32), 0);
    assert_non_null(strstr(line, "gateway: guest 10.0.2.15"));
    unsigned before = g->nctl;
    host_send(cs, ctl, "link down", 9);
    ln = host_recv(cs, line, sizeof line - 1, NULL);
    line[ln > 0 ? ln : 0] = '\0';
    assert_string_equal(line, "link: down");
    pump_until(g, have_ctl, before + 1, "MEDIA_DISCONNECT");
    host_send(h, fwd, "lost", 4); /* dropped by the NIC while down */
    struct hvsim_netgw_stats gs;
    int64_t deadline = now_ns() + (int64_t)FG_WAIT_MS * 1000000;
    do { /* the gateway reads its control socket first in a round: let it see the datagram first */
        sleep_us(200);
        hvsim_netgw_get_stats(f->gw, &gs);
    } while (gs.frames_out_dropped == 0 && now_ns() < deadline);
    host_send(cs, ctl, "link up", 7);
    ln = host_recv(cs, line, sizeof line - 1, NULL);
    line[ln > 0 ? ln : 0] = '\0';
    assert_string_equal(line, "link: up");
    pump_until(g, have_ctl, before + 2, "MEDIA_CONNECT");
    host_send(cs, ctl, "fly", 3);
    ln = host_recv(cs, line, sizeof line - 1, NULL);
    line[ln > 0 ? ln : 0] = '\0';
    assert_int_equal(strncmp(line, "error: unknown command", 22), 0);
    expect_quiet(g);
    assert_int_equal(g->nframes, want);
    close(cs);
    close(h);
    close(h2);

    hvsim_netgw_get_stats(f->gw, &gs);
    assert_int_equal(gs.guest_ip, 0x0A00020F);
    assert_int_equal(gs.dhcp_discovers, 1);
    assert_int_equal(gs.dhcp_offers, 1);
    assert_int_equal(gs.dhcp_requests, 4);
    assert_int_equal(gs.dhcp_acks, 2);
    assert_int_equal(gs.dhcp_naks, 1);
    assert_int_equal(gs.dhcp_other, 1);
    assert_int_equal(gs.arp_replies, 1);
    assert_int_equal(gs.icmp_echo_replies, 1);
    assert_int_equal(gs.pings_sent, 3);
    assert_int_equal(gs.pings_received, 3);
    assert_int_equal(gs.drop_ip_checksum, 1);
    assert_int_equal(gs.drop_fragment, 1);
    assert_int_equal(gs.drop_protocol, 1);
    assert_int_equal(gs.drop_udp, 1);
    assert_int_equal(gs.drop_udp_checksum, 1);
    assert_int_equal(gs.drop_eth, 1);
    assert_int_equal(gs.peers, 3);
    assert_int_equal(gs.flows, 1);
    assert_int_equal(gs.frames_out_dropped, 1);
    assert_int_equal(nstats(f).rx_link_down, 1);
}

/* hvsim_netgw_ping from another thread while the guest answers; a forward port in use is refused
 * with a clear message. */
static void *ping_thread(void *arg)
{
    struct fixture *f = arg;
    static struct hvsim_netgw_ping_result r;
    bool ok = hvsim_netgw_ping(f->gw, 5, 0, &r);
    return ok ? &r : NULL;
}

static void test_gateway_api_ping_and_bind(void **state)
{
    (void)state;
    struct fx_opts o = { .gateway = true };
    struct fixture *f = fx_new(&o);
    struct gnic *g = gnic_up(f, NVSP_VERSION_6, 32, FILTER_STD);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, ping_thread, f), 0);
    ping_seen = 0;
    ping_answered = 0;
    pump_until(g, answered_pings, 5, "five pings");
    void *res;
    pthread_join(t, &res);
    assert_non_null(res);
    const struct hvsim_netgw_ping_result *r = res;
    assert_int_equal(r->sent, 5);
    assert_int_equal(r->received, 5);
    assert_true(r->rtt_min_us <= r->rtt_avg_us && r->rtt_avg_us <= r->rtt_max_us);
    /* A port already bound. */
    uint16_t busy;
    int fd = host_socket(&busy);
    struct hvsim_netgw_forward fw = { busy, 7 };
    struct hvsim_netgw_config gc = { .nv = f->nv, .forwards = &fw, .forward_count = 1 };
    char err[256];
    assert_null(hvsim_netgw_create(&gc, err, sizeof err));
    assert_non_null(strstr(err, "cannot bind 127.0.0.1:"));
    assert_non_null(strstr(err, "Address already in use"));
    close(fd);
}

/* Concurrency: two threads deliver numbered frames as fast as they can over a 3-queue NIC while a
 * third toggles the link, the guest completes everything it gets; every frame a deliver call
 * accepted arrives exactly once and intact. Then the guest closes the primary while the threads
 * still deliver: teardown waits for deliveries inside kmcl, nothing crashes or leaks. */
struct stress {
    struct fixture *f;
    unsigned id;
    volatile bool stop;
    unsigned accepted, attempts;
};

static uint8_t stress_seen[3][200000];

static void stress_check(struct gnic *g, const struct rxframe *fr)
{
    uint32_t src, dst, l4;
    const uint8_t *u = check_ipv4(fr, 17, &src, &dst, &l4);
    assert_int_equal(l4, 8 + 64);
    uint32_t seq;
    memcpy(&seq, u + 8, 4);
    unsigned id = seq >> 24, k = seq & 0xFFFFFF;
    assert_true((id == 1 || id == 2) && k < 200000);
    assert_int_equal(rd16(u + 2), 7 + id);
    for (unsigned i = 4; i < 64; i++)
        assert_int_equal(u[8 + i], (uint8_t)(seq & 0xFF));
    if (stress_seen[id][k]) { /* exactly once */
        fprintf(stderr, "duplicate: id %u seq %u queue %u (first on queue %u) frames_total %u\n", id, k, fr->queue,
                stress_seen[id][k] - 1, g->frames_total);
        fail_msg("frame %u of thread %u arrived twice", k, id);
    }
    stress_seen[id][k] = (uint8_t)(1 + fr->queue);
}

static void *stress_deliver(void *arg)
{
    struct stress *st = arg;
    uint8_t fr[400], payload[64];
    while (!__atomic_load_n(&st->stop, __ATOMIC_ACQUIRE) && st->attempts < 200000) {
        uint32_t seq = st->id << 24 | st->accepted;
        memset(payload, (int)(seq & 0xFF), sizeof payload);
        memcpy(payload, &seq, 4);
        uint32_t n = udp_frame(fr, nic_mac, gw_mac, 0x0A000202, (uint16_t)(2000 + st->attempts % 97), 0x0A00020F,
                               (uint16_t)(7 + st->id), payload, sizeof payload);
        st->attempts++;
        if (hvsim_netvsp_deliver(st->f->nv, fr, n))
            st->accepted++;
        else
            sched_yield();
    }
    return NULL;
}

static void *stress_link(void *arg)
{
    struct stress *st = arg;
    for (unsigned i = 0; i < 20 && !__atomic_load_n(&st->stop, __ATOMIC_ACQUIRE); i++) {
        hvsim_netvsp_set_link(st->f->nv, i % 2 != 0);
        sleep_us(2000);
    }
    hvsim_netvsp_set_link(st->f->nv, true);
    return NULL;
}

static void test_concurrent_deliver_and_close(void **state)
{
    (void)state;
    struct fx_opts o = { .queues = 3 };
    struct fixture *f = fx_new(&o);
    struct gnic *g = gnic_up(f, NVSP_VERSION_61, 32, FILTER_STD);
    memset(stress_seen, 0, sizeof stress_seen);
    g->on_frame = stress_check;
    uint8_t m[NVSP_GUEST_MSG_SIZE], c[128];
    uint32_t n = nvsp_build_subchannel_req(m, sizeof m, NVSP_GUEST_MSG_SIZE, 2);
    nvsp_call(g, m, n, c);
    for (uint32_t i = 0; i < 2; i++) {
        fg_wait_offer(&f->fg, hvsim_vmbus_default_device_count + 1 + i);
        nic_ch_open(f, &g->ch[i + 1], hvsim_vmbus_default_device_count + 1 + i, 4, 8);
        g->nch++;
    }
    struct stress st[3] = { { .f = f, .id = 1 }, { .f = f, .id = 2 }, { .f = f, .id = 3 } };
    pthread_t t[3];
    assert_int_equal(pthread_create(&t[0], NULL, stress_deliver, &st[0]), 0);
    assert_int_equal(pthread_create(&t[1], NULL, stress_deliver, &st[1]), 0);
    assert_int_equal(pthread_create(&t[2], NULL, stress_link, &st[2]), 0);
    int64_t end = now_ns() + 300000000ll; /* 0.3 s of traffic */
    while (now_ns() < end)
        if (!pump_once(g))
            sleep_us(20);
    for (int i = 0; i < 3; i++)
        __atomic_store_n(&st[i].stop, true, __ATOMIC_RELEASE);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    unsigned total = st[0].accepted + st[1].accepted;
    pump_until(g, have_frames, total, "every accepted frame");
    fg_flush(&f->fg);
    pump_once(g);
    assert_true(total > 50);
    /* Every accepted frame exactly once, intact (stress_check); none more. */
    struct hvsim_netvsp_stats s = nstats(f);
    assert_int_equal(s.rx_frames, total);
    assert_int_equal(g->frames_total, total);
    for (unsigned id = 1; id <= 2; id++)
        for (unsigned k = 0; k < st[id - 1].accepted; k++)
            assert_true(stress_seen[id][k] != 0);
    unsigned per_queue[MAX_Q] = { 0 }, used = 0;
    for (unsigned i = 0; i < g->nframes; i++)
        per_queue[g->frames[i].queue]++;
    for (unsigned q = 0; q < 3; q++)
        used += per_queue[q] > 0;
    assert_true(used >= 2);
    assert_true(s.link_changes >= 19);
    /* Now close the primary (and with it the sub-channels) under fire (numbering starts again). */
    g->on_frame = NULL;
    struct stress more[2] = { { .f = f, .id = 1 }, { .f = f, .id = 2 } };
    assert_int_equal(pthread_create(&t[0], NULL, stress_deliver, &more[0]), 0);
    assert_int_equal(pthread_create(&t[1], NULL, stress_deliver, &more[1]), 0);
    for (int i = 0; i < 50; i++) { /* keep the guest side moving while they start */
        pump_once(g);
        sleep_us(100);
    }
    struct vmbus_msg_relid cm = { .hdr.type = VMBUS_MSG_CLOSECHANNEL, .child_relid = NIC_RELID };
    fg_post(&f->fg, &cm, sizeof cm);
    fg_flush(&f->fg);
    for (int i = 0; i < 2; i++)
        __atomic_store_n(&more[i].stop, true, __ATOMIC_RELEASE);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    s = nstats(f);
    assert_int_equal(s.queues_open, 0);
    assert_int_equal(s.opens, s.closes);
    assert_int_equal(s.version, 0);
    uint8_t fr[100];
    test_frame(fr, nic_mac, sizeof fr, 1);
    assert_false(hvsim_netvsp_deliver(f->nv, fr, sizeof fr));
}

static void count_line(void *ctx, const char *line)
{
    (void)line;
    (*(unsigned *)ctx)++;
}

/* The device the netvsp offers is the default table's NIC; bad configurations are refused. */
static void test_device_entry(void **state)
{
    (void)state;
    struct hvsim_netvsp *nv = hvsim_netvsp_create(NULL);
    assert_non_null(nv);
    struct hvsim_vmbus_device d = hvsim_netvsp_device(nv);
    const struct vmbus_guid nic = VMBUS_GUID_NIC;
    assert_true(vmbus_guid_equal(&d.type, &nic));
    assert_true(vmbus_guid_equal(&d.instance, &hvsim_vmbus_default_devices[0].instance));
    assert_true(d.monitored);
    assert_int_equal(d.sub_channels, 0);
    assert_non_null(d.on_open);
    assert_ptr_not_equal(d.ctx, NULL);
    uint8_t mac[6];
    hvsim_netvsp_mac(nv, mac);
    assert_memory_equal(mac, nic_mac, 6);
    hvsim_netvsp_destroy(nv);
    unsigned lines = 0;
    struct hvsim_netvsp_config bad = { .max_version = 0x12345, .log = count_line, .log_ctx = &lines };
    struct hvsim_netvsp_config q9 = { .queues = 9, .log = count_line, .log_ctx = &lines };
    assert_null(hvsim_netvsp_create(&bad));
    assert_null(hvsim_netvsp_create(&q9));
    assert_int_equal(lines, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_handshake_each_version, fg_teardown),
        cmocka_unit_test_teardown(test_version_walk_down, fg_teardown),
        cmocka_unit_test_teardown(test_receive_buffer, fg_teardown),
        cmocka_unit_test_teardown(test_rndis_control, fg_teardown),
        cmocka_unit_test_teardown(test_packet_filter, fg_teardown),
        cmocka_unit_test_teardown(test_tx_paths, fg_teardown),
        cmocka_unit_test_teardown(test_rx_recycling, fg_teardown),
        cmocka_unit_test_teardown(test_rx_compact_layout, fg_teardown),
        cmocka_unit_test_teardown(test_link_down_up, fg_teardown),
        cmocka_unit_test_teardown(test_sub_channels, fg_teardown),
        cmocka_unit_test_teardown(test_bad_rndis, fg_teardown),
        cmocka_unit_test_teardown(test_protocol_errors, fg_teardown),
        cmocka_unit_test_teardown(test_order_and_revoke, fg_teardown),
        cmocka_unit_test_teardown(test_concurrent_deliver_and_close, fg_teardown),
        cmocka_unit_test_teardown(test_gateway, fg_teardown),
        cmocka_unit_test_teardown(test_gateway_api_ping_and_bind, fg_teardown),
        cmocka_unit_test_teardown(test_device_entry, fg_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
