/*
 * timer: per-CPU kernel timers (KTIMER). A timer armed on a CPU fires there: at expiry the clock
 * interrupt (CLOCK level) queues the timer's DPC, which runs at DISPATCH. Periodic timers re-arm
 * themselves. Each CPU's local APIC timer runs in one-shot mode, programmed for the earliest of its
 * timers and, while a thread runs, the end of its 10 ms quantum: an idle CPU with no timers takes
 * no clock interrupts at all.
 * The caller owns struct ktimer and its DPC; cancel both before freeing.
 */
#ifndef KERNEL_TIMER_H
#define KERNEL_TIMER_H

#include <stdbool.h>
#include <stdint.h>

#include "kernel/list.h"

struct cpu;
struct dpc;

#define SCHED_QUANTUM_NS 10000000ull

struct ktimer {
    struct list link;
    uint64_t deadline_tsc;
    uint64_t period_tsc; /* 0: one-shot */
    struct dpc *dpc;
    struct cpu *cpu;     /* where it is armed; NULL when not */
    uint64_t fired;
};

void ktimer_init(struct ktimer *t);
/* Arms t on the current CPU, due_ns from now (re-arming moves it). Any IRQL. */
void ktimer_set(struct ktimer *t, uint64_t due_ns, uint64_t period_ns, struct dpc *dpc);
/* Any IRQL. True if it was armed. Its DPC may already be queued: cancel that too if it matters. */
bool ktimer_cancel(struct ktimer *t);

void timer_cpu_init(struct cpu *c);
/* Re-programs this CPU's one-shot for its earliest deadline. At HIGH. */
void timer_reprogram(struct cpu *c);
void timer_register_interrupt(void);

/* What raises VECTOR_TIMER (or calls timer_expired()) at a deadline: the local APIC timer by
 * default; the hv layer installs Hyper-V's synthetic timer. arm() and stop() act on the calling CPU,
 * at HIGH with its timer lock held. Set at PASSIVE; each CPU picks it up at its next reprogram. */
struct clock_event {
    const char *name;
    void (*arm)(uint64_t deadline_tsc);
    void (*stop)(void);
};
void timer_set_clock_event(const struct clock_event *ce); /* NULL: back to the local APIC timer */
const char *timer_clock_name(void);
const struct clock_event *timer_clock_event(void);
void timer_rearm_this_cpu(void); /* after a clock event change: stop the APIC timer, arm the new one */
/* The timer interrupt's work (expire timers, scheduler tick, re-arm), for a clock event that is not
 * an interrupt of its own (a synthetic timer in message mode): at CLOCK or a device level. */
void timer_expired(void);

#endif
