/*
 * panic and assert. panic() reports the message, the CPU and thread, and a backtrace on every
 * console, stops the other CPUs (NMI), then powers off with POWER_STATUS_PANIC or halts, as the
 * `panic=` command-line word says (poweroff by default under QEMU, halt elsewhere so the console
 * stays readable). Callable at any IRQL.
 */
#ifndef KERNEL_PANIC_H
#define KERNEL_PANIC_H

#include <stdbool.h>

void panic(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
bool panic_in_progress(void);
void panic_set_halt(bool halt);

#define assert(cond)                                                                                           \
    do {                                                                                                       \
        if (__builtin_expect(!(cond), 0))                                                                      \
            panic("assertion failed: %s (%s:%d, %s)", #cond, __FILE__, __LINE__, __func__);                    \
    } while (0)

#endif
