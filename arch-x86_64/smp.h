/*
 * smp: starting the application processors listed in the MADT (INIT-SIPI-SIPI through a real-mode
 * trampoline below 1 MiB), one at a time, each with its own struct cpu, GDT/TSS/IST stacks, kernel
 * stack and idle thread. A CPU that does not answer within 200 ms is reported and left out; the
 * rest go on. Runs at PASSIVE on the boot CPU after the scheduler is up.
 */
#ifndef ARCH_SMP_H
#define ARCH_SMP_H

#include <stdbool.h>
#include <stdint.h>

struct boot_info;
struct acpi_info;
struct cpu;

void smp_start_aps(const struct boot_info *bi, const struct acpi_info *acpi, uint32_t max_cpus);
/* NMIs every other online CPU; they halt. For panic and power-off. */
extern volatile bool smp_stopping;
void smp_stop_others(void);
/* Every other online CPU reports, from an NMI, where it is (registers and backtrace): for hangs. */
void smp_dump_cpus(void);
/* Per-CPU architecture set-up shared by the boot CPU and the APs: GDT/TSS with IST stacks, IDT,
 * paging features, local APIC. */
void arch_cpu_setup(struct cpu *c);

#endif
