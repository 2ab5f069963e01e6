/*
 * clock: Hyper-V's synthetic timer 0 as the kernel's clock event (kernel/timer.h): every kernel
 * timer and the scheduler tick run on it. Gen2 VMs have no PIT; the local APIC timer works but its
 * rate is the hypervisor's to report, and the synthetic timer is what Hyper-V guests are meant to
 * use. At power-off the clock goes back to the local APIC timer before the hv layer shuts down.
 */
#include "arch-x86_64/tsc.h"
#include "hv/hv_internal.h"
#include "kernel/log.h"
#include "kernel/power.h"
#include "kernel/timer.h"


static void clock_arm(uint64_t deadline_tsc)
{
    uint64_t now_tsc = rdtsc();
    uint64_t now = hv_ref_time();
    uint64_t delta = deadline_tsc > now_tsc ? muldiv64(deadline_tsc - now_tsc, HV_REF_TIME_HZ, tsc_hz) : 0;
    hv_stimer_arm(now + (delta ? delta : 1));
}

static const struct clock_event stimer_clock = { "Hyper-V synthetic timer 0", clock_arm, hv_stimer_stop };

static void rearm_cpu(void *arg)
{
    (void)arg;
    timer_rearm_this_cpu();
}

/* Shutdown hooks run newest first, so this runs before the hv layer's own. */
static void restore_lapic_clock(void)
{
    timer_set_clock_event(NULL);
}

status_t hv_clock_install(bool allow_direct)
{
    if (timer_clock_event() == &stimer_clock) {
        pr_info("hv: kernel timers already run on %s (%s mode)", stimer_clock.name, hv_stimer_mode_name());
        return STATUS_OK;
    }
    status_t s = hv_stimer_start(timer_expired, allow_direct, VECTOR_TIMER);
    if (s != STATUS_OK)
        return s;
    timer_set_clock_event(&stimer_clock);
    power_register_shutdown_hook(restore_lapic_clock);
    status_t st[MAX_CPUS];
    s = hv_on_each_cpu(rearm_cpu, st);
    if (s == STATUS_OK)
        pr_info("hv: kernel timers and the scheduler tick now run on %s (%s mode)", stimer_clock.name,
                hv_stimer_mode_name());
    return s;
}
