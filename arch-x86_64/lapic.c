/* Register offsets: Intel SDM Vol. 3A §10.4.1 Table 10-1 (xAPIC) and §10.12.1.2 (x2APIC MSR = 0x800 +
 * offset/16; ICR is one 64-bit MSR 0x830; SELF IPI 0x83F). */
#include "arch-x86_64/lapic.h"

#include "arch-x86_64/cpu.h"
#include "arch-x86_64/hypervisor.h"
#include "arch-x86_64/irql.h"
#include "arch-x86_64/tsc.h"
#include "kernel/log.h"

bool lapic_x2apic;
uint64_t lapic_timer_hz;
static volatile uint32_t *mmio;

enum {
    REG_ID = 0x20,
    REG_TPR = 0x80,
    REG_EOI = 0xb0,
    REG_SVR = 0xf0,
    REG_ICR_LO = 0x300,
    REG_ICR_HI = 0x310,
    REG_LVT_TIMER = 0x320,
    REG_LVT_LINT0 = 0x350,
    REG_LVT_LINT1 = 0x360,
    REG_LVT_ERROR = 0x370,
    REG_TIMER_INIT = 0x380,
    REG_TIMER_CUR = 0x390,
    REG_TIMER_DIV = 0x3e0,
};
#define LVT_MASKED (1u << 16)
#define ICR_PENDING (1u << 12)
#define ICR_LEVEL_ASSERT (1u << 14)
#define APIC_BASE_ENABLE (1ull << 11)
#define APIC_BASE_X2 (1ull << 10)

static uint32_t rd(uint32_t reg)
{
    if (lapic_x2apic)
        return (uint32_t)rdmsr(0x800 + (reg >> 4));
    return mmio[reg / 4];
}

static void wr(uint32_t reg, uint32_t v)
{
    if (lapic_x2apic)
        wrmsr(0x800 + (reg >> 4), v);
    else
        mmio[reg / 4] = v;
}

uint32_t lapic_id(void)
{
    return lapic_x2apic ? rd(REG_ID) : rd(REG_ID) >> 24;
}

void lapic_eoi(void)
{
    wr(REG_EOI, 0);
}

static void send_icr(uint32_t apic_id, uint32_t low)
{
    if (lapic_x2apic) {
        wrmsr(0x830, ((uint64_t)apic_id << 32) | low);
        return;
    }
    /* xAPIC: wait for the previous IPI to leave, with interrupts off so the pair of writes is not
     * split by a handler that sends one too. */
    uint64_t f = read_rflags();
    cli();
    for (int i = 0; i < 1000000 && (rd(REG_ICR_LO) & ICR_PENDING); i++)
        cpu_relax();
    wr(REG_ICR_HI, apic_id << 24);
    wr(REG_ICR_LO, low);
    if (f & RFLAGS_IF)
        sti();
}

void lapic_send_ipi(uint32_t apic_id, uint8_t vector)
{
    /* SDM Vol. 3A 10.6.1: the level bit must be 1 for every delivery mode but INIT de-assert. */
    send_icr(apic_id, ICR_LEVEL_ASSERT | vector);
}

void lapic_send_self_ipi(uint8_t vector)
{
    if (lapic_x2apic)
        wrmsr(0x83f, vector);
    else
        send_icr(0, (1u << 18) | ICR_LEVEL_ASSERT | vector); /* shorthand: self */
}

void lapic_send_nmi(uint32_t apic_id)
{
    send_icr(apic_id, (4u << 8) | ICR_LEVEL_ASSERT);
}

void lapic_send_init(uint32_t apic_id)
{
    send_icr(apic_id, (5u << 8) | ICR_LEVEL_ASSERT);
}

void lapic_send_sipi(uint32_t apic_id, uint8_t page)
{
    send_icr(apic_id, (6u << 8) | ICR_LEVEL_ASSERT | page);
}

static bool hyperv_apic_hz(uint64_t *hz)
{
    if (!hyperv_frequency_msrs())
        return false;
    *hz = rdmsr(ARCH_HV_MSR_APIC_FREQUENCY);
    return *hz != 0;
}

void lapic_init(uint64_t phys)
{
    lapic_x2apic = cpuid(1, 0).ecx & (1u << 21);
    mmio = (volatile uint32_t *)(phys ? phys : 0xfee00000);
    lapic_cpu_init();
    const char *how = "Hyper-V APIC frequency MSR";
    if (!hyperv_apic_hz(&lapic_timer_hz)) {
        /* Count down for 5 ms of TSC time, divide-by-1. */
        wr(REG_TIMER_DIV, 0xb);
        wr(REG_LVT_TIMER, LVT_MASKED | VECTOR_TIMER);
        uint64_t t0 = rdtsc_ordered();
        wr(REG_TIMER_INIT, 0xffffffffu);
        uint64_t target = t0 + ns_to_tsc(5000000);
        while ((int64_t)(rdtsc() - target) < 0)
            cpu_relax();
        uint32_t left = rd(REG_TIMER_CUR);
        uint64_t t1 = rdtsc_ordered();
        wr(REG_TIMER_INIT, 0);
        uint64_t counted = 0xffffffffu - left;
        lapic_timer_hz = muldiv64(counted, tsc_hz, t1 - t0);
        how = "measured against the TSC";
    }
    pr_info("lapic: %s mode, id %u, timer %llu kHz (%s)", lapic_x2apic ? "x2APIC" : "xAPIC", lapic_id(),
            (unsigned long long)(lapic_timer_hz / 1000), how);
}

void lapic_cpu_init(void)
{
    uint64_t base = rdmsr(MSR_APIC_BASE) | APIC_BASE_ENABLE;
    if (lapic_x2apic)
        base |= APIC_BASE_X2;
    wrmsr(MSR_APIC_BASE, base);
    wr(REG_SVR, 0x100 | VECTOR_SPURIOUS); /* software enable */
    wr(REG_TPR, 0);
    wr(REG_LVT_TIMER, LVT_MASKED | VECTOR_TIMER);
    wr(REG_LVT_LINT0, LVT_MASKED);
    wr(REG_LVT_LINT1, 4u << 8); /* NMI */
    wr(REG_LVT_ERROR, LVT_MASKED);
    wr(REG_TIMER_DIV, 0xb);
}

void lapic_timer_oneshot(uint64_t tsc_ticks)
{
    uint64_t count = muldiv64(tsc_ticks, lapic_timer_hz, tsc_hz ? tsc_hz : 1);
    if (count == 0)
        count = 1;
    if (count > 0xffffffffu)
        count = 0xffffffffu;
    wr(REG_LVT_TIMER, VECTOR_TIMER); /* one-shot, unmasked */
    wr(REG_TIMER_INIT, (uint32_t)count);
}

void lapic_timer_stop(void)
{
    wr(REG_TIMER_INIT, 0);
}
