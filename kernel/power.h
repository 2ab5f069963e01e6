/*
 * power: ending the machine. power_off() runs the registered shutdown hooks (the Hyper-V layer
 * unloads VMBus and disables SynIC and the hypercall page there), then tries, in order: QEMU's
 * isa-debug-exit port (only when running under QEMU; the exit code becomes (status << 1) | 1), ACPI
 * S5 through the FADT (PM1 control or the hardware-reduced sleep control register), and finally halts.
 */
#ifndef KERNEL_POWER_H
#define KERNEL_POWER_H

#include <stdbool.h>
#include <stdint.h>

struct acpi_info;

#define POWER_STATUS_OK 0
#define POWER_STATUS_FAIL 1
#define POWER_STATUS_PANIC 0x7f

void power_init(const struct acpi_info *acpi);
/* poweroff=acpi on the command line: skip QEMU's debug-exit port (to test the ACPI path). */
void power_set_acpi_only(bool acpi_only);
/* Hooks run at PASSIVE... or wherever power_off is called from; they must not block. Up to 8. */
void power_register_shutdown_hook(void (*fn)(void));
void power_off(int status) __attribute__((noreturn));
/* QEMU detected (CPUID hypervisor vendor "TCGTCGTCGTCG"/"KVMKVMKVM" or ACPI OEM "BOCHS "). */
int power_is_qemu(void);

#endif
