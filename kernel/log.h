/*
 * log: the kernel log. Each line goes, whole and under one lock, to the in-memory log and to every
 * console that is up (COM1, the framebuffer). Callable at any IRQL, from any CPU, also from
 * exception handlers; during a panic the lock is broken after a bounded wait so the report gets out.
 *
 * Lines look like "[    0.012345] cpu1 I text": seconds since efi_main, CPU, level letter.
 */
#ifndef KERNEL_LOG_H
#define KERNEL_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

void log_init_early(void);              /* memlog only: usable before anything else */
void log_enable_serial(void);           /* after serial_init() found a UART */
void log_enable_fb(void);               /* after fbcon_init() */
void log_set_level(enum log_level lvl); /* lines above it are dropped (still counted) */

void klog(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void vklog(enum log_level lvl, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Raw text to the consoles, no prefix (for banners and the exception dump). */
void log_write(const char *s, size_t n);
void kprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The in-memory log, for applications that want to show or ship it. */
size_t log_read(uint64_t *pos, char *out, size_t n);

void log_panic_mode(void);
/* True if this CPU holds the log lock (an NMI that interrupted a log write must not log). */
bool log_held_here(void); /* from panic: stop honouring the lock once it has waited long enough */

#define pr_err(...) klog(LOG_ERROR, __VA_ARGS__)
#define pr_warn(...) klog(LOG_WARN, __VA_ARGS__)
#define pr_info(...) klog(LOG_INFO, __VA_ARGS__)
#define pr_debug(...) klog(LOG_DEBUG, __VA_ARGS__)

#endif
