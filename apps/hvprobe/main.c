/*
 * hvprobe: brings up the Hyper-V layer and shows it working: the features found, the SynIC on every
 * CPU, messages both ways on every SINT of every CPU, event flags, the pending/EOM rule, retries on
 * transient statuses, the host's bad input dropped, reference time, the synthetic timer driving the
 * kernel's timers, and the costs of a hypercall, a message delivery and a timer interrupt.
 *
 * Needs Hyper-V or hvsim: without either it says so and exits with status 3. The round trips use
 * hvsim's echo and control ports (hv/proto/simtest.h), so on real Hyper-V only the checks that need
 * no host-side partner run (VMBus brings the partner there).
 *
 * Command line: stimer=direct|message|off (default direct where offered), rounds=N (measurement
 * repetitions, default 200), selftest=0 (report only). On real Hyper-V, hv_init() has already made
 * timer 0 the kernel clock in direct mode, so there stimer= does not change the mode.
 */
#include "arch-x86_64/cpu.h"
#include "arch-x86_64/irql.h"
#include "arch-x86_64/tsc.h"
#include "hv/hv.h"
#include "hv/proto/simtest.h"
#include "hv/reftime.h"
#include "kernel/app.h"
#include "kernel/log.h"
#include "kernel/percpu.h"
#include "kernel/selfcheck.h"
#include "kernel/string.h"
#include "kernel/sync.h"
#include "kernel/thread.h"
#include "kernel/timer.h"

const char *const app_name = "hvprobe";
const char *const app_cmdline_keys[] = { "stimer", "rounds", "selftest", NULL };

#define TEST_TYPE 0x42u      /* message type of the round trips (any non-zero without the MSB) */
#define WAIT_NS 2000000000ull

/* What the test handlers saw, per CPU and SINT. */
struct seen {
    volatile uint32_t messages, events, last_cookie, last_flag, order_errors;
    volatile uint64_t last_tsc;
    volatile irql_t irql;
    volatile uint32_t cpu;
};
static struct seen seen[MAX_CPUS][HV_SINT_COUNT];
static struct event arrived; /* auto-reset: set by every handler call */

struct echo_payload {
    struct hvsim_echo_header to;
    uint8_t pad[2];
    uint32_t cookie;
};

static status_t test_message(void *ctx, uint32_t cpu, const struct hv_message *msg)
{
    uint8_t sint = (uint8_t)(uintptr_t)ctx;
    if (msg->header.message_type != TEST_TYPE)
        return STATUS_NOT_SUPPORTED;
    struct echo_payload p;
    if (msg->header.payload_size < sizeof p)
        return STATUS_NOT_SUPPORTED;
    memcpy(&p, msg->payload, sizeof p);
    struct seen *s = &seen[cpu][sint];
    if (p.cookie != s->last_cookie + 1)
        s->order_errors++;
    s->last_cookie = p.cookie;
    s->last_tsc = rdtsc();
    s->irql = irql_current();
    s->cpu = this_cpu()->id;
    s->messages++;
    event_set(&arrived);
    return STATUS_OK;
}

static void test_event(void *ctx, uint32_t cpu, uint32_t flag)
{
    uint8_t sint = (uint8_t)(uintptr_t)ctx;
    struct seen *s = &seen[cpu][sint];
    s->last_flag = flag;
    s->last_tsc = rdtsc();
    s->events++;
    event_set(&arrived);
}

static bool wait_until(volatile uint32_t *counter, uint32_t want)
{
    uint64_t end = tsc_ns_since_boot() + WAIT_NS;
    while (*counter < want) {
        if (tsc_ns_since_boot() > end)
            return false;
        if (event_wait(&arrived, 10000000) == STATUS_OK)
            continue;
    }
    return true;
}

static uint16_t echo(uint32_t cpu, uint8_t sint, uint32_t cookie)
{
    struct echo_payload p = { .to = { .vp = (uint8_t)cpu, .sint = sint }, .cookie = cookie };
    return hv_post_message(HVSIM_CONN_ECHO, TEST_TYPE, &p, sizeof p);
}

static uint16_t control(uint32_t cmd, uint32_t vp, uint32_t sint, uint32_t arg)
{
    struct hvsim_control_msg c = { .cmd = cmd, .vp = vp, .sint = sint, .arg = arg };
    return hv_post_message(HVSIM_CONN_CONTROL, 1, &c, sizeof c);
}

/* ---- the checks, each run on one CPU by a pinned thread ---- */

struct cpu_job {
    uint32_t cpu;
    uint32_t ok_msgs, ok_events;
};

static bool test_sint(uint8_t s)
{
    return s != HV_STIMER_SINT && s != 15; /* 15 stays unregistered: the "nobody's SINT" check */
}

static void round_trips_on_cpu(void *arg)
{
    struct cpu_job *j = arg;
    for (uint8_t s = 0; s < HV_SINT_COUNT; s++) {
        if (!test_sint(s))
            continue;
        struct seen *st = &seen[j->cpu][s];
        uint32_t before = st->messages;
        if (echo(j->cpu, s, st->last_cookie + 1) == HV_STATUS_SUCCESS && wait_until(&st->messages, before + 1) &&
            st->cpu == j->cpu)
            j->ok_msgs++;
        before = st->events;
        uint16_t flag = (uint16_t)(s * 7 + j->cpu);
        if (hv_signal_event(HVSIM_CONN_EVENT_ECHO + s, flag) == HV_STATUS_SUCCESS &&
            wait_until(&st->events, before + 1) && st->last_flag == flag)
            j->ok_events++;
    }
}

static void burst_on_cpu(void *arg)
{
    /* At DISPATCH the SynIC DPC cannot run, so the first message sits in the slot and the rest queue
     * behind it in hvsim with the pending flag set: they arrive one per EOM, in order. */
    struct cpu_job *j = arg;
    const uint8_t s = 0; /* a DISPATCH-level test SINT */
    struct seen *st = &seen[j->cpu][s];
    uint32_t before = st->messages, errors = st->order_errors;
    struct hv_synic_stats a, b;
    hv_synic_get_stats(j->cpu, &a);
    irql_t old = irql_raise(IRQL_DISPATCH);
    uint32_t sent = 0;
    for (int i = 0; i < 8; i++)
        if (echo(j->cpu, s, st->last_cookie + 1 + (uint32_t)i) == HV_STATUS_SUCCESS)
            sent++;
    irql_lower(old);
    bool all = wait_until(&st->messages, before + sent);
    hv_synic_get_stats(j->cpu, &b);
    CHECK(sent == 8 && all && st->order_errors == errors && b.eoms - a.eoms >= 7,
          "cpu%u: 8 messages into one slot: %u sent, %u arrived in order, %llu EOMs (pending/EOM rule)", j->cpu,
          sent, st->messages - before, (unsigned long long)(b.eoms - a.eoms));
}

static void run_on_each_cpu(thread_fn fn, struct cpu_job *jobs)
{
    struct thread *t[MAX_CPUS] = { 0 };
    for (uint32_t i = 0; i < MAX_CPUS; i++) {
        if (!cpus[i] || !cpus[i]->online)
            continue;
        jobs[i].cpu = i;
        if (thread_create("probe", fn, &jobs[i], (int)i, &t[i]) != STATUS_OK)
            CHECK(false, "thread on cpu%u", i);
    }
    for (uint32_t i = 0; i < MAX_CPUS; i++)
        if (t[i])
            thread_join(t[i]);
}

static status_t register_test_handlers(void)
{
    for (uint8_t s = 0; s < HV_SINT_COUNT; s++) {
        if (!test_sint(s))
            continue;
        /* Even SINTs at DISPATCH (from the SynIC DPC), odd ones in the interrupt itself. */
        struct hv_sint_handler h = { .name = "probe", .irql = (s & 1) ? hv_sint_device_irql() : IRQL_DISPATCH,
                                     .message = test_message, .event = test_event, .event_flags = 256,
                                     .ctx = (void *)(uintptr_t)s };
        status_t st = hv_sint_register(s, &h);
        if (st != STATUS_OK)
            return st;
    }
    return STATUS_OK;
}

static void check_messages_and_events(void)
{
    struct cpu_job jobs[MAX_CPUS];
    memset(jobs, 0, sizeof jobs);
    run_on_each_cpu(round_trips_on_cpu, jobs);
    unsigned per_cpu = 0;
    for (uint8_t s = 0; s < HV_SINT_COUNT; s++)
        per_cpu += test_sint(s);
    for (uint32_t i = 0; i < MAX_CPUS; i++) {
        if (!cpus[i] || !cpus[i]->online)
            continue;
        CHECK(jobs[i].ok_msgs == per_cpu, "cpu%u: message round trips on %u of %u SINTs (guest -> hvsim -> this CPU's slot)",
              i, jobs[i].ok_msgs, per_cpu);
        CHECK(jobs[i].ok_events == per_cpu, "cpu%u: event flags on %u of %u SINTs (HvSignalEvent -> SIEF)", i,
              jobs[i].ok_events, per_cpu);
    }
    CHECK(seen[0][0].irql == IRQL_DISPATCH && seen[0][1].irql == hv_sint_device_irql(),
          "handlers run at their IRQL (DISPATCH: %u, device: %u)", seen[0][0].irql, seen[0][1].irql);
    memset(jobs, 0, sizeof jobs);
    run_on_each_cpu(burst_on_cpu, jobs);
}

static void check_transient(void)
{
    uint32_t me = this_cpu()->id;
    struct seen *st = &seen[me][2];
    uint32_t before = st->messages;
    uint16_t c = control(HVSIM_CTL_FAIL_POSTS, 0, 0, 3);
    uint16_t r = echo(me, 2, st->last_cookie + 1);
    CHECK(c == HV_STATUS_SUCCESS && r == HV_STATUS_SUCCESS && wait_until(&st->messages, before + 1),
          "three INSUFFICIENT_BUFFERS answers are retried and the 4th try delivers (status %s)", hv_status_name(r));
    CHECK(hv_post_message(0x7e5ff, TEST_TYPE, "x", 1) == HV_STATUS_INVALID_CONNECTION_ID,
          "a post to an unknown connection id fails with INVALID_CONNECTION_ID, no retries");
}

static bool stats_grow(uint64_t (*field)(const struct hv_synic_stats *), uint64_t before)
{
    uint64_t end = tsc_ns_since_boot() + WAIT_NS;
    struct hv_synic_stats s;
    do {
        thread_sleep_ns(1000000);
        hv_synic_get_stats(this_cpu()->id, &s);
        if (field(&s) > before)
            return true;
    } while (tsc_ns_since_boot() < end);
    return false;
}

static uint64_t f_bad_size(const struct hv_synic_stats *s) { return s->dropped_bad_size; }
static uint64_t f_unknown(const struct hv_synic_stats *s) { return s->dropped_unknown_type; }
static uint64_t f_nobody(const struct hv_synic_stats *s) { return s->dropped_no_handler; }
static uint64_t f_stray(const struct hv_synic_stats *s) { return s->stray_events; }

static void check_bad_input(void)
{
    uint32_t me = this_cpu()->id;
    struct hv_synic_stats s;
    hv_synic_get_stats(me, &s);
    CHECK(control(HVSIM_CTL_BAD_SIZE, me, 0, 241) == HV_STATUS_SUCCESS && stats_grow(f_bad_size, s.dropped_bad_size),
          "a message claiming 241 payload bytes is logged and dropped");
    CHECK(control(HVSIM_CTL_UNKNOWN_TYPE, me, 0, 0x7777) == HV_STATUS_SUCCESS &&
              stats_grow(f_unknown, s.dropped_unknown_type),
          "a message of an unknown type is logged and dropped");
    CHECK(echo(me, 15, 1) == HV_STATUS_SUCCESS && stats_grow(f_nobody, s.dropped_no_handler),
          "a message in a SINT nobody registered is logged and dropped");
    CHECK(control(HVSIM_CTL_STRAY_EVENT, me, 0, 2000) == HV_STATUS_SUCCESS && stats_grow(f_stray, s.stray_events),
          "an event flag that belongs to nobody is logged and dropped");
    /* The handlers still work after all that. */
    struct seen *st = &seen[me][0];
    uint32_t before = st->messages;
    CHECK(echo(me, 0, st->last_cookie + 1) == HV_STATUS_SUCCESS && wait_until(&st->messages, before + 1),
          "messages still flow after the bad input");
}

static void check_reftime(void)
{
    uint64_t prev = hv_ref_time(), backwards = 0;
    for (int i = 0; i < 2000; i++) {
        uint64_t t = hv_ref_time();
        if (t < prev)
            backwards++;
        prev = t;
    }
    CHECK(backwards == 0, "reference time (%s) is monotonic over 2000 reads", hv_ref_time_source());
    uint64_t t0 = hv_ref_time(), n0 = tsc_ns_since_boot();
    thread_sleep_ns(50000000);
    uint64_t dt = (hv_ref_time() - t0) * 100, dn = tsc_ns_since_boot() - n0;
    CHECK(dt > dn * 9 / 10 && dt < dn * 11 / 10, "reference time advanced %llu us while the TSC says %llu us",
          (unsigned long long)dt / 1000, (unsigned long long)dn / 1000);
    if (strcmp(hv_binding_name(), "hvsim") == 0) {
        uint64_t before = hv_ref_time_unsettled_reads();
        uint16_t c = control(HVSIM_CTL_TSC_UNSETTLED, 0, 0, 1);
        thread_sleep_ns(2000000);
        uint64_t a = hv_ref_time(), b = hv_ref_time();
        (void)control(HVSIM_CTL_TSC_UNSETTLED, 0, 0, 0);
        CHECK(c == HV_STATUS_SUCCESS && b >= a && a >= prev,
              "while hvsim keeps rewriting the TSC page, reads retry and time still moves forward (%llu reads gave up "
              "and used the MSR)",
              (unsigned long long)(hv_ref_time_unsettled_reads() - before));
    }
}

struct tick {
    struct ktimer timer;
    struct dpc dpc;
    struct event done;
    uint64_t fired_tsc;
};

static void tick_dpc(struct dpc *d, void *ctx)
{
    (void)d;
    struct tick *t = ctx;
    t->fired_tsc = rdtsc();
    event_set(&t->done);
}

static void check_timer(const char *mode_arg)
{
    bool allow_direct = strcmp(mode_arg, "message") != 0;
    status_t s = hv_clock_install(allow_direct);
    CHECK(s == STATUS_OK, "kernel timers moved to the synthetic timer (%s mode): %s", hv_stimer_mode_name(),
          status_name(s));
    if (s != STATUS_OK)
        return;
    uint64_t irqs0 = this_cpu()->timer_interrupts, msgs0 = hv_stimer_messages(this_cpu()->id);
    struct tick t;
    ktimer_init(&t.timer);
    dpc_init(&t.dpc, tick_dpc, &t);
    event_init(&t.done, EVENT_SYNCHRONIZATION, false);
    uint64_t start = rdtsc();
    ktimer_set(&t.timer, 20000000, 0, &t.dpc);
    s = event_wait(&t.done, 2 * WAIT_NS);
    uint64_t us = tsc_to_ns(t.fired_tsc - start) / 1000;
    CHECK(s == STATUS_OK && us >= 20000 && us < 1000000, "a 20 ms kernel timer fired after %llu us on it",
          (unsigned long long)us);
    uint64_t t0 = tsc_ns_since_boot();
    thread_sleep_ns(30000000);
    uint64_t slept = (tsc_ns_since_boot() - t0) / 1000;
    CHECK(slept >= 30000, "thread_sleep(30 ms) on it slept %llu us", (unsigned long long)slept);
    if (hv_stimer_mode() == HV_STIMER_MODE_MESSAGE)
        CHECK(hv_stimer_messages(this_cpu()->id) > msgs0, "timer messages arrived on SINT%u (%llu)", HV_STIMER_SINT,
              (unsigned long long)(hv_stimer_messages(this_cpu()->id) - msgs0));
    else
        CHECK(this_cpu()->timer_interrupts > irqs0, "direct timer interrupts arrived on vector %#x (%llu)",
              VECTOR_TIMER, (unsigned long long)(this_cpu()->timer_interrupts - irqs0));
}

/* ---- measurements ---- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void sort_u64(uint64_t *v, size_t n)
{
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && cmp_u64(&v[j - 1], &v[j]) > 0; j--) {
            uint64_t t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
}

static void report(const char *what, uint64_t *v, size_t n)
{
    if (!n) {
        kprintf("  %-34s no samples\n", what);
        return;
    }
    sort_u64(v, n);
    kprintf("  %-34s n=%zu  min %llu  median %llu  p90 %llu cycles  (median %llu us)\n", what, n,
            (unsigned long long)v[0], (unsigned long long)v[n / 2], (unsigned long long)v[n * 9 / 10],
            (unsigned long long)(tsc_to_ns(v[n / 2]) / 1000));
}

#define MAX_ROUNDS 2000
static uint64_t samples[MAX_ROUNDS];

static void measure(uint32_t rounds)
{
    kprintf("\n== costs as this guest sees them (%s binding; rdtsc around each, %u rounds) ==\n", hv_binding_name(),
            rounds);
    /* A hypercall that does nothing on the host: HvSignalEvent (fast) to a connection nobody owns. */
    size_t n = 0;
    for (uint32_t i = 0; i < rounds; i++) {
        uint64_t t0 = rdtsc();
        (void)hv_signal_event(0x7e5ff, 0);
        samples[n++] = rdtsc() - t0;
    }
    report("hypercall (fast, rejected)", samples, n);
    /* An MSR the hypervisor must emulate. */
    n = 0;
    for (uint32_t i = 0; i < rounds; i++) {
        uint64_t t0 = rdtsc();
        (void)hv_vp_index(0);
        uint64_t v = hv_ref_time();
        (void)v;
        samples[n++] = rdtsc() - t0;
    }
    report("reference time read", samples, n);
    if (strcmp(hv_binding_name(), "hyper-v") == 0)
        return;
    /* Post to the echo port and wait for the message in this CPU's slot (device-level SINT 1). */
    uint32_t me = this_cpu()->id;
    struct seen *st = &seen[me][1];
    n = 0;
    for (uint32_t i = 0; i < rounds; i++) {
        uint32_t before = st->messages;
        uint64_t t0 = rdtsc();
        if (echo(me, 1, st->last_cookie + 1) != HV_STATUS_SUCCESS)
            break;
        irql_t old = irql_raise(IRQL_DISPATCH);
        while (st->messages == before && rdtsc() - t0 < ns_to_tsc(WAIT_NS))
            cpu_relax();
        irql_lower(old);
        if (st->messages == before)
            break;
        samples[n++] = st->last_tsc - t0;
    }
    report("message round trip (post->handler)", samples, n);
    /* Timer: arm 1 ms ahead, measure how late the expiry runs. */
    struct tick t;
    ktimer_init(&t.timer);
    dpc_init(&t.dpc, tick_dpc, &t);
    event_init(&t.done, EVENT_SYNCHRONIZATION, false);
    n = 0;
    for (uint32_t i = 0; i < rounds / 4 && i < MAX_ROUNDS; i++) {
        uint64_t due = rdtsc() + ns_to_tsc(1000000);
        ktimer_set(&t.timer, 1000000, 0, &t.dpc);
        if (event_wait(&t.done, WAIT_NS) != STATUS_OK)
            break;
        samples[n++] = t.fired_tsc > due ? t.fired_tsc - due : 0;
    }
    report("timer lateness (1 ms one-shot)", samples, n);
}

int app_main(void)
{
    const struct cmdline *cl = kernel_cmdline();
    status_t s = hv_init();
    if (s == STATUS_NOT_FOUND) {
        kprintf("hvprobe: needs Hyper-V or hvsim and found neither (run it with `make run APP=hvprobe`, which starts "
                "hvsim)\n");
        return 3;
    }
    if (s != STATUS_OK) {
        kprintf("hvprobe: the Hyper-V layer did not come up: %s\n", status_name(s));
        return 4;
    }
    kprintf("\n== Hyper-V layer: %s binding ==\n", hv_binding_name());
    for (uint32_t i = 0; i < MAX_CPUS; i++)
        if (cpus[i] && cpus[i]->online)
            kprintf("  cpu%u: VP index %u, SynIC up, SINT vector %#x\n", i, hv_vp_index(i), hv_sint_vector());
    kprintf("  reference time: %s, now %llu x 100 ns\n", hv_ref_time_source(), (unsigned long long)hv_ref_time());
    if (!cmdline_bool(cl, "selftest", true))
        return 0;
    event_init(&arrived, EVENT_SYNCHRONIZATION, false);
    kprintf("\n== self-checks ==\n");
    bool sim = strcmp(hv_binding_name(), "hyper-v") != 0;
    if (sim) {
        s = register_test_handlers();
        CHECK(s == STATUS_OK, "test handlers registered on 14 SINTs: %s", status_name(s));
        check_messages_and_events();
        check_transient();
        check_bad_input();
    } else {
        kprintf("  (real Hyper-V: no echo partner for round trips; VMBus provides one)\n");
    }
    check_reftime();
    const char *mode = cmdline_str(cl, "stimer", "direct");
    if (strcmp(mode, "off") != 0)
        check_timer(mode);
    measure((uint32_t)cmdline_u64(cl, "rounds", 200, 1, MAX_ROUNDS));
    kprintf("\nhvprobe: %u checks passed, %u failed\n", selfcheck_passed, selfcheck_failed);
    return selfcheck_failed ? 1 : 0;
}
