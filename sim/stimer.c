/*
 * hvsim synthetic timers: STIMERn_CONFIG / STIMERn_COUNT of every VP, expiry (a direct-mode
 * interrupt or a HV_MESSAGE_TIMER_EXPIRED message into the timer's SINT), and the optional thread
 * that runs them on time (T:timers.md; hyperv-facts.md 3.2, 3.6).
 *
 * CONFIG: 0 enable, 1 periodic, 2 lazy (accepted, no effect), 3 auto-enable, 11:4 vector (direct),
 * 12 direct, 19:16 SINT; other bits are RsvdZ and #GP here, as does direct mode when the feature is
 * not offered or its vector is below 16. An enabled message-mode timer with SINT 0 is disabled at
 * once. COUNT: one-shot = absolute reference time, periodic = period; writing 0 disables the timer,
 * a non-zero write with auto-enable sets enable. Each write re-arms: a periodic timer's first period
 * starts then; a one-shot in the past expires at once. A one-shot clears enable when it expires; a
 * periodic one re-arms at expiration + period (skipping periods already missed).
 *
 * A timer owns one message buffer: while its previous expiration message still waits in the queue,
 * a new expiration is not queued again (the TLFS allows skipped periodic signals).
 */
#include <time.h>

#include "sim/hvsim_internal.h"

#define STIMER_CONFIG_VALID 0xf1fffull /* bits 19:16, 12, 11:4, 3:0 */
#define STIMER_SINT(config) ((uint32_t)((config) >> HV_STIMER_SINT_SHIFT) & 0xfu)
#define STIMER_VECTOR(config) ((uint8_t)((config) >> HV_STIMER_VECTOR_SHIFT))
#define TIMER_THREAD_MAX_WAIT_NS 1000000000ull /* re-check at least once a second */

/* The TLFS rule: an enabled timer in message mode with SINT 0 is disabled immediately. */
static uint64_t apply_sint0_rule(uint64_t config)
{
    if ((config & HV_STIMER_ENABLE) && !(config & HV_STIMER_DIRECT) && STIMER_SINT(config) == 0)
        return config & ~HV_STIMER_ENABLE;
    return config;
}

static void arm(struct hvsim *sim, struct hvsim_stimer *t)
{
    if (!(t->config & HV_STIMER_ENABLE) || !t->count) {
        t->armed = false;
        return;
    }
    t->due = (t->config & HV_STIMER_PERIODIC) ? clock_ref_time(sim) + t->count : t->count;
    t->armed = true;
    pthread_cond_signal(&sim->timer_cond);
}

const char *stimer_write_config(struct hvsim *sim, uint32_t vp, uint32_t n, uint64_t value)
{
    if (value & ~STIMER_CONFIG_VALID)
        return "reserved bits set";
    if ((value & HV_STIMER_DIRECT) && !(sim->features & HV_FEATURE_DIRECT_STIMER))
        return "direct mode not offered";
    if ((value & HV_STIMER_DIRECT) && STIMER_VECTOR(value) < HV_SINT_MIN_VECTOR)
        return "direct-mode vector below 16";
    struct hvsim_stimer *t = &sim->vp[vp].stimer[n];
    t->config = apply_sint0_rule(value);
    if (t->config != value)
        hvsim_log(sim, 1, "vp%u: stimer%u enabled with SINT 0: disabled", vp, n);
    arm(sim, t);
    return NULL;
}

void stimer_write_count(struct hvsim *sim, uint32_t vp, uint32_t n, uint64_t value)
{
    struct hvsim_stimer *t = &sim->vp[vp].stimer[n];
    t->count = value;
    if (!value)
        t->config &= ~HV_STIMER_ENABLE;
    else if (t->config & HV_STIMER_AUTO_ENABLE)
        t->config = apply_sint0_rule(t->config | HV_STIMER_ENABLE);
    arm(sim, t);
}

static void expire(struct hvsim *sim, uint32_t vp, uint32_t n, uint64_t now)
{
    struct hvsim_stimer *t = &sim->vp[vp].stimer[n];
    sim->stats.timer_expiries++;
    if (t->config & HV_STIMER_DIRECT) {
        hvsim_raise(sim, vp, STIMER_VECTOR(t->config));
    } else {
        uint32_t sint = STIMER_SINT(t->config);
        uint8_t from_timer = (uint8_t)(n + 1);
        if (synic_timer_message_queued(sim, vp, sint, from_timer)) {
            hvsim_log(sim, 1, "vp%u: stimer%u expired while its last message still waits: skipped", vp, n);
        } else {
            struct hv_timer_message_payload p = { .timer_index = n, .expiration_time = t->due, .delivery_time = now };
            if (!synic_post(sim, vp, sint, HV_MESSAGE_TIMER_EXPIRED, &p, sizeof p, false, from_timer))
                hvsim_log(sim, 0, "vp%u: stimer%u expiration message dropped", vp, n);
        }
    }
    if (t->config & HV_STIMER_PERIODIC) {
        t->due += t->count;
        if ((int64_t)(t->due - now) <= 0)
            t->due = now + t->count;
    } else {
        t->config &= ~HV_STIMER_ENABLE;
        t->armed = false;
    }
}

uint64_t stimer_run_locked(struct hvsim *sim)
{
    uint64_t now = clock_ref_time(sim), next = UINT64_MAX;
    for (uint32_t vp = 0; vp < sim->cfg.vp_count; vp++) {
        for (uint32_t n = 0; n < HV_STIMER_COUNT; n++) {
            struct hvsim_stimer *t = &sim->vp[vp].stimer[n];
            if (t->armed && (int64_t)(t->due - now) <= 0)
                expire(sim, vp, n, now);
            if (t->armed && t->due < next)
                next = t->due;
        }
    }
    uint64_t unsettled = clock_unsettled_tick(sim, clock_ref_time(sim));
    return unsettled < next ? unsettled : next;
}

uint64_t hvsim_run_timers(struct hvsim *sim)
{
    pthread_mutex_lock(&sim->lock);
    uint64_t next = stimer_run_locked(sim);
    pthread_mutex_unlock(&sim->lock);
    return next;
}

static void *timer_thread(void *arg)
{
    struct hvsim *sim = arg;
    pthread_mutex_lock(&sim->lock);
    while (!sim->timer_thread_stop) {
        uint64_t next = stimer_run_locked(sim);
        if (next == UINT64_MAX) {
            pthread_cond_wait(&sim->timer_cond, &sim->lock);
            continue;
        }
        uint64_t now = clock_ref_time(sim);
        if ((int64_t)(next - now) <= 0)
            continue;
        uint64_t wait_ns = next - now < TIMER_THREAD_MAX_WAIT_NS / 100 ? (next - now) * 100 : TIMER_THREAD_MAX_WAIT_NS;
        struct timespec deadline;
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        uint64_t ns = (uint64_t)deadline.tv_nsec + wait_ns;
        deadline.tv_sec += (time_t)(ns / 1000000000u);
        deadline.tv_nsec = (long)(ns % 1000000000u);
        pthread_cond_timedwait(&sim->timer_cond, &sim->lock, &deadline);
    }
    pthread_mutex_unlock(&sim->lock);
    return NULL;
}

bool hvsim_start_timer_thread(struct hvsim *sim)
{
    pthread_mutex_lock(&sim->lock);
    bool ok = sim->timer_thread_running;
    if (!ok) {
        sim->timer_thread_stop = false;
        ok = pthread_create(&sim->timer_thread, NULL, timer_thread, sim) == 0;
        sim->timer_thread_running = ok;
        if (!ok)
            hvsim_log(sim, 0, "cannot start the timer thread");
    }
    pthread_mutex_unlock(&sim->lock);
    return ok;
}

void stimer_stop_thread(struct hvsim *sim)
{
    pthread_mutex_lock(&sim->lock);
    bool running = sim->timer_thread_running;
    sim->timer_thread_stop = true;
    pthread_cond_signal(&sim->timer_cond);
    pthread_mutex_unlock(&sim->lock);
    if (running)
        pthread_join(sim->timer_thread, NULL);
    sim->timer_thread_running = false;
}
