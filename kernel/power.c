#include "kernel/power.h"

#include "arch-x86_64/cpu.h"
#include "arch-x86_64/hypervisor.h"
#include "arch-x86_64/smp.h"
#include "kernel/acpi.h"
#include "kernel/log.h"
#include "kernel/string.h"

#define QEMU_DEBUG_EXIT_PORT 0xf4
#define SLP_EN_PM1 (1u << 13)   /* PM1 control: SLP_TYPx bits 12:10, SLP_EN bit 13 (ACPI 6.5 4.8.3.2.1) */
#define SLP_EN_HWR (1u << 5)    /* sleep control register: SLP_TYPx bits 4:2, SLP_EN bit 5 (ACPI 6.5 4.8.3.7) */

static struct {
    uint32_t pm1a, pm1b;
    uint64_t sleep_control;
    uint8_t sleep_control_space;
    uint8_t typa, typb;
    int qemu;
    bool acpi_only;
} pw;
static void (*hooks[8])(void);
static unsigned hook_count;

int power_is_qemu(void)
{
    return pw.qemu;
}

static void detect_qemu(void)
{
    char vendor[13];
    uint32_t max;
    if (cpu_hypervisor_vendor(vendor, &max))
        pw.qemu = strcmp(vendor, "TCGTCGTCGTCG") == 0 || strcmp(vendor, "KVMKVMKVM") == 0;
}

void power_init(const struct acpi_info *acpi)
{
    detect_qemu();
    if (acpi && (strcmp(acpi->oem_id, "BOCHS ") == 0 || strcmp(acpi->oem_id, "BXPC  ") == 0))
        pw.qemu = 1;
    if (acpi && acpi->have_fadt) {
        pw.pm1a = acpi->pm1a_cnt_port;
        pw.pm1b = acpi->pm1b_cnt_port;
        pw.sleep_control = acpi->sleep_control.address;
        pw.sleep_control_space = acpi->sleep_control.space;
        pw.typa = acpi->have_s5 ? acpi->s5_typa : 0;
        pw.typb = acpi->have_s5 ? acpi->s5_typb : 0;
    }
}

void power_set_acpi_only(bool acpi_only)
{
    pw.acpi_only = acpi_only;
}

void power_register_shutdown_hook(void (*fn)(void))
{
    if (hook_count < sizeof hooks / sizeof hooks[0])
        hooks[hook_count++] = fn;
}

void power_off(int status)
{
    pr_info("power: off with status %d", status);
    for (unsigned i = hook_count; i-- > 0;)
        hooks[i]();
    smp_stop_others();
    cli();
    if (!pw.qemu)
        detect_qemu(); /* a panic before power_init still ends a QEMU run */
    if (pw.qemu && !pw.acpi_only)
        outb(QEMU_DEBUG_EXIT_PORT, (uint8_t)status); /* QEMU exits with (status << 1) | 1 */
    if (pw.sleep_control) {
        uint8_t v = (uint8_t)(((pw.typa & 7) << 2) | SLP_EN_HWR);
        if (pw.sleep_control_space == 1 && pw.sleep_control <= 0xffff)
            outb((uint16_t)pw.sleep_control, v);
        else if (pw.sleep_control_space == 0)
            *(volatile uint8_t *)pw.sleep_control = v;
    }
    if (pw.pm1a) {
        outw((uint16_t)pw.pm1a, (uint16_t)((pw.typa & 7) << 10 | SLP_EN_PM1));
        if (pw.pm1b)
            outw((uint16_t)pw.pm1b, (uint16_t)((pw.typb & 7) << 10 | SLP_EN_PM1));
    }
    for (volatile int i = 0; i < 10000000; i++)
        ;
    log_write("power: ACPI power-off did not take effect; halting\n", 51);
    for (;;)
        hlt();
}
