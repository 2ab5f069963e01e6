/*
 * dsim stand-in for arch-x86_64/irql.h (found first on the dsim include path): the same API and
 * levels, with the level of the running context in a variable the scheduler saves and restores at
 * each switch (test/dsim/dsim.c). Interrupts are pending bits per VP, taken at the scheduler's
 * points when the level allows, and by irql_lower() when it unmasks them, as the local APIC does.
 */
#ifndef ARCH_IRQL_H
#define ARCH_IRQL_H

#include <stdint.h>

#include "arch-x86_64/cpu.h"
#include "arch-x86_64/irql_levels.h"

extern irql_t dsim_irql;     /* the running context's level */
void dsim_take_pending(void); /* runs the pending vectors above dsim_irql, then may switch */

static inline irql_t irql_current(void)
{
    return dsim_irql;
}

static inline irql_t irql_raise(irql_t level)
{
    irql_t old = dsim_irql;
    if (old > level)
        irql_violation("irql_raise below the current level", old, level, __FILE__, __LINE__);
    dsim_irql = level;
    return old;
}

static inline void irql_lower(irql_t level)
{
    irql_t cur = dsim_irql;
    if (level > cur)
        irql_violation("irql_lower above the current level", cur, level, __FILE__, __LINE__);
    dsim_irql = level;
    dsim_take_pending();
}

#endif
