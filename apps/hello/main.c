/*
 * hello: the first application. It reports what the platform found (CPUs, memory, ACPI tables,
 * framebuffer, command line, Hyper-V or not, boot time), runs the kernel's self-checks (threads on
 * every CPU, DPCs, IRQL rules, timers, synchronisation, exceptions caught and reported) and returns
 * the number of failed checks, so the machine powers off with status 0 only if all passed.
 *
 * Command line: fault=ud|pf|gp|de|stack|nx|wp|irql|assert|panic|none triggers that fault after the
 * report (it must be reported and end the machine, never hang); selftest=0 skips the checks;
 * stress=N repeats the multi-CPU mutex/semaphore check N times (stops at the first failure).
 */
#include "arch-x86_64/cpu.h"
#include "arch-x86_64/hypervisor.h"
#include "arch-x86_64/interrupts.h"
#include "arch-x86_64/irql.h"
#include "arch-x86_64/lapic.h"
#include "arch-x86_64/paging.h"
#include "arch-x86_64/smp.h"
#include "arch-x86_64/tsc.h"
#include "boot/boot_info.h"
#include "kernel/acpi.h"
#include "kernel/app.h"
#include "kernel/dpc.h"
#include "kernel/fmt.h"
#include "kernel/log.h"
#include "kernel/mm.h"
#include "kernel/panic.h"
#include "kernel/percpu.h"
#include "kernel/string.h"
#include "kernel/sync.h"
#include "hv/hv.h"
#include "kernel/selfcheck.h"
#include "kernel/thread.h"
#include "kernel/timer.h"

const char *const app_name = "hello";
const char *const app_cmdline_keys[] = { "fault", "selftest", "stress", NULL };

static const char *kind_name(uint32_t k)
{
    switch (k) {
    case BOOT_MEM_FREE: return "free";
    case BOOT_MEM_LOADER: return "loader";
    case BOOT_MEM_ACPI_RECLAIM: return "acpi";
    case BOOT_MEM_ACPI_NVS: return "acpi-nvs";
    case BOOT_MEM_MMIO: return "mmio";
    default: return "reserved";
    }
}

static void report_platform(void)
{
    const struct boot_info *bi = kernel_boot_info();
    const struct acpi_info *acpi = kernel_acpi();
    kprintf("\n== platform ==\n");
    kprintf("firmware      %s (revision %#x)\n", bi->firmware_vendor, bi->firmware_revision);
    kprintf("command line  '%s' (from %s)\n", bi->cmdline, bi->cmdline_source);

    char vendor[13];
    uint32_t max_leaf;
    cpu_hypervisor_vendor(vendor, &max_leaf);
    bool hyperv = hyperv_present();
    kprintf("hypervisor    %s; Hyper-V %s\n", vendor, hyperv ? "present (Hv#1 interface)" : "not present");

    kprintf("cpus          %u online:", cpu_count);
    for (uint32_t i = 0; i < MAX_CPUS; i++)
        if (cpus[i] && cpus[i]->online)
            kprintf(" cpu%u=apic%u", cpus[i]->id, cpus[i]->apic_id);
    kprintf(" (%s)\n", lapic_x2apic ? "x2APIC" : "xAPIC");

    uint64_t by_kind[8] = { 0 };
    for (uint32_t i = 0; i < bi->mem_count; i++)
        by_kind[bi->mem[i].kind & 7] += bi->mem[i].pages;
    kprintf("memory map    %u regions:", bi->mem_count);
    for (uint32_t k = 1; k < 7; k++)
        if (by_kind[k])
            kprintf(" %s %llu KiB", kind_name(k), (unsigned long long)(by_kind[k] * 4));
    kprintf("\n");
    struct mm_stats ms;
    mm_get_stats(&ms);
    kprintf("memory        %llu MiB managed, %llu MiB free, heap %llu bytes in %llu blocks\n",
            (unsigned long long)(ms.total_pages >> 8), (unsigned long long)(ms.free_pages >> 8),
            (unsigned long long)ms.heap_bytes, (unsigned long long)ms.heap_blocks);
    struct paging_stats ps;
    paging_get_stats(&ps);
    kprintf("page tables   %llu pages; %llu stack pages mapped\n", (unsigned long long)ps.table_pages,
            (unsigned long long)ps.stack_pages);

    if (acpi) {
        kprintf("acpi          RSDP revision %u, OEM '%s', %u tables:", acpi->rsdp_revision, acpi->oem_id,
                acpi->table_count);
        for (unsigned i = 0; i < acpi->table_count; i++)
            kprintf(" %s%s", acpi->tables[i].signature, acpi->tables[i].checksum_ok ? "" : "(bad checksum)");
        kprintf("\n");
        kprintf("acpi madt     %u CPUs, %u IOAPICs, %u overrides, LAPIC at %#llx\n", acpi->cpu_count,
                acpi->ioapic_count, acpi->override_count, (unsigned long long)acpi->lapic_phys);
        kprintf("acpi fadt     %s, PM1a control %#x, PM timer %#x, S5 %s (SLP_TYP %u)\n",
                acpi->hw_reduced ? "hardware-reduced" : "full", acpi->pm1a_cnt_port, acpi->pm_tmr_port,
                acpi->have_s5 ? "found" : "absent", acpi->s5_typa);
    } else {
        kprintf("acpi          none usable\n");
    }
    if (bi->fb.base)
        kprintf("framebuffer   %ux%u, pitch %u px, %s at %#llx\n", bi->fb.width, bi->fb.height, bi->fb.pitch,
                bi->fb.format == BOOT_FB_RGBX ? "RGBX" : "BGRX", (unsigned long long)bi->fb.base);
    else
        kprintf("framebuffer   none\n");
    kprintf("tsc           %llu Hz (%s)\n", (unsigned long long)tsc_hz, tsc_source);
    const struct boot_times *bt = kernel_boot_times();
    uint64_t cycles = bt->main - bi->tsc_at_efi_main;
    kprintf("boot time     efi_main to main: %llu TSC cycles, %llu us (ExitBootServices attempts: %u)\n",
            (unsigned long long)cycles, (unsigned long long)(tsc_to_ns(cycles) / 1000), bi->efi_exit_attempts);
    kprintf("loader steps  command line %llu us, firmware tables %llu us, kernel copy %llu us, page tables %llu us, "
            "ExitBootServices %llu us\n",
            (unsigned long long)(tsc_to_ns(bi->tsc_loader[0] - bi->tsc_at_efi_main) / 1000),
            (unsigned long long)(tsc_to_ns(bi->tsc_loader[1] - bi->tsc_loader[0]) / 1000),
            (unsigned long long)(tsc_to_ns(bi->tsc_loader[2] - bi->tsc_loader[1]) / 1000),
            (unsigned long long)(tsc_to_ns(bi->tsc_loader[3] - bi->tsc_loader[2]) / 1000),
            (unsigned long long)(tsc_to_ns(bi->tsc_at_kernel_entry - bi->tsc_loader[3]) / 1000));
    kprintf("boot phases   loader %llu us, kernel set-up %llu us, AP start-up %llu us, to main %llu us\n",
            (unsigned long long)(tsc_to_ns(bi->tsc_at_kernel_entry - bi->tsc_at_efi_main) / 1000),
            (unsigned long long)(tsc_to_ns(bt->smp_start - bi->tsc_at_kernel_entry) / 1000),
            (unsigned long long)(tsc_to_ns(bt->smp_done - bt->smp_start) / 1000),
            (unsigned long long)(tsc_to_ns(bt->main - bt->smp_done) / 1000));
}

/* ---- self-checks ---- */

struct per_cpu_probe {
    uint32_t want_cpu, ran_on;
    irql_t irql;
    struct event done;
};

static void thread_on_cpu(void *arg)
{
    struct per_cpu_probe *p = arg;
    p->ran_on = this_cpu()->id;
    p->irql = irql_current();
    thread_yield();
    if (this_cpu()->id != p->ran_on)
        p->ran_on = 0xffff; /* migrated: not allowed */
}

static void check_threads(void)
{
    struct per_cpu_probe probes[MAX_CPUS];
    struct thread *t[MAX_CPUS];
    for (uint32_t i = 0; i < cpu_count; i++) {
        probes[i].want_cpu = i;
        probes[i].ran_on = 0xfffe;
        status_t s = thread_create("probe", thread_on_cpu, &probes[i], (int)i, &t[i]);
        CHECK(s == STATUS_OK, "thread created on cpu%u (%s)", i, status_name(s));
        if (s != STATUS_OK)
            t[i] = NULL;
    }
    for (uint32_t i = 0; i < cpu_count; i++) {
        if (!t[i])
            continue;
        thread_join(t[i]);
        CHECK(probes[i].ran_on == i && probes[i].irql == IRQL_PASSIVE, "thread ran on cpu%u at PASSIVE (ran on %u, IRQL %u)",
              i, probes[i].ran_on, probes[i].irql);
    }
}

static void dpc_probe(struct dpc *d, void *ctx)
{
    (void)d;
    struct per_cpu_probe *p = ctx;
    p->ran_on = this_cpu()->id;
    p->irql = irql_current();
    event_set(&p->done);
}

static void check_dpcs(void)
{
    for (uint32_t i = 0; i < cpu_count; i++) {
        struct per_cpu_probe p = { .want_cpu = i, .ran_on = 0xfffe };
        event_init(&p.done, EVENT_NOTIFICATION, false);
        struct dpc d;
        dpc_init(&d, dpc_probe, &p);
        dpc_set_target(&d, (int32_t)i);
        bool q = dpc_queue(&d);
        status_t s = event_wait(&p.done, 1000000000ull);
        CHECK(q && s == STATUS_OK && p.ran_on == i && p.irql == IRQL_DISPATCH,
              "DPC targeted at cpu%u ran there at DISPATCH (ran on %u, IRQL %u, %s)", i, p.ran_on, p.irql,
              status_name(s));
        dpc_cancel(&d);
    }
}

static volatile int device_irq_hits;
static void device_irq(struct int_frame *f, void *ctx)
{
    (void)f;
    (void)ctx;
    device_irq_hits++;
}

static struct event irq_event;
static void waking_irq(struct int_frame *f, void *ctx)
{
    (void)f;
    (void)ctx;
    event_set(&irq_event); /* signalling is allowed at any IRQL */
}

struct waiter {
    status_t result;
    uint32_t cpu;
};

static void wait_for_irq_event(void *arg)
{
    struct waiter *w = arg;
    w->result = event_wait(&irq_event, 2000000000ull);
    w->cpu = this_cpu()->id;
}

/* A thread blocked on an event is woken by a device interrupt handler on its CPU. */
static void check_interrupt_wakes_thread(void)
{
    uint8_t vec;
    if (irq_alloc_vector(6, waking_irq, NULL, &vec) != STATUS_OK) {
        CHECK(false, "device vector for the wake-up check");
        return;
    }
    uint32_t target = cpu_count > 1 ? 1 : 0;
    event_init(&irq_event, EVENT_SYNCHRONIZATION, false);
    struct waiter w = { .result = STATUS_BUSY };
    struct thread *t;
    if (thread_create("irq-waiter", wait_for_irq_event, &w, (int)target, &t) != STATUS_OK) {
        CHECK(false, "waiter thread created");
        return;
    }
    thread_sleep_ns(5000000); /* let it block */
    lapic_send_ipi(cpus[target]->apic_id, vec);
    thread_join(t);
    CHECK(w.result == STATUS_OK && w.cpu == target,
          "an interrupt handler (vector %#x) on cpu%u woke a thread blocked on an event (%s)", vec, target,
          status_name(w.result));
}

static void check_irql(void)
{
    CHECK(irql_current() == IRQL_PASSIVE, "app_main runs at PASSIVE");
    /* A DPC queued at DISPATCH waits until IRQL drops, then runs at once. */
    struct per_cpu_probe p = { .ran_on = 0xfffe };
    event_init(&p.done, EVENT_NOTIFICATION, false);
    struct dpc d;
    dpc_init(&d, dpc_probe, &p);
    irql_t old = irql_raise(IRQL_DISPATCH);
    uint32_t me = this_cpu()->id;
    dpc_queue(&d);
    tsc_delay_us(2000);
    bool held = !event_is_set(&p.done);
    irql_lower(old);
    bool ran = event_is_set(&p.done);
    CHECK(held && ran && p.ran_on == me, "a DPC is held off at DISPATCH and runs as soon as IRQL drops");

    /* A device-level interrupt (class 5) is masked at level 5 and delivered on lowering. */
    uint8_t vec;
    status_t s = irq_alloc_vector(5, device_irq, NULL, &vec);
    if (s == STATUS_OK) {
        device_irq_hits = 0;
        old = irql_raise(5);
        lapic_send_self_ipi(vec);
        tsc_delay_us(2000);
        int during = device_irq_hits;
        irql_lower(old);
        int after = device_irq_hits;
        CHECK(during == 0 && after == 1, "a device interrupt (vector %#x) is masked at its level, taken after", vec);
        old = irql_raise(4);
        lapic_send_self_ipi(vec);
        int below = device_irq_hits;
        irql_lower(old);
        CHECK(below == 2, "a device interrupt is taken at once from a lower level");
    } else {
        CHECK(false, "device vector allocated (%s)", status_name(s));
    }

    /* The clock is masked at HIGH. */
    uint64_t before = this_cpu()->timer_interrupts;
    struct ktimer t;
    ktimer_init(&t);
    old = irql_raise(IRQL_HIGH);
    ktimer_set(&t, 1000000, 0, NULL);
    tsc_delay_us(5000);
    uint64_t during = this_cpu()->timer_interrupts - before;
    irql_lower(old);
    /* Taken once IRQL drops: at once on an idle host; a loaded host may deschedule this vCPU for a
     * while, so allow 200 ms (the check is about masking, not latency). */
    uint64_t after = 0;
    for (int i = 0; i < 200 && after == 0; i++) {
        tsc_delay_us(1000);
        after = this_cpu()->timer_interrupts - before;
    }
    CHECK(during == 0 && after > 0, "the clock interrupt is masked at HIGH, taken after (%llu during, %llu after)",
          (unsigned long long)during, (unsigned long long)after);
    ktimer_cancel(&t);
}

struct tick {
    uint64_t count, first_tsc, last_tsc;
    struct event done;
    uint64_t want;
};
static void tick_dpc(struct dpc *d, void *ctx)
{
    (void)d;
    struct tick *t = ctx;
    uint64_t now = rdtsc();
    if (!t->count)
        t->first_tsc = now;
    t->last_tsc = now;
    if (++t->count == t->want)
        event_set(&t->done);
}

static void check_timers(void)
{
    /* One-shot. */
    struct tick one = { .want = 1 };
    event_init(&one.done, EVENT_NOTIFICATION, false);
    struct dpc d;
    dpc_init(&d, tick_dpc, &one);
    struct ktimer t;
    ktimer_init(&t);
    uint64_t t0 = rdtsc();
    ktimer_set(&t, 20000000, 0, &d);
    status_t s = event_wait(&one.done, 2000000000ull);
    uint64_t us = tsc_to_ns(one.first_tsc - t0) / 1000;
    CHECK(s == STATUS_OK && us >= 20000, "one-shot timer of 20 ms fired after %llu us", (unsigned long long)us);

    /* Periodic: 10 periods of 5 ms. */
    struct tick per = { .want = 10 };
    event_init(&per.done, EVENT_NOTIFICATION, false);
    dpc_init(&d, tick_dpc, &per);
    t0 = rdtsc();
    ktimer_set(&t, 5000000, 5000000, &d);
    s = event_wait(&per.done, 3000000000ull);
    ktimer_cancel(&t);
    dpc_cancel(&d);
    us = tsc_to_ns(per.last_tsc - t0) / 1000;
    CHECK(s == STATUS_OK && per.count >= 10 && us >= 50000, "periodic 5 ms timer fired %llu times in %llu us",
          (unsigned long long)per.count, (unsigned long long)us);

    /* Sleep and wait timeouts. */
    t0 = rdtsc();
    thread_sleep_ns(15000000);
    us = tsc_to_ns(rdtsc() - t0) / 1000;
    CHECK(us >= 15000, "thread_sleep(15 ms) slept %llu us", (unsigned long long)us);
    struct event never;
    event_init(&never, EVENT_NOTIFICATION, false);
    t0 = rdtsc();
    s = event_wait(&never, 10000000);
    us = tsc_to_ns(rdtsc() - t0) / 1000;
    CHECK(s == STATUS_TIMEOUT && us >= 10000, "a 10 ms wait on an unset event timed out after %llu us",
          (unsigned long long)us);
    CHECK(event_wait(&never, 0) == STATUS_TIMEOUT, "a zero-timeout wait polls");
}

struct shared_count {
    struct mutex m;
    struct semaphore sem;
    volatile uint64_t value;
    uint64_t per_thread;
};

static void count_worker(void *arg)
{
    struct shared_count *sc = arg;
    for (uint64_t i = 0; i < sc->per_thread; i++) {
        mutex_lock(&sc->m);
        uint64_t v = sc->value;
        if ((i & 63) == 0)
            thread_yield(); /* hold the mutex across a switch now and then */
        sc->value = v + 1;
        mutex_unlock(&sc->m);
    }
    if (semaphore_release(&sc->sem, 1) != STATUS_OK)
        panic("semaphore over its limit");
}

static void check_sync(void)
{
    struct shared_count sc = { .per_thread = 2000 };
    mutex_init(&sc.m);
    semaphore_init(&sc.sem, 0, 16);
    unsigned n = cpu_count * 2;
    if (n > 8)
        n = 8;
    unsigned started = 0;
    for (unsigned i = 0; i < n; i++) {
        struct thread *t;
        char name[16];
        fmt_snprintf(name, sizeof name, "counter%u", i);
        if (thread_create(name, count_worker, &sc, (int)(i % cpu_count), &t) == STATUS_OK) {
            thread_detach(t);
            started++;
        }
    }
    /* The counters hand the mutex over thousands of times, each hand-off a wake-up on another CPU, so
     * a round's length is the host's wake-up latency times that: under TCG on an overloaded host
     * rounds took from 0.1 s to over 10 s while progressing all along. So a stall is 10 s without
     * progress (no increment, no release), not a slow round; the dump is taken at that moment. */
    unsigned finished = 0;
    uint64_t seen = sc.value, progress_tsc = rdtsc();
    while (finished < started) {
        if (semaphore_wait(&sc.sem, 1000000000ull) == STATUS_OK) {
            finished++;
            progress_tsc = rdtsc();
        } else if (sc.value != seen) {
            seen = sc.value;
            progress_tsc = rdtsc();
        } else if (tsc_to_ns(rdtsc() - progress_tsc) >= 10000000000ull) {
            break;
        }
    }
    if (finished != started) {
        kprintf("hello: no progress for 10 s: %u of %u counters did not finish (value %llu); mutex owner %s\n",
                started - finished, started, (unsigned long long)sc.value, sc.m.owner ? sc.m.owner->name : "(none)");
        sched_dump();
        smp_dump_cpus();
        /* Stalled or only slow? Give them another minute and say which. */
        uint64_t t0 = rdtsc();
        unsigned late = 0;
        for (unsigned i = finished; i < started; i++)
            late += semaphore_wait(&sc.sem, 60000000000ull) == STATUS_OK;
        kprintf("hello: %u of the %u late counters finished %llu ms later (value %llu)\n", late, started - finished,
                (unsigned long long)(tsc_to_ns(rdtsc() - t0) / 1000000), (unsigned long long)sc.value);
    }
    CHECK(started == n && finished == n && sc.value == n * sc.per_thread,
          "%u threads on %u CPUs counted to %llu under a mutex (want %llu)", n, cpu_count,
          (unsigned long long)sc.value, (unsigned long long)(n * sc.per_thread));
    CHECK(semaphore_release(&sc.sem, 17) == STATUS_NO_SPACE, "a semaphore refuses to pass its limit");
}

static void do_ud(void) { __asm__ volatile("ud2"); }
static void do_nothing(void) { __asm__ volatile("" ::: "memory"); }
static volatile uintptr_t low_address = 8; /* volatile: the compiler must not see the null access */
static void do_null_read(void) { (void)*(volatile uint64_t *)low_address; }
static void do_text_write(void) { *(volatile uint8_t *)(uintptr_t)do_ud = 0x90; }
static uint64_t guard_probe_addr;
static void do_guard_write(void) { *(volatile uint64_t *)guard_probe_addr = 1; }
static uint8_t data_ret[16] = { 0xc3 }; /* ret */
static void do_nx_call(void) { ((void (*)(void))(uintptr_t)data_ret)(); }

static void check_exceptions(void)
{
    CHECK(exception_probe(6, do_ud) == 1, "#UD raised by ud2 was caught and reported");
    CHECK(exception_probe(14, do_null_read) == 1, "reading address 8 faults: page 0 is unmapped");
    CHECK(exception_probe(14, do_text_write) == 1, "writing kernel text faults: text is read-only");
    CHECK(exception_probe(14, do_nx_call) == 1, "calling into data faults: data is no-execute");
    uint64_t top;
    if (stack_alloc(2, &top) == STATUS_OK) {
        guard_probe_addr = top - 2 * 4096 - 8;
        CHECK(exception_probe(14, do_guard_write) == 1, "writing under a stack hits its guard page");
        stack_free(top, 2);
    }
    CHECK(exception_probe(6, do_nothing) == 0, "a probe without the fault returns normally");
}

/* ---- deliberate faults ---- */

static int recurse(int n)
{
    volatile char pad[512];
    pad[0] = (char)n;
    if (n < 0) /* never: keeps the compiler from calling this infinite */
        return 0;
    return recurse(n + 1) + pad[0];
}

static void deliberate_fault(const char *what)
{
    kprintf("\nhello: triggering fault '%s' on purpose\n", what);
    if (strcmp(what, "ud") == 0)
        do_ud();
    else if (strcmp(what, "pf") == 0)
        do_null_read();
    else if (strcmp(what, "gp") == 0)
        (void)*(volatile uint64_t *)(low_address | 0x8000000000000000ull);
    else if (strcmp(what, "de") == 0) {
        uint64_t zero = 0, quotient;
        /* Inline asm: the compiler would turn 1 / x into a compare and never divide. */
        __asm__ volatile("divq %2" : "=a"(quotient) : "a"(1ull), "r"(zero), "d"(0ull));
        kprintf("%llu\n", (unsigned long long)quotient);
    } else if (strcmp(what, "stack") == 0)
        kprintf("%d\n", recurse(0));
    else if (strcmp(what, "nx") == 0)
        do_nx_call();
    else if (strcmp(what, "wp") == 0)
        do_text_write();
    else if (strcmp(what, "irql") == 0) {
        irql_raise(IRQL_DISPATCH);
        thread_sleep_ns(1000000); /* blocking at DISPATCH: the IRQL assertion must catch it */
    } else if (strcmp(what, "assert") == 0)
        assert(what[0] == 'x');
    else if (strcmp(what, "panic") == 0)
        panic("deliberate panic from the command line");
    else
        kprintf("hello: unknown fault '%s' (ud|pf|gp|de|stack|nx|wp|irql|assert|panic)\n", what);
    kprintf("hello: fault '%s' did not stop the machine\n", what);
}

int app_main(void)
{
    report_platform();
    /* hello needs no hypervisor: it reports what it found and goes on either way. */
    status_t hs = hv_init();
    kprintf("Hyper-V layer: %s\n", hs == STATUS_OK          ? hv_binding_name()
                                   : hs == STATUS_NOT_FOUND ? "none (neither Hyper-V nor hvsim): running without it"
                                                            : status_name(hs));
    /* VMBus is not linked into hello (apps/hello/app.mk): vmbusprobe lists and drives the devices. */
    const struct cmdline *cl = kernel_cmdline();
    if (cmdline_bool(cl, "selftest", true)) {
        kprintf("\n== self-checks ==\n");
        check_irql();
        check_threads();
        check_interrupt_wakes_thread();
        check_dpcs();
        check_timers();
        check_sync();
        check_exceptions();
        kprintf("\nhello: %u checks passed, %u failed\n", selfcheck_passed, selfcheck_failed);
    }
    uint64_t rounds = cmdline_u64(cl, "stress", 0, 0, 1000000);
    if (rounds) {
        kprintf("\n== scheduler stress: %llu rounds of the mutex/semaphore check ==\n", (unsigned long long)rounds);
        unsigned before = selfcheck_failed;
        uint64_t slowest = 0;
        for (uint64_t r = 0; r < rounds && selfcheck_failed == before; r++) {
            uint64_t r0 = rdtsc();
            check_sync();
            uint64_t took = rdtsc() - r0;
            if (took > slowest)
                slowest = took;
        }
        kprintf("hello: stress %s (slowest round %llu ms)\n", selfcheck_failed == before ? "passed" : "FAILED",
                (unsigned long long)(tsc_to_ns(slowest) / 1000000));
    }
    const char *fault = cmdline_str(cl, "fault", "none");
    if (strcmp(fault, "none") != 0) {
        deliberate_fault(fault);
        return 2;
    }
    return selfcheck_failed ? 1 : 0;
}
