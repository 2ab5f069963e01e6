/*
 * hvsim_internal: the model's state and the functions the library's files share (sim/hvsim.c: MSRs,
 * CPUID, ports, stats; sim/synic.c: message queues, slots, event flags; sim/hypercall.c: hypercalls
 * and the built-in ports; sim/clock.c: reference time and the reference TSC page; sim/stimer.c:
 * synthetic timers and the timer thread). Embedders use sim/hvsim.h only.
 *
 * Locking: `lock` protects everything in struct hvsim after it, except the immutable fields set by
 * hvsim_create (ram, ram_size, raise, cfg, vp_count, tsc_hz, tsc_scale, host_tsc_base). Every
 * function declared here expects the lock held unless its comment says otherwise.
 */
#ifndef SIM_HVSIM_INTERNAL_H
#define SIM_HVSIM_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "hv/proto/hvdefs.h"
#include "sim/hvsim.h"

#define HVSIM_PAGE_SIZE 4096u
#define HVSIM_DEFAULT_QUEUE_DEPTH 32u
#define HVSIM_MAX_QUEUE_DEPTH 4096u
/* The built-in ports, the VMBus server's few message ports and one event port per channel (relids
 * 1..2047). Looked up linearly: a few microseconds with every relid in use, far less usually. */
#define HVSIM_PORTS_MAX 2304u
#define HVSIM_APIC_HZ 200000000ull
/* An unsettled TSC page changes its sequence continuously for a burst, then rests for a gap
 * (reference time units: 20 us each). */
#define HVSIM_UNSETTLED_BURST 200u
#define HVSIM_UNSETTLED_GAP 200u

/* A message waiting for its slot. `from_timer` is 1 + the synthetic timer that sent it (0: any other
 * sender), so a timer has at most one expiration message waiting, as with Hyper-V's one dedicated
 * message buffer per timer. */
struct hvsim_queued_message {
    struct hv_message message;
    uint8_t from_timer;
};

/* A ring of cfg.queue_depth messages per VP and SINT, delivered in order. */
struct hvsim_queue {
    struct hvsim_queued_message *ring;
    uint32_t head, count;
    bool overflow_reported; /* logged once until the queue has room again */
};

struct hvsim_stimer {
    uint64_t config, count;
    uint64_t due; /* reference time of the next expiration, valid when armed */
    bool armed;
};

struct hvsim_vp {
    uint64_t scontrol, siefp, simp, sint[HV_SINT_COUNT];
    struct hvsim_stimer stimer[HV_STIMER_COUNT];
    struct hvsim_queue queue[HV_SINT_COUNT];
};

struct hvsim_port {
    uint32_t connection_id;
    hvsim_message_fn message_fn; /* exactly one of the two is set */
    hvsim_event_fn event_fn;
    void *ctx;
};

struct hvsim {
    /* Immutable after hvsim_create. */
    struct hvsim_config cfg; /* queue_depth resolved */
    uint8_t *ram;
    uint64_t ram_size;
    hvsim_raise_fn raise;
    void *raise_ctx;
    uint32_t privileges_low, privileges_high, features;
    uint64_t tsc_hz, tsc_scale, host_tsc_base;

    pthread_mutex_t lock;

    /* Partition-wide MSRs. */
    uint64_t guest_os_id, hypercall_msr, reference_tsc_msr;

    /* Reference time: ref(guest_tsc) = ((guest_tsc * tsc_scale) >> 64) + tsc_offset. */
    int64_t guest_tsc_delta, tsc_offset;
    int64_t tsc_sync_correction; /* >= 0: what later requests showed the HELLO estimate was short by */
    uint32_t tsc_sequence;
    bool tsc_unsettled;
    uint64_t tsc_unsettled_next; /* reference time of the next burst of sequence changes */

    struct hvsim_port ports[HVSIM_PORTS_MAX];
    uint32_t port_count;

    uint32_t fail_posts;
    uint16_t fail_status;

    struct hvsim_stats stats;
    struct hvsim_queued_message *queue_storage; /* every queue's ring, one allocation */

    pthread_t timer_thread;
    pthread_cond_t timer_cond; /* signalled when a timer is (re)armed or the thread must stop */
    bool timer_thread_running, timer_thread_stop;

    struct hvsim_vp vp[];
};

/* hvsim.c */
void hvsim_log(struct hvsim *sim, int verbosity, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
const struct hvsim_port *hvsim_find_port(const struct hvsim *sim, uint32_t connection_id);
/* Calls the raise callback for vector on vp and counts it. */
void hvsim_raise(struct hvsim *sim, uint32_t vp, uint8_t vector);

/* synic.c */
/* A SINT that accepts messages and flags: unmasked, or in polling mode. */
bool synic_sint_open(uint64_t sint);
/* A SINT whose events raise an interrupt: unmasked and not polling. */
bool synic_sint_interrupts(uint64_t sint);
/* Moves the next queued message of every SINT of vp into its slot where it can. */
void synic_deliver_all(struct hvsim *sim, uint32_t vp);
void synic_eom(struct hvsim *sim, uint32_t vp);
/* Queues a message (with the sending timer, 0 for none); false if the queue is full or the message
 * is out of range. */
bool synic_post(struct hvsim *sim, uint32_t vp, uint32_t sint, uint32_t type, const void *payload, uint32_t size,
                bool raw, uint8_t from_timer);
/* True if a message from timer (1 + index) of vp is still waiting in the SINT's queue. */
bool synic_timer_message_queued(const struct hvsim *sim, uint32_t vp, uint32_t sint, uint8_t from_timer);
bool synic_alloc_queues(struct hvsim *sim);
void synic_free_queues(struct hvsim *sim);

/* hypercall.c */
bool hypercall_register_builtin_ports(struct hvsim *sim);

/* clock.c */
/* The calibrated host TSC frequency (measured once per process; thread-safe, lock not needed). */
uint64_t clock_host_tsc_hz(void);
void clock_init(struct hvsim *sim); /* at creation, lock not needed */
uint64_t clock_ref_time(const struct hvsim *sim);
/* Rewrites the reference TSC page if enabled (new sequence). */
void clock_publish_tsc_page(struct hvsim *sim);
/* Starts or stops the unsettled page; stopping writes a valid page. */
void clock_set_unsettled(struct hvsim *sim, bool on);
/* While unsettled: a burst of sequence changes if one is due; returns the reference time of the
 * next burst (UINT64_MAX when settled). */
uint64_t clock_unsettled_tick(struct hvsim *sim, uint64_t now);

/* stimer.c */
/* NULL, or why the write is #GP. */
const char *stimer_write_config(struct hvsim *sim, uint32_t vp, uint32_t n, uint64_t value);
void stimer_write_count(struct hvsim *sim, uint32_t vp, uint32_t n, uint64_t value);
uint64_t stimer_run_locked(struct hvsim *sim);
void stimer_stop_thread(struct hvsim *sim); /* lock not held */

#endif
