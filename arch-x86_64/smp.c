#include "arch-x86_64/smp.h"

#include "arch-x86_64/cpu.h"
#include "arch-x86_64/gdt.h"
#include "arch-x86_64/interrupts.h"
#include "arch-x86_64/lapic.h"
#include "arch-x86_64/paging.h"
#include "arch-x86_64/tsc.h"
#include "boot/boot_info.h"
#include "kernel/acpi.h"
#include "kernel/log.h"
#include "kernel/mm.h"
#include "kernel/panic.h"
#include "kernel/percpu.h"
#include "kernel/string.h"
#include "kernel/thread.h"

extern const unsigned char ap_trampoline[], ap_trampoline_end[];

/* The data block at the end of trampoline.asm. */
struct smp_trampoline_data {
    uint64_t cr3, stack, cpu, entry, alive;
};
_Static_assert(sizeof(struct smp_trampoline_data) == 40, "trampoline data block");

#define IST_PAGES 2
#define AP_STACK_PAGES 4

struct cpu *cpus[MAX_CPUS];
uint32_t cpu_count;
bool percpu_gs_ready;

void percpu_install(struct cpu *c)
{
    c->self = c;
    wrmsr(MSR_GS_BASE, (uint64_t)c);
    wrmsr(MSR_KERNEL_GS_BASE, (uint64_t)c);
}

void arch_cpu_setup(struct cpu *c)
{
    for (int i = 0; i < 3; i++)
        if (!c->ist_top[i] && stack_alloc(IST_PAGES, &c->ist_top[i]) != STATUS_OK)
            panic("cpu %u: no memory for IST stacks", c->id);
    struct tss *tss = kzalloc(sizeof *tss);
    uint64_t *gdt = kzalloc(8 * sizeof(uint64_t));
    if (!tss || !gdt)
        panic("cpu %u: no memory for GDT/TSS", c->id);
    gdt_load(c, tss, gdt);
    idt_load();
    paging_cpu_init();
    lapic_cpu_init();
}

static void ap_main(struct cpu *c) __attribute__((noreturn));
static void ap_main(struct cpu *c)
{
    percpu_install(c);
    write_cr8(IRQL_PASSIVE); /* interrupts stay off (IF clear) until the idle loop */
    arch_cpu_setup(c);
    c->apic_id = lapic_id();
    sched_cpu_init(c, false);
    __atomic_store_n(&c->online, true, __ATOMIC_RELEASE);
    sched_idle_loop(); /* the start-up context becomes this CPU's idle thread */
}

void smp_start_aps(const struct boot_info *bi, const struct acpi_info *acpi, uint32_t max_cpus)
{
    if (!acpi || !acpi->have_madt || acpi->cpu_count <= 1)
        return;
    if (!bi->smp_trampoline) {
        pr_warn("smp: the loader reserved no page below 1 MiB; only the boot CPU runs");
        return;
    }
    size_t tsize = (size_t)(ap_trampoline_end - ap_trampoline);
    if (tsize > bi->smp_trampoline_pages * PAGE_SIZE || tsize < sizeof(struct smp_trampoline_data)) {
        pr_err("smp: trampoline of %zu bytes does not fit; only the boot CPU runs", tsize);
        return;
    }
    unsigned char *page = (unsigned char *)bi->smp_trampoline;
    memcpy(page, ap_trampoline, tsize);
    volatile struct smp_trampoline_data *data = (void *)(page + tsize - sizeof(struct smp_trampoline_data));
    uint32_t bsp = lapic_id();

    for (unsigned i = 0; i < acpi->cpu_count; i++) {
        const struct acpi_cpu *ac = &acpi->cpus[i];
        if (ac->apic_id == bsp)
            continue;
        if (!ac->enabled) {
            pr_info("smp: APIC id %u is online-capable but not enabled; left off", ac->apic_id);
            continue;
        }
        if (cpu_count >= max_cpus || cpu_count >= MAX_CPUS) {
            pr_info("smp: APIC id %u left off (limit of %u CPUs)", ac->apic_id, max_cpus);
            continue;
        }
        if (!lapic_x2apic && ac->apic_id > 254) {
            pr_warn("smp: APIC id %u needs x2APIC, which this CPU lacks; left off", ac->apic_id);
            continue;
        }
        struct cpu *c = kzalloc(sizeof *c);
        uint64_t stack;
        if (!c || stack_alloc(AP_STACK_PAGES, &stack) != STATUS_OK) {
            pr_err("smp: no memory for CPU with APIC id %u", ac->apic_id);
            kfree(c);
            continue;
        }
        c->id = cpu_count;
        c->apic_id = ac->apic_id;
        c->probe_vector = 0xff;
        data->cr3 = paging_kernel_cr3();
        data->stack = stack;
        data->cpu = (uint64_t)c;
        data->entry = (uint64_t)ap_main;
        cpus[c->id] = c;
        __atomic_thread_fence(__ATOMIC_SEQ_CST);

        uint64_t t0 = rdtsc();
        lapic_send_init(ac->apic_id);
        tsc_delay_us(10000);
        lapic_send_sipi(ac->apic_id, (uint8_t)(bi->smp_trampoline >> 12));
        tsc_delay_us(200);
        if (!__atomic_load_n(&c->online, __ATOMIC_ACQUIRE))
            lapic_send_sipi(ac->apic_id, (uint8_t)(bi->smp_trampoline >> 12));
        uint64_t deadline = rdtsc() + ns_to_tsc(200000000);
        while (!__atomic_load_n(&c->online, __ATOMIC_ACQUIRE) && (int64_t)(rdtsc() - deadline) < 0)
            cpu_relax();
        if (!__atomic_load_n(&c->online, __ATOMIC_ACQUIRE)) {
            pr_err("smp: CPU with APIC id %u did not start within 200 ms; continuing without it", ac->apic_id);
            cpus[c->id] = NULL;
            /* Its stack and struct stay allocated: the CPU might still wake up and use them. */
            continue;
        }
        cpu_count++;
        pr_info("smp: cpu%u (APIC id %u) online after %llu us", c->id, c->apic_id,
                (unsigned long long)(tsc_to_ns(rdtsc() - t0) / 1000));
    }
}

volatile bool smp_stopping;

void smp_dump_cpus(void)
{
    struct cpu *me = this_cpu();
    for (uint32_t i = 0; i < MAX_CPUS; i++) {
        struct cpu *c = cpus[i];
        if (!c || c == me || !c->online)
            continue;
        __atomic_store_n(&c->nmi_dump_request, true, __ATOMIC_RELEASE);
        lapic_send_nmi(c->apic_id);
        uint64_t deadline = rdtsc() + ns_to_tsc(200000000);
        while (__atomic_load_n(&c->nmi_dump_request, __ATOMIC_ACQUIRE) && (int64_t)(rdtsc() - deadline) < 0)
            cpu_relax();
        if (c->nmi_dump_request)
            pr_err("smp: cpu%u did not answer the dump NMI in 200 ms", c->id);
    }
}

void smp_stop_others(void)
{
    smp_stopping = true;
    if (!percpu_ready())
        return;
    struct cpu *me = this_cpu();
    for (uint32_t i = 0; i < MAX_CPUS; i++)
        if (cpus[i] && cpus[i] != me && cpus[i]->online)
            lapic_send_nmi(cpus[i]->apic_id);
}
