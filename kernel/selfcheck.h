/*
 * selfcheck: the "ok / FAIL" lines of the applications' self-checks, counted, so a QEMU test can
 * read one summary line. Callable at PASSIVE or DISPATCH.
 */
#ifndef KERNEL_SELFCHECK_H
#define KERNEL_SELFCHECK_H

#include <stdbool.h>

#include "kernel/log.h"

extern unsigned selfcheck_passed, selfcheck_failed;

#define CHECK(cond, ...)                                                                                       \
    do {                                                                                                       \
        if (cond) {                                                                                            \
            selfcheck_passed++;                                                                                \
            kprintf("  ok    ");                                                                               \
        } else {                                                                                               \
            selfcheck_failed++;                                                                                \
            kprintf("  FAIL  ");                                                                               \
        }                                                                                                      \
        kprintf(__VA_ARGS__);                                                                                  \
        kprintf("\n");                                                                                         \
    } while (0)

#endif
