/*
 * app: the interface between the kernel and the one application linked into an image.
 *
 * The kernel boots, then calls app_main() in the "main" thread on the boot CPU, at PASSIVE, with
 * every CPU started, the scheduler, DPCs and timers running. app_main's return value is the exit
 * status the machine powers off with (0 = success; under QEMU the process exits with status*2+1).
 * app_cmdline_keys lists the command-line keys the application reads (NULL-terminated), so the
 * kernel can name the unknown ones.
 */
#ifndef KERNEL_APP_H
#define KERNEL_APP_H

#include "kernel/cmdline.h"

struct boot_info;

extern const char *const app_name;
extern const char *const app_cmdline_keys[];
int app_main(void);

/* What the kernel found, for applications to report and use. */
struct acpi_info;
const struct boot_info *kernel_boot_info(void);
const struct acpi_info *kernel_acpi(void);
const struct cmdline *kernel_cmdline(void);
/* Boot phases, as rdtsc values: efi_main (boot_info), kernel entry (boot_info), then these. */
struct boot_times {
    uint64_t smp_start, smp_done, main; /* main: just before app_main */
};
const struct boot_times *kernel_boot_times(void);

#endif
