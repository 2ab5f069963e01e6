#include "kernel/timer.h"

#include "arch-x86_64/interrupts.h"
#include "arch-x86_64/irql.h"
#include "arch-x86_64/lapic.h"
#include "arch-x86_64/tsc.h"
#include "kernel/dpc.h"
#include "kernel/panic.h"
#include "kernel/percpu.h"
#include "kernel/thread.h"

void ktimer_init(struct ktimer *t)
{
    list_init(&t->link);
    t->cpu = NULL;
    t->dpc = NULL;
    t->fired = 0;
}

void timer_cpu_init(struct cpu *c)
{
    list_init(&c->timers);
    c->timer_armed = false;
}

static void lapic_arm(uint64_t deadline_tsc)
{
    uint64_t now = rdtsc();
    lapic_timer_oneshot(deadline_tsc > now ? deadline_tsc - now : 1);
}

static const struct clock_event lapic_clock = { "local APIC timer", lapic_arm, lapic_timer_stop };
static const struct clock_event *clock_event = &lapic_clock;

const char *timer_clock_name(void)
{
    return clock_event->name;
}

const struct clock_event *timer_clock_event(void)
{
    return clock_event;
}

/* With c->timer_lock held, at HIGH. */
static void reprogram_locked(struct cpu *c)
{
    uint64_t next = UINT64_MAX;
    if (!list_empty(&c->timers))
        next = container_of(c->timers.next, struct ktimer, link)->deadline_tsc;
    if (c->current && c->current != c->idle && c->quantum_end_tsc < next)
        next = c->quantum_end_tsc;
    if (next == UINT64_MAX) {
        if (c->timer_armed)
            clock_event->stop();
        c->timer_armed = false;
        return;
    }
    if (c->timer_armed && next == c->timer_programmed_tsc)
        return;
    clock_event->arm(next);
    c->timer_programmed_tsc = next;
    c->timer_armed = true;
}

void timer_reprogram(struct cpu *c)
{
    raw_spin_lock(&c->timer_lock);
    reprogram_locked(c);
    raw_spin_unlock(&c->timer_lock);
}

static void insert_sorted(struct cpu *c, struct ktimer *t)
{
    list_for_each(it, &c->timers) {
        if (container_of(it, struct ktimer, link)->deadline_tsc > t->deadline_tsc) {
            list_insert_before(it, &t->link);
            return;
        }
    }
    list_push_back(&c->timers, &t->link);
}

bool ktimer_cancel(struct ktimer *t)
{
    irql_t old = irql_raise(IRQL_HIGH);
    bool was = false;
    struct cpu *c = __atomic_load_n(&t->cpu, __ATOMIC_ACQUIRE);
    if (c) {
        raw_spin_lock(&c->timer_lock);
        if (t->cpu == c) {
            list_remove(&t->link);
            t->cpu = NULL;
            was = true;
        }
        raw_spin_unlock(&c->timer_lock);
    }
    irql_lower(old);
    return was;
}

void ktimer_set(struct ktimer *t, uint64_t due_ns, uint64_t period_ns, struct dpc *dpc)
{
    irql_t old = irql_raise(IRQL_HIGH);
    ktimer_cancel(t);
    struct cpu *c = this_cpu();
    raw_spin_lock(&c->timer_lock);
    t->dpc = dpc;
    t->deadline_tsc = rdtsc() + ns_to_tsc(due_ns);
    t->period_tsc = period_ns ? ns_to_tsc(period_ns) : 0;
    if (period_ns && !t->period_tsc)
        t->period_tsc = 1;
    t->cpu = c;
    insert_sorted(c, t);
    reprogram_locked(c);
    raw_spin_unlock(&c->timer_lock);
    irql_lower(old);
}

void timer_expired(void)
{
    struct cpu *c = this_cpu();
    c->timer_interrupts++;
    uint64_t now = rdtsc();
    irql_t old = irql_raise(IRQL_HIGH);
    raw_spin_lock(&c->timer_lock);
    c->timer_armed = false; /* the one-shot has fired */
    while (!list_empty(&c->timers)) {
        struct ktimer *t = container_of(c->timers.next, struct ktimer, link);
        if (t->deadline_tsc > now)
            break;
        list_remove(&t->link);
        t->fired++;
        if (t->period_tsc) {
            t->deadline_tsc += t->period_tsc;
            if (t->deadline_tsc <= now) /* fell behind: skip missed periods rather than storm */
                t->deadline_tsc = now + t->period_tsc;
            insert_sorted(c, t);
        } else {
            t->cpu = NULL;
        }
        if (t->dpc)
            dpc_queue(t->dpc);
    }
    raw_spin_unlock(&c->timer_lock);
    sched_clock_tick(c, now);
    raw_spin_lock(&c->timer_lock);
    reprogram_locked(c);
    raw_spin_unlock(&c->timer_lock);
    irql_lower(old);
}

static void timer_interrupt(struct int_frame *f, void *ctx)
{
    (void)f;
    (void)ctx;
    timer_expired();
}

void timer_set_clock_event(const struct clock_event *ce)
{
    clock_event = ce ? ce : &lapic_clock;
}

void timer_rearm_this_cpu(void)
{
    struct cpu *c = this_cpu();
    irql_t old = spin_lock_at(&c->timer_lock, IRQL_HIGH);
    lapic_timer_stop();
    c->timer_armed = false;
    reprogram_locked(c);
    spin_unlock(&c->timer_lock, old);
}

void timer_register_interrupt(void)
{
    if (irq_register(VECTOR_TIMER, timer_interrupt, NULL) != STATUS_OK)
        panic("timer: vector %#x taken", VECTOR_TIMER);
}
