#include "kernel/log.h"

#include "arch-x86_64/serial.h"
#include "arch-x86_64/spinlock.h"
#include "arch-x86_64/tsc.h"
#include "kernel/fbcon.h"
#include "kernel/fmt.h"
#include "kernel/memlog.h"
#include "kernel/percpu.h"

static char memlog_buf[1 << 16];
static struct memlog memlog;
static spinlock_t log_lock = SPINLOCK_INIT;
static bool serial_on, fb_on;
static volatile bool panic_mode;
static enum log_level max_level = LOG_INFO;

void log_init_early(void)
{
    memlog_init(&memlog, memlog_buf, sizeof memlog_buf);
}

void log_enable_serial(void) { serial_on = true; }
void log_set_level(enum log_level lvl) { max_level = lvl; }
void log_panic_mode(void) { panic_mode = true; }

bool log_held_here(void)
{
    return log_lock.locked && log_lock.owner == (percpu_ready() ? this_cpu()->id + 1 : 1);
}

static irql_t lock(void)
{
    irql_t old = irql_raise(IRQL_HIGH);
    if (!panic_mode) {
        raw_spin_lock(&log_lock);
        return old;
    }
    /* Panicking: another CPU may have died holding the lock. Wait a little, then go ahead. */
    for (int i = 0; i < 10000000; i++)
        if (raw_spin_trylock(&log_lock))
            return old;
    return old;
}

bool log_held_here(void);

static void unlock(irql_t old)
{
    /* After a panic-mode wait that gave up, the lock is someone else's: leave it alone. */
    if (log_held_here())
        raw_spin_unlock(&log_lock);
    irql_lower(old);
}

void log_enable_fb(void)
{
    /* Replay what was logged before the framebuffer was up, so the screen shows the whole boot. */
    irql_t old = lock();
    char chunk[256];
    uint64_t pos = 0;
    size_t n;
    while ((n = memlog_read(&memlog, &pos, chunk, sizeof chunk)) > 0)
        fbcon_write(chunk, n);
    fb_on = true;
    unlock(old);
}

static void emit(const char *s, size_t n)
{
    memlog_write(&memlog, s, n);
    if (serial_on)
        serial_write(s, n);
    if (fb_on)
        fbcon_write(s, n);
}

void log_write(const char *s, size_t n)
{
    irql_t old = lock();
    emit(s, n);
    unlock(old);
}

void vklog(enum log_level lvl, const char *fmt, va_list ap)
{
    if (lvl > max_level)
        return;
    char line[512];
    uint64_t ns = tsc_ns_since_boot();
    static const char letters[] = "EWID";
    uint32_t cpu = 0;
    /* GS is set up very early; before that, this is the boot CPU. */
    if (percpu_ready())
        cpu = this_cpu()->id;
    int n = fmt_snprintf(line, sizeof line, "[%5llu.%06llu] cpu%u %c ", (unsigned long long)(ns / 1000000000),
                         (unsigned long long)(ns / 1000 % 1000000), cpu, letters[lvl & 3]);
    int m = fmt_vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    size_t len = (size_t)n + ((size_t)m < sizeof line - (size_t)n - 1 ? (size_t)m : sizeof line - (size_t)n - 2);
    line[len++] = '\n';
    irql_t old = lock();
    emit(line, len);
    unlock(old);
}

void klog(enum log_level lvl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vklog(lvl, fmt, ap);
    va_end(ap);
}

void kprintf(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = fmt_vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log_write(buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

size_t log_read(uint64_t *pos, char *out, size_t n)
{
    irql_t old = lock();
    size_t got = memlog_read(&memlog, pos, out, n);
    unlock(old);
    return got;
}
