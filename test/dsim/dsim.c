/*
 * dsim: the scheduler, the contexts, virtual time, interrupts, the kernel services the guest layers
 * call and the hv binding, all deterministic. Contract in test/dsim/dsim.h; how hvsim's threads are
 * redirected here in test/dsim/dsim_platform.h.
 *
 * One OS thread runs everything. A context is a stack and a saved stack pointer; the scheduler runs
 * on the process's stack and switches into one context at a time; a context switches back at a
 * preemption point (maybe), when it blocks, and when it ends. The state a real CPU would keep per
 * thread (the IRQL, this_cpu()) is saved and restored at each switch. Nothing here reads the wall
 * clock or depends on an address: the only inputs of a run are its configuration and seed.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "test/dsim/dsim.h"

#include "arch-x86_64/interrupts.h"
#include "arch-x86_64/irql.h"
#include "arch-x86_64/lapic.h"
#include "arch-x86_64/paging.h"
#include "arch-x86_64/spinlock.h"
#include "arch-x86_64/tsc.h"
#include "hv/binding.h"
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

/* This file implements what dsim_platform.h redirects to: it uses the real names. */
#undef pthread_create
#undef pthread_join
#undef pthread_cond_wait
#undef pthread_cond_timedwait
#undef pthread_cond_signal
#undef pthread_cond_broadcast
#undef pthread_mutex_lock
#undef clock_gettime
#undef nanosleep

#if defined(__SANITIZE_ADDRESS__)
#define DSIM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DSIM_ASAN 1
#endif
#endif
#ifdef DSIM_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#define MAX_CTX 256
#define MAX_VPS 8
#define STACK_BYTES (512u * 1024u)
#define NO_DEADLINE UINT64_MAX
#define TIME_BASE_NS 1000000000ull /* virtual time starts at 1 s: 0 means "none" to some callers */
#define GUEST_TSC_HZ 1000000000ull

enum ctx_kind { CTX_GUEST, CTX_IDLE, CTX_HOST };
enum ctx_state { CTX_RUNNABLE, CTX_BLOCKED, CTX_DONE };

struct dsim_ctx {
    uint32_t slot;
    char name[24];
    enum ctx_kind kind;
    enum ctx_state state;
    int vp;                    /* -1 for host contexts */
    irql_t irql;               /* saved while switched out */
    void *sp;                  /* saved while switched out */
    void *stack;
    void *fake_stack;          /* ASan's fake stack of this fiber while switched out */
    void (*fn)(void *);
    void *(*pfn)(void *);      /* a pthread's start routine */
    void *arg, *ret;
    const void *wait_obj;      /* what a blocked context waits for (NULL: only its deadline) */
    uint64_t deadline;
    bool woken;                /* set by a wake (not by the deadline) */
};

struct vp {
    struct cpu cpu;
    uint64_t pending[4];
    struct dsim_ctx *owner;    /* the context on this CPU above PASSIVE (or running), NULL: none */
    struct dsim_ctx *idle;     /* takes interrupts when no thread of the VP runs */
    uint64_t interrupts;
};

/* ---- run state ---- */

static struct dsim_config cfg;
static struct dsim_ctx *ctxs[MAX_CTX];
static uint32_t ctx_end;           /* slots [ctx_end, MAX_CTX) are free: the loops stop there */
static struct dsim_ctx *cur;       /* the running context, NULL in the scheduler */
static struct dsim_ctx *main_ctx;
static void *sched_sp;
static void *sched_fake_stack;
static const void *sched_stack_bottom;
static size_t sched_stack_size;
static struct vp vps[MAX_VPS];
static uint32_t vp_count;
static uint64_t vnow;
static uint64_t rng_state;
static uint64_t trace, steps;
static bool in_run, aborted, stopping_idle;
static enum dsim_result result;
static char failure[1024];
static struct hvsim *sim;
static uint8_t *ram;
static uint64_t ram_size, ram_pages;
static uint8_t *page_used;
static char idle_token;           /* what an interrupt context waits for */

irql_t dsim_irql = IRQL_PASSIVE;
__thread struct cpu *hosted_this_cpu; /* kernel/percpu.h's this_cpu() under HOSTED */
struct cpu *cpus[MAX_CPUS];
uint32_t cpu_count;
uint64_t tsc_hz = GUEST_TSC_HZ;

static void log_append(const char *s, size_t n);
static void switch_to_scheduler(bool exiting);

/* ---- PRNG (splitmix64) ---- */

uint64_t dsim_rand(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint32_t dsim_below(uint32_t n)
{
    return n ? (uint32_t)(((dsim_rand() >> 32) * n) >> 32) : 0;
}

bool dsim_one_in(uint32_t n)
{
    return n <= 1 || dsim_below(n) == 0;
}

static void trace_mix(uint64_t v)
{
    trace = (trace ^ v) * 0x100000001b3ull;
}

/* ---- failure ---- */

static void dump_contexts(void)
{
    static const char *const states[] = { "runnable", "blocked", "done" };
    fprintf(stderr, "dsim: at virtual %llu.%06llu s, step %llu:\n", (unsigned long long)((vnow - TIME_BASE_NS) / 1000000000ull),
            (unsigned long long)((vnow - TIME_BASE_NS) % 1000000000ull / 1000), (unsigned long long)steps);
    for (uint32_t i = 0; i < ctx_end; i++) {
        struct dsim_ctx *c = ctxs[i];
        if (!c || c->kind == CTX_IDLE)
            continue;
        fprintf(stderr, "dsim:   ctx %u %-16s vp %d irql %u %s%s", i, c->name, c->vp, c->irql, states[c->state],
                c->state == CTX_BLOCKED && c->deadline != NO_DEADLINE ? " (with a deadline)" : "");
        fprintf(stderr, "\n");
    }
}

static void vfail(enum dsim_result r, const char *fmt, va_list ap)
{
    if (aborted)
        return;
    vsnprintf(failure, sizeof failure, fmt, ap);
    result = r;
    aborted = true;
}

void dsim_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(DSIM_FAILED, fmt, ap);
    va_end(ap);
    if (cur)
        switch_to_scheduler(true); /* abandoned: never resumed */
    abort();                       /* outside a run: nothing to go back to */
}

static void sched_fail(enum dsim_result r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(r, fmt, ap);
    va_end(ap);
}

const char *dsim_failure(void) { return failure; }
uint64_t dsim_trace_hash(void) { return trace; }
uint64_t dsim_steps(void) { return steps; }

/* ---- contexts and switching ---- */

/* dsim_switch(save, to): saves the callee-saved registers on the current stack and the stack
 * pointer in *save, then resumes the stack `to` (saved by dsim_switch, or made by ctx_new). Not
 * swapcontext: that one changes the signal mask (a system call) and ASan's interceptor of it clears
 * the target stack's shadow on every switch (an mmap and two madvise calls): 100 times slower.
 * The ASan fiber annotations around each switch tell it about the stacks instead. */
void dsim_switch(void **save, void *to);
__asm__(".text\n"
        ".globl dsim_switch\n"
        ".type dsim_switch, @function\n"
        "dsim_switch:\n"
        "    pushq %rbp\n"
        "    pushq %rbx\n"
        "    pushq %r12\n"
        "    pushq %r13\n"
        "    pushq %r14\n"
        "    pushq %r15\n"
        "    movq %rsp, (%rdi)\n"
        "    movq %rsi, %rsp\n"
        "    popq %r15\n"
        "    popq %r14\n"
        "    popq %r13\n"
        "    popq %r12\n"
        "    popq %rbx\n"
        "    popq %rbp\n"
        "    ret\n"
        ".size dsim_switch, .-dsim_switch\n");

static void asan_start_switch(void **save, const void *bottom, size_t size)
{
#ifdef DSIM_ASAN
    __sanitizer_start_switch_fiber(save, bottom, size);
#else
    (void)save, (void)bottom, (void)size;
#endif
}

static void asan_finish_switch(void *save, const void **bottom_old, size_t *size_old)
{
#ifdef DSIM_ASAN
    __sanitizer_finish_switch_fiber(save, bottom_old, size_old);
#else
    (void)save, (void)bottom_old, (void)size_old;
#endif
}

static struct vp *ctx_vp(const struct dsim_ctx *c)
{
    return c && c->vp >= 0 ? &vps[c->vp] : NULL;
}

/* From a context: back to the scheduler; returns when the scheduler runs this context again. */
static void switch_to_scheduler(bool exiting)
{
    struct dsim_ctx *c = cur;
    c->irql = dsim_irql;
    struct vp *vp = ctx_vp(c);
    /* A thread at PASSIVE gives its CPU up when it stops running (preempted or blocked); above
     * PASSIVE it keeps it: nothing else runs on that CPU until it comes back down. */
    if (vp && vp->owner == c && (c->irql == IRQL_PASSIVE || c->state != CTX_RUNNABLE))
        vp->owner = NULL;
    asan_start_switch(exiting ? NULL : &c->fake_stack, sched_stack_bottom, sched_stack_size);
    dsim_switch(&c->sp, sched_sp);
    asan_finish_switch(c->fake_stack, &sched_stack_bottom, &sched_stack_size);
}

static void ctx_entry(void)
{
    struct dsim_ctx *c = cur;
    asan_finish_switch(NULL, &sched_stack_bottom, &sched_stack_size);
    if (c->kind != CTX_HOST)
        dsim_take_pending();
    if (c->pfn)
        c->ret = c->pfn(c->arg);
    else
        c->fn(c->arg);
    if (c->kind == CTX_GUEST && dsim_irql != IRQL_PASSIVE)
        dsim_fail("guest thread %s returned at IRQL %u", c->name, dsim_irql);
    c->state = CTX_DONE;
    for (uint32_t i = 0; i < ctx_end; i++) /* its joiners */
        if (ctxs[i] && ctxs[i]->state == CTX_BLOCKED && ctxs[i]->wait_obj == c) {
            ctxs[i]->state = CTX_RUNNABLE;
            ctxs[i]->woken = true;
        }
    switch_to_scheduler(true);
    abort(); /* a finished context is never resumed */
}

/* Stacks of finished contexts, kept for the next ones (and the next runs): a fresh mapping costs a
 * page fault per page touched, on the stack and on ASan's shadow of it. */
#define STACK_POOL 64
static void *stack_pool[STACK_POOL];
static uint32_t stack_pool_count;

static void *stack_get(void)
{
    if (stack_pool_count) {
        void *s = stack_pool[--stack_pool_count];
#ifdef DSIM_ASAN
        __asan_unpoison_memory_region(s, STACK_BYTES); /* a frame that never returned left its redzones */
#endif
        return s;
    }
    void *s = mmap(NULL, STACK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (s == MAP_FAILED)
        abort();
    return s;
}

static void stack_put(void *s)
{
    if (stack_pool_count < STACK_POOL)
        stack_pool[stack_pool_count++] = s;
    else
        munmap(s, STACK_BYTES);
}

static struct dsim_ctx *ctx_new(enum ctx_kind kind, int vp, const char *name)
{
    uint32_t slot = 0;
    while (slot < MAX_CTX && ctxs[slot])
        slot++;
    if (slot == MAX_CTX)
        dsim_fail("more than %u contexts", MAX_CTX);
    if (slot >= ctx_end)
        ctx_end = slot + 1;
    struct dsim_ctx *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->stack = stack_get();
    c->slot = slot;
    snprintf(c->name, sizeof c->name, "%s", name ? name : "?");
    c->kind = kind;
    c->vp = vp;
    c->irql = IRQL_PASSIVE;
    c->state = CTX_RUNNABLE;
    c->deadline = NO_DEADLINE;
    /* The first switch to it pops six zero registers and "returns" into ctx_entry with the stack
     * aligned as after a call (its own return address slot is 0: it never returns). */
    uint64_t *top = (uint64_t *)((uint8_t *)c->stack + STACK_BYTES);
    top -= 8;
    memset(top, 0, 8 * sizeof *top);
    top[6] = (uint64_t)(uintptr_t)ctx_entry;
    c->sp = top;
    ctxs[slot] = c;
    return c;
}

static void ctx_free(struct dsim_ctx *c)
{
    ctxs[c->slot] = NULL;
    while (ctx_end > 0 && !ctxs[ctx_end - 1])
        ctx_end--;
    stack_put(c->stack);
    free(c);
}

/* Blocks the running context until a wake on obj or the deadline (NO_DEADLINE: none). True if it
 * was woken, false at the deadline. The caller re-checks its condition either way. */
static bool block(const void *obj, uint64_t deadline)
{
    struct dsim_ctx *c = cur;
    c->state = CTX_BLOCKED;
    c->wait_obj = obj;
    c->deadline = deadline;
    c->woken = false;
    switch_to_scheduler(false);
    c->wait_obj = NULL;
    c->deadline = NO_DEADLINE;
    if (c->kind != CTX_HOST)
        dsim_take_pending();
    return c->woken;
}

static void wake_all(const void *obj)
{
    for (uint32_t i = 0; i < ctx_end; i++) {
        struct dsim_ctx *c = ctxs[i];
        if (c && c->state == CTX_BLOCKED && c->wait_obj == obj) {
            c->state = CTX_RUNNABLE;
            c->woken = true;
        }
    }
}

static bool wake_one(const void *obj)
{
    for (uint32_t i = 0; i < ctx_end; i++) {
        struct dsim_ctx *c = ctxs[i];
        if (c && c->state == CTX_BLOCKED && c->wait_obj == obj) {
            c->state = CTX_RUNNABLE;
            c->woken = true;
            return true;
        }
    }
    return false;
}

/* The running context lets the scheduler choose again (it stays runnable). */
static void yield_now(void)
{
    switch_to_scheduler(false);
    if (cur->kind != CTX_HOST)
        dsim_take_pending();
}

/* A preemption point of guest code: time passes, and maybe another context runs. */
static void point(void)
{
    if (!cur || cur->kind == CTX_HOST)
        return;
    vnow += DSIM_POINT_NS;
    if (dsim_one_in(cfg.preempt_one_in))
        yield_now();
}

static bool eligible(const struct dsim_ctx *c)
{
    if (c->state != CTX_RUNNABLE)
        return false;
    const struct vp *vp = ctx_vp(c);
    return !vp || !vp->owner || vp->owner == c;
}

static void run_ctx(struct dsim_ctx *c)
{
    cur = c;
    dsim_irql = c->irql;
    struct vp *vp = ctx_vp(c);
    hosted_this_cpu = vp ? &vp->cpu : NULL;
    if (vp)
        vp->owner = c;
    asan_start_switch(&sched_fake_stack, c->stack, STACK_BYTES);
    dsim_switch(&sched_sp, c->sp);
    asan_finish_switch(sched_fake_stack, NULL, NULL);
    cur = NULL;
    hosted_this_cpu = NULL;
    dsim_irql = IRQL_PASSIVE;
}

static bool only_idle_left(void)
{
    for (uint32_t i = 0; i < ctx_end; i++)
        if (ctxs[i] && ctxs[i]->kind != CTX_IDLE && ctxs[i]->state != CTX_DONE)
            return false;
    return true;
}

static void schedule(void)
{
    struct dsim_ctx *el[MAX_CTX];
    for (;;) {
        if (aborted)
            return;
        if (main_ctx->state == CTX_DONE && only_idle_left() && !stopping_idle) {
            stopping_idle = true; /* let the interrupt contexts finish */
            for (uint32_t v = 0; v < vp_count; v++)
                if (vps[v].idle->state == CTX_BLOCKED)
                    vps[v].idle->state = CTX_RUNNABLE;
        }
        uint32_t n = 0;
        bool live = false;
        for (uint32_t i = 0; i < ctx_end; i++) {
            struct dsim_ctx *c = ctxs[i];
            if (!c || c->state == CTX_DONE)
                continue;
            live = true;
            if (c->state == CTX_BLOCKED && c->deadline <= vnow)
                c->state = CTX_RUNNABLE; /* timed out */
            if (eligible(c))
                el[n++] = c;
        }
        if (!live)
            return;
        if (n == 0) {
            uint64_t next = NO_DEADLINE;
            for (uint32_t i = 0; i < ctx_end; i++)
                if (ctxs[i] && ctxs[i]->state == CTX_BLOCKED && ctxs[i]->deadline < next)
                    next = ctxs[i]->deadline;
            if (next == NO_DEADLINE) {
                sched_fail(DSIM_DEADLOCK, "deadlock: every context waits and none has a deadline");
                return;
            }
            vnow = next; /* nothing runs until then: jump */
            continue;
        }
        struct dsim_ctx *c = el[n == 1 ? 0 : dsim_below(n)];
        trace_mix(c->slot);
        trace_mix(vnow);
        steps++;
        vnow += DSIM_POINT_NS;
        if (vnow - TIME_BASE_NS > cfg.max_virtual_ns) {
            sched_fail(DSIM_HANG, "hang: over %llu s of virtual time", (unsigned long long)(cfg.max_virtual_ns / 1000000000ull));
            return;
        }
        if (steps > cfg.max_steps) {
            sched_fail(DSIM_HANG, "hang: over %llu scheduler steps", (unsigned long long)cfg.max_steps);
            return;
        }
        run_ctx(c);
    }
}

/* ---- interrupts ---- */

struct handler {
    irq_handler_fn fn;
    void *ctx;
};
static struct handler handlers[256];

void dsim_take_pending(void)
{
    struct vp *vp = ctx_vp(cur);
    if (!vp || aborted)
        return;
    for (;;) {
        int vector = -1;
        for (int w = 3; w >= 0 && vector < 0; w--)
            if (vp->pending[w])
                vector = w * 64 + 63 - __builtin_clzll(vp->pending[w]);
        if (vector < 0 || (vector >> 4) <= dsim_irql)
            return;
        vp->pending[vector >> 6] &= ~(1ull << (vector & 63));
        irql_t old = dsim_irql;
        dsim_irql = (irql_t)(vector >> 4);
        vp->interrupts++;
        vp->cpu.interrupts++;
        trace_mix(0x1000u + (uint32_t)vector);
        struct handler h = handlers[vector];
        if (h.fn) {
            struct int_frame f = { .vector = (uint64_t)vector };
            h.fn(&f, h.ctx);
        }
        dsim_irql = old;
    }
}

static void raise_vector(uint32_t cpu, uint8_t vector)
{
    if (cpu >= vp_count)
        return;
    struct vp *vp = &vps[cpu];
    vp->pending[vector >> 6] |= 1ull << (vector & 63);
    if (vp->idle->state == CTX_BLOCKED)
        vp->idle->state = CTX_RUNNABLE;
    if (cur && ctx_vp(cur) == vp)
        dsim_take_pending(); /* a self-IPI: at once if the level allows */
}

static void sim_raise(void *ctx, uint32_t vp, uint8_t vector)
{
    (void)ctx;
    raise_vector(vp, vector); /* hvsim's lock is held: the binding is at HIGH, nothing runs here */
}

void lapic_send_ipi(uint32_t apic_id, uint8_t vector)
{
    raise_vector(apic_id, vector);
}

void lapic_send_self_ipi(uint8_t vector)
{
    raise_vector(hosted_this_cpu ? hosted_this_cpu->id : 0, vector);
}

status_t irq_register(uint8_t vector, irq_handler_fn fn, void *ctx)
{
    if (handlers[vector].fn)
        return STATUS_BUSY;
    handlers[vector].ctx = ctx;
    handlers[vector].fn = fn;
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
    dsim_fail("IRQL violation: %s at IRQL %u (limit %u), %s:%d", what, have, limit, file, line);
}

static void idle_main(void *arg)
{
    (void)arg;
    for (;;) {
        dsim_take_pending();
        if (stopping_idle)
            return;
        block(&idle_token, NO_DEADLINE);
    }
}

static void dispatch_interrupt(struct int_frame *f, void *ctx)
{
    (void)f;
    (void)ctx;
    dpc_drain();
}

/* ---- spinlocks: a contended lock yields (its holder runs on another VP meanwhile) ---- */

void raw_spin_lock(spinlock_t *l)
{
    uint32_t me = hosted_this_cpu ? hosted_this_cpu->id + 1 : 0xffff;
    point();
    if (l->locked && l->owner == me)
        dsim_fail("spinlock %p taken recursively on cpu%u", (void *)l, me - 1);
    while (l->locked) {
        if (!cur)
            dsim_fail("spinlock %p contended outside a context", (void *)l);
        yield_now();
    }
    l->locked = 1;
    l->owner = me;
}

void raw_spin_unlock(spinlock_t *l)
{
    l->owner = 0;
    l->locked = 0;
    point();
}

int raw_spin_trylock(spinlock_t *l)
{
    point();
    if (l->locked)
        return 0;
    l->locked = 1;
    l->owner = hosted_this_cpu ? hosted_this_cpu->id + 1 : 0xffff;
    return 1;
}

/* ---- log, panic ---- */

static char *log_text;
static size_t log_len, log_cap;

static void log_append(const char *s, size_t n)
{
    if (log_len + n + 1 > log_cap) {
        size_t c = (log_len + n + 1) * 2;
        char *p = realloc(log_text, c);
        if (!p)
            abort();
        log_text = p;
        log_cap = c;
    }
    memcpy(log_text + log_len, s, n);
    log_len += n;
    log_text[log_len] = 0;
    if (cfg.verbose)
        fwrite(s, 1, n, stderr);
}

void vklog(enum log_level lvl, const char *fmt, va_list ap)
{
    static const char *const tags[] = { "error: ", "warn: ", "", "debug: " };
    char line[1024];
    int n = fmt_snprintf(line, sizeof line, "[%llu.%06llu vp%d] %s", (unsigned long long)((vnow - TIME_BASE_NS) / 1000000000ull),
                         (unsigned long long)((vnow - TIME_BASE_NS) % 1000000000ull / 1000),
                         hosted_this_cpu ? (int)hosted_this_cpu->id : -1, tags[lvl <= LOG_DEBUG ? lvl : LOG_DEBUG]);
    if (n < 0 || (size_t)n >= sizeof line)
        n = 0;
    int m = fmt_vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    size_t len = (size_t)n + (m > 0 ? (size_t)m : 0);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    log_append(line, len);
    point();
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

void dsim_host_log(void *ctx, const char *line)
{
    (void)ctx;
    char buf[600];
    int n = snprintf(buf, sizeof buf, "[%llu.%06llu host] %s\n", (unsigned long long)((vnow - TIME_BASE_NS) / 1000000000ull),
                     (unsigned long long)((vnow - TIME_BASE_NS) % 1000000000ull / 1000), line);
    if (n > 0)
        log_append(buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

bool dsim_log_contains(const char *needle)
{
    return log_text && strstr(log_text, needle);
}

void dsim_log_dump_tail(size_t bytes)
{
    if (!log_text)
        return;
    size_t from = log_len > bytes ? log_len - bytes : 0;
    while (from > 0 && log_text[from - 1] != '\n')
        from++;
    fprintf(stderr, "----- log (last %zu bytes) -----\n%s----- end of log -----\n", log_len - from, log_text + from);
}

void panic(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    fmt_vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    dsim_fail("PANIC (vp%d): %s", hosted_this_cpu ? (int)hosted_this_cpu->id : -1, line);
}

/* ---- memory: pages from guest RAM (GPA = offset, first fit), heap from malloc ---- */

void *page_alloc(size_t count)
{
    point();
    for (uint64_t i = 1, run = 0; i < ram_pages; i++) { /* page 0 is never handed out */
        run = page_used[i] ? 0 : run + 1;
        if (run == count) {
            uint64_t first = i + 1 - count;
            memset(page_used + first, 1, count);
            void *p = ram + first * PAGE_SIZE;
            memset(p, 0, count * PAGE_SIZE);
            return p;
        }
    }
    return NULL;
}

void page_free(void *p, size_t count)
{
    uint64_t first = (uint64_t)((uint8_t *)p - ram) / PAGE_SIZE;
    if ((uint8_t *)p < ram || first + count > ram_pages)
        dsim_fail("page_free(%p): not guest RAM", p);
    for (uint64_t i = first; i < first + count; i++)
        if (!page_used[i])
            dsim_fail("page_free: page %llu freed twice", (unsigned long long)i);
    memset(page_used + first, 0, count);
    point();
}

uint64_t dsim_pages_in_use(void)
{
    uint64_t n = 0;
    for (uint64_t i = 0; i < ram_pages; i++)
        n += page_used[i];
    return n;
}

uint64_t virt_to_phys(const void *p)
{
    const uint8_t *b = p;
    if (b < ram || b >= ram + ram_size)
        dsim_fail("virt_to_phys(%p): not guest RAM", p);
    return (uint64_t)(b - ram);
}

void *kmalloc(size_t size)
{
    point();
    return malloc(size);
}

void *kzalloc(size_t size)
{
    point();
    return calloc(1, size);
}

void kfree(void *p)
{
    free(p);
    point();
}

/* ---- time ---- */

uint64_t dsim_clock_ns(void)
{
    return vnow;
}

uint64_t dsim_guest_rdtsc(void)
{
    point();
    return vnow;
}

void dsim_cpu_relax(void)
{
    /* A spinning CPU: the others get on (with certainty, or a spin on a flag another VP sets
     * would only end by chance). */
    if (cur && cur->kind != CTX_HOST) {
        vnow += DSIM_POINT_NS;
        yield_now();
    }
}

uint64_t dsim_now_ns(void)
{
    return vnow;
}

uint64_t ns_to_tsc(uint64_t ns) { return ns; }
uint64_t tsc_to_ns(uint64_t ticks) { return ticks; }
uint64_t tsc_ns_since_boot(void) { return dsim_guest_rdtsc() - TIME_BASE_NS; }

void dsim_sleep_ns(uint64_t ns)
{
    if (!cur)
        dsim_fail("dsim_sleep_ns outside a context");
    uint64_t end = vnow + ns;
    while (vnow < end)
        block(NULL, end);
}

int dsim_clock_gettime(clockid_t clk, struct timespec *ts)
{
    (void)clk; /* every clock is the virtual one */
    ts->tv_sec = (time_t)(vnow / 1000000000ull);
    ts->tv_nsec = (long)(vnow % 1000000000ull);
    return 0;
}

int dsim_nanosleep(const struct timespec *req, struct timespec *rem)
{
    if (rem)
        memset(rem, 0, sizeof *rem);
    dsim_sleep_ns((uint64_t)req->tv_sec * 1000000000ull + (uint64_t)req->tv_nsec);
    return 0;
}

/* ---- hvsim's threads ---- */

int dsim_pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    (void)attr;
    if (!in_run)
        return EAGAIN;
    struct dsim_ctx *c = ctx_new(CTX_HOST, -1, "hvsim-thread");
    c->pfn = fn;
    c->arg = arg;
    *t = (pthread_t)c;
    return 0;
}

int dsim_pthread_join(pthread_t t, void **ret)
{
    struct dsim_ctx *c = (struct dsim_ctx *)t;
    while (c->state != CTX_DONE)
        block(c, NO_DEADLINE);
    if (ret)
        *ret = c->ret;
    ctx_free(c);
    return 0;
}

static uint64_t timespec_ns(const struct timespec *ts)
{
    return (uint64_t)ts->tv_sec * 1000000000ull + (uint64_t)ts->tv_nsec;
}

static int cond_wait(pthread_cond_t *c, pthread_mutex_t *m, uint64_t deadline)
{
    if (!cur)
        dsim_fail("pthread_cond_wait outside a context");
    pthread_mutex_unlock(m);
    bool woken = block(c, deadline);
    dsim_pthread_mutex_lock(m);
    return woken || deadline == NO_DEADLINE ? 0 : ETIMEDOUT;
}

int dsim_pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m)
{
    return cond_wait(c, m, NO_DEADLINE);
}

int dsim_pthread_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *abstime)
{
    return cond_wait(c, m, timespec_ns(abstime));
}

int dsim_pthread_cond_signal(pthread_cond_t *c)
{
    wake_one(c);
    return 0;
}

int dsim_pthread_cond_broadcast(pthread_cond_t *c)
{
    wake_all(c);
    return 0;
}

int dsim_pthread_mutex_lock(pthread_mutex_t *m)
{
    /* One OS thread: a mutex found taken was left held by a context that switched out, which
     * would deadlock the process. */
    int e = pthread_mutex_trylock(m);
    if (e != 0) {
        fprintf(stderr, "dsim: an hvsim mutex is held across a context switch (%s)\n", strerror(e));
        abort();
    }
    return 0;
}

/* ---- kernel threads, events, mutexes ---- */

struct dsim_ctx *dsim_spawn_guest(uint32_t cpu, const char *name, void (*fn)(void *arg), void *arg)
{
    if (cpu >= vp_count)
        dsim_fail("dsim_spawn_guest: no vp%u", cpu);
    struct dsim_ctx *c = ctx_new(CTX_GUEST, (int)cpu, name);
    c->fn = fn;
    c->arg = arg;
    return c;
}

struct dsim_ctx *dsim_spawn_host(const char *name, void (*fn)(void *arg), void *arg)
{
    struct dsim_ctx *c = ctx_new(CTX_HOST, -1, name);
    c->fn = fn;
    c->arg = arg;
    return c;
}

void dsim_join(struct dsim_ctx *c)
{
    if (cur && cur->kind != CTX_HOST)
        IRQL_ASSERT_MAX(IRQL_PASSIVE);
    while (c->state != CTX_DONE)
        block(c, NO_DEADLINE);
    ctx_free(c);
}

void dsim_run_on(uint32_t cpu, void (*fn)(void *arg), void *arg)
{
    dsim_join(dsim_spawn_guest(cpu, "run-on", fn, arg));
}

status_t thread_create(const char *name, thread_fn fn, void *arg, int cpu, struct thread **out)
{
    if (cpu < 0 || (uint32_t)cpu >= vp_count)
        return STATUS_INVALID_PARAMETER;
    point();
    *out = (struct thread *)dsim_spawn_guest((uint32_t)cpu, name, fn, arg);
    return STATUS_OK;
}

int thread_join(struct thread *t)
{
    dsim_join((struct dsim_ctx *)t);
    return 0;
}

void thread_yield(void)
{
    IRQL_ASSERT_MAX(IRQL_DISPATCH);
    vnow += DSIM_POINT_NS;
    yield_now();
}

void thread_sleep_ns(uint64_t ns)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    dsim_sleep_ns(ns);
}

void event_init(struct event *e, enum event_type type, bool signaled)
{
    e->auto_reset = type == EVENT_SYNCHRONIZATION;
    e->signaled = signaled;
}

void event_set(struct event *e)
{
    e->signaled = true;
    wake_all(e);
    point();
}

void event_reset(struct event *e)
{
    e->signaled = false;
}

bool event_is_set(struct event *e)
{
    return e->signaled;
}

static bool event_take(struct event *e)
{
    bool was = e->signaled;
    if (e->auto_reset)
        e->signaled = false;
    return was;
}

status_t event_wait(struct event *e, uint64_t timeout_ns)
{
    if (event_take(e))
        return STATUS_OK;
    if (timeout_ns == 0)
        return STATUS_TIMEOUT;
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    uint64_t end = timeout_ns == WAIT_FOREVER ? NO_DEADLINE : vnow + timeout_ns;
    while (!event_take(e)) {
        if (vnow >= end)
            return STATUS_TIMEOUT;
        block(e, end);
    }
    return STATUS_OK;
}

void mutex_init(struct mutex *m)
{
    m->owner = NULL;
}

status_t mutex_lock_timeout(struct mutex *m, uint64_t timeout_ns)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    uint64_t end = timeout_ns == WAIT_FOREVER ? NO_DEADLINE : vnow + timeout_ns;
    point();
    while (m->owner) {
        if (vnow >= end)
            return STATUS_TIMEOUT;
        block(m, end);
    }
    m->owner = (struct thread *)cur;
    return STATUS_OK;
}

void mutex_lock(struct mutex *m)
{
    status_t s = mutex_lock_timeout(m, WAIT_FOREVER);
    (void)s;
}

void mutex_unlock(struct mutex *m)
{
    m->owner = NULL;
    wake_all(m);
    point();
}

/* ---- power ---- */

static void (*hooks[8])(void);
static unsigned hook_count;

void power_register_shutdown_hook(void (*fn)(void))
{
    if (hook_count < 8)
        hooks[hook_count++] = fn;
}

static void run_shutdown_hooks(void *arg)
{
    (void)arg;
    for (unsigned i = hook_count; i-- > 0;)
        hooks[i]();
    hook_count = 0;
}

void dsim_power_off(void)
{
    dsim_run_on(0, run_shutdown_hooks, NULL);
}

/* ---- the binding: each operation a direct call into hvsim, at HIGH (a VM exit is atomic) ---- */

static uint32_t vp_index(void)
{
    return hosted_this_cpu ? hosted_this_cpu->id : 0; /* hv_init's discovery may run anywhere: VP 0 */
}

static void b_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t regs[4])
{
    point();
    irql_t old = irql_raise(IRQL_HIGH);
    hvsim_cpuid(sim, vp_index(), leaf, subleaf, regs);
    irql_lower(old);
}

static uint64_t b_rdmsr(uint32_t msr)
{
    point();
    irql_t old = irql_raise(IRQL_HIGH);
    uint64_t v = 0;
    bool ok = hvsim_rdmsr(sim, vp_index(), msr, &v);
    irql_lower(old);
    if (!ok)
        dsim_fail("rdmsr %#x raised #GP", msr);
    return v;
}

static void b_wrmsr(uint32_t msr, uint64_t value)
{
    point();
    irql_t old = irql_raise(IRQL_HIGH);
    bool ok = hvsim_wrmsr(sim, vp_index(), msr, value);
    irql_lower(old);
    if (!ok)
        dsim_fail("wrmsr %#x <- %#llx raised #GP", msr, (unsigned long long)value);
}

static uint64_t b_hypercall(uint64_t control, uint64_t input, uint64_t output)
{
    point();
    irql_t old = irql_raise(IRQL_HIGH);
    uint64_t rv = hvsim_hypercall(sim, vp_index(), control, input, output);
    irql_lower(old);
    return rv;
}

static const struct hv_binding dsim_binding = {
    .name = "dsim",
    .cpuid = b_cpuid,
    .rdmsr = b_rdmsr,
    .wrmsr = b_wrmsr,
    .hypercall = b_hypercall,
};

const struct hv_binding *hv_binding_hosted_probe(void)
{
    return sim ? &dsim_binding : NULL;
}

/* ---- the machine and the run ---- */

struct hvsim *dsim_sim(void) { return sim; }
uint32_t dsim_vps(void) { return vp_count; }

static void main_trampoline(void *arg)
{
    void **a = arg;
    ((void (*)(void *))a[0])(a[1]);
}

enum dsim_result dsim_run(const struct dsim_config *c, void (*main_fn)(void *arg), void *arg)
{
    if (in_run)
        abort();
    cfg = *c;
    if (cfg.vps == 0 || cfg.vps > MAX_VPS)
        cfg.vps = 1;
    if (!cfg.ram_bytes)
        cfg.ram_bytes = 16u << 20;
    if (!cfg.preempt_one_in)
        cfg.preempt_one_in = 4;
    if (!cfg.max_virtual_ns)
        cfg.max_virtual_ns = 600ull * 1000000000ull;
    if (!cfg.max_steps)
        cfg.max_steps = 20000000ull;
    rng_state = cfg.seed;
    trace = 0xcbf29ce484222325ull;
    steps = 0;
    vnow = TIME_BASE_NS;
    aborted = stopping_idle = false;
    result = DSIM_OK;
    failure[0] = 0;
    log_len = 0;
    if (log_text)
        log_text[0] = 0;
    memset(handlers, 0, sizeof handlers);
    handlers[VECTOR_DISPATCH].fn = dispatch_interrupt;
    hook_count = 0;

    ram_size = cfg.ram_bytes;
    ram_pages = ram_size / PAGE_SIZE;
    ram = mmap(NULL, ram_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    page_used = calloc(ram_pages, 1);
    if (ram == MAP_FAILED || !page_used)
        abort();

    struct hvsim_config hc = { 0 };
    if (cfg.hvsim)
        hc = *cfg.hvsim;
    hc.vp_count = cfg.vps;
    hc.tsc_hz = GUEST_TSC_HZ;
    hc.guest_tsc_delta = 0;
    hc.log = dsim_host_log;
    hc.log_ctx = NULL;
    in_run = true;
    sim = hvsim_create(&hc, ram, ram_size, sim_raise, NULL);
    if (!sim)
        abort();

    vp_count = cpu_count = cfg.vps;
    for (uint32_t i = 0; i < vp_count; i++) {
        struct vp *vp = &vps[i];
        memset(vp, 0, sizeof *vp);
        vp->cpu.self = &vp->cpu;
        vp->cpu.id = i;
        vp->cpu.apic_id = i;
        vp->cpu.online = true;
        list_init(&vp->cpu.dpc_queue);
        cpus[i] = &vp->cpu;
        char name[24];
        snprintf(name, sizeof name, "vp%u-irq", i);
        vp->idle = ctx_new(CTX_IDLE, (int)i, name);
        vp->idle->fn = idle_main;
        vp->idle->state = CTX_BLOCKED;
        vp->idle->wait_obj = &idle_token;
    }
    void *targs[2] = { (void *)main_fn, arg };
    main_ctx = ctx_new(CTX_HOST, -1, "main");
    main_ctx->fn = main_trampoline;
    main_ctx->arg = targs;

    schedule();

    enum dsim_result r = result;
    if (r == DSIM_OK) {
        for (uint32_t i = 0; i < MAX_CTX; i++)
            if (ctxs[i])
                ctx_free(ctxs[i]);
        hvsim_destroy(sim);
        munmap(ram, ram_size);
        free(page_used);
    } else {
        fprintf(stderr, "dsim: run failed: %s\n", failure);
        dump_contexts();
        /* Contexts are abandoned mid-flight: their stacks, hvsim and guest RAM stay as they are (the
         * guest may still point into them); the process is expected to exit. */
        memset(ctxs, 0, sizeof ctxs);
        ctx_end = 0;
    }
    sim = NULL;
    main_ctx = NULL;
    in_run = false;
    for (uint32_t i = 0; i < vp_count; i++)
        cpus[i] = NULL;
    vp_count = cpu_count = 0;
    return r;
}
