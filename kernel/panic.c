#include "kernel/panic.h"

#include <stdarg.h>

#include "arch-x86_64/cpu.h"
#include "arch-x86_64/interrupts.h"
#include "arch-x86_64/irql.h"
#include "arch-x86_64/smp.h"
#include "kernel/fmt.h"
#include "kernel/log.h"
#include "kernel/percpu.h"
#include "kernel/power.h"
#include "kernel/thread.h"

static volatile int panicking;
static bool halt_on_panic;

bool panic_in_progress(void)
{
    return panicking;
}

void panic_set_halt(bool halt)
{
    halt_on_panic = halt;
}

void panic(const char *fmt, ...)
{
    cli();
    if (__atomic_exchange_n(&panicking, 1, __ATOMIC_ACQ_REL)) {
        /* A second panic (on another CPU, or while reporting the first): just stop. */
        for (;;)
            hlt();
    }
    log_panic_mode();
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    fmt_vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct cpu *c = percpu_ready() ? this_cpu() : NULL;
    kprintf("\n*** PANIC on cpu %u (thread %s): %s\n", c ? c->id : 0, c && c->current ? c->current->name : "(boot)",
            msg);
    backtrace_from((uint64_t)__builtin_frame_address(0), (uint64_t)__builtin_return_address(0));
    if (halt_on_panic) {
        smp_stop_others();
        kprintf("*** system halted\n");
        for (;;)
            hlt();
    }
    power_off(POWER_STATUS_PANIC);
}

void irql_violation(const char *what, irql_t have, irql_t limit, const char *file, int line)
{
    panic("IRQL violation: %s at IRQL %u (allowed: %u) at %s:%d", what, have, limit, file, line);
}
