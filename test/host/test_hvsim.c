/*
 * Unit tests for the hvsim library (sim/hvsim.h) and its doorbell pieces (sim/doorbell.h).
 *
 * Each test builds a model over a 4 MiB guest RAM buffer and plays the guest with the shared fake
 * guest (test/lib/fake_guest.h): CPUID and MSR accesses, hypercalls with inputs written into that
 * RAM, reading message slots and event flags the way a guest does (atomic loads, message_type
 * cleared last). Interrupts raised by the model are recorded with the time they came. Timer tests use
 * the real clock with generous bounds, since the suite also runs under ASan/UBSan and TSan on a
 * loaded machine.
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
#include "hv/proto/simdb.h"
#include "sim/doorbell.h"
#include "sim/hvsim.h"
#include "test/lib/fake_guest.h"
#include "test/lib/simdb_events.h"
#include "test/lib/test_util.h"

#define RAM_SIZE (4u << 20)
#define TSC_PAGE_GPA 0x2000u
#define MAILBOX_GPA 0x300000u
#define MAX_IRQS 4096

struct irq {
    uint32_t vp;
    uint8_t vector;
    int64_t when_ns; /* CLOCK_MONOTONIC */
};

struct fixture {
    struct fake_guest fg;
    /* The interrupts raised (fg.lock, fg.changed broadcast): they may come from the timer thread. */
    unsigned irq_count;
    struct irq irqs[MAX_IRQS];
};

static void record_irq(void *ctx, uint32_t vp, uint8_t vector)
{
    struct fixture *f = ctx;
    pthread_mutex_lock(&f->fg.lock);
    if (f->irq_count < MAX_IRQS)
        f->irqs[f->irq_count] = (struct irq){ vp, vector, now_ns() };
    f->irq_count++;
    pthread_cond_broadcast(&f->fg.changed);
    pthread_mutex_unlock(&f->fg.lock);
}

static struct hvsim_config default_config(uint32_t vps)
{
    return (struct hvsim_config){ .vp_count = vps };
}

static void fx_release(void *fixture)
{
    struct fixture *f = fixture;
    fg_destroy(&f->fg);
}

/* A model over fresh RAM; its log goes to the fake guest's record. */
static struct fixture *fx_new_cfg(struct hvsim_config cfg)
{
    struct fixture *f = fg_fixture_new(sizeof *f, fx_release);
    struct fg_config gc = { .hv = cfg, .ram_size = RAM_SIZE, .raise = record_irq, .raise_ctx = f };
    fg_init(&f->fg, &gc);
    return f;
}

static struct fixture *fx_new(uint32_t vps)
{
    return fx_new_cfg(default_config(vps));
}

/* Hypercalls enabled and every VP's SynIC on. */
static struct fixture *fx_ready_cfg(struct hvsim_config cfg)
{
    struct fixture *f = fx_new_cfg(cfg);
    fg_ready(&f->fg);
    return f;
}

static struct fixture *fx_ready(uint32_t vps)
{
    return fx_ready_cfg(default_config(vps));
}

static unsigned irq_count(struct fixture *f)
{
    return fg_count(&f->fg, &f->irq_count);
}

static struct irq irq_at(struct fixture *f, unsigned i)
{
    pthread_mutex_lock(&f->fg.lock);
    assert_true(i < f->irq_count && i < MAX_IRQS);
    struct irq r = f->irqs[i];
    pthread_mutex_unlock(&f->fg.lock);
    return r;
}

/* ---- guest-side helpers of these tests ---- */

/* An echo request to (target vp, sint) with a tag after the two routing bytes. */
static uint16_t echo(struct fixture *f, uint32_t from_vp, uint32_t vp, uint32_t sint, uint32_t tag, uint32_t size)
{
    uint8_t p[HV_MESSAGE_PAYLOAD_MAX] = { (uint8_t)vp, (uint8_t)sint };
    memcpy(p + 2, &tag, sizeof tag);
    for (uint32_t i = 6; i < sizeof p; i++)
        p[i] = (uint8_t)(i ^ tag);
    return fg_post_once(&f->fg, from_vp, HVSIM_CONN_ECHO, HV_MESSAGE_VMBUS, p, size);
}

static uint32_t slot_tag(struct fixture *f, uint32_t vp, uint32_t sint)
{
    uint32_t tag;
    memcpy(&tag, fg_slot_payload(&f->fg, vp, sint) + 2, sizeof tag);
    return tag;
}

static uint16_t control(struct fixture *f, uint32_t cmd, uint32_t vp, uint32_t sint, uint32_t arg,
                        const void *extra, uint32_t extra_size)
{
    uint8_t p[HV_MESSAGE_PAYLOAD_MAX];
    uint32_t words[4] = { cmd, vp, sint, arg };
    memcpy(p, words, sizeof words);
    if (extra_size)
        memcpy(p + sizeof words, extra, extra_size);
    return fg_post_once(&f->fg, 0, HVSIM_CONN_CONTROL, 1, p, (uint32_t)sizeof words + extra_size);
}

static struct hvsim_stats stats(struct fixture *f)
{
    struct hvsim_stats s;
    hvsim_get_stats(f->fg.sim, &s);
    return s;
}

/* ---- CPUID ---- */

static void test_cpuid_values(void **state)
{
    (void)state;
    struct fixture *f = fx_new(3);
    uint32_t r[4];
    hvsim_cpuid(f->fg.sim, 0, HV_CPUID_VENDOR, 0, r);
    assert_int_equal(r[0], HV_CPUID_LIMITS);
    char vendor[13] = { 0 };
    memcpy(vendor, &r[1], 4);
    memcpy(vendor + 4, &r[2], 4);
    memcpy(vendor + 8, &r[3], 4);
    assert_string_equal(vendor, "Microsoft Hv");
    hvsim_cpuid(f->fg.sim, 1, HV_CPUID_INTERFACE, 0, r);
    assert_int_equal(r[0], HV_INTERFACE_HV1);
    hvsim_cpuid(f->fg.sim, 0, HV_CPUID_VERSION, 0, r);
    assert_int_equal(r[0], 20348);
    assert_int_equal(r[1], 10u << 16);
    hvsim_cpuid(f->fg.sim, 0, HV_CPUID_FEATURES, 0, r);
    assert_int_equal(r[0], HV_PRIV_ACCESS_PARTITION_REFCOUNT | HV_PRIV_ACCESS_SYNIC_REGS |
                               HV_PRIV_ACCESS_SYNTHETIC_TIMERS | HV_PRIV_ACCESS_HYPERCALL_MSRS |
                               HV_PRIV_ACCESS_VP_INDEX | HV_PRIV_ACCESS_REFERENCE_TSC |
                               HV_PRIV_ACCESS_FREQUENCY_MSRS);
    assert_int_equal(r[1], HV_PRIV_POST_MESSAGES | HV_PRIV_SIGNAL_EVENTS);
    assert_int_equal(r[3], HV_FEATURE_FREQUENCY_MSRS | HV_FEATURE_DIRECT_STIMER);
    hvsim_cpuid(f->fg.sim, 0, HV_CPUID_RECOMMENDATIONS, 0, r);
    assert_int_equal(r[0] & HV_RECOMMEND_DEPRECATING_AEOI, 0);
    hvsim_cpuid(f->fg.sim, 2, HV_CPUID_LIMITS, 0, r);
    assert_int_equal(r[0], 3);
    /* Beyond the hypervisor range and standard leaves: zeros. */
    const uint32_t others[] = { 0x40000006u, 0x4000ffffu, 0x1u, 0x0u, 0x80000000u };
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        memset(r, 0xff, sizeof r);
        hvsim_cpuid(f->fg.sim, 0, others[i], 0, r);
        assert_true(r[0] == 0 && r[1] == 0 && r[2] == 0 && r[3] == 0);
    }
}

static void test_cpuid_deny_masks_and_options(void **state)
{
    (void)state;
    struct hvsim_config cfg = default_config(1);
    cfg.deny_privileges_low = HV_PRIV_ACCESS_SYNIC_REGS | HV_PRIV_ACCESS_REFERENCE_TSC;
    cfg.deny_privileges_high = HV_PRIV_POST_MESSAGES;
    cfg.no_direct_stimer = true;
    cfg.recommend_no_aeoi = true;
    struct fixture *f = fx_new_cfg(cfg);
    uint32_t r[4];
    hvsim_cpuid(f->fg.sim, 0, HV_CPUID_FEATURES, 0, r);
    assert_int_equal(r[0] & (HV_PRIV_ACCESS_SYNIC_REGS | HV_PRIV_ACCESS_REFERENCE_TSC), 0);
    assert_true(r[0] & HV_PRIV_ACCESS_SYNTHETIC_TIMERS);
    assert_int_equal(r[1], HV_PRIV_SIGNAL_EVENTS);
    assert_int_equal(r[3], HV_FEATURE_FREQUENCY_MSRS);
    hvsim_cpuid(f->fg.sim, 0, HV_CPUID_RECOMMENDATIONS, 0, r);
    assert_true(r[0] & HV_RECOMMEND_DEPRECATING_AEOI);
}

static void test_create_rejects_bad_config(void **state)
{
    (void)state;
    uint8_t *ram = aligned_alloc(4096, 4096);
    struct reports logs;
    reports_clear(&logs);
    struct hvsim_config bad[] = {
        { .vp_count = 0 },
        { .vp_count = SIMDB_MAX_VPS + 1 },
        { .vp_count = 1, .tsc_hz = HV_REF_TIME_HZ },
        { .vp_count = 1, .queue_depth = 1u << 20 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bad[i].log = reports_record;
        bad[i].log_ctx = &logs;
        assert_null(hvsim_create(&bad[i], ram, 4096, record_irq, NULL));
    }
    assert_int_equal(logs.count, sizeof bad / sizeof bad[0]);
    struct hvsim_config ok = { .vp_count = 1, .log = reports_record, .log_ctx = &logs };
    assert_null(hvsim_create(&ok, NULL, 4096, record_irq, NULL));
    assert_null(hvsim_create(&ok, ram, 4096, NULL, NULL));
    free(ram);
}

/* ---- MSRs ---- */

static void test_msr_values(void **state)
{
    (void)state;
    struct hvsim_config cfg = default_config(4);
    cfg.tsc_hz = 2500000000ull;
    struct fixture *f = fx_new_cfg(cfg);
    for (uint32_t v = 0; v < 4; v++)
        assert_int_equal(fg_rdmsr(&f->fg, v, HV_MSR_VP_INDEX), v);
    assert_int_equal(fg_rdmsr(&f->fg, 0, HV_MSR_SVERSION), 1);
    assert_int_equal(fg_rdmsr(&f->fg, 0, HV_MSR_TSC_FREQUENCY), 2500000000ull);
    assert_int_equal(fg_rdmsr(&f->fg, 0, HV_MSR_APIC_FREQUENCY), 200000000ull);
    assert_int_equal(fg_rdmsr(&f->fg, 0, HV_MSR_EOM), 0);
    for (uint32_t s = 0; s < HV_SINT_COUNT; s++)
        assert_int_equal(fg_rdmsr(&f->fg, 1, HV_MSR_SINT0 + s), 0x10000);
    assert_int_equal(fg_rdmsr(&f->fg, 0, HV_MSR_SCONTROL), 0);
    assert_int_equal(fg_rdmsr(&f->fg, 0, HV_MSR_SIMP), 0);
    for (uint32_t n = 0; n < HV_STIMER_COUNT; n++) {
        assert_int_equal(fg_rdmsr(&f->fg, 0, HV_MSR_STIMER0_CONFIG + 2 * n), 0);
        assert_int_equal(fg_rdmsr(&f->fg, 0, HV_MSR_STIMER0_COUNT + 2 * n), 0);
    }
    /* Partition-wide: FG_GUEST_OS_ID written on VP 0 reads back on VP 3. */
    fg_wrmsr(&f->fg, 0, HV_MSR_GUEST_OS_ID, FG_GUEST_OS_ID);
    assert_int_equal(fg_rdmsr(&f->fg, 3, HV_MSR_GUEST_OS_ID), FG_GUEST_OS_ID);
    /* Per VP, and the RsvdP bits 11:1 of SIMP/SIEFP are kept. */
    fg_wrmsr(&f->fg, 2, HV_MSR_SIMP, FG_SIMP_GPA(2) | 0xffe | HV_PAGE_ENABLE);
    assert_int_equal(fg_rdmsr(&f->fg, 2, HV_MSR_SIMP), FG_SIMP_GPA(2) | 0xfff);
    assert_int_equal(fg_rdmsr(&f->fg, 1, HV_MSR_SIMP), 0);
    fg_wrmsr(&f->fg, 2, HV_MSR_SIEFP, FG_SIEFP_GPA(2) | 0x2);
    assert_int_equal(fg_rdmsr(&f->fg, 2, HV_MSR_SIEFP), FG_SIEFP_GPA(2) | 0x2);
    fg_wrmsr(&f->fg, 2, HV_MSR_SINT0 + 5, 0x40000 | 0x20 | 0xff00); /* polling, vector, RsvdP bits */
    assert_int_equal(fg_rdmsr(&f->fg, 2, HV_MSR_SINT0 + 5), 0x40000 | 0x20 | 0xff00);
    assert_int_equal(stats(f).msr_faults, 0);
}

static void test_msr_faults(void **state)
{
    (void)state;
    struct fixture *f = fx_new(2);
    uint64_t v;
    unsigned faults = 0;
#define EXPECT_GP(call)                                                                                        \
    do {                                                                                                       \
        assert_false(call);                                                                                    \
        faults++;                                                                                              \
        assert_int_equal(stats(f).msr_faults, faults);                                                         \
    } while (0)
    /* Vector below 16 on an unmasked SINT; masked with vector 0 (the reset value) and 16 are fine. */
    EXPECT_GP(hvsim_wrmsr(f->fg.sim, 0, HV_MSR_SINT0 + 2, 15));
    EXPECT_GP(hvsim_wrmsr(f->fg.sim, 0, HV_MSR_SINT0 + 2, 0));
    EXPECT_GP(hvsim_wrmsr(f->fg.sim, 0, HV_MSR_SINT0 + 2, HV_SINT_POLLING | 3));
    assert_int_equal(fg_rdmsr(&f->fg, 0, HV_MSR_SINT0 + 2), 0x10000);
    fg_wrmsr(&f->fg, 0, HV_MSR_SINT0 + 2, HV_SINT_MASKED);
    fg_wrmsr(&f->fg, 0, HV_MSR_SINT0 + 2, 16);
    /* SIMP / SIEFP / hypercall page outside RAM (enabled); a disabled one may point anywhere. */
    EXPECT_GP(hvsim_wrmsr(f->fg.sim, 0, HV_MSR_SIMP, RAM_SIZE | HV_PAGE_ENABLE));
    EXPECT_GP(hvsim_wrmsr(f->fg.sim, 0, HV_MSR_SIEFP, 0xfffffffffffff000ull | HV_PAGE_ENABLE));
    fg_wrmsr(&f->fg, 0, HV_MSR_SIMP, RAM_SIZE);
    fg_wrmsr(&f->fg, 0, HV_MSR_GUEST_OS_ID, FG_GUEST_OS_ID);
    EXPECT_GP(hvsim_wrmsr(f->fg.sim, 0, HV_MSR_HYPERCALL, (RAM_SIZE + 0x1000) | HV_HYPERCALL_ENABLE));
    /* Unknown synthetic MSRs (EOI: no APIC assist here), both directions. */
    EXPECT_GP(hvsim_rdmsr(f->fg.sim, 0, HV_MSR_EOI, &v));
    EXPECT_GP(hvsim_wrmsr(f->fg.sim, 0, HV_MSR_EOI, 0));
    EXPECT_GP(hvsim_rdmsr(f->fg.sim, 0, 0x4000ffffu, &v));
    EXPECT_GP(hvsim_rdmsr(f->fg.sim, 0, HV_MSR_STIMER0_CONFIG + 8, &v));
    /* Read-only ones. */
    EXPECT_GP(hvsim_wrmsr(f->fg.sim, 0, HV_MSR_VP_INDEX, 1));
    EXPECT_GP(hvsim_wrmsr(f->fg.sim, 0, HV_MSR_TIME_REF_COUNT, 1));
    EXPECT_GP(hvsim_wrmsr(f->fg.sim, 0, HV_MSR_SVERSION, 1));
    EXPECT_GP(hvsim_wrmsr(f->fg.sim, 0, HV_MSR_TSC_FREQUENCY, 1));
    /* A VP that does not exist. */
    EXPECT_GP(hvsim_rdmsr(f->fg.sim, 2, HV_MSR_VP_INDEX, &v));
    /* Timer config: reserved bits, direct vector below 16. */
    EXPECT_GP(hvsim_wrmsr(f->fg.sim, 0, HV_MSR_STIMER0_CONFIG, 1ull << 20));
    EXPECT_GP(hvsim_wrmsr(f->fg.sim, 0, HV_MSR_STIMER0_CONFIG, 1ull << 13));
    EXPECT_GP(hvsim_wrmsr(f->fg.sim, 0, HV_MSR_STIMER0_CONFIG, HV_STIMER_DIRECT | (15u << HV_STIMER_VECTOR_SHIFT)));
    assert_true(reports_matching(&f->fg.logs, "vp0: wrmsr SINT2", "#GP") >= 1);
    assert_true(reports_matching(&f->fg.logs, "rdmsr 0x40000070", "not implemented") == 1);
#undef EXPECT_GP
}

static void test_msr_denied_privileges(void **state)
{
    (void)state;
    struct hvsim_config cfg = default_config(1);
    cfg.deny_privileges_low = HV_PRIV_ACCESS_SYNIC_REGS | HV_PRIV_ACCESS_SYNTHETIC_TIMERS |
                              HV_PRIV_ACCESS_VP_INDEX | HV_PRIV_ACCESS_PARTITION_REFCOUNT |
                              HV_PRIV_ACCESS_FREQUENCY_MSRS | HV_PRIV_ACCESS_REFERENCE_TSC |
                              HV_PRIV_ACCESS_HYPERCALL_MSRS;
    cfg.no_direct_stimer = true;
    struct fixture *f = fx_new_cfg(cfg);
    const uint32_t msrs[] = { HV_MSR_SIMP, HV_MSR_SCONTROL, HV_MSR_EOM, HV_MSR_SINT0 + 3, HV_MSR_STIMER0_CONFIG + 2,
                              HV_MSR_VP_INDEX, HV_MSR_TIME_REF_COUNT, HV_MSR_TSC_FREQUENCY, HV_MSR_REFERENCE_TSC,
                              HV_MSR_GUEST_OS_ID, HV_MSR_HYPERCALL };
    uint64_t v;
    for (size_t i = 0; i < sizeof msrs / sizeof msrs[0]; i++) {
        assert_false(hvsim_rdmsr(f->fg.sim, 0, msrs[i], &v));
        assert_false(hvsim_wrmsr(f->fg.sim, 0, msrs[i], 0));
    }
    assert_int_equal(stats(f).msr_faults, 2 * (sizeof msrs / sizeof msrs[0]));
    assert_true(reports_matching(&f->fg.logs, "privilege denied") >= 1);
}

static void test_direct_timer_needs_feature(void **state)
{
    (void)state;
    struct hvsim_config cfg = default_config(1);
    cfg.no_direct_stimer = true;
    struct fixture *f = fx_new_cfg(cfg);
    assert_false(
        hvsim_wrmsr(f->fg.sim, 0, HV_MSR_STIMER0_CONFIG, HV_STIMER_DIRECT | (0x40u << HV_STIMER_VECTOR_SHIFT)));
    assert_true(reports_matching(&f->fg.logs, "direct mode not offered") == 1);
    fg_wrmsr(&f->fg, 0, HV_MSR_STIMER0_CONFIG, 3u << HV_STIMER_SINT_SHIFT); /* message mode is fine */
}

static void test_hypercall_msr_rules(void **state)
{
    (void)state;
    struct fixture *f = fx_new(2);
    /* No guest OS id: the enable bit does not stick (no #GP). */
    fg_wrmsr(&f->fg, 0, HV_MSR_HYPERCALL, FG_HYPERCALL_GPA | HV_HYPERCALL_ENABLE);
    assert_int_equal(fg_rdmsr(&f->fg, 0, HV_MSR_HYPERCALL), FG_HYPERCALL_GPA);
    fg_wrmsr(&f->fg, 0, HV_MSR_GUEST_OS_ID, FG_GUEST_OS_ID);
    fg_wrmsr(&f->fg, 1, HV_MSR_HYPERCALL, FG_HYPERCALL_GPA | HV_HYPERCALL_ENABLE);
    assert_int_equal(fg_rdmsr(&f->fg, 0, HV_MSR_HYPERCALL), FG_HYPERCALL_GPA | HV_HYPERCALL_ENABLE);
    /* Clearing the guest OS id disables the page. */
    fg_wrmsr(&f->fg, 0, HV_MSR_GUEST_OS_ID, 0);
    assert_int_equal(fg_rdmsr(&f->fg, 0, HV_MSR_HYPERCALL), FG_HYPERCALL_GPA);
    /* Locked: immutable until reset. */
    fg_wrmsr(&f->fg, 0, HV_MSR_GUEST_OS_ID, FG_GUEST_OS_ID);
    fg_wrmsr(&f->fg, 0, HV_MSR_HYPERCALL, FG_HYPERCALL_GPA | HV_HYPERCALL_LOCKED | HV_HYPERCALL_ENABLE);
    fg_wrmsr(&f->fg, 0, HV_MSR_HYPERCALL, 0x5000 | HV_HYPERCALL_ENABLE);
    assert_int_equal(fg_rdmsr(&f->fg, 1, HV_MSR_HYPERCALL),
                     FG_HYPERCALL_GPA | HV_HYPERCALL_LOCKED | HV_HYPERCALL_ENABLE);
}

static void test_synic_pages_cleared_on_enable(void **state)
{
    (void)state;
    struct fixture *f = fx_new(1);
    memset(f->fg.ram + FG_SIMP_GPA(0), 0xaa, 4096);
    memset(f->fg.ram + FG_SIEFP_GPA(0), 0x55, 4096);
    fg_wrmsr(&f->fg, 0, HV_MSR_SIMP, FG_SIMP_GPA(0) | HV_PAGE_ENABLE);
    fg_wrmsr(&f->fg, 0, HV_MSR_SIEFP, FG_SIEFP_GPA(0) | HV_PAGE_ENABLE);
    for (unsigned i = 0; i < 4096; i++)
        assert_true(f->fg.ram[FG_SIMP_GPA(0) + i] == 0 && f->fg.ram[FG_SIEFP_GPA(0) + i] == 0);
    /* Rewriting the same page (e.g. RsvdP bits) leaves its contents alone. */
    f->fg.ram[FG_SIMP_GPA(0) + 100] = 7;
    fg_wrmsr(&f->fg, 0, HV_MSR_SIMP, FG_SIMP_GPA(0) | 0x10 | HV_PAGE_ENABLE);
    assert_int_equal(f->fg.ram[FG_SIMP_GPA(0) + 100], 7);
}

/* ---- hypercalls ---- */

static void test_hypercall_page_required(void **state)
{
    (void)state;
    struct fixture *f = fx_new(1);
    fg_enable_synic(&f->fg, 0);
    assert_int_equal(echo(f, 0, 0, 2, 1, 8), HV_STATUS_INVALID_HYPERCALL_CODE);
    assert_int_equal(fg_signal_fast(&f->fg, 0, HVSIM_CONN_EVENT_ECHO + 2, 1), HV_STATUS_INVALID_HYPERCALL_CODE);
    assert_int_equal(reports_matching(&f->fg.logs, "status 0x2 (no hypercall page enabled"), 2);
    fg_enable_hypercalls(&f->fg);
    assert_int_equal(echo(f, 0, 0, 2, 1, 8), HV_STATUS_SUCCESS);
    struct hvsim_stats s = stats(f);
    assert_int_equal(s.hypercalls, 3);
    assert_int_equal(s.posts_ok, 1);
    assert_int_equal(s.posts_failed, 0); /* not a post: real hardware would have raised #UD */
}

/* Every VP posts, every (VP, SINT) receives: slot contents and the SINT's interrupt. */
static void test_echo_every_vp_and_sint(void **state)
{
    (void)state;
    const uint32_t vps = 4;
    struct fixture *f = fx_ready(vps);
    unsigned expect_irqs = 0;
    for (uint32_t vp = 0; vp < vps; vp++) {
        for (uint32_t s = 0; s < HV_SINT_COUNT; s++) {
            uint32_t tag = vp << 8 | s, size = 6 + (vp * 16 + s) % 235;
            assert_int_equal(echo(f, (vp + 1) % vps, vp, s, tag, size), HV_STATUS_SUCCESS);
            assert_int_equal(fg_slot_type(&f->fg, vp, s), HV_MESSAGE_VMBUS);
            assert_int_equal(fg_slot_size(&f->fg, vp, s), size);
            assert_int_equal(fg_slot_flags(&f->fg, vp, s), 0);
            assert_int_equal(fg_slot_payload(&f->fg, vp, s)[0], vp);
            assert_int_equal(fg_slot_payload(&f->fg, vp, s)[1], s);
            assert_int_equal(slot_tag(f, vp, s), tag);
            for (uint32_t i = 6; i < size; i++)
                assert_int_equal(fg_slot_payload(&f->fg, vp, s)[i], (uint8_t)(i ^ tag));
            assert_int_equal(irq_count(f), ++expect_irqs);
            struct irq r = irq_at(f, expect_irqs - 1);
            assert_int_equal(r.vp, vp);
            assert_int_equal(r.vector, FG_SINT_VECTOR(s));
            fg_consume(&f->fg, vp, s);
        }
    }
    struct hvsim_stats st = stats(f);
    assert_int_equal(st.posts_ok, vps * HV_SINT_COUNT);
    assert_int_equal(st.messages_delivered, vps * HV_SINT_COUNT);
    assert_int_equal(st.messages_queued, 0);
    assert_int_equal(st.interrupts_raised, vps * HV_SINT_COUNT);
    /* Default verbosity: nothing logged per message. */
    assert_int_equal(f->fg.logs.count, 0);
}

static void test_pending_and_eom(void **state)
{
    (void)state;
    struct fixture *f = fx_ready(1);
    const uint32_t s = 5;
    assert_int_equal(echo(f, 0, 0, s, 1, 10), HV_STATUS_SUCCESS);
    assert_int_equal(irq_count(f), 1);
    assert_int_equal(fg_slot_flags(&f->fg, 0, s), 0);
    /* The second waits behind the full slot, which now says a message is pending. */
    assert_int_equal(echo(f, 0, 0, s, 2, 10), HV_STATUS_SUCCESS);
    assert_int_equal(echo(f, 0, 0, s, 3, 10), HV_STATUS_SUCCESS);
    assert_int_equal(slot_tag(f, 0, s), 1);
    assert_true(fg_slot_flags(&f->fg, 0, s) & HV_MESSAGE_FLAG_PENDING);
    assert_int_equal(irq_count(f), 1);
    assert_int_equal(stats(f).messages_queued, 2);
    /* EOM while the slot is still full changes nothing. */
    fg_wrmsr(&f->fg, 0, HV_MSR_EOM, 0);
    assert_int_equal(slot_tag(f, 0, s), 1);
    assert_int_equal(irq_count(f), 1);
    /* Free + EOM: the next one arrives, still flagged pending (one more waits), with an interrupt. */
    fg_consume(&f->fg, 0, s);
    assert_int_equal(fg_slot_type(&f->fg, 0, s), HV_MESSAGE_VMBUS);
    assert_int_equal(slot_tag(f, 0, s), 2);
    assert_true(fg_slot_flags(&f->fg, 0, s) & HV_MESSAGE_FLAG_PENDING);
    assert_int_equal(irq_count(f), 2);
    assert_int_equal(irq_at(f, 1).vector, FG_SINT_VECTOR(s));
    fg_consume(&f->fg, 0, s);
    assert_int_equal(slot_tag(f, 0, s), 3);
    assert_int_equal(fg_slot_flags(&f->fg, 0, s), 0);
    assert_int_equal(irq_count(f), 3);
    /* Last one: no pending flag, so the guest writes no EOM; an EOM anyway is harmless. */
    fg_consume(&f->fg, 0, s);
    assert_int_equal(fg_slot_type(&f->fg, 0, s), HV_MESSAGE_NONE);
    unsigned eoms = (unsigned)stats(f).eoms;
    fg_wrmsr(&f->fg, 0, HV_MSR_EOM, 0);
    fg_wrmsr(&f->fg, 0, HV_MSR_EOM, 12345);
    assert_int_equal(fg_slot_type(&f->fg, 0, s), HV_MESSAGE_NONE);
    assert_int_equal(irq_count(f), 3);
    assert_int_equal(stats(f).eoms, eoms + 2);
    assert_int_equal(stats(f).messages_delivered, 3);
}

/* A new post also retries delivery: a slot freed without EOM takes the queued message then. */
static void test_post_retries_delivery(void **state)
{
    (void)state;
    struct fixture *f = fx_ready(1);
    assert_int_equal(echo(f, 0, 0, 1, 1, 8), HV_STATUS_SUCCESS);
    assert_int_equal(echo(f, 0, 0, 1, 2, 8), HV_STATUS_SUCCESS);
    __atomic_store_n((uint32_t *)fg_slot(&f->fg, 0, 1), 0, __ATOMIC_RELEASE); /* freed, no EOM */
    assert_int_equal(echo(f, 0, 0, 1, 3, 8), HV_STATUS_SUCCESS);
    assert_int_equal(slot_tag(f, 0, 1), 2);
    assert_true(fg_slot_flags(&f->fg, 0, 1) & HV_MESSAGE_FLAG_PENDING);
}

static void test_queue_overflow(void **state)
{
    (void)state;
    struct hvsim_config cfg = default_config(1);
    cfg.queue_depth = 4;
    struct fixture *f = fx_ready_cfg(cfg);
    for (uint32_t i = 0; i < 5; i++) /* one in the slot, four queued */
        assert_int_equal(echo(f, 0, 0, 7, i, 8), HV_STATUS_SUCCESS);
    assert_int_equal(echo(f, 0, 0, 7, 99, 8), HV_STATUS_INSUFFICIENT_BUFFERS);
    uint8_t p[2] = { 0, 7 };
    assert_false(hvsim_post(f->fg.sim, 0, 7, 1, p, sizeof p, false));
    assert_int_equal(reports_matching(&f->fg.logs, "vp0 sint7: message queue full"), 1); /* once, not per post */
    /* Drain: in order, nothing lost, then room again. */
    for (uint32_t i = 0; i < 5; i++) {
        assert_int_equal(fg_slot_type(&f->fg, 0, 7), HV_MESSAGE_VMBUS);
        assert_int_equal(slot_tag(f, 0, 7), i);
        fg_consume(&f->fg, 0, 7);
    }
    assert_int_equal(fg_slot_type(&f->fg, 0, 7), HV_MESSAGE_NONE);
    assert_int_equal(echo(f, 0, 0, 7, 100, 8), HV_STATUS_SUCCESS);
    assert_int_equal(stats(f).posts_failed, 1);
}

static void test_masked_sint_queues_until_unmasked(void **state)
{
    (void)state;
    struct fixture *f = fx_ready(2);
    fg_wrmsr(&f->fg, 1, HV_MSR_SINT0 + 4, HV_SINT_MASKED | FG_SINT_VECTOR(4));
    uint8_t p[4] = { 1, 4, 0xab, 0xcd };
    assert_true(hvsim_post(f->fg.sim, 1, 4, 9, p, sizeof p, false));
    assert_int_equal(fg_slot_type(&f->fg, 1, 4), HV_MESSAGE_NONE);
    fg_wrmsr(&f->fg, 1, HV_MSR_EOM, 0); /* no draining a masked SINT (see synic.c) */
    assert_int_equal(fg_slot_type(&f->fg, 1, 4), HV_MESSAGE_NONE);
    assert_int_equal(irq_count(f), 0);
    fg_wrmsr(&f->fg, 1, HV_MSR_SINT0 + 4, FG_SINT_VECTOR(4));
    assert_int_equal(fg_slot_type(&f->fg, 1, 4), 9);
    assert_int_equal(fg_slot_payload(&f->fg, 1, 4)[3], 0xcd);
    assert_int_equal(irq_count(f), 1);
    assert_int_equal(irq_at(f, 0).vp, 1);
    assert_int_equal(irq_at(f, 0).vector, FG_SINT_VECTOR(4));
}

static void test_disabled_simp_or_scontrol_queue(void **state)
{
    (void)state;
    struct fixture *f = fx_new(1);
    for (uint32_t s = 0; s < HV_SINT_COUNT; s++)
        fg_wrmsr(&f->fg, 0, HV_MSR_SINT0 + s, FG_SINT_VECTOR(s));
    uint8_t p[2] = { 0, 3 };
    assert_true(hvsim_post(f->fg.sim, 0, 3, 1, p, sizeof p, false));
    fg_wrmsr(&f->fg, 0, HV_MSR_SIMP, FG_SIMP_GPA(0) | HV_PAGE_ENABLE); /* SCONTROL still off */
    assert_int_equal(fg_slot_type(&f->fg, 0, 3), HV_MESSAGE_NONE);
    assert_int_equal(irq_count(f), 0);
    fg_wrmsr(&f->fg, 0, HV_MSR_SCONTROL, HV_SCONTROL_ENABLE);
    assert_int_equal(fg_slot_type(&f->fg, 0, 3), 1);
    assert_int_equal(irq_count(f), 1);
    /* SIMP off, post, SIMP on again (a new page): delivered there. */
    fg_consume(&f->fg, 0, 3);
    fg_wrmsr(&f->fg, 0, HV_MSR_SIMP, 0);
    assert_true(hvsim_post(f->fg.sim, 0, 3, 2, p, sizeof p, false));
    fg_wrmsr(&f->fg, 0, HV_MSR_SIMP, FG_SIMP_GPA(0) | HV_PAGE_ENABLE);
    assert_int_equal(fg_slot_type(&f->fg, 0, 3), 2);
    assert_int_equal(irq_count(f), 2);
}

static void test_polling_sint_delivers_without_interrupt(void **state)
{
    (void)state;
    struct fixture *f = fx_ready(1);
    fg_wrmsr(&f->fg, 0, HV_MSR_SINT0 + 6, HV_SINT_MASKED | HV_SINT_POLLING | FG_SINT_VECTOR(6));
    assert_int_equal(echo(f, 0, 0, 6, 1, 8), HV_STATUS_SUCCESS);
    assert_int_equal(fg_slot_type(&f->fg, 0, 6), HV_MESSAGE_VMBUS);
    assert_int_equal(irq_count(f), 0);
    assert_int_equal(fg_signal_fast(&f->fg, 0, HVSIM_CONN_EVENT_ECHO + 6, 9), HV_STATUS_SUCCESS);
    assert_true(fg_event_flag(&f->fg, 0, 6, 9));
    assert_int_equal(irq_count(f), 0);
}

static void test_echo_target_state(void **state)
{
    (void)state;
    struct fixture *f = fx_ready(2);
    fg_wrmsr(&f->fg, 1, HV_MSR_SIMP, 0);
    assert_int_equal(echo(f, 0, 1, 0, 1, 8), HV_STATUS_INVALID_SYNIC_STATE);
    fg_wrmsr(&f->fg, 1, HV_MSR_SIMP, FG_SIMP_GPA(1) | HV_PAGE_ENABLE);
    fg_wrmsr(&f->fg, 1, HV_MSR_SCONTROL, 0);
    assert_int_equal(echo(f, 0, 1, 0, 1, 8), HV_STATUS_INVALID_SYNIC_STATE);
    fg_wrmsr(&f->fg, 1, HV_MSR_SCONTROL, HV_SCONTROL_ENABLE);
    assert_int_equal(echo(f, 0, 1, 0, 1, 8), HV_STATUS_SUCCESS);
}

static void test_event_echo(void **state)
{
    (void)state;
    struct fixture *f = fx_ready(2);
    /* Slow form, every SINT, flags at both ends of the block. */
    unsigned irqs = 0;
    for (uint32_t s = 0; s < HV_SINT_COUNT; s++) {
        uint16_t flag = (uint16_t)(s * 131 % HV_EVENT_FLAGS_PER_SINT);
        assert_int_equal(fg_signal_slow(&f->fg, 1, HVSIM_CONN_EVENT_ECHO + s, flag), HV_STATUS_SUCCESS);
        assert_true(fg_event_flag(&f->fg, 1, s, flag));
        assert_false(fg_event_flag(&f->fg, 0, s, flag));
        assert_int_equal(irq_count(f), ++irqs);
        assert_int_equal(irq_at(f, irqs - 1).vp, 1);
        assert_int_equal(irq_at(f, irqs - 1).vector, FG_SINT_VECTOR(s));
    }
    /* Fast form; a flag already set raises nothing; once cleared it raises again. */
    assert_int_equal(fg_signal_fast(&f->fg, 0, HVSIM_CONN_EVENT_ECHO + 2, 2047), HV_STATUS_SUCCESS);
    assert_true(fg_event_flag(&f->fg, 0, 2, 2047));
    assert_int_equal(irq_count(f), ++irqs);
    assert_int_equal(fg_signal_fast(&f->fg, 0, HVSIM_CONN_EVENT_ECHO + 2, 2047), HV_STATUS_SUCCESS);
    assert_int_equal(irq_count(f), irqs);
    __atomic_fetch_and((uint64_t *)(f->fg.ram + FG_SIEFP_GPA(0) + 2 * 256) + 31, ~(1ull << 63), __ATOMIC_SEQ_CST);
    assert_int_equal(fg_signal_fast(&f->fg, 0, HVSIM_CONN_EVENT_ECHO + 2, 2047), HV_STATUS_SUCCESS);
    assert_int_equal(irq_count(f), ++irqs);
    /* Other bits of the word are untouched. */
    assert_int_equal(fg_event_word(&f->fg, 0, 2, 2047), 1ull << 63);
    assert_int_equal(stats(f).signals, HV_SINT_COUNT + 3);
}

static void test_event_errors(void **state)
{
    (void)state;
    struct fixture *f = fx_ready(1);
    assert_int_equal(fg_signal_fast(&f->fg, 0, HVSIM_CONN_EVENT_ECHO + 1, 2048), HV_STATUS_INVALID_PARAMETER);
    assert_int_equal(fg_signal_fast(&f->fg, 0, HVSIM_CONN_EVENT_ECHO + 1, 0xffff), HV_STATUS_INVALID_PARAMETER);
    assert_int_equal(fg_signal_slow(&f->fg, 0, HVSIM_CONN_EVENT_ECHO + 1, 4096), HV_STATUS_INVALID_PARAMETER);
    assert_int_equal(fg_signal_fast(&f->fg, 0, HVSIM_CONN_EVENT_ECHO + 16, 1), HV_STATUS_INVALID_CONNECTION_ID);
    assert_int_equal(fg_signal_fast(&f->fg, 0, 0x12345, 1), HV_STATUS_INVALID_CONNECTION_ID);
    assert_int_equal(fg_signal_fast(&f->fg, 0, HVSIM_CONN_ECHO, 1), HV_STATUS_INVALID_PORT_ID);
    /* Slow input: alignment and RAM bounds. */
    assert_int_equal(HV_HYPERCALL_STATUS(hvsim_hypercall(f->fg.sim, 0, HV_CALL_SIGNAL_EVENT, FG_INPUT_GPA(0) + 4, 0)),
                     HV_STATUS_INVALID_ALIGNMENT);
    assert_int_equal(HV_HYPERCALL_STATUS(hvsim_hypercall(f->fg.sim, 0, HV_CALL_SIGNAL_EVENT, RAM_SIZE, 0)),
                     HV_STATUS_INVALID_ALIGNMENT);
    /* Masked SINT, disabled SIEF page: INVALID_SYNIC_STATE, no flag set. */
    fg_wrmsr(&f->fg, 0, HV_MSR_SINT0 + 1, HV_SINT_MASKED | FG_SINT_VECTOR(1));
    assert_int_equal(fg_signal_fast(&f->fg, 0, HVSIM_CONN_EVENT_ECHO + 1, 5), HV_STATUS_INVALID_SYNIC_STATE);
    assert_false(fg_event_flag(&f->fg, 0, 1, 5));
    fg_wrmsr(&f->fg, 0, HV_MSR_SIEFP, 0);
    assert_int_equal(fg_signal_fast(&f->fg, 0, HVSIM_CONN_EVENT_ECHO + 3, 5), HV_STATUS_INVALID_SYNIC_STATE);
    assert_false(hvsim_signal(f->fg.sim, 0, 3, 5));
    assert_int_equal(irq_count(f), 0);
    assert_int_equal(stats(f).signals, 0);
}

static void test_host_signal(void **state)
{
    (void)state;
    struct fixture *f = fx_ready(2);
    assert_true(hvsim_signal(f->fg.sim, 1, 15, 64));
    assert_true(fg_event_flag(&f->fg, 1, 15, 64));
    assert_int_equal(irq_count(f), 1);
    /* Masked: flag set, no interrupt. */
    fg_wrmsr(&f->fg, 1, HV_MSR_SINT0 + 14, HV_SINT_MASKED | FG_SINT_VECTOR(14));
    assert_true(hvsim_signal(f->fg.sim, 1, 14, 0));
    assert_true(fg_event_flag(&f->fg, 1, 14, 0));
    assert_int_equal(irq_count(f), 1);
    /* Out of range. */
    assert_false(hvsim_signal(f->fg.sim, 2, 0, 0));
    assert_false(hvsim_signal(f->fg.sim, 0, 16, 0));
    assert_false(hvsim_signal(f->fg.sim, 0, 0, 2048));
}

static void test_post_bad_inputs(void **state)
{
    (void)state;
    struct fixture *f = fx_ready(2);
    uint8_t p[HV_MESSAGE_PAYLOAD_MAX] = { 0, 0 };
    assert_int_equal(fg_post_once(&f->fg, 0, HVSIM_CONN_ECHO, 1, p, 241), HV_STATUS_INVALID_PARAMETER);
    assert_int_equal(fg_post_once(&f->fg, 0, HVSIM_CONN_ECHO, 1, p, 0xffffffffu), HV_STATUS_INVALID_PARAMETER);
    assert_int_equal(fg_post_once(&f->fg, 0, HVSIM_CONN_ECHO, 0, p, 8), HV_STATUS_INVALID_PARAMETER);
    assert_int_equal(fg_post_once(&f->fg, 0, HVSIM_CONN_ECHO, 0x80000001u, p, 8), HV_STATUS_INVALID_PARAMETER);
    assert_int_equal(fg_post_once(&f->fg, 0, HVSIM_CONN_ECHO, HV_MESSAGE_TIMER_EXPIRED, p, 8),
                     HV_STATUS_INVALID_PARAMETER);
    assert_int_equal(fg_post_at(&f->fg, 0, FG_INPUT_GPA(0) + 4, HVSIM_CONN_ECHO, 1, p, 8), HV_STATUS_INVALID_ALIGNMENT);
    assert_int_equal(fg_post_at(&f->fg, 0, FG_INPUT_GPA(0) + 0xf08, HVSIM_CONN_ECHO, 1, p, 8),
                     HV_STATUS_INVALID_ALIGNMENT);
    assert_int_equal(HV_HYPERCALL_STATUS(hvsim_hypercall(f->fg.sim, 0, HV_CALL_POST_MESSAGE, RAM_SIZE, 0)),
                     HV_STATUS_INVALID_ALIGNMENT);
    assert_int_equal(HV_HYPERCALL_STATUS(hvsim_hypercall(f->fg.sim, 0, HV_CALL_POST_MESSAGE, ~0ull & ~7ull, 0)),
                     HV_STATUS_INVALID_ALIGNMENT);
    assert_int_equal(fg_post_once(&f->fg, 0, 0x4242, 1, p, 8), HV_STATUS_INVALID_CONNECTION_ID);
    assert_int_equal(fg_post_once(&f->fg, 0, HVSIM_CONN_EVENT_ECHO, 1, p, 8), HV_STATUS_INVALID_PORT_ID);
    /* The echo port checks its own payload. */
    assert_int_equal(fg_post_once(&f->fg, 0, HVSIM_CONN_ECHO, 1, p, 1), HV_STATUS_INVALID_PARAMETER);
    p[0] = 2;
    assert_int_equal(fg_post_once(&f->fg, 0, HVSIM_CONN_ECHO, 1, p, 8), HV_STATUS_INVALID_PARAMETER);
    p[0] = 1;
    p[1] = 16;
    assert_int_equal(fg_post_once(&f->fg, 0, HVSIM_CONN_ECHO, 1, p, 8), HV_STATUS_INVALID_PARAMETER);
    /* Control word: fast form, rep count, rep start, variable header, reserved bits, other codes. */
    struct hv_input_post_message in = { .connection_id = HVSIM_CONN_ECHO, .message_type = 1, .payload_size = 2 };
    memcpy(f->fg.ram + FG_INPUT_GPA(0), &in, sizeof in);
    const uint64_t bad_controls[] = { HV_CALL_POST_MESSAGE | HV_HYPERCALL_FAST, HV_CALL_POST_MESSAGE | 1ull << 32,
                                      HV_CALL_POST_MESSAGE | 1ull << 48,        HV_CALL_POST_MESSAGE | 1ull << 17,
                                      HV_CALL_POST_MESSAGE | 1ull << 27,        HV_CALL_POST_MESSAGE | 1ull << 44,
                                      HV_CALL_POST_MESSAGE | 1ull << 63 };
    for (size_t i = 0; i < sizeof bad_controls / sizeof bad_controls[0]; i++)
        assert_int_equal(HV_HYPERCALL_STATUS(hvsim_hypercall(f->fg.sim, 0, bad_controls[i], FG_INPUT_GPA(0), 0)),
                         HV_STATUS_INVALID_HYPERCALL_INPUT);
    assert_int_equal(HV_HYPERCALL_STATUS(hvsim_hypercall(f->fg.sim, 0, HV_CALL_SIGNAL_EVENT | 1ull << 32, 0, 0)),
                     HV_STATUS_INVALID_HYPERCALL_INPUT);
    const uint64_t unknown_codes[] = { 0x5e, 0x0, 0xc1, 0xc0, 0x8001, 0xffff };
    for (size_t i = 0; i < sizeof unknown_codes / sizeof unknown_codes[0]; i++)
        assert_int_equal(HV_HYPERCALL_STATUS(hvsim_hypercall(f->fg.sim, 0, unknown_codes[i], FG_INPUT_GPA(0), 0)),
                         HV_STATUS_INVALID_HYPERCALL_CODE);
    /* The same input with a clean control word works. */
    assert_int_equal(HV_HYPERCALL_STATUS(hvsim_hypercall(f->fg.sim, 0, HV_CALL_POST_MESSAGE, FG_INPUT_GPA(0), 0)),
                     HV_STATUS_SUCCESS);
    assert_int_equal(fg_slot_type(&f->fg, 0, 0), 1);
    /* A VP that does not exist. */
    assert_int_equal(HV_HYPERCALL_STATUS(hvsim_hypercall(f->fg.sim, 2, HV_CALL_POST_MESSAGE, FG_INPUT_GPA(0), 0)),
                     HV_STATUS_INVALID_PARAMETER);
}

static void test_denied_hypercall_privileges(void **state)
{
    (void)state;
    struct hvsim_config cfg = default_config(1);
    cfg.deny_privileges_high = HV_PRIV_POST_MESSAGES | HV_PRIV_SIGNAL_EVENTS;
    struct fixture *f = fx_ready_cfg(cfg);
    assert_int_equal(echo(f, 0, 0, 0, 1, 8), HV_STATUS_ACCESS_DENIED);
    assert_int_equal(fg_signal_fast(&f->fg, 0, HVSIM_CONN_EVENT_ECHO, 1), HV_STATUS_ACCESS_DENIED);
    /* ACCESS_DENIED comes before input checks. */
    assert_int_equal(HV_HYPERCALL_STATUS(hvsim_hypercall(f->fg.sim, 0, HV_CALL_POST_MESSAGE, 3, 0)),
                     HV_STATUS_ACCESS_DENIED);
}

static void test_transient_failures(void **state)
{
    (void)state;
    struct fixture *f = fx_ready(1);
    hvsim_fail_next_posts(f->fg.sim, 2, HV_STATUS_INSUFFICIENT_BUFFERS);
    assert_int_equal(echo(f, 0, 0, 0, 1, 8), HV_STATUS_INSUFFICIENT_BUFFERS);
    assert_int_equal(echo(f, 0, 0, 0, 1, 8), HV_STATUS_INSUFFICIENT_BUFFERS);
    assert_int_equal(fg_slot_type(&f->fg, 0, 0), HV_MESSAGE_NONE); /* the port never saw them */
    assert_int_equal(echo(f, 0, 0, 0, 1, 8), HV_STATUS_SUCCESS);
    fg_consume(&f->fg, 0, 0);
    hvsim_fail_next_posts(f->fg.sim, 1, HV_STATUS_INSUFFICIENT_MEMORY);
    /* Bad input keeps its own status and does not use up an injected failure. */
    assert_int_equal(echo(f, 0, 0, 0, 1, 300), HV_STATUS_INVALID_PARAMETER);
    assert_int_equal(echo(f, 0, 0, 0, 2, 8), HV_STATUS_INSUFFICIENT_MEMORY);
    assert_int_equal(echo(f, 0, 0, 0, 3, 8), HV_STATUS_SUCCESS);
    /* Signals are not affected. */
    hvsim_fail_next_posts(f->fg.sim, 5, HV_STATUS_INSUFFICIENT_BUFFERS);
    assert_int_equal(fg_signal_fast(&f->fg, 0, HVSIM_CONN_EVENT_ECHO, 1), HV_STATUS_SUCCESS);
    hvsim_fail_next_posts(f->fg.sim, 0, HV_STATUS_INSUFFICIENT_BUFFERS);
    fg_consume(&f->fg, 0, 0);
    assert_int_equal(echo(f, 0, 0, 0, 4, 8), HV_STATUS_SUCCESS);
    struct hvsim_stats s = stats(f);
    assert_int_equal(s.posts_ok, 3);
    assert_int_equal(s.posts_failed, 4);
}

struct port_calls {
    unsigned messages, events;
    uint32_t vp, connection_id, type, size, flag;
    uint8_t payload[HV_MESSAGE_PAYLOAD_MAX];
};

static uint16_t port_message(struct hvsim *sim, void *ctx, uint32_t vp, uint32_t connection_id, uint32_t type,
                             const void *payload, uint32_t size)
{
    struct port_calls *c = ctx;
    c->messages++;
    c->vp = vp;
    c->connection_id = connection_id;
    c->type = type;
    c->size = size;
    memcpy(c->payload, payload, size);
    /* Answer on the caller's SINT 9, as a VMBus server does. */
    return hvsim_post_locked(sim, vp, 9, 0x77, payload, size, false) ? HV_STATUS_SUCCESS
                                                                      : HV_STATUS_INSUFFICIENT_BUFFERS;
}

static uint16_t port_event(struct hvsim *sim, void *ctx, uint32_t vp, uint32_t connection_id, uint16_t flag)
{
    struct port_calls *c = ctx;
    c->events++;
    c->vp = vp;
    c->connection_id = connection_id;
    c->flag = flag;
    return hvsim_signal_locked(sim, vp, 3, flag + 1u) ? HV_STATUS_SUCCESS : HV_STATUS_INVALID_SYNIC_STATE;
}

static void test_registered_ports(void **state)
{
    (void)state;
    struct fixture *f = fx_ready(2);
    struct port_calls calls = { 0 };
    assert_true(hvsim_register_message_port(f->fg.sim, 0x2000, port_message, &calls));
    assert_true(hvsim_register_event_port(f->fg.sim, 0x2001, port_event, &calls));
    assert_false(hvsim_register_message_port(f->fg.sim, 0x2000, port_message, &calls));
    assert_false(hvsim_register_event_port(f->fg.sim, HVSIM_CONN_ECHO, port_event, &calls));
    assert_false(hvsim_register_message_port(f->fg.sim, 0x2002, NULL, &calls));
    uint8_t p[240];
    for (unsigned i = 0; i < sizeof p; i++)
        p[i] = (uint8_t)(255 - i);
    assert_int_equal(fg_post_once(&f->fg, 1, 0x2000, 0x1234, p, 240), HV_STATUS_SUCCESS);
    assert_int_equal(calls.messages, 1);
    assert_int_equal(calls.vp, 1);
    assert_int_equal(calls.connection_id, 0x2000);
    assert_int_equal(calls.type, 0x1234);
    assert_int_equal(calls.size, 240);
    assert_memory_equal(calls.payload, p, 240);
    assert_int_equal(fg_slot_type(&f->fg, 1, 9), 0x77);
    assert_memory_equal(fg_slot_payload(&f->fg, 1, 9), p, 240);
    assert_int_equal(fg_signal_fast(&f->fg, 0, 0x2001, 99), HV_STATUS_SUCCESS);
    assert_int_equal(calls.events, 1);
    assert_int_equal(calls.flag, 99);
    assert_true(fg_event_flag(&f->fg, 0, 3, 100));
    /* Kinds do not mix. */
    assert_int_equal(fg_post_once(&f->fg, 0, 0x2001, 1, p, 8), HV_STATUS_INVALID_PORT_ID);
    assert_int_equal(fg_signal_fast(&f->fg, 0, 0x2000, 1), HV_STATUS_INVALID_PORT_ID);
}

static void test_host_post_limits(void **state)
{
    (void)state;
    struct fixture *f = fx_ready(1);
    uint8_t p[256] = { 0 };
    assert_false(hvsim_post(f->fg.sim, 1, 0, 1, p, 8, false));
    assert_false(hvsim_post(f->fg.sim, 0, 16, 1, p, 8, false));
    assert_false(hvsim_post(f->fg.sim, 0, 0, 0, p, 8, false));
    assert_false(hvsim_post(f->fg.sim, 0, 0, 1, p, 241, false));
    assert_false(hvsim_post(f->fg.sim, 0, 0, 1, p, 256, true));
    assert_false(hvsim_post(f->fg.sim, 0, 0, 1, NULL, 8, false));
    assert_true(hvsim_post(f->fg.sim, 0, 0, 1, NULL, 0, false));
    assert_int_equal(fg_slot_size(&f->fg, 0, 0), 0);
    fg_consume(&f->fg, 0, 0);
    assert_true(hvsim_post(f->fg.sim, 0, 0, 1, p, 255, true));
    assert_int_equal(fg_slot_size(&f->fg, 0, 0), 255);
}

/* ---- control port ---- */

static void test_control_commands(void **state)
{
    (void)state;
    struct fixture *f = fx_ready(2);
    uint8_t extra[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
    /* BAD_SIZE: a VMBus message whose size field exceeds 240. */
    assert_int_equal(control(f, HVSIM_CTL_BAD_SIZE, 1, 2, 250, extra, sizeof extra), HV_STATUS_SUCCESS);
    assert_int_equal(fg_slot_type(&f->fg, 1, 2), HV_MESSAGE_VMBUS);
    assert_int_equal(fg_slot_size(&f->fg, 1, 2), 250);
    assert_memory_equal(fg_slot_payload(&f->fg, 1, 2), extra, sizeof extra);
    assert_int_equal(irq_count(f), 1);
    /* UNKNOWN_TYPE: the extra bytes as payload. */
    assert_int_equal(control(f, HVSIM_CTL_UNKNOWN_TYPE, 0, 3, 0x4321, extra, 5), HV_STATUS_SUCCESS);
    assert_int_equal(fg_slot_type(&f->fg, 0, 3), 0x4321);
    assert_int_equal(fg_slot_size(&f->fg, 0, 3), 5);
    assert_memory_equal(fg_slot_payload(&f->fg, 0, 3), extra, 5);
    /* STRAY_EVENT. */
    assert_int_equal(control(f, HVSIM_CTL_STRAY_EVENT, 1, 11, 1000, NULL, 0), HV_STATUS_SUCCESS);
    assert_true(fg_event_flag(&f->fg, 1, 11, 1000));
    assert_int_equal(irq_at(f, irq_count(f) - 1).vector, FG_SINT_VECTOR(11));
    /* FAIL_POSTS: the next posts fail with INSUFFICIENT_BUFFERS. */
    assert_int_equal(control(f, HVSIM_CTL_FAIL_POSTS, 0, 0, 2, NULL, 0), HV_STATUS_SUCCESS);
    assert_int_equal(echo(f, 0, 0, 5, 1, 8), HV_STATUS_INSUFFICIENT_BUFFERS);
    assert_int_equal(echo(f, 0, 0, 5, 1, 8), HV_STATUS_INSUFFICIENT_BUFFERS);
    assert_int_equal(echo(f, 0, 0, 5, 1, 8), HV_STATUS_SUCCESS);
    /* TSC_UNSETTLED on and off (behaviour in test_tsc_unsettled). */
    assert_int_equal(control(f, HVSIM_CTL_TSC_UNSETTLED, 0, 0, 1, NULL, 0), HV_STATUS_SUCCESS);
    assert_int_equal(control(f, HVSIM_CTL_TSC_UNSETTLED, 0, 0, 0, NULL, 0), HV_STATUS_SUCCESS);
    /* Bad commands. */
    assert_int_equal(control(f, HVSIM_CTL_STRAY_EVENT, 2, 0, 1, NULL, 0), HV_STATUS_INVALID_PARAMETER);
    assert_int_equal(control(f, HVSIM_CTL_STRAY_EVENT, 0, 16, 1, NULL, 0), HV_STATUS_INVALID_PARAMETER);
    assert_int_equal(control(f, HVSIM_CTL_STRAY_EVENT, 0, 0, 2048, NULL, 0), HV_STATUS_INVALID_PARAMETER);
    assert_int_equal(control(f, HVSIM_CTL_BAD_SIZE, 0, 0, 256, NULL, 0), HV_STATUS_INVALID_PARAMETER);
    assert_int_equal(control(f, HVSIM_CTL_UNKNOWN_TYPE, 0, 0, 0, NULL, 0), HV_STATUS_INVALID_PARAMETER);
    assert_int_equal(control(f, HVSIM_CTL_TSC_UNSETTLED, 0, 0, 2, NULL, 0), HV_STATUS_INVALID_PARAMETER);
    assert_int_equal(control(f, 0, 0, 0, 0, NULL, 0), HV_STATUS_INVALID_PARAMETER);
    assert_int_equal(control(f, 99, 0, 0, 0, NULL, 0), HV_STATUS_INVALID_PARAMETER);
    uint32_t short_cmd[3] = { HVSIM_CTL_FAIL_POSTS, 0, 0 };
    assert_int_equal(fg_post_once(&f->fg, 0, HVSIM_CONN_CONTROL, 1, short_cmd, sizeof short_cmd),
                     HV_STATUS_INVALID_PARAMETER);
    /* A stray event into a disabled SIEF page cannot land. */
    fg_wrmsr(&f->fg, 1, HV_MSR_SIEFP, 0);
    assert_int_equal(control(f, HVSIM_CTL_STRAY_EVENT, 1, 0, 1, NULL, 0), HV_STATUS_INVALID_SYNIC_STATE);
    assert_true(reports_matching(&f->fg.logs, "control command") >= 1);
}

/* ---- synthetic timers ---- */

static uint64_t stimer_config(uint32_t n, bool direct, uint32_t vector_or_sint, bool periodic, bool enable)
{
    (void)n;
    uint64_t c = enable ? HV_STIMER_ENABLE : 0;
    if (periodic)
        c |= HV_STIMER_PERIODIC;
    if (direct)
        c |= HV_STIMER_DIRECT | (uint64_t)vector_or_sint << HV_STIMER_VECTOR_SHIFT;
    else
        c |= (uint64_t)vector_or_sint << HV_STIMER_SINT_SHIFT;
    return c;
}

static void test_stimer_direct_oneshot(void **state)
{
    (void)state;
    struct fixture *f = fx_new(2);
    assert_int_equal(hvsim_run_timers(f->fg.sim), UINT64_MAX);
    fg_wrmsr(&f->fg, 1, HV_MSR_STIMER0_CONFIG + 4, stimer_config(2, true, 0xe0, false, true));
    assert_int_equal(hvsim_run_timers(f->fg.sim), UINT64_MAX); /* COUNT 0: not armed */
    uint64_t due = fg_rdmsr(&f->fg, 1, HV_MSR_TIME_REF_COUNT);
    fg_wrmsr(&f->fg, 1, HV_MSR_STIMER0_COUNT + 4, due); /* already due */
    hvsim_run_timers(f->fg.sim);
    assert_int_equal(irq_count(f), 1);
    assert_int_equal(irq_at(f, 0).vp, 1);
    assert_int_equal(irq_at(f, 0).vector, 0xe0);
    /* A one-shot disables itself. */
    assert_int_equal(fg_rdmsr(&f->fg, 1, HV_MSR_STIMER0_CONFIG + 4) & HV_STIMER_ENABLE, 0);
    assert_int_equal(hvsim_run_timers(f->fg.sim), UINT64_MAX);
    assert_int_equal(irq_count(f), 1);
    /* One far in the future is reported as the next due time and does not fire. */
    uint64_t later = fg_rdmsr(&f->fg, 0, HV_MSR_TIME_REF_COUNT) + 600000000ull;
    fg_wrmsr(&f->fg, 0, HV_MSR_STIMER0_CONFIG, stimer_config(0, true, 0x41, false, true));
    fg_wrmsr(&f->fg, 0, HV_MSR_STIMER0_COUNT, later);
    assert_int_equal(hvsim_run_timers(f->fg.sim), later);
    assert_int_equal(irq_count(f), 1);
    assert_int_equal(stats(f).timer_expiries, 1);
}

static void test_stimer_message_mode(void **state)
{
    (void)state;
    struct fixture *f = fx_ready(1);
    sleep_us(1000); /* reference time starts at 0: let it pass `due` below */
    fg_wrmsr(&f->fg, 0, HV_MSR_STIMER0_CONFIG + 6, stimer_config(3, false, 4, false, true));
    uint64_t due = fg_rdmsr(&f->fg, 0, HV_MSR_TIME_REF_COUNT) - 5;
    fg_wrmsr(&f->fg, 0, HV_MSR_STIMER0_COUNT + 6, due);
    hvsim_run_timers(f->fg.sim);
    assert_int_equal(fg_slot_type(&f->fg, 0, 4), HV_MESSAGE_TIMER_EXPIRED);
    assert_int_equal(fg_slot_size(&f->fg, 0, 4), sizeof(struct hv_timer_message_payload));
    struct hv_timer_message_payload p;
    memcpy(&p, fg_slot_payload(&f->fg, 0, 4), sizeof p);
    assert_int_equal(p.timer_index, 3);
    assert_int_equal(p.expiration_time, due);
    assert_true(p.delivery_time >= due + 5);
    assert_true(p.delivery_time <= fg_rdmsr(&f->fg, 0, HV_MSR_TIME_REF_COUNT));
    assert_int_equal(irq_count(f), 1);
    assert_int_equal(irq_at(f, 0).vector, FG_SINT_VECTOR(4));
}

static void test_stimer_sint0_disables(void **state)
{
    (void)state;
    struct fixture *f = fx_ready(1);
    fg_wrmsr(&f->fg, 0, HV_MSR_STIMER0_CONFIG, stimer_config(0, false, 0, false, true));
    assert_int_equal(fg_rdmsr(&f->fg, 0, HV_MSR_STIMER0_CONFIG) & HV_STIMER_ENABLE, 0);
    /* Also through auto-enable. */
    fg_wrmsr(&f->fg, 0, HV_MSR_STIMER0_CONFIG, HV_STIMER_AUTO_ENABLE);
    fg_wrmsr(&f->fg, 0, HV_MSR_STIMER0_COUNT, 1);
    assert_int_equal(fg_rdmsr(&f->fg, 0, HV_MSR_STIMER0_CONFIG) & HV_STIMER_ENABLE, 0);
    hvsim_run_timers(f->fg.sim);
    assert_int_equal(irq_count(f), 0);
    /* Direct mode may use any SINT field. */
    fg_wrmsr(&f->fg, 0, HV_MSR_STIMER0_CONFIG, stimer_config(0, true, 0x50, false, true));
    assert_true(fg_rdmsr(&f->fg, 0, HV_MSR_STIMER0_CONFIG) & HV_STIMER_ENABLE);
}

static void test_stimer_auto_enable(void **state)
{
    (void)state;
    struct fixture *f = fx_new(1);
    uint64_t cfg = stimer_config(1, true, 0x61, false, false) | HV_STIMER_AUTO_ENABLE;
    fg_wrmsr(&f->fg, 0, HV_MSR_STIMER0_CONFIG + 2, cfg);
    assert_int_equal(fg_rdmsr(&f->fg, 0, HV_MSR_STIMER0_CONFIG + 2), cfg);
    fg_wrmsr(&f->fg, 0, HV_MSR_STIMER0_COUNT + 2, 1); /* non-zero: enables; long past: fires now */
    assert_int_equal(fg_rdmsr(&f->fg, 0, HV_MSR_STIMER0_CONFIG + 2), cfg | HV_STIMER_ENABLE);
    hvsim_run_timers(f->fg.sim);
    assert_int_equal(irq_count(f), 1);
    assert_int_equal(irq_at(f, 0).vector, 0x61);
    /* Without auto-enable, COUNT alone arms nothing. */
    fg_wrmsr(&f->fg, 0, HV_MSR_STIMER0_CONFIG + 2, stimer_config(1, true, 0x61, false, false));
    fg_wrmsr(&f->fg, 0, HV_MSR_STIMER0_COUNT + 2, 1);
    hvsim_run_timers(f->fg.sim);
    assert_int_equal(irq_count(f), 1);
}

static void test_stimer_periodic_and_count0(void **state)
{
    (void)state;
    struct fixture *f = fx_new(1);
    fg_wrmsr(&f->fg, 0, HV_MSR_STIMER0_CONFIG, stimer_config(0, true, 0x70, true, true));
    fg_wrmsr(&f->fg, 0, HV_MSR_STIMER0_COUNT, 1000); /* 100 us period */
    int64_t deadline = now_ns() + 3000000000ll;
    while (irq_count(f) < 10 && now_ns() < deadline) {
        hvsim_run_timers(f->fg.sim);
        sleep_us(50);
    }
    assert_true(irq_count(f) >= 10);
    assert_true(fg_rdmsr(&f->fg, 0, HV_MSR_STIMER0_CONFIG) & HV_STIMER_ENABLE); /* periodic stays enabled */
    /* The next due time is within one period of now. */
    uint64_t next = hvsim_run_timers(f->fg.sim), now = hvsim_ref_time(f->fg.sim);
    assert_true(next <= now + 1000);
    /* COUNT 0 stops and disables it. */
    fg_wrmsr(&f->fg, 0, HV_MSR_STIMER0_COUNT, 0);
    assert_int_equal(fg_rdmsr(&f->fg, 0, HV_MSR_STIMER0_CONFIG) & HV_STIMER_ENABLE, 0);
    unsigned n = irq_count(f);
    sleep_us(1000);
    assert_int_equal(hvsim_run_timers(f->fg.sim), UINT64_MAX);
    assert_int_equal(irq_count(f), n);
}

/* A timer owns one message buffer: while its message waits, further expirations are skipped. */
static void test_stimer_messages_do_not_pile_up(void **state)
{
    (void)state;
    struct hvsim_config cfg = default_config(1);
    cfg.queue_depth = 4;
    struct fixture *f = fx_new_cfg(cfg);
    fg_enable_synic(&f->fg, 0);
    fg_wrmsr(&f->fg, 0, HV_MSR_STIMER0_CONFIG, stimer_config(0, false, 2, true, true));
    fg_wrmsr(&f->fg, 0, HV_MSR_STIMER0_COUNT, 500);
    int64_t deadline = now_ns() + 3000000000ll;
    while (stats(f).timer_expiries < 20 && now_ns() < deadline) {
        hvsim_run_timers(f->fg.sim);
        sleep_us(60);
    }
    struct hvsim_stats s = stats(f);
    assert_true(s.timer_expiries >= 20);
    assert_int_equal(s.messages_delivered, 1); /* the slot was never freed */
    assert_int_equal(s.messages_queued, 1);    /* one waiting behind it, the rest skipped */
    assert_int_equal(reports_matching(&f->fg.logs, "dropped"), 0);
    /* Consuming lets the waiting one in; expiration times are whole periods apart. */
    struct hv_timer_message_payload first, second;
    memcpy(&first, fg_slot_payload(&f->fg, 0, 2), sizeof first);
    fg_consume(&f->fg, 0, 2);
    assert_int_equal(fg_slot_type(&f->fg, 0, 2), HV_MESSAGE_TIMER_EXPIRED);
    memcpy(&second, fg_slot_payload(&f->fg, 0, 2), sizeof second);
    assert_true(second.expiration_time > first.expiration_time);
    assert_true(second.delivery_time >= second.expiration_time);
}

static void test_stimer_thread_oneshot_on_time(void **state)
{
    (void)state;
    struct fixture *f = fx_ready(1);
    assert_true(hvsim_start_timer_thread(f->fg.sim));
    assert_true(hvsim_start_timer_thread(f->fg.sim)); /* already running: fine */
    fg_wrmsr(&f->fg, 0, HV_MSR_STIMER0_CONFIG + 2, stimer_config(1, true, 0x90, false, true));
    int64_t armed = now_ns();
    uint64_t due = fg_rdmsr(&f->fg, 0, HV_MSR_TIME_REF_COUNT) + 200000; /* 20 ms */
    fg_wrmsr(&f->fg, 0, HV_MSR_STIMER0_COUNT + 2, due);
    assert_int_equal(fg_wait_count(&f->fg, &f->irq_count, 1, 3000), 1);
    struct irq r = irq_at(f, 0);
    assert_int_equal(r.vector, 0x90);
    int64_t after_ms = (r.when_ns - armed) / 1000000;
    if (r.when_ns - armed < 19000000 || after_ms >= 2000) /* never early (1 ms slack: TSC vs clock) */
        fail_msg("a 20 ms timer fired after %lld ms", (long long)after_ms);
    /* Message mode through the thread too. */
    fg_wrmsr(&f->fg, 0, HV_MSR_STIMER0_CONFIG + 4, stimer_config(2, false, 8, false, true));
    fg_wrmsr(&f->fg, 0, HV_MSR_STIMER0_COUNT + 4, fg_rdmsr(&f->fg, 0, HV_MSR_TIME_REF_COUNT) + 50000);
    assert_int_equal(fg_wait_count(&f->fg, &f->irq_count, 2, 2000), 2);
    assert_int_equal(fg_slot_type(&f->fg, 0, 8), HV_MESSAGE_TIMER_EXPIRED);
    assert_true(hvsim_ref_time(f->fg.sim) >= fg_rdmsr(&f->fg, 0, HV_MSR_STIMER0_COUNT + 4));
}

static void test_stimer_thread_periodic(void **state)
{
    (void)state;
    struct fixture *f = fx_new(2);
    assert_true(hvsim_start_timer_thread(f->fg.sim));
    /* Re-arming wakes a thread that is waiting with nothing to do. */
    sleep_us(2000);
    fg_wrmsr(&f->fg, 1, HV_MSR_STIMER0_CONFIG, stimer_config(0, true, 0x91, true, true));
    int64_t start = now_ns();
    fg_wrmsr(&f->fg, 1, HV_MSR_STIMER0_COUNT, 20000); /* 2 ms */
    assert_true(fg_wait_count(&f->fg, &f->irq_count, 10, 3000) >= 10);
    int64_t took = irq_at(f, 9).when_ns - start;
    assert_true(took >= 19000000); /* ten periods, none early */
    assert_true(took < 2000000000);
    fg_wrmsr(&f->fg, 1, HV_MSR_STIMER0_COUNT, 0);
    unsigned n = irq_count(f);
    sleep_us(10000);
    assert_true(irq_count(f) <= n + 1); /* at most one that was already firing */
}

/* ---- reference time ---- */

struct tsc_page_view {
    uint32_t sequence;
    uint64_t scale;
    int64_t offset;
};

static struct tsc_page_view read_tsc_page(struct fixture *f)
{
    uint8_t *p = f->fg.ram + TSC_PAGE_GPA;
    struct tsc_page_view v;
    v.sequence = __atomic_load_n((uint32_t *)(p + offsetof(struct hv_reference_tsc_page, tsc_sequence)),
                                 __ATOMIC_ACQUIRE);
    v.scale = __atomic_load_n((uint64_t *)(p + offsetof(struct hv_reference_tsc_page, tsc_scale)), __ATOMIC_RELAXED);
    v.offset = __atomic_load_n((int64_t *)(p + offsetof(struct hv_reference_tsc_page, tsc_offset)), __ATOMIC_RELAXED);
    return v;
}

static uint64_t page_time(const struct tsc_page_view *v, uint64_t tsc)
{
    return (uint64_t)(((unsigned __int128)tsc * v->scale) >> 64) + (uint64_t)v->offset;
}

static void test_ref_time_monotonic_and_rate(void **state)
{
    (void)state;
    struct fixture *f = fx_new(2);
    uint64_t prev = fg_rdmsr(&f->fg, 0, HV_MSR_TIME_REF_COUNT);
    assert_true(prev < 10000000); /* counts from creation: well under a second */
    for (int i = 0; i < 20000; i++) {
        uint64_t t = fg_rdmsr(&f->fg, (uint32_t)i & 1, HV_MSR_TIME_REF_COUNT);
        assert_true(t >= prev);
        prev = t;
    }
    uint64_t a = hvsim_ref_time(f->fg.sim);
    int64_t t0 = now_ns();
    sleep_us(20000);
    uint64_t b = hvsim_ref_time(f->fg.sim);
    int64_t elapsed_100ns = (now_ns() - t0) / 100;
    /* The rate matches the monotonic clock to 5% (calibration over 20 ms). */
    assert_true((int64_t)(b - a) > elapsed_100ns * 95 / 100);
    assert_true((int64_t)(b - a) < elapsed_100ns * 105 / 100 + 2000);
}

static void test_tsc_page_agrees_with_msr(void **state)
{
    (void)state;
    struct fixture *f = fx_new(1);
    fg_wrmsr(&f->fg, 0, HV_MSR_REFERENCE_TSC, TSC_PAGE_GPA | HV_PAGE_ENABLE);
    assert_int_equal(fg_rdmsr(&f->fg, 0, HV_MSR_REFERENCE_TSC), TSC_PAGE_GPA | HV_PAGE_ENABLE);
    struct tsc_page_view v = read_tsc_page(f);
    assert_int_not_equal(v.sequence, 0);
    uint64_t hz = fg_rdmsr(&f->fg, 0, HV_MSR_TSC_FREQUENCY);
    assert_int_equal(v.scale, (uint64_t)(((unsigned __int128)HV_REF_TIME_HZ << 64) / hz));
    for (int i = 0; i < 1000; i++) {
        uint64_t before = page_time(&v, hvsim_host_tsc()); /* delta 0: guest TSC = host TSC */
        uint64_t msr = fg_rdmsr(&f->fg, 0, HV_MSR_TIME_REF_COUNT);
        uint64_t after = page_time(&v, hvsim_host_tsc());
        assert_true(before <= msr + 1);
        assert_true(msr <= after + 1);
    }
    /* Re-enabling rewrites the page with a new sequence. */
    fg_wrmsr(&f->fg, 0, HV_MSR_REFERENCE_TSC, TSC_PAGE_GPA | 0x10 | HV_PAGE_ENABLE);
    struct tsc_page_view w = read_tsc_page(f);
    assert_int_not_equal(w.sequence, 0);
    assert_int_not_equal(w.sequence, v.sequence);
    /* Disabled: no longer written. */
    fg_wrmsr(&f->fg, 0, HV_MSR_REFERENCE_TSC, TSC_PAGE_GPA);
    memset(f->fg.ram + TSC_PAGE_GPA, 0, 64);
    hvsim_set_guest_tsc_delta(f->fg.sim, 5);
    assert_int_equal(read_tsc_page(f).sequence, 0);
    /* Outside RAM: accepted (the TLFS: "not accessible"), logged, nothing written. */
    fg_wrmsr(&f->fg, 0, HV_MSR_REFERENCE_TSC, (uint64_t)RAM_SIZE | HV_PAGE_ENABLE);
    assert_true(reports_matching(&f->fg.logs, "reference TSC page", "outside guest RAM") == 1);
}

static void test_tsc_delta_moves_the_page(void **state)
{
    (void)state;
    struct hvsim_config cfg = default_config(1);
    cfg.guest_tsc_delta = -1000000;
    struct fixture *f = fx_new_cfg(cfg);
    fg_wrmsr(&f->fg, 0, HV_MSR_REFERENCE_TSC, TSC_PAGE_GPA | HV_PAGE_ENABLE);
    const int64_t deltas[] = { -1000000, 123456789012ll, 0 };
    uint32_t last_seq = 0;
    for (size_t k = 0; k < sizeof deltas / sizeof deltas[0]; k++) {
        if (k)
            hvsim_set_guest_tsc_delta(f->fg.sim, deltas[k]);
        struct tsc_page_view v = read_tsc_page(f);
        assert_int_not_equal(v.sequence, 0);
        assert_int_not_equal(v.sequence, last_seq);
        last_seq = v.sequence;
        uint64_t before = page_time(&v, hvsim_host_tsc() + (uint64_t)deltas[k]);
        uint64_t msr = fg_rdmsr(&f->fg, 0, HV_MSR_TIME_REF_COUNT);
        uint64_t after = page_time(&v, hvsim_host_tsc() + (uint64_t)deltas[k]);
        assert_true(before <= msr + 1 && msr <= after + 1);
        /* Reference time itself does not jump with the delta. */
        assert_true(msr < 10000000);
    }
}

static void test_no_reference_tsc_leaves_sequence_zero(void **state)
{
    (void)state;
    struct hvsim_config cfg = default_config(1);
    cfg.no_reference_tsc = true;
    struct fixture *f = fx_new_cfg(cfg);
    fg_wrmsr(&f->fg, 0, HV_MSR_REFERENCE_TSC, TSC_PAGE_GPA | HV_PAGE_ENABLE);
    assert_int_equal(read_tsc_page(f).sequence, 0);
    hvsim_set_guest_tsc_delta(f->fg.sim, 77);
    hvsim_set_tsc_unsettled(f->fg.sim, true);
    hvsim_run_timers(f->fg.sim);
    assert_int_equal(read_tsc_page(f).sequence, 0);
    assert_true(fg_rdmsr(&f->fg, 0, HV_MSR_TIME_REF_COUNT) > 0); /* the MSR still works */
}

/* Distinct non-zero sequences seen within `us` microseconds (stops at `enough`). */
static unsigned sequences_seen(struct fixture *f, long us, unsigned enough)
{
    uint32_t seen[64];
    unsigned n = 0;
    int64_t end = now_ns() + us * 1000;
    while (now_ns() < end && n < enough) {
        uint32_t s = read_tsc_page(f).sequence;
        if (s && (n == 0 || seen[n - 1] != s))
            seen[n++] = s;
        sleep_us(20);
    }
    return n;
}

static void test_tsc_unsettled(void **state)
{
    (void)state;
    struct fixture *f = fx_new(1);
    fg_wrmsr(&f->fg, 0, HV_MSR_REFERENCE_TSC, TSC_PAGE_GPA | HV_PAGE_ENABLE);
    assert_true(hvsim_start_timer_thread(f->fg.sim));
    assert_int_equal(sequences_seen(f, 3000, 64), 1);
    hvsim_set_tsc_unsettled(f->fg.sim, true);
    assert_int_equal(sequences_seen(f, 2000000, 5), 5); /* every 100 us: 5 within 2 s even when loaded */
    hvsim_set_tsc_unsettled(f->fg.sim, false);
    struct tsc_page_view v = read_tsc_page(f);
    assert_int_not_equal(v.sequence, 0);
    assert_int_equal(sequences_seen(f, 3000, 64), 1);
    assert_int_equal(read_tsc_page(f).sequence, v.sequence);
    uint64_t before = page_time(&v, hvsim_host_tsc()), msr = fg_rdmsr(&f->fg, 0, HV_MSR_TIME_REF_COUNT);
    assert_true(before <= msr + 1);
    /* Through the control port as well, without the thread: hvsim_run_timers ticks it. */
    fg_teardown(NULL);
    f = fx_ready(1);
    fg_wrmsr(&f->fg, 0, HV_MSR_REFERENCE_TSC, TSC_PAGE_GPA | HV_PAGE_ENABLE);
    uint32_t s0 = read_tsc_page(f).sequence;
    assert_int_equal(control(f, HVSIM_CTL_TSC_UNSETTLED, 0, 0, 1, NULL, 0), HV_STATUS_SUCCESS);
    hvsim_run_timers(f->fg.sim);
    uint32_t s1 = read_tsc_page(f).sequence;
    sleep_us(300);
    hvsim_run_timers(f->fg.sim);
    uint32_t s2 = read_tsc_page(f).sequence;
    assert_true(s1 != s0 && s2 != s1 && s1 && s2);
}

/* ---- statistics and logging ---- */

static void test_stats_and_verbose_log(void **state)
{
    (void)state;
    struct hvsim_config cfg = default_config(1);
    cfg.verbosity = 1;
    struct fixture *f = fx_ready_cfg(cfg);
    assert_int_equal(echo(f, 0, 0, 1, 1, 8), HV_STATUS_SUCCESS);
    assert_int_equal(echo(f, 0, 0, 1, 2, 8), HV_STATUS_SUCCESS);
    fg_consume(&f->fg, 0, 1);
    assert_int_equal(fg_signal_fast(&f->fg, 0, HVSIM_CONN_EVENT_ECHO + 1, 3), HV_STATUS_SUCCESS);
    uint64_t v;
    assert_false(hvsim_rdmsr(f->fg.sim, 0, 0x40000200u, &v));
    struct hvsim_stats s = stats(f);
    assert_int_equal(s.hypercalls, 3);
    assert_int_equal(s.posts_ok, 2);
    assert_int_equal(s.posts_failed, 0);
    assert_int_equal(s.signals, 1);
    assert_int_equal(s.messages_delivered, 2);
    assert_int_equal(s.messages_queued, 1);
    assert_int_equal(s.eoms, 1);
    assert_int_equal(s.interrupts_raised, 3);
    assert_int_equal(s.timer_expiries, 0);
    assert_int_equal(s.msr_faults, 1);
    /* Verbose: messages and MSR writes are logged, every line with the prefix. */
    assert_true(reports_matching(&f->fg.logs, "vp0 sint1: message type 0x1 size 8 delivered") == 2);
    assert_true(reports_matching(&f->fg.logs, "wrmsr SCONTROL = 0x1") == 1);
    for (unsigned i = 0; i < f->fg.logs.count && i < REPORT_KEEP; i++)
        assert_true(strncmp(f->fg.logs.msg[i], "hvsim: ", 7) == 0);
}

/* ---- concurrency: guest VPs on threads, the timer thread running (for TSan) ---- */

#define STRESS_VPS 4
#define STRESS_MESSAGES 400

struct stress {
    struct fixture *f;
    uint32_t vp;
    unsigned received[STRESS_VPS]; /* next expected sequence number per sender */
    unsigned retries;
    char error[128]; /* cmocka's assertions belong to the main thread: failures are reported here */
};

/* Takes the message in the VP's SINT 0 slot if there is one; checks per-sender order. */
static bool stress_receive(struct stress *st)
{
    struct fixture *f = st->f;
    if (fg_slot_type(&f->fg, st->vp, 0) == HV_MESSAGE_NONE)
        return false;
    uint32_t tag = slot_tag(f, st->vp, 0);
    uint32_t sender = tag >> 16, seq = tag & 0xffff;
    if (sender >= STRESS_VPS || seq != st->received[sender]) {
        snprintf(st->error, sizeof st->error, "vp%u: from vp%u got %u, expected %u", st->vp, sender, seq,
                 sender < STRESS_VPS ? st->received[sender] : 0);
        return false;
    }
    st->received[sender]++;
    if (fg_slot_free(&f->fg, st->vp, 0))
        hvsim_wrmsr(f->fg.sim, st->vp, HV_MSR_EOM, 0);
    return true;
}

static void *stress_vp(void *arg)
{
    struct stress *st = arg;
    struct fixture *f = st->f;
    uint32_t target = (st->vp + 1) % STRESS_VPS;
    unsigned sent = 0, expected_in = STRESS_MESSAGES;
    int64_t deadline = now_ns() + 20000000000ll;
    while ((sent < STRESS_MESSAGES || st->received[(st->vp + STRESS_VPS - 1) % STRESS_VPS] < expected_in) &&
           now_ns() < deadline && !st->error[0]) {
        if (sent < STRESS_MESSAGES) {
            uint8_t p[8] = { (uint8_t)target, 0 };
            uint32_t tag = st->vp << 16 | sent;
            memcpy(p + 2, &tag, sizeof tag);
            uint16_t status = fg_post_once(&f->fg, st->vp, HVSIM_CONN_ECHO, 1, p, sizeof p);
            if (status == HV_STATUS_SUCCESS)
                sent++;
            else if (status == HV_STATUS_INSUFFICIENT_BUFFERS)
                st->retries++;
            else
                snprintf(st->error, sizeof st->error, "vp%u: post status 0x%x", st->vp, status);
        }
        while (stress_receive(st))
            ;
        /* Event flags and MSR reads in between, as a busy guest would. */
        fg_signal_fast(&f->fg, st->vp, HVSIM_CONN_EVENT_ECHO + 1, (uint16_t)(sent % 2048));
        __atomic_fetch_and((uint64_t *)(f->fg.ram + FG_SIEFP_GPA(st->vp) + 256) + (sent % 2048) / 64, 0,
                           __ATOMIC_SEQ_CST);
        uint64_t v;
        hvsim_rdmsr(f->fg.sim, st->vp, HV_MSR_TIME_REF_COUNT, &v);
    }
    return NULL;
}

static void test_concurrent_vps_with_timer_thread(void **state)
{
    (void)state;
    struct fixture *f = fx_ready(STRESS_VPS);
    assert_true(hvsim_start_timer_thread(f->fg.sim));
    fg_wrmsr(&f->fg, 0, HV_MSR_REFERENCE_TSC, TSC_PAGE_GPA | HV_PAGE_ENABLE);
    hvsim_set_tsc_unsettled(f->fg.sim, true);
    for (uint32_t v = 0; v < STRESS_VPS; v++) { /* a periodic timer per VP: direct and message mode */
        fg_wrmsr(&f->fg, v, HV_MSR_STIMER0_CONFIG, stimer_config(0, true, 0xd0, true, true));
        fg_wrmsr(&f->fg, v, HV_MSR_STIMER0_COUNT, 2000);
        fg_wrmsr(&f->fg, v, HV_MSR_STIMER0_CONFIG + 2, stimer_config(1, false, 5, true, true));
        fg_wrmsr(&f->fg, v, HV_MSR_STIMER0_COUNT + 2, 3000);
    }
    struct stress st[STRESS_VPS];
    pthread_t t[STRESS_VPS];
    for (uint32_t v = 0; v < STRESS_VPS; v++) {
        st[v] = (struct stress){ .f = f, .vp = v };
        assert_int_equal(pthread_create(&t[v], NULL, stress_vp, &st[v]), 0);
    }
    for (uint32_t v = 0; v < STRESS_VPS; v++)
        pthread_join(t[v], NULL);
    for (uint32_t v = 0; v < STRESS_VPS; v++) {
        if (st[v].error[0])
            fail_msg("%s", st[v].error);
        assert_int_equal(st[v].received[(v + STRESS_VPS - 1) % STRESS_VPS], STRESS_MESSAGES);
    }
    struct hvsim_stats s = stats(f);
    assert_int_equal(s.posts_ok, STRESS_VPS * STRESS_MESSAGES);
    assert_true(s.timer_expiries > 0);
}

/* ---- doorbell: parser ---- */

static size_t hello_frame(uint8_t *out, uint64_t gpa)
{
    out[0] = 'H';
    out[1] = 'V';
    out[2] = 'S';
    out[3] = '1';
    for (int i = 0; i < 8; i++)
        out[4 + i] = (uint8_t)(gpa >> (8 * i));
    out[12] = simdb_checksum(out, 12);
    return SIMDB_HELLO_LEN;
}

static void test_parser_frames(void **state)
{
    (void)state;
    uint8_t b[256];
    size_t n = hello_frame(b, 0x12345000);
    struct simdb_events e = simdb_events_parse(b, n, n);
    assert_int_equal(e.n, 1);
    assert_int_equal(e.ev[0], 0x12345000);
    /* Firmware text, then KICKs around a frame whose GPA holds KICK bytes: those are not KICKs. */
    n = 0;
    const char *text = "BdsDxe: loading Boot0001 \"UEFI QEMU HARDDISK\"\r\nHVS0 H HV\n";
    memcpy(b, text, strlen(text));
    n += strlen(text);
    b[n++] = SIMDB_KICK;
    n += hello_frame(b + n, 0xa5a5a5a5a5a5a000ull);
    b[n++] = SIMDB_KICK;
    b[n++] = SIMDB_KICK;
    e = simdb_events_parse(b, n, n);
    assert_int_equal(e.n, 4);
    assert_int_equal(e.ev[0], KICK_EVENT);
    assert_int_equal(e.ev[1], 0xa5a5a5a5a5a5a000ull);
    assert_int_equal(e.ev[2], KICK_EVENT);
    assert_int_equal(e.ev[3], KICK_EVENT);
    /* Byte by byte: the same. */
    struct simdb_events e1 = simdb_events_parse(b, n, 1);
    assert_int_equal(e1.n, e.n);
    assert_memory_equal(e1.ev, e.ev, e.n * sizeof e.ev[0]);
}

static void test_parser_bad_checksum_and_resync(void **state)
{
    (void)state;
    uint8_t b[256];
    /* A bad checksum: no HELLO; the KICK inside its GPA bytes counts once the frame is dropped. */
    size_t n = hello_frame(b, 0x1000);
    b[6] = SIMDB_KICK;
    struct simdb_events e = simdb_events_parse(b, n, n);
    assert_int_equal(e.n, 1);
    assert_int_equal(e.ev[0], KICK_EVENT);
    /* A truncated frame ("HVS1" and 3 bytes) runs into a real one: the real one is found. */
    n = hello_frame(b, 0x7000);
    memmove(b + 7, b, n);
    memcpy(b, "HVS1abc", 7);
    n += 7;
    e = simdb_events_parse(b, n, n);
    assert_int_equal(e.n, 1);
    assert_int_equal(e.ev[0], 0x7000);
    /* The same split in every possible place. */
    for (size_t chunk = 1; chunk < n; chunk++) {
        e = simdb_events_parse(b, n, chunk);
        assert_int_equal(e.n, 1);
        assert_int_equal(e.ev[0], 0x7000);
    }
    /* An 'H' inside a bad frame's GPA starts a real frame. */
    uint8_t frame[SIMDB_HELLO_LEN];
    hello_frame(frame, 0x9000);
    memcpy(b, "HVS1xx", 6);
    memcpy(b + 6, frame, sizeof frame);
    e = simdb_events_parse(b, 6 + sizeof frame, 6 + sizeof frame);
    assert_int_equal(e.n, 1);
    assert_int_equal(e.ev[0], 0x9000);
    /* A frame cut short stays pending until more bytes come. */
    hello_frame(b, 0x3000);
    struct simdb_events none = simdb_events_parse(b, 12, 12);
    assert_int_equal(none.n, 0);
}

static void test_parser_matches_reference(void **state)
{
    (void)state;
    struct rng r;
    rng_seed(&r, 0x5eed);
    static const uint8_t alphabet[] = { 'H', 'V', 'S', '1', SIMDB_KICK, 0x00, 'x', 0xff };
    for (int round = 0; round < 3000; round++) {
        uint8_t b[200];
        size_t n = (size_t)rng_below(&r, sizeof b);
        for (size_t i = 0; i < n; i++)
            b[i] = alphabet[rng_below(&r, sizeof alphabet)];
        /* Plant valid frames, sometimes overlapping others. */
        for (int k = (int)rng_below(&r, 4); k > 0 && n >= SIMDB_HELLO_LEN; k--)
            hello_frame(b + rng_below(&r, n - SIMDB_HELLO_LEN + 1), rng_next(&r));
        struct simdb_events want = simdb_events_reference(b, n);
        struct simdb_events got = simdb_events_parse(b, n, 1 + (size_t)rng_below(&r, 20));
        assert_int_equal(got.n, want.n);
        assert_memory_equal(got.ev, want.ev, (want.n < SIMDB_EVENTS_MAX ? want.n : SIMDB_EVENTS_MAX) * sizeof want.ev[0]);
    }
}

/* ---- doorbell: mailbox ---- */

static struct simdb_mailbox *guest_mailbox(struct fixture *f, uint32_t vps)
{
    struct simdb_mailbox *mb = (struct simdb_mailbox *)(f->fg.ram + MAILBOX_GPA);
    mb->guest_magic = SIMDB_GUEST_MAGIC;
    mb->version = SIMDB_VERSION;
    mb->vp_count = vps;
    mb->hello_guest_tsc = 0x1122334455667788ull;
    return mb;
}

static void test_mailbox_checks(void **state)
{
    (void)state;
    struct fixture *f = fx_new(1);
    const char *why = NULL;
    assert_null(simdb_mailbox_at(f->fg.ram, RAM_SIZE, MAILBOX_GPA + 8, &why));
    assert_string_equal(why, "mailbox not page-aligned");
    assert_null(simdb_mailbox_at(f->fg.ram, RAM_SIZE, RAM_SIZE - 3 * 4096, &why));
    assert_string_equal(why, "mailbox outside guest RAM");
    assert_null(simdb_mailbox_at(f->fg.ram, RAM_SIZE, 0xfffffffffffff000ull, &why));
    assert_null(simdb_mailbox_at(f->fg.ram, 2 * 4096, 0, &why));
    assert_non_null(simdb_mailbox_at(f->fg.ram, RAM_SIZE, RAM_SIZE - 4 * 4096, &why));
    struct simdb_mailbox *mb = simdb_mailbox_at(f->fg.ram, RAM_SIZE, MAILBOX_GPA, &why);
    assert_ptr_equal(mb, f->fg.ram + MAILBOX_GPA);
    uint32_t vps = 0;
    assert_string_equal(simdb_check_hello(mb, &vps), "wrong guest magic");
    guest_mailbox(f, 3);
    assert_null(simdb_check_hello(mb, &vps));
    assert_int_equal(vps, 3);
    assert_int_equal(simdb_hello_guest_tsc(mb), 0x1122334455667788ull);
    mb->version = 2;
    assert_string_equal(simdb_check_hello(mb, &vps), "unsupported protocol version");
    mb->version = SIMDB_VERSION;
    mb->vp_count = 0;
    assert_string_equal(simdb_check_hello(mb, &vps), "vp_count outside 1..64");
    mb->vp_count = SIMDB_MAX_VPS + 1;
    assert_non_null(simdb_check_hello(mb, &vps));
    simdb_accept_hello(mb);
    assert_int_equal(mb->host_magic, SIMDB_HOST_MAGIC);
    /* Pending vectors. */
    assert_true(simdb_set_pending(mb, 2, 0x30));
    assert_true(simdb_set_pending(mb, 2, 0xff));
    assert_true(simdb_set_pending(mb, 63, 0));
    assert_false(simdb_set_pending(mb, 64, 1));
    assert_int_equal(mb->pending[2][0], 1ull << 0x30);
    assert_int_equal(mb->pending[2][3], 1ull << 63);
    assert_int_equal(mb->pending[63][0], 1);
}

static void request(struct simdb_mailbox *mb, uint32_t slot_index, uint32_t vp, uint32_t op, uint64_t a0,
                    uint64_t a1, uint64_t a2)
{
    struct simdb_request *r = &mb->req[slot_index];
    r->op = op;
    r->vp = vp;
    r->arg[0] = a0;
    r->arg[1] = a1;
    r->arg[2] = a2;
    memset((void *)r->ret, 0xee, sizeof r->ret);
    __atomic_store_n(&r->seq, r->seq + 1, __ATOMIC_RELEASE);
}

static void test_mailbox_serve(void **state)
{
    (void)state;
    struct fixture *f = fx_new(3);
    struct simdb_mailbox *mb = guest_mailbox(f, 3);
    struct reports serve_logs;
    reports_clear(&serve_logs);
    request(mb, 0, 0, SIMDB_OP_CPUID, HV_CPUID_INTERFACE, 0, 0);
    request(mb, 1, 1, SIMDB_OP_WRMSR, HV_MSR_GUEST_OS_ID, FG_GUEST_OS_ID, 0);
    request(mb, 2, 2, SIMDB_OP_RDMSR, HV_MSR_VP_INDEX, 0, 0);
    assert_int_equal(simdb_serve(f->fg.sim, mb, 3, reports_record, &serve_logs), 3);
    for (uint32_t i = 0; i < 3; i++)
        assert_int_equal(mb->req[i].done, mb->req[i].seq);
    assert_int_equal(mb->req[0].ret[0], HV_INTERFACE_HV1);
    assert_int_equal(mb->req[0].ret[1], 0);
    assert_int_equal(mb->req[1].ret[1], 0);
    assert_int_equal(fg_rdmsr(&f->fg, 0, HV_MSR_GUEST_OS_ID), FG_GUEST_OS_ID);
    assert_int_equal(mb->req[2].ret[0], 2);
    assert_int_equal(mb->req[2].ret[1], 0);
    /* Nothing new: nothing served. */
    assert_int_equal(simdb_serve(f->fg.sim, mb, 3, reports_record, &serve_logs), 0);
    /* Faults, a hypercall, malformed requests; slots past vp_count are not looked at. */
    request(mb, 0, 0, SIMDB_OP_RDMSR, HV_MSR_EOI, 0, 0);
    request(mb, 1, 1, SIMDB_OP_WRMSR, HV_MSR_VP_INDEX, 5, 0);
    request(mb, 2, 2, SIMDB_OP_HYPERCALL, HV_CALL_POST_MESSAGE, FG_INPUT_GPA(2), 0);
    request(mb, 3, 3, SIMDB_OP_CPUID, HV_CPUID_VENDOR, 0, 0);
    assert_int_equal(simdb_serve(f->fg.sim, mb, 3, reports_record, &serve_logs), 3);
    assert_int_equal(mb->req[0].ret[1], 1);
    assert_int_equal(mb->req[1].ret[1], 1);
    assert_int_equal(mb->req[2].ret[0], HV_STATUS_INVALID_HYPERCALL_CODE); /* no hypercall page yet */
    assert_int_not_equal(mb->req[3].done, mb->req[3].seq);
    request(mb, 0, 1, SIMDB_OP_CPUID, HV_CPUID_VENDOR, 0, 0); /* vp field is not its slot */
    request(mb, 1, 1, 99, 0, 0, 0);                          /* unknown op */
    assert_int_equal(simdb_serve(f->fg.sim, mb, 3, reports_record, &serve_logs), 2);
    assert_int_equal(mb->req[0].ret[0], 0);
    assert_int_equal(mb->req[0].ret[1], 1);
    assert_int_equal(mb->req[1].ret[1], 1);
    assert_int_equal(reports_matching(&serve_logs, "malformed request"), 2);
    /* A full round trip: enable, post an echo through the mailbox. */
    request(mb, 0, 0, SIMDB_OP_WRMSR, HV_MSR_HYPERCALL, FG_HYPERCALL_GPA | HV_HYPERCALL_ENABLE, 0);
    simdb_serve(f->fg.sim, mb, 3, NULL, NULL);
    fg_enable_synic(&f->fg, 2);
    uint8_t p[2] = { 2, 6 };
    struct hv_input_post_message in = { .connection_id = HVSIM_CONN_ECHO, .message_type = 1, .payload_size = 2 };
    memcpy(in.payload, p, sizeof p);
    memcpy(f->fg.ram + FG_INPUT_GPA(2), &in, sizeof in);
    request(mb, 2, 2, SIMDB_OP_HYPERCALL, HV_CALL_POST_MESSAGE, FG_INPUT_GPA(2), 0);
    simdb_serve(f->fg.sim, mb, 3, NULL, NULL);
    assert_int_equal(mb->req[2].ret[0], HV_STATUS_SUCCESS);
    assert_int_equal(fg_slot_type(&f->fg, 2, 6), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_cpuid_values, fg_teardown),
        cmocka_unit_test_teardown(test_cpuid_deny_masks_and_options, fg_teardown),
        cmocka_unit_test_teardown(test_create_rejects_bad_config, fg_teardown),
        cmocka_unit_test_teardown(test_msr_values, fg_teardown),
        cmocka_unit_test_teardown(test_msr_faults, fg_teardown),
        cmocka_unit_test_teardown(test_msr_denied_privileges, fg_teardown),
        cmocka_unit_test_teardown(test_direct_timer_needs_feature, fg_teardown),
        cmocka_unit_test_teardown(test_hypercall_msr_rules, fg_teardown),
        cmocka_unit_test_teardown(test_synic_pages_cleared_on_enable, fg_teardown),
        cmocka_unit_test_teardown(test_hypercall_page_required, fg_teardown),
        cmocka_unit_test_teardown(test_echo_every_vp_and_sint, fg_teardown),
        cmocka_unit_test_teardown(test_pending_and_eom, fg_teardown),
        cmocka_unit_test_teardown(test_post_retries_delivery, fg_teardown),
        cmocka_unit_test_teardown(test_queue_overflow, fg_teardown),
        cmocka_unit_test_teardown(test_masked_sint_queues_until_unmasked, fg_teardown),
        cmocka_unit_test_teardown(test_disabled_simp_or_scontrol_queue, fg_teardown),
        cmocka_unit_test_teardown(test_polling_sint_delivers_without_interrupt, fg_teardown),
        cmocka_unit_test_teardown(test_echo_target_state, fg_teardown),
        cmocka_unit_test_teardown(test_event_echo, fg_teardown),
        cmocka_unit_test_teardown(test_event_errors, fg_teardown),
        cmocka_unit_test_teardown(test_host_signal, fg_teardown),
        cmocka_unit_test_teardown(test_post_bad_inputs, fg_teardown),
        cmocka_unit_test_teardown(test_denied_hypercall_privileges, fg_teardown),
        cmocka_unit_test_teardown(test_transient_failures, fg_teardown),
        cmocka_unit_test_teardown(test_registered_ports, fg_teardown),
        cmocka_unit_test_teardown(test_host_post_limits, fg_teardown),
        cmocka_unit_test_teardown(test_control_commands, fg_teardown),
        cmocka_unit_test_teardown(test_stimer_direct_oneshot, fg_teardown),
        cmocka_unit_test_teardown(test_stimer_message_mode, fg_teardown),
        cmocka_unit_test_teardown(test_stimer_sint0_disables, fg_teardown),
        cmocka_unit_test_teardown(test_stimer_auto_enable, fg_teardown),
        cmocka_unit_test_teardown(test_stimer_periodic_and_count0, fg_teardown),
        cmocka_unit_test_teardown(test_stimer_messages_do_not_pile_up, fg_teardown),
        cmocka_unit_test_teardown(test_stimer_thread_oneshot_on_time, fg_teardown),
        cmocka_unit_test_teardown(test_stimer_thread_periodic, fg_teardown),
        cmocka_unit_test_teardown(test_ref_time_monotonic_and_rate, fg_teardown),
        cmocka_unit_test_teardown(test_tsc_page_agrees_with_msr, fg_teardown),
        cmocka_unit_test_teardown(test_tsc_delta_moves_the_page, fg_teardown),
        cmocka_unit_test_teardown(test_no_reference_tsc_leaves_sequence_zero, fg_teardown),
        cmocka_unit_test_teardown(test_tsc_unsettled, fg_teardown),
        cmocka_unit_test_teardown(test_stats_and_verbose_log, fg_teardown),
        cmocka_unit_test_teardown(test_concurrent_vps_with_timer_thread, fg_teardown),
        cmocka_unit_test(test_parser_frames),
        cmocka_unit_test(test_parser_bad_checksum_and_resync),
        cmocka_unit_test(test_parser_matches_reference),
        cmocka_unit_test_teardown(test_mailbox_checks, fg_teardown),
        cmocka_unit_test_teardown(test_mailbox_serve, fg_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
