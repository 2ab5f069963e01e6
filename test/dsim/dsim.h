/*
 * dsim: a deterministic platform for the guest's portable layers (hv/, hv/vmbus, kmcl, drivers) and
 * hvsim in ONE process and ONE OS thread, in the manner of FoundationDB's simulation testing: every
 * guest thread, every VP's interrupt handling (its DPCs, the SynIC's messages, channel interrupts)
 * and every hvsim thread (the VMBus server, the VSPs it calls) is a context (its own stack), and a
 * scheduler runs exactly one of them at a time, choosing the next one with a PRNG. A run is a pure
 * function of its seed: the same seed replays the same schedule, bit for bit (dsim_trace_hash()).
 *
 * Model (the same as test/hosted's, made deterministic):
 *  - A VP is a struct cpu with pending interrupt bits. Guest threads (thread_create) are contexts
 *    pinned to a VP. A VP runs at most one context above PASSIVE at a time (a thread at DISPATCH or
 *    in an interrupt handler owns its VP until it comes back to PASSIVE), as on hardware, while the
 *    other VPs and hvsim run in between ("in parallel"). Each VP has an interrupt context that takes
 *    interrupts when none of its threads is running.
 *  - Preemption points: every kernel service the guest calls (spinlocks, IRQL changes, events,
 *    allocation, logging, the binding's CPUID/MSR/hypercall operations, rdtsc, cpu_relax) may switch
 *    to another context, with a probability chosen per run. Interrupts are taken at those points
 *    when the IRQL allows, and by irql_lower().
 *  - Virtual time: each point costs DSIM_POINT_NS; when every context waits, time jumps to the next
 *    deadline (a 5 s VMBus timeout costs nothing). The guest TSC and hvsim's TSC run at 1 GHz.
 *  - hvsim: created per run over the guest RAM (GPA = offset), its threads redirected to contexts by
 *    test/dsim/dsim_platform.h; its synthetic timers are not run (the guest layers under test do not
 *    arm them).
 *
 * Bounds: a run that exceeds its virtual-time or step budget, or in which every context waits with
 * no deadline, ends as a hang (DSIM_HANG / DSIM_DEADLOCK) with the state of every context printed.
 * dsim_fail() ends it as a failed invariant. Sanitizer reports abort the process as usual.
 *
 * Threads and lifetime: one run at a time per process; dsim_run() returns with every context
 * finished (or the run abandoned after a failure, when the process should exit: the guest's global
 * state is then undefined). The functions below are called from inside a run (contexts) unless
 * noted.
 */
#ifndef TEST_DSIM_DSIM_H
#define TEST_DSIM_DSIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hvsim;
struct hvsim_config;

#define DSIM_POINT_NS 200u /* virtual cost of one preemption point */

struct dsim_config {
    uint64_t seed;              /* every choice of the run comes from it */
    uint32_t vps;               /* 1..8 */
    uint64_t ram_bytes;         /* guest RAM (0: 16 MiB) */
    uint32_t preempt_one_in;    /* a point switches with probability 1/preempt_one_in (0: 4) */
    uint64_t max_virtual_ns;    /* 0: 600 s */
    uint64_t max_steps;         /* scheduler steps (0: 20,000,000) */
    const struct hvsim_config *hvsim; /* NULL: defaults (vp_count and tsc_hz are set by dsim) */
    bool verbose;               /* echo the guest and hvsim log to stderr */
};

enum dsim_result { DSIM_OK = 0, DSIM_FAILED, DSIM_HANG, DSIM_DEADLOCK };

/* Outside a run: sets up guest RAM, hvsim and the VPs, runs main_fn(arg) as a host context and the
 * scheduler until main_fn returned and every other context finished, then tears everything down.
 * The reason of a failure is in dsim_failure(). */
enum dsim_result dsim_run(const struct dsim_config *cfg, void (*main_fn)(void *arg), void *arg);
const char *dsim_failure(void);        /* "" after a good run */
uint64_t dsim_trace_hash(void);        /* of the last run's schedule: equal hashes, equal runs */
uint64_t dsim_steps(void);             /* scheduler steps of the last run */

/* Ends the run as failed (printf-style reason); does not return. From any context. */
void dsim_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* The run's PRNG (the scheduler draws from it too). */
uint64_t dsim_rand(void);
uint32_t dsim_below(uint32_t n);       /* uniform in [0, n), n > 0 */
bool dsim_one_in(uint32_t n);          /* probability 1/n */

/* Virtual time (ns since the run began + 1 s) and sleeping in it (any context at PASSIVE / host). */
uint64_t dsim_now_ns(void);
void dsim_sleep_ns(uint64_t ns);

/* Contexts. A guest context runs fn(arg) at PASSIVE on VP cpu (a kernel thread); a host context
 * runs fn(arg) outside the guest (hvsim's side: it may call hvsim and its VMBus server). dsim_join
 * waits for one to finish and frees it. */
struct dsim_ctx;
struct dsim_ctx *dsim_spawn_guest(uint32_t cpu, const char *name, void (*fn)(void *arg), void *arg);
struct dsim_ctx *dsim_spawn_host(const char *name, void (*fn)(void *arg), void *arg);
void dsim_join(struct dsim_ctx *c);
/* spawn + join. */
void dsim_run_on(uint32_t cpu, void (*fn)(void *arg), void *arg);

/* The machine. */
struct hvsim *dsim_sim(void);
uint32_t dsim_vps(void);
uint64_t dsim_pages_in_use(void);      /* guest RAM pages handed out by page_alloc() */
/* Runs the power-off hooks (newest first) at PASSIVE on VP 0 and waits for them (vmbus UNLOAD,
 * the hv layer's shutdown). */
void dsim_power_off(void);

/* The log: every guest and hvsim line of the run (also on stderr with verbose). dsim_host_log is a
 * log callback for host components (ctx unused), as hvsim's own lines go. */
void dsim_host_log(void *ctx, const char *line);
bool dsim_log_contains(const char *needle);
void dsim_log_dump_tail(size_t bytes);  /* to stderr */

#endif
