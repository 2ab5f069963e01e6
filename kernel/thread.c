#include "kernel/thread.h"

#include "arch-x86_64/interrupts.h"
#include "arch-x86_64/irql.h"
#include "arch-x86_64/paging.h"
#include "arch-x86_64/tsc.h"
#include "kernel/fmt.h"
#include "kernel/log.h"
#include "kernel/mm.h"
#include "kernel/panic.h"
#include "kernel/percpu.h"
#include "kernel/string.h"

void context_switch(uint64_t *save_rsp, uint64_t new_rsp);
void thread_entry_asm(void);

static uint64_t next_id = 1;
static uint32_t next_cpu_rr;

struct thread *thread_current(void)
{
    return this_cpu()->current;
}

static void thread_struct_init(struct thread *t, const char *name, struct cpu *c)
{
    t->cpu = c;
    t->id = __atomic_fetch_add(&next_id, 1, __ATOMIC_RELAXED);
    fmt_snprintf(t->name, sizeof t->name, "%s", name);
    list_init(&t->rq_link);
    t->refs = 2;
    ktimer_init(&t->wait_timer);
    wait_queue_init(&t->sleep_queue);
    event_init(&t->done, EVENT_NOTIFICATION, false);
}

/* The frame context_switch pops for a thread that has never run: r15 r14 r13 r12 rbx rbp, RFLAGS
 * with interrupts off (thread_start enables them), then the return into thread_entry_asm. */
static void prepare_first_switch(struct thread *t)
{
    uint64_t *sp = (uint64_t *)t->stack_top;
    *--sp = 0; /* alignment, and the end of backtraces */
    *--sp = (uint64_t)thread_entry_asm;
    *--sp = 0x2;
    for (int i = 0; i < 6; i++)
        *--sp = 0;
    t->rsp = (uint64_t)sp;
}

static void release(struct thread *t)
{
    if (__atomic_sub_fetch(&t->refs, 1, __ATOMIC_ACQ_REL) == 0)
        kfree(t);
}

/* Frees the stacks of threads that exited on this CPU. At <= DISPATCH. */
static void reap(struct cpu *c)
{
    for (;;) {
        irql_t old = spin_lock_at(&c->rq_lock, IRQL_HIGH);
        struct list *n = list_pop_front(&c->zombies);
        spin_unlock(&c->rq_lock, old);
        if (!n)
            return;
        struct thread *t = container_of(n, struct thread, rq_link);
        if (t->stack_top)
            stack_free(t->stack_top, t->stack_pages);
        event_set(&t->done);
        release(t);
    }
}

void sched_wake(struct thread *t)
{
    struct cpu *c = t->cpu;
    raw_spin_lock(&c->rq_lock);
    if (t->state == THREAD_BLOCKED) {
        if (c->current == c->idle && list_empty(&c->runqueue))
            c->idle_wake_tsc = rdtsc();
        t->state = THREAD_READY;
        list_push_back(&c->runqueue, &t->rq_link);
        c->need_resched = true;
    }
    raw_spin_unlock(&c->rq_lock);
    dispatch_request(c);
}

/* How long a CPU running its idle thread took to switch to a thread made ready there: the dispatch
 * interrupt's latency, plus the emulator's or hypervisor's in waking a halted virtual processor. Cheap
 * (one rdtsc per wake of an idle CPU); a lost dispatch interrupt would show here as a long wait. */
#define SCHED_SLOW_IDLE_WAKE_MS 100
static void note_idle_wake(struct cpu *c)
{
    uint64_t took = rdtsc() - c->idle_wake_tsc;
    c->idle_wake_tsc = 0;
    c->idle_wakes++;
    if (took > c->idle_wake_max_tsc)
        c->idle_wake_max_tsc = took;
    if (took > ns_to_tsc(SCHED_SLOW_IDLE_WAKE_MS * 1000000ull)) {
        c->idle_wakes_slow++;
        if (took > ns_to_tsc(1000000000ull))
            c->idle_wake_warn = true;
    }
}

void sched_switch_locked(struct cpu *c)
{
    struct thread *prev = c->current;
    if (prev->state == THREAD_RUNNING) {
        prev->state = THREAD_READY;
        if (prev != c->idle)
            list_push_back(&c->runqueue, &prev->rq_link);
    }
    struct list *n = list_pop_front(&c->runqueue);
    struct thread *next = n ? container_of(n, struct thread, rq_link) : c->idle;
    c->need_resched = false;
    if (prev == c->idle && next != c->idle && c->idle_wake_tsc)
        note_idle_wake(c);
    next->state = THREAD_RUNNING;
    if (next == prev)
        return;
    c->current = next;
    c->context_switches++;
    next->switches_in++;
    c->quantum_end_tsc = rdtsc() + ns_to_tsc(SCHED_QUANTUM_NS);
    timer_reprogram(c);
    c->switch_prev = prev;
    context_switch(&prev->rsp, next->rsp);
}

void sched_finish_switch(struct cpu *c)
{
    struct thread *prev = c->switch_prev;
    c->switch_prev = NULL;
    if (c->idle_wake_warn) {
        static bool warned;
        c->idle_wake_warn = false;
        if (!__atomic_exchange_n(&warned, true, __ATOMIC_RELAXED))
            pr_warn("sched: cpu%u stayed idle %llu ms with a ready thread (a late or lost dispatch interrupt; "
                    "reported once)",
                    c->id, (unsigned long long)(tsc_to_ns(c->idle_wake_max_tsc) / 1000000));
    }
    if (prev && prev->state == THREAD_DEAD) {
        /* Off its stack now: hand it to the reaper, which runs at DISPATCH. */
        raw_spin_lock(&c->rq_lock);
        list_push_back(&c->zombies, &prev->rq_link);
        raw_spin_unlock(&c->rq_lock);
        dispatch_request(c);
    }
}

/* C entry of every new thread, reached from context_switch through thread_entry_asm: at HIGH, IF
 * clear, this CPU's rq_lock held. */
void thread_start(void);
void thread_start(void)
{
    struct cpu *c = this_cpu();
    raw_spin_unlock(&c->rq_lock);
    sched_finish_switch(c);
    irql_lower(IRQL_PASSIVE);
    sti();
    struct thread *t = c->current;
    t->fn(t->arg);
    thread_exit(0);
}

status_t thread_create(const char *name, thread_fn fn, void *arg, int cpu, struct thread **out)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    reap(this_cpu());
    struct cpu *c;
    if (cpu == CPU_ANY) {
        uint32_t start = __atomic_fetch_add(&next_cpu_rr, 1, __ATOMIC_RELAXED);
        c = NULL;
        for (uint32_t i = 0; i < MAX_CPUS && !c; i++) {
            struct cpu *cand = cpus[(start + i) % MAX_CPUS];
            if (cand && cand->online)
                c = cand;
        }
    } else {
        c = (cpu >= 0 && cpu < MAX_CPUS) ? cpus[cpu] : NULL;
        if (!c || !c->online)
            return STATUS_INVALID_PARAMETER;
    }
    struct thread *t = kzalloc(sizeof *t);
    if (!t)
        return STATUS_NO_MEMORY;
    thread_struct_init(t, name, c);
    t->fn = fn;
    t->arg = arg;
    t->stack_pages = THREAD_STACK_PAGES;
    status_t s = stack_alloc(t->stack_pages, &t->stack_top);
    if (s != STATUS_OK) {
        kfree(t);
        return s;
    }
    prepare_first_switch(t);
    t->state = THREAD_BLOCKED;
    if (out)
        *out = t;
    else
        release(t); /* detached from birth */
    irql_t old = irql_raise(IRQL_HIGH);
    sched_wake(t);
    irql_lower(old);
    return STATUS_OK;
}

void thread_exit(int code)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    struct cpu *c = this_cpu();
    struct thread *t = c->current;
    if (t == c->idle)
        panic("the idle thread cannot exit");
    t->exit_code = code;
    irql_raise(IRQL_HIGH);
    raw_spin_lock(&c->rq_lock);
    t->state = THREAD_DEAD;
    sched_switch_locked(c);
    panic("a dead thread was scheduled");
}

int thread_join(struct thread *t)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    if (t == thread_current())
        panic("thread %s joins itself", t->name);
    status_t s = event_wait(&t->done, WAIT_FOREVER);
    if (s != STATUS_OK)
        panic("thread_join: wait failed (%s)", status_name(s));
    int code = t->exit_code;
    release(t);
    return code;
}

void thread_detach(struct thread *t)
{
    release(t);
}

void thread_yield(void)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    struct cpu *c = this_cpu();
    irql_t old = irql_raise(IRQL_HIGH);
    raw_spin_lock(&c->rq_lock);
    sched_switch_locked(c);
    raw_spin_unlock(&this_cpu()->rq_lock);
    sched_finish_switch(this_cpu());
    irql_lower(old);
}

static bool never(void *obj, struct thread *t)
{
    (void)obj;
    (void)t;
    return false;
}

void thread_sleep_ns(uint64_t ns)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    struct thread *t = thread_current();
    status_t s = wait_queue_wait(&t->sleep_queue, never, NULL, ns ? ns : 1);
    if (s != STATUS_TIMEOUT)
        panic("thread_sleep: woke with %s", status_name(s));
}

void sched_clock_tick(struct cpu *c, uint64_t now)
{
    if (c->current == c->idle || now < c->quantum_end_tsc)
        return;
    c->quantum_end_tsc = now + ns_to_tsc(SCHED_QUANTUM_NS);
    raw_spin_lock(&c->rq_lock);
    bool others = !list_empty(&c->runqueue);
    if (others)
        c->need_resched = true;
    raw_spin_unlock(&c->rq_lock);
    if (others)
        dispatch_request(c);
}

/* Vector 0x2F, at DISPATCH: DPCs first, then the reaper, then a reschedule if one is due. */
static void dispatch_interrupt(struct int_frame *f, void *ctx)
{
    (void)f;
    (void)ctx;
    struct cpu *c = this_cpu();
    c->dispatch_interrupts++;
    dpc_drain();
    if (!list_empty(&c->zombies))
        reap(c);
    if (c->need_resched) {
        irql_raise(IRQL_HIGH);
        raw_spin_lock(&c->rq_lock);
        sched_switch_locked(c);
        raw_spin_unlock(&c->rq_lock);
        sched_finish_switch(c);
        irql_lower(IRQL_DISPATCH);
    }
}

void sched_register_interrupts(void)
{
    if (irq_register(VECTOR_DISPATCH, dispatch_interrupt, NULL) != STATUS_OK)
        panic("sched: dispatch vector taken");
}

static void idle_body(void *arg)
{
    (void)arg;
    sched_idle_loop();
}

void sched_cpu_init(struct cpu *c, bool boot_cpu)
{
    list_init(&c->runqueue);
    list_init(&c->zombies);
    list_init(&c->dpc_queue);
    timer_cpu_init(c);
    /* The running context becomes a thread: "main" on the boot CPU, the idle thread elsewhere. */
    struct thread *self = kzalloc(sizeof *self);
    if (!self)
        panic("sched: no memory for cpu %u's threads", c->id);
    char name[24];
    fmt_snprintf(name, sizeof name, boot_cpu ? "main" : "idle/%u", c->id);
    thread_struct_init(self, name, c);
    self->state = THREAD_RUNNING;
    c->current = self;
    c->quantum_end_tsc = rdtsc() + ns_to_tsc(SCHED_QUANTUM_NS);
    if (!boot_cpu) {
        c->idle = self;
        return;
    }
    struct thread *idle = kzalloc(sizeof *idle);
    if (!idle)
        panic("sched: no memory for the idle thread");
    fmt_snprintf(name, sizeof name, "idle/%u", c->id);
    thread_struct_init(idle, name, c);
    idle->fn = idle_body;
    idle->stack_pages = THREAD_STACK_PAGES;
    if (stack_alloc(idle->stack_pages, &idle->stack_top) != STATUS_OK)
        panic("sched: no memory for the idle stack");
    prepare_first_switch(idle);
    idle->state = THREAD_READY;
    c->idle = idle;
}

/* The ready queue is looked at with interrupts off, and `sti; hlt` keeps them off until the hlt
 * (the one-instruction STI shadow), so a dispatch interrupt requested after the look wakes the hlt
 * instead of being taken just before it. (The dispatch interrupt switches threads itself, so with
 * interrupts on the window lost nothing today; this way the loop does not depend on that.) */
void sched_idle_loop(void)
{
    struct cpu *c = this_cpu();
    irql_lower(IRQL_PASSIVE);
    for (;;) {
        cli();
        bool zombies = !list_empty(&c->zombies), ready = !list_empty(&c->runqueue);
        if (!zombies && !ready) {
            sti_hlt();
            continue;
        }
        sti();
        if (zombies)
            reap(c);
        if (ready)
            thread_yield();
    }
}

void sched_dump(void)
{
    for (uint32_t i = 0; i < MAX_CPUS; i++) {
        struct cpu *c = cpus[i];
        if (!c || !c->online)
            continue;
        irql_t old = spin_lock_at(&c->rq_lock, IRQL_HIGH);
        char ready[160];
        size_t n = 0;
        ready[0] = '\0';
        list_for_each(it, &c->runqueue) {
            struct thread *t = container_of(it, struct thread, rq_link);
            n += (size_t)fmt_snprintf(ready + n, n < sizeof ready ? sizeof ready - n : 0, " %s#%llu", t->name,
                                      (unsigned long long)t->id);
            if (n >= sizeof ready)
                break;
        }
        struct thread *cur = c->current;
        bool resched = c->need_resched, armed = c->timer_armed;
        uint64_t switches = c->context_switches, irqs = c->interrupts;
        uint64_t wakes = c->idle_wakes, slow = c->idle_wakes_slow, wake_max = c->idle_wake_max_tsc;
        uint64_t waiting = c->idle_wake_tsc ? rdtsc() - c->idle_wake_tsc : 0;
        spin_unlock(&c->rq_lock, old);
        kprintf("sched: cpu%u current %s#%llu (state %d), need_resched %d, timer %s, %llu switches, %llu interrupts, "
                "ready:%s\n",
                c->id, cur->name, (unsigned long long)cur->id, cur->state, resched, armed ? "armed" : "idle",
                (unsigned long long)switches, (unsigned long long)irqs, ready[0] ? ready : " (none)");
        char pending[48] = "";
        if (waiting)
            fmt_snprintf(pending, sizeof pending, "; one waiting for %llu us",
                         (unsigned long long)(tsc_to_ns(waiting) / 1000));
        kprintf("sched: cpu%u dispatch interrupts: %llu requested, %llu taken; idle wake-ups: %llu, slowest %llu us, "
                "%llu over %u ms%s\n",
                c->id, (unsigned long long)__atomic_load_n(&c->dispatch_requests, __ATOMIC_RELAXED),
                (unsigned long long)c->dispatch_interrupts, (unsigned long long)wakes,
                (unsigned long long)(tsc_to_ns(wake_max) / 1000), (unsigned long long)slow,
                SCHED_SLOW_IDLE_WAKE_MS, pending);
    }
}
