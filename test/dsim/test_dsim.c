/*
 * test_dsim: the deterministic platform's own promises (test/dsim/dsim.h): a run is a function of its
 * seed, waits cost virtual time only, a deadlock and a hang end the run with their reason, an
 * interrupt waits for the IRQL to allow it, a contended spinlock lets its holder run, and hvsim's
 * pthreads (through test/dsim/dsim_platform.h) are scheduler contexts. A run that fails leaves its
 * contexts abandoned (dsim.h), so those cases run in a child process.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "test/dsim/dsim.h"

#include "arch-x86_64/lapic.h"
#include "arch-x86_64/spinlock.h"
#include "kernel/app.h"
#include "kernel/cmdline.h"
#include "kernel/dpc.h"
#include "kernel/percpu.h"
#include "kernel/sync.h"
#include "kernel/thread.h"

/* netvsc (linked with the dsim guest layers) reads the kernel command line when unconfigured: empty. */
static struct cmdline test_cmdline;
const struct cmdline *kernel_cmdline(void) { return &test_cmdline; }

#undef clock_gettime

/* ---- a run is a function of its seed ---- */

static spinlock_t lock = SPINLOCK_INIT;
static uint32_t shared, order[64], order_len;

static void bumper(void *arg)
{
    for (int i = 0; i < 20; i++) {
        irql_t old = spin_lock(&lock);
        shared++;
        if (order_len < 64)
            order[order_len++] = (uint32_t)(uintptr_t)arg;
        spin_unlock(&lock, old);
    }
}

static void bumpers(void *arg)
{
    (void)arg;
    struct dsim_ctx *c[3];
    for (uint32_t i = 0; i < 3; i++)
        c[i] = dsim_spawn_guest(i, "bumper", bumper, (void *)(uintptr_t)i);
    for (uint32_t i = 0; i < 3; i++)
        dsim_join(c[i]);
}

static uint64_t run_bumpers(uint64_t seed, uint32_t order_out[64])
{
    shared = order_len = 0;
    struct dsim_config c = { .seed = seed, .vps = 3, .preempt_one_in = 2 };
    assert_int_equal(dsim_run(&c, bumpers, NULL), DSIM_OK);
    assert_int_equal(shared, 60); /* the spinlock held: no lost update */
    memcpy(order_out, order, sizeof order);
    return dsim_trace_hash();
}

static void test_same_seed_same_run(void **state)
{
    (void)state;
    uint32_t a[64], b[64], c[64];
    uint64_t h1 = run_bumpers(7, a), h2 = run_bumpers(7, b), h3 = run_bumpers(8, c);
    assert_int_equal(h1, h2);
    assert_memory_equal(a, b, sizeof a);
    assert_true(h1 != h3 || memcmp(a, c, sizeof a)); /* another seed, another interleaving */
}

/* ---- virtual time ---- */

static status_t waited;
static uint64_t waited_ns;

static void wait_5s(void *arg)
{
    (void)arg;
    struct event e;
    event_init(&e, EVENT_NOTIFICATION, false);
    uint64_t t0 = dsim_now_ns();
    waited = event_wait(&e, 5000000000ull);
    waited_ns = dsim_now_ns() - t0;
}

static void main_wait(void *arg)
{
    (void)arg;
    dsim_run_on(0, wait_5s, NULL);
}

static void test_a_5s_timeout_is_free(void **state)
{
    (void)state;
    struct timespec w0, w1;
    clock_gettime(CLOCK_MONOTONIC, &w0);
    struct dsim_config c = { .seed = 1, .vps = 1 };
    assert_int_equal(dsim_run(&c, main_wait, NULL), DSIM_OK);
    clock_gettime(CLOCK_MONOTONIC, &w1);
    assert_int_equal(waited, STATUS_TIMEOUT);
    assert_true(waited_ns >= 5000000000ull && waited_ns < 5001000000ull);
    assert_true(dsim_steps() < 100);
    assert_true((w1.tv_sec - w0.tv_sec) * 1000000000ll + (w1.tv_nsec - w0.tv_nsec) < 1000000000ll);
}

/* ---- deadlocks and hangs end the run (in a child: a failed run's contexts are abandoned) ---- */

static void wait_forever(void *arg)
{
    (void)arg;
    struct event e;
    event_init(&e, EVENT_NOTIFICATION, false);
    waited = event_wait(&e, WAIT_FOREVER); /* never returns: the run ends as a deadlock */
}

static void spin_forever(void *arg)
{
    (void)arg;
    for (;;)
        cpu_relax();
}

static void main_on0(void *arg)
{
    dsim_run_on(0, (void (*)(void *))arg, NULL);
}

static int run_in_child(void (*fn)(void *))
{
    pid_t pid = fork();
    if (pid == 0) {
        struct dsim_config c = { .seed = 3, .vps = 1, .max_virtual_ns = 10ull * 1000000000ull };
        enum dsim_result r = dsim_run(&c, main_on0, (void *)fn);
        _exit((int)r);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_deadlock_and_hang_are_reported(void **state)
{
    (void)state;
    assert_int_equal(run_in_child(wait_forever), DSIM_DEADLOCK);
    assert_int_equal(run_in_child(spin_forever), DSIM_HANG);
}

/* ---- interrupts wait for the IRQL; a self-IPI at PASSIVE runs at once ---- */

/* Recorded inside the run, asserted after it (cmocka's failures jump: not from a context's stack). */
static uint32_t dpc_runs, runs_at_dispatch, runs_after_lower, queued;
static irql_t dpc_irql;

static void count_dpc(struct dpc *d, void *ctx)
{
    (void)d;
    (void)ctx;
    dpc_runs++;
    dpc_irql = irql_current();
}

static void irql_job(void *arg)
{
    (void)arg;
    struct dpc d;
    dpc_init(&d, count_dpc, NULL);
    irql_t old = irql_raise(IRQL_DISPATCH);
    queued = dpc_queue(&d);
    for (int i = 0; i < 50; i++)
        thread_yield(); /* other contexts run; this CPU stays at DISPATCH */
    runs_at_dispatch = dpc_runs;
    irql_lower(old); /* the dispatch interrupt is taken here */
    runs_after_lower = dpc_runs;
}

static void main_irql(void *arg)
{
    (void)arg;
    dsim_run_on(0, irql_job, NULL);
}

static void test_interrupts_wait_for_the_irql(void **state)
{
    (void)state;
    dpc_runs = 0;
    struct dsim_config c = { .seed = 5, .vps = 2, .preempt_one_in = 2 };
    assert_int_equal(dsim_run(&c, main_irql, NULL), DSIM_OK);
    assert_true(queued);
    assert_int_equal(runs_at_dispatch, 0);
    assert_int_equal(runs_after_lower, 1);
    assert_int_equal(dpc_irql, IRQL_DISPATCH);
}

/* ---- hvsim's pthreads are contexts (dsim_platform.h redirects these calls) ---- */

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int ready, timed_out, created, joined;
static void *joined_ret;

static void *waiter(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&m);
    struct timespec ts;
    dsim_clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += 2;
    while (!ready)
        if (pthread_cond_timedwait(&cv, &m, &ts) != 0) {
            timed_out = 1;
            break;
        }
    pthread_mutex_unlock(&m);
    return (void *)(uintptr_t)42;
}

static void main_pthreads(void *arg)
{
    (void)arg;
    pthread_t t;
    created = pthread_create(&t, NULL, waiter, NULL) == 0;
    dsim_sleep_ns(1000000);
    pthread_mutex_lock(&m);
    ready = 1;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&m);
    joined = created && pthread_join(t, &joined_ret) == 0;
}

static void test_pthreads_are_contexts(void **state)
{
    (void)state;
    ready = timed_out = 0;
    struct dsim_config c = { .seed = 9, .vps = 1 };
    assert_int_equal(dsim_run(&c, main_pthreads, NULL), DSIM_OK);
    assert_true(created && joined);
    assert_ptr_equal(joined_ret, (void *)(uintptr_t)42);
    assert_int_equal(timed_out, 0);
    assert_true(dsim_now_ns() - 1000000000ull < 2000000000ull); /* woken by the signal, not the deadline */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_seed_same_run),
        cmocka_unit_test(test_a_5s_timeout_is_free),
        cmocka_unit_test(test_deadlock_and_hang_are_reported),
        cmocka_unit_test(test_interrupts_wait_for_the_irql),
        cmocka_unit_test(test_pthreads_are_contexts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
