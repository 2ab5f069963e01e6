/*
 * percpu: one struct cpu per started CPU, reached through GS (gs:0 holds its own address), so
 * this_cpu() is one load. Fields are touched only by their CPU unless a comment says otherwise.
 */
#ifndef KERNEL_PERCPU_H
#define KERNEL_PERCPU_H

#include <stdbool.h>
#include <stdint.h>

#include "arch-x86_64/spinlock.h"
#include "kernel/list.h"

#define MAX_CPUS 64

struct thread;
struct tss;

struct cpu {
    struct cpu *self;          /* must stay first: this_cpu() reads gs:0 */
    uint32_t id;               /* 0 = the boot CPU */
    uint32_t apic_id;
    bool online;

    /* Scheduler (kernel/thread.c). rq_lock is taken at HIGH by any CPU that wakes a thread here. */
    struct thread *current;
    struct thread *idle;
    spinlock_t rq_lock;
    struct list runqueue;
    volatile bool need_resched;
    uint64_t quantum_end_tsc;
    uint64_t context_switches;
    struct list zombies;       /* exited threads whose stacks wait to be freed */
    struct thread *switch_prev; /* the thread just switched away from, for sched_finish_switch */
    /* Dispatch accounting, for sched_dump(). dispatch_requests: how often any CPU asked for this CPU's
     * dispatch interrupt (IPI or self-IPI), incremented atomically by the asking CPU; several requests
     * may be taken as one interrupt while one is pending. dispatch_interrupts: taken here. */
    uint64_t dispatch_requests;
    uint64_t dispatch_interrupts;
    /* Idle wake-ups, under rq_lock: idle_wake_tsc is when a thread was made ready here while this CPU
     * ran its idle thread with an empty queue (0: none pending); the switch to it records how long
     * that took. A lost dispatch interrupt would show as a long one. */
    uint64_t idle_wake_tsc;
    uint64_t idle_wakes;
    uint64_t idle_wake_max_tsc;
    uint64_t idle_wakes_slow;  /* took more than SCHED_SLOW_IDLE_WAKE_MS */
    bool idle_wake_warn;       /* one took over a second: sched_finish_switch warns (once per boot) */

    /* DPCs (kernel/dpc.c); dpc_lock at HIGH, any CPU may queue here. */
    spinlock_t dpc_lock;
    struct list dpc_queue;
    uint64_t dpcs_run;

    /* Timers (kernel/timer.c); timer_lock at HIGH. */
    spinlock_t timer_lock;
    struct list timers;        /* sorted by deadline */
    uint64_t timer_programmed_tsc; /* deadline the local APIC timer is set for, if timer_armed */
    bool timer_armed;
    uint64_t timer_interrupts;

    /* Architecture. */
    struct tss *tss;
    void *gdt;
    uint64_t ist_top[3];       /* double fault, NMI, machine check */
    uint64_t interrupts;       /* all vectors >= 32 taken here */
    uint32_t hv_vp_index;      /* Hyper-V VP index (= id until the hv layer reads the MSR) */

    /* Exception probe (arch-x86_64/exceptions.c): an expected fault resumes at probe_resume. */
    volatile bool nmi_dump_request; /* smp_dump_cpus(): report the interrupted state from the NMI */
    volatile uint8_t probe_vector; /* 0xff = none armed */
    uint64_t probe_resume;
    uint64_t probe_hits;
};

extern struct cpu *cpus[MAX_CPUS];
extern uint32_t cpu_count; /* CPUs online */

#ifdef HOSTED
/* The hosted tests (test/hosted/): each VP is a thread, its struct cpu in a thread-local. */
extern __thread struct cpu *hosted_this_cpu;
static inline struct cpu *this_cpu(void)
{
    return hosted_this_cpu;
}
#else
static inline struct cpu *this_cpu(void)
{
    struct cpu *c;
    __asm__ volatile("mov %%gs:0, %0" : "=r"(c));
    return c;
}
#endif

void percpu_install(struct cpu *c); /* sets GS base: called once per CPU at bring-up */

extern bool percpu_gs_ready; /* set once the boot CPU's GS points at its struct cpu */
static inline bool percpu_ready(void)
{
    return percpu_gs_ready;
}

#endif
