#include "kernel/dpc.h"

#include "arch-x86_64/irql.h"
#include "arch-x86_64/lapic.h"
#include "kernel/panic.h"
#include "kernel/percpu.h"

void dpc_init(struct dpc *d, dpc_fn fn, void *ctx)
{
    list_init(&d->link);
    d->fn = fn;
    d->ctx = ctx;
    d->queued_on = NULL;
    d->target_cpu = -1;
}

void dpc_set_target(struct dpc *d, int32_t cpu)
{
    d->target_cpu = cpu;
}

void dispatch_request(struct cpu *c)
{
    __atomic_fetch_add(&c->dispatch_requests, 1, __ATOMIC_RELAXED);
    if (c == this_cpu())
        lapic_send_self_ipi(VECTOR_DISPATCH);
    else
        lapic_send_ipi(c->apic_id, VECTOR_DISPATCH);
}

bool dpc_queue(struct dpc *d)
{
    struct cpu *c = this_cpu();
    if (d->target_cpu >= 0) {
        if ((uint32_t)d->target_cpu >= MAX_CPUS || !cpus[d->target_cpu] || !cpus[d->target_cpu]->online)
            panic("dpc_queue: target cpu %d is not online", d->target_cpu);
        c = cpus[d->target_cpu];
    }
    irql_t old = irql_raise(IRQL_HIGH);
    raw_spin_lock(&c->dpc_lock);
    bool queued = false;
    /* queued_on is read without the lock by dpc_cancel: atomic accesses everywhere. */
    if (!__atomic_load_n(&d->queued_on, __ATOMIC_RELAXED)) {
        __atomic_store_n(&d->queued_on, c, __ATOMIC_RELEASE);
        list_push_back(&c->dpc_queue, &d->link);
        queued = true;
    }
    raw_spin_unlock(&c->dpc_lock);
    if (queued)
        dispatch_request(c);
    irql_lower(old);
    return queued;
}

bool dpc_cancel(struct dpc *d)
{
    irql_t old = irql_raise(IRQL_HIGH);
    bool removed = false;
    struct cpu *c = __atomic_load_n(&d->queued_on, __ATOMIC_ACQUIRE);
    if (c) {
        raw_spin_lock(&c->dpc_lock);
        if (__atomic_load_n(&d->queued_on, __ATOMIC_RELAXED) == c) {
            list_remove(&d->link);
            __atomic_store_n(&d->queued_on, NULL, __ATOMIC_RELEASE);
            removed = true;
        }
        raw_spin_unlock(&c->dpc_lock);
    }
    irql_lower(old);
    return removed;
}

void dpc_drain(void)
{
    IRQL_ASSERT_EQ(IRQL_DISPATCH);
    struct cpu *c = this_cpu();
    for (;;) {
        irql_t old = spin_lock_at(&c->dpc_lock, IRQL_HIGH);
        struct list *n = list_pop_front(&c->dpc_queue);
        struct dpc *d = n ? container_of(n, struct dpc, link) : NULL;
        if (d)
            __atomic_store_n(&d->queued_on, NULL, __ATOMIC_RELEASE); /* it may be queued again from its own routine */
        spin_unlock(&c->dpc_lock, old);
        if (!d)
            break;
        d->fn(d, d->ctx);
        c->dpcs_run++;
        if (irql_current() != IRQL_DISPATCH)
            panic("DPC routine %p returned at IRQL %u, not DISPATCH", (void *)d->fn, irql_current());
    }
}
