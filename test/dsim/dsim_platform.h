/*
 * dsim_platform: included first into every translation unit of a dsim program (the build passes
 * -include test/dsim/dsim_platform.h), so that the guest layers and hvsim run unchanged on the
 * deterministic platform (test/dsim/dsim.h):
 *
 *  - time: the guest's rdtsc() and hvsim's __rdtsc() read the virtual clock (1 GHz: a TSC tick is
 *    a virtual nanosecond), and clock_gettime/nanosleep are virtual;
 *  - the guest's cpu_relax() is a yield to the scheduler (a spin loop lets the others run);
 *  - hvsim's pthreads (the VMBus server's thread) become scheduler contexts: pthread_create,
 *    pthread_join and the condition variables are the scheduler's, so the server runs one step
 *    (from one wait to the next) at a time. Its mutexes stay real: exactly one context runs at a
 *    time and none is switched out holding one (dsim_pthread_mutex_lock aborts if that ever breaks);
 *
 * hvsim's sources are not edited for any of this: its threaded mode (hvsim_main, test/host,
 * test/system) is built without this header and behaves as before.
 */
#ifndef TEST_DSIM_DSIM_PLATFORM_H
#define TEST_DSIM_DSIM_PLATFORM_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* as the sources that define it themselves do: same (empty) definition */
#endif

#include <pthread.h>
#include <stdint.h>
#include <time.h>
#include <x86intrin.h>

/* The virtual clock, in ns (= TSC ticks), and the yield of a spinning CPU (test/dsim/dsim.c). */
uint64_t dsim_clock_ns(void);
uint64_t dsim_guest_rdtsc(void); /* also a preemption point */
void dsim_cpu_relax(void);

/* The real cpu.h's rdtsc/cpu_relax are renamed away (unused static inlines), ours take their names. */
#define rdtsc dsim_unused_real_rdtsc
#define rdtsc_ordered dsim_unused_real_rdtsc_ordered
#define cpu_relax dsim_unused_real_cpu_relax
#include "arch-x86_64/cpu.h"
#undef rdtsc
#undef rdtsc_ordered
#undef cpu_relax
static inline uint64_t rdtsc(void) { return dsim_guest_rdtsc(); }
static inline uint64_t rdtsc_ordered(void) { return dsim_guest_rdtsc(); }
static inline void cpu_relax(void) { dsim_cpu_relax(); }

/* hvsim's side: its TSC and its threads. */
#undef __rdtsc
#define __rdtsc() dsim_clock_ns()

int dsim_pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg);
int dsim_pthread_join(pthread_t t, void **ret);
int dsim_pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m);
int dsim_pthread_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *abstime);
int dsim_pthread_cond_signal(pthread_cond_t *c);
int dsim_pthread_cond_broadcast(pthread_cond_t *c);
int dsim_pthread_mutex_lock(pthread_mutex_t *m);
int dsim_clock_gettime(clockid_t clk, struct timespec *ts);
int dsim_nanosleep(const struct timespec *req, struct timespec *rem);

#ifndef DSIM_IMPLEMENTATION
#define pthread_create dsim_pthread_create
#define pthread_join dsim_pthread_join
#define pthread_cond_wait dsim_pthread_cond_wait
#define pthread_cond_timedwait dsim_pthread_cond_timedwait
#define pthread_cond_signal dsim_pthread_cond_signal
#define pthread_cond_broadcast dsim_pthread_cond_broadcast
#define pthread_mutex_lock dsim_pthread_mutex_lock
#define clock_gettime dsim_clock_gettime
#define nanosleep dsim_nanosleep
#endif

#endif
