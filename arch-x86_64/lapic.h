/*
 * lapic: the local APIC, in x2APIC mode (MSRs) when the CPU offers it, else xAPIC (MMIO). Per-CPU
 * set-up, EOI, IPIs (fixed, NMI, INIT/SIPI, self), and the timer in one-shot mode, programmed in TSC
 * ticks. The timer's frequency comes from the Hyper-V APIC frequency MSR or is measured against the
 * TSC. All functions are callable at any IRQL on the CPU they concern.
 */
#ifndef ARCH_LAPIC_H
#define ARCH_LAPIC_H

#include <stdbool.h>
#include <stdint.h>

extern bool lapic_x2apic;
extern uint64_t lapic_timer_hz;

void lapic_init(uint64_t phys);   /* once, on the boot CPU: choose the mode, calibrate the timer */
void lapic_cpu_init(void);        /* every CPU: enable, spurious vector, mask the LVTs */
uint32_t lapic_id(void);
void lapic_eoi(void);
void lapic_send_ipi(uint32_t apic_id, uint8_t vector);
void lapic_send_self_ipi(uint8_t vector);
void lapic_send_nmi(uint32_t apic_id);
void lapic_send_init(uint32_t apic_id);
void lapic_send_sipi(uint32_t apic_id, uint8_t page);
/* One-shot timer interrupt at VECTOR_TIMER after `tsc_ticks` (clamped to the counter's range). */
void lapic_timer_oneshot(uint64_t tsc_ticks);
void lapic_timer_stop(void);

#endif
