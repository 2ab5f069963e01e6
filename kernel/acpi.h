/*
 * acpi: parse the firmware's ACPI tables (on Hyper-V they come from the host: untrusted).
 *
 * From the RSDP: the XSDT (or RSDT), every table's signature, length and checksum, the MADT (CPUs,
 * local APIC address, IOAPICs, interrupt source overrides), the FADT (PM1 control ports, PM timer,
 * hardware-reduced sleep registers, the DSDT) and the DSDT's \_S5 sleep type for power-off, and the
 * HPET's address. Every length and offset is checked against the table and against what `map`
 * accepts; a bad table is reported through `report` and skipped, the rest goes on.
 *
 * Portable: the kernel maps physical memory 1:1; tests hand in byte buffers. Called once at boot.
 */
#ifndef KERNEL_ACPI_H
#define KERNEL_ACPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernel/status.h"

#define ACPI_MAX_TABLES 48
#define ACPI_MAX_CPUS 256
#define ACPI_MAX_IOAPICS 8
#define ACPI_MAX_OVERRIDES 16

/* Returns a pointer to len readable bytes at physical address phys, or NULL if that range is not
 * readable memory. */
typedef const void *(*acpi_map_fn)(void *ctx, uint64_t phys, size_t len);
typedef void (*acpi_report_fn)(void *ctx, const char *message);

/* Generic Address Structure, reduced to what we use. */
struct acpi_gas_info {
    uint8_t space; /* 0 memory, 1 I/O port */
    uint8_t bit_width;
    uint64_t address;
};

struct acpi_table_info {
    char signature[5];
    uint8_t revision;
    bool checksum_ok;
    uint32_t length;
    uint64_t phys;
};

struct acpi_cpu {
    uint32_t apic_id;
    uint32_t uid;
    bool enabled;        /* usable now */
    bool online_capable; /* may be enabled later (not started) */
    bool x2apic_entry;
};

struct acpi_ioapic {
    uint32_t id;
    uint64_t phys;
    uint32_t gsi_base;
};

struct acpi_override {
    uint8_t bus_irq;
    uint32_t gsi;
    uint16_t flags; /* MPS INTI flags: polarity bits 1:0, trigger 3:2 */
};

struct acpi_info {
    uint8_t rsdp_revision;
    char oem_id[7];
    unsigned table_count;
    struct acpi_table_info tables[ACPI_MAX_TABLES];

    bool have_madt;
    uint64_t lapic_phys;
    bool pcat_compat; /* dual 8259s present (must be masked) */
    unsigned cpu_count;
    struct acpi_cpu cpus[ACPI_MAX_CPUS];
    unsigned cpus_dropped; /* entries past ACPI_MAX_CPUS */
    unsigned ioapic_count;
    struct acpi_ioapic ioapics[ACPI_MAX_IOAPICS];
    unsigned override_count;
    struct acpi_override overrides[ACPI_MAX_OVERRIDES];

    bool have_fadt;
    bool hw_reduced;
    uint32_t pm1a_cnt_port, pm1b_cnt_port; /* 0 = absent */
    uint32_t pm_tmr_port;                  /* 0 = absent */
    bool pm_tmr_32bit;
    struct acpi_gas_info sleep_control, sleep_status; /* hardware-reduced ACPI, address 0 = absent */
    uint16_t sci_irq;
    uint32_t smi_cmd_port;
    uint8_t acpi_enable_value;
    uint64_t dsdt_phys;

    bool have_s5;
    uint8_t s5_typa, s5_typb;

    uint64_t hpet_phys; /* 0 = absent */
};

/* STATUS_NOT_FOUND without an RSDP; STATUS_BAD_DATA when the RSDP or root table is unusable.
 * Otherwise STATUS_OK, with whatever could be parsed (check the have_* flags). */
status_t acpi_parse(struct acpi_info *out, uint64_t rsdp_phys, acpi_map_fn map, void *map_ctx,
                    acpi_report_fn report, void *report_ctx);

/* The table with this signature, or NULL. */
const struct acpi_table_info *acpi_find(const struct acpi_info *info, const char *sig);

/* Finds \_S5's SLP_TYPa/b in an AML byte stream (DSDT or SSDT body). */
bool acpi_find_s5(const uint8_t *aml, size_t len, uint8_t *typa, uint8_t *typb);

#endif
