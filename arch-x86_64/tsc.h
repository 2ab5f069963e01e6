/*
 * tsc: the time-stamp counter as the kernel's clock. Its frequency comes, in order of preference,
 * from the Hyper-V TSC frequency MSR, CPUID leaf 0x15/0x16, or a measurement against the ACPI PM
 * timer (or, lacking that, the HPET). The source is recorded for the boot report. Requires an
 * invariant TSC to be meaningful across idle; that is reported too. Callable at any IRQL.
 */
#ifndef ARCH_TSC_H
#define ARCH_TSC_H

#include <stdbool.h>
#include <stdint.h>

struct acpi_info;

extern uint64_t tsc_hz;         /* 0 until calibrated */
extern uint64_t tsc_boot;       /* rdtsc at efi_main */
extern const char *tsc_source;

void tsc_set_boot(uint64_t tsc_at_efi_main);
/* Finds the frequency; STATUS is logged. Needs ACPI parsed for the measurement path. */
void tsc_calibrate(const struct acpi_info *acpi);

uint64_t tsc_ns_since_boot(void);
uint64_t tsc_to_ns(uint64_t ticks);
uint64_t ns_to_tsc(uint64_t ns);
void tsc_delay_us(uint64_t us);
/* A busy wait measured with the ACPI PM timer (3.579545 MHz), for calibrating other clocks. */
bool pmtimer_available(void);

#endif
