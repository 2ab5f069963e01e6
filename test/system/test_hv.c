/*
 * The hv layer (hv/hv.c, synic.c, reftime.c, stimer.c) against the in-process hvsim, on VP threads
 * that take interrupts as signals (test/hosted/). Message round trips on every SINT of every VP,
 * the pending/EOM rule, event flags, retries on transient statuses, both timer modes, reference
 * time, the host's bad input, a missing privilege, and shutdown.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "arch-x86_64/cpu.h"

#include "arch-x86_64/interrupts.h"
#include "hv/hv.h"
#include "hv/reftime.h"
#include "kernel/percpu.h"
#include "sim/hvsim.h"
#include "test/hosted/hosted.h"

#define VPS 4
#define RAM (16u << 20)
#define TEST_TYPE 0x42u

struct seen {
    volatile uint32_t messages, events, last_cookie, last_flag, order_errors, wrong_cpu;
    volatile uint8_t irql;
};
static struct seen seen[VPS][HV_SINT_COUNT];

struct echo_payload {
    uint8_t vp, sint, pad[2];
    uint32_t cookie;
};

static status_t on_message(void *ctx, uint32_t cpu, const struct hv_message *msg)
{
    uint8_t sint = (uint8_t)(uintptr_t)ctx;
    if (msg->header.message_type != TEST_TYPE || msg->header.payload_size < sizeof(struct echo_payload))
        return STATUS_NOT_SUPPORTED;
    struct echo_payload p;
    memcpy(&p, msg->payload, sizeof p);
    struct seen *s = &seen[cpu][sint];
    if (p.cookie != s->last_cookie + 1)
        s->order_errors++;
    if (this_cpu()->id != cpu || p.vp != cpu)
        s->wrong_cpu++;
    s->last_cookie = p.cookie;
    s->irql = irql_current();
    __atomic_add_fetch(&s->messages, 1, __ATOMIC_RELEASE);
    return STATUS_OK;
}

static void on_event(void *ctx, uint32_t cpu, uint32_t flag)
{
    uint8_t sint = (uint8_t)(uintptr_t)ctx;
    seen[cpu][sint].last_flag = flag;
    __atomic_add_fetch(&seen[cpu][sint].events, 1, __ATOMIC_RELEASE);
}

static bool wait_count(volatile uint32_t *counter, uint32_t want)
{
    return hosted_wait_count(counter, want, 5000);
}

static void init_job(void *arg)
{
    (void)arg;
}

static int setup_with(const struct hvsim_config *cfg, bool register_all)
{
    memset(seen, 0, sizeof seen);
    hosted_log_quiet(true);
    hosted_start(VPS, RAM, cfg);
    hosted_log_clear();
    if (hv_init() != STATUS_OK)
        return -1;
    if (!register_all)
        return 0;
    for (uint8_t s = 0; s < HV_SINT_COUNT; s++) {
        if (s == 15 || s == HV_STIMER_SINT)
            continue; /* 15: nobody's SINT; the timer's stays free for hv_stimer_start */
        struct hv_sint_handler h = { .name = "test", .irql = (s & 1) ? hv_sint_device_irql() : IRQL_DISPATCH,
                                     .message = on_message, .event = on_event, .event_flags = 512,
                                     .ctx = (void *)(uintptr_t)s };
        if (hv_sint_register(s, &h) != STATUS_OK)
            return -1;
    }
    hosted_run_on(0, init_job, NULL);
    return 0;
}

static int setup(void **state)
{
    (void)state;
    return setup_with(NULL, true);
}

static int teardown(void **state)
{
    (void)state;
    hosted_stop();
    return 0;
}

/* ---- bring-up ---- */

static void test_bringup(void **state)
{
    (void)state;
    assert_string_equal(hv_binding_name(), "hosted");
    const struct hv_features *f = hv_get_features();
    assert_non_null(f);
    assert_string_equal(f->vendor, "Microsoft Hv");
    assert_null(hv_features_missing(f));
    for (uint32_t vp = 0; vp < VPS; vp++) {
        uint64_t simp = 0, siefp = 0, sctl = 0, sint = 0;
        assert_true(hvsim_rdmsr(hosted_sim(), vp, HV_MSR_SIMP, &simp));
        assert_true(hvsim_rdmsr(hosted_sim(), vp, HV_MSR_SIEFP, &siefp));
        assert_true(hvsim_rdmsr(hosted_sim(), vp, HV_MSR_SCONTROL, &sctl));
        assert_true(hvsim_rdmsr(hosted_sim(), vp, HV_MSR_SINT0 + 2, &sint));
        assert_true(simp & HV_PAGE_ENABLE);
        assert_true(siefp & HV_PAGE_ENABLE);
        assert_true(sctl & HV_SCONTROL_ENABLE);
        assert_false(sint & HV_SINT_MASKED);
        assert_int_equal(sint & 0xff, hv_sint_vector());
        assert_int_equal(hv_vp_index(vp), vp);
    }
    assert_true(hosted_log_contains("SynIC on"));
}

/* ---- messages and events on every SINT and VP ---- */

struct post_job {
    uint32_t vp;
    uint8_t sint;
    uint32_t cookie;
    uint16_t status;
};

static void post_echo(void *arg)
{
    struct post_job *j = arg;
    struct echo_payload p = { .vp = (uint8_t)j->vp, .sint = j->sint, .cookie = j->cookie };
    j->status = hv_post_message(HVSIM_CONN_ECHO, TEST_TYPE, &p, sizeof p);
}

static void signal_echo(void *arg)
{
    struct post_job *j = arg;
    j->status = hv_signal_event(HVSIM_CONN_EVENT_ECHO + j->sint, (uint16_t)j->cookie);
}

static void test_round_trips_every_sint_every_vp(void **state)
{
    (void)state;
    for (uint32_t vp = 0; vp < VPS; vp++) {
        for (uint8_t s = 0; s < 15; s++) {
            if (s == HV_STIMER_SINT)
                continue;
            struct post_job j = { .vp = vp, .sint = s, .cookie = seen[vp][s].last_cookie + 1 };
            hosted_run_on(vp, post_echo, &j);
            assert_int_equal(j.status, HV_STATUS_SUCCESS);
            assert_true(wait_count(&seen[vp][s].messages, 1));
            assert_int_equal(seen[vp][s].wrong_cpu, 0);
            assert_int_equal(seen[vp][s].irql, (s & 1) ? hv_sint_device_irql() : IRQL_DISPATCH);
            uint16_t flag = (uint16_t)(vp * 100 + s);
            j.cookie = flag;
            hosted_run_on(vp, signal_echo, &j);
            assert_int_equal(j.status, HV_STATUS_SUCCESS);
            assert_true(wait_count(&seen[vp][s].events, 1));
            assert_int_equal(seen[vp][s].last_flag, flag);
        }
    }
}

static void burst(void *arg)
{
    struct post_job *j = arg;
    /* At DISPATCH the SynIC DPC cannot run: the first message stays in the slot, the rest queue. */
    irql_t old = irql_raise(IRQL_DISPATCH);
    for (uint32_t i = 0; i < 10; i++) {
        struct echo_payload p = { .vp = (uint8_t)j->vp, .sint = j->sint, .cookie = j->cookie + i };
        if (hv_post_message(HVSIM_CONN_ECHO, TEST_TYPE, &p, sizeof p) != HV_STATUS_SUCCESS)
            j->status = 1;
    }
    irql_lower(old);
}

static void test_pending_and_eom(void **state)
{
    (void)state;
    struct hv_synic_stats before, after;
    hv_synic_get_stats(1, &before);
    struct post_job j = { .vp = 1, .sint = 0, .cookie = 1 };
    hosted_run_on(1, burst, &j);
    assert_int_equal(j.status, 0);
    assert_true(wait_count(&seen[1][0].messages, 10));
    assert_int_equal(seen[1][0].order_errors, 0);
    hv_synic_get_stats(1, &after);
    /* Nine messages waited behind a full slot: each came after an EOM. */
    assert_true(after.eoms - before.eoms >= 9);
    struct hvsim_stats hs;
    hvsim_get_stats(hosted_sim(), &hs);
    assert_true(hs.eoms >= 9);
}

static void test_host_posts_from_outside(void **state)
{
    (void)state;
    /* The host writes into a slot the guest has not consumed yet: queued, delivered on EOM. */
    for (uint32_t i = 0; i < 5; i++) {
        struct echo_payload p = { .vp = 2, .sint = 6, .cookie = i + 1 };
        assert_true(hvsim_post(hosted_sim(), 2, 6, TEST_TYPE, &p, sizeof p, false));
    }
    assert_true(wait_count(&seen[2][6].messages, 5));
    assert_int_equal(seen[2][6].order_errors, 0);
}

/* ---- transient statuses ---- */

static void post_one(void *arg)
{
    struct post_job *j = arg;
    struct echo_payload p = { .vp = (uint8_t)j->vp, .sint = j->sint, .cookie = j->cookie };
    j->status = hv_post_message(HVSIM_CONN_ECHO, TEST_TYPE, &p, sizeof p);
}

static void test_transient_retries(void **state)
{
    (void)state;
    hvsim_fail_next_posts(hosted_sim(), 5, HV_STATUS_INSUFFICIENT_BUFFERS);
    struct post_job j = { .vp = 0, .sint = 2, .cookie = 1 };
    hosted_run_on(0, post_one, &j);
    assert_int_equal(j.status, HV_STATUS_SUCCESS);
    assert_true(wait_count(&seen[0][2].messages, 1));

    hvsim_fail_next_posts(hosted_sim(), 3, HV_STATUS_INSUFFICIENT_MEMORY);
    j.cookie = 2;
    hosted_run_on(0, post_one, &j);
    assert_int_equal(j.status, HV_STATUS_SUCCESS);

    /* More failures than retries: the status comes back, after HV_POST_RETRIES tries. */
    hosted_log_clear();
    hvsim_fail_next_posts(hosted_sim(), HV_POST_RETRIES + 5, HV_STATUS_INSUFFICIENT_BUFFERS);
    struct hvsim_stats a, b;
    hvsim_get_stats(hosted_sim(), &a);
    j.cookie = 3;
    hosted_run_on(0, post_one, &j);
    hvsim_get_stats(hosted_sim(), &b);
    assert_int_equal(j.status, HV_STATUS_INSUFFICIENT_BUFFERS);
    assert_int_equal(b.posts_failed - a.posts_failed, HV_POST_RETRIES);
    assert_true(hosted_log_contains("INSUFFICIENT_BUFFERS"));
    hvsim_fail_next_posts(hosted_sim(), 0, 0);
}

static void post_unknown(void *arg)
{
    struct post_job *j = arg;
    j->status = hv_post_message(0x12345, TEST_TYPE, "x", 1);
}

static void test_permanent_failure_not_retried(void **state)
{
    (void)state;
    struct hvsim_stats a, b;
    hvsim_get_stats(hosted_sim(), &a);
    struct post_job j = { 0 };
    hosted_run_on(3, post_unknown, &j);
    hvsim_get_stats(hosted_sim(), &b);
    assert_int_equal(j.status, HV_STATUS_INVALID_CONNECTION_ID);
    assert_int_equal(b.hypercalls - a.hypercalls, 1);
}

/* ---- the host's bad input ---- */

static bool stat_grew(void *ctx)
{
    uint64_t *want = ctx;
    struct hv_synic_stats s;
    hv_synic_get_stats(0, &s);
    return s.dropped_bad_size + s.dropped_unknown_type + s.dropped_no_handler + s.stray_events >= *want;
}

static void test_bad_input_dropped(void **state)
{
    (void)state;
    hosted_log_clear();
    uint8_t junk[256] = { 0 };
    struct hv_synic_stats s0;
    hv_synic_get_stats(0, &s0);
    uint64_t base = s0.dropped_bad_size + s0.dropped_unknown_type + s0.dropped_no_handler + s0.stray_events;
    assert_true(hvsim_post(hosted_sim(), 0, 2, TEST_TYPE, junk, 241, true));   /* too long */
    assert_true(hvsim_post(hosted_sim(), 0, 2, 0x777, junk, 8, false));        /* unknown type */
    assert_true(hvsim_post(hosted_sim(), 0, 15, TEST_TYPE, junk, 8, false));   /* nobody's SINT */
    assert_true(hvsim_signal(hosted_sim(), 0, 2, 1500));                       /* flag past the owner's 512 */
    assert_true(hvsim_signal(hosted_sim(), 0, 15, 3));                         /* flag in nobody's SINT */
    uint64_t want = base + 5;
    assert_true(hosted_wait_for(stat_grew, &want, 5000));
    struct hv_synic_stats s;
    hv_synic_get_stats(0, &s);
    assert_int_equal(s.dropped_bad_size - s0.dropped_bad_size, 1);
    assert_int_equal(s.dropped_unknown_type - s0.dropped_unknown_type, 1);
    assert_int_equal(s.dropped_no_handler - s0.dropped_no_handler, 1);
    assert_int_equal(s.stray_events - s0.stray_events, 2);
    assert_true(hosted_log_contains("claims 241 payload bytes"));
    assert_true(hosted_log_contains("unknown message type 0x777"));
    assert_true(hosted_log_contains("a SINT nobody registered"));
    assert_true(hosted_log_contains("belongs to nobody"));
    /* And the SINT still works. */
    struct echo_payload p = { .vp = 0, .sint = 2, .cookie = seen[0][2].last_cookie + 1 };
    uint32_t before = seen[0][2].messages;
    assert_true(hvsim_post(hosted_sim(), 0, 2, TEST_TYPE, &p, sizeof p, false));
    assert_true(wait_count(&seen[0][2].messages, before + 1));
}

/* ---- reference time ---- */

struct time_job {
    uint64_t backwards, first, last;
    const char *source;
};

static void read_times(void *arg)
{
    struct time_job *j = arg;
    uint64_t prev = hv_ref_time();
    j->first = prev;
    for (int i = 0; i < 20000; i++) {
        uint64_t t = hv_ref_time();
        if (t < prev)
            j->backwards++;
        prev = t;
    }
    j->last = prev;
    j->source = hv_ref_time_source();
}

static void test_reference_time(void **state)
{
    (void)state;
    for (uint32_t vp = 0; vp < VPS; vp++) {
        struct time_job j = { 0 };
        hosted_run_on(vp, read_times, &j);
        assert_int_equal(j.backwards, 0);
        assert_true(j.last > j.first);
        assert_string_equal(j.source, "reference tsc page");
        /* The page agrees with hvsim's own clock, read just after: never ahead of it (by more than
         * 10 us of rounding), and behind only by the time the job took to report back (< 50 ms). */
        uint64_t host = hvsim_ref_time(hosted_sim());
        if (!(host + 100 >= j.last && host - j.last < 500000))
            fail_msg("vp%u: tsc page says %llu, hvsim %llu", vp, (unsigned long long)j.last, (unsigned long long)host);
    }
}

static volatile uint32_t *page_sequence;

/* The host rewrites the page between the guest's two reads of the sequence, every time. */
static uint64_t tsc_while_host_rewrites(void)
{
    __atomic_add_fetch(page_sequence, 1, __ATOMIC_RELEASE);
    return rdtsc();
}

static void test_reference_time_unsettled(void **state)
{
    (void)state;
    uint64_t msr = 0;
    assert_true(hvsim_rdmsr(hosted_sim(), 0, HV_MSR_REFERENCE_TSC, &msr));
    assert_true(msr & HV_PAGE_ENABLE);
    struct hv_reference_tsc_page *page = (void *)((uint8_t *)hosted_ram() + (msr & HV_PAGE_GPA_MASK));
    page_sequence = &page->tsc_sequence;
    hosted_log_clear();
    uint64_t before = hv_ref_time_unsettled_reads();
    struct time_job settled = { 0 };
    hosted_run_on(1, read_times, &settled);
    hv_reftime_set_tsc_reader(tsc_while_host_rewrites);
    struct time_job j = { 0 };
    hosted_run_on(1, read_times, &j);
    hv_reftime_set_tsc_reader(NULL);
    /* Every read fell back to TIME_REF_COUNT, with a log line, and time never went back. */
    assert_int_equal(hv_ref_time_unsettled_reads() - before, 20001);
    assert_true(hosted_log_contains("did not settle"));
    assert_int_equal(j.backwards, 0);
    assert_true(j.first >= settled.last);
    /* hvsim's own churning page (bursts): readers retry and still get monotonic time. */
    hvsim_set_tsc_unsettled(hosted_sim(), true);
    struct time_job churn = { 0 };
    hosted_run_on(2, read_times, &churn);
    hvsim_set_tsc_unsettled(hosted_sim(), false);
    assert_int_equal(churn.backwards, 0);
}

/* ---- timers ---- */

static volatile uint32_t expiries[VPS];
static volatile uint32_t expiry_irql_bad;

static void expired(void)
{
    uint32_t cpu = this_cpu()->id;
    __atomic_add_fetch(&expiries[cpu], 1, __ATOMIC_RELEASE);
}

static void direct_vector(struct int_frame *f, void *ctx)
{
    (void)f;
    (void)ctx;
    if (irql_current() != 0xD1 >> 4)
        expiry_irql_bad++;
    expired();
}

static void arm_1ms(void *arg)
{
    (void)arg;
    hv_stimer_arm(hv_ref_time() + 10000);
}

static void run_timer_test(bool direct)
{
    memset((void *)expiries, 0, sizeof expiries);
    if (direct)
        assert_int_equal(irq_register(0xD1, direct_vector, NULL), STATUS_OK);
    assert_int_equal(hv_stimer_start(expired, direct, 0xD1), STATUS_OK);
    assert_int_equal(hv_stimer_mode(), direct ? HV_STIMER_MODE_DIRECT : HV_STIMER_MODE_MESSAGE);
    for (uint32_t vp = 0; vp < VPS; vp++) {
        hosted_run_on(vp, arm_1ms, NULL);
        assert_true(wait_count(&expiries[vp], 1));
        hosted_run_on(vp, arm_1ms, NULL);
        assert_true(wait_count(&expiries[vp], 2));
    }
    assert_int_equal(expiry_irql_bad, 0);
    if (!direct)
        for (uint32_t vp = 0; vp < VPS; vp++)
            assert_true(hv_stimer_messages(vp) >= 2);
}

static void test_timer_direct(void **state)
{
    (void)state;
    run_timer_test(true);
}

static void test_timer_message(void **state)
{
    (void)state;
    run_timer_test(false);
}

static int setup_no_direct(void **state)
{
    (void)state;
    struct hvsim_config cfg = { .no_direct_stimer = true };
    return setup_with(&cfg, false);
}

static void test_timer_message_when_host_offers_no_direct(void **state)
{
    (void)state;
    memset((void *)expiries, 0, sizeof expiries);
    assert_int_equal(hv_stimer_start(expired, true, 0xD1), STATUS_OK);
    assert_int_equal(hv_stimer_mode(), HV_STIMER_MODE_MESSAGE);
    hosted_run_on(2, arm_1ms, NULL);
    assert_true(wait_count(&expiries[2], 1));
}

/* ---- privileges and shutdown ---- */

static void test_missing_privilege_refused(void **state)
{
    (void)state;
    static const struct {
        uint32_t low, high;
        const char *name;
    } cases[] = {
        { HV_PRIV_ACCESS_SYNIC_REGS, 0, "AccessSynicRegs" },
        { HV_PRIV_ACCESS_HYPERCALL_MSRS, 0, "AccessHypercallMsrs" },
        { 0, HV_PRIV_POST_MESSAGES, "PostMessages" },
        { 0, HV_PRIV_SIGNAL_EVENTS, "SignalEvents" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct hvsim_config cfg = { .deny_privileges_low = cases[i].low, .deny_privileges_high = cases[i].high };
        hosted_log_quiet(true);
        hosted_start(2, RAM, &cfg);
        hosted_log_clear();
        assert_int_equal(hv_init(), STATUS_NOT_SUPPORTED);
        assert_false(hv_active());
        char want[80];
        snprintf(want, sizeof want, "lacks the %s privilege", cases[i].name);
        assert_true(hosted_log_contains(want));
        hosted_stop();
    }
}

static void test_shutdown_disables_everything(void **state)
{
    (void)state;
    hosted_log_clear();
    hosted_power_off();
    assert_false(hv_active());
    for (uint32_t vp = 0; vp < VPS; vp++) {
        uint64_t v = 0;
        assert_true(hvsim_rdmsr(hosted_sim(), vp, HV_MSR_SIMP, &v));
        assert_false(v & HV_PAGE_ENABLE);
        assert_true(hvsim_rdmsr(hosted_sim(), vp, HV_MSR_SIEFP, &v));
        assert_false(v & HV_PAGE_ENABLE);
        assert_true(hvsim_rdmsr(hosted_sim(), vp, HV_MSR_SCONTROL, &v));
        assert_false(v & HV_SCONTROL_ENABLE);
        assert_true(hvsim_rdmsr(hosted_sim(), vp, HV_MSR_SINT0 + 2, &v));
        assert_true(v & HV_SINT_MASKED);
    }
    uint64_t hc = 0;
    assert_true(hvsim_rdmsr(hosted_sim(), 0, HV_MSR_HYPERCALL, &hc));
    assert_false(hc & HV_HYPERCALL_ENABLE);
    assert_true(hosted_log_contains("SynIC and hypercall page disabled"));
}

/* ---- the pure parts ---- */

static uint64_t fixed_tsc(void)
{
    return 1000000000ull;
}

static void test_tsc_page_reader(void **state)
{
    (void)state;
    static struct hv_reference_tsc_page page;
    uint64_t t = 0;
    memset(&page, 0, sizeof page);
    assert_int_equal(hv_tsc_page_read(&page, fixed_tsc, &t), HV_TSC_PAGE_INVALID);
    page.tsc_sequence = 7;
    page.tsc_scale = 1ull << 62; /* a quarter */
    page.tsc_offset = 5;
    assert_int_equal(hv_tsc_page_read(&page, fixed_tsc, &t), HV_TSC_PAGE_OK);
    assert_int_equal(t, 250000000ull + 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tsc_page_reader),
        cmocka_unit_test_setup_teardown(test_bringup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trips_every_sint_every_vp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pending_and_eom, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_posts_from_outside, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transient_retries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_permanent_failure_not_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_input_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reference_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reference_time_unsettled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timer_direct, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timer_message, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timer_message_when_host_offers_no_direct, setup_no_direct, teardown),
        cmocka_unit_test(test_missing_privilege_refused),
        cmocka_unit_test_setup_teardown(test_shutdown_disables_everything, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
