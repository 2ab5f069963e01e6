/*
 * kmain: the boot CPU's path from the loader's jump to the application.
 *
 * Phase 1 (boot stack, interrupts off, the loader's page tables): per-CPU pointer, an early
 * GDT/IDT so any fault is reported, consoles, the command line, the page allocator, our own page
 * tables, the heap, the framebuffer console, ACPI, the TSC, the local APIC and IOAPICs.
 * Phase 2 (a guarded stack): final GDT/TSS with guarded IST stacks, the scheduler (this context
 * becomes the "main" thread), interrupts on, the other CPUs, then app_main() and power-off.
 */
#include "arch-x86_64/cpu.h"
#include "arch-x86_64/gdt.h"
#include "arch-x86_64/interrupts.h"
#include "arch-x86_64/ioapic.h"
#include "arch-x86_64/lapic.h"
#include "arch-x86_64/paging.h"
#include "arch-x86_64/serial.h"
#include "arch-x86_64/smp.h"
#include "arch-x86_64/tsc.h"
#include "boot/boot_info.h"
#include "kernel/acpi.h"
#include "kernel/app.h"
#include "kernel/cmdline.h"
#include "kernel/fbcon.h"
#include "kernel/log.h"
#include "kernel/mm.h"
#include "kernel/panic.h"
#include "kernel/percpu.h"
#include "kernel/power.h"
#include "kernel/string.h"
#include "kernel/thread.h"
#include "kernel/timer.h"

void kmain(struct boot_info *bi);
void call_on_stack(void *arg, void (*fn)(void *), uint64_t stack_top) __attribute__((noreturn));

#define MAIN_STACK_PAGES 8

static struct cpu boot_cpu;
static struct tss early_tss;
static uint64_t early_gdt[8];
static unsigned char early_ist[3][8192] __attribute__((aligned(16)));
static struct boot_info *boot_info;
static struct acpi_info acpi;
static bool acpi_ok;
static struct cmdline cmdline;
static struct boot_times times;

static const char *const kernel_cmdline_keys[] = { "loglevel", "console", "panic", "maxcpus", "poweroff", NULL };

const struct boot_info *kernel_boot_info(void) { return boot_info; }
const struct acpi_info *kernel_acpi(void) { return acpi_ok ? &acpi : NULL; }
const struct cmdline *kernel_cmdline(void) { return &cmdline; }
const struct boot_times *kernel_boot_times(void) { return &times; }

static void report_warn(void *ctx, const char *msg)
{
    (void)ctx;
    pr_warn("%s", msg);
}

static const void *acpi_map(void *ctx, uint64_t phys, size_t len)
{
    (void)ctx;
    /* Everything below 4 GiB and all RAM is identity-mapped; reject what would wrap or is absent. */
    if (phys + len < phys || !paging_is_mapped(phys) || !paging_is_mapped(phys + len - 1))
        return NULL;
    return (const void *)phys;
}

static void kmain2(void *arg) __attribute__((noreturn));

void kmain(struct boot_info *bi)
{
    boot_cpu.id = 0;
    boot_cpu.probe_vector = 0xff;
    percpu_install(&boot_cpu);
    percpu_gs_ready = true;
    cpus[0] = &boot_cpu;
    /* PASSIVE, with interrupts off (IF clear) until the scheduler is up: locks work as usual. */
    write_cr8(IRQL_PASSIVE);
    boot_info = bi;
    tsc_set_boot(bi->tsc_at_efi_main);
    log_init_early();

    for (int i = 0; i < 3; i++)
        boot_cpu.ist_top[i] = (uint64_t)early_ist[i] + sizeof early_ist[i];
    gdt_load(&boot_cpu, &early_tss, early_gdt);
    idt_init();
    idt_load();

    if (serial_init(COM1_PORT))
        log_enable_serial();
    if (bi->magic != BOOT_INFO_MAGIC)
        panic("boot_info has the wrong magic %#llx: loader and kernel do not match", (unsigned long long)bi->magic);

    cmdline_parse(&cmdline, bi->cmdline, report_warn, NULL);
    static const char *const levels[] = { "error", "warn", "info", "debug", NULL };
    log_set_level((enum log_level)cmdline_choice(&cmdline, "loglevel", levels, LOG_INFO));
    kprintf("\nhvrt: a unikernel runtime for Hyper-V; application '%s'\n", app_name);
    pr_info("boot: firmware '%s' rev %#x; command line (%s): '%s'", bi->firmware_vendor, bi->firmware_revision,
            bi->cmdline_source, bi->cmdline);

    status_t s = mm_init(bi);
    if (s != STATUS_OK)
        panic("mm: no usable memory in the UEFI map (%s)", status_name(s));
    if ((s = paging_init(bi)) != STATUS_OK)
        panic("paging: cannot build the kernel page tables (%s)", status_name(s));
    heap_setup();

    static const char *const consoles[] = { "both", "serial", "fb", NULL };
    int console = cmdline_choice(&cmdline, "console", consoles, 0);
    if (console != 1 && fbcon_init(&bi->fb))
        log_enable_fb();

    s = acpi_parse(&acpi, bi->acpi_rsdp, acpi_map, NULL, report_warn, NULL);
    acpi_ok = s == STATUS_OK;
    if (!acpi_ok)
        pr_err("acpi: unusable (%s): one CPU, no ACPI power-off", status_name(s));
    tsc_calibrate(acpi_ok ? &acpi : NULL);
    power_init(acpi_ok ? &acpi : NULL);
    static const char *const poweroff_modes[] = { "auto", "acpi", NULL };
    power_set_acpi_only(cmdline_choice(&cmdline, "poweroff", poweroff_modes, 0) == 1);
    static const char *const panic_modes[] = { "poweroff", "halt", NULL };
    panic_set_halt(cmdline_choice(&cmdline, "panic", panic_modes, power_is_qemu() ? 0 : 1) == 1);

    lapic_init(acpi_ok && acpi.have_madt ? acpi.lapic_phys : 0);
    boot_cpu.apic_id = lapic_id();
    ioapic_init(acpi_ok ? &acpi : NULL);

    uint64_t top;
    if (stack_alloc(MAIN_STACK_PAGES, &top) != STATUS_OK)
        panic("no memory for the main stack");
    call_on_stack(bi, kmain2, top);
}

static void kmain2(void *arg)
{
    struct boot_info *bi = arg;
    /* Final GDT/TSS: IST stacks with guard pages. */
    for (int i = 0; i < 3; i++)
        boot_cpu.ist_top[i] = 0;
    arch_cpu_setup(&boot_cpu);
    sched_register_interrupts();
    timer_register_interrupt();
    sched_cpu_init(&boot_cpu, true);
    boot_cpu.online = true;
    cpu_count = 1;
    irql_lower(IRQL_PASSIVE);
    sti();

    uint32_t maxcpus = (uint32_t)cmdline_u64(&cmdline, "maxcpus", MAX_CPUS, 1, MAX_CPUS);
    times.smp_start = rdtsc();
    smp_start_aps(bi, acpi_ok ? &acpi : NULL, maxcpus);
    times.smp_done = rdtsc();
    if (acpi_ok && acpi.have_madt) {
        unsigned usable = 0;
        for (unsigned i = 0; i < acpi.cpu_count; i++)
            usable += acpi.cpus[i].enabled;
        pr_info("smp: %u of %u CPUs online", cpu_count, usable);
    }

    static const char *const *const known[] = { kernel_cmdline_keys, app_cmdline_keys, NULL };
    cmdline_check_known(&cmdline, known);

    struct mm_stats ms;
    mm_get_stats(&ms);
    pr_info("mm: %llu MiB free of %llu MiB managed", (unsigned long long)(ms.free_pages >> 8),
            (unsigned long long)(ms.total_pages >> 8));
    times.main = rdtsc();
    pr_info("boot: efi_main to app_main in %llu us (%llu TSC cycles)",
            (unsigned long long)(tsc_to_ns(times.main - bi->tsc_at_efi_main) / 1000),
            (unsigned long long)(times.main - bi->tsc_at_efi_main));
    int status = app_main();
    pr_info("%s: returned %d", app_name, status);
    power_off(status);
}
