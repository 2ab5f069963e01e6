/*
 * ioapic: the I/O APICs from the MADT (Gen2 Hyper-V has one; QEMU q35 one). At boot every input is
 * masked and the legacy 8259s are silenced; ioapic_route() connects one GSI to a vector on a CPU.
 * Callable at <= DISPATCH.
 */
#ifndef ARCH_IOAPIC_H
#define ARCH_IOAPIC_H

#include <stdint.h>

#include "kernel/status.h"

struct acpi_info;

void ioapic_init(const struct acpi_info *acpi);
/* ISA IRQ to GSI, through the MADT's interrupt source overrides; flags get the MPS INTI flags. */
uint32_t ioapic_isa_to_gsi(uint8_t irq, uint16_t *flags);
status_t ioapic_route(uint32_t gsi, uint8_t vector, uint32_t apic_id, uint16_t mps_flags) WARN_UNUSED;
status_t ioapic_mask(uint32_t gsi) WARN_UNUSED;
unsigned ioapic_count(void);

#endif
