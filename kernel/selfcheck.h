/*
 * selfcheck: the "ok / FAIL" lines of the applications' self-checks, counted, so a QEMU test can
 * read one summary line. Callable at PASSIVE or DISPATCH, from several CPUs at once: each line is
 * formatted first and written with one kprintf (lines from two CPUs never interleave), and the
 * counters are atomic.
 */
#ifndef KERNEL_SELFCHECK_H
#define KERNEL_SELFCHECK_H

#include <stdbool.h>

#include "kernel/log.h"

extern unsigned selfcheck_passed, selfcheck_failed;

/* "  ok    <text>" or "  FAIL  <text>", one line. */
void selfcheck_report(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define CHECK(cond, ...) selfcheck_report((cond) ? true : false, __VA_ARGS__)

#endif
