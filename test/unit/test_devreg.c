/*
 * The device contracts' rules, hosted: the registry (kernel/devreg.c) through the block device
 * contract (kernel/blkdev.c) with a fake block driver (no storvsc yet), and the network device
 * contract's own rules (kernel/netdev.c) with a fake NIC. The kernel services they use (spinlocks,
 * events, sleeping, the log, DPCs) are small pthread stand-ins below: DPCs run at once at DISPATCH
 * on the caller's thread, "threads" are pthreads.
 *
 * Each order of events the contracts name has a test: found, held, gone (rescind) with and
 * without a holder, unregister (remove) with a holder, gone between a find and an open; and every
 * request rule: the checks before the driver, completion exactly once, the buffer the caller's
 * only at completion.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <sched.h>

#include <cmocka.h>

#include "arch-x86_64/irql.h"
#include "arch-x86_64/spinlock.h"
#include "kernel/blkdev.h"
#include "kernel/dpc.h"
#include "kernel/fmt.h"
#include "kernel/log.h"
#include "kernel/netdev.h"
#include "kernel/percpu.h"
#include "kernel/sync.h"
#include "kernel/thread.h"
#include "test/lib/test_util.h"

/* ---- the kernel, as far as the contracts use it ---- */

__thread volatile irql_t hosted_irql;
void hosted_take_pending(void) {}
uint32_t cpu_count = 2;

void irql_violation(const char *what, irql_t have, irql_t limit, const char *file, int line)
{
    fprintf(stderr, "IRQL violation: %s at %u (limit %u), %s:%d\n", what, have, limit, file, line);
    abort();
}

void raw_spin_lock(spinlock_t *l)
{
    while (__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE))
        sched_yield();
}

void raw_spin_unlock(spinlock_t *l) { __atomic_store_n(&l->locked, 0, __ATOMIC_RELEASE); }

void event_init(struct event *e, enum event_type type, bool signaled)
{
    __atomic_store_n(&e->signaled, signaled, __ATOMIC_RELEASE);
    e->auto_reset = type == EVENT_SYNCHRONIZATION;
}

void event_set(struct event *e) { __atomic_store_n(&e->signaled, true, __ATOMIC_RELEASE); }
void event_reset(struct event *e) { __atomic_store_n(&e->signaled, false, __ATOMIC_RELEASE); }
bool event_is_set(struct event *e) { return __atomic_load_n(&e->signaled, __ATOMIC_ACQUIRE); }

status_t event_wait(struct event *e, uint64_t timeout_ns)
{
    int64_t end = now_ns() + (timeout_ns > INT64_MAX / 2 ? INT64_MAX / 2 : (int64_t)timeout_ns);
    while (!event_is_set(e)) {
        if (now_ns() >= end)
            return STATUS_TIMEOUT;
        sleep_us(100);
    }
    if (e->auto_reset)
        event_reset(e);
    return STATUS_OK;
}

void thread_sleep_ns(uint64_t ns) { sleep_us((long)(ns / 1000)); }

static char log_text[16384];
static size_t log_len;
static pthread_mutex_t log_mutex = PTHREAD_MUTEX_INITIALIZER;

void klog(enum log_level lvl, const char *fmt, ...)
{
    (void)lvl;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    fmt_vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&log_mutex);
    size_t n = strlen(line);
    if (log_len + n + 2 < sizeof log_text) {
        memcpy(log_text + log_len, line, n);
        log_len += n;
        log_text[log_len++] = '\n';
        log_text[log_len] = 0;
    }
    pthread_mutex_unlock(&log_mutex);
    if (getenv("VERBOSE"))
        fprintf(stderr, "%s\n", line);
}

static bool logged(const char *needle)
{
    pthread_mutex_lock(&log_mutex);
    bool found = strstr(log_text, needle) != NULL;
    pthread_mutex_unlock(&log_mutex);
    return found;
}

void *kzalloc(size_t size) { return calloc(1, size); }
void kfree(void *p) { free(p); }

void dpc_init(struct dpc *d, dpc_fn fn, void *ctx)
{
    memset(d, 0, sizeof *d);
    d->fn = fn;
    d->ctx = ctx;
    d->target_cpu = -1;
}

void dpc_set_target(struct dpc *d, int32_t cpu) { d->target_cpu = cpu; }

/* Runs it now, at DISPATCH, on the caller's thread. */
bool dpc_queue(struct dpc *d)
{
    irql_t old = irql_raise(IRQL_DISPATCH);
    d->fn(d, d->ctx);
    irql_lower(old);
    return true;
}

static void at_dispatch(void (*fn)(void *), void *arg)
{
    irql_t old = irql_raise(IRQL_DISPATCH);
    fn(arg);
    irql_lower(old);
}

/* ---- a fake block driver: keeps what it is given, completes when told ---- */

#define FAKE_MAX 16

struct fake_blk {
    struct blkdev dev;
    status_t submit_status;              /* what submit answers (STATUS_OK: it keeps the request) */
    struct blkdev_request *held[FAKE_MAX];
    uint32_t held_count, submits, releases;
};

static status_t fake_submit(void *drv, struct blkdev_request *r)
{
    struct fake_blk *f = drv;
    __atomic_add_fetch(&f->submits, 1, __ATOMIC_RELAXED);
    if (f->submit_status != STATUS_OK)
        return f->submit_status;
    assert_true(f->held_count < FAKE_MAX);
    f->held[f->held_count++] = r;
    return STATUS_OK;
}

static void fake_blk_release(struct blkdev *dev)
{
    struct fake_blk *f = container_of(dev, struct fake_blk, dev);
    __atomic_add_fetch(&f->releases, 1, __ATOMIC_RELEASE);
}

static const struct blkdev_ops fake_blk_ops = { .submit = fake_submit, .release = fake_blk_release };

static struct fake_blk *fake_blk_new(uint64_t capacity, uint32_t flags)
{
    struct fake_blk *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->dev.ops = &fake_blk_ops;
    f->dev.drv = f;
    f->dev.driver = "fake";
    f->dev.capacity = capacity;
    f->dev.block_size = 512;
    f->dev.queues = 2;
    f->dev.max_blocks = 256;
    f->dev.flags = flags;
    return f;
}

struct completion_args {
    struct fake_blk *f;
    struct blkdev_request *r;
    status_t status;
};

static void complete_fn(void *arg)
{
    struct completion_args *c = arg;
    blkdev_complete(&c->f->dev, c->r, c->status);
}

/* The driver completes the i-th request it holds (at DISPATCH, as the contract says). */
static void fake_complete(struct fake_blk *f, uint32_t i, status_t status)
{
    struct completion_args c = { f, f->held[i], status };
    at_dispatch(complete_fn, &c);
}

static void fake_complete_all(struct fake_blk *f, status_t status)
{
    for (uint32_t i = 0; i < f->held_count; i++)
        fake_complete(f, i, status);
    f->held_count = 0;
}

/* Its removal: unregister (nobody may hold it after), then free. */
static void fake_blk_remove(struct fake_blk *f)
{
    blkdev_unregister(&f->dev);
    free(f);
}

/* ---- the consumer's side ---- */

/* f registered, then found and opened (the find reference and the open's held). */
static struct blkdev *register_and_open(struct fake_blk *f, const struct blkdev_client *client)
{
    assert_int_equal(blkdev_register(&f->dev), STATUS_OK);
    struct blkdev *d = blkdev_first();
    assert_ptr_equal(d, &f->dev);
    assert_int_equal(blkdev_open(d, client), STATUS_OK);
    return d;
}

struct done_log {
    uint32_t calls;
    status_t status;
    irql_t irql;
};

static void request_done(struct blkdev_request *r, status_t status)
{
    struct done_log *d = r->ctx;
    d->calls++;
    d->status = status;
    d->irql = irql_current();
}

static uint8_t buffer[512 * 8];

static struct blkdev_request read_req(struct done_log *d, uint64_t lba, uint32_t blocks)
{
    return (struct blkdev_request){ .op = BLKDEV_READ, .lba = lba, .blocks = blocks, .buf = buffer,
                                    .done = request_done, .ctx = d };
}

static volatile uint32_t gone_calls;
static void on_gone(void *ctx)
{
    (void)ctx;
    assert_int_equal(irql_current(), IRQL_DISPATCH);
    __atomic_add_fetch(&gone_calls, 1, __ATOMIC_RELEASE);
}

static const struct blkdev_client blk_client = { .gone = on_gone };

static void gone_fn(void *arg) { blkdev_gone(arg); }

/* ---- the registry ---- */

static void test_register_rules(void **state)
{
    (void)state;
    struct fake_blk *f = fake_blk_new(1000, 0);
    f->dev.block_size = 1000; /* not a power of two */
    assert_int_equal(blkdev_register(&f->dev), STATUS_INVALID_PARAMETER);
    f->dev.block_size = 256; /* below 512 */
    assert_int_equal(blkdev_register(&f->dev), STATUS_INVALID_PARAMETER);
    f->dev.block_size = 4096;
    f->dev.capacity = 0;
    assert_int_equal(blkdev_register(&f->dev), STATUS_INVALID_PARAMETER);
    f->dev.capacity = 1000;
    f->dev.queues = 0;
    assert_int_equal(blkdev_register(&f->dev), STATUS_INVALID_PARAMETER);
    f->dev.queues = BLKDEV_MAX_QUEUES + 1;
    assert_int_equal(blkdev_register(&f->dev), STATUS_INVALID_PARAMETER);
    f->dev.queues = 1;
    static const struct blkdev_ops no_submit = { 0 };
    f->dev.ops = &no_submit;
    assert_int_equal(blkdev_register(&f->dev), STATUS_INVALID_PARAMETER);
    f->dev.ops = &fake_blk_ops;
    assert_int_equal(blkdev_register(&f->dev), STATUS_OK);
    assert_int_equal(blkdev_register(&f->dev), STATUS_INVALID_STATE); /* twice */
    assert_true(logged("blkdev: blk"));
    fake_blk_remove(f);
    assert_null(blkdev_first());
}

static void test_find(void **state)
{
    (void)state;
    int64_t t0 = now_ns();
    assert_null(blkdev_first());
    assert_null(blkdev_wait(20000000)); /* nothing comes: NULL when the time is up */
    assert_true(now_ns() - t0 >= 20000000);
    struct fake_blk *a = fake_blk_new(100, 0), *b = fake_blk_new(200, 0);
    assert_int_equal(blkdev_register(&a->dev), STATUS_OK);
    assert_int_equal(blkdev_register(&b->dev), STATUS_OK);
    assert_string_not_equal(blkdev_name(&a->dev), blkdev_name(&b->dev));
    assert_int_equal(devreg_count(DEVREG_BLOCK), 2);
    assert_int_equal(devreg_count(DEVREG_NET), 0);
    struct blkdev *d0 = blkdev_first(), *d1 = blkdev_get(1);
    assert_ptr_equal(d0, &a->dev);
    assert_ptr_equal(d1, &b->dev);
    assert_null(blkdev_get(2));
    blkdev_put(d0);
    blkdev_put(d1);
    fake_blk_remove(a);
    d0 = blkdev_first(); /* the first live one now */
    assert_ptr_equal(d0, &b->dev);
    blkdev_put(d0);
    fake_blk_remove(b);
}

static void *register_later(void *arg)
{
    sleep_us(50000);
    assert_int_equal(blkdev_register(arg), STATUS_OK);
    return NULL;
}

static void test_wait_for_one(void **state)
{
    (void)state;
    struct fake_blk *f = fake_blk_new(100, 0);
    pthread_t t;
    pthread_create(&t, NULL, register_later, &f->dev);
    int64_t t0 = now_ns();
    struct blkdev *d = blkdev_wait(5000000000ull);
    assert_ptr_equal(d, &f->dev);
    assert_true(now_ns() - t0 < 2000000000ll); /* as soon as it came, not at the timeout */
    pthread_join(t, NULL);
    blkdev_put(d);
    fake_blk_remove(f);
}

static void test_open_exclusive(void **state)
{
    (void)state;
    struct fake_blk *f = fake_blk_new(100, 0);
    struct blkdev *d = register_and_open(f, NULL);
    assert_int_equal(blkdev_open(d, NULL), STATUS_BUSY);
    assert_int_equal(blkdev_close(d), STATUS_OK);
    assert_int_equal(blkdev_close(d), STATUS_INVALID_STATE); /* not open */
    assert_int_equal(blkdev_open(d, NULL), STATUS_OK);
    assert_int_equal(blkdev_close(d), STATUS_OK);
    blkdev_put(d);
    assert_int_equal(f->releases, 0); /* live: the registry still holds it */
    fake_blk_remove(f);
}

/* Gone (a rescind) while held: the holder hears it once at DISPATCH, submits fail at once, the
 * device cannot be found, close waits for the outstanding requests (which the driver completes,
 * cancelled), and the release runs when the last reference goes, once. */
static void *close_thread(void *arg)
{
    assert_int_equal(blkdev_close(arg), STATUS_OK);
    return NULL;
}

static void test_gone_while_held(void **state)
{
    (void)state;
    gone_calls = 0;
    struct fake_blk *f = fake_blk_new(100, 0);
    struct blkdev *d = register_and_open(f, &blk_client);
    struct done_log l1 = { 0 }, l2 = { 0 }, l3 = { 0 };
    struct blkdev_request r1 = read_req(&l1, 0, 1), r2 = read_req(&l2, 10, 2), r3 = read_req(&l3, 20, 1);
    assert_int_equal(blkdev_submit(d, &r1), STATUS_OK);
    assert_int_equal(blkdev_submit(d, &r2), STATUS_OK);
    at_dispatch(gone_fn, d);
    at_dispatch(gone_fn, d); /* once only */
    assert_int_equal(gone_calls, 1);
    assert_true(blkdev_is_gone(d));
    assert_int_equal(blkdev_submit(d, &r3), STATUS_CANCELLED);
    assert_int_equal(l3.calls, 0); /* refused: no completion, the buffer is the caller's at once */
    assert_null(blkdev_first());
    pthread_t t;
    pthread_create(&t, NULL, close_thread, d);
    sleep_us(50000);
    assert_int_equal(blkdev_in_flight(d), 2); /* close is waiting for these */
    assert_int_equal(l1.calls + l2.calls, 0);
    fake_complete_all(f, STATUS_CANCELLED);
    pthread_join(t, NULL);
    assert_int_equal(l1.calls, 1);
    assert_int_equal(l1.status, STATUS_CANCELLED);
    assert_int_equal(l1.irql, IRQL_DISPATCH);
    assert_int_equal(l2.calls, 1);
    assert_int_equal(f->releases, 0); /* the find reference still holds it */
    blkdev_put(d);
    assert_int_equal(f->releases, 1);
    free(f); /* released: the driver's again */
}

/* Gone while nobody holds it: the release waits for PASSIVE (gone ran at DISPATCH) and runs at the
 * next call into the registry. */
static void test_gone_unheld(void **state)
{
    (void)state;
    struct fake_blk *f = fake_blk_new(100, 0);
    assert_int_equal(blkdev_register(&f->dev), STATUS_OK);
    at_dispatch(gone_fn, &f->dev);
    assert_int_equal(f->releases, 0);
    assert_null(blkdev_first()); /* a PASSIVE call: it reaps */
    assert_int_equal(f->releases, 1);
    devreg_reap();
    assert_int_equal(f->releases, 1);
    free(f);
}

/* Gone between the find and the open: the open fails, no upcall is lost or made. */
static void test_gone_before_open(void **state)
{
    (void)state;
    gone_calls = 0;
    struct fake_blk *f = fake_blk_new(100, 0);
    assert_int_equal(blkdev_register(&f->dev), STATUS_OK);
    struct blkdev *d = blkdev_first();
    at_dispatch(gone_fn, d);
    assert_int_equal(blkdev_open(d, &blk_client), STATUS_CANCELLED);
    assert_int_equal(gone_calls, 0);
    assert_int_equal(f->releases, 0);
    blkdev_put(d);
    assert_int_equal(f->releases, 1);
    free(f);
}

/* Unregister (the driver's remove) while held: the holder is told, unregister waits until it
 * closed and put its references, and release is never called (the driver frees it). */
struct unregister_arg {
    struct fake_blk *f;
    volatile int done;
};

static void *unregister_thread(void *arg)
{
    struct unregister_arg *u = arg;
    blkdev_unregister(&u->f->dev);
    __atomic_store_n(&u->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void test_unregister_waits_for_holder(void **state)
{
    (void)state;
    gone_calls = 0;
    struct fake_blk *f = fake_blk_new(100, 0);
    struct blkdev *d = register_and_open(f, &blk_client);
    struct unregister_arg u = { f, 0 };
    pthread_t t;
    pthread_create(&t, NULL, unregister_thread, &u);
    while (!__atomic_load_n(&gone_calls, __ATOMIC_ACQUIRE))
        sleep_us(1000);
    sleep_us(50000);
    assert_false(__atomic_load_n(&u.done, __ATOMIC_ACQUIRE));
    struct done_log l = { 0 };
    struct blkdev_request r = read_req(&l, 0, 1);
    assert_int_equal(blkdev_submit(d, &r), STATUS_CANCELLED);
    assert_int_equal(blkdev_close(d), STATUS_OK);
    sleep_us(20000);
    assert_false(__atomic_load_n(&u.done, __ATOMIC_ACQUIRE)); /* the find reference still */
    blkdev_put(d);
    pthread_join(t, NULL);
    assert_true(u.done);
    assert_int_equal(f->releases, 0);
    free(f);
}

/* Gone without a holder, its release parked, then unregistered: the driver takes it back, the
 * release never runs. */
static void test_unregister_after_gone(void **state)
{
    (void)state;
    struct fake_blk *f = fake_blk_new(100, 0);
    assert_int_equal(blkdev_register(&f->dev), STATUS_OK);
    at_dispatch(gone_fn, &f->dev);
    blkdev_unregister(&f->dev);
    devreg_reap();
    assert_int_equal(f->releases, 0);
    free(f);
}

/* Unregister without waiting (a power-off): nobody refers to it: done, no release; someone does:
 * not done, it stays gone, and the last put releases it. */
static void test_try_unregister(void **state)
{
    (void)state;
    struct fake_blk *f = fake_blk_new(100, 0);
    assert_int_equal(blkdev_register(&f->dev), STATUS_OK);
    assert_true(devreg_try_unregister(&f->dev.reg));
    assert_null(blkdev_first());
    assert_int_equal(f->releases, 0);
    free(f);
    f = fake_blk_new(100, 0);
    struct blkdev *d = register_and_open(f, NULL);
    assert_false(devreg_try_unregister(&f->dev.reg));
    assert_true(blkdev_is_gone(d));
    assert_int_equal(blkdev_close(d), STATUS_OK);
    assert_int_equal(f->releases, 0);
    blkdev_put(d);
    assert_int_equal(f->releases, 1);
    free(f);
}

/* ---- requests ---- */

static void test_submit_checks(void **state)
{
    (void)state;
    struct fake_blk *f = fake_blk_new(1000, 0);
    assert_int_equal(blkdev_register(&f->dev), STATUS_OK);
    struct blkdev *d = blkdev_first();
    struct done_log l = { 0 };
    struct blkdev_request r = read_req(&l, 0, 1);
    assert_int_equal(blkdev_submit(d, &r), STATUS_INVALID_STATE); /* not open */
    assert_int_equal(blkdev_open(d, NULL), STATUS_OK);
    const struct {
        struct blkdev_request r;
        status_t want;
    } bad[] = {
        { read_req(&l, 1000, 1), STATUS_INVALID_PARAMETER },          /* past the end */
        { read_req(&l, 999, 2), STATUS_INVALID_PARAMETER },           /* runs past the end */
        { read_req(&l, UINT64_MAX, 2), STATUS_INVALID_PARAMETER },    /* lba + blocks wraps */
        { read_req(&l, 0, 0), STATUS_INVALID_PARAMETER },             /* no blocks */
        { read_req(&l, 0, 257), STATUS_INVALID_PARAMETER },           /* over max_blocks */
        { { .op = BLKDEV_READ, .blocks = 1, .done = request_done, .ctx = &l }, STATUS_INVALID_PARAMETER }, /* no buf */
        { { .op = BLKDEV_READ, .blocks = 1, .buf = buffer, .ctx = &l }, STATUS_INVALID_PARAMETER },      /* no done */
        { { .op = 99, .blocks = 1, .buf = buffer, .done = request_done }, STATUS_INVALID_PARAMETER },   /* unknown op */
        { { .op = BLKDEV_FLUSH, .blocks = 1, .done = request_done }, STATUS_INVALID_PARAMETER },        /* flush + blocks */
        { { .op = BLKDEV_FLUSH, .buf = buffer, .done = request_done }, STATUS_INVALID_PARAMETER },      /* flush + buf */
        { { .op = BLKDEV_UNMAP, .blocks = 1, .buf = buffer, .done = request_done }, STATUS_INVALID_PARAMETER },
        { { .op = BLKDEV_UNMAP, .blocks = 1, .done = request_done }, STATUS_NOT_SUPPORTED }, /* no CAN_UNMAP */
    };
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct blkdev_request x = bad[i].r;
        assert_int_equal(blkdev_submit(d, &x), bad[i].want);
    }
    assert_int_equal(f->submits, 0); /* the driver saw none of them */
    assert_int_equal(blkdev_in_flight(d), 0);
    /* the good ones at the edges */
    struct blkdev_request last = read_req(&l, 999, 1), flush = { .op = BLKDEV_FLUSH, .done = request_done, .ctx = &l };
    assert_int_equal(blkdev_submit(d, &last), STATUS_OK);
    assert_int_equal(blkdev_submit(d, &flush), STATUS_OK);
    assert_int_equal(f->submits, 2);
    fake_complete_all(f, STATUS_OK);
    assert_int_equal(l.calls, 2);
    assert_int_equal(blkdev_close(d), STATUS_OK);
    blkdev_put(d);
    fake_blk_remove(f);

    /* read-only: writes and unmaps refused; reads go */
    f = fake_blk_new(1000, BLKDEV_READ_ONLY | BLKDEV_CAN_UNMAP);
    d = register_and_open(f, NULL);
    struct blkdev_request w = read_req(&l, 0, 1), u = { .op = BLKDEV_UNMAP, .blocks = 4, .done = request_done };
    w.op = BLKDEV_WRITE;
    assert_int_equal(blkdev_submit(d, &w), STATUS_NOT_SUPPORTED);
    assert_int_equal(blkdev_submit(d, &u), STATUS_NOT_SUPPORTED);
    assert_int_equal(f->submits, 0);
    assert_int_equal(blkdev_close(d), STATUS_OK);
    blkdev_put(d);
    fake_blk_remove(f);
}

/* A request is the device's from a successful submit to its one completion: resubmitting it
 * before is refused, a second completion (or one for a request never submitted) is refused and
 * logged, never delivered; a driver's refusal gives nothing back twice either. */
static void test_completion_once(void **state)
{
    (void)state;
    struct fake_blk *f = fake_blk_new(1000, BLKDEV_CAN_UNMAP);
    struct blkdev *d = register_and_open(f, NULL);
    struct done_log l = { 0 };
    struct blkdev_request r = read_req(&l, 5, 4);
    assert_int_equal(blkdev_submit(d, &r), STATUS_OK);
    assert_int_equal(blkdev_submit(d, &r), STATUS_BUSY); /* still the device's */
    assert_int_equal(l.calls, 0);
    fake_complete(f, 0, STATUS_IO_ERROR);
    assert_int_equal(l.calls, 1);
    assert_int_equal(l.status, STATUS_IO_ERROR);
    assert_int_equal(l.irql, IRQL_DISPATCH);
    fake_complete(f, 0, STATUS_OK); /* the host answers twice */
    assert_int_equal(l.calls, 1);
    assert_true(logged("completion for a request that is not outstanding: refused"));
    struct done_log never = { 0 };
    struct blkdev_request stranger = read_req(&never, 0, 1);
    struct completion_args c = { f, &stranger, STATUS_OK };
    at_dispatch(complete_fn, &c);
    assert_int_equal(never.calls, 0);
    assert_int_equal(d->refused_completions, 2);
    /* the caller's again: resubmit it */
    f->held_count = 0;
    assert_int_equal(blkdev_submit(d, &r), STATUS_OK);
    fake_complete(f, 0, STATUS_OK);
    assert_int_equal(l.calls, 2);
    /* a driver that refuses: no completion, nothing in flight, the request free again */
    f->held_count = 0;
    f->submit_status = STATUS_DEVICE_ERROR;
    assert_int_equal(blkdev_submit(d, &r), STATUS_DEVICE_ERROR);
    assert_int_equal(blkdev_in_flight(d), 0);
    f->submit_status = STATUS_OK;
    assert_int_equal(blkdev_submit(d, &r), STATUS_OK);
    fake_complete(f, 0, STATUS_OK);
    assert_int_equal(l.calls, 3);
    assert_int_equal(blkdev_close(d), STATUS_OK);
    blkdev_put(d);
    fake_blk_remove(f);
}

/* Many submitters and a completer on other threads: every request completes exactly once and close
 * returns only when all did. */
struct storm {
    struct blkdev *d;
    struct fake_blk *f;
    volatile uint32_t completed;
    volatile int stop;
    pthread_mutex_t m;
};

static struct storm storm;

static status_t storm_submit(void *drv, struct blkdev_request *r)
{
    struct fake_blk *f = drv;
    pthread_mutex_lock(&storm.m);
    assert_true(f->held_count < FAKE_MAX);
    f->held[f->held_count++] = r;
    pthread_mutex_unlock(&storm.m);
    return STATUS_OK;
}

static void storm_done(struct blkdev_request *r, status_t status)
{
    (void)status;
    __atomic_add_fetch((uint32_t *)r->ctx, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&storm.completed, 1, __ATOMIC_RELAXED);
}

static void *storm_completer(void *arg)
{
    (void)arg;
    for (;;) {
        struct blkdev_request *r = NULL;
        pthread_mutex_lock(&storm.m);
        if (storm.f->held_count)
            r = storm.f->held[--storm.f->held_count];
        pthread_mutex_unlock(&storm.m);
        if (!r) {
            if (__atomic_load_n(&storm.stop, __ATOMIC_ACQUIRE))
                break;
            sched_yield();
            continue;
        }
        struct completion_args c = { storm.f, r, STATUS_OK };
        at_dispatch(complete_fn, &c);
    }
    return NULL;
}

static void *storm_submitter(void *arg)
{
    uint32_t *counts = arg; /* per request: completions seen */
    struct blkdev_request r[4];
    for (int i = 0; i < 4; i++)
        r[i] = (struct blkdev_request){ .op = BLKDEV_READ, .lba = (uint64_t)i, .blocks = 1, .buf = buffer,
                                        .done = storm_done, .ctx = &counts[i] };
    uint32_t sent = 0;
    while (sent < 2000) {
        for (int i = 0; i < 4 && sent < 2000; i++) {
            /* resubmit only what came back; BUSY while it is still the device's */
            status_t s = blkdev_submit(storm.d, &r[i]);
            assert_true(s == STATUS_OK || s == STATUS_BUSY);
            sent += s == STATUS_OK;
        }
    }
    while (__atomic_load_n(&counts[0], __ATOMIC_RELAXED) + __atomic_load_n(&counts[1], __ATOMIC_RELAXED) +
               __atomic_load_n(&counts[2], __ATOMIC_RELAXED) + __atomic_load_n(&counts[3], __ATOMIC_RELAXED) <
           2000)
        sched_yield();
    return NULL;
}

static void test_concurrent_requests(void **state)
{
    (void)state;
    static const struct blkdev_ops ops = { .submit = storm_submit };
    struct fake_blk *f = fake_blk_new(1000, 0);
    f->dev.ops = &ops;
    assert_int_equal(blkdev_register(&f->dev), STATUS_OK);
    memset(&storm, 0, sizeof storm);
    pthread_mutex_init(&storm.m, NULL);
    storm.f = f;
    storm.d = blkdev_first();
    assert_int_equal(blkdev_open(storm.d, NULL), STATUS_OK);
    pthread_t c, s[3];
    static uint32_t counts[3][4];
    memset(counts, 0, sizeof counts);
    pthread_create(&c, NULL, storm_completer, NULL);
    for (int i = 0; i < 3; i++)
        pthread_create(&s[i], NULL, storm_submitter, counts[i]);
    for (int i = 0; i < 3; i++)
        pthread_join(s[i], NULL);
    assert_int_equal(blkdev_close(storm.d), STATUS_OK);
    assert_int_equal(blkdev_in_flight(storm.d), 0);
    __atomic_store_n(&storm.stop, 1, __ATOMIC_RELEASE);
    pthread_join(c, NULL);
    assert_int_equal(storm.completed, 6000);
    assert_int_equal(storm.d->refused_completions, 0);
    blkdev_put(storm.d);
    fake_blk_remove(f);
    pthread_mutex_destroy(&storm.m);
}

/* ---- the network device contract ---- */

struct fake_nic {
    struct netdev dev;
    uint8_t frame[1600];
    bool busy;
    uint32_t sent, releases;
    status_t check_status;
};

static void *nic_tx_begin(void *drv, uint32_t queue, uint32_t len)
{
    (void)queue;
    struct fake_nic *n = drv;
    if (netdev_is_gone(&n->dev) || n->busy || len > n->dev.mtu + NETDEV_ETH_HLEN)
        return NULL; /* the contract: NULL at once once gone */
    n->busy = true;
    return n->frame;
}

static status_t nic_tx_end(void *drv, uint32_t queue, void *frame, uint32_t len)
{
    (void)queue;
    (void)len;
    struct fake_nic *n = drv;
    assert_ptr_equal(frame, n->frame);
    n->busy = false;
    if (netdev_is_gone(&n->dev))
        return STATUS_CANCELLED;
    n->sent++;
    return STATUS_OK;
}

static status_t nic_check(void *drv) { return ((struct fake_nic *)drv)->check_status; }

static void nic_release(struct netdev *dev) { container_of(dev, struct fake_nic, dev)->releases++; }

static const struct netdev_ops nic_ops = {
    .tx_begin = nic_tx_begin, .tx_end = nic_tx_end, .check = nic_check, .release = nic_release,
};

static struct fake_nic *fake_nic_new(void)
{
    struct fake_nic *n = calloc(1, sizeof *n);
    assert_non_null(n);
    n->dev.ops = &nic_ops;
    n->dev.drv = n;
    n->dev.driver = "fakenic";
    memcpy(n->dev.mac, (uint8_t[6]){ 0x02, 0, 0, 0, 0, 9 }, 6);
    n->dev.mtu = 1500;
    n->dev.queues = 2;
    n->dev.queue_cpu[1] = 1;
    n->dev.link_up = true;
    return n;
}

struct holder {
    uint32_t frames, batches, link_events, gone;
    bool link;
};

static void h_receive(void *ctx, uint32_t queue, const void *frame, uint32_t len)
{
    (void)queue;
    (void)frame;
    (void)len;
    ((struct holder *)ctx)->frames++;
}
static void h_done(void *ctx, uint32_t queue)
{
    (void)queue;
    ((struct holder *)ctx)->batches++;
}
static void h_link(void *ctx, bool up)
{
    struct holder *h = ctx;
    h->link_events++;
    h->link = up;
}
static void h_gone(void *ctx) { ((struct holder *)ctx)->gone++; }

struct rx_args {
    struct netdev *dev;
    bool delivered;
};

static void rx_fn(void *arg)
{
    struct rx_args *a = arg;
    static const uint8_t f[60];
    a->delivered = netdev_rx(a->dev, 1, f, sizeof f);
    netdev_rx_done(a->dev, 1);
}

static void link_down_fn(void *arg) { netdev_set_link(arg, false); }
static void nic_gone_fn(void *arg) { netdev_gone(arg); }

static void test_netdev_contract(void **state)
{
    (void)state;
    struct fake_nic *n = fake_nic_new();
    n->dev.mtu = 100;
    assert_int_equal(netdev_register(&n->dev), STATUS_INVALID_PARAMETER);
    n->dev.mtu = 1500;
    n->dev.queues = 0;
    assert_int_equal(netdev_register(&n->dev), STATUS_INVALID_PARAMETER);
    n->dev.queues = 2;
    assert_int_equal(netdev_register(&n->dev), STATUS_OK);
    assert_true(logged("netdev: net"));
    struct netdev *d = netdev_first();
    assert_ptr_equal(d, &n->dev);
    assert_int_equal(netdev_queue_cpu(d, 3), 1); /* queue mod the count */
    /* frames before anyone holds it: not delivered */
    struct rx_args rx = { d, true };
    at_dispatch(rx_fn, &rx);
    assert_false(rx.delivered);
    struct holder h = { 0 };
    struct netdev_client c = { .ctx = &h, .receive = h_receive, .receive_done = h_done, .link = h_link,
                               .gone = h_gone };
    struct netdev_client no_receive = { .ctx = &h };
    assert_int_equal(netdev_open(d, &no_receive), STATUS_INVALID_PARAMETER);
    assert_int_equal(netdev_open(d, &c), STATUS_OK);
    assert_int_equal(netdev_open(d, &c), STATUS_BUSY);
    at_dispatch(rx_fn, &rx);
    assert_true(rx.delivered);
    assert_int_equal(h.frames, 1);
    assert_int_equal(h.batches, 1);
    /* link: upcall on a change only */
    at_dispatch(link_down_fn, d);
    at_dispatch(link_down_fn, d);
    assert_int_equal(h.link_events, 1);
    assert_false(h.link);
    assert_false(netdev_link_up(d));
    /* transmit: zero copy and copying */
    uint8_t frame[60] = { 0 };
    assert_int_equal(netdev_send(d, 0, frame, sizeof frame), STATUS_OK);
    assert_int_equal(netdev_send(d, 0, frame, 1515), STATUS_INVALID_PARAMETER); /* longer than mtu + 14 */
    void *p = netdev_tx_begin(d, 0, 60);
    assert_non_null(p);
    assert_int_equal(netdev_send(d, 0, frame, sizeof frame), STATUS_NO_SPACE); /* no room now */
    assert_int_equal(netdev_tx_end(d, 0, p, 60), STATUS_OK);
    assert_int_equal(n->sent, 2);
    n->check_status = STATUS_OK;
    assert_int_equal(netdev_check(d), STATUS_OK);
    /* close: no upcall after it */
    netdev_close(d);
    at_dispatch(rx_fn, &rx);
    assert_false(rx.delivered);
    assert_int_equal(h.frames, 1);
    /* gone while held: the upcall once, transmits fail at once */
    assert_int_equal(netdev_open(d, &c), STATUS_OK);
    at_dispatch(nic_gone_fn, d);
    at_dispatch(nic_gone_fn, d);
    assert_int_equal(h.gone, 1);
    assert_int_equal(netdev_send(d, 0, frame, sizeof frame), STATUS_CANCELLED);
    assert_null(netdev_tx_begin(d, 0, 60));
    assert_int_equal(netdev_check(d), STATUS_CANCELLED);
    assert_null(netdev_first());
    netdev_close(d);
    assert_int_equal(netdev_open(d, &c), STATUS_CANCELLED); /* gone: nobody opens it again */
    assert_int_equal(h.gone, 1);
    assert_int_equal(n->releases, 0);
    netdev_put(d);
    assert_int_equal(n->releases, 1);
    free(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_register_rules),
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_wait_for_one),
        cmocka_unit_test(test_open_exclusive),
        cmocka_unit_test(test_gone_while_held),
        cmocka_unit_test(test_gone_unheld),
        cmocka_unit_test(test_gone_before_open),
        cmocka_unit_test(test_unregister_waits_for_holder),
        cmocka_unit_test(test_unregister_after_gone),
        cmocka_unit_test(test_try_unregister),
        cmocka_unit_test(test_submit_checks),
        cmocka_unit_test(test_completion_once),
        cmocka_unit_test(test_concurrent_requests),
        cmocka_unit_test(test_netdev_contract),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
