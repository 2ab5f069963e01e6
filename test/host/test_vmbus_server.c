/*
 * Unit tests for hvsim's VMBus server (sim/vmbus_server.h).
 *
 * Each test builds an hvsim model over 32 MiB of guest RAM with the server on top, and plays the
 * guest by hand with the shared fake guest (test/lib/fake_guest.h): the SynIC set up through
 * hvsim_wrmsr, channel messages posted with HvCallPostMessage (input in guest RAM), answers read
 * from the SINT's message slot the way a guest does (atomic loads, message_type cleared last, EOM
 * when another is pending), signals through HvCallSignalEvent and the monitor page. The devices are
 * the default set with recording callbacks.
 * Waits are bounded (generous: the suite also runs under ASan/UBSan and TSan on a loaded machine).
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
#include "sim/hvsim.h"
#include "sim/vmbus_server.h"
#include "test/lib/fake_guest.h"
#include "test/lib/test_util.h"

#define RAM_SIZE (32u << 20)
#define VPS 2u
#define DEV_COUNT 7 /* the default devices */
#define TEST_DEV_RELID 7
#define NETVSC_RELID 1
#define STORVSC_RELID 2
#define HEARTBEAT_RELID 3

static const uint32_t ladder[] = {
    VMBUS_VERSION_COPPER,   VMBUS_VERSION_WIN10_V5_3, VMBUS_VERSION_WIN10_V5_2, VMBUS_VERSION_WIN10_V5_1,
    VMBUS_VERSION_WIN10_V5, VMBUS_VERSION_WIN10_RS3,  VMBUS_VERSION_WIN10,      VMBUS_VERSION_WIN8_1,
    VMBUS_VERSION_WIN8,     VMBUS_VERSION_WIN7,       VMBUS_VERSION_WS2008,
};
#define LADDER_LEN (sizeof ladder / sizeof ladder[0])

struct fixture {
    struct fake_guest fg;
    struct hvsim_vmbus_device devs[DEV_COUNT];
    /* What the callbacks saw (fg.lock, fg.changed broadcast): they come from other threads. */
    unsigned irqs;
    unsigned opens[VMBUS_MAX_RELID + 1], closes[VMBUS_MAX_RELID + 1], signals[VMBUS_MAX_RELID + 1];
    void *in_ring[VMBUS_MAX_RELID + 1], *out_ring[VMBUS_MAX_RELID + 1];
    uint32_t in_bytes[VMBUS_MAX_RELID + 1], out_bytes[VMBUS_MAX_RELID + 1];
    bool result_seen_at_open[VMBUS_MAX_RELID + 1]; /* the open result was already in the slot in on_open */
    struct hvsim_vmbus_channel *ch[VMBUS_MAX_RELID + 1];
};

/* ---- callbacks (hvsim's raise; the devices') ---- */

static void record_irq(void *ctx, uint32_t vp, uint8_t vector)
{
    (void)vp;
    (void)vector;
    struct fixture *f = ctx;
    pthread_mutex_lock(&f->fg.lock);
    f->irqs++;
    pthread_mutex_unlock(&f->fg.lock);
}

static void dev_open(void *ctx, struct hvsim_vmbus_channel *ch, void *in_ring, uint32_t in_bytes, void *out_ring,
                     uint32_t out_bytes)
{
    struct fixture *f = ctx;
    uint32_t r = hvsim_vmbus_channel_relid(ch);
    bool result_there = fg_slot_type(&f->fg, f->fg.ctl_vp, f->fg.ctl_sint) != HV_MESSAGE_NONE;
    if (hvsim_vmbus_send_on_open(ch))
        __atomic_store_n((uint64_t *)out_ring + 8, 0x5e11d0aull, __ATOMIC_RELAXED); /* "a first packet" */
    pthread_mutex_lock(&f->fg.lock);
    f->opens[r]++;
    f->ch[r] = ch;
    f->in_ring[r] = in_ring;
    f->out_ring[r] = out_ring;
    f->in_bytes[r] = in_bytes;
    f->out_bytes[r] = out_bytes;
    f->result_seen_at_open[r] = result_there;
    pthread_cond_broadcast(&f->fg.changed);
    pthread_mutex_unlock(&f->fg.lock);
}

/* Counts one more for the channel in `counter` (closes or signals). */
static void dev_count(struct fixture *f, unsigned *counter, struct hvsim_vmbus_channel *ch)
{
    pthread_mutex_lock(&f->fg.lock);
    counter[hvsim_vmbus_channel_relid(ch)]++;
    pthread_cond_broadcast(&f->fg.changed);
    pthread_mutex_unlock(&f->fg.lock);
}

static void dev_close(void *ctx, struct hvsim_vmbus_channel *ch)
{
    struct fixture *f = ctx;
    dev_count(f, f->closes, ch);
}

static void dev_signal(void *ctx, struct hvsim_vmbus_channel *ch)
{
    struct fixture *f = ctx;
    dev_count(f, f->signals, ch);
}

/* ---- fixture ---- */

static struct hvsim_vmbus_config base_config(uint32_t max_version)
{
    return (struct hvsim_vmbus_config){ .max_version = max_version };
}

static void fx_release(void *fixture)
{
    struct fixture *f = fixture;
    fg_destroy(&f->fg);
}

/* A model with every VP's SynIC on and a server with the default devices (recording callbacks). */
static struct fixture *fx_new_queue(struct hvsim_vmbus_config cfg, uint32_t queue_depth)
{
    struct fixture *f = fg_fixture_new(sizeof *f, fx_release);
    struct fg_config gc = { .hv = { .vp_count = VPS, .queue_depth = queue_depth }, .ram_size = RAM_SIZE,
                            .raise = record_irq, .raise_ctx = f };
    fg_init(&f->fg, &gc);
    fg_ready(&f->fg);
    assert_int_equal(hvsim_vmbus_default_device_count, DEV_COUNT);
    for (uint32_t i = 0; i < DEV_COUNT; i++) {
        f->devs[i] = hvsim_vmbus_default_devices[i];
        f->devs[i].on_open = dev_open;
        f->devs[i].on_close = dev_close;
        f->devs[i].on_signal = dev_signal;
        f->devs[i].ctx = f;
    }
    cfg.devices = f->devs;
    cfg.device_count = DEV_COUNT;
    fg_vmbus_start(&f->fg, &cfg);
    return f;
}

static struct fixture *fx_new(struct hvsim_vmbus_config cfg)
{
    return fx_new_queue(cfg, 0);
}

static struct hvsim_vmbus_stats stats(struct fixture *f)
{
    struct hvsim_vmbus_stats s;
    hvsim_vmbus_get_stats(f->fg.vb, &s);
    return s;
}

static struct fixture *fx_connected(struct hvsim_vmbus_config cfg, uint32_t version)
{
    struct fixture *f = fx_new(cfg);
    fg_connect(&f->fg, version);
    assert_int_equal(fg_request_offers(&f->fg), DEV_COUNT);
    return f;
}

/* Connected at VMBUS_VERSION_COPPER with the given hazards on. */
static struct fixture *fx_hazard(uint32_t hazards)
{
    struct hvsim_vmbus_config cfg = base_config(0);
    cfg.hazards = hazards;
    return fx_connected(cfg, VMBUS_VERSION_COPPER);
}

/* Posts the GPADL_HEADER of a 30-page GPADL with the first 26 of its PFNs (as many as a header
 * holds); the GPADL_BODY with the rest is the caller's to send, or not. range_count: 1, or a wrong
 * one. */
static void post_gpadl_header_30(struct fixture *f, uint32_t relid, uint32_t gpadl, uint16_t range_count,
                                 const uint64_t *pfn)
{
    uint8_t buf[HV_MESSAGE_PAYLOAD_MAX];
    struct vmbus_msg_gpadl_header h = { .hdr.type = VMBUS_MSG_GPADL_HEADER, .child_relid = relid, .gpadl = gpadl,
                                        .range_buflen = 8 + 8 * 30, .range_count = range_count,
                                        .byte_count = 30 * 4096 };
    memcpy(buf, &h, sizeof h);
    memcpy(buf + sizeof h, pfn, 26 * 8);
    fg_post(&f->fg, buf, sizeof h + 26 * 8);
}

/* ---- version negotiation ---- */

/* For every host, a guest that offers 6.0 downwards (conn 4 from 5.0 on, falling back to conn 1 when
 * conn 4 does not exist) lands on exactly the host's version, and then uses the returned id. */
static void test_version_ladder(void **state)
{
    (void)state;
    for (size_t h = 0; h < LADDER_LEN; h++) {
        uint32_t max = ladder[h];
        struct hvsim_vmbus_config cfg = base_config(max);
        cfg.features = VMBUS_FEATURE_GUEST_SIGNAL_PARAMS | VMBUS_FEATURE_MODIFY_CONNECTION;
        struct fixture *f = fx_new(cfg);
        f->fg.ctl_vp = 1;
        bool multiclient = true;
        uint32_t negotiated = 0, conn4_posts = 0;
        struct fg_msg m;
        for (size_t i = 0; i < LADDER_LEN && !negotiated; i++) {
            uint32_t v = ladder[i];
            uint32_t conn = v >= VMBUS_VERSION_WIN10_V5 && multiclient ? VMBUS_CONN_MESSAGE_MULTICLIENT : VMBUS_CONN_MESSAGE;
            struct vmbus_msg_initiate_contact ic =
                fg_contact_msg(v, 1, fg_target_info_for(v, VMBUS_FEATURE_GUEST_SIGNAL_PARAMS | VMBUS_FEATURE_CHANNEL_INTR_REDIRECT));
            uint16_t status = fg_post_on(&f->fg, conn, &ic, sizeof ic);
            if (conn == VMBUS_CONN_MESSAGE_MULTICLIENT && status == HV_STATUS_INVALID_CONNECTION_ID) {
                assert_true(max < VMBUS_VERSION_WIN10_V5); /* an old host has no conn 4 */
                multiclient = false;
                i--; /* the same version again on conn 1 */
                continue;
            }
            assert_int_equal(status, HV_STATUS_SUCCESS);
            conn4_posts += conn == VMBUS_CONN_MESSAGE_MULTICLIENT;
            fg_expect(&f->fg, VMBUS_MSG_VERSION_RESPONSE, &m);
            if (m.u.version.v1.version_supported)
                negotiated = v;
            else
                assert_int_equal(m.size, sizeof(struct vmbus_msg_version_response));
        }
        assert_int_equal(negotiated, max);
        assert_int_equal(stats(f).version, max);
        assert_int_equal(stats(f).messages_conn_multiclient, conn4_posts);
        struct vmbus_msg_header req = { .type = VMBUS_MSG_REQUESTOFFERS };
        if (max >= VMBUS_VERSION_WIN10_V5) {
            assert_true(multiclient);
            assert_int_equal(m.u.version.v1.msg_conn_id, HVSIM_VMBUS_CONN_REDIRECT);
            assert_int_equal(m.size, max >= VMBUS_VERSION_COPPER ? sizeof(struct vmbus_msg_version_response2)
                                                                   : sizeof(struct vmbus_msg_version_response));
            if (max >= VMBUS_VERSION_COPPER) /* offered (0x1 | 0x4) & asked (0x1 | 0x2) */
                assert_int_equal(m.u.version.supported_features, VMBUS_FEATURE_GUEST_SIGNAL_PARAMS);
            assert_int_equal(fg_post_on(&f->fg, HVSIM_VMBUS_CONN_REDIRECT, &req, sizeof req), HV_STATUS_SUCCESS);
            fg_expect(&f->fg, VMBUS_MSG_ALLOFFERS_DELIVERED, &m);
            assert_int_equal(stats(f).messages_conn_redirect, 1);
        } else {
            assert_false(multiclient || max >= VMBUS_VERSION_WIN10_V5);
            assert_int_equal(m.u.version.v1.msg_conn_id, 0);
            assert_int_equal(fg_post_on(&f->fg, HVSIM_VMBUS_CONN_REDIRECT, &req, sizeof req),
                             HV_STATUS_INVALID_CONNECTION_ID);
            assert_int_equal(fg_post_on(&f->fg, VMBUS_CONN_MESSAGE, &req, sizeof req), HV_STATUS_SUCCESS);
            fg_expect(&f->fg, VMBUS_MSG_ALLOFFERS_DELIVERED, &m);
            assert_int_equal(stats(f).messages_conn_redirect, 0);
        }
        assert_int_equal(f->fg.offer_count, DEV_COUNT);
        assert_int_equal(stats(f).guest_errors, 0);
        fg_teardown(NULL);
    }
}

static void expect_refused(struct fixture *f, uint32_t vp, uint32_t sint, const char *log_part)
{
    struct fg_msg m;
    assert_true(fg_recv_on(&f->fg, vp, sint, &m, FG_WAIT_MS));
    assert_int_equal(m.type, VMBUS_MSG_VERSION_RESPONSE);
    assert_int_equal(m.u.version.v1.version_supported, 0);
    assert_int_equal(stats(f).version, 0);
    if (log_part && !fg_log_matches(&f->fg, "vmbus: guest error: INITIATE_CONTACT", log_part)) {
        fg_dump_logs(&f->fg);
        fail_msg("no guest error line with \"%s\"", log_part);
    }
}

static void test_contact_checks(void **state)
{
    (void)state;
    struct fixture *f = fx_new(base_config(0));
    struct vmbus_msg_initiate_contact ic;
    /* Unknown and too new versions are refused quietly (the guest tries the next). */
    ic = fg_contact_msg(0x00070000, 0, VMBUS_TARGET_INFO(2, 0, 0));
    assert_int_equal(fg_post_on(&f->fg, VMBUS_CONN_MESSAGE_MULTICLIENT, &ic, sizeof ic), HV_STATUS_SUCCESS);
    expect_refused(f, 0, 2, NULL);
    /* Guest errors: no such VP (answered on the posting VP), no such SINT (answered on SINT 2),
     * monitor pages outside RAM, unaligned or equal. */
    ic = fg_contact_msg(VMBUS_VERSION_COPPER, 7, VMBUS_TARGET_INFO(2, 0, 0));
    assert_int_equal(fg_post_on(&f->fg, VMBUS_CONN_MESSAGE_MULTICLIENT, &ic, sizeof ic), HV_STATUS_SUCCESS);
    expect_refused(f, 0, 2, "target VP 7");
    ic = fg_contact_msg(VMBUS_VERSION_COPPER, 1, VMBUS_TARGET_INFO(16, 0, 0));
    assert_int_equal(fg_post_on(&f->fg, VMBUS_CONN_MESSAGE_MULTICLIENT, &ic, sizeof ic), HV_STATUS_SUCCESS);
    expect_refused(f, 1, 2, "SINT 16");
    ic = fg_contact_msg(VMBUS_VERSION_WIN10_V5_3, 0, VMBUS_TARGET_INFO(2, 1, 0));
    assert_int_equal(fg_post_on(&f->fg, VMBUS_CONN_MESSAGE_MULTICLIENT, &ic, sizeof ic), HV_STATUS_SUCCESS);
    expect_refused(f, 0, 2, "VTL 1");
    ic = fg_contact_msg(VMBUS_VERSION_WIN10, 0, FG_INT_PAGE_GPA);
    ic.monitor_page2 = RAM_SIZE;
    assert_int_equal(fg_post_on(&f->fg, VMBUS_CONN_MESSAGE, &ic, sizeof ic), HV_STATUS_SUCCESS);
    expect_refused(f, 0, 2, "monitor pages");
    ic.monitor_page2 = FG_MON2_GPA + 8;
    assert_int_equal(fg_post_on(&f->fg, VMBUS_CONN_MESSAGE, &ic, sizeof ic), HV_STATUS_SUCCESS);
    expect_refused(f, 0, 2, "monitor pages");
    ic.monitor_page2 = FG_MON1_GPA;
    assert_int_equal(fg_post_on(&f->fg, VMBUS_CONN_MESSAGE, &ic, sizeof ic), HV_STATUS_SUCCESS);
    expect_refused(f, 0, 2, "same page");
    ic = fg_contact_msg(VMBUS_VERSION_WIN10, 0, FG_INT_PAGE_GPA + 1);
    assert_int_equal(fg_post_on(&f->fg, VMBUS_CONN_MESSAGE, &ic, sizeof ic), HV_STATUS_SUCCESS);
    expect_refused(f, 0, 2, "interrupt page");
    ic = fg_contact_msg(VMBUS_VERSION_WIN7, 0, 0);
    assert_int_equal(fg_post_on(&f->fg, VMBUS_CONN_MESSAGE, &ic, sizeof ic), HV_STATUS_SUCCESS);
    expect_refused(f, 0, 2, "no interrupt page");
    assert_int_equal(stats(f).guest_errors, 8);

    /* Monitor pages may be 0; the SINT is the guest's choice on conn 4 (here 5, VP 1). */
    ic = fg_contact_msg(VMBUS_VERSION_COPPER, 1, VMBUS_TARGET_INFO(5, 0, 0));
    ic.monitor_page1 = ic.monitor_page2 = 0;
    assert_int_equal(fg_post_on(&f->fg, VMBUS_CONN_MESSAGE_MULTICLIENT, &ic, sizeof ic), HV_STATUS_SUCCESS);
    struct fg_msg m;
    assert_true(fg_recv_on(&f->fg, 1, 5, &m, FG_WAIT_MS));
    assert_int_equal(m.u.version.v1.version_supported, 1);
    assert_int_equal(stats(f).version, VMBUS_VERSION_COPPER);
    f->fg.ctl_vp = 1;
    f->fg.ctl_sint = 5;
    f->fg.msg_conn = HVSIM_VMBUS_CONN_REDIRECT;
    /* A second INITIATE_CONTACT while connected: refused (answered at the connection's target), the
     * connection stays. */
    ic = fg_contact_msg(VMBUS_VERSION_COPPER, 0, VMBUS_TARGET_INFO(2, 0, 0));
    fg_post(&f->fg, &ic, sizeof ic);
    fg_expect(&f->fg, VMBUS_MSG_VERSION_RESPONSE, &m);
    assert_int_equal(m.u.version.v1.version_supported, 0);
    assert_int_equal(stats(f).version, VMBUS_VERSION_COPPER);
    assert_int_equal(fg_log_matches(&f->fg, "INITIATE_CONTACT for version 6.0", "already connected"), 1);
    assert_int_equal(fg_request_offers(&f->fg), DEV_COUNT);
    /* On conn 1 the SINT is always 2, whatever the target info says; after UNLOAD contact works again. */
    struct vmbus_msg_header unload = { .type = VMBUS_MSG_UNLOAD };
    fg_post(&f->fg, &unload, sizeof unload);
    fg_expect(&f->fg, VMBUS_MSG_UNLOAD_RESPONSE, &m);
    ic = fg_contact_msg(VMBUS_VERSION_WIN10_V5_2, 0, VMBUS_TARGET_INFO(9, 0, 0));
    assert_int_equal(fg_post_on(&f->fg, VMBUS_CONN_MESSAGE, &ic, sizeof ic), HV_STATUS_SUCCESS);
    assert_true(fg_recv_on(&f->fg, 0, 2, &m, FG_WAIT_MS));
    assert_int_equal(m.u.version.v1.version_supported, 1);
    assert_int_equal(m.u.version.v1.msg_conn_id, HVSIM_VMBUS_CONN_REDIRECT);
    assert_int_equal(stats(f).version, VMBUS_VERSION_WIN10_V5_2);
    assert_int_equal(stats(f).guest_errors, 9);
}

/* ---- offers ---- */

static void test_default_offers(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(0), VMBUS_VERSION_COPPER);
    assert_int_equal(f->fg.offer_count, DEV_COUNT);
    bool monitor_used[VMBUS_MONITOR_IDS] = { false };
    const struct vmbus_monitor_page *mon1 = (const void *)(f->fg.ram + FG_MON1_GPA);
    for (unsigned i = 0; i < DEV_COUNT; i++) {
        const struct vmbus_msg_offer_channel *o = &f->fg.offers[i];
        const struct hvsim_vmbus_device *d = &hvsim_vmbus_default_devices[i];
        assert_int_equal(o->child_relid, i + 1); /* distinct, from 1, in table order */
        assert_int_equal(o->connection_id, HVSIM_VMBUS_CONN_CHANNEL_BASE + i + 1);
        assert_true(vmbus_guid_equal(&o->offer.if_type, &d->type));
        assert_true(vmbus_guid_equal(&o->offer.if_instance, &d->instance));
        for (unsigned k = 0; k < i; k++)
            assert_false(vmbus_guid_equal(&o->offer.if_instance, &f->fg.offers[k].offer.if_instance));
        assert_int_equal(o->offer.sub_channel_index, 0);
        assert_int_equal(o->offer.chn_flags, d->flags);
        assert_int_equal(o->monitor_allocated & 1, d->monitored);
        if (d->monitored) {
            assert_false(monitor_used[o->monitor_id]);
            monitor_used[o->monitor_id] = true;
            /* The host's side of monitor page 1: latency (100 us = 1000 x 100 ns) and connection. */
            uint32_t g = o->monitor_id / 32, b = o->monitor_id % 32;
            assert_int_equal(mon1->latency[g][b], 1000);
            assert_int_equal(mon1->parameter[g][b].connection_id, o->connection_id);
        }
    }
    /* The IC services are message-mode pipes; the NIC and SCSI controller plain device channels. */
    static const struct vmbus_guid nic = VMBUS_GUID_NIC, kvp = VMBUS_GUID_KVP, test = VMBUS_GUID_HVSIM_TEST;
    assert_true(vmbus_guid_equal(&f->fg.offers[0].offer.if_type, &nic));
    assert_int_equal(f->fg.offers[0].offer.chn_flags, 0);
    assert_true(vmbus_guid_equal(&f->fg.offers[5].offer.if_type, &kvp));
    assert_int_equal(f->fg.offers[5].offer.chn_flags, VMBUS_OFFER_ENUMERATE_DEVICE_INTERFACE | VMBUS_OFFER_NAMED_PIPE_MODE);
    assert_int_equal(f->fg.offers[5].offer.user_defined[0], 4);
    assert_int_equal(f->fg.offers[5].monitor_allocated, 0);
    assert_true(vmbus_guid_equal(&f->fg.offers[6].offer.if_type, &test));
    struct hvsim_vmbus_stats s = stats(f);
    assert_int_equal(s.offers, DEV_COUNT);
    assert_int_equal(s.sub_channels, 0);
    /* A second REQUESTOFFERS is a guest error and sends nothing. */
    struct vmbus_msg_header h = { .type = VMBUS_MSG_REQUESTOFFERS };
    fg_post(&f->fg, &h, sizeof h);
    fg_expect_nothing(&f->fg);
    assert_int_equal(stats(f).guest_errors, 1);
}

/* ---- GPADLs ---- */

static void test_gpadl_sizes(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(0), VMBUS_VERSION_COPPER);
    static const uint32_t sizes[] = { 1, 26, 27, 54, 55, 4096 };
    uint64_t *pfn = malloc(4096 * sizeof *pfn);
    assert_non_null(pfn);
    for (uint32_t i = 0; i < 4096; i++) /* scattered pages: fine for a GPADL that is not a ring */
        pfn[i] = (FG_ARENA_GPA >> 12) + (i * 7u) % 4096u;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint32_t handle = VMBUS_GPADL_FIRST_HANDLE + (uint32_t)i;
        assert_int_equal(fg_create_gpadl(&f->fg, NETVSC_RELID, handle, pfn, sizes[i]), 0);
        assert_int_equal(stats(f).gpadls, i + 1);
    }
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        fg_teardown_gpadl(&f->fg, NETVSC_RELID, VMBUS_GPADL_FIRST_HANDLE + (uint32_t)i);
    struct hvsim_vmbus_stats s = stats(f);
    assert_int_equal(s.gpadls, 0);
    assert_int_equal(s.gpadls_created, 6);
    assert_int_equal(s.gpadls_torn_down, 6);
    assert_int_equal(s.guest_errors, 0);
    free(pfn);
}

static void expect_created_status(struct fixture *f, uint32_t handle, bool ok)
{
    struct fg_msg m;
    fg_expect(&f->fg, VMBUS_MSG_GPADL_CREATED, &m);
    assert_int_equal(m.u.created.gpadl, handle);
    if (ok)
        assert_int_equal(m.u.created.status, 0);
    else
        assert_int_not_equal(m.u.created.status, 0);
}

static void test_gpadl_bad(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(0), VMBUS_VERSION_COPPER);
    uint64_t pfn[64];
    for (uint32_t i = 0; i < 64; i++)
        pfn[i] = (FG_ARENA_GPA >> 12) + i;
    unsigned errors = 0;
    /* Handle 0. */
    assert_int_not_equal(fg_create_gpadl(&f->fg, NETVSC_RELID, 0, pfn, 4), 0);
    assert_int_equal(++errors, stats(f).guest_errors);
    assert_int_equal(fg_log_matches(&f->fg, "vmbus: guest error: GPADL_HEADER for handle 0x0", "null handle"), 1);
    /* A relid nobody offered. */
    assert_int_not_equal(fg_create_gpadl(&f->fg, 99, 0x100, pfn, 4), 0);
    assert_int_equal(++errors, stats(f).guest_errors);
    /* A duplicate handle: refused, the first GPADL stays. */
    assert_int_equal(fg_create_gpadl(&f->fg, NETVSC_RELID, 0x101, pfn, 4), 0);
    assert_int_not_equal(fg_create_gpadl(&f->fg, STORVSC_RELID, 0x101, pfn, 4), 0);
    assert_int_equal(++errors, stats(f).guest_errors);
    assert_int_equal(stats(f).gpadls, 1);
    /* A PFN outside guest RAM, in the header and in a body. */
    uint64_t bad[40];
    memcpy(bad, pfn, sizeof bad);
    bad[3] = RAM_SIZE >> 12;
    assert_int_not_equal(fg_create_gpadl(&f->fg, NETVSC_RELID, 0x102, bad, 10), 0);
    bad[3] = pfn[3];
    bad[30] = UINT64_MAX;
    assert_int_not_equal(fg_create_gpadl(&f->fg, NETVSC_RELID, 0x103, bad, 40), 0);
    errors += 2;
    /* A body with more PFNs than remain; then the rest of its bodies find no GPADL (logged only). */
    post_gpadl_header_30(f, NETVSC_RELID, 0x104, 1, pfn);
    uint8_t buf[HV_MESSAGE_PAYLOAD_MAX];
    struct vmbus_msg_gpadl_body b = { .hdr.type = VMBUS_MSG_GPADL_BODY, .msg_number = 1, .gpadl = 0x104 };
    memcpy(buf, &b, sizeof b);
    memcpy(buf + sizeof b, pfn, 5 * 8);
    fg_post(&f->fg, buf, sizeof b + 5 * 8);
    expect_created_status(f, 0x104, false);
    fg_post(&f->fg, buf, sizeof b + 4 * 8); /* body out of order: no GPADL being built */
    errors += 2;
    fg_flush(&f->fg);
    assert_int_equal(stats(f).guest_errors, errors);
    /* A new header for a handle still being built: both dropped, one failure answer. */
    post_gpadl_header_30(f, NETVSC_RELID, 0x105, 1, pfn);
    post_gpadl_header_30(f, NETVSC_RELID, 0x105, 1, pfn);
    expect_created_status(f, 0x105, false);
    errors++;
    /* Header fields that disagree (two ranges) still get an answer. */
    post_gpadl_header_30(f, NETVSC_RELID, 0x106, 2, pfn);
    expect_created_status(f, 0x106, false);
    errors++;
    /* A body for a complete GPADL: dropped. */
    b.gpadl = 0x101;
    memcpy(buf, &b, sizeof b);
    fg_post(&f->fg, buf, sizeof b + 8);
    errors++;
    /* Teardown of an unknown handle and with the wrong relid: dropped. */
    struct vmbus_msg_gpadl_teardown t = { .hdr.type = VMBUS_MSG_GPADL_TEARDOWN, .child_relid = NETVSC_RELID, .gpadl = 0x999 };
    fg_post(&f->fg, &t, sizeof t);
    t.child_relid = STORVSC_RELID;
    t.gpadl = 0x101;
    fg_post(&f->fg, &t, sizeof t);
    errors += 2;
    fg_expect_nothing(&f->fg);
    struct hvsim_vmbus_stats s = stats(f);
    assert_int_equal(s.guest_errors, errors);
    assert_int_equal(s.gpadls, 1);
    /* Nothing disturbed: a good GPADL and the old one's teardown still work. */
    assert_int_equal(fg_create_gpadl(&f->fg, NETVSC_RELID, 0x107, pfn, 60), 0);
    fg_teardown_gpadl(&f->fg, NETVSC_RELID, 0x101);
    fg_teardown_gpadl(&f->fg, NETVSC_RELID, 0x107);
    assert_int_equal(stats(f).gpadls, 0);
    assert_int_equal(stats(f).guest_errors, errors);
}

/* ---- open / close ---- */

static void test_open_close_rings(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(0), VMBUS_VERSION_COPPER);
    uint64_t gpa = fg_create_contiguous(&f->fg, NETVSC_RELID, 0x200, 10);
    assert_int_equal(fg_open_channel(&f->fg, NETVSC_RELID, 0x200, 4, 1), 0);
    fg_flush(&f->fg);
    assert_int_equal(fg_count(&f->fg, &f->opens[NETVSC_RELID]), 1);
    pthread_mutex_lock(&f->fg.lock);
    assert_ptr_equal(f->in_ring[NETVSC_RELID], f->fg.ram + gpa);
    assert_int_equal(f->in_bytes[NETVSC_RELID], 4 * 4096);
    assert_ptr_equal(f->out_ring[NETVSC_RELID], f->fg.ram + gpa + 4 * 4096);
    assert_int_equal(f->out_bytes[NETVSC_RELID], 6 * 4096);
    struct hvsim_vmbus_channel *ch = f->ch[NETVSC_RELID];
    pthread_mutex_unlock(&f->fg.lock);
    assert_int_equal(hvsim_vmbus_channel_relid(ch), NETVSC_RELID);
    assert_int_equal(hvsim_vmbus_channel_target_vp(ch), 1);
    assert_int_equal(hvsim_vmbus_channel_sub_index(ch), 0);
    assert_string_equal(hvsim_vmbus_channel_device(ch)->name, "netvsc");
    assert_false(hvsim_vmbus_send_on_open(ch));
    assert_int_equal(stats(f).channels_open, 1);
    assert_int_equal(fg_log_matches(&f->fg, "vmbus: channel 1 (netvsc) opened", "target VP 1"), 1);
    fg_send_relid(&f->fg, VMBUS_MSG_CLOSECHANNEL, NETVSC_RELID); /* no answer in the protocol */
    assert_int_equal(fg_wait_count(&f->fg, &f->closes[NETVSC_RELID], 1, FG_WAIT_MS), 1);
    fg_teardown_gpadl(&f->fg, NETVSC_RELID, 0x200);
    fg_expect_nothing(&f->fg);
    struct hvsim_vmbus_stats s = stats(f);
    assert_int_equal(s.channels_open, 0);
    assert_int_equal(s.opens, 1);
    assert_int_equal(s.closes, 1);
    assert_int_equal(s.guest_errors, 0);
    /* Closing it again is a guest error. */
    fg_send_relid(&f->fg, VMBUS_MSG_CLOSECHANNEL, NETVSC_RELID);
    fg_expect_nothing(&f->fg);
    assert_int_equal(stats(f).guest_errors, 1);
    assert_int_equal(fg_count(&f->fg, &f->closes[NETVSC_RELID]), 1);
}

static void test_open_failures(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(0), VMBUS_VERSION_COPPER);
    fg_create_contiguous(&f->fg, STORVSC_RELID, 0x300, 8);
    unsigned errors = 0;
    assert_int_not_equal(fg_open_channel(&f->fg, 99, 0x300, 4, 0), 0);           /* unknown relid */
    assert_int_not_equal(fg_open_channel(&f->fg, STORVSC_RELID, 0x399, 4, 0), 0); /* missing GPADL */
    assert_int_not_equal(fg_open_channel(&f->fg, STORVSC_RELID, 0x300, 0, 0), 0); /* no guest -> host ring */
    assert_int_not_equal(fg_open_channel(&f->fg, STORVSC_RELID, 0x300, 8, 0), 0); /* no host -> guest ring */
    assert_int_not_equal(fg_open_channel(&f->fg, STORVSC_RELID, 0x300, 4, VPS), 0); /* no such VP */
    errors += 5;
    /* A GPADL still being built. */
    uint64_t pfn[30];
    for (uint32_t i = 0; i < 30; i++)
        pfn[i] = (FG_ARENA_GPA >> 12) + 100 + i;
    post_gpadl_header_30(f, STORVSC_RELID, 0x301, 1, pfn);
    assert_int_not_equal(fg_open_channel(&f->fg, STORVSC_RELID, 0x301, 4, 0), 0);
    errors++;
    assert_int_equal(stats(f).guest_errors, errors);
    /* A scattered ring: refused as an hvsim limitation, not a guest error. */
    pfn[5] += 50;
    assert_int_equal(fg_create_gpadl(&f->fg, STORVSC_RELID, 0x302, pfn, 8), 0);
    assert_int_not_equal(fg_open_channel(&f->fg, STORVSC_RELID, 0x302, 4, 0), 0);
    assert_int_equal(fg_log_matches(&f->fg, "not physically contiguous", "limitation"), 1);
    assert_int_equal(stats(f).guest_errors, errors);
    /* But contiguity is needed per ring only. */
    pfn[5] -= 50;
    pfn[4] += 50; /* the second ring starts at page 4: rings {0..3} and {4..7} each contiguous */
    for (uint32_t i = 5; i < 8; i++)
        pfn[i] = pfn[4] + (i - 4);
    assert_int_equal(fg_create_gpadl(&f->fg, STORVSC_RELID, 0x303, pfn, 8), 0);
    assert_int_equal(fg_open_channel(&f->fg, STORVSC_RELID, 0x303, 4, VMBUS_TARGET_VP_NO_INTERRUPT), 0);
    /* Already open; its ring GPADL may not be another channel's ring. */
    assert_int_not_equal(fg_open_channel(&f->fg, STORVSC_RELID, 0x300, 4, 0), 0);
    assert_int_not_equal(fg_open_channel(&f->fg, NETVSC_RELID, 0x303, 4, 0), 0);
    errors += 2;
    /* Any complete GPADL may be a ring, whichever relid created it. */
    assert_int_equal(fg_open_channel(&f->fg, NETVSC_RELID, 0x300, 4, 0), 0);
    fg_expect_nothing(&f->fg);
    assert_int_equal(stats(f).guest_errors, errors);
    assert_int_equal(stats(f).channels_open, 2);
    assert_int_equal(fg_count(&f->fg, &f->opens[STORVSC_RELID]), 1);
}

/* Tearing down the ring of an open channel: answered when the channel closes. */
static void test_teardown_ring_waits_for_close(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(0), VMBUS_VERSION_COPPER);
    fg_open_with_ring(&f->fg, NETVSC_RELID, 0x310, 4);
    struct vmbus_msg_gpadl_teardown t = { .hdr.type = VMBUS_MSG_GPADL_TEARDOWN, .child_relid = NETVSC_RELID,
                                          .gpadl = 0x310 };
    fg_post(&f->fg, &t, sizeof t);
    fg_expect_nothing(&f->fg);
    assert_int_equal(stats(f).guest_errors, 1);
    assert_int_equal(fg_log_matches(&f->fg, "ring of open channel 1", "when the channel closes"), 1);
    fg_send_relid(&f->fg, VMBUS_MSG_CLOSECHANNEL, NETVSC_RELID);
    struct fg_msg m;
    fg_expect(&f->fg, VMBUS_MSG_GPADL_TORNDOWN, &m);
    assert_int_equal(m.u.torndown.gpadl, 0x310);
    assert_int_equal(stats(f).gpadls, 0);
}

/* 2,000 open/close cycles, each with its own GPADL: nothing is left behind. */
static void test_open_close_cycles(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(0), VMBUS_VERSION_COPPER);
    uint64_t gpa = fg_alloc_pages(&f->fg, 8);
    uint64_t pfn[8];
    for (uint32_t i = 0; i < 8; i++)
        pfn[i] = (gpa >> 12) + i;
    for (uint32_t i = 0; i < 2000; i++) {
        uint32_t handle = VMBUS_GPADL_FIRST_HANDLE + i;
        assert_int_equal(fg_create_gpadl(&f->fg, STORVSC_RELID, handle, pfn, 8), 0);
        assert_int_equal(fg_open_channel(&f->fg, STORVSC_RELID, handle, 4, i % VPS), 0);
        fg_send_relid(&f->fg, VMBUS_MSG_CLOSECHANNEL, STORVSC_RELID);
        fg_teardown_gpadl(&f->fg, STORVSC_RELID, handle);
    }
    fg_expect_nothing(&f->fg);
    struct hvsim_vmbus_stats s = stats(f);
    assert_int_equal(s.gpadls, 0);
    assert_int_equal(s.channels_open, 0);
    assert_int_equal(s.offers, DEV_COUNT);
    assert_int_equal(s.opens, 2000);
    assert_int_equal(s.closes, 2000);
    assert_int_equal(s.gpadls_created, 2000);
    assert_int_equal(s.gpadls_torn_down, 2000);
    assert_int_equal(s.guest_errors, 0);
    assert_int_equal(fg_count(&f->fg, &f->opens[STORVSC_RELID]), 2000);
    assert_int_equal(fg_count(&f->fg, &f->closes[STORVSC_RELID]), 2000);
}

/* ---- rescind, hot-add, sub-channels ---- */

static void test_rescind_open_channel(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(0), VMBUS_VERSION_COPPER);
    fg_open_with_ring(&f->fg, NETVSC_RELID, 0x400, 4);
    assert_false(hvsim_vmbus_rescind(f->fg.vb, 99));
    assert_true(hvsim_vmbus_rescind(f->fg.vb, NETVSC_RELID));
    assert_false(hvsim_vmbus_rescind(f->fg.vb, NETVSC_RELID)); /* already rescinded */
    assert_int_equal(fg_wait_count(&f->fg, &f->closes[NETVSC_RELID], 1, FG_WAIT_MS), 1);
    struct fg_msg m;
    fg_expect(&f->fg, VMBUS_MSG_RESCIND_CHANNELOFFER, &m);
    assert_int_equal(m.u.relid.child_relid, NETVSC_RELID);
    assert_int_equal(fg_log_matches(&f->fg, "relid 1 (netvsc) rescinded", NULL), 1);
    /* The guest closes and tears down as Linux does after a rescind: the teardown is answered. */
    fg_send_relid(&f->fg, VMBUS_MSG_CLOSECHANNEL, NETVSC_RELID);
    fg_teardown_gpadl(&f->fg, NETVSC_RELID, 0x400);
    /* Until RELID_RELEASED the relid stays reserved: a hot-added device gets another. */
    struct hvsim_vmbus_device extra = hvsim_vmbus_default_devices[0];
    extra.name = "netvsc2";
    extra.instance.b[15] = 0x42;
    uint32_t relid = hvsim_vmbus_offer(f->fg.vb, &extra);
    assert_int_equal(relid, DEV_COUNT + 1);
    fg_expect(&f->fg, VMBUS_MSG_OFFERCHANNEL, &m);
    assert_int_equal(m.u.offer.child_relid, relid);
    /* The channel cannot be opened or given GPADLs any more. */
    fg_create_contiguous(&f->fg, STORVSC_RELID, 0x401, 4);
    assert_int_not_equal(fg_open_channel(&f->fg, NETVSC_RELID, 0x401, 2, 0), 0);
    assert_int_not_equal(fg_create_gpadl(&f->fg, NETVSC_RELID, 0x402, (uint64_t[]){ FG_ARENA_GPA >> 12 }, 1), 0);
    fg_send_relid(&f->fg, VMBUS_MSG_RELID_RELEASED, NETVSC_RELID);
    fg_flush(&f->fg);
    assert_int_equal(fg_log_matches(&f->fg, "relid 1 (netvsc) released", NULL), 1);
    assert_int_equal(stats(f).offers, DEV_COUNT); /* 7 - 1 + 1 */
    /* Now relid 1 may be reused. */
    extra.instance.b[15] = 0x43;
    assert_int_equal(hvsim_vmbus_offer(f->fg.vb, &extra), NETVSC_RELID);
    fg_expect(&f->fg, VMBUS_MSG_OFFERCHANNEL, &m);
    assert_int_equal(m.u.offer.child_relid, NETVSC_RELID);
    /* RELID_RELEASED for a live channel is a guest error. */
    fg_send_relid(&f->fg, VMBUS_MSG_RELID_RELEASED, STORVSC_RELID);
    fg_expect_nothing(&f->fg);
    assert_int_equal(stats(f).guest_errors, 3); /* the open, the GPADL, the release */
    assert_int_equal(stats(f).rescinds, 1);
}

static void test_sub_channels(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(0), VMBUS_VERSION_COPPER);
    unsigned base = f->fg.offer_count;
    fg_open_with_ring(&f->fg, TEST_DEV_RELID, 0x500, 4);
    fg_drain_async(&f->fg);
    /* Offered after the primary's open result: same GUIDs, indexes 1 and 2, new relids. */
    assert_int_equal(f->fg.offer_count, base + 2);
    const struct vmbus_msg_offer_channel *primary = fg_offer_of(&f->fg, TEST_DEV_RELID);
    for (unsigned i = 0; i < 2; i++) {
        const struct vmbus_msg_offer_channel *o = &f->fg.offers[base + i];
        assert_int_equal(o->offer.sub_channel_index, i + 1);
        assert_int_equal(o->child_relid, DEV_COUNT + 1 + i);
        assert_true(vmbus_guid_equal(&o->offer.if_type, &primary->offer.if_type));
        assert_true(vmbus_guid_equal(&o->offer.if_instance, &primary->offer.if_instance));
        assert_int_equal(o->monitor_allocated, 1);
        assert_int_not_equal(o->monitor_id, primary->monitor_id);
    }
    assert_int_equal(stats(f).sub_channels, 2);
    /* A sub-channel opens like any channel. */
    uint32_t sub1 = DEV_COUNT + 1, sub2 = DEV_COUNT + 2;
    fg_open_with_ring(&f->fg, sub1, 0x501, 4);
    fg_flush(&f->fg);
    pthread_mutex_lock(&f->fg.lock);
    assert_int_equal(hvsim_vmbus_channel_sub_index(f->ch[sub1]), 1);
    pthread_mutex_unlock(&f->fg.lock);
    /* More on request; not for a sub-channel or an unknown relid. */
    assert_true(hvsim_vmbus_offer_sub_channels(f->fg.vb, TEST_DEV_RELID, 1));
    assert_false(hvsim_vmbus_offer_sub_channels(f->fg.vb, sub1, 1));
    assert_false(hvsim_vmbus_offer_sub_channels(f->fg.vb, 99, 1));
    fg_drain_async(&f->fg);
    assert_int_equal(f->fg.offer_count, base + 3);
    assert_int_equal(f->fg.offers[base + 2].offer.sub_channel_index, 3);
    /* Closing the primary rescinds its sub-channels (the open one closed first). */
    fg_send_relid(&f->fg, VMBUS_MSG_CLOSECHANNEL, TEST_DEV_RELID);
    assert_int_equal(fg_wait_count(&f->fg, &f->closes[sub1], 1, FG_WAIT_MS), 1);
    fg_drain_async(&f->fg);
    assert_true(fg_was_rescinded(&f->fg, sub1) && fg_was_rescinded(&f->fg, sub2) &&
                fg_was_rescinded(&f->fg, DEV_COUNT + 3));
    assert_int_equal(fg_count(&f->fg, &f->closes[TEST_DEV_RELID]), 1);
    for (uint32_t r = sub1; r <= DEV_COUNT + 3; r++)
        fg_send_relid(&f->fg, VMBUS_MSG_RELID_RELEASED, r);
    fg_expect_nothing(&f->fg);
    assert_int_equal(stats(f).sub_channels, 0);
    assert_int_equal(stats(f).guest_errors, 0);
    /* The next open offers them again (relids and indexes reused). */
    fg_teardown_gpadl(&f->fg, TEST_DEV_RELID, 0x500);
    fg_open_with_ring(&f->fg, TEST_DEV_RELID, 0x502, 4);
    fg_drain_async(&f->fg);
    assert_int_equal(f->fg.offer_count, base + 5);
    assert_int_equal(f->fg.offers[base + 3].child_relid, sub1);
    assert_int_equal(f->fg.offers[base + 4].offer.sub_channel_index, 2);
}

/* ---- MODIFYCHANNEL ---- */

static void send_modify(struct fixture *f, uint32_t relid, uint32_t vp)
{
    struct vmbus_msg_modify_channel m = { .hdr.type = VMBUS_MSG_MODIFYCHANNEL, .child_relid = relid, .target_vp = vp };
    fg_post(&f->fg, &m, sizeof m);
}

static void test_modify_channel(void **state)
{
    (void)state;
    /* 4.1: the target VP changes; no answer. */
    struct fixture *f = fx_connected(base_config(VMBUS_VERSION_WIN10_RS3), VMBUS_VERSION_WIN10_RS3);
    fg_open_with_ring(&f->fg, NETVSC_RELID, 0x600, 4);
    fg_flush(&f->fg);
    send_modify(f, NETVSC_RELID, 1);
    fg_expect_nothing(&f->fg);
    pthread_mutex_lock(&f->fg.lock);
    struct hvsim_vmbus_channel *ch = f->ch[NETVSC_RELID];
    pthread_mutex_unlock(&f->fg.lock);
    assert_int_equal(hvsim_vmbus_channel_target_vp(ch), 1);
    assert_true(hvsim_vmbus_signal_guest(ch));
    assert_true(fg_event_flag(&f->fg, 1, VMBUS_MESSAGE_SINT, NETVSC_RELID));
    assert_false(fg_event_flag(&f->fg, 0, VMBUS_MESSAGE_SINT, NETVSC_RELID));
    assert_int_equal(stats(f).guest_errors, 0);
    fg_teardown(NULL);

    /* 5.3: answered, with a failure for a bad VP or a channel that is not open. */
    f = fx_connected(base_config(VMBUS_VERSION_WIN10_V5_3), VMBUS_VERSION_WIN10_V5_3);
    fg_open_with_ring(&f->fg, NETVSC_RELID, 0x600, 4);
    struct fg_msg m;
    send_modify(f, NETVSC_RELID, 1);
    fg_expect(&f->fg, VMBUS_MSG_MODIFYCHANNEL_RESPONSE, &m);
    assert_int_equal(m.u.modify.child_relid, NETVSC_RELID);
    assert_int_equal(m.u.modify.status, 0);
    send_modify(f, NETVSC_RELID, VPS);
    fg_expect(&f->fg, VMBUS_MSG_MODIFYCHANNEL_RESPONSE, &m);
    assert_int_not_equal(m.u.modify.status, 0);
    send_modify(f, STORVSC_RELID, 0);
    fg_expect(&f->fg, VMBUS_MSG_MODIFYCHANNEL_RESPONSE, &m);
    assert_int_not_equal(m.u.modify.status, 0);
    send_modify(f, 99, 0);
    fg_expect(&f->fg, VMBUS_MSG_MODIFYCHANNEL_RESPONSE, &m);
    assert_int_not_equal(m.u.modify.status, 0);
    assert_int_equal(stats(f).guest_errors, 3);
    fg_flush(&f->fg);
    pthread_mutex_lock(&f->fg.lock);
    ch = f->ch[NETVSC_RELID];
    pthread_mutex_unlock(&f->fg.lock);
    assert_int_equal(hvsim_vmbus_channel_target_vp(ch), 1);
    fg_teardown(NULL);

    /* 4.0: MODIFYCHANNEL does not exist yet: a guest error, no answer, no change. */
    f = fx_connected(base_config(VMBUS_VERSION_WIN10), VMBUS_VERSION_WIN10);
    fg_open_with_ring(&f->fg, NETVSC_RELID, 0x600, 4);
    send_modify(f, NETVSC_RELID, 1);
    fg_expect_nothing(&f->fg);
    assert_int_equal(stats(f).guest_errors, 1);
    assert_int_equal(fg_log_matches(&f->fg, "MODIFYCHANNEL needs version 4.1", NULL), 1);
    pthread_mutex_lock(&f->fg.lock);
    ch = f->ch[NETVSC_RELID];
    pthread_mutex_unlock(&f->fg.lock);
    assert_int_equal(hvsim_vmbus_channel_target_vp(ch), 0);
}

/* ---- UNLOAD ---- */

static void test_unload(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(0), VMBUS_VERSION_COPPER);
    fg_open_with_ring(&f->fg, NETVSC_RELID, 0x700, 4);
    fg_open_with_ring(&f->fg, TEST_DEV_RELID, 0x701, 4);
    fg_create_contiguous(&f->fg, STORVSC_RELID, 0x702, 2);
    fg_drain_async(&f->fg); /* the test device's sub-channel offers */
    fg_open_with_ring(&f->fg, DEV_COUNT + 1, 0x703, 4);
    assert_int_equal(stats(f).channels_open, 3);
    struct vmbus_msg_header h = { .type = VMBUS_MSG_UNLOAD };
    fg_post(&f->fg, &h, sizeof h);
    struct fg_msg m;
    fg_expect(&f->fg, VMBUS_MSG_UNLOAD_RESPONSE, &m);
    fg_flush(&f->fg);
    assert_int_equal(fg_count(&f->fg, &f->closes[NETVSC_RELID]), 1);
    assert_int_equal(fg_count(&f->fg, &f->closes[TEST_DEV_RELID]), 1);
    assert_int_equal(fg_count(&f->fg, &f->closes[DEV_COUNT + 1]), 1);
    struct hvsim_vmbus_stats s = stats(f);
    assert_int_equal(s.version, 0);
    assert_int_equal(s.channels_open, 0);
    assert_int_equal(s.gpadls, 0);
    assert_int_equal(s.sub_channels, 0);
    assert_int_equal(s.offers, DEV_COUNT);
    assert_int_equal(s.unloads, 1);
    assert_int_equal(f->fg.rescind_count, 0); /* UNLOAD drops sub-channels without messages */
    /* Disconnected: messages other than INITIATE_CONTACT are guest errors. */
    struct vmbus_msg_header req = { .type = VMBUS_MSG_REQUESTOFFERS };
    assert_int_equal(fg_post_on(&f->fg, VMBUS_CONN_MESSAGE, &req, sizeof req), HV_STATUS_SUCCESS);
    fg_expect_nothing(&f->fg);
    assert_int_equal(stats(f).guest_errors, 1);
    /* A new connection gets the same offers with the same relids. */
    f->fg.offer_count = 0;
    fg_connect(&f->fg, VMBUS_VERSION_WIN10_V5_2);
    assert_int_equal(fg_request_offers(&f->fg), DEV_COUNT);
    for (unsigned i = 0; i < DEV_COUNT; i++)
        assert_int_equal(f->fg.offers[i].child_relid, i + 1);
    fg_open_with_ring(&f->fg, NETVSC_RELID, 0x700, 4);
    assert_int_equal(stats(f).channels_open, 1);
}

/* ---- hazards ---- */

static void test_hazard_irq_before_open_result(void **state)
{
    (void)state;
    struct fixture *f = fx_hazard(HVSIM_VMBUS_IRQ_BEFORE_OPEN_RESULT);
    fg_create_contiguous(&f->fg, NETVSC_RELID, 0x800, 4);
    fg_send_open(&f->fg, NETVSC_RELID, 0x800, 2, 1);
    /* By the time the result is in the slot, the channel's flag is already set on its VP. */
    struct fg_msg m;
    fg_expect(&f->fg, VMBUS_MSG_OPENCHANNEL_RESULT, &m);
    assert_true(fg_event_flag(&f->fg, 1, VMBUS_MESSAGE_SINT, NETVSC_RELID));
    assert_int_equal(stats(f).host_signals, 1);
}

static void test_hazard_send_on_open(void **state)
{
    (void)state;
    struct fixture *f = fx_hazard(HVSIM_VMBUS_SEND_ON_OPEN);
    uint64_t gpa = fg_create_contiguous(&f->fg, NETVSC_RELID, 0x810, 4);
    assert_false(fg_event_flag(&f->fg, 0, VMBUS_MESSAGE_SINT, NETVSC_RELID));
    assert_int_equal(fg_open_channel(&f->fg, NETVSC_RELID, 0x810, 2, 0), 0);
    fg_flush(&f->fg);
    /* The device wrote into its ring in on_open, before the guest could see the result; the signal
     * follows the result. */
    assert_false(f->result_seen_at_open[NETVSC_RELID]);
    assert_int_equal(__atomic_load_n((uint64_t *)(f->fg.ram + gpa + 2 * 4096) + 8, __ATOMIC_RELAXED), 0x5e11d0aull);
    assert_true(fg_event_flag(&f->fg, 0, VMBUS_MESSAGE_SINT, NETVSC_RELID));
    assert_int_equal(stats(f).host_signals, 1);
}

static void test_hazard_delay(void **state)
{
    (void)state;
    struct hvsim_vmbus_config cfg = base_config(0);
    cfg.hazards = HVSIM_VMBUS_DELAY_RESPONSES;
    cfg.response_delay_us = 50000;
    struct fixture *f = fx_new(cfg);
    int64_t t0 = now_ns();
    fg_connect(&f->fg, VMBUS_VERSION_COPPER);
    assert_true(now_ns() - t0 >= 45000000);
    t0 = now_ns();
    assert_int_equal(fg_request_offers(&f->fg), DEV_COUNT); /* all queued together: one delay */
    assert_true(now_ns() - t0 >= 45000000);
    t0 = now_ns();
    fg_create_contiguous(&f->fg, NETVSC_RELID, 0x820, 2);
    assert_true(now_ns() - t0 >= 45000000);
}

static void test_hazard_reorder(void **state)
{
    (void)state;
    struct hvsim_vmbus_config cfg = base_config(0);
    cfg.hazards = HVSIM_VMBUS_REORDER_RESPONSES;
    cfg.response_delay_us = 200000; /* the window: wide, so that a slow (TSan) run still fits */
    struct fixture *f = fx_connected(cfg, VMBUS_VERSION_COPPER);
    /* Three GPADLs asked for at once come back newest first. */
    uint64_t pfn[2] = { FG_ARENA_GPA >> 12, (FG_ARENA_GPA >> 12) + 1 };
    fg_send_gpadl(&f->fg, NETVSC_RELID, 0x830, pfn, 2);
    fg_send_gpadl(&f->fg, NETVSC_RELID, 0x831, pfn, 2);
    fg_send_gpadl(&f->fg, STORVSC_RELID, 0x832, pfn, 2);
    struct fg_msg m;
    for (uint32_t h = 0x832; h >= 0x830; h--) {
        fg_expect(&f->fg, VMBUS_MSG_GPADL_CREATED, &m);
        assert_int_equal(m.u.created.gpadl, h);
    }
    /* Opening the test device: its sub-channel offers are not reordered (they stay after the open
     * result, their own order kept) while the two results swap. */
    fg_create_contiguous(&f->fg, HEARTBEAT_RELID, 0x833, 2);
    fg_create_contiguous(&f->fg, TEST_DEV_RELID, 0x834, 2);
    unsigned base = f->fg.offer_count;
    fg_send_open(&f->fg, HEARTBEAT_RELID, 0x833, 1, 0);
    fg_send_open(&f->fg, TEST_DEV_RELID, 0x834, 1, 0);
    assert_true(fg_recv_on(&f->fg, 0, 2, &m, FG_WAIT_MS));
    assert_int_equal(m.type, VMBUS_MSG_OPENCHANNEL_RESULT);
    assert_int_equal(m.u.open.child_relid, TEST_DEV_RELID);
    assert_true(fg_recv_on(&f->fg, 0, 2, &m, FG_WAIT_MS));
    assert_int_equal(m.type, VMBUS_MSG_OPENCHANNEL_RESULT);
    assert_int_equal(m.u.open.child_relid, HEARTBEAT_RELID);
    fg_drain_async(&f->fg);
    assert_int_equal(f->fg.offer_count, base + 2);
    assert_int_equal(f->fg.offers[base].offer.sub_channel_index, 1);
    assert_int_equal(f->fg.offers[base + 1].offer.sub_channel_index, 2);
}

static void test_hazard_rescind_during_open(void **state)
{
    (void)state;
    struct fixture *f = fx_hazard(HVSIM_VMBUS_RESCIND_DURING_OPEN);
    fg_create_contiguous(&f->fg, NETVSC_RELID, 0x840, 4);
    /* A bad open is refused as usual; a good one is answered by a rescind, then a failure. */
    assert_int_not_equal(fg_open_channel(&f->fg, NETVSC_RELID, 0x840, 9, 0), 0);
    assert_int_equal(f->fg.rescind_count, 0);
    fg_send_open(&f->fg, NETVSC_RELID, 0x840, 2, 0);
    struct fg_msg m;
    assert_true(fg_recv_on(&f->fg, 0, 2, &m, FG_WAIT_MS));
    assert_int_equal(m.type, VMBUS_MSG_RESCIND_CHANNELOFFER);
    assert_int_equal(m.u.relid.child_relid, NETVSC_RELID);
    assert_true(fg_recv_on(&f->fg, 0, 2, &m, FG_WAIT_MS));
    assert_int_equal(m.type, VMBUS_MSG_OPENCHANNEL_RESULT);
    assert_int_not_equal(m.u.open.status, 0);
    fg_expect_nothing(&f->fg);
    assert_int_equal(fg_count(&f->fg, &f->opens[NETVSC_RELID]), 0);
    assert_int_equal(fg_count(&f->fg, &f->closes[NETVSC_RELID]), 0);
    assert_int_equal(stats(f).rescinds, 1);
    /* The guest tears down and releases as after any rescind. */
    fg_teardown_gpadl(&f->fg, NETVSC_RELID, 0x840);
    fg_send_relid(&f->fg, VMBUS_MSG_RELID_RELEASED, NETVSC_RELID);
    fg_expect_nothing(&f->fg);
    assert_int_equal(stats(f).offers, DEV_COUNT - 1);
}

static void test_hazard_bad_offers(void **state)
{
    (void)state;
    struct hvsim_vmbus_config cfg = base_config(0);
    cfg.hazards = HVSIM_VMBUS_BAD_OFFERS;
    struct fixture *f = fx_new(cfg);
    fg_connect(&f->fg, VMBUS_VERSION_COPPER);
    struct vmbus_msg_header h = { .type = VMBUS_MSG_REQUESTOFFERS };
    fg_post(&f->fg, &h, sizeof h);
    struct fg_msg m;
    assert_true(fg_recv_on(&f->fg, 0, 2, &m, FG_WAIT_MS));
    assert_int_equal(m.type, VMBUS_MSG_OFFERCHANNEL);
    assert_int_equal(m.u.offer.child_relid, 0);
    assert_true(fg_recv_on(&f->fg, 0, 2, &m, FG_WAIT_MS));
    assert_int_equal(m.u.offer.child_relid, 4096);
    assert_true(fg_recv_on(&f->fg, 0, 2, &m, FG_WAIT_MS));
    assert_int_equal(m.type, VMBUS_MSG_OFFERCHANNEL);
    assert_int_equal(m.size, 100);
    assert_true(fg_recv_on(&f->fg, 0, 2, &m, FG_WAIT_MS));
    assert_int_equal(m.type, 99);
    for (unsigned i = 0; i < DEV_COUNT; i++) {
        assert_true(fg_recv_on(&f->fg, 0, 2, &m, FG_WAIT_MS));
        assert_int_equal(m.type, VMBUS_MSG_OFFERCHANNEL);
        assert_int_equal(m.u.offer.child_relid, i + 1);
    }
    assert_true(fg_recv_on(&f->fg, 0, 2, &m, FG_WAIT_MS));
    assert_int_equal(m.type, VMBUS_MSG_OFFERCHANNEL);
    assert_int_equal(m.u.offer.child_relid, 1); /* the duplicate */
    assert_false(vmbus_guid_equal(&m.u.offer.offer.if_instance, &hvsim_vmbus_default_devices[0].instance));
    fg_expect(&f->fg, VMBUS_MSG_ALLOFFERS_DELIVERED, &m);
    fg_expect_nothing(&f->fg);
    /* The bad offers are no channels of the server's: relid 4096 cannot be opened. */
    assert_int_not_equal(fg_open_channel(&f->fg, 4096, 1, 1, 0), 0);
}

static void test_hazard_unasked_responses(void **state)
{
    (void)state;
    struct fixture *f = fx_hazard(HVSIM_VMBUS_UNASKED_RESPONSES);
    struct fg_msg m;
    fg_expect(&f->fg, VMBUS_MSG_GPADL_CREATED, &m);
    assert_int_equal(m.u.created.gpadl, 0x0BAD0BAD);
    assert_int_equal(m.u.created.child_relid, 1);
    fg_expect(&f->fg, VMBUS_MSG_OPENCHANNEL_RESULT, &m);
    assert_int_equal(m.u.open.child_relid, 1);
    fg_expect_nothing(&f->fg);
    /* The server's state is untouched: the channel is not open. */
    assert_int_equal(stats(f).channels_open, 0);
    assert_int_equal(stats(f).gpadls, 0);
}

/* The server's posts wait while the guest's SINT queue is full, and nothing is lost or reordered. */
static void test_outbox_retries_full_queue(void **state)
{
    (void)state;
    struct fixture *f = fx_new_queue(base_config(0), 2);
    fg_connect(&f->fg, VMBUS_VERSION_COPPER);
    struct vmbus_msg_header h = { .type = VMBUS_MSG_REQUESTOFFERS };
    fg_post(&f->fg, &h, sizeof h);
    /* 1 in the slot + 2 queued: the rest wait in the outbox. */
    int64_t deadline = now_ns() + (int64_t)FG_WAIT_MS * 1000000;
    while (stats(f).post_retries == 0 && now_ns() < deadline)
        sleep_us(200);
    assert_true(stats(f).post_retries > 0);
    sleep_us(20000);
    struct fg_msg m;
    for (unsigned i = 0; i < DEV_COUNT; i++) {
        assert_true(fg_recv_on(&f->fg, 0, 2, &m, FG_WAIT_MS));
        assert_int_equal(m.type, VMBUS_MSG_OFFERCHANNEL);
        assert_int_equal(m.u.offer.child_relid, i + 1);
    }
    fg_expect(&f->fg, VMBUS_MSG_ALLOFFERS_DELIVERED, &m);
    fg_expect_nothing(&f->fg);
}

/* ---- signals ---- */

static void test_monitor_page_signals(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(0), VMBUS_VERSION_COPPER);
    fg_open_with_ring(&f->fg, NETVSC_RELID, 0x900, 4);
    fg_open_with_ring(&f->fg, STORVSC_RELID, 0x901, 4);
    fg_flush(&f->fg);
    const struct vmbus_msg_offer_channel *net = fg_offer_of(&f->fg, NETVSC_RELID),
                                         *stor = fg_offer_of(&f->fg, STORVSC_RELID);
    /* As Linux signals a monitored channel: set its bit in the child -> parent page. */
    fg_set_monitor_bit(&f->fg, net->monitor_id);
    assert_int_equal(fg_wait_count(&f->fg, &f->signals[NETVSC_RELID], 1, FG_WAIT_MS), 1);
    assert_int_equal(__atomic_load_n(fg_monitor_pending(&f->fg, net->monitor_id), __ATOMIC_SEQ_CST), 0); /* taken */
    /* Two channels in one go, plus an id nobody owns (ignored). */
    fg_set_monitor_bit(&f->fg, stor->monitor_id);
    fg_set_monitor_bit(&f->fg, 127);
    fg_set_monitor_bit(&f->fg, net->monitor_id);
    assert_int_equal(fg_wait_count(&f->fg, &f->signals[NETVSC_RELID], 2, FG_WAIT_MS), 2);
    assert_int_equal(fg_wait_count(&f->fg, &f->signals[STORVSC_RELID], 1, FG_WAIT_MS), 1);
    assert_int_equal(stats(f).monitor_signals, 3);
    /* A closed channel's monitor bit: no callback. */
    fg_send_relid(&f->fg, VMBUS_MSG_CLOSECHANNEL, STORVSC_RELID);
    fg_flush(&f->fg);
    fg_set_monitor_bit(&f->fg, stor->monitor_id);
    sleep_us(20000);
    fg_flush(&f->fg);
    assert_int_equal(fg_count(&f->fg, &f->signals[STORVSC_RELID]), 1);
}

static void test_event_port_signals(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(0), VMBUS_VERSION_COPPER);
    uint32_t conn = HVSIM_VMBUS_CONN_CHANNEL_BASE + HEARTBEAT_RELID;
    /* The port exists from the offer on; a signal before the open reaches no device. */
    assert_int_equal(fg_signal_fast(&f->fg, 0, conn, 0), HV_STATUS_SUCCESS);
    fg_flush(&f->fg);
    assert_int_equal(fg_count(&f->fg, &f->signals[HEARTBEAT_RELID]), 0);
    fg_open_with_ring(&f->fg, HEARTBEAT_RELID, 0x910, 2);
    assert_int_equal(fg_signal_fast(&f->fg, 0, conn, 0), HV_STATUS_SUCCESS);
    assert_int_equal(fg_wait_count(&f->fg, &f->signals[HEARTBEAT_RELID], 1, FG_WAIT_MS), 1);
    assert_int_equal(stats(f).guest_signals, 2);
    /* A connection id that is no channel's. */
    assert_int_equal(fg_signal_fast(&f->fg, 0, HVSIM_VMBUS_CONN_CHANNEL_BASE + 500, 0),
                     HV_STATUS_INVALID_CONNECTION_ID);
    /* The port goes with the relid. */
    assert_true(hvsim_vmbus_rescind(f->fg.vb, HEARTBEAT_RELID));
    fg_send_relid(&f->fg, VMBUS_MSG_RELID_RELEASED, HEARTBEAT_RELID);
    fg_flush(&f->fg);
    assert_int_equal(fg_signal_fast(&f->fg, 0, conn, 0), HV_STATUS_INVALID_CONNECTION_ID);
}

static void test_signal_guest(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(0), VMBUS_VERSION_COPPER);
    fg_open_with_ring(&f->fg, NETVSC_RELID, 0x920, 4);
    fg_create_contiguous(&f->fg, STORVSC_RELID, 0x921, 4);
    assert_int_equal(fg_open_channel(&f->fg, STORVSC_RELID, 0x921, 2, VMBUS_TARGET_VP_NO_INTERRUPT), 0);
    send_modify(f, NETVSC_RELID, 1);
    struct fg_msg m;
    fg_expect(&f->fg, VMBUS_MSG_MODIFYCHANNEL_RESPONSE, &m);
    fg_flush(&f->fg);
    pthread_mutex_lock(&f->fg.lock);
    struct hvsim_vmbus_channel *net = f->ch[NETVSC_RELID], *stor = f->ch[STORVSC_RELID];
    unsigned irqs = f->irqs;
    pthread_mutex_unlock(&f->fg.lock);
    assert_true(hvsim_vmbus_signal_guest(net));
    assert_true(fg_event_flag(&f->fg, 1, VMBUS_MESSAGE_SINT, NETVSC_RELID));
    assert_false(fg_event_flag(&f->fg, 0, VMBUS_MESSAGE_SINT, NETVSC_RELID));
    assert_int_equal(fg_count(&f->fg, &f->irqs), irqs + 1);
    assert_true(hvsim_vmbus_signal_guest(net)); /* the bit was still set: no second interrupt */
    assert_int_equal(fg_count(&f->fg, &f->irqs), irqs + 1);
    fg_event_clear(&f->fg, 1, VMBUS_MESSAGE_SINT, NETVSC_RELID);
    assert_false(hvsim_vmbus_signal_guest(stor)); /* interrupts disabled for it */
    assert_false(fg_event_flag(&f->fg, 0, VMBUS_MESSAGE_SINT, STORVSC_RELID));
    assert_int_equal(stats(f).host_signals, 2);
    /* A closed channel is not signalled. */
    fg_send_relid(&f->fg, VMBUS_MSG_CLOSECHANNEL, NETVSC_RELID);
    fg_flush(&f->fg);
    assert_false(hvsim_vmbus_signal_guest(net));
    assert_false(fg_event_flag(&f->fg, 1, VMBUS_MESSAGE_SINT, NETVSC_RELID));
}

/* Below 2.4 (WS2008/WIN7): host -> guest is bit 0 plus the interrupt page's parent -> child half;
 * guest -> host the child -> parent half and HvSignalEvent on connection 2. */
static void test_legacy_signalling(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(VMBUS_VERSION_WIN7), VMBUS_VERSION_WIN7);
    fg_open_with_ring(&f->fg, HEARTBEAT_RELID, 0x930, 2);
    fg_flush(&f->fg);
    pthread_mutex_lock(&f->fg.lock);
    struct hvsim_vmbus_channel *ch = f->ch[HEARTBEAT_RELID];
    pthread_mutex_unlock(&f->fg.lock);
    assert_true(hvsim_vmbus_signal_guest(ch));
    assert_true(fg_event_flag(&f->fg, 0, VMBUS_MESSAGE_SINT, 0));
    assert_false(fg_event_flag(&f->fg, 0, VMBUS_MESSAGE_SINT, HEARTBEAT_RELID));
    uint64_t *page = (uint64_t *)(f->fg.ram + FG_INT_PAGE_GPA);
    assert_true(__atomic_load_n(&page[0], __ATOMIC_SEQ_CST) & (1ull << HEARTBEAT_RELID));
    uint64_t *send = (uint64_t *)(f->fg.ram + FG_INT_PAGE_GPA + VMBUS_INTERRUPT_PAGE_HALF);
    __atomic_fetch_or(&send[0], 1ull << HEARTBEAT_RELID, __ATOMIC_SEQ_CST);
    assert_int_equal(fg_signal_fast(&f->fg, 0, VMBUS_CONN_EVENT, 0), HV_STATUS_SUCCESS);
    assert_int_equal(fg_wait_count(&f->fg, &f->signals[HEARTBEAT_RELID], 1, FG_WAIT_MS), 1);
    assert_int_equal(__atomic_load_n(&send[0], __ATOMIC_SEQ_CST), 0);
}

/* ---- bad guest messages ---- */

static void test_bad_guest_messages(void **state)
{
    (void)state;
    struct fixture *f = fx_new(base_config(0));
    /* Before contact: anything but INITIATE_CONTACT and UNLOAD. */
    struct vmbus_msg_header req = { .type = VMBUS_MSG_REQUESTOFFERS };
    assert_int_equal(fg_post_on(&f->fg, VMBUS_CONN_MESSAGE, &req, sizeof req), HV_STATUS_SUCCESS);
    struct vmbus_msg_header unload = { .type = VMBUS_MSG_UNLOAD };
    assert_int_equal(fg_post_on(&f->fg, VMBUS_CONN_MESSAGE, &unload, sizeof unload), HV_STATUS_SUCCESS);
    struct fg_msg m;
    fg_expect(&f->fg, VMBUS_MSG_UNLOAD_RESPONSE, &m);
    assert_int_equal(stats(f).guest_errors, 1);
    fg_connect(&f->fg, VMBUS_VERSION_COPPER);
    assert_int_equal(fg_request_offers(&f->fg), DEV_COUNT);
    uint8_t buf[HV_MESSAGE_PAYLOAD_MAX] = { 0 };
    uint32_t type;
    unsigned errors = 1;
    fg_post(&f->fg, buf, 4); /* shorter than a header */
    type = VMBUS_MSG_OPENCHANNEL;
    memcpy(buf, &type, 4);
    fg_post(&f->fg, buf, 20); /* too short for its type */
    type = 77;
    memcpy(buf, &type, 4);
    fg_post(&f->fg, buf, 16); /* unknown type */
    type = VMBUS_MSG_TL_CONNECT_REQUEST;
    memcpy(buf, &type, 4);
    fg_post(&f->fg, buf, 60); /* a type this host does not handle */
    type = VMBUS_MSG_VERSION_RESPONSE;
    memcpy(buf, &type, 4);
    fg_post(&f->fg, buf, 16); /* a host-to-guest type */
    type = VMBUS_MSG_GPADL_BODY;
    memcpy(buf, &type, 4);
    fg_post(&f->fg, buf, 16 + 12); /* not a whole number of PFNs */
    /* Oversized: hvsim refuses the hypercall itself; the server sees nothing. */
    assert_int_equal(fg_post_once(&f->fg, 0, f->fg.msg_conn, HV_MESSAGE_VMBUS, buf, HV_MESSAGE_PAYLOAD_MAX + 1),
                     HV_STATUS_INVALID_PARAMETER);
    /* Not a VMBus HvPostMessage type. */
    assert_int_equal(fg_post_once(&f->fg, 0, f->fg.msg_conn, 5, &req, sizeof req), HV_STATUS_SUCCESS);
    errors += 7;
    fg_expect_nothing(&f->fg);
    struct hvsim_vmbus_stats s = stats(f);
    assert_int_equal(s.guest_errors, errors);
    assert_int_equal(fg_log_matches(&f->fg, "vmbus: guest error:", "unknown message type"), 2); /* 77 and 21 */
    /* Nothing else disturbed. */
    fg_open_with_ring(&f->fg, NETVSC_RELID, 0xa00, 4);
    assert_int_equal(stats(f).channels_open, 1);
    assert_int_equal(stats(f).guest_errors, errors);
}

/* A server whose thread is stuck in a callback fills its inbox; the guest's posts then get
 * INSUFFICIENT_BUFFERS, and go through once it runs again. */
static pthread_mutex_t stall_lock = PTHREAD_MUTEX_INITIALIZER;
static bool stalled;

static void stalling_open(void *ctx, struct hvsim_vmbus_channel *ch, void *in_ring, uint32_t in_bytes, void *out_ring,
                          uint32_t out_bytes)
{
    __atomic_store_n(&stalled, true, __ATOMIC_SEQ_CST);
    pthread_mutex_lock(&stall_lock);
    pthread_mutex_unlock(&stall_lock);
    dev_open(ctx, ch, in_ring, in_bytes, out_ring, out_bytes);
}

static void test_inbox_full(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(0), VMBUS_VERSION_COPPER);
    struct hvsim_vmbus_device d = f->devs[0]; /* the server copied its table: hot-add the staller */
    d.name = "stall";
    d.on_open = stalling_open;
    uint32_t relid = hvsim_vmbus_offer(f->fg.vb, &d);
    struct fg_msg m;
    fg_expect(&f->fg, VMBUS_MSG_OFFERCHANNEL, &m);
    fg_create_contiguous(&f->fg, relid, 0xb01, 4);
    /* The server thread stops in on_open (the lock is released before any assertion, so that a
     * failure can still destroy the server). */
    pthread_mutex_lock(&stall_lock);
    __atomic_store_n(&stalled, false, __ATOMIC_SEQ_CST);
    fg_send_open(&f->fg, relid, 0xb01, 2, 0);
    int64_t deadline = now_ns() + (int64_t)FG_WAIT_MS * 1000000;
    while (!__atomic_load_n(&stalled, __ATOMIC_SEQ_CST) && now_ns() < deadline)
        sleep_us(100);
    bool was_stalled = __atomic_load_n(&stalled, __ATOMIC_SEQ_CST);
    struct vmbus_msg_gpadl_teardown t = { .hdr.type = VMBUS_MSG_GPADL_TEARDOWN, .child_relid = NETVSC_RELID,
                                          .gpadl = 0x999 };
    unsigned posted = 0;
    uint16_t status = HV_STATUS_SUCCESS;
    while (was_stalled && status == HV_STATUS_SUCCESS && posted <= HVSIM_VMBUS_INBOX_DEPTH) {
        status = fg_post_once(&f->fg, 0, f->fg.msg_conn, HV_MESSAGE_VMBUS, &t, sizeof t);
        posted += status == HV_STATUS_SUCCESS;
    }
    pthread_mutex_unlock(&stall_lock);
    assert_true(was_stalled);
    assert_int_equal(status, HV_STATUS_INSUFFICIENT_BUFFERS);
    assert_int_equal(posted, HVSIM_VMBUS_INBOX_DEPTH);
    fg_expect(&f->fg, VMBUS_MSG_OPENCHANNEL_RESULT, &m);
    assert_int_equal(m.u.open.status, 0);
    assert_int_equal(fg_post_on(&f->fg, f->fg.msg_conn, &t, sizeof t), HV_STATUS_SUCCESS);
    fg_expect_nothing(&f->fg);
    assert_int_equal(stats(f).guest_errors, posted + 1);
    assert_int_equal(fg_count(&f->fg, &f->opens[relid]), 1);
}

/* Destroying the server closes what is open (on_close on the destroying thread). */
static void test_destroy_closes_channels(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(0), VMBUS_VERSION_COPPER);
    fg_open_with_ring(&f->fg, NETVSC_RELID, 0xc00, 4);
    fg_open_with_ring(&f->fg, STORVSC_RELID, 0xc01, 4);
    fg_flush(&f->fg);
    hvsim_vmbus_destroy(f->fg.vb);
    f->fg.vb = NULL;
    assert_int_equal(fg_count(&f->fg, &f->closes[NETVSC_RELID]), 1);
    assert_int_equal(fg_count(&f->fg, &f->closes[STORVSC_RELID]), 1);
    /* Its ports are gone with it: the model alone answers INVALID_CONNECTION_ID. */
    struct vmbus_msg_header req = { .type = VMBUS_MSG_REQUESTOFFERS };
    assert_int_equal(fg_post_once(&f->fg, 0, VMBUS_CONN_MESSAGE, HV_MESSAGE_VMBUS, &req, sizeof req),
                     HV_STATUS_INVALID_CONNECTION_ID);
    /* A new server on the same model works. */
    struct hvsim_vmbus_config cfg = base_config(0);
    cfg.devices = f->devs;
    cfg.device_count = DEV_COUNT;
    f->fg.vb = hvsim_vmbus_create(f->fg.sim, &cfg);
    assert_non_null(f->fg.vb);
    /* Two servers cannot share a model. */
    assert_null(hvsim_vmbus_create(f->fg.sim, &cfg));
    f->fg.offer_count = 0;
    fg_connect(&f->fg, VMBUS_VERSION_COPPER);
    assert_int_equal(fg_request_offers(&f->fg), DEV_COUNT);
}

static void test_create_rejects_bad_config(void **state)
{
    (void)state;
    struct fixture *f = fx_new(base_config(0));
    struct hvsim_vmbus_config cfg = base_config(0x00040002); /* not a version */
    assert_null(hvsim_vmbus_create(f->fg.sim, &cfg));
    cfg = base_config(0);
    cfg.device_count = 1; /* no table */
    assert_null(hvsim_vmbus_create(f->fg.sim, &cfg));
    struct hvsim_vmbus_device d = hvsim_vmbus_default_devices[0];
    d.sub_channels = HVSIM_VMBUS_MAX_SUB_CHANNELS + 1;
    cfg.devices = &d;
    assert_null(hvsim_vmbus_create(f->fg.sim, &cfg));
    assert_null(hvsim_vmbus_create(NULL, &cfg));
    assert_int_equal(fg_log_matches(&f->fg, "vmbus: create: bad configuration", NULL), 3);
}

/* --vmbus-rescind-after-ms: the named device is rescinded that long after its channel opened. */
static void test_rescind_timer(void **state)
{
    (void)state;
    struct hvsim_vmbus_config cfg = base_config(0);
    cfg.rescind_device = "storvsc";
    cfg.rescind_after_ms = 30;
    struct fixture *f = fx_connected(cfg, VMBUS_VERSION_COPPER);
    int64_t t0 = now_ns();
    fg_open_with_ring(&f->fg, STORVSC_RELID, 0xd00, 4);
    struct fg_msg m;
    fg_expect(&f->fg, VMBUS_MSG_RESCIND_CHANNELOFFER, &m);
    assert_true(now_ns() - t0 >= 25000000);
    assert_int_equal(m.u.relid.child_relid, STORVSC_RELID);
    assert_int_equal(fg_wait_count(&f->fg, &f->closes[STORVSC_RELID], 1, FG_WAIT_MS), 1);
    assert_int_equal(fg_log_matches(&f->fg, "rescinding storvsc (relid 2)", NULL), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_version_ladder, fg_teardown),
        cmocka_unit_test_teardown(test_contact_checks, fg_teardown),
        cmocka_unit_test_teardown(test_default_offers, fg_teardown),
        cmocka_unit_test_teardown(test_gpadl_sizes, fg_teardown),
        cmocka_unit_test_teardown(test_gpadl_bad, fg_teardown),
        cmocka_unit_test_teardown(test_open_close_rings, fg_teardown),
        cmocka_unit_test_teardown(test_open_failures, fg_teardown),
        cmocka_unit_test_teardown(test_teardown_ring_waits_for_close, fg_teardown),
        cmocka_unit_test_teardown(test_open_close_cycles, fg_teardown),
        cmocka_unit_test_teardown(test_rescind_open_channel, fg_teardown),
        cmocka_unit_test_teardown(test_sub_channels, fg_teardown),
        cmocka_unit_test_teardown(test_modify_channel, fg_teardown),
        cmocka_unit_test_teardown(test_unload, fg_teardown),
        cmocka_unit_test_teardown(test_hazard_irq_before_open_result, fg_teardown),
        cmocka_unit_test_teardown(test_hazard_send_on_open, fg_teardown),
        cmocka_unit_test_teardown(test_hazard_delay, fg_teardown),
        cmocka_unit_test_teardown(test_hazard_reorder, fg_teardown),
        cmocka_unit_test_teardown(test_hazard_rescind_during_open, fg_teardown),
        cmocka_unit_test_teardown(test_hazard_bad_offers, fg_teardown),
        cmocka_unit_test_teardown(test_hazard_unasked_responses, fg_teardown),
        cmocka_unit_test_teardown(test_outbox_retries_full_queue, fg_teardown),
        cmocka_unit_test_teardown(test_monitor_page_signals, fg_teardown),
        cmocka_unit_test_teardown(test_event_port_signals, fg_teardown),
        cmocka_unit_test_teardown(test_signal_guest, fg_teardown),
        cmocka_unit_test_teardown(test_legacy_signalling, fg_teardown),
        cmocka_unit_test_teardown(test_bad_guest_messages, fg_teardown),
        cmocka_unit_test_teardown(test_inbox_full, fg_teardown),
        cmocka_unit_test_teardown(test_destroy_closes_channels, fg_teardown),
        cmocka_unit_test_teardown(test_create_rejects_bad_config, fg_teardown),
        cmocka_unit_test_teardown(test_rescind_timer, fg_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
