/*
 * The fake guest of the host-component tests: see fake_guest.h.
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

#include "test/lib/fake_guest.h"

static void ignore_irq(void *ctx, uint32_t vp, uint8_t vector)
{
    (void)ctx;
    (void)vp;
    (void)vector;
}

/* ---- the running test's fixture ---- */

static void *running;
static void (*fixture_release)(void *fixture);

void *fg_fixture_new(size_t size, void (*release)(void *fixture))
{
    assert_null(running); /* the last one not freed: fg_teardown(NULL) first */
    void *f = calloc(1, size);
    assert_non_null(f);
    running = f;
    fixture_release = release;
    return f;
}

int fg_teardown(void **state)
{
    (void)state;
    void *f = running;
    running = NULL;
    if (f) {
        fixture_release(f);
        free(f);
    }
    return 0;
}

/* ---- the model ---- */

void fg_log(void *ctx, const char *line)
{
    struct fake_guest *fg = ctx;
    pthread_mutex_lock(&fg->lock);
    reports_record(&fg->logs, line);
    if (fg->on_log)
        fg->on_log(fg->on_log_ctx, line);
    pthread_mutex_unlock(&fg->lock);
}

void fg_init(struct fake_guest *fg, const struct fg_config *cfg)
{
    memset(fg, 0, sizeof *fg);
    assert_true(cfg->hv.vp_count <= FG_MAX_VPS);
    pthread_mutex_init(&fg->lock, NULL);
    pthread_cond_init(&fg->changed, NULL);
    fg->on_log = cfg->on_log;
    fg->on_log_ctx = cfg->on_log_ctx;
    fg->ram_size = cfg->ram_size;
    fg->vp_count = cfg->hv.vp_count;
    fg->ram = aligned_alloc(4096, cfg->ram_size);
    assert_non_null(fg->ram);
    memset(fg->ram, 0, cfg->ram_size);
    struct hvsim_config hc = cfg->hv;
    hc.log = fg_log;
    hc.log_ctx = fg;
    fg->sim = hvsim_create(&hc, fg->ram, cfg->ram_size, cfg->raise ? cfg->raise : ignore_irq, cfg->raise_ctx);
    assert_non_null(fg->sim);
}

void fg_destroy(struct fake_guest *fg)
{
    if (fg->vb)
        hvsim_vmbus_destroy(fg->vb); /* closes what is open: on_close for each */
    fg->vb = NULL;
    if (fg->sim)
        hvsim_destroy(fg->sim);
    fg->sim = NULL;
    free(fg->ram);
    fg->ram = NULL;
    pthread_cond_destroy(&fg->changed);
    pthread_mutex_destroy(&fg->lock);
}

void fg_dump_logs(struct fake_guest *fg)
{
    pthread_mutex_lock(&fg->lock);
    reports_dump(&fg->logs);
    pthread_mutex_unlock(&fg->lock);
}

unsigned fg_log_matches(struct fake_guest *fg, const char *a, const char *b)
{
    pthread_mutex_lock(&fg->lock);
    unsigned n = b ? reports_matching(&fg->logs, a, b) : reports_matching(&fg->logs, a);
    pthread_mutex_unlock(&fg->lock);
    return n;
}

unsigned fg_count(struct fake_guest *fg, const unsigned *counter)
{
    pthread_mutex_lock(&fg->lock);
    unsigned n = *counter;
    pthread_mutex_unlock(&fg->lock);
    return n;
}

unsigned fg_wait_count(struct fake_guest *fg, const unsigned *counter, unsigned n, int timeout_ms)
{
    int64_t deadline = now_ns() + (int64_t)timeout_ms * 1000000;
    pthread_mutex_lock(&fg->lock);
    while (*counter < n) {
        int64_t left = deadline - now_ns();
        if (left <= 0)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + (left < 10000000 ? left : 10000000);
        ts.tv_sec += ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        pthread_cond_timedwait(&fg->changed, &fg->lock, &ts);
    }
    unsigned c = *counter;
    pthread_mutex_unlock(&fg->lock);
    return c;
}

void fg_wrmsr(struct fake_guest *fg, uint32_t vp, uint32_t msr, uint64_t v)
{
    if (!hvsim_wrmsr(fg->sim, vp, msr, v)) {
        fg_dump_logs(fg);
        fail_msg("wrmsr 0x%x = 0x%llx faulted", msr, (unsigned long long)v);
    }
}

uint64_t fg_rdmsr(struct fake_guest *fg, uint32_t vp, uint32_t msr)
{
    uint64_t v = 0xdeadbeef;
    if (!hvsim_rdmsr(fg->sim, vp, msr, &v))
        fail_msg("rdmsr 0x%x faulted", msr);
    return v;
}

void fg_enable_hypercalls(struct fake_guest *fg)
{
    fg_wrmsr(fg, 0, HV_MSR_GUEST_OS_ID, FG_GUEST_OS_ID);
    fg_wrmsr(fg, 0, HV_MSR_HYPERCALL, FG_HYPERCALL_GPA | HV_HYPERCALL_ENABLE);
}

void fg_enable_synic(struct fake_guest *fg, uint32_t vp)
{
    fg_wrmsr(fg, vp, HV_MSR_SIMP, FG_SIMP_GPA(vp) | HV_PAGE_ENABLE);
    fg_wrmsr(fg, vp, HV_MSR_SIEFP, FG_SIEFP_GPA(vp) | HV_PAGE_ENABLE);
    for (uint32_t s = 0; s < HV_SINT_COUNT; s++)
        fg_wrmsr(fg, vp, HV_MSR_SINT0 + s, FG_SINT_VECTOR(s));
    fg_wrmsr(fg, vp, HV_MSR_SCONTROL, HV_SCONTROL_ENABLE);
}

void fg_ready(struct fake_guest *fg)
{
    fg_enable_hypercalls(fg);
    for (uint32_t v = 0; v < fg->vp_count; v++)
        fg_enable_synic(fg, v);
}

uint8_t *fg_slot(struct fake_guest *fg, uint32_t vp, uint32_t sint)
{
    return fg->ram + FG_SIMP_GPA(vp) + sint * HV_MESSAGE_SIZE;
}

uint32_t fg_slot_type(struct fake_guest *fg, uint32_t vp, uint32_t sint)
{
    return __atomic_load_n((uint32_t *)fg_slot(fg, vp, sint), __ATOMIC_ACQUIRE);
}

uint8_t fg_slot_flags(struct fake_guest *fg, uint32_t vp, uint32_t sint)
{
    return __atomic_load_n(fg_slot(fg, vp, sint) + offsetof(struct hv_message_header, message_flags),
                           __ATOMIC_ACQUIRE);
}

uint8_t fg_slot_size(struct fake_guest *fg, uint32_t vp, uint32_t sint)
{
    return fg_slot(fg, vp, sint)[offsetof(struct hv_message_header, payload_size)];
}

const uint8_t *fg_slot_payload(struct fake_guest *fg, uint32_t vp, uint32_t sint)
{
    return fg_slot(fg, vp, sint) + offsetof(struct hv_message, payload);
}

bool fg_slot_free(struct fake_guest *fg, uint32_t vp, uint32_t sint)
{
    __atomic_store_n((uint32_t *)fg_slot(fg, vp, sint), HV_MESSAGE_NONE, __ATOMIC_SEQ_CST);
    return __atomic_load_n(fg_slot(fg, vp, sint) + offsetof(struct hv_message_header, message_flags),
                           __ATOMIC_SEQ_CST) &
           HV_MESSAGE_FLAG_PENDING;
}

void fg_consume(struct fake_guest *fg, uint32_t vp, uint32_t sint)
{
    if (fg_slot_free(fg, vp, sint))
        fg_wrmsr(fg, vp, HV_MSR_EOM, 0);
}

static uint64_t *event_word_at(struct fake_guest *fg, uint32_t vp, uint32_t sint, uint32_t flag)
{
    return (uint64_t *)(fg->ram + FG_SIEFP_GPA(vp) + sint * 256u) + flag / 64;
}

uint64_t fg_event_word(struct fake_guest *fg, uint32_t vp, uint32_t sint, uint32_t flag)
{
    return __atomic_load_n(event_word_at(fg, vp, sint, flag), __ATOMIC_ACQUIRE);
}

bool fg_event_flag(struct fake_guest *fg, uint32_t vp, uint32_t sint, uint32_t flag)
{
    return fg_event_word(fg, vp, sint, flag) & (1ull << (flag % 64));
}

void fg_event_clear(struct fake_guest *fg, uint32_t vp, uint32_t sint, uint32_t flag)
{
    __atomic_fetch_and(event_word_at(fg, vp, sint, flag), ~(1ull << (flag % 64)), __ATOMIC_SEQ_CST);
}

bool fg_event_take(struct fake_guest *fg, uint32_t vp, uint32_t sint, uint32_t flag)
{
    uint64_t bit = 1ull << (flag % 64);
    return __atomic_fetch_and(event_word_at(fg, vp, sint, flag), ~bit, __ATOMIC_SEQ_CST) & bit;
}

uint16_t fg_post_at(struct fake_guest *fg, uint32_t vp, uint64_t gpa, uint32_t conn, uint32_t type,
                    const void *payload, uint32_t size)
{
    struct hv_input_post_message in = { .connection_id = conn, .message_type = type, .payload_size = size };
    memcpy(in.payload, payload, size < HV_MESSAGE_PAYLOAD_MAX ? size : HV_MESSAGE_PAYLOAD_MAX);
    memcpy(fg->ram + gpa, &in, sizeof in);
    return HV_HYPERCALL_STATUS(hvsim_hypercall(fg->sim, vp, HV_CALL_POST_MESSAGE, gpa, 0));
}

uint16_t fg_post_once(struct fake_guest *fg, uint32_t vp, uint32_t conn, uint32_t type, const void *payload,
                      uint32_t size)
{
    return fg_post_at(fg, vp, FG_INPUT_GPA(vp), conn, type, payload, size);
}

uint16_t fg_signal_fast(struct fake_guest *fg, uint32_t vp, uint32_t conn, uint16_t flag)
{
    uint64_t rdx = conn | (uint64_t)flag << 32;
    return HV_HYPERCALL_STATUS(hvsim_hypercall(fg->sim, vp, HV_CALL_SIGNAL_EVENT | HV_HYPERCALL_FAST, rdx, 0));
}

uint16_t fg_signal_slow(struct fake_guest *fg, uint32_t vp, uint32_t conn, uint16_t flag)
{
    struct hv_input_signal_event in = { .connection_id = conn, .flag_number = flag };
    memcpy(fg->ram + FG_INPUT_GPA(vp), &in, sizeof in);
    return HV_HYPERCALL_STATUS(hvsim_hypercall(fg->sim, vp, HV_CALL_SIGNAL_EVENT, FG_INPUT_GPA(vp), 0));
}

/* ---- the guest's VMBus side ---- */

void fg_vmbus_start(struct fake_guest *fg, const struct hvsim_vmbus_config *cfg)
{
    fg->vb = hvsim_vmbus_create(fg->sim, cfg);
    assert_non_null(fg->vb);
    fg->msg_conn = VMBUS_CONN_MESSAGE;
    fg->ctl_vp = 0;
    fg->ctl_sint = VMBUS_MESSAGE_SINT;
    fg->offer_count = 0;
    fg->rescind_count = 0;
    fg->next_page = FG_ARENA_GPA;
    fg->next_gpadl = FG_FIRST_GPADL;
}

struct hvsim_vmbus_device *fg_default_devices(void)
{
    struct hvsim_vmbus_device *d = calloc(hvsim_vmbus_default_device_count, sizeof *d);
    assert_non_null(d);
    memcpy(d, hvsim_vmbus_default_devices, hvsim_vmbus_default_device_count * sizeof *d);
    return d;
}

void fg_flush(struct fake_guest *fg)
{
    if (!hvsim_vmbus_flush(fg->vb, FG_WAIT_MS)) {
        fg_dump_logs(fg);
        fail_msg("the server did not go idle");
    }
}

uint16_t fg_post_on(struct fake_guest *fg, uint32_t conn, const void *msg, uint32_t size)
{
    for (int tries = 0; tries < 100000; tries++) {
        uint16_t s = fg_post_once(fg, 0, conn, HV_MESSAGE_VMBUS, msg, size);
        if (s != HV_STATUS_INSUFFICIENT_BUFFERS)
            return s;
        sleep_us(100); /* transient: try again */
    }
    return HV_STATUS_INSUFFICIENT_BUFFERS;
}

void fg_post(struct fake_guest *fg, const void *msg, uint32_t size)
{
    assert_int_equal(fg_post_on(fg, fg->msg_conn, msg, size), HV_STATUS_SUCCESS);
}

bool fg_recv_on(struct fake_guest *fg, uint32_t vp, uint32_t sint, struct fg_msg *m, int timeout_ms)
{
    int64_t deadline = now_ns() + (int64_t)timeout_ms * 1000000;
    for (;;) {
        if (fg_slot_type(fg, vp, sint) != HV_MESSAGE_NONE) {
            memset(m, 0, sizeof *m);
            m->size = fg_slot_size(fg, vp, sint);
            memcpy(m->u.bytes, fg_slot_payload(fg, vp, sint),
                   m->size < HV_MESSAGE_PAYLOAD_MAX ? m->size : HV_MESSAGE_PAYLOAD_MAX);
            m->type = m->size >= 4 ? m->u.hdr.type : VMBUS_MSG_INVALID;
            fg_consume(fg, vp, sint);
            return true;
        }
        if (now_ns() > deadline)
            return false;
        sleep_us(20);
    }
}

/* An offer or a rescind, recorded (false: some other message). */
static bool record_async(struct fake_guest *fg, const struct fg_msg *m)
{
    if (m->type == VMBUS_MSG_OFFERCHANNEL) {
        if (fg->offer_count < FG_MAX_OFFERS)
            fg->offers[fg->offer_count++] = m->u.offer;
        return true;
    }
    if (m->type == VMBUS_MSG_RESCIND_CHANNELOFFER) {
        if (fg->rescind_count < FG_MAX_OFFERS)
            fg->rescinded[fg->rescind_count++] = m->u.relid.child_relid;
        return true;
    }
    return false;
}

void fg_expect(struct fake_guest *fg, uint32_t type, struct fg_msg *m)
{
    for (;;) {
        if (!fg_recv_on(fg, fg->ctl_vp, fg->ctl_sint, m, FG_WAIT_MS)) {
            fg_dump_logs(fg);
            fail_msg("no %s within %d ms", vmbus_msg_name(type), FG_WAIT_MS);
        }
        if (m->type == type)
            return;
        if (record_async(fg, m))
            continue;
        fg_dump_logs(fg);
        fail_msg("expected %s, got %s (%u bytes)", vmbus_msg_name(type), vmbus_msg_name(m->type), m->size);
    }
}

void fg_expect_nothing(struct fake_guest *fg)
{
    fg_flush(fg);
    struct fg_msg m;
    if (fg_recv_on(fg, fg->ctl_vp, fg->ctl_sint, &m, 0))
        fail_msg("unexpected %s (%u bytes)", vmbus_msg_name(m.type), m.size);
}

void fg_drain_async(struct fake_guest *fg)
{
    fg_flush(fg);
    struct fg_msg m;
    while (fg_recv_on(fg, fg->ctl_vp, fg->ctl_sint, &m, 0)) {
        if (!record_async(fg, &m))
            fail_msg("unexpected %s (%u bytes)", vmbus_msg_name(m.type), m.size);
        fg_flush(fg);
    }
}

const struct vmbus_msg_offer_channel *fg_offer_of(const struct fake_guest *fg, uint32_t relid)
{
    for (unsigned i = fg->offer_count; i-- > 0;)
        if (fg->offers[i].child_relid == relid)
            return &fg->offers[i];
    return NULL;
}

void fg_wait_offer(struct fake_guest *fg, uint32_t relid)
{
    int64_t deadline = now_ns() + (int64_t)FG_WAIT_MS * 1000000;
    struct fg_msg m;
    while (!fg_offer_of(fg, relid)) {
        if (now_ns() > deadline || !fg_recv_on(fg, fg->ctl_vp, fg->ctl_sint, &m, FG_WAIT_MS))
            fail_msg("no offer of relid %u", relid);
        record_async(fg, &m);
    }
}

bool fg_was_rescinded(const struct fake_guest *fg, uint32_t relid)
{
    for (unsigned i = 0; i < fg->rescind_count; i++)
        if (fg->rescinded[i] == relid)
            return true;
    return false;
}

struct vmbus_msg_initiate_contact fg_contact_msg(uint32_t version, uint32_t vp, uint64_t target_info)
{
    struct vmbus_msg_initiate_contact ic = { .hdr.type = VMBUS_MSG_INITIATE_CONTACT, .version = version,
                                             .target_vcpu = vp, .target_info = target_info,
                                             .monitor_page1 = FG_MON1_GPA, .monitor_page2 = FG_MON2_GPA };
    return ic;
}

uint64_t fg_target_info_for(uint32_t version, uint32_t features)
{
    return version >= VMBUS_VERSION_WIN10_V5 ? VMBUS_TARGET_INFO(VMBUS_MESSAGE_SINT, 0, features) : FG_INT_PAGE_GPA;
}

void fg_connect(struct fake_guest *fg, uint32_t version)
{
    struct vmbus_msg_initiate_contact ic = fg_contact_msg(version, fg->ctl_vp, fg_target_info_for(version, 0));
    uint32_t conn = version >= VMBUS_VERSION_WIN10_V5 ? VMBUS_CONN_MESSAGE_MULTICLIENT : VMBUS_CONN_MESSAGE;
    assert_int_equal(fg_post_on(fg, conn, &ic, sizeof ic), HV_STATUS_SUCCESS);
    struct fg_msg m;
    fg_expect(fg, VMBUS_MSG_VERSION_RESPONSE, &m);
    assert_int_equal(m.u.version.v1.version_supported, 1);
    fg->msg_conn = m.u.version.v1.msg_conn_id ? m.u.version.v1.msg_conn_id : VMBUS_CONN_MESSAGE;
}

unsigned fg_request_offers(struct fake_guest *fg)
{
    unsigned before = fg->offer_count;
    struct vmbus_msg_header h = { .type = VMBUS_MSG_REQUESTOFFERS };
    fg_post(fg, &h, sizeof h);
    struct fg_msg m;
    fg_expect(fg, VMBUS_MSG_ALLOFFERS_DELIVERED, &m);
    return fg->offer_count - before;
}

uint64_t fg_alloc_pages(struct fake_guest *fg, uint32_t n)
{
    uint64_t gpa = fg->next_page;
    fg->next_page += (uint64_t)n * 4096;
    assert_true(fg->next_page <= fg->ram_size);
    memset(fg->ram + gpa, 0, (size_t)n * 4096);
    return gpa;
}

uint32_t fg_next_gpadl(struct fake_guest *fg)
{
    return fg->next_gpadl++;
}

void fg_send_gpadl(struct fake_guest *fg, uint32_t relid, uint32_t handle, const uint64_t *pfns, uint32_t n)
{
    uint8_t buf[HV_MESSAGE_PAYLOAD_MAX];
    struct vmbus_msg_gpadl_header h = { .hdr.type = VMBUS_MSG_GPADL_HEADER, .child_relid = relid, .gpadl = handle,
                                        .range_buflen = (uint16_t)(8 + 8 * n), .range_count = 1,
                                        .byte_count = n * 4096, .byte_offset = 0 };
    uint32_t here = n < VMBUS_GPADL_HEADER_PFNS ? n : (uint32_t)VMBUS_GPADL_HEADER_PFNS;
    memcpy(buf, &h, sizeof h);
    memcpy(buf + sizeof h, pfns, here * 8u);
    fg_post(fg, buf, (uint32_t)sizeof h + here * 8);
    for (uint32_t done = here, number = 1; done < n; number++) {
        uint32_t k = n - done < VMBUS_GPADL_BODY_PFNS ? n - done : (uint32_t)VMBUS_GPADL_BODY_PFNS;
        struct vmbus_msg_gpadl_body b = { .hdr.type = VMBUS_MSG_GPADL_BODY, .msg_number = number, .gpadl = handle };
        memcpy(buf, &b, sizeof b);
        memcpy(buf + sizeof b, pfns + done, k * 8u);
        fg_post(fg, buf, (uint32_t)sizeof b + k * 8);
        done += k;
    }
}

uint32_t fg_create_gpadl(struct fake_guest *fg, uint32_t relid, uint32_t handle, const uint64_t *pfns, uint32_t n)
{
    fg_send_gpadl(fg, relid, handle, pfns, n);
    struct fg_msg m;
    fg_expect(fg, VMBUS_MSG_GPADL_CREATED, &m);
    assert_int_equal(m.u.created.gpadl, handle);
    assert_int_equal(m.u.created.child_relid, relid);
    return m.u.created.status;
}

void fg_create_gpadl_at(struct fake_guest *fg, uint32_t relid, uint32_t handle, uint64_t gpa, uint32_t n)
{
    uint64_t *pfns = malloc(n * sizeof *pfns);
    assert_non_null(pfns);
    for (uint32_t i = 0; i < n; i++)
        pfns[i] = (gpa >> 12) + i;
    uint32_t status = fg_create_gpadl(fg, relid, handle, pfns, n);
    free(pfns);
    assert_int_equal(status, 0);
}

uint64_t fg_create_contiguous(struct fake_guest *fg, uint32_t relid, uint32_t handle, uint32_t n)
{
    uint64_t gpa = fg_alloc_pages(fg, n);
    fg_create_gpadl_at(fg, relid, handle, gpa, n);
    return gpa;
}

void fg_teardown_gpadl(struct fake_guest *fg, uint32_t relid, uint32_t handle)
{
    struct vmbus_msg_gpadl_teardown t = { .hdr.type = VMBUS_MSG_GPADL_TEARDOWN, .child_relid = relid, .gpadl = handle };
    fg_post(fg, &t, sizeof t);
    struct fg_msg m;
    fg_expect(fg, VMBUS_MSG_GPADL_TORNDOWN, &m);
    assert_int_equal(m.u.torndown.gpadl, handle);
}

void fg_send_open(struct fake_guest *fg, uint32_t relid, uint32_t handle, uint32_t offset, uint32_t vp)
{
    struct vmbus_msg_open_channel o = { .hdr.type = VMBUS_MSG_OPENCHANNEL, .child_relid = relid, .open_id = relid + 100,
                                        .ring_gpadl = handle, .target_vp = vp, .downstream_ring_page_offset = offset };
    fg_post(fg, &o, sizeof o);
}

uint32_t fg_open_channel(struct fake_guest *fg, uint32_t relid, uint32_t handle, uint32_t offset, uint32_t vp)
{
    fg_send_open(fg, relid, handle, offset, vp);
    struct fg_msg m;
    fg_expect(fg, VMBUS_MSG_OPENCHANNEL_RESULT, &m);
    assert_int_equal(m.u.open.child_relid, relid);
    assert_int_equal(m.u.open.open_id, relid + 100);
    return m.u.open.status;
}

uint64_t fg_open_with_ring(struct fake_guest *fg, uint32_t relid, uint32_t handle, uint32_t pages)
{
    uint64_t gpa = fg_create_contiguous(fg, relid, handle, pages);
    assert_int_equal(fg_open_channel(fg, relid, handle, pages / 2, 0), 0);
    return gpa;
}

void fg_send_relid(struct fake_guest *fg, uint32_t type, uint32_t relid)
{
    struct vmbus_msg_relid m = { .hdr.type = type, .child_relid = relid };
    fg_post(fg, &m, sizeof m);
}

uint32_t *fg_monitor_pending(struct fake_guest *fg, uint32_t id)
{
    return (uint32_t *)(fg->ram + FG_MON2_GPA + offsetof(struct vmbus_monitor_page, trigger_group) +
                        (id / 32) * sizeof(struct vmbus_monitor_trigger_group) +
                        offsetof(struct vmbus_monitor_trigger_group, pending));
}

void fg_set_monitor_bit(struct fake_guest *fg, uint32_t id)
{
    __atomic_fetch_or(fg_monitor_pending(fg, id), 1u << (id % 32), __ATOMIC_SEQ_CST);
}

/* ---- channels ---- */

void fg_guest_signal(struct fake_guest *fg, uint32_t relid)
{
    assert_int_equal(fg_signal_fast(fg, 0, HVSIM_VMBUS_CONN_CHANNEL_BASE + relid, 0), HV_STATUS_SUCCESS);
}

bool fg_take_signal(struct fake_guest *fg, uint32_t relid)
{
    return fg_event_take(fg, 0, VMBUS_MESSAGE_SINT, relid);
}

bool fg_wait_signal(struct fake_guest *fg, uint32_t relid, int timeout_ms)
{
    int64_t deadline = now_ns() + (int64_t)timeout_ms * 1000000;
    for (;;) {
        if (fg_take_signal(fg, relid))
            return true;
        if (now_ns() > deadline)
            return false;
        sleep_us(10);
    }
}

void fg_ch_rings(struct fake_guest *fg, struct fg_channel *c, uint32_t relid, uint32_t tx_pages, uint32_t rx_pages)
{
    memset(c, 0, sizeof *c);
    c->relid = relid;
    c->tx_pages = tx_pages;
    c->rx_pages = rx_pages;
    c->when_full = FG_FULL_WAIT_SIGNAL;
    c->gpa = fg_alloc_pages(fg, tx_pages + rx_pages);
    assert_int_equal(kmcl_ring_attach_pages(&c->tx, KMCL_RING_WRITER, fg->ram + c->gpa, tx_pages * 4096,
                                            KMCL_RING_ATTACH_INIT),
                     STATUS_OK);
    assert_int_equal(kmcl_ring_attach_pages(&c->rx, KMCL_RING_READER, fg->ram + c->gpa + (uint64_t)tx_pages * 4096,
                                            rx_pages * 4096, KMCL_RING_ATTACH_INIT),
                     STATUS_OK);
    c->bounce_size = (rx_pages - 1) * 4096;
    c->bounce = malloc(c->bounce_size);
    assert_non_null(c->bounce);
}

void fg_ch_open_rings(struct fake_guest *fg, struct fg_channel *c)
{
    uint32_t handle = fg_next_gpadl(fg);
    fg_create_gpadl_at(fg, c->relid, handle, c->gpa, c->tx_pages + c->rx_pages);
    assert_int_equal(fg_open_channel(fg, c->relid, handle, c->tx_pages, 0), 0);
}

void fg_ch_open(struct fake_guest *fg, struct fg_channel *c, uint32_t relid, uint32_t tx_pages, uint32_t rx_pages)
{
    fg_ch_rings(fg, c, relid, tx_pages, rx_pages);
    fg_ch_open_rings(fg, c);
}

void fg_ch_close(struct fake_guest *fg, struct fg_channel *c)
{
    fg_send_relid(fg, VMBUS_MSG_CLOSECHANNEL, c->relid);
    fg_flush(fg);
}

void fg_ch_free(struct fg_channel *c)
{
    free(c->bounce);
    c->bounce = NULL;
}

struct kmcl_ring_control *fg_ch_tx_control(struct fake_guest *fg, const struct fg_channel *c)
{
    return (struct kmcl_ring_control *)(fg->ram + c->gpa);
}

struct kmcl_ring_control *fg_ch_rx_control(struct fake_guest *fg, const struct fg_channel *c)
{
    return (struct kmcl_ring_control *)(fg->ram + c->gpa + (uint64_t)c->tx_pages * 4096);
}

unsigned fg_ch_drain(struct fake_guest *fg, struct fg_channel *c, unsigned max, fg_pkt_fn fn, void *ctx)
{
    unsigned n = 0;
    bool more;
    do {
        kmcl_ring_begin_read(&c->rx);
        struct kmcl_ring_packet p;
        status_t s = STATUS_NOT_FOUND;
        while (n < max && (s = kmcl_ring_peek(&c->rx, &p, c->bounce, c->bounce_size)) == STATUS_OK) {
            c->bounced += p.bounced;
            fn(ctx, &p);
            kmcl_ring_consume(&c->rx);
            n++;
        }
        if (n < max && s != STATUS_NOT_FOUND) {
            const struct kmcl_ring_failure *why = kmcl_ring_failure(&c->rx);
            fail_msg("guest reader of relid %u: peek status %d: %s", c->relid, s,
                     why && why->reason ? why->reason : "-");
        }
        bool signal_writer = false;
        more = kmcl_ring_end_read(&c->rx, &signal_writer);
        if (signal_writer)
            fg_guest_signal(fg, c->relid);
    } while (more && n < max);
    return n;
}

void fg_ch_send(struct fake_guest *fg, struct fg_channel *c, fg_write_fn write, void *wctx, fg_pkt_fn fn, void *ctx)
{
    int64_t deadline = now_ns() + (int64_t)FG_WAIT_MS * 1000000;
    for (;;) {
        bool signal = false;
        status_t s = write(&c->tx, wctx, &signal);
        if (signal)
            fg_guest_signal(fg, c->relid);
        if (s == STATUS_OK)
            return;
        assert_int_equal(s, STATUS_NO_SPACE);
        bool read = fg_ch_drain(fg, c, ~0u, fn, ctx) != 0;
        if (c->when_full == FG_FULL_POLL) {
            if (!read)
                sleep_us(50);
            if (now_ns() > deadline)
                fail_msg("relid %u: the guest -> host ring stayed full for %d ms", c->relid, FG_WAIT_MS);
            continue;
        }
        if (read)
            continue;
        /* Nothing to read: the host must signal once it has made the room pending_send_sz asks for
         * (or written to us). No polling here, so a signal the host forgets fails the test. */
        if (!fg_wait_signal(fg, c->relid, FG_WAIT_MS)) {
            fg_dump_logs(fg);
            fail_msg("relid %u: the guest -> host ring full and no signal from the host for %d ms", c->relid,
                     FG_WAIT_MS);
        }
    }
}

static status_t ring_write(struct kmcl_ring *tx, void *ctx, bool *signal)
{
    return kmcl_ring_write(tx, ctx, 0, signal);
}

void fg_ch_write(struct fake_guest *fg, struct fg_channel *c, const struct kmcl_ring_out *out, fg_pkt_fn fn,
                 void *ctx)
{
    fg_ch_send(fg, c, ring_write, (void *)out, fn, ctx);
}

void fg_ch_inband(struct fake_guest *fg, struct fg_channel *c, uint64_t trans, uint16_t flags, const void *payload,
                  uint32_t len, fg_pkt_fn fn, void *ctx)
{
    struct kmcl_iov iov = { .base = payload, .len = len };
    struct kmcl_ring_out out = { .type = KMCL_PKT_DATA_INBAND, .flags = flags, .trans_id = trans, .iov = &iov,
                                 .iov_count = len ? 1 : 0 };
    fg_ch_write(fg, c, &out, fn, ctx);
}

bool fg_ch_more(struct fake_guest *fg, struct fg_channel *c, fg_pkt_fn fn, void *ctx)
{
    return fg_ch_drain(fg, c, ~0u, fn, ctx) || fg_wait_signal(fg, c->relid, FG_WAIT_MS);
}

void fg_copy_pkt(void *ctx, const struct kmcl_ring_packet *p)
{
    struct fg_copy *cp = ctx;
    cp->count++;
    cp->desc = p->desc;
    cp->len = kmcl_pkt_payload_len(p);
    assert_true(cp->len <= sizeof cp->payload);
    memcpy(cp->payload, kmcl_pkt_payload(p), cp->len);
}

void fg_no_pkt(void *ctx, const struct kmcl_ring_packet *p)
{
    (void)ctx;
    fail_msg("unexpected packet: type %u, trans 0x%llx", p->desc.type, (unsigned long long)p->desc.trans_id);
}

void fg_ch_one(struct fake_guest *fg, struct fg_channel *c, struct fg_copy *cp)
{
    unsigned before = cp->count;
    while (cp->count == before) {
        if (fg_ch_drain(fg, c, 1, fg_copy_pkt, cp))
            break;
        if (!fg_wait_signal(fg, c->relid, FG_WAIT_MS)) {
            fg_dump_logs(fg);
            fail_msg("relid %u: no packet from the host for %d ms", c->relid, FG_WAIT_MS);
        }
    }
}

void fg_ch_expect_none(struct fake_guest *fg, struct fg_channel *c)
{
    fg_flush(fg);
    assert_int_equal(fg_ch_drain(fg, c, ~0u, fg_no_pkt, NULL), 0);
}
