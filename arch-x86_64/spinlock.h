/*
 * Spinlocks. spin_lock() raises to DISPATCH (KeAcquireSpinLock); spin_lock_at() raises to a higher
 * level for data shared with interrupt handlers (KeAcquireInterruptSpinLock); both return the level
 * to restore. The raw_ forms neither check nor change IRQL: for code that already runs at HIGH.
 * A lock is never taken recursively: that is detected and panics.
 */
#ifndef ARCH_SPINLOCK_H
#define ARCH_SPINLOCK_H

#include <stdint.h>

#include "arch-x86_64/irql.h"

typedef struct spinlock {
    volatile uint32_t locked;
    uint32_t owner; /* cpu id + 1 of the holder, 0 when free: for the recursion check and dumps */
} spinlock_t;

#define SPINLOCK_INIT { 0, 0 }

void raw_spin_lock(spinlock_t *l);
void raw_spin_unlock(spinlock_t *l);
int raw_spin_trylock(spinlock_t *l);

static inline irql_t spin_lock_at(spinlock_t *l, irql_t level)
{
    irql_t old = irql_raise(level);
    raw_spin_lock(l);
    return old;
}

static inline irql_t spin_lock(spinlock_t *l)
{
    return spin_lock_at(l, IRQL_DISPATCH);
}

static inline void spin_unlock(spinlock_t *l, irql_t old)
{
    raw_spin_unlock(l);
    irql_lower(old);
}

#endif
