/*
 * hvsim: a model of the Hyper-V root partition as a guest sees it: the synthetic CPUID leaves, the
 * synthetic MSRs, the SynIC of every VP (message slots with the pending/EOM rules, event flags,
 * interrupts), HvPostMessage and HvSignalEvent with their statuses, the reference time, the
 * reference TSC page and the synthetic timers.
 *
 * This is the library (sim/hvsim.c and friends). Two programs embed it:
 *  - sim/hvsim_main.c, the `hvsim` process that serves a QEMU guest over hv/proto/simdb.h;
 *  - the hosted tests, which call it directly from one thread per guest VP.
 *
 * Guest memory is reached only through hvsim_gpa(): every guest physical address the guest hands
 * over (SIMP, SIEFP, reference TSC page, hypercall input/output) is checked against the RAM size.
 * Nothing the guest sends is trusted: a bad MSR value faults (as #GP would), a bad hypercall input
 * gets the Hyper-V status for it.
 *
 * Threads: every entry point may be called from any thread; one mutex serialises the model. The
 * raise_interrupt callback is called with that mutex held and must not call back into hvsim.
 */
#ifndef SIM_HVSIM_H
#define SIM_HVSIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hv/proto/hvdefs.h"
#include "hv/proto/simtest.h"

struct hvsim;

/* How the embedding delivers an interrupt (vector) to a VP. */
typedef void (*hvsim_raise_fn)(void *ctx, uint32_t vp, uint8_t vector);

/* A host-side endpoint for HvPostMessage / HvSignalEvent on one connection id. Called with the
 * model mutex held, so it may use the hvsim_*_locked functions to answer. Returns the Hyper-V
 * status the guest's hypercall gets. */
typedef uint16_t (*hvsim_message_fn)(struct hvsim *sim, void *ctx, uint32_t vp, uint32_t connection_id,
                                     uint32_t message_type, const void *payload, uint32_t size);
typedef uint16_t (*hvsim_event_fn)(struct hvsim *sim, void *ctx, uint32_t vp, uint32_t connection_id,
                                   uint16_t flag);

struct hvsim_config {
    uint32_t vp_count;               /* 1..SIMDB_MAX_VPS */
    uint32_t deny_privileges_low;    /* bits removed from CPUID 0x40000003 eax */
    uint32_t deny_privileges_high;   /* bits removed from CPUID 0x40000003 ebx */
    bool no_direct_stimer;           /* clear the direct-mode timer feature bit */
    bool recommend_no_aeoi;          /* set HV_RECOMMEND_DEPRECATING_AEOI */
    bool no_reference_tsc;           /* leave the TSC page's sequence at 0 (use the MSR) */
    uint64_t tsc_hz;                 /* the guest TSC's frequency; 0: calibrate the host's */
    int64_t guest_tsc_delta;         /* guest TSC = host TSC + delta (hosted: 0) */
    uint32_t queue_depth;            /* messages queued per VP and SINT behind a full slot; 0: 32 */
    void (*log)(void *ctx, const char *line); /* NULL: stderr; called with the model mutex held */
    void *log_ctx;
    int verbosity;                   /* 0: notable events (guest errors, resets); 1: also every MSR
                                      * write, hypercall and message */
};

/* Test echo endpoints (the guest's self-checks and the hosted tests use them): HVSIM_CONN_ECHO,
 * HVSIM_CONN_EVENT_ECHO + s and HVSIM_CONN_CONTROL, their protocol in hv/proto/simtest.h. */

struct hvsim *hvsim_create(const struct hvsim_config *cfg, void *guest_ram, uint64_t ram_size,
                           hvsim_raise_fn raise, void *raise_ctx);
void hvsim_destroy(struct hvsim *sim);

/* The guest's view, as if executed on VP vp. */
void hvsim_cpuid(struct hvsim *sim, uint32_t vp, uint32_t leaf, uint32_t subleaf, uint32_t regs[4]);
bool hvsim_rdmsr(struct hvsim *sim, uint32_t vp, uint32_t msr, uint64_t *value); /* false: #GP */
bool hvsim_wrmsr(struct hvsim *sim, uint32_t vp, uint32_t msr, uint64_t value);  /* false: #GP */
uint64_t hvsim_hypercall(struct hvsim *sim, uint32_t vp, uint64_t control, uint64_t input, uint64_t output);

/* Time: the reference time (100 ns) now, and the driving of synthetic timers. hvsim_run_timers
 * fires every timer due at `now` and returns the next due reference time (UINT64_MAX if none). */
uint64_t hvsim_ref_time(struct hvsim *sim);
uint64_t hvsim_run_timers(struct hvsim *sim);
/* Starts a thread that runs the timers on time (the hosted tests and hvsim_main use it). */
bool hvsim_start_timer_thread(struct hvsim *sim);
/* The guest TSC's frequency and offset as hvsim models them (for the QEMU HELLO exchange). */
void hvsim_set_guest_tsc_delta(struct hvsim *sim, int64_t delta);
/* A request stamped with the guest's TSC arrived when the host TSC read host_tsc: refines hvsim's
 * estimate of the guest's clock (see sim/clock.c). */
void hvsim_observe_guest_tsc(struct hvsim *sim, uint64_t guest_tsc, uint64_t host_tsc);
uint64_t hvsim_host_tsc(void);

/* Host-side endpoints. */
bool hvsim_register_message_port(struct hvsim *sim, uint32_t connection_id, hvsim_message_fn fn, void *ctx);
bool hvsim_register_event_port(struct hvsim *sim, uint32_t connection_id, hvsim_event_fn fn, void *ctx);
/* Removes the port of either kind (false: none registered). Once it returns, the port's handler is
 * not running and will not be called again. Not from a port handler (the mutex is held there). */
bool hvsim_unregister_port(struct hvsim *sim, uint32_t connection_id);

/* Host -> guest, for endpoints (mutex held: _locked) and tests (mutex not held). A message queues
 * behind a full slot (pending flag set in the slot) and is delivered on EOM; false when the queue is
 * full. size may exceed 240 only when `raw` is set (for bad-input tests). */
bool hvsim_post_locked(struct hvsim *sim, uint32_t vp, uint32_t sint, uint32_t type, const void *payload,
                       uint32_t size, bool raw);
bool hvsim_post(struct hvsim *sim, uint32_t vp, uint32_t sint, uint32_t type, const void *payload, uint32_t size,
                bool raw);
bool hvsim_signal_locked(struct hvsim *sim, uint32_t vp, uint32_t sint, uint32_t flag);
bool hvsim_signal(struct hvsim *sim, uint32_t vp, uint32_t sint, uint32_t flag);

/* Test controls. */
void hvsim_fail_next_posts(struct hvsim *sim, uint32_t count, uint16_t status);
void hvsim_set_tsc_unsettled(struct hvsim *sim, bool on);

/* Counters, for tests and the exit report. */
struct hvsim_stats {
    uint64_t hypercalls, posts_ok, posts_failed, signals, messages_delivered, messages_queued, eoms,
        interrupts_raised, timer_expiries, msr_faults;
};
void hvsim_get_stats(struct hvsim *sim, struct hvsim_stats *out);

/* Guest memory: a host pointer to [gpa, gpa+len), or NULL if any of it is outside guest RAM. */
void *hvsim_gpa(struct hvsim *sim, uint64_t gpa, uint64_t len);

#endif
