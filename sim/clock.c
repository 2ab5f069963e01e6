/*
 * hvsim reference time and the reference TSC page (T:timers.md; hyperv-facts.md 3.6).
 *
 * Reference time is 100 ns units since the partition was created, defined through the guest's TSC
 * so that TIME_REF_COUNT and the TSC page always agree:
 *     guest_tsc = host_tsc + guest_tsc_delta
 *     ref       = ((guest_tsc * tsc_scale) >> 64) + tsc_offset
 *     tsc_scale = (10^7 << 64) / tsc_hz,   tsc_offset = -(((host_tsc_base + delta) * tsc_scale) >> 64)
 * host_tsc_base is the host TSC at creation. A new delta moves the offset with it, so reference time
 * as a function of host time does not jump; only the guest's TSC is declared different.
 *
 * The page is rewritten seqlock-style: sequence 0 (invalid: readers fall back to the MSR), scale
 * and offset, then a new non-zero sequence. A reader that overlapped the rewrite sees the two
 * sequence reads differ and retries, as the TLFS reader loop does.
 */
#include <errno.h>
#include <stddef.h>
#include <time.h>
#include <x86intrin.h>

#include "sim/hvsim_internal.h"

#define CALIBRATION_NS 20000000ll /* 20 ms against CLOCK_MONOTONIC_RAW */

uint64_t hvsim_host_tsc(void)
{
    return __rdtsc();
}

static int64_t timespec_ns(const struct timespec *t)
{
    return (int64_t)t->tv_sec * 1000000000ll + t->tv_nsec;
}

static uint64_t calibrated_hz;
static pthread_once_t calibrate_once = PTHREAD_ONCE_INIT;

/* A (TSC, CLOCK_MONOTONIC_RAW) pair read as close together as this thread manages: the best of a few
 * tries, so a preemption between the two reads does not skew the calibration. */
static void clock_pair(uint64_t *tsc, int64_t *ns)
{
    uint64_t best_gap = UINT64_MAX;
    for (int i = 0; i < 16; i++) {
        struct timespec t;
        uint64_t a = hvsim_host_tsc();
        clock_gettime(CLOCK_MONOTONIC_RAW, &t);
        uint64_t b = hvsim_host_tsc();
        if (b - a < best_gap) {
            best_gap = b - a;
            *tsc = a + (b - a) / 2;
            *ns = timespec_ns(&t);
        }
    }
}

static void calibrate(void)
{
    uint64_t c0, c1;
    int64_t t0, t1;
    struct timespec pause = { .tv_sec = 0, .tv_nsec = CALIBRATION_NS };
    clock_pair(&c0, &t0);
    while (nanosleep(&pause, &pause) != 0 && errno == EINTR)
        ;
    clock_pair(&c1, &t1);
    uint64_t hz = t1 > t0 ? (uint64_t)((unsigned __int128)(c1 - c0) * 1000000000u / (uint64_t)(t1 - t0)) : 0;
    /* A TSC slower than the reference clock would need a scale >= 2^64: never seen, but keep the
     * arithmetic defined. */
    calibrated_hz = hz > HV_REF_TIME_HZ ? hz : HV_REF_TIME_HZ + 1;
}

uint64_t clock_host_tsc_hz(void)
{
    pthread_once(&calibrate_once, calibrate);
    return calibrated_hz;
}

static void set_delta(struct hvsim *sim, int64_t delta)
{
    sim->guest_tsc_delta = delta;
    sim->tsc_sync_correction = 0;
    uint64_t guest_base = sim->host_tsc_base + (uint64_t)delta;
    sim->tsc_offset = -(int64_t)(((unsigned __int128)guest_base * sim->tsc_scale) >> 64);
}

void clock_init(struct hvsim *sim)
{
    sim->tsc_hz = sim->cfg.tsc_hz ? sim->cfg.tsc_hz : clock_host_tsc_hz();
    sim->tsc_scale = (uint64_t)(((unsigned __int128)HV_REF_TIME_HZ << 64) / sim->tsc_hz);
    sim->host_tsc_base = hvsim_host_tsc();
    set_delta(sim, sim->cfg.guest_tsc_delta);
}

uint64_t clock_ref_time(const struct hvsim *sim)
{
    uint64_t guest_tsc = hvsim_host_tsc() + (uint64_t)sim->guest_tsc_delta + (uint64_t)sim->tsc_sync_correction;
    return (uint64_t)(((unsigned __int128)guest_tsc * sim->tsc_scale) >> 64) + (uint64_t)sim->tsc_offset;
}

/* The guest TSC the guest stamped on a request is at most the true guest TSC at receipt, so
 * guest_tsc - host_tsc is at most the true delta, and its largest value seen is the best estimate.
 * Only hvsim's own clock (timer expiry, TIME_REF_COUNT) moves with it, and only forward: the page's
 * offset stays as HELLO set it, so the guest's time never jumps. */
void hvsim_observe_guest_tsc(struct hvsim *sim, uint64_t guest_tsc, uint64_t host_tsc)
{
    if (!guest_tsc)
        return;
    pthread_mutex_lock(&sim->lock);
    int64_t c = (int64_t)(guest_tsc - host_tsc) - sim->guest_tsc_delta;
    /* A correction of more than a second is not latency: a confused or rebooted guest. */
    if (c > sim->tsc_sync_correction && (uint64_t)c < sim->tsc_hz)
        sim->tsc_sync_correction = c;
    pthread_mutex_unlock(&sim->lock);
}

uint64_t hvsim_ref_time(struct hvsim *sim)
{
    pthread_mutex_lock(&sim->lock);
    uint64_t now = clock_ref_time(sim);
    pthread_mutex_unlock(&sim->lock);
    return now;
}

/* The page's three fields, or NULL if the page is disabled or outside RAM. */
static uint8_t *tsc_page(struct hvsim *sim)
{
    if (!(sim->reference_tsc_msr & HV_PAGE_ENABLE))
        return NULL;
    return hvsim_gpa(sim, sim->reference_tsc_msr & HV_PAGE_GPA_MASK, HVSIM_PAGE_SIZE);
}

#define PAGE_SEQUENCE(p) ((uint32_t *)((p) + offsetof(struct hv_reference_tsc_page, tsc_sequence)))
#define PAGE_SCALE(p) ((uint64_t *)((p) + offsetof(struct hv_reference_tsc_page, tsc_scale)))
#define PAGE_OFFSET(p) ((int64_t *)((p) + offsetof(struct hv_reference_tsc_page, tsc_offset)))

static uint32_t next_sequence(struct hvsim *sim)
{
    if (++sim->tsc_sequence == 0)
        sim->tsc_sequence = 1;
    return sim->tsc_sequence;
}

void clock_publish_tsc_page(struct hvsim *sim)
{
    uint8_t *page = tsc_page(sim);
    if (!page)
        return;
    /* Release stores: the 0 is visible before any new field. */
    __atomic_store_n(PAGE_SEQUENCE(page), 0, __ATOMIC_RELAXED);
    __atomic_store_n(PAGE_SCALE(page), sim->tsc_scale, __ATOMIC_RELEASE);
    __atomic_store_n(PAGE_OFFSET(page), sim->tsc_offset, __ATOMIC_RELEASE);
    if (sim->cfg.no_reference_tsc)
        return; /* sequence 0: "use the MSR" */
    __atomic_store_n(PAGE_SEQUENCE(page), next_sequence(sim), __ATOMIC_RELEASE);
}

void hvsim_set_guest_tsc_delta(struct hvsim *sim, int64_t delta)
{
    pthread_mutex_lock(&sim->lock);
    set_delta(sim, delta);
    clock_publish_tsc_page(sim);
    hvsim_log(sim, 1, "guest TSC delta %lld", (long long)delta);
    pthread_mutex_unlock(&sim->lock);
}

void clock_set_unsettled(struct hvsim *sim, bool on)
{
    sim->tsc_unsettled = on;
    sim->tsc_unsettled_next = 0;
    if (!on)
        clock_publish_tsc_page(sim);
    pthread_cond_signal(&sim->timer_cond); /* the timer thread unsettles the page from now on */
}

void hvsim_set_tsc_unsettled(struct hvsim *sim, bool on)
{
    pthread_mutex_lock(&sim->lock);
    clock_set_unsettled(sim, on);
    hvsim_log(sim, 1, "TSC page %s", on ? "unsettled" : "settled");
    pthread_mutex_unlock(&sim->lock);
}

/*
 * A reader's two sequence reads are nanoseconds apart, so a sequence that changes now and then
 * would almost never be seen changing. While unsettled, each call rewrites the sequence without
 * pause for a burst, and the caller waits a gap (with the lock released, so the VPs get on) before
 * the next one: readers that overlap a burst see a different sequence on every try.
 */
uint64_t clock_unsettled_tick(struct hvsim *sim, uint64_t now)
{
    if (!sim->tsc_unsettled)
        return UINT64_MAX;
    if (now >= sim->tsc_unsettled_next) {
        uint8_t *page = tsc_page(sim);
        if (page && !sim->cfg.no_reference_tsc) {
            uint64_t end = now + HVSIM_UNSETTLED_BURST;
            do {
                for (int i = 0; i < 64; i++)
                    __atomic_store_n(PAGE_SEQUENCE(page), next_sequence(sim), __ATOMIC_RELEASE);
            } while (clock_ref_time(sim) < end);
        }
        sim->tsc_unsettled_next = clock_ref_time(sim) + HVSIM_UNSETTLED_GAP;
    }
    return sim->tsc_unsettled_next;
}
