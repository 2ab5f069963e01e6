/*
 * Hosted stand-in for arch-x86_64/irql.h (found first on the hosted include path): the same API and
 * levels, with the level in a thread-local variable of the VP thread instead of CR8. Interrupts are
 * signals to the VP thread (test/hosted/hosted.c); the signal handler takes only the vectors whose
 * class is above the current level and leaves the rest pending, and irql_lower() takes the pending
 * ones it unmasks, as the local APIC does.
 */
#ifndef ARCH_IRQL_H
#define ARCH_IRQL_H

#include <stdint.h>

#include "arch-x86_64/cpu.h"
#include "arch-x86_64/irql_levels.h"

extern __thread volatile irql_t hosted_irql;
void hosted_take_pending(void); /* runs the pending vectors above hosted_irql */

static inline irql_t irql_current(void)
{
    return hosted_irql;
}

static inline irql_t irql_raise(irql_t level)
{
    irql_t old = hosted_irql;
    if (old > level)
        irql_violation("irql_raise below the current level", old, level, __FILE__, __LINE__);
    hosted_irql = level;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    return old;
}

static inline void irql_lower(irql_t level)
{
    irql_t cur = hosted_irql;
    if (level > cur)
        irql_violation("irql_lower above the current level", cur, level, __FILE__, __LINE__);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    hosted_irql = level;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    hosted_take_pending();
}

#endif
