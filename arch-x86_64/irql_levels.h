/*
 * irql_levels: the IRQL values, the fixed vectors and the IRQL assertions, shared by the kernel's
 * CR8 implementation (arch-x86_64/irql.h) and the hosted one (test/hosted/include/arch-x86_64/irql.h).
 * The includer defines irql_current().
 */
#ifndef ARCH_IRQL_LEVELS_H
#define ARCH_IRQL_LEVELS_H

#include <stdint.h>

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

void irql_violation(const char *what, irql_t have, irql_t limit, const char *file, int line)
    __attribute__((noreturn));

/* Assert the caller runs at most (or exactly) at a level: the wrong-IRQL call is a bug, so it panics
 * with the function and both levels named. */
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
