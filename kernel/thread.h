/*
 * thread: kernel threads and the per-CPU scheduler.
 *
 * Threads run at PASSIVE, pinned to the CPU they were created on (each CPU has its own run queue and
 * idle thread; nothing migrates). Scheduling is round-robin with a 10 ms quantum; a woken thread
 * preempts the running one on its CPU. Switching happens at HIGH with the CPU's rq_lock held, from a
 * voluntary block/yield or from the DPC/dispatch interrupt once its DPCs have run.
 *
 * IRQL rules (asserted): create, join, yield, sleep and waits that can block: PASSIVE.
 * thread_wake-style signalling (event_set, semaphore_release): any IRQL <= HIGH, see sync.h.
 * A thread's struct is freed when it has exited and been joined (or detached).
 */
#ifndef KERNEL_THREAD_H
#define KERNEL_THREAD_H

#include <stdbool.h>
#include <stdint.h>

#include "kernel/dpc.h"
#include "kernel/list.h"
#include "kernel/status.h"
#include "kernel/sync.h"
#include "kernel/timer.h"

struct cpu;

enum thread_state { THREAD_READY = 1, THREAD_RUNNING, THREAD_BLOCKED, THREAD_DEAD };

#define THREAD_STACK_PAGES 4
#define CPU_ANY (-1)

typedef void (*thread_fn)(void *arg);

struct thread {
    uint64_t rsp;            /* saved while switched out */
    struct cpu *cpu;
    volatile int state;
    uint64_t id;
    char name[24];
    struct list rq_link;
    thread_fn fn;
    void *arg;
    uint64_t stack_top;      /* 0 for a thread that runs on a boot stack */
    uint32_t stack_pages;
    int refs;                /* the running thread + the handle held by the creator */
    int exit_code;

    struct wait_block *wait; /* the wait in progress, under its queue's lock */
    struct ktimer wait_timer;
    struct dpc wait_dpc;
    struct wait_queue sleep_queue; /* never signalled: thread_sleep waits here */
    struct event done;       /* notification: set once the thread is gone */
    uint64_t switches_in;
};

status_t thread_create(const char *name, thread_fn fn, void *arg, int cpu, struct thread **out) WARN_UNUSED;
void thread_exit(int code) __attribute__((noreturn));
/* Waits for t to exit, returns its exit code and releases the handle. */
int thread_join(struct thread *t);
void thread_detach(struct thread *t);
void thread_yield(void);
void thread_sleep_ns(uint64_t ns);
struct thread *thread_current(void);
/* Prints every CPU's scheduler state (current thread, ready queue, counters). Any IRQL <= DISPATCH. */
void sched_dump(void);

/* Scheduler internals shared with sync.c, timer.c, smp.c. */
void sched_cpu_init(struct cpu *c, bool boot_cpu);
void sched_idle_loop(void) __attribute__((noreturn));
void sched_register_interrupts(void);
void sched_clock_tick(struct cpu *c, uint64_t now_tsc);         /* CLOCK/HIGH */
/* With c->rq_lock held at HIGH: switch to the next ready thread; returns (rq_lock held) when the
 * caller's thread runs again. */
void sched_switch_locked(struct cpu *c);
/* After sched_switch_locked returned and rq_lock was dropped: deals with the thread switched away
 * from. At HIGH. */
void sched_finish_switch(struct cpu *c);
/* Makes a BLOCKED thread READY on its CPU (and asks that CPU to reschedule). At HIGH. */
void sched_wake(struct thread *t);

#endif
