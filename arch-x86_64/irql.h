/*
 * IRQL: the interrupt request level of the current CPU, held in CR8 (the local APIC's task priority).
 * A CPU at level L takes only interrupts whose vector class (vector >> 4) is above L, so raising
 * IRQL masks exactly the interrupts KMCL semantics say it should, and lowering it lets pending ones in
 * at once, in hardware.
 *
 *   PASSIVE  0   threads; may block
 *   DISPATCH 2   DPCs and the scheduler; may not block (vector 0x2F: the DPC/dispatch interrupt)
 *   DEVICE   3..11 device interrupts (vector class = level)
 *   CLOCK    13  the local timer (vector 0xD0)
 *   IPI      14  cross-CPU calls and panic stop (0xE0..0xEF)
 *   HIGH     15  everything masked
 *
 * irql_raise() may be called at any level not above the target; irql_lower() only to a level not
 * above the current one. Both are asserted.
 */
#ifndef ARCH_IRQL_H
#define ARCH_IRQL_H

#include <stdint.h>

#include "arch-x86_64/cpu.h"
#include "arch-x86_64/irql_levels.h"

static inline irql_t irql_current(void)
{
    return (irql_t)read_cr8();
}

static inline irql_t irql_raise(irql_t level)
{
    irql_t old = irql_current();
    if (old > level)
        irql_violation("irql_raise below the current level", old, level, __FILE__, __LINE__);
    write_cr8(level);
    return old;
}

static inline void irql_lower(irql_t level)
{
    irql_t cur = irql_current();
    if (level > cur)
        irql_violation("irql_lower above the current level", cur, level, __FILE__, __LINE__);
    write_cr8(level);
}

#endif
