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

typedef uint8_t irql_t;

#define IRQL_PASSIVE 0
#define IRQL_DISPATCH 2
#define IRQL_DEVICE_LOW 3
#define IRQL_DEVICE_HIGH 11
#define IRQL_CLOCK 13
#define IRQL_IPI 14
#define IRQL_HIGH 15

#define VECTOR_DISPATCH 0x2F
#define VECTOR_TIMER 0xD0
#define VECTOR_IPI_CALL 0xE0
#define VECTOR_IPI_STOP 0xEF
#define VECTOR_SPURIOUS 0xFF

extern __thread volatile irql_t hosted_irql;
void hosted_take_pending(void); /* runs the pending vectors above hosted_irql */

static inline irql_t irql_current(void)
{
    return hosted_irql;
}

void irql_violation(const char *what, irql_t have, irql_t limit, const char *file, int line)
    __attribute__((noreturn));

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

#define IRQL_ASSERT_MAX(limit)                                                                                \
    do {                                                                                                       \
        irql_t have_ = irql_current();                                                                         \
        if (have_ > (limit))                                                                                   \
            irql_violation(__func__, have_, (limit), __FILE__, __LINE__);                                      \
    } while (0)

#define IRQL_ASSERT_EQ(level)                                                                                 \
    do {                                                                                                       \
        irql_t have_ = irql_current();                                                                         \
        if (have_ != (level))                                                                                  \
            irql_violation(__func__, have_, (level), __FILE__, __LINE__);                                      \
    } while (0)

#endif
