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

#endif
