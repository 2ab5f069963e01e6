#include "kernel/selfcheck.h"

#include <stdarg.h>

#include "kernel/fmt.h"

unsigned selfcheck_passed, selfcheck_failed;

void selfcheck_report(bool ok, const char *fmt, ...)
{
    __atomic_add_fetch(ok ? &selfcheck_passed : &selfcheck_failed, 1, __ATOMIC_RELAXED);
    char line[400];
    va_list ap;
    va_start(ap, fmt);
    int n = fmt_vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        line[0] = 0;
    kprintf("  %s%s\n", ok ? "ok    " : "FAIL  ", line);
}
