#include "arch-x86_64/spinlock.h"

#include "kernel/panic.h"
#include "kernel/percpu.h"

static inline uint32_t me(void)
{
    return percpu_ready() ? this_cpu()->id + 1 : 1;
}

void raw_spin_lock(spinlock_t *l)
{
    uint32_t self = me();
    if (l->locked && l->owner == self && !panic_in_progress())
        panic("spinlock %p taken recursively on cpu %u", (void *)l, self - 1);
    while (__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE)) {
        while (__atomic_load_n(&l->locked, __ATOMIC_RELAXED))
            cpu_relax();
    }
    l->owner = self;
}

int raw_spin_trylock(spinlock_t *l)
{
    if (__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE))
        return 0;
    l->owner = me();
    return 1;
}

void raw_spin_unlock(spinlock_t *l)
{
    l->owner = 0;
    __atomic_store_n(&l->locked, 0, __ATOMIC_RELEASE);
}
