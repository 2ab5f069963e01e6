/*
 * Unit tests for hvsim's VMBus server (sim/vmbus_server.h).
 *
 * Each test builds an hvsim model over 32 MiB of guest RAM with the server on top, and plays the
 * guest by hand: the SynIC set up through hvsim_wrmsr, channel messages posted with
 * HvCallPostMessage (input in guest RAM), answers read from the SINT's message slot the way a guest
 * does (atomic loads, message_type cleared last, EOM when another is pending), signals through
 * HvCallSignalEvent and the monitor page. The devices are the default set with recording callbacks.
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
#include "test/lib/test_util.h"

#define RAM_SIZE (32u << 20)
#define VPS 2u
#define HYPERCALL_GPA 0x1000u
#define SIMP_GPA(v) (0x100000u + (v) * 0x2000u)
#define SIEFP_GPA(v) (0x101000u + (v) * 0x2000u)
#define INPUT_GPA(v) (0x200000u + (v) * 0x1000u)
#define INT_PAGE_GPA 0x210000u
#define MON1_GPA 0x211000u
#define MON2_GPA 0x212000u
#define ARENA_GPA 0x400000u /* pages handed out for GPADLs and rings */
#define SINT_VECTOR(s) (0x30u + (s))
#define GUEST_OS_ID (HV_GUEST_OS_ID_OPEN_SOURCE | (0x7full << 56))
#define WAIT_MS 5000
#define MAX_OFFERS 64
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

/* A channel message as received (payload of the SynIC message). */
struct msg {
    uint32_t type, size;
    union {
        uint8_t bytes[HV_MESSAGE_PAYLOAD_MAX + 16];
        struct vmbus_msg_header hdr;
        struct vmbus_msg_offer_channel offer;
        struct vmbus_msg_relid relid;
        struct vmbus_msg_version_response2 version;
        struct vmbus_msg_gpadl_created created;
        struct vmbus_msg_gpadl_torndown torndown;
        struct vmbus_msg_open_result open;
        struct vmbus_msg_modify_channel_response modify;
    } u;
};

struct fixture {
    uint8_t *ram;
    struct hvsim *sim;
    struct hvsim_vmbus *vb;
    struct hvsim_vmbus_device devs[DEV_COUNT];
    pthread_mutex_t lock; /* guards everything below: callbacks and logs come from other threads */
    pthread_cond_t changed;
    struct reports logs;
    unsigned irqs;
    unsigned opens[VMBUS_MAX_RELID + 1], closes[VMBUS_MAX_RELID + 1], signals[VMBUS_MAX_RELID + 1];
    void *in_ring[VMBUS_MAX_RELID + 1], *out_ring[VMBUS_MAX_RELID + 1];
    uint32_t in_bytes[VMBUS_MAX_RELID + 1], out_bytes[VMBUS_MAX_RELID + 1];
    bool result_seen_at_open[VMBUS_MAX_RELID + 1]; /* the open result was already in the slot in on_open */
    struct hvsim_vmbus_channel *ch[VMBUS_MAX_RELID + 1];
    /* The guest's side (test thread only). */
    uint32_t msg_conn;     /* where the guest posts channel messages */
    uint32_t ctl_vp, ctl_sint;
    struct vmbus_msg_offer_channel offers[MAX_OFFERS]; /* every OFFERCHANNEL seen, in order */
    unsigned offer_count;
    uint32_t rescinded[MAX_OFFERS];
    unsigned rescind_count;
    uint64_t next_page; /* arena bump pointer (GPA) */
};

static struct fixture *current; /* freed by teardown, also after a failed assertion */

/* ---- callbacks (hvsim's raise and log; the devices') ---- */

static void record_irq(void *ctx, uint32_t vp, uint8_t vector)
{
    (void)vp;
    (void)vector;
    struct fixture *f = ctx;
    pthread_mutex_lock(&f->lock);
    f->irqs++;
    pthread_mutex_unlock(&f->lock);
}

static void record_log(void *ctx, const char *line)
{
    struct fixture *f = ctx;
    pthread_mutex_lock(&f->lock);
    reports_record(&f->logs, line);
    pthread_mutex_unlock(&f->lock);
}

static uint32_t slot_type(struct fixture *f, uint32_t vp, uint32_t sint);

static void dev_open(void *ctx, struct hvsim_vmbus_channel *ch, void *in_ring, uint32_t in_bytes, void *out_ring,
                     uint32_t out_bytes)
{
    struct fixture *f = ctx;
    uint32_t r = hvsim_vmbus_channel_relid(ch);
    bool result_there = slot_type(f, f->ctl_vp, f->ctl_sint) != HV_MESSAGE_NONE;
    if (hvsim_vmbus_send_on_open(ch))
        __atomic_store_n((uint64_t *)out_ring + 8, 0x5e11d0aull, __ATOMIC_RELAXED); /* "a first packet" */
    pthread_mutex_lock(&f->lock);
    f->opens[r]++;
    f->ch[r] = ch;
    f->in_ring[r] = in_ring;
    f->out_ring[r] = out_ring;
    f->in_bytes[r] = in_bytes;
    f->out_bytes[r] = out_bytes;
    f->result_seen_at_open[r] = result_there;
    pthread_cond_broadcast(&f->changed);
    pthread_mutex_unlock(&f->lock);
}

static void dev_close(void *ctx, struct hvsim_vmbus_channel *ch)
{
    struct fixture *f = ctx;
    pthread_mutex_lock(&f->lock);
    f->closes[hvsim_vmbus_channel_relid(ch)]++;
    pthread_cond_broadcast(&f->changed);
    pthread_mutex_unlock(&f->lock);
}

static void dev_signal(void *ctx, struct hvsim_vmbus_channel *ch)
{
    struct fixture *f = ctx;
    pthread_mutex_lock(&f->lock);
    f->signals[hvsim_vmbus_channel_relid(ch)]++;
    pthread_cond_broadcast(&f->changed);
    pthread_mutex_unlock(&f->lock);
}

static unsigned count_of(struct fixture *f, const unsigned *counter)
{
    pthread_mutex_lock(&f->lock);
    unsigned n = *counter;
    pthread_mutex_unlock(&f->lock);
    return n;
}

/* Waits until *counter >= n (or WAIT_MS); returns the count. */
static unsigned wait_count(struct fixture *f, const unsigned *counter, unsigned n)
{
    int64_t deadline = now_ns() + (int64_t)WAIT_MS * 1000000;
    pthread_mutex_lock(&f->lock);
    while (*counter < n && now_ns() < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&f->changed, &f->lock, &ts);
    }
    unsigned c = *counter;
    pthread_mutex_unlock(&f->lock);
    return c;
}

static unsigned log_matches(struct fixture *f, const char *a, const char *b)
{
    pthread_mutex_lock(&f->lock);
    unsigned n = b ? reports_matching(&f->logs, a, b) : reports_matching(&f->logs, a);
    pthread_mutex_unlock(&f->lock);
    return n;
}

/* ---- fixture ---- */

static void wrmsr_ok(struct fixture *f, uint32_t vp, uint32_t msr, uint64_t v)
{
    if (!hvsim_wrmsr(f->sim, vp, msr, v))
        fail_msg("wrmsr 0x%x = 0x%llx faulted", msr, (unsigned long long)v);
}

static struct hvsim_vmbus_config base_config(uint32_t max_version)
{
    return (struct hvsim_vmbus_config){ .max_version = max_version };
}

/* A model with every VP's SynIC on and a server with the default devices (recording callbacks). */
static struct fixture *fx_new_queue(struct hvsim_vmbus_config cfg, uint32_t queue_depth)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    current = f;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->changed, NULL);
    f->ram = aligned_alloc(4096, RAM_SIZE);
    assert_non_null(f->ram);
    memset(f->ram, 0, RAM_SIZE);
    struct hvsim_config hc = { .vp_count = VPS, .log = record_log, .log_ctx = f, .queue_depth = queue_depth };
    f->sim = hvsim_create(&hc, f->ram, RAM_SIZE, record_irq, f);
    assert_non_null(f->sim);
    wrmsr_ok(f, 0, HV_MSR_GUEST_OS_ID, GUEST_OS_ID);
    wrmsr_ok(f, 0, HV_MSR_HYPERCALL, HYPERCALL_GPA | HV_HYPERCALL_ENABLE);
    for (uint32_t v = 0; v < VPS; v++) {
        wrmsr_ok(f, v, HV_MSR_SIMP, SIMP_GPA(v) | HV_PAGE_ENABLE);
        wrmsr_ok(f, v, HV_MSR_SIEFP, SIEFP_GPA(v) | HV_PAGE_ENABLE);
        for (uint32_t s = 0; s < HV_SINT_COUNT; s++)
            wrmsr_ok(f, v, HV_MSR_SINT0 + s, SINT_VECTOR(s));
        wrmsr_ok(f, v, HV_MSR_SCONTROL, HV_SCONTROL_ENABLE);
    }
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
    f->vb = hvsim_vmbus_create(f->sim, &cfg);
    assert_non_null(f->vb);
    f->msg_conn = VMBUS_CONN_MESSAGE;
    f->ctl_sint = VMBUS_MESSAGE_SINT;
    f->next_page = ARENA_GPA;
    return f;
}

static struct fixture *fx_new(struct hvsim_vmbus_config cfg)
{
    return fx_new_queue(cfg, 0);
}

static void fx_free(struct fixture *f)
{
    if (!f)
        return;
    hvsim_vmbus_destroy(f->vb);
    hvsim_destroy(f->sim);
    free(f->ram);
    pthread_cond_destroy(&f->changed);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

static int teardown(void **state)
{
    (void)state;
    struct fixture *f = current;
    current = NULL;
    fx_free(f);
    return 0;
}

static struct hvsim_vmbus_stats stats(struct fixture *f)
{
    struct hvsim_vmbus_stats s;
    hvsim_vmbus_get_stats(f->vb, &s);
    return s;
}

static void flush(struct fixture *f)
{
    if (!hvsim_vmbus_flush(f->vb, WAIT_MS)) {
        reports_dump(&f->logs);
        fail_msg("the server did not go idle");
    }
}

/* ---- the guest's side: posting, receiving ---- */

static uint8_t *slot(struct fixture *f, uint32_t vp, uint32_t sint)
{
    return f->ram + SIMP_GPA(vp) + sint * HV_MESSAGE_SIZE;
}

static uint32_t slot_type(struct fixture *f, uint32_t vp, uint32_t sint)
{
    return __atomic_load_n((uint32_t *)slot(f, vp, sint), __ATOMIC_ACQUIRE);
}

static void consume(struct fixture *f, uint32_t vp, uint32_t sint)
{
    __atomic_store_n((uint32_t *)slot(f, vp, sint), HV_MESSAGE_NONE, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(slot(f, vp, sint) + offsetof(struct hv_message_header, message_flags), __ATOMIC_SEQ_CST) &
        HV_MESSAGE_FLAG_PENDING)
        wrmsr_ok(f, vp, HV_MSR_EOM, 0);
}

/* HvPostMessage of a channel message on conn (no retries). */
static uint16_t post_once(struct fixture *f, uint32_t vp, uint32_t conn, uint32_t hv_type, const void *msg,
                          uint32_t size)
{
    struct hv_input_post_message in = { .connection_id = conn, .message_type = hv_type, .payload_size = size };
    memcpy(in.payload, msg, size < HV_MESSAGE_PAYLOAD_MAX ? size : HV_MESSAGE_PAYLOAD_MAX);
    memcpy(f->ram + INPUT_GPA(vp), &in, sizeof in);
    return HV_HYPERCALL_STATUS(hvsim_hypercall(f->sim, vp, HV_CALL_POST_MESSAGE, INPUT_GPA(vp), 0));
}

/* As a guest does: INSUFFICIENT_BUFFERS is transient, try again. */
static uint16_t post_on(struct fixture *f, uint32_t conn, const void *msg, uint32_t size)
{
    for (int tries = 0; tries < 100000; tries++) {
        uint16_t s = post_once(f, 0, conn, HV_MESSAGE_VMBUS, msg, size);
        if (s != HV_STATUS_INSUFFICIENT_BUFFERS)
            return s;
        sleep_us(100);
    }
    return HV_STATUS_INSUFFICIENT_BUFFERS;
}

static void post(struct fixture *f, const void *msg, uint32_t size)
{
    assert_int_equal(post_on(f, f->msg_conn, msg, size), HV_STATUS_SUCCESS);
}

/* The next message in (vp, sint)'s slot within timeout_ms: true and *m filled, consumed. */
static bool recv_on(struct fixture *f, uint32_t vp, uint32_t sint, struct msg *m, int timeout_ms)
{
    int64_t deadline = now_ns() + (int64_t)timeout_ms * 1000000;
    for (;;) {
        if (slot_type(f, vp, sint) != HV_MESSAGE_NONE) {
            const uint8_t *s = slot(f, vp, sint);
            memset(m, 0, sizeof *m);
            m->size = s[offsetof(struct hv_message_header, payload_size)];
            memcpy(m->u.bytes, s + offsetof(struct hv_message, payload),
                   m->size < HV_MESSAGE_PAYLOAD_MAX ? m->size : HV_MESSAGE_PAYLOAD_MAX);
            m->type = m->size >= 4 ? m->u.hdr.type : VMBUS_MSG_INVALID;
            consume(f, vp, sint);
            return true;
        }
        if (now_ns() > deadline)
            return false;
        sleep_us(20);
    }
}

/* The guest's receive loop: offers and rescinds may come at any time (sub-channels, rescinds) and are
 * recorded; the next other message must be of `type`. */
static void expect(struct fixture *f, uint32_t type, struct msg *m)
{
    for (;;) {
        if (!recv_on(f, f->ctl_vp, f->ctl_sint, m, WAIT_MS)) {
            reports_dump(&f->logs);
            fail_msg("no %s within %d ms", vmbus_msg_name(type), WAIT_MS);
        }
        if (m->type == type)
            return;
        if (m->type == VMBUS_MSG_OFFERCHANNEL && f->offer_count < MAX_OFFERS) {
            f->offers[f->offer_count++] = m->u.offer;
            continue;
        }
        if (m->type == VMBUS_MSG_RESCIND_CHANNELOFFER && f->rescind_count < MAX_OFFERS) {
            f->rescinded[f->rescind_count++] = m->u.relid.child_relid;
            continue;
        }
        reports_dump(&f->logs);
        fail_msg("expected %s, got %s (%u bytes)", vmbus_msg_name(type), vmbus_msg_name(m->type), m->size);
    }
}

/* Nothing more arrives once the server is idle. */
static void expect_nothing(struct fixture *f)
{
    flush(f);
    struct msg m;
    if (recv_on(f, f->ctl_vp, f->ctl_sint, &m, 0))
        fail_msg("unexpected %s (%u bytes)", vmbus_msg_name(m.type), m.size);
}

/* Once the server is idle, takes every offer and rescind waiting (recorded); anything else fails. */
static void drain_async(struct fixture *f)
{
    flush(f);
    struct msg m;
    while (recv_on(f, f->ctl_vp, f->ctl_sint, &m, 0)) {
        if (m.type == VMBUS_MSG_OFFERCHANNEL && f->offer_count < MAX_OFFERS)
            f->offers[f->offer_count++] = m.u.offer;
        else if (m.type == VMBUS_MSG_RESCIND_CHANNELOFFER && f->rescind_count < MAX_OFFERS)
            f->rescinded[f->rescind_count++] = m.u.relid.child_relid;
        else
            fail_msg("unexpected %s (%u bytes)", vmbus_msg_name(m.type), m.size);
        flush(f);
    }
}

static bool was_rescinded(const struct fixture *f, uint32_t relid)
{
    for (unsigned i = 0; i < f->rescind_count; i++)
        if (f->rescinded[i] == relid)
            return true;
    return false;
}

static const struct vmbus_msg_offer_channel *offer_of(const struct fixture *f, uint32_t relid)
{
    for (unsigned i = f->offer_count; i-- > 0;)
        if (f->offers[i].child_relid == relid)
            return &f->offers[i];
    return NULL;
}

/* ---- the guest's side: the protocol ---- */

static struct vmbus_msg_initiate_contact contact_msg(uint32_t version, uint32_t vp, uint64_t target_info)
{
    struct vmbus_msg_initiate_contact ic = { .hdr.type = VMBUS_MSG_INITIATE_CONTACT, .version = version,
                                             .target_vcpu = vp, .target_info = target_info,
                                             .monitor_page1 = MON1_GPA, .monitor_page2 = MON2_GPA };
    return ic;
}

/* The target info a Linux-like guest sends: the interrupt page below 5.0, SINT 2 from 5.0 on. */
static uint64_t target_info_for(uint32_t version, uint32_t features)
{
    return version >= VMBUS_VERSION_WIN10_V5 ? VMBUS_TARGET_INFO(VMBUS_MESSAGE_SINT, 0, features) : INT_PAGE_GPA;
}

/* Negotiates exactly `version` (conn 4 from 5.0 on, as Linux does); the guest then posts on the
 * connection id the host returned. */
static void connect_at(struct fixture *f, uint32_t version)
{
    struct vmbus_msg_initiate_contact ic = contact_msg(version, f->ctl_vp, target_info_for(version, 0));
    uint32_t conn = version >= VMBUS_VERSION_WIN10_V5 ? VMBUS_CONN_MESSAGE_MULTICLIENT : VMBUS_CONN_MESSAGE;
    assert_int_equal(post_on(f, conn, &ic, sizeof ic), HV_STATUS_SUCCESS);
    struct msg m;
    expect(f, VMBUS_MSG_VERSION_RESPONSE, &m);
    assert_int_equal(m.u.version.v1.version_supported, 1);
    f->msg_conn = m.u.version.v1.msg_conn_id ? m.u.version.v1.msg_conn_id : VMBUS_CONN_MESSAGE;
}

/* REQUESTOFFERS; returns how many offers came before ALLOFFERS_DELIVERED. */
static unsigned request_offers(struct fixture *f)
{
    unsigned before = f->offer_count;
    struct vmbus_msg_header h = { .type = VMBUS_MSG_REQUESTOFFERS };
    post(f, &h, sizeof h);
    struct msg m;
    expect(f, VMBUS_MSG_ALLOFFERS_DELIVERED, &m);
    return f->offer_count - before;
}

static struct fixture *fx_connected(struct hvsim_vmbus_config cfg, uint32_t version)
{
    struct fixture *f = fx_new(cfg);
    connect_at(f, version);
    assert_int_equal(request_offers(f), DEV_COUNT);
    return f;
}

/* n contiguous guest pages from the arena (GPA). */
static uint64_t alloc_pages(struct fixture *f, uint32_t n)
{
    uint64_t gpa = f->next_page;
    f->next_page += (uint64_t)n * 4096;
    assert_true(f->next_page <= RAM_SIZE);
    return gpa;
}

/* GPADL_HEADER + GPADL_BODYs for the given PFNs (one range, whole pages). */
static void send_gpadl(struct fixture *f, uint32_t relid, uint32_t handle, const uint64_t *pfn, uint32_t n)
{
    uint8_t buf[HV_MESSAGE_PAYLOAD_MAX];
    struct vmbus_msg_gpadl_header h = { .hdr.type = VMBUS_MSG_GPADL_HEADER, .child_relid = relid, .gpadl = handle,
                                        .range_buflen = (uint16_t)(8 + 8 * n), .range_count = 1,
                                        .byte_count = n * 4096, .byte_offset = 0 };
    uint32_t here = n < VMBUS_GPADL_HEADER_PFNS ? n : (uint32_t)VMBUS_GPADL_HEADER_PFNS;
    memcpy(buf, &h, sizeof h);
    memcpy(buf + sizeof h, pfn, here * 8);
    post(f, buf, (uint32_t)sizeof h + here * 8);
    for (uint32_t done = here, number = 1; done < n; number++) {
        uint32_t k = n - done < VMBUS_GPADL_BODY_PFNS ? n - done : (uint32_t)VMBUS_GPADL_BODY_PFNS;
        struct vmbus_msg_gpadl_body b = { .hdr.type = VMBUS_MSG_GPADL_BODY, .msg_number = number, .gpadl = handle };
        memcpy(buf, &b, sizeof b);
        memcpy(buf + sizeof b, pfn + done, k * 8);
        post(f, buf, (uint32_t)sizeof b + k * 8);
        done += k;
    }
}

/* Sends a GPADL and returns GPADL_CREATED's status. */
static uint32_t create_gpadl(struct fixture *f, uint32_t relid, uint32_t handle, const uint64_t *pfn, uint32_t n)
{
    send_gpadl(f, relid, handle, pfn, n);
    struct msg m;
    expect(f, VMBUS_MSG_GPADL_CREATED, &m);
    assert_int_equal(m.u.created.gpadl, handle);
    assert_int_equal(m.u.created.child_relid, relid);
    return m.u.created.status;
}

/* A GPADL of n contiguous pages; returns the first page's GPA. */
static uint64_t create_contiguous(struct fixture *f, uint32_t relid, uint32_t handle, uint32_t n)
{
    uint64_t gpa = alloc_pages(f, n);
    uint64_t *pfn = malloc(n * sizeof *pfn);
    assert_non_null(pfn);
    for (uint32_t i = 0; i < n; i++)
        pfn[i] = (gpa >> 12) + i;
    assert_int_equal(create_gpadl(f, relid, handle, pfn, n), 0);
    free(pfn);
    return gpa;
}

static void teardown_gpadl(struct fixture *f, uint32_t relid, uint32_t handle)
{
    struct vmbus_msg_gpadl_teardown t = { .hdr.type = VMBUS_MSG_GPADL_TEARDOWN, .child_relid = relid, .gpadl = handle };
    post(f, &t, sizeof t);
    struct msg m;
    expect(f, VMBUS_MSG_GPADL_TORNDOWN, &m);
    assert_int_equal(m.u.torndown.gpadl, handle);
}

static void send_open(struct fixture *f, uint32_t relid, uint32_t handle, uint32_t offset, uint32_t vp)
{
    struct vmbus_msg_open_channel o = { .hdr.type = VMBUS_MSG_OPENCHANNEL, .child_relid = relid, .open_id = relid + 100,
                                        .ring_gpadl = handle, .target_vp = vp, .downstream_ring_page_offset = offset };
    post(f, &o, sizeof o);
}

static uint32_t open_channel(struct fixture *f, uint32_t relid, uint32_t handle, uint32_t offset, uint32_t vp)
{
    send_open(f, relid, handle, offset, vp);
    struct msg m;
    expect(f, VMBUS_MSG_OPENCHANNEL_RESULT, &m);
    assert_int_equal(m.u.open.child_relid, relid);
    assert_int_equal(m.u.open.open_id, relid + 100);
    return m.u.open.status;
}

/* A GPADL of `pages` for relid and the channel opened on it (offset pages/2, VP 0). */
static uint64_t open_with_ring(struct fixture *f, uint32_t relid, uint32_t handle, uint32_t pages)
{
    uint64_t gpa = create_contiguous(f, relid, handle, pages);
    assert_int_equal(open_channel(f, relid, handle, pages / 2, 0), 0);
    return gpa;
}

static void send_relid(struct fixture *f, uint32_t type, uint32_t relid)
{
    struct vmbus_msg_relid m = { .hdr.type = type, .child_relid = relid };
    post(f, &m, sizeof m);
}

static bool sief_bit(struct fixture *f, uint32_t vp, uint32_t sint, uint32_t flag)
{
    uint64_t w = __atomic_load_n((uint64_t *)(f->ram + SIEFP_GPA(vp) + sint * 256u) + flag / 64, __ATOMIC_ACQUIRE);
    return w & (1ull << (flag % 64));
}

static void clear_sief(struct fixture *f, uint32_t vp, uint32_t sint, uint32_t flag)
{
    __atomic_fetch_and((uint64_t *)(f->ram + SIEFP_GPA(vp) + sint * 256u) + flag / 64, ~(1ull << (flag % 64)),
                       __ATOMIC_SEQ_CST);
}

static uint16_t signal_event(struct fixture *f, uint32_t conn)
{
    return HV_HYPERCALL_STATUS(hvsim_hypercall(f->sim, 0, HV_CALL_SIGNAL_EVENT | HV_HYPERCALL_FAST, conn, 0));
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
        f->ctl_vp = 1;
        bool multiclient = true;
        uint32_t negotiated = 0, conn4_posts = 0;
        struct msg m;
        for (size_t i = 0; i < LADDER_LEN && !negotiated; i++) {
            uint32_t v = ladder[i];
            uint32_t conn = v >= VMBUS_VERSION_WIN10_V5 && multiclient ? VMBUS_CONN_MESSAGE_MULTICLIENT : VMBUS_CONN_MESSAGE;
            struct vmbus_msg_initiate_contact ic =
                contact_msg(v, 1, target_info_for(v, VMBUS_FEATURE_GUEST_SIGNAL_PARAMS | VMBUS_FEATURE_CHANNEL_INTR_REDIRECT));
            uint16_t status = post_on(f, conn, &ic, sizeof ic);
            if (conn == VMBUS_CONN_MESSAGE_MULTICLIENT && status == HV_STATUS_INVALID_CONNECTION_ID) {
                assert_true(max < VMBUS_VERSION_WIN10_V5); /* an old host has no conn 4 */
                multiclient = false;
                i--; /* the same version again on conn 1 */
                continue;
            }
            assert_int_equal(status, HV_STATUS_SUCCESS);
            conn4_posts += conn == VMBUS_CONN_MESSAGE_MULTICLIENT;
            expect(f, VMBUS_MSG_VERSION_RESPONSE, &m);
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
            assert_int_equal(post_on(f, HVSIM_VMBUS_CONN_REDIRECT, &req, sizeof req), HV_STATUS_SUCCESS);
            expect(f, VMBUS_MSG_ALLOFFERS_DELIVERED, &m);
            assert_int_equal(stats(f).messages_conn_redirect, 1);
        } else {
            assert_false(multiclient || max >= VMBUS_VERSION_WIN10_V5);
            assert_int_equal(m.u.version.v1.msg_conn_id, 0);
            assert_int_equal(post_on(f, HVSIM_VMBUS_CONN_REDIRECT, &req, sizeof req), HV_STATUS_INVALID_CONNECTION_ID);
            assert_int_equal(post_on(f, VMBUS_CONN_MESSAGE, &req, sizeof req), HV_STATUS_SUCCESS);
            expect(f, VMBUS_MSG_ALLOFFERS_DELIVERED, &m);
            assert_int_equal(stats(f).messages_conn_redirect, 0);
        }
        assert_int_equal(f->offer_count, DEV_COUNT);
        assert_int_equal(stats(f).guest_errors, 0);
        current = NULL;
        fx_free(f);
    }
}

static void expect_refused(struct fixture *f, uint32_t vp, uint32_t sint, const char *log_part)
{
    struct msg m;
    assert_true(recv_on(f, vp, sint, &m, WAIT_MS));
    assert_int_equal(m.type, VMBUS_MSG_VERSION_RESPONSE);
    assert_int_equal(m.u.version.v1.version_supported, 0);
    assert_int_equal(stats(f).version, 0);
    if (log_part && !log_matches(f, "vmbus: guest error: INITIATE_CONTACT", log_part)) {
        reports_dump(&f->logs);
        fail_msg("no guest error line with \"%s\"", log_part);
    }
}

static void test_contact_checks(void **state)
{
    (void)state;
    struct fixture *f = fx_new(base_config(0));
    struct vmbus_msg_initiate_contact ic;
    /* Unknown and too new versions are refused quietly (the guest tries the next). */
    ic = contact_msg(0x00070000, 0, VMBUS_TARGET_INFO(2, 0, 0));
    assert_int_equal(post_on(f, VMBUS_CONN_MESSAGE_MULTICLIENT, &ic, sizeof ic), HV_STATUS_SUCCESS);
    expect_refused(f, 0, 2, NULL);
    /* Guest errors: no such VP (answered on the posting VP), no such SINT (answered on SINT 2),
     * monitor pages outside RAM, unaligned or equal. */
    ic = contact_msg(VMBUS_VERSION_COPPER, 7, VMBUS_TARGET_INFO(2, 0, 0));
    assert_int_equal(post_on(f, VMBUS_CONN_MESSAGE_MULTICLIENT, &ic, sizeof ic), HV_STATUS_SUCCESS);
    expect_refused(f, 0, 2, "target VP 7");
    ic = contact_msg(VMBUS_VERSION_COPPER, 1, VMBUS_TARGET_INFO(16, 0, 0));
    assert_int_equal(post_on(f, VMBUS_CONN_MESSAGE_MULTICLIENT, &ic, sizeof ic), HV_STATUS_SUCCESS);
    expect_refused(f, 1, 2, "SINT 16");
    ic = contact_msg(VMBUS_VERSION_WIN10_V5_3, 0, VMBUS_TARGET_INFO(2, 1, 0));
    assert_int_equal(post_on(f, VMBUS_CONN_MESSAGE_MULTICLIENT, &ic, sizeof ic), HV_STATUS_SUCCESS);
    expect_refused(f, 0, 2, "VTL 1");
    ic = contact_msg(VMBUS_VERSION_WIN10, 0, INT_PAGE_GPA);
    ic.monitor_page2 = RAM_SIZE;
    assert_int_equal(post_on(f, VMBUS_CONN_MESSAGE, &ic, sizeof ic), HV_STATUS_SUCCESS);
    expect_refused(f, 0, 2, "monitor pages");
    ic.monitor_page2 = MON2_GPA + 8;
    assert_int_equal(post_on(f, VMBUS_CONN_MESSAGE, &ic, sizeof ic), HV_STATUS_SUCCESS);
    expect_refused(f, 0, 2, "monitor pages");
    ic.monitor_page2 = MON1_GPA;
    assert_int_equal(post_on(f, VMBUS_CONN_MESSAGE, &ic, sizeof ic), HV_STATUS_SUCCESS);
    expect_refused(f, 0, 2, "same page");
    ic = contact_msg(VMBUS_VERSION_WIN10, 0, INT_PAGE_GPA + 1);
    assert_int_equal(post_on(f, VMBUS_CONN_MESSAGE, &ic, sizeof ic), HV_STATUS_SUCCESS);
    expect_refused(f, 0, 2, "interrupt page");
    ic = contact_msg(VMBUS_VERSION_WIN7, 0, 0);
    assert_int_equal(post_on(f, VMBUS_CONN_MESSAGE, &ic, sizeof ic), HV_STATUS_SUCCESS);
    expect_refused(f, 0, 2, "no interrupt page");
    assert_int_equal(stats(f).guest_errors, 8);

    /* Monitor pages may be 0; the SINT is the guest's choice on conn 4 (here 5, VP 1). */
    ic = contact_msg(VMBUS_VERSION_COPPER, 1, VMBUS_TARGET_INFO(5, 0, 0));
    ic.monitor_page1 = ic.monitor_page2 = 0;
    assert_int_equal(post_on(f, VMBUS_CONN_MESSAGE_MULTICLIENT, &ic, sizeof ic), HV_STATUS_SUCCESS);
    struct msg m;
    assert_true(recv_on(f, 1, 5, &m, WAIT_MS));
    assert_int_equal(m.u.version.v1.version_supported, 1);
    assert_int_equal(stats(f).version, VMBUS_VERSION_COPPER);
    f->ctl_vp = 1;
    f->ctl_sint = 5;
    f->msg_conn = HVSIM_VMBUS_CONN_REDIRECT;
    /* A second INITIATE_CONTACT while connected: refused (answered at the connection's target), the
     * connection stays. */
    ic = contact_msg(VMBUS_VERSION_COPPER, 0, VMBUS_TARGET_INFO(2, 0, 0));
    post(f, &ic, sizeof ic);
    expect(f, VMBUS_MSG_VERSION_RESPONSE, &m);
    assert_int_equal(m.u.version.v1.version_supported, 0);
    assert_int_equal(stats(f).version, VMBUS_VERSION_COPPER);
    assert_int_equal(log_matches(f, "INITIATE_CONTACT for version 6.0", "already connected"), 1);
    assert_int_equal(request_offers(f), DEV_COUNT);
    /* On conn 1 the SINT is always 2, whatever the target info says; after UNLOAD contact works again. */
    struct vmbus_msg_header unload = { .type = VMBUS_MSG_UNLOAD };
    post(f, &unload, sizeof unload);
    expect(f, VMBUS_MSG_UNLOAD_RESPONSE, &m);
    ic = contact_msg(VMBUS_VERSION_WIN10_V5_2, 0, VMBUS_TARGET_INFO(9, 0, 0));
    assert_int_equal(post_on(f, VMBUS_CONN_MESSAGE, &ic, sizeof ic), HV_STATUS_SUCCESS);
    assert_true(recv_on(f, 0, 2, &m, WAIT_MS));
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
    assert_int_equal(f->offer_count, DEV_COUNT);
    bool monitor_used[VMBUS_MONITOR_IDS] = { false };
    const struct vmbus_monitor_page *mon1 = (const void *)(f->ram + MON1_GPA);
    for (unsigned i = 0; i < DEV_COUNT; i++) {
        const struct vmbus_msg_offer_channel *o = &f->offers[i];
        const struct hvsim_vmbus_device *d = &hvsim_vmbus_default_devices[i];
        assert_int_equal(o->child_relid, i + 1); /* distinct, from 1, in table order */
        assert_int_equal(o->connection_id, HVSIM_VMBUS_CONN_CHANNEL_BASE + i + 1);
        assert_true(vmbus_guid_equal(&o->offer.if_type, &d->type));
        assert_true(vmbus_guid_equal(&o->offer.if_instance, &d->instance));
        for (unsigned k = 0; k < i; k++)
            assert_false(vmbus_guid_equal(&o->offer.if_instance, &f->offers[k].offer.if_instance));
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
    assert_true(vmbus_guid_equal(&f->offers[0].offer.if_type, &nic));
    assert_int_equal(f->offers[0].offer.chn_flags, 0);
    assert_true(vmbus_guid_equal(&f->offers[5].offer.if_type, &kvp));
    assert_int_equal(f->offers[5].offer.chn_flags, VMBUS_OFFER_ENUMERATE_DEVICE_INTERFACE | VMBUS_OFFER_NAMED_PIPE_MODE);
    assert_int_equal(f->offers[5].offer.user_defined[0], 4);
    assert_int_equal(f->offers[5].monitor_allocated, 0);
    assert_true(vmbus_guid_equal(&f->offers[6].offer.if_type, &test));
    struct hvsim_vmbus_stats s = stats(f);
    assert_int_equal(s.offers, DEV_COUNT);
    assert_int_equal(s.sub_channels, 0);
    /* A second REQUESTOFFERS is a guest error and sends nothing. */
    struct vmbus_msg_header h = { .type = VMBUS_MSG_REQUESTOFFERS };
    post(f, &h, sizeof h);
    expect_nothing(f);
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
        pfn[i] = (ARENA_GPA >> 12) + (i * 7u) % 4096u;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint32_t handle = VMBUS_GPADL_FIRST_HANDLE + (uint32_t)i;
        assert_int_equal(create_gpadl(f, NETVSC_RELID, handle, pfn, sizes[i]), 0);
        assert_int_equal(stats(f).gpadls, i + 1);
    }
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        teardown_gpadl(f, NETVSC_RELID, VMBUS_GPADL_FIRST_HANDLE + (uint32_t)i);
    struct hvsim_vmbus_stats s = stats(f);
    assert_int_equal(s.gpadls, 0);
    assert_int_equal(s.gpadls_created, 6);
    assert_int_equal(s.gpadls_torn_down, 6);
    assert_int_equal(s.guest_errors, 0);
    free(pfn);
}

static void expect_created_status(struct fixture *f, uint32_t handle, bool ok)
{
    struct msg m;
    expect(f, VMBUS_MSG_GPADL_CREATED, &m);
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
        pfn[i] = (ARENA_GPA >> 12) + i;
    unsigned errors = 0;
    /* Handle 0. */
    assert_int_not_equal(create_gpadl(f, NETVSC_RELID, 0, pfn, 4), 0);
    assert_int_equal(++errors, stats(f).guest_errors);
    assert_int_equal(log_matches(f, "vmbus: guest error: GPADL_HEADER for handle 0x0", "null handle"), 1);
    /* A relid nobody offered. */
    assert_int_not_equal(create_gpadl(f, 99, 0x100, pfn, 4), 0);
    assert_int_equal(++errors, stats(f).guest_errors);
    /* A duplicate handle: refused, the first GPADL stays. */
    assert_int_equal(create_gpadl(f, NETVSC_RELID, 0x101, pfn, 4), 0);
    assert_int_not_equal(create_gpadl(f, STORVSC_RELID, 0x101, pfn, 4), 0);
    assert_int_equal(++errors, stats(f).guest_errors);
    assert_int_equal(stats(f).gpadls, 1);
    /* A PFN outside guest RAM, in the header and in a body. */
    uint64_t bad[40];
    memcpy(bad, pfn, sizeof bad);
    bad[3] = RAM_SIZE >> 12;
    assert_int_not_equal(create_gpadl(f, NETVSC_RELID, 0x102, bad, 10), 0);
    bad[3] = pfn[3];
    bad[30] = UINT64_MAX;
    assert_int_not_equal(create_gpadl(f, NETVSC_RELID, 0x103, bad, 40), 0);
    errors += 2;
    /* A body with more PFNs than remain; then the rest of its bodies find no GPADL (logged only). */
    uint8_t buf[HV_MESSAGE_PAYLOAD_MAX];
    struct vmbus_msg_gpadl_header h = { .hdr.type = VMBUS_MSG_GPADL_HEADER, .child_relid = NETVSC_RELID,
                                        .gpadl = 0x104, .range_buflen = 8 + 8 * 30, .range_count = 1,
                                        .byte_count = 30 * 4096 };
    memcpy(buf, &h, sizeof h);
    memcpy(buf + sizeof h, pfn, 26 * 8);
    post(f, buf, sizeof h + 26 * 8);
    struct vmbus_msg_gpadl_body b = { .hdr.type = VMBUS_MSG_GPADL_BODY, .msg_number = 1, .gpadl = 0x104 };
    memcpy(buf, &b, sizeof b);
    memcpy(buf + sizeof b, pfn, 5 * 8);
    post(f, buf, sizeof b + 5 * 8);
    expect_created_status(f, 0x104, false);
    post(f, buf, sizeof b + 4 * 8); /* body out of order: no GPADL being built */
    errors += 2;
    flush(f);
    assert_int_equal(stats(f).guest_errors, errors);
    /* A new header for a handle still being built: both dropped, one failure answer. */
    h.gpadl = 0x105;
    memcpy(buf, &h, sizeof h);
    memcpy(buf + sizeof h, pfn, 26 * 8);
    post(f, buf, sizeof h + 26 * 8);
    post(f, buf, sizeof h + 26 * 8);
    expect_created_status(f, 0x105, false);
    errors++;
    /* Header fields that disagree (two ranges) still get an answer. */
    h.gpadl = 0x106;
    h.range_count = 2;
    memcpy(buf, &h, sizeof h);
    post(f, buf, sizeof h + 26 * 8);
    expect_created_status(f, 0x106, false);
    errors++;
    /* A body for a complete GPADL: dropped. */
    b.gpadl = 0x101;
    memcpy(buf, &b, sizeof b);
    post(f, buf, sizeof b + 8);
    errors++;
    /* Teardown of an unknown handle and with the wrong relid: dropped. */
    struct vmbus_msg_gpadl_teardown t = { .hdr.type = VMBUS_MSG_GPADL_TEARDOWN, .child_relid = NETVSC_RELID, .gpadl = 0x999 };
    post(f, &t, sizeof t);
    t.child_relid = STORVSC_RELID;
    t.gpadl = 0x101;
    post(f, &t, sizeof t);
    errors += 2;
    expect_nothing(f);
    struct hvsim_vmbus_stats s = stats(f);
    assert_int_equal(s.guest_errors, errors);
    assert_int_equal(s.gpadls, 1);
    /* Nothing disturbed: a good GPADL and the old one's teardown still work. */
    assert_int_equal(create_gpadl(f, NETVSC_RELID, 0x107, pfn, 60), 0);
    teardown_gpadl(f, NETVSC_RELID, 0x101);
    teardown_gpadl(f, NETVSC_RELID, 0x107);
    assert_int_equal(stats(f).gpadls, 0);
    assert_int_equal(stats(f).guest_errors, errors);
}

/* ---- open / close ---- */

static void test_open_close_rings(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(0), VMBUS_VERSION_COPPER);
    uint64_t gpa = create_contiguous(f, NETVSC_RELID, 0x200, 10);
    assert_int_equal(open_channel(f, NETVSC_RELID, 0x200, 4, 1), 0);
    flush(f);
    assert_int_equal(count_of(f, &f->opens[NETVSC_RELID]), 1);
    pthread_mutex_lock(&f->lock);
    assert_ptr_equal(f->in_ring[NETVSC_RELID], f->ram + gpa);
    assert_int_equal(f->in_bytes[NETVSC_RELID], 4 * 4096);
    assert_ptr_equal(f->out_ring[NETVSC_RELID], f->ram + gpa + 4 * 4096);
    assert_int_equal(f->out_bytes[NETVSC_RELID], 6 * 4096);
    struct hvsim_vmbus_channel *ch = f->ch[NETVSC_RELID];
    pthread_mutex_unlock(&f->lock);
    assert_int_equal(hvsim_vmbus_channel_relid(ch), NETVSC_RELID);
    assert_int_equal(hvsim_vmbus_channel_target_vp(ch), 1);
    assert_int_equal(hvsim_vmbus_channel_sub_index(ch), 0);
    assert_string_equal(hvsim_vmbus_channel_device(ch)->name, "netvsc");
    assert_false(hvsim_vmbus_send_on_open(ch));
    assert_int_equal(stats(f).channels_open, 1);
    assert_int_equal(log_matches(f, "vmbus: channel 1 (netvsc) opened", "target VP 1"), 1);
    send_relid(f, VMBUS_MSG_CLOSECHANNEL, NETVSC_RELID); /* no answer in the protocol */
    assert_int_equal(wait_count(f, &f->closes[NETVSC_RELID], 1), 1);
    teardown_gpadl(f, NETVSC_RELID, 0x200);
    expect_nothing(f);
    struct hvsim_vmbus_stats s = stats(f);
    assert_int_equal(s.channels_open, 0);
    assert_int_equal(s.opens, 1);
    assert_int_equal(s.closes, 1);
    assert_int_equal(s.guest_errors, 0);
    /* Closing it again is a guest error. */
    send_relid(f, VMBUS_MSG_CLOSECHANNEL, NETVSC_RELID);
    expect_nothing(f);
    assert_int_equal(stats(f).guest_errors, 1);
    assert_int_equal(count_of(f, &f->closes[NETVSC_RELID]), 1);
}

static void test_open_failures(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(0), VMBUS_VERSION_COPPER);
    create_contiguous(f, STORVSC_RELID, 0x300, 8);
    unsigned errors = 0;
    assert_int_not_equal(open_channel(f, 99, 0x300, 4, 0), 0);           /* unknown relid */
    assert_int_not_equal(open_channel(f, STORVSC_RELID, 0x399, 4, 0), 0); /* missing GPADL */
    assert_int_not_equal(open_channel(f, STORVSC_RELID, 0x300, 0, 0), 0); /* no guest -> host ring */
    assert_int_not_equal(open_channel(f, STORVSC_RELID, 0x300, 8, 0), 0); /* no host -> guest ring */
    assert_int_not_equal(open_channel(f, STORVSC_RELID, 0x300, 4, VPS), 0); /* no such VP */
    errors += 5;
    /* A GPADL still being built. */
    uint64_t pfn[30];
    for (uint32_t i = 0; i < 30; i++)
        pfn[i] = (ARENA_GPA >> 12) + 100 + i;
    uint8_t buf[HV_MESSAGE_PAYLOAD_MAX];
    struct vmbus_msg_gpadl_header h = { .hdr.type = VMBUS_MSG_GPADL_HEADER, .child_relid = STORVSC_RELID,
                                        .gpadl = 0x301, .range_buflen = 8 + 8 * 30, .range_count = 1,
                                        .byte_count = 30 * 4096 };
    memcpy(buf, &h, sizeof h);
    memcpy(buf + sizeof h, pfn, 26 * 8);
    post(f, buf, sizeof h + 26 * 8);
    assert_int_not_equal(open_channel(f, STORVSC_RELID, 0x301, 4, 0), 0);
    errors++;
    assert_int_equal(stats(f).guest_errors, errors);
    /* A scattered ring: refused as an hvsim limitation, not a guest error. */
    pfn[5] += 50;
    assert_int_equal(create_gpadl(f, STORVSC_RELID, 0x302, pfn, 8), 0);
    assert_int_not_equal(open_channel(f, STORVSC_RELID, 0x302, 4, 0), 0);
    assert_int_equal(log_matches(f, "not physically contiguous", "limitation"), 1);
    assert_int_equal(stats(f).guest_errors, errors);
    /* But contiguity is needed per ring only. */
    pfn[5] -= 50;
    pfn[4] += 50; /* the second ring starts at page 4: rings {0..3} and {4..7} each contiguous */
    for (uint32_t i = 5; i < 8; i++)
        pfn[i] = pfn[4] + (i - 4);
    assert_int_equal(create_gpadl(f, STORVSC_RELID, 0x303, pfn, 8), 0);
    assert_int_equal(open_channel(f, STORVSC_RELID, 0x303, 4, VMBUS_TARGET_VP_NO_INTERRUPT), 0);
    /* Already open; its ring GPADL may not be another channel's ring. */
    assert_int_not_equal(open_channel(f, STORVSC_RELID, 0x300, 4, 0), 0);
    assert_int_not_equal(open_channel(f, NETVSC_RELID, 0x303, 4, 0), 0);
    errors += 2;
    /* Any complete GPADL may be a ring, whichever relid created it. */
    assert_int_equal(open_channel(f, NETVSC_RELID, 0x300, 4, 0), 0);
    expect_nothing(f);
    assert_int_equal(stats(f).guest_errors, errors);
    assert_int_equal(stats(f).channels_open, 2);
    assert_int_equal(count_of(f, &f->opens[STORVSC_RELID]), 1);
}

/* Tearing down the ring of an open channel: answered when the channel closes. */
static void test_teardown_ring_waits_for_close(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(0), VMBUS_VERSION_COPPER);
    open_with_ring(f, NETVSC_RELID, 0x310, 4);
    struct vmbus_msg_gpadl_teardown t = { .hdr.type = VMBUS_MSG_GPADL_TEARDOWN, .child_relid = NETVSC_RELID,
                                          .gpadl = 0x310 };
    post(f, &t, sizeof t);
    expect_nothing(f);
    assert_int_equal(stats(f).guest_errors, 1);
    assert_int_equal(log_matches(f, "ring of open channel 1", "when the channel closes"), 1);
    send_relid(f, VMBUS_MSG_CLOSECHANNEL, NETVSC_RELID);
    struct msg m;
    expect(f, VMBUS_MSG_GPADL_TORNDOWN, &m);
    assert_int_equal(m.u.torndown.gpadl, 0x310);
    assert_int_equal(stats(f).gpadls, 0);
}

/* 2,000 open/close cycles, each with its own GPADL: nothing is left behind. */
static void test_open_close_cycles(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(0), VMBUS_VERSION_COPPER);
    uint64_t gpa = alloc_pages(f, 8);
    uint64_t pfn[8];
    for (uint32_t i = 0; i < 8; i++)
        pfn[i] = (gpa >> 12) + i;
    for (uint32_t i = 0; i < 2000; i++) {
        uint32_t handle = VMBUS_GPADL_FIRST_HANDLE + i;
        assert_int_equal(create_gpadl(f, STORVSC_RELID, handle, pfn, 8), 0);
        assert_int_equal(open_channel(f, STORVSC_RELID, handle, 4, i % VPS), 0);
        send_relid(f, VMBUS_MSG_CLOSECHANNEL, STORVSC_RELID);
        teardown_gpadl(f, STORVSC_RELID, handle);
    }
    expect_nothing(f);
    struct hvsim_vmbus_stats s = stats(f);
    assert_int_equal(s.gpadls, 0);
    assert_int_equal(s.channels_open, 0);
    assert_int_equal(s.offers, DEV_COUNT);
    assert_int_equal(s.opens, 2000);
    assert_int_equal(s.closes, 2000);
    assert_int_equal(s.gpadls_created, 2000);
    assert_int_equal(s.gpadls_torn_down, 2000);
    assert_int_equal(s.guest_errors, 0);
    assert_int_equal(count_of(f, &f->opens[STORVSC_RELID]), 2000);
    assert_int_equal(count_of(f, &f->closes[STORVSC_RELID]), 2000);
}

/* ---- rescind, hot-add, sub-channels ---- */

static void test_rescind_open_channel(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(0), VMBUS_VERSION_COPPER);
    open_with_ring(f, NETVSC_RELID, 0x400, 4);
    assert_false(hvsim_vmbus_rescind(f->vb, 99));
    assert_true(hvsim_vmbus_rescind(f->vb, NETVSC_RELID));
    assert_false(hvsim_vmbus_rescind(f->vb, NETVSC_RELID)); /* already rescinded */
    assert_int_equal(wait_count(f, &f->closes[NETVSC_RELID], 1), 1);
    struct msg m;
    expect(f, VMBUS_MSG_RESCIND_CHANNELOFFER, &m);
    assert_int_equal(m.u.relid.child_relid, NETVSC_RELID);
    assert_int_equal(log_matches(f, "relid 1 (netvsc) rescinded", NULL), 1);
    /* The guest closes and tears down as Linux does after a rescind: the teardown is answered. */
    send_relid(f, VMBUS_MSG_CLOSECHANNEL, NETVSC_RELID);
    teardown_gpadl(f, NETVSC_RELID, 0x400);
    /* Until RELID_RELEASED the relid stays reserved: a hot-added device gets another. */
    struct hvsim_vmbus_device extra = hvsim_vmbus_default_devices[0];
    extra.name = "netvsc2";
    extra.instance.b[15] = 0x42;
    uint32_t relid = hvsim_vmbus_offer(f->vb, &extra);
    assert_int_equal(relid, DEV_COUNT + 1);
    expect(f, VMBUS_MSG_OFFERCHANNEL, &m);
    assert_int_equal(m.u.offer.child_relid, relid);
    /* The channel cannot be opened or given GPADLs any more. */
    create_contiguous(f, STORVSC_RELID, 0x401, 4);
    assert_int_not_equal(open_channel(f, NETVSC_RELID, 0x401, 2, 0), 0);
    assert_int_not_equal(create_gpadl(f, NETVSC_RELID, 0x402, (uint64_t[]){ ARENA_GPA >> 12 }, 1), 0);
    send_relid(f, VMBUS_MSG_RELID_RELEASED, NETVSC_RELID);
    flush(f);
    assert_int_equal(log_matches(f, "relid 1 (netvsc) released", NULL), 1);
    assert_int_equal(stats(f).offers, DEV_COUNT); /* 7 - 1 + 1 */
    /* Now relid 1 may be reused. */
    extra.instance.b[15] = 0x43;
    assert_int_equal(hvsim_vmbus_offer(f->vb, &extra), NETVSC_RELID);
    expect(f, VMBUS_MSG_OFFERCHANNEL, &m);
    assert_int_equal(m.u.offer.child_relid, NETVSC_RELID);
    /* RELID_RELEASED for a live channel is a guest error. */
    send_relid(f, VMBUS_MSG_RELID_RELEASED, STORVSC_RELID);
    expect_nothing(f);
    assert_int_equal(stats(f).guest_errors, 3); /* the open, the GPADL, the release */
    assert_int_equal(stats(f).rescinds, 1);
}

static void test_sub_channels(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(0), VMBUS_VERSION_COPPER);
    unsigned base = f->offer_count;
    open_with_ring(f, TEST_DEV_RELID, 0x500, 4);
    drain_async(f);
    /* Offered after the primary's open result: same GUIDs, indexes 1 and 2, new relids. */
    assert_int_equal(f->offer_count, base + 2);
    const struct vmbus_msg_offer_channel *primary = offer_of(f, TEST_DEV_RELID);
    for (unsigned i = 0; i < 2; i++) {
        const struct vmbus_msg_offer_channel *o = &f->offers[base + i];
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
    open_with_ring(f, sub1, 0x501, 4);
    flush(f);
    pthread_mutex_lock(&f->lock);
    assert_int_equal(hvsim_vmbus_channel_sub_index(f->ch[sub1]), 1);
    pthread_mutex_unlock(&f->lock);
    /* More on request; not for a sub-channel or an unknown relid. */
    assert_true(hvsim_vmbus_offer_sub_channels(f->vb, TEST_DEV_RELID, 1));
    assert_false(hvsim_vmbus_offer_sub_channels(f->vb, sub1, 1));
    assert_false(hvsim_vmbus_offer_sub_channels(f->vb, 99, 1));
    drain_async(f);
    assert_int_equal(f->offer_count, base + 3);
    assert_int_equal(f->offers[base + 2].offer.sub_channel_index, 3);
    /* Closing the primary rescinds its sub-channels (the open one closed first). */
    send_relid(f, VMBUS_MSG_CLOSECHANNEL, TEST_DEV_RELID);
    assert_int_equal(wait_count(f, &f->closes[sub1], 1), 1);
    drain_async(f);
    assert_true(was_rescinded(f, sub1) && was_rescinded(f, sub2) && was_rescinded(f, DEV_COUNT + 3));
    assert_int_equal(count_of(f, &f->closes[TEST_DEV_RELID]), 1);
    for (uint32_t r = sub1; r <= DEV_COUNT + 3; r++)
        send_relid(f, VMBUS_MSG_RELID_RELEASED, r);
    expect_nothing(f);
    assert_int_equal(stats(f).sub_channels, 0);
    assert_int_equal(stats(f).guest_errors, 0);
    /* The next open offers them again (relids and indexes reused). */
    teardown_gpadl(f, TEST_DEV_RELID, 0x500);
    open_with_ring(f, TEST_DEV_RELID, 0x502, 4);
    drain_async(f);
    assert_int_equal(f->offer_count, base + 5);
    assert_int_equal(f->offers[base + 3].child_relid, sub1);
    assert_int_equal(f->offers[base + 4].offer.sub_channel_index, 2);
}

/* ---- MODIFYCHANNEL ---- */

static void send_modify(struct fixture *f, uint32_t relid, uint32_t vp)
{
    struct vmbus_msg_modify_channel m = { .hdr.type = VMBUS_MSG_MODIFYCHANNEL, .child_relid = relid, .target_vp = vp };
    post(f, &m, sizeof m);
}

static void test_modify_channel(void **state)
{
    (void)state;
    /* 4.1: the target VP changes; no answer. */
    struct fixture *f = fx_connected(base_config(VMBUS_VERSION_WIN10_RS3), VMBUS_VERSION_WIN10_RS3);
    open_with_ring(f, NETVSC_RELID, 0x600, 4);
    flush(f);
    send_modify(f, NETVSC_RELID, 1);
    expect_nothing(f);
    pthread_mutex_lock(&f->lock);
    struct hvsim_vmbus_channel *ch = f->ch[NETVSC_RELID];
    pthread_mutex_unlock(&f->lock);
    assert_int_equal(hvsim_vmbus_channel_target_vp(ch), 1);
    assert_true(hvsim_vmbus_signal_guest(ch));
    assert_true(sief_bit(f, 1, VMBUS_MESSAGE_SINT, NETVSC_RELID));
    assert_false(sief_bit(f, 0, VMBUS_MESSAGE_SINT, NETVSC_RELID));
    assert_int_equal(stats(f).guest_errors, 0);
    current = NULL;
    fx_free(f);

    /* 5.3: answered, with a failure for a bad VP or a channel that is not open. */
    f = fx_connected(base_config(VMBUS_VERSION_WIN10_V5_3), VMBUS_VERSION_WIN10_V5_3);
    open_with_ring(f, NETVSC_RELID, 0x600, 4);
    struct msg m;
    send_modify(f, NETVSC_RELID, 1);
    expect(f, VMBUS_MSG_MODIFYCHANNEL_RESPONSE, &m);
    assert_int_equal(m.u.modify.child_relid, NETVSC_RELID);
    assert_int_equal(m.u.modify.status, 0);
    send_modify(f, NETVSC_RELID, VPS);
    expect(f, VMBUS_MSG_MODIFYCHANNEL_RESPONSE, &m);
    assert_int_not_equal(m.u.modify.status, 0);
    send_modify(f, STORVSC_RELID, 0);
    expect(f, VMBUS_MSG_MODIFYCHANNEL_RESPONSE, &m);
    assert_int_not_equal(m.u.modify.status, 0);
    send_modify(f, 99, 0);
    expect(f, VMBUS_MSG_MODIFYCHANNEL_RESPONSE, &m);
    assert_int_not_equal(m.u.modify.status, 0);
    assert_int_equal(stats(f).guest_errors, 3);
    flush(f);
    pthread_mutex_lock(&f->lock);
    ch = f->ch[NETVSC_RELID];
    pthread_mutex_unlock(&f->lock);
    assert_int_equal(hvsim_vmbus_channel_target_vp(ch), 1);
    current = NULL;
    fx_free(f);

    /* 4.0: MODIFYCHANNEL does not exist yet: a guest error, no answer, no change. */
    f = fx_connected(base_config(VMBUS_VERSION_WIN10), VMBUS_VERSION_WIN10);
    open_with_ring(f, NETVSC_RELID, 0x600, 4);
    send_modify(f, NETVSC_RELID, 1);
    expect_nothing(f);
    assert_int_equal(stats(f).guest_errors, 1);
    assert_int_equal(log_matches(f, "MODIFYCHANNEL needs version 4.1", NULL), 1);
    pthread_mutex_lock(&f->lock);
    ch = f->ch[NETVSC_RELID];
    pthread_mutex_unlock(&f->lock);
    assert_int_equal(hvsim_vmbus_channel_target_vp(ch), 0);
}

/* ---- UNLOAD ---- */

static void test_unload(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(0), VMBUS_VERSION_COPPER);
    open_with_ring(f, NETVSC_RELID, 0x700, 4);
    open_with_ring(f, TEST_DEV_RELID, 0x701, 4);
    create_contiguous(f, STORVSC_RELID, 0x702, 2);
    drain_async(f); /* the test device's sub-channel offers */
    open_with_ring(f, DEV_COUNT + 1, 0x703, 4);
    assert_int_equal(stats(f).channels_open, 3);
    struct vmbus_msg_header h = { .type = VMBUS_MSG_UNLOAD };
    post(f, &h, sizeof h);
    struct msg m;
    expect(f, VMBUS_MSG_UNLOAD_RESPONSE, &m);
    flush(f);
    assert_int_equal(count_of(f, &f->closes[NETVSC_RELID]), 1);
    assert_int_equal(count_of(f, &f->closes[TEST_DEV_RELID]), 1);
    assert_int_equal(count_of(f, &f->closes[DEV_COUNT + 1]), 1);
    struct hvsim_vmbus_stats s = stats(f);
    assert_int_equal(s.version, 0);
    assert_int_equal(s.channels_open, 0);
    assert_int_equal(s.gpadls, 0);
    assert_int_equal(s.sub_channels, 0);
    assert_int_equal(s.offers, DEV_COUNT);
    assert_int_equal(s.unloads, 1);
    assert_int_equal(f->rescind_count, 0); /* UNLOAD drops sub-channels without messages */
    /* Disconnected: messages other than INITIATE_CONTACT are guest errors. */
    struct vmbus_msg_header req = { .type = VMBUS_MSG_REQUESTOFFERS };
    assert_int_equal(post_on(f, VMBUS_CONN_MESSAGE, &req, sizeof req), HV_STATUS_SUCCESS);
    expect_nothing(f);
    assert_int_equal(stats(f).guest_errors, 1);
    /* A new connection gets the same offers with the same relids. */
    f->offer_count = 0;
    connect_at(f, VMBUS_VERSION_WIN10_V5_2);
    assert_int_equal(request_offers(f), DEV_COUNT);
    for (unsigned i = 0; i < DEV_COUNT; i++)
        assert_int_equal(f->offers[i].child_relid, i + 1);
    open_with_ring(f, NETVSC_RELID, 0x700, 4);
    assert_int_equal(stats(f).channels_open, 1);
}

/* ---- hazards ---- */

static void test_hazard_irq_before_open_result(void **state)
{
    (void)state;
    struct hvsim_vmbus_config cfg = base_config(0);
    cfg.hazards = HVSIM_VMBUS_IRQ_BEFORE_OPEN_RESULT;
    struct fixture *f = fx_connected(cfg, VMBUS_VERSION_COPPER);
    create_contiguous(f, NETVSC_RELID, 0x800, 4);
    send_open(f, NETVSC_RELID, 0x800, 2, 1);
    /* By the time the result is in the slot, the channel's flag is already set on its VP. */
    struct msg m;
    expect(f, VMBUS_MSG_OPENCHANNEL_RESULT, &m);
    assert_true(sief_bit(f, 1, VMBUS_MESSAGE_SINT, NETVSC_RELID));
    assert_int_equal(stats(f).host_signals, 1);
}

static void test_hazard_send_on_open(void **state)
{
    (void)state;
    struct hvsim_vmbus_config cfg = base_config(0);
    cfg.hazards = HVSIM_VMBUS_SEND_ON_OPEN;
    struct fixture *f = fx_connected(cfg, VMBUS_VERSION_COPPER);
    uint64_t gpa = create_contiguous(f, NETVSC_RELID, 0x810, 4);
    assert_false(sief_bit(f, 0, VMBUS_MESSAGE_SINT, NETVSC_RELID));
    assert_int_equal(open_channel(f, NETVSC_RELID, 0x810, 2, 0), 0);
    flush(f);
    /* The device wrote into its ring in on_open, before the guest could see the result; the signal
     * follows the result. */
    assert_false(f->result_seen_at_open[NETVSC_RELID]);
    assert_int_equal(__atomic_load_n((uint64_t *)(f->ram + gpa + 2 * 4096) + 8, __ATOMIC_RELAXED), 0x5e11d0aull);
    assert_true(sief_bit(f, 0, VMBUS_MESSAGE_SINT, NETVSC_RELID));
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
    connect_at(f, VMBUS_VERSION_COPPER);
    assert_true(now_ns() - t0 >= 45000000);
    t0 = now_ns();
    assert_int_equal(request_offers(f), DEV_COUNT); /* all queued together: one delay */
    assert_true(now_ns() - t0 >= 45000000);
    t0 = now_ns();
    create_contiguous(f, NETVSC_RELID, 0x820, 2);
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
    uint64_t pfn[2] = { ARENA_GPA >> 12, (ARENA_GPA >> 12) + 1 };
    send_gpadl(f, NETVSC_RELID, 0x830, pfn, 2);
    send_gpadl(f, NETVSC_RELID, 0x831, pfn, 2);
    send_gpadl(f, STORVSC_RELID, 0x832, pfn, 2);
    struct msg m;
    for (uint32_t h = 0x832; h >= 0x830; h--) {
        expect(f, VMBUS_MSG_GPADL_CREATED, &m);
        assert_int_equal(m.u.created.gpadl, h);
    }
    /* Opening the test device: its sub-channel offers are not reordered (they stay after the open
     * result, their own order kept) while the two results swap. */
    create_contiguous(f, HEARTBEAT_RELID, 0x833, 2);
    create_contiguous(f, TEST_DEV_RELID, 0x834, 2);
    unsigned base = f->offer_count;
    send_open(f, HEARTBEAT_RELID, 0x833, 1, 0);
    send_open(f, TEST_DEV_RELID, 0x834, 1, 0);
    assert_true(recv_on(f, 0, 2, &m, WAIT_MS));
    assert_int_equal(m.type, VMBUS_MSG_OPENCHANNEL_RESULT);
    assert_int_equal(m.u.open.child_relid, TEST_DEV_RELID);
    assert_true(recv_on(f, 0, 2, &m, WAIT_MS));
    assert_int_equal(m.type, VMBUS_MSG_OPENCHANNEL_RESULT);
    assert_int_equal(m.u.open.child_relid, HEARTBEAT_RELID);
    drain_async(f);
    assert_int_equal(f->offer_count, base + 2);
    assert_int_equal(f->offers[base].offer.sub_channel_index, 1);
    assert_int_equal(f->offers[base + 1].offer.sub_channel_index, 2);
}

static void test_hazard_rescind_during_open(void **state)
{
    (void)state;
    struct hvsim_vmbus_config cfg = base_config(0);
    cfg.hazards = HVSIM_VMBUS_RESCIND_DURING_OPEN;
    struct fixture *f = fx_connected(cfg, VMBUS_VERSION_COPPER);
    create_contiguous(f, NETVSC_RELID, 0x840, 4);
    /* A bad open is refused as usual; a good one is answered by a rescind, then a failure. */
    assert_int_not_equal(open_channel(f, NETVSC_RELID, 0x840, 9, 0), 0);
    assert_int_equal(f->rescind_count, 0);
    send_open(f, NETVSC_RELID, 0x840, 2, 0);
    struct msg m;
    assert_true(recv_on(f, 0, 2, &m, WAIT_MS));
    assert_int_equal(m.type, VMBUS_MSG_RESCIND_CHANNELOFFER);
    assert_int_equal(m.u.relid.child_relid, NETVSC_RELID);
    assert_true(recv_on(f, 0, 2, &m, WAIT_MS));
    assert_int_equal(m.type, VMBUS_MSG_OPENCHANNEL_RESULT);
    assert_int_not_equal(m.u.open.status, 0);
    expect_nothing(f);
    assert_int_equal(count_of(f, &f->opens[NETVSC_RELID]), 0);
    assert_int_equal(count_of(f, &f->closes[NETVSC_RELID]), 0);
    assert_int_equal(stats(f).rescinds, 1);
    /* The guest tears down and releases as after any rescind. */
    teardown_gpadl(f, NETVSC_RELID, 0x840);
    send_relid(f, VMBUS_MSG_RELID_RELEASED, NETVSC_RELID);
    expect_nothing(f);
    assert_int_equal(stats(f).offers, DEV_COUNT - 1);
}

static void test_hazard_bad_offers(void **state)
{
    (void)state;
    struct hvsim_vmbus_config cfg = base_config(0);
    cfg.hazards = HVSIM_VMBUS_BAD_OFFERS;
    struct fixture *f = fx_new(cfg);
    connect_at(f, VMBUS_VERSION_COPPER);
    struct vmbus_msg_header h = { .type = VMBUS_MSG_REQUESTOFFERS };
    post(f, &h, sizeof h);
    struct msg m;
    assert_true(recv_on(f, 0, 2, &m, WAIT_MS));
    assert_int_equal(m.type, VMBUS_MSG_OFFERCHANNEL);
    assert_int_equal(m.u.offer.child_relid, 0);
    assert_true(recv_on(f, 0, 2, &m, WAIT_MS));
    assert_int_equal(m.u.offer.child_relid, 4096);
    assert_true(recv_on(f, 0, 2, &m, WAIT_MS));
    assert_int_equal(m.type, VMBUS_MSG_OFFERCHANNEL);
    assert_int_equal(m.size, 100);
    assert_true(recv_on(f, 0, 2, &m, WAIT_MS));
    assert_int_equal(m.type, 99);
    for (unsigned i = 0; i < DEV_COUNT; i++) {
        assert_true(recv_on(f, 0, 2, &m, WAIT_MS));
        assert_int_equal(m.type, VMBUS_MSG_OFFERCHANNEL);
        assert_int_equal(m.u.offer.child_relid, i + 1);
    }
    assert_true(recv_on(f, 0, 2, &m, WAIT_MS));
    assert_int_equal(m.type, VMBUS_MSG_OFFERCHANNEL);
    assert_int_equal(m.u.offer.child_relid, 1); /* the duplicate */
    assert_false(vmbus_guid_equal(&m.u.offer.offer.if_instance, &hvsim_vmbus_default_devices[0].instance));
    expect(f, VMBUS_MSG_ALLOFFERS_DELIVERED, &m);
    expect_nothing(f);
    /* The bad offers are no channels of the server's: relid 4096 cannot be opened. */
    assert_int_not_equal(open_channel(f, 4096, 1, 1, 0), 0);
}

static void test_hazard_unasked_responses(void **state)
{
    (void)state;
    struct hvsim_vmbus_config cfg = base_config(0);
    cfg.hazards = HVSIM_VMBUS_UNASKED_RESPONSES;
    struct fixture *f = fx_connected(cfg, VMBUS_VERSION_COPPER);
    struct msg m;
    expect(f, VMBUS_MSG_GPADL_CREATED, &m);
    assert_int_equal(m.u.created.gpadl, 0x0BAD0BAD);
    assert_int_equal(m.u.created.child_relid, 1);
    expect(f, VMBUS_MSG_OPENCHANNEL_RESULT, &m);
    assert_int_equal(m.u.open.child_relid, 1);
    expect_nothing(f);
    /* The server's state is untouched: the channel is not open. */
    assert_int_equal(stats(f).channels_open, 0);
    assert_int_equal(stats(f).gpadls, 0);
}

/* The server's posts wait while the guest's SINT queue is full, and nothing is lost or reordered. */
static void test_outbox_retries_full_queue(void **state)
{
    (void)state;
    struct fixture *f = fx_new_queue(base_config(0), 2);
    connect_at(f, VMBUS_VERSION_COPPER);
    struct vmbus_msg_header h = { .type = VMBUS_MSG_REQUESTOFFERS };
    post(f, &h, sizeof h);
    /* 1 in the slot + 2 queued: the rest wait in the outbox. */
    int64_t deadline = now_ns() + (int64_t)WAIT_MS * 1000000;
    while (stats(f).post_retries == 0 && now_ns() < deadline)
        sleep_us(200);
    assert_true(stats(f).post_retries > 0);
    sleep_us(20000);
    struct msg m;
    for (unsigned i = 0; i < DEV_COUNT; i++) {
        assert_true(recv_on(f, 0, 2, &m, WAIT_MS));
        assert_int_equal(m.type, VMBUS_MSG_OFFERCHANNEL);
        assert_int_equal(m.u.offer.child_relid, i + 1);
    }
    expect(f, VMBUS_MSG_ALLOFFERS_DELIVERED, &m);
    expect_nothing(f);
}

/* ---- signals ---- */

/* The pending word of monitor id's trigger group in monitor page 2 (child -> parent). */
static uint32_t *monitor_pending(struct fixture *f, uint32_t id)
{
    return (uint32_t *)(f->ram + MON2_GPA + offsetof(struct vmbus_monitor_page, trigger_group) +
                        (id / 32) * sizeof(struct vmbus_monitor_trigger_group) +
                        offsetof(struct vmbus_monitor_trigger_group, pending));
}

static void set_monitor_bit(struct fixture *f, uint32_t id)
{
    __atomic_fetch_or(monitor_pending(f, id), 1u << (id % 32), __ATOMIC_SEQ_CST);
}

static void test_monitor_page_signals(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(0), VMBUS_VERSION_COPPER);
    open_with_ring(f, NETVSC_RELID, 0x900, 4);
    open_with_ring(f, STORVSC_RELID, 0x901, 4);
    flush(f);
    const struct vmbus_msg_offer_channel *net = offer_of(f, NETVSC_RELID), *stor = offer_of(f, STORVSC_RELID);
    /* As Linux signals a monitored channel: set its bit in the child -> parent page. */
    set_monitor_bit(f, net->monitor_id);
    assert_int_equal(wait_count(f, &f->signals[NETVSC_RELID], 1), 1);
    assert_int_equal(__atomic_load_n(monitor_pending(f, net->monitor_id), __ATOMIC_SEQ_CST), 0); /* taken */
    /* Two channels in one go, plus an id nobody owns (ignored). */
    set_monitor_bit(f, stor->monitor_id);
    set_monitor_bit(f, 127);
    set_monitor_bit(f, net->monitor_id);
    assert_int_equal(wait_count(f, &f->signals[NETVSC_RELID], 2), 2);
    assert_int_equal(wait_count(f, &f->signals[STORVSC_RELID], 1), 1);
    assert_int_equal(stats(f).monitor_signals, 3);
    /* A closed channel's monitor bit: no callback. */
    send_relid(f, VMBUS_MSG_CLOSECHANNEL, STORVSC_RELID);
    flush(f);
    set_monitor_bit(f, stor->monitor_id);
    sleep_us(20000);
    flush(f);
    assert_int_equal(count_of(f, &f->signals[STORVSC_RELID]), 1);
}

static void test_event_port_signals(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(0), VMBUS_VERSION_COPPER);
    uint32_t conn = HVSIM_VMBUS_CONN_CHANNEL_BASE + HEARTBEAT_RELID;
    /* The port exists from the offer on; a signal before the open reaches no device. */
    assert_int_equal(signal_event(f, conn), HV_STATUS_SUCCESS);
    flush(f);
    assert_int_equal(count_of(f, &f->signals[HEARTBEAT_RELID]), 0);
    open_with_ring(f, HEARTBEAT_RELID, 0x910, 2);
    assert_int_equal(signal_event(f, conn), HV_STATUS_SUCCESS);
    assert_int_equal(wait_count(f, &f->signals[HEARTBEAT_RELID], 1), 1);
    assert_int_equal(stats(f).guest_signals, 2);
    /* A connection id that is no channel's. */
    assert_int_equal(signal_event(f, HVSIM_VMBUS_CONN_CHANNEL_BASE + 500), HV_STATUS_INVALID_CONNECTION_ID);
    /* The port goes with the relid. */
    assert_true(hvsim_vmbus_rescind(f->vb, HEARTBEAT_RELID));
    send_relid(f, VMBUS_MSG_RELID_RELEASED, HEARTBEAT_RELID);
    flush(f);
    assert_int_equal(signal_event(f, conn), HV_STATUS_INVALID_CONNECTION_ID);
}

static void test_signal_guest(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(0), VMBUS_VERSION_COPPER);
    open_with_ring(f, NETVSC_RELID, 0x920, 4);
    create_contiguous(f, STORVSC_RELID, 0x921, 4);
    assert_int_equal(open_channel(f, STORVSC_RELID, 0x921, 2, VMBUS_TARGET_VP_NO_INTERRUPT), 0);
    send_modify(f, NETVSC_RELID, 1);
    struct msg m;
    expect(f, VMBUS_MSG_MODIFYCHANNEL_RESPONSE, &m);
    flush(f);
    pthread_mutex_lock(&f->lock);
    struct hvsim_vmbus_channel *net = f->ch[NETVSC_RELID], *stor = f->ch[STORVSC_RELID];
    unsigned irqs = f->irqs;
    pthread_mutex_unlock(&f->lock);
    assert_true(hvsim_vmbus_signal_guest(net));
    assert_true(sief_bit(f, 1, VMBUS_MESSAGE_SINT, NETVSC_RELID));
    assert_false(sief_bit(f, 0, VMBUS_MESSAGE_SINT, NETVSC_RELID));
    assert_int_equal(count_of(f, &f->irqs), irqs + 1);
    assert_true(hvsim_vmbus_signal_guest(net)); /* the bit was still set: no second interrupt */
    assert_int_equal(count_of(f, &f->irqs), irqs + 1);
    clear_sief(f, 1, VMBUS_MESSAGE_SINT, NETVSC_RELID);
    assert_false(hvsim_vmbus_signal_guest(stor)); /* interrupts disabled for it */
    assert_false(sief_bit(f, 0, VMBUS_MESSAGE_SINT, STORVSC_RELID));
    assert_int_equal(stats(f).host_signals, 2);
    /* A closed channel is not signalled. */
    send_relid(f, VMBUS_MSG_CLOSECHANNEL, NETVSC_RELID);
    flush(f);
    assert_false(hvsim_vmbus_signal_guest(net));
    assert_false(sief_bit(f, 1, VMBUS_MESSAGE_SINT, NETVSC_RELID));
}

/* Below 2.4 (WS2008/WIN7): host -> guest is bit 0 plus the interrupt page's parent -> child half;
 * guest -> host the child -> parent half and HvSignalEvent on connection 2. */
static void test_legacy_signalling(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(VMBUS_VERSION_WIN7), VMBUS_VERSION_WIN7);
    open_with_ring(f, HEARTBEAT_RELID, 0x930, 2);
    flush(f);
    pthread_mutex_lock(&f->lock);
    struct hvsim_vmbus_channel *ch = f->ch[HEARTBEAT_RELID];
    pthread_mutex_unlock(&f->lock);
    assert_true(hvsim_vmbus_signal_guest(ch));
    assert_true(sief_bit(f, 0, VMBUS_MESSAGE_SINT, 0));
    assert_false(sief_bit(f, 0, VMBUS_MESSAGE_SINT, HEARTBEAT_RELID));
    uint64_t *page = (uint64_t *)(f->ram + INT_PAGE_GPA);
    assert_true(__atomic_load_n(&page[0], __ATOMIC_SEQ_CST) & (1ull << HEARTBEAT_RELID));
    uint64_t *send = (uint64_t *)(f->ram + INT_PAGE_GPA + VMBUS_INTERRUPT_PAGE_HALF);
    __atomic_fetch_or(&send[0], 1ull << HEARTBEAT_RELID, __ATOMIC_SEQ_CST);
    assert_int_equal(signal_event(f, VMBUS_CONN_EVENT), HV_STATUS_SUCCESS);
    assert_int_equal(wait_count(f, &f->signals[HEARTBEAT_RELID], 1), 1);
    assert_int_equal(__atomic_load_n(&send[0], __ATOMIC_SEQ_CST), 0);
}

/* ---- bad guest messages ---- */

static void test_bad_guest_messages(void **state)
{
    (void)state;
    struct fixture *f = fx_new(base_config(0));
    /* Before contact: anything but INITIATE_CONTACT and UNLOAD. */
    struct vmbus_msg_header req = { .type = VMBUS_MSG_REQUESTOFFERS };
    assert_int_equal(post_on(f, VMBUS_CONN_MESSAGE, &req, sizeof req), HV_STATUS_SUCCESS);
    struct vmbus_msg_header unload = { .type = VMBUS_MSG_UNLOAD };
    assert_int_equal(post_on(f, VMBUS_CONN_MESSAGE, &unload, sizeof unload), HV_STATUS_SUCCESS);
    struct msg m;
    expect(f, VMBUS_MSG_UNLOAD_RESPONSE, &m);
    assert_int_equal(stats(f).guest_errors, 1);
    connect_at(f, VMBUS_VERSION_COPPER);
    assert_int_equal(request_offers(f), DEV_COUNT);
    uint8_t buf[HV_MESSAGE_PAYLOAD_MAX] = { 0 };
    uint32_t type;
    unsigned errors = 1;
    post(f, buf, 4); /* shorter than a header */
    type = VMBUS_MSG_OPENCHANNEL;
    memcpy(buf, &type, 4);
    post(f, buf, 20); /* too short for its type */
    type = 77;
    memcpy(buf, &type, 4);
    post(f, buf, 16); /* unknown type */
    type = VMBUS_MSG_TL_CONNECT_REQUEST;
    memcpy(buf, &type, 4);
    post(f, buf, 60); /* a type this host does not handle */
    type = VMBUS_MSG_VERSION_RESPONSE;
    memcpy(buf, &type, 4);
    post(f, buf, 16); /* a host-to-guest type */
    type = VMBUS_MSG_GPADL_BODY;
    memcpy(buf, &type, 4);
    post(f, buf, 16 + 12); /* not a whole number of PFNs */
    /* Oversized: hvsim refuses the hypercall itself; the server sees nothing. */
    assert_int_equal(post_once(f, 0, f->msg_conn, HV_MESSAGE_VMBUS, buf, HV_MESSAGE_PAYLOAD_MAX + 1),
                     HV_STATUS_INVALID_PARAMETER);
    /* Not a VMBus HvPostMessage type. */
    assert_int_equal(post_once(f, 0, f->msg_conn, 5, &req, sizeof req), HV_STATUS_SUCCESS);
    errors += 7;
    expect_nothing(f);
    struct hvsim_vmbus_stats s = stats(f);
    assert_int_equal(s.guest_errors, errors);
    assert_int_equal(log_matches(f, "vmbus: guest error:", "unknown message type"), 2); /* 77 and 21 */
    /* Nothing else disturbed. */
    open_with_ring(f, NETVSC_RELID, 0xa00, 4);
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
    uint32_t relid = hvsim_vmbus_offer(f->vb, &d);
    struct msg m;
    expect(f, VMBUS_MSG_OFFERCHANNEL, &m);
    create_contiguous(f, relid, 0xb01, 4);
    /* The server thread stops in on_open (the lock is released before any assertion, so that a
     * failure can still destroy the server). */
    pthread_mutex_lock(&stall_lock);
    __atomic_store_n(&stalled, false, __ATOMIC_SEQ_CST);
    send_open(f, relid, 0xb01, 2, 0);
    int64_t deadline = now_ns() + (int64_t)WAIT_MS * 1000000;
    while (!__atomic_load_n(&stalled, __ATOMIC_SEQ_CST) && now_ns() < deadline)
        sleep_us(100);
    bool was_stalled = __atomic_load_n(&stalled, __ATOMIC_SEQ_CST);
    struct vmbus_msg_gpadl_teardown t = { .hdr.type = VMBUS_MSG_GPADL_TEARDOWN, .child_relid = NETVSC_RELID,
                                          .gpadl = 0x999 };
    unsigned posted = 0;
    uint16_t status = HV_STATUS_SUCCESS;
    while (was_stalled && status == HV_STATUS_SUCCESS && posted <= HVSIM_VMBUS_INBOX_DEPTH) {
        status = post_once(f, 0, f->msg_conn, HV_MESSAGE_VMBUS, &t, sizeof t);
        posted += status == HV_STATUS_SUCCESS;
    }
    pthread_mutex_unlock(&stall_lock);
    assert_true(was_stalled);
    assert_int_equal(status, HV_STATUS_INSUFFICIENT_BUFFERS);
    assert_int_equal(posted, HVSIM_VMBUS_INBOX_DEPTH);
    expect(f, VMBUS_MSG_OPENCHANNEL_RESULT, &m);
    assert_int_equal(m.u.open.status, 0);
    assert_int_equal(post_on(f, f->msg_conn, &t, sizeof t), HV_STATUS_SUCCESS);
    expect_nothing(f);
    assert_int_equal(stats(f).guest_errors, posted + 1);
    assert_int_equal(count_of(f, &f->opens[relid]), 1);
}

/* Destroying the server closes what is open (on_close on the destroying thread). */
static void test_destroy_closes_channels(void **state)
{
    (void)state;
    struct fixture *f = fx_connected(base_config(0), VMBUS_VERSION_COPPER);
    open_with_ring(f, NETVSC_RELID, 0xc00, 4);
    open_with_ring(f, STORVSC_RELID, 0xc01, 4);
    flush(f);
    hvsim_vmbus_destroy(f->vb);
    f->vb = NULL;
    assert_int_equal(count_of(f, &f->closes[NETVSC_RELID]), 1);
    assert_int_equal(count_of(f, &f->closes[STORVSC_RELID]), 1);
    /* Its ports are gone with it: the model alone answers INVALID_CONNECTION_ID. */
    struct vmbus_msg_header req = { .type = VMBUS_MSG_REQUESTOFFERS };
    assert_int_equal(post_once(f, 0, VMBUS_CONN_MESSAGE, HV_MESSAGE_VMBUS, &req, sizeof req),
                     HV_STATUS_INVALID_CONNECTION_ID);
    /* A new server on the same model works. */
    struct hvsim_vmbus_config cfg = base_config(0);
    cfg.devices = f->devs;
    cfg.device_count = DEV_COUNT;
    f->vb = hvsim_vmbus_create(f->sim, &cfg);
    assert_non_null(f->vb);
    /* Two servers cannot share a model. */
    assert_null(hvsim_vmbus_create(f->sim, &cfg));
    f->offer_count = 0;
    connect_at(f, VMBUS_VERSION_COPPER);
    assert_int_equal(request_offers(f), DEV_COUNT);
}

static void test_create_rejects_bad_config(void **state)
{
    (void)state;
    struct fixture *f = fx_new(base_config(0));
    struct hvsim_vmbus_config cfg = base_config(0x00040002); /* not a version */
    assert_null(hvsim_vmbus_create(f->sim, &cfg));
    cfg = base_config(0);
    cfg.device_count = 1; /* no table */
    assert_null(hvsim_vmbus_create(f->sim, &cfg));
    struct hvsim_vmbus_device d = hvsim_vmbus_default_devices[0];
    d.sub_channels = HVSIM_VMBUS_MAX_SUB_CHANNELS + 1;
    cfg.devices = &d;
    assert_null(hvsim_vmbus_create(f->sim, &cfg));
    assert_null(hvsim_vmbus_create(NULL, &cfg));
    assert_int_equal(log_matches(f, "vmbus: create: bad configuration", NULL), 3);
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
    open_with_ring(f, STORVSC_RELID, 0xd00, 4);
    struct msg m;
    expect(f, VMBUS_MSG_RESCIND_CHANNELOFFER, &m);
    assert_true(now_ns() - t0 >= 25000000);
    assert_int_equal(m.u.relid.child_relid, STORVSC_RELID);
    assert_int_equal(wait_count(f, &f->closes[STORVSC_RELID], 1), 1);
    assert_int_equal(log_matches(f, "rescinding storvsc (relid 2)", NULL), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_version_ladder, teardown),
        cmocka_unit_test_teardown(test_contact_checks, teardown),
        cmocka_unit_test_teardown(test_default_offers, teardown),
        cmocka_unit_test_teardown(test_gpadl_sizes, teardown),
        cmocka_unit_test_teardown(test_gpadl_bad, teardown),
        cmocka_unit_test_teardown(test_open_close_rings, teardown),
        cmocka_unit_test_teardown(test_open_failures, teardown),
        cmocka_unit_test_teardown(test_teardown_ring_waits_for_close, teardown),
        cmocka_unit_test_teardown(test_open_close_cycles, teardown),
        cmocka_unit_test_teardown(test_rescind_open_channel, teardown),
        cmocka_unit_test_teardown(test_sub_channels, teardown),
        cmocka_unit_test_teardown(test_modify_channel, teardown),
        cmocka_unit_test_teardown(test_unload, teardown),
        cmocka_unit_test_teardown(test_hazard_irq_before_open_result, teardown),
        cmocka_unit_test_teardown(test_hazard_send_on_open, teardown),
        cmocka_unit_test_teardown(test_hazard_delay, teardown),
        cmocka_unit_test_teardown(test_hazard_reorder, teardown),
        cmocka_unit_test_teardown(test_hazard_rescind_during_open, teardown),
        cmocka_unit_test_teardown(test_hazard_bad_offers, teardown),
        cmocka_unit_test_teardown(test_hazard_unasked_responses, teardown),
        cmocka_unit_test_teardown(test_outbox_retries_full_queue, teardown),
        cmocka_unit_test_teardown(test_monitor_page_signals, teardown),
        cmocka_unit_test_teardown(test_event_port_signals, teardown),
        cmocka_unit_test_teardown(test_signal_guest, teardown),
        cmocka_unit_test_teardown(test_legacy_signalling, teardown),
        cmocka_unit_test_teardown(test_bad_guest_messages, teardown),
        cmocka_unit_test_teardown(test_inbox_full, teardown),
        cmocka_unit_test_teardown(test_destroy_closes_channels, teardown),
        cmocka_unit_test_teardown(test_create_rejects_bad_config, teardown),
        cmocka_unit_test_teardown(test_rescind_timer, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
