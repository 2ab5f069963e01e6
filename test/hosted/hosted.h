/*
 * hosted: the guest's portable layers (hv/, later VMBus and kmcl) running as a Linux process
 * against an in-process hvsim, for the hosted tests (DESIGN.md, "One image, three ways to run").
 *
 * Model: each guest CPU (VP) is a thread with its own struct cpu and IRQL; an interrupt is a
 * signal to that thread (SIGUSR1), taken at whatever instruction the thread is at, unless the
 * thread's IRQL masks the vector's class, in which case it stays pending until irql_lower()
 * unmasks it, as with the local APIC and CR8. Every libc call the shim makes (malloc, stdio,
 * pthread) happens at HIGH, so no signal handler ever runs inside one.
 *
 * Guest RAM is one buffer; guest physical address = offset in it (page 0 is never handed out).
 * The kernel services the hv layer uses (page and heap allocation, log, spinlocks, DPCs through the
 * real kernel/dpc.c, threads pinned to a CPU, power-off hooks, panic) are implemented here.
 */
#ifndef TEST_HOSTED_HOSTED_H
#define TEST_HOSTED_HOSTED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hvsim;
struct hvsim_config;

/* Starts `vps` VP threads and an hvsim over `ram_bytes` of guest RAM. cfg may be NULL (defaults). */
void hosted_start(uint32_t vps, uint64_t ram_bytes, const struct hvsim_config *cfg);
/* Runs the shutdown hooks (newest first) at PASSIVE in a job on VP 0, as power_off() does; the
 * VPs and hvsim stay up, so a test can look at what the hooks left. */
void hosted_power_off(void);
/* Powers off (runs the shutdown hooks at PASSIVE from the calling test thread), stops the VPs,
 * destroys hvsim and frees guest RAM. */
void hosted_stop(void);
struct hvsim *hosted_sim(void);
uint64_t hosted_pages_in_use(void); /* guest RAM pages handed out by page_alloc() */
void *hosted_ram(void);
uint32_t hosted_vps(void);

/* Runs fn(arg) on VP `cpu` at PASSIVE and waits for it to return. */
void hosted_run_on(uint32_t cpu, void (*fn)(void *arg), void *arg);

/* The log: every line the guest logged since the last hosted_log_clear(), and a search in it. */
void hosted_log_clear(void);
bool hosted_log_contains(const char *needle);
void hosted_log_quiet(bool quiet); /* true: do not echo guest lines to stderr */

/* Polls cond() every 100 us for up to timeout_ms. */
bool hosted_wait_for(bool (*cond)(void *ctx), void *ctx, unsigned timeout_ms);
/* Waits until *counter >= want (an acquire load), or timeout_ms: false. */
bool hosted_wait_count(volatile uint32_t *counter, uint32_t want, unsigned timeout_ms);

/* Interrupt counters, per VP. */
uint64_t hosted_interrupts_taken(uint32_t cpu);

#endif
