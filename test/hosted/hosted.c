/*
 * hosted: VP threads, IRQL and interrupts as signals, and the kernel services the portable layers
 * call, for the hosted tests. The contract is in hosted.h.
 */
#define _GNU_SOURCE
#include "test/hosted/hosted.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <time.h>

#include "arch-x86_64/interrupts.h"
#include "arch-x86_64/irql.h"
#include "arch-x86_64/lapic.h"
#include "arch-x86_64/paging.h"
#include "arch-x86_64/spinlock.h"
#include "arch-x86_64/tsc.h"
#include "kernel/dpc.h"
#include "kernel/fmt.h"
#include "kernel/log.h"
#include "kernel/mm.h"
#include "kernel/panic.h"
#include "kernel/percpu.h"
#include "kernel/power.h"
#include "kernel/sync.h"
#include "kernel/thread.h"
#include "sim/hvsim.h"

#define INTERRUPT_SIGNAL SIGUSR1

__thread volatile irql_t hosted_irql = IRQL_PASSIVE;
__thread struct cpu *hosted_this_cpu;
struct cpu *cpus[MAX_CPUS];
uint32_t cpu_count;
uint64_t tsc_hz;

struct job {
    void (*fn)(void *);
    void *arg;
    struct job *next;
    volatile int done;
};

struct vp {
    struct cpu cpu;
    pthread_t thread;
    volatile uint64_t pending[4];
    uint64_t interrupts;
    pthread_mutex_t lock; /* the job list */
    struct job *jobs, *jobs_tail;
    volatile int stop;
};

static struct vp *vps[MAX_CPUS];
static uint32_t vp_count;
static __thread struct vp *this_vp;
static struct hvsim *sim;
static uint8_t *ram;
static uint64_t ram_size;

/* ---- IRQL and interrupts ---- */

struct handler {
    irq_handler_fn fn;
    void *ctx;
};
static struct handler handlers[256];

void hosted_take_pending(void)
{
    struct vp *vp = this_vp;
    if (!vp)
        return;
    for (;;) {
        int vector = -1;
        for (int w = 3; w >= 0 && vector < 0; w--) {
            uint64_t bits = __atomic_load_n(&vp->pending[w], __ATOMIC_ACQUIRE);
            if (bits)
                vector = w * 64 + 63 - __builtin_clzll(bits);
        }
        if (vector < 0 || (vector >> 4) <= hosted_irql)
            return;
        uint64_t bit = 1ull << (vector & 63);
        if (!(__atomic_fetch_and(&vp->pending[vector >> 6], ~bit, __ATOMIC_ACQ_REL) & bit))
            continue; /* a nested delivery took it */
        irql_t old = hosted_irql;
        hosted_irql = (irql_t)(vector >> 4);
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        vp->interrupts++;
        struct handler h = handlers[vector];
        if (h.fn) {
            struct int_frame f = { .vector = (uint64_t)vector };
            h.fn(&f, h.ctx);
        }
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        hosted_irql = old;
    }
}

static void on_interrupt_signal(int sig)
{
    (void)sig;
    int saved = errno;
    hosted_take_pending();
    errno = saved;
}

static void raise_vector(uint32_t cpu, uint8_t vector)
{
    if (cpu >= vp_count || !vps[cpu])
        return;
    __atomic_fetch_or(&vps[cpu]->pending[vector >> 6], 1ull << (vector & 63), __ATOMIC_ACQ_REL);
    if (vps[cpu] == this_vp)
        hosted_take_pending();
    else
        pthread_kill(vps[cpu]->thread, INTERRUPT_SIGNAL);
}

static void sim_raise(void *ctx, uint32_t vp, uint8_t vector)
{
    (void)ctx;
    raise_vector(vp, vector);
}

void lapic_send_ipi(uint32_t apic_id, uint8_t vector)
{
    raise_vector(apic_id, vector);
}

void lapic_send_self_ipi(uint8_t vector)
{
    raise_vector(this_vp->cpu.id, vector);
}

status_t irq_register(uint8_t vector, irq_handler_fn fn, void *ctx)
{
    if (handlers[vector].fn)
        return STATUS_BUSY;
    handlers[vector].ctx = ctx;
    __atomic_store_n(&handlers[vector].fn, fn, __ATOMIC_RELEASE);
    return STATUS_OK;
}

status_t irq_alloc_vector(uint8_t level, irq_handler_fn fn, void *ctx, uint8_t *vector_out)
{
    if (level < IRQL_DEVICE_LOW || level > IRQL_DEVICE_HIGH)
        return STATUS_INVALID_PARAMETER;
    for (unsigned v = level * 16u; v < level * 16u + 16; v++)
        if (irq_register((uint8_t)v, fn, ctx) == STATUS_OK) {
            *vector_out = (uint8_t)v;
            return STATUS_OK;
        }
    return STATUS_NO_SPACE;
}

void irql_violation(const char *what, irql_t have, irql_t limit, const char *file, int line)
{
    fprintf(stderr, "IRQL violation: %s at IRQL %u (limit %u), %s:%d\n", what, have, limit, file, line);
    abort();
}

/* ---- spinlocks ---- */

void raw_spin_lock(spinlock_t *l)
{
    uint32_t me = this_vp ? this_vp->cpu.id + 1 : 0xffff;
    /* owner is read racily by design (only its own value matters): relaxed atomics say so. */
    if (__atomic_load_n(&l->owner, __ATOMIC_RELAXED) == me && __atomic_load_n(&l->locked, __ATOMIC_RELAXED))
        panic("spinlock %p taken recursively", (void *)l);
    while (__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(&l->locked, __ATOMIC_RELAXED))
            __builtin_ia32_pause();
    __atomic_store_n(&l->owner, me, __ATOMIC_RELAXED);
}

void raw_spin_unlock(spinlock_t *l)
{
    __atomic_store_n(&l->owner, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&l->locked, 0, __ATOMIC_RELEASE);
}

int raw_spin_trylock(spinlock_t *l)
{
    if (__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE))
        return 0;
    __atomic_store_n(&l->owner, this_vp ? this_vp->cpu.id + 1 : 0xffff, __ATOMIC_RELAXED);
    return 1;
}

/* ---- log, panic ---- */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char *log_text;
static size_t log_len, log_cap;
static bool log_quiet;

static void log_append(const char *s, size_t n)
{
    irql_t old = irql_raise(IRQL_HIGH);
    pthread_mutex_lock(&log_lock);
    if (log_len + n + 1 > log_cap) {
        size_t cap = (log_len + n + 1) * 2;
        char *p = realloc(log_text, cap);
        if (p) {
            log_text = p;
            log_cap = cap;
        }
    }
    if (log_len + n + 1 <= log_cap) {
        memcpy(log_text + log_len, s, n);
        log_len += n;
        log_text[log_len] = '\0';
    }
    if (!log_quiet)
        fwrite(s, 1, n, stderr);
    pthread_mutex_unlock(&log_lock);
    irql_lower(old);
}

void vklog(enum log_level lvl, const char *fmt, va_list ap)
{
    static const char *const tags[] = { "error: ", "warn: ", "", "debug: " };
    char line[1024];
    int n = fmt_snprintf(line, sizeof line, "[vp%d] %s", this_vp ? (int)this_vp->cpu.id : -1,
                         tags[lvl <= LOG_DEBUG ? lvl : LOG_DEBUG]);
    if (n < 0 || (size_t)n >= sizeof line)
        n = 0;
    int m = fmt_vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    size_t len = (size_t)n + (m > 0 ? (size_t)m : 0);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    log_append(line, len);
}

void klog(enum log_level lvl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vklog(lvl, fmt, ap);
    va_end(ap);
}

void kprintf(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = fmt_vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0)
        log_append(line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

void log_write(const char *s, size_t n)
{
    log_append(s, n);
}

void hosted_log_clear(void)
{
    pthread_mutex_lock(&log_lock);
    log_len = 0;
    if (log_text)
        log_text[0] = '\0';
    pthread_mutex_unlock(&log_lock);
}

bool hosted_log_contains(const char *needle)
{
    pthread_mutex_lock(&log_lock);
    bool found = log_text && strstr(log_text, needle);
    pthread_mutex_unlock(&log_lock);
    return found;
}

void hosted_log_quiet(bool quiet)
{
    log_quiet = quiet;
}

void panic(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    fmt_vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "PANIC (vp%d): %s\n", this_vp ? (int)this_vp->cpu.id : -1, line);
    abort();
}

/* ---- memory: pages from guest RAM (GPA = offset), heap from malloc ---- */

static pthread_mutex_t mem_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *page_used; /* one byte per page of guest RAM */
static uint64_t ram_pages;

void *page_alloc(size_t count)
{
    irql_t old = irql_raise(IRQL_HIGH);
    pthread_mutex_lock(&mem_lock);
    void *p = NULL;
    for (uint64_t i = 1, run = 0; i < ram_pages; i++) { /* page 0 is never handed out */
        run = page_used[i] ? 0 : run + 1;
        if (run == count) {
            uint64_t first = i + 1 - count;
            memset(page_used + first, 1, count);
            p = ram + first * PAGE_SIZE;
            break;
        }
    }
    pthread_mutex_unlock(&mem_lock);
    if (p)
        memset(p, 0, count * PAGE_SIZE);
    irql_lower(old);
    return p;
}

uint64_t hosted_pages_in_use(void)
{
    irql_t old = irql_raise(IRQL_HIGH);
    pthread_mutex_lock(&mem_lock);
    uint64_t n = 0;
    for (uint64_t i = 0; i < ram_pages; i++)
        n += page_used[i];
    pthread_mutex_unlock(&mem_lock);
    irql_lower(old);
    return n;
}

void page_free(void *p, size_t count)
{
    irql_t old = irql_raise(IRQL_HIGH);
    pthread_mutex_lock(&mem_lock);
    uint64_t first = (uint64_t)((uint8_t *)p - ram) / PAGE_SIZE;
    if ((uint8_t *)p < ram || first + count > ram_pages)
        panic("page_free(%p): not guest RAM", p);
    memset(page_used + first, 0, count);
    pthread_mutex_unlock(&mem_lock);
    irql_lower(old);
}

uint64_t virt_to_phys(const void *p)
{
    const uint8_t *b = p;
    if (b < ram || b >= ram + ram_size)
        panic("virt_to_phys(%p): not guest RAM", p);
    return (uint64_t)(b - ram);
}

void *kmalloc(size_t size)
{
    irql_t old = irql_raise(IRQL_HIGH);
    void *p = malloc(size);
    irql_lower(old);
    return p;
}

void *kzalloc(size_t size)
{
    irql_t old = irql_raise(IRQL_HIGH);
    void *p = calloc(1, size);
    irql_lower(old);
    return p;
}

void kfree(void *p)
{
    irql_t old = irql_raise(IRQL_HIGH);
    free(p);
    irql_lower(old);
}

/* ---- time ---- */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t boot_tsc;

static void calibrate_tsc(void)
{
    uint64_t n0 = mono_ns(), t0 = rdtsc();
    while (mono_ns() - n0 < 20000000)
        ;
    uint64_t n1 = mono_ns(), t1 = rdtsc();
    tsc_hz = (t1 - t0) * 1000000000ull / (n1 - n0);
    boot_tsc = t0;
}

uint64_t ns_to_tsc(uint64_t ns)
{
    return muldiv64(ns, tsc_hz, 1000000000ull);
}

uint64_t tsc_to_ns(uint64_t ticks)
{
    return muldiv64(ticks, 1000000000ull, tsc_hz);
}

uint64_t tsc_ns_since_boot(void)
{
    return tsc_to_ns(rdtsc() - boot_tsc);
}

/* ---- threads: a job run on a VP at PASSIVE ---- */

/* The VP loop: jobs at PASSIVE; between them the thread waits in sigsuspend, where interrupts get in. */
static void *vp_main(void *arg)
{
    struct vp *vp = arg;
    this_vp = vp;
    hosted_this_cpu = &vp->cpu;
    hosted_irql = IRQL_PASSIVE;
    sigset_t block, wait_mask;
    sigemptyset(&block);
    sigaddset(&block, INTERRUPT_SIGNAL);
    pthread_sigmask(SIG_BLOCK, &block, &wait_mask);
    sigdelset(&wait_mask, INTERRUPT_SIGNAL);
    for (;;) {
        /* Signals blocked: look at the job list without a race against the wake-up signal. */
        pthread_mutex_lock(&vp->lock);
        struct job *j = vp->jobs;
        if (j) {
            vp->jobs = j->next;
            if (!vp->jobs)
                vp->jobs_tail = NULL;
        }
        pthread_mutex_unlock(&vp->lock);
        if (j) {
            pthread_sigmask(SIG_UNBLOCK, &block, NULL);
            hosted_take_pending();
            j->fn(j->arg);
            if (hosted_irql != IRQL_PASSIVE)
                panic("a job on vp%u returned at IRQL %u", vp->cpu.id, hosted_irql);
            __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
            pthread_sigmask(SIG_BLOCK, &block, NULL);
            continue;
        }
        if (__atomic_load_n(&vp->stop, __ATOMIC_ACQUIRE))
            break;
        hosted_take_pending();
        sigsuspend(&wait_mask); /* returns after a signal was handled */
    }
    return NULL;
}

static void post_job(uint32_t cpu, struct job *j)
{
    struct vp *vp = vps[cpu];
    irql_t old = irql_raise(IRQL_HIGH);
    pthread_mutex_lock(&vp->lock);
    j->next = NULL;
    if (vp->jobs_tail)
        vp->jobs_tail->next = j;
    else
        vp->jobs = j;
    vp->jobs_tail = j;
    pthread_mutex_unlock(&vp->lock);
    pthread_kill(vp->thread, INTERRUPT_SIGNAL);
    irql_lower(old);
}

static void wait_job(struct job *j)
{
    while (!__atomic_load_n(&j->done, __ATOMIC_ACQUIRE)) {
        struct timespec ts = { 0, 50000 };
        nanosleep(&ts, NULL);
    }
}

void hosted_run_on(uint32_t cpu, void (*fn)(void *arg), void *arg)
{
    if (cpu >= vp_count)
        panic("hosted_run_on: no vp%u", cpu);
    struct job j = { .fn = fn, .arg = arg };
    post_job(cpu, &j);
    wait_job(&j);
}

/* thread_create: a job on the CPU (a VP runs one at a time; hv uses them for per-CPU set-up). A
 * thread for the calling VP itself runs at once, inline (the VP is busy with the caller, so a queued
 * job would wait for the caller's join forever); the kernel's scheduler would run it on that CPU
 * at its next wait, which the caller's join is. */
status_t thread_create(const char *name, thread_fn fn, void *arg, int cpu, struct thread **out)
{
    (void)name;
    if (cpu < 0 || (uint32_t)cpu >= vp_count)
        return STATUS_INVALID_PARAMETER;
    struct job *j = kzalloc(sizeof *j);
    if (!j)
        return STATUS_NO_MEMORY;
    j->fn = fn;
    j->arg = arg;
    *out = (struct thread *)j;
    if (this_vp && this_vp->cpu.id == (uint32_t)cpu) {
        fn(arg);
        __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
        return STATUS_OK;
    }
    post_job((uint32_t)cpu, j);
    return STATUS_OK;
}

/* From the test thread or from a VP (waiting at PASSIVE, interrupts taken, like a blocked thread). */
int thread_join(struct thread *t)
{
    struct job *j = (struct job *)t;
    wait_job(j);
    kfree(j);
    return 0;
}

void thread_yield(void)
{
    IRQL_ASSERT_MAX(IRQL_DISPATCH);
    irql_t old = irql_raise(IRQL_HIGH);
    sched_yield();
    irql_lower(old);
}

/* ---- events (kernel/sync.h): waits poll at PASSIVE, so interrupts and DPCs run meanwhile ---- */

void event_init(struct event *e, enum event_type type, bool signaled)
{
    e->auto_reset = type == EVENT_SYNCHRONIZATION;
    __atomic_store_n(&e->signaled, signaled, __ATOMIC_RELEASE);
}

void event_set(struct event *e)
{
    __atomic_store_n(&e->signaled, true, __ATOMIC_RELEASE);
}

void event_reset(struct event *e)
{
    __atomic_store_n(&e->signaled, false, __ATOMIC_RELEASE);
}

bool event_is_set(struct event *e)
{
    return __atomic_load_n(&e->signaled, __ATOMIC_ACQUIRE);
}

static bool event_take(struct event *e)
{
    if (e->auto_reset)
        return __atomic_exchange_n(&e->signaled, false, __ATOMIC_ACQ_REL);
    return __atomic_load_n(&e->signaled, __ATOMIC_ACQUIRE);
}

status_t event_wait(struct event *e, uint64_t timeout_ns)
{
    if (event_take(e))
        return STATUS_OK;
    if (timeout_ns == 0)
        return STATUS_TIMEOUT;
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    uint64_t end = timeout_ns == WAIT_FOREVER ? UINT64_MAX : mono_ns() + timeout_ns;
    while (!event_take(e)) {
        if (mono_ns() >= end)
            return STATUS_TIMEOUT;
        struct timespec ts = { 0, 20000 };
        nanosleep(&ts, NULL); /* an interrupt cuts it short: loop */
    }
    return STATUS_OK;
}

/* Mutexes poll, like the events: not recursive; `owner` only marks the mutex taken. */
void mutex_init(struct mutex *m)
{
    __atomic_store_n(&m->owner, NULL, __ATOMIC_RELEASE);
}

status_t mutex_lock_timeout(struct mutex *m, uint64_t timeout_ns)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    uint64_t end = timeout_ns == WAIT_FOREVER ? UINT64_MAX : mono_ns() + timeout_ns;
    struct thread *held = (struct thread *)m; /* any non-NULL token */
    for (;;) {
        struct thread *none = NULL;
        if (__atomic_compare_exchange_n(&m->owner, &none, held, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return STATUS_OK;
        if (mono_ns() >= end)
            return STATUS_TIMEOUT;
        struct timespec ts = { 0, 20000 };
        nanosleep(&ts, NULL);
    }
}

void mutex_lock(struct mutex *m)
{
    status_t s = mutex_lock_timeout(m, WAIT_FOREVER);
    (void)s;
}

void mutex_unlock(struct mutex *m)
{
    __atomic_store_n(&m->owner, NULL, __ATOMIC_RELEASE);
}

void thread_sleep_ns(uint64_t ns)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    uint64_t end = mono_ns() + ns;
    while (mono_ns() < end) {
        struct timespec ts = { 0, 20000 };
        nanosleep(&ts, NULL); /* an interrupt cuts it short: loop */
    }
}

/* ---- power ---- */

static void (*hooks[8])(void);
static unsigned hook_count;

void power_register_shutdown_hook(void (*fn)(void))
{
    if (hook_count < 8)
        hooks[hook_count++] = fn;
}

/* ---- the machine ---- */

struct hvsim *hosted_sim(void)
{
    return sim;
}

void *hosted_ram(void)
{
    return ram;
}

uint32_t hosted_vps(void)
{
    return vp_count;
}

uint64_t hosted_interrupts_taken(uint32_t cpu)
{
    return cpu < vp_count ? vps[cpu]->interrupts : 0;
}

static void dispatch_interrupt(struct int_frame *f, void *ctx)
{
    (void)f;
    (void)ctx;
    dpc_drain();
}

void hosted_start(uint32_t n, uint64_t bytes, const struct hvsim_config *cfg)
{
    if (n == 0 || n > MAX_CPUS)
        abort();
    calibrate_tsc();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt_signal;
    sa.sa_flags = SA_RESTART | SA_NODEFER; /* a higher vector may nest in a handler, as on hardware */
    sigemptyset(&sa.sa_mask);
    sigaction(INTERRUPT_SIGNAL, &sa, NULL);
    ram_size = bytes;
    ram_pages = bytes / PAGE_SIZE;
    ram = aligned_alloc(PAGE_SIZE, bytes);
    page_used = calloc(ram_pages, 1);
    if (!ram || !page_used)
        abort();
    memset(ram, 0, bytes);
    memset(handlers, 0, sizeof handlers);
    hook_count = 0;
    handlers[VECTOR_DISPATCH].fn = dispatch_interrupt;
    struct hvsim_config c = { 0 };
    if (cfg)
        c = *cfg;
    c.vp_count = n;
    c.guest_tsc_delta = 0;
    sim = hvsim_create(&c, ram, bytes, sim_raise, NULL);
    if (!sim || !hvsim_start_timer_thread(sim))
        abort();
    vp_count = n;
    cpu_count = n;
    for (uint32_t i = 0; i < n; i++) {
        struct vp *vp = calloc(1, sizeof *vp);
        vp->cpu.self = &vp->cpu;
        vp->cpu.id = i;
        vp->cpu.apic_id = i;
        vp->cpu.online = true;
        list_init(&vp->cpu.dpc_queue);
        pthread_mutex_init(&vp->lock, NULL);
        vps[i] = vp;
        cpus[i] = &vp->cpu;
    }
    for (uint32_t i = 0; i < n; i++)
        pthread_create(&vps[i]->thread, NULL, vp_main, vps[i]);
}

static void run_shutdown_hooks(void *arg)
{
    (void)arg;
    for (unsigned i = hook_count; i-- > 0;)
        hooks[i]();
    hook_count = 0;
}

/* On VP 0 at PASSIVE, as power_off() runs in a kernel thread: hooks may post messages and wait. */
void hosted_power_off(void)
{
    if (this_vp)
        run_shutdown_hooks(NULL);
    else
        hosted_run_on(0, run_shutdown_hooks, NULL);
}

void hosted_stop(void)
{
    hosted_power_off();
    for (uint32_t i = 0; i < vp_count; i++) {
        __atomic_store_n(&vps[i]->stop, 1, __ATOMIC_RELEASE);
        pthread_kill(vps[i]->thread, INTERRUPT_SIGNAL);
        pthread_join(vps[i]->thread, NULL);
    }
    hvsim_destroy(sim);
    sim = NULL;
    for (uint32_t i = 0; i < vp_count; i++) {
        pthread_mutex_destroy(&vps[i]->lock);
        free(vps[i]);
        vps[i] = NULL;
        cpus[i] = NULL;
    }
    vp_count = cpu_count = 0;
    free(ram);
    free(page_used);
    ram = NULL;
    page_used = NULL;
}

bool hosted_wait_for(bool (*cond)(void *ctx), void *ctx, unsigned timeout_ms)
{
    uint64_t end = mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    while (!cond(ctx)) {
        if (mono_ns() > end)
            return false;
        struct timespec ts = { 0, 100000 };
        nanosleep(&ts, NULL);
    }
    return true;
}

struct counter_at_least {
    volatile uint32_t *counter;
    uint32_t want;
};

static bool reached(void *ctx)
{
    struct counter_at_least *c = ctx;
    return __atomic_load_n(c->counter, __ATOMIC_ACQUIRE) >= c->want;
}

bool hosted_wait_count(volatile uint32_t *counter, uint32_t want, unsigned timeout_ms)
{
    struct counter_at_least c = { counter, want };
    return hosted_wait_for(reached, &c, timeout_ms);
}
