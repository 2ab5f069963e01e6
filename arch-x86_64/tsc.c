#include "arch-x86_64/tsc.h"

#include "arch-x86_64/cpu.h"
#include "arch-x86_64/hypervisor.h"
#include "kernel/acpi.h"
#include "kernel/log.h"

uint64_t tsc_hz;
uint64_t tsc_boot;
const char *tsc_source = "none";

static uint16_t pm_port;
static bool pm_32bit;

#define PM_TIMER_HZ 3579545ull

void tsc_set_boot(uint64_t t)
{
    tsc_boot = t;
}

uint64_t tsc_to_ns(uint64_t ticks)
{
    if (!tsc_hz)
        return 0;
    return muldiv64(ticks, 1000000000u, tsc_hz);
}

uint64_t ns_to_tsc(uint64_t ns)
{
    return muldiv64(ns, tsc_hz, 1000000000u);
}

uint64_t tsc_ns_since_boot(void)
{
    return tsc_to_ns(rdtsc() - tsc_boot);
}

void tsc_delay_us(uint64_t us)
{
    uint64_t end = rdtsc() + ns_to_tsc(us * 1000);
    while ((int64_t)(rdtsc() - end) < 0)
        cpu_relax();
}

bool pmtimer_available(void)
{
    return pm_port != 0;
}

static uint32_t pm_read(void)
{
    return inl(pm_port) & (pm_32bit ? 0xffffffffu : 0xffffffu);
}

/* TSC ticks over a PM-timer interval of `pm_ticks`; wrap-safe. */
static uint64_t measure_against_pm(uint32_t pm_ticks)
{
    uint32_t mask = pm_32bit ? 0xffffffffu : 0xffffffu;
    uint32_t start = pm_read();
    /* Align to a PM tick edge so the first partial tick does not count. */
    while (pm_read() == start)
        ;
    start = pm_read();
    uint64_t t0 = rdtsc_ordered();
    uint32_t now;
    do {
        now = pm_read();
    } while (((now - start) & mask) < pm_ticks);
    uint64_t t1 = rdtsc_ordered();
    uint32_t elapsed = (now - start) & mask;
    return muldiv64(t1 - t0, pm_ticks, elapsed);
}

static bool hyperv_tsc_msr(uint64_t *hz)
{
    if (!hyperv_frequency_msrs())
        return false;
    *hz = rdmsr(ARCH_HV_MSR_TSC_FREQUENCY);
    return *hz != 0;
}

void tsc_calibrate(const struct acpi_info *acpi)
{
    if (acpi && acpi->have_fadt && acpi->pm_tmr_port && !acpi->hw_reduced) {
        pm_port = (uint16_t)acpi->pm_tmr_port;
        pm_32bit = acpi->pm_tmr_32bit;
    }
    uint64_t hz = 0;
    if (hyperv_tsc_msr(&hz)) {
        tsc_source = "Hyper-V TSC frequency MSR";
    } else {
        struct cpuid_regs r = cpuid(0, 0);
        if (r.eax >= 0x15) {
            struct cpuid_regs c = cpuid(0x15, 0);
            if (c.eax && c.ebx && c.ecx) {
                hz = (uint64_t)c.ecx * c.ebx / c.eax;
                tsc_source = "CPUID 0x15";
            }
        }
        if (!hz && pm_port) {
            /* Three 5 ms measurements (17,898 PM ticks each: 56 ppm resolution); keep the median
             * against an interrupt or an emulator hiccup. */
            uint64_t m[3];
            for (int i = 0; i < 3; i++)
                m[i] = measure_against_pm((uint32_t)(PM_TIMER_HZ / 200)) * 200;
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 2 - i; j++)
                    if (m[j] > m[j + 1]) {
                        uint64_t t = m[j];
                        m[j] = m[j + 1];
                        m[j + 1] = t;
                    }
            hz = m[1];
            tsc_source = "measured against the ACPI PM timer";
        }
        if (!hz && r.eax >= 0x16) {
            struct cpuid_regs c = cpuid(0x16, 0);
            if (c.eax) {
                hz = (uint64_t)c.eax * 1000000;
                tsc_source = "CPUID 0x16 base frequency";
            }
        }
    }
    if (!hz) {
        hz = 1000000000;
        tsc_source = "no source: assumed 1 GHz";
        pr_warn("tsc: no frequency source (no Hyper-V MSR, CPUID 0x15/0x16 or PM timer); assuming 1 GHz");
    }
    tsc_hz = hz;
    bool invariant = false;
    if (cpuid(0x80000000, 0).eax >= 0x80000007)
        invariant = cpuid(0x80000007, 0).edx & (1u << 8);
    pr_info("tsc: %llu.%03llu MHz (%s)%s", (unsigned long long)(hz / 1000000),
            (unsigned long long)(hz / 1000 % 1000), tsc_source, invariant ? ", invariant" : ", not invariant");
}
