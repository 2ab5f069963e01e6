/* IOAPIC: Intel 82093AA datasheet (IOREGSEL @0, IOWIN @0x10; register 1 = version with max
 * redirection entry in bits 23:16; redirection entries at 0x10 + 2n). */
#include "arch-x86_64/ioapic.h"

#include "arch-x86_64/cpu.h"
#include "arch-x86_64/paging.h"
#include "arch-x86_64/spinlock.h"
#include "kernel/acpi.h"
#include "kernel/log.h"

struct ioapic {
    volatile uint32_t *base;
    uint32_t gsi_base, count;
};

static struct ioapic ioapics[ACPI_MAX_IOAPICS];
static unsigned n_ioapics;
static struct acpi_override overrides[ACPI_MAX_OVERRIDES];
static unsigned n_overrides;
static spinlock_t lock = SPINLOCK_INIT;

static uint32_t rd(struct ioapic *io, uint32_t reg)
{
    io->base[0] = reg;
    return io->base[4];
}

static void wr(struct ioapic *io, uint32_t reg, uint32_t v)
{
    io->base[0] = reg;
    io->base[4] = v;
}

unsigned ioapic_count(void)
{
    return n_ioapics;
}

void ioapic_init(const struct acpi_info *acpi)
{
    if (!acpi || acpi->pcat_compat || !acpi->have_madt) {
        /* Remap and mask both 8259s so a stray legacy interrupt cannot land on an exception vector. */
        outb(0x20, 0x11); outb(0xa0, 0x11);
        outb(0x21, 0x20); outb(0xa1, 0x28);
        outb(0x21, 0x04); outb(0xa1, 0x02);
        outb(0x21, 0x01); outb(0xa1, 0x01);
        outb(0x21, 0xff); outb(0xa1, 0xff);
    }
    if (!acpi)
        return;
    for (unsigned i = 0; i < acpi->override_count; i++)
        overrides[n_overrides++] = acpi->overrides[i];
    for (unsigned i = 0; i < acpi->ioapic_count; i++) {
        uint64_t phys = acpi->ioapics[i].phys;
        if (paging_map_mmio(phys, 0x20) != STATUS_OK) {
            pr_warn("ioapic: cannot map IOAPIC %u at %#llx; skipped", acpi->ioapics[i].id, (unsigned long long)phys);
            continue;
        }
        struct ioapic *io = &ioapics[n_ioapics];
        io->base = (volatile uint32_t *)phys;
        io->gsi_base = acpi->ioapics[i].gsi_base;
        uint32_t ver = rd(io, 1);
        io->count = ((ver >> 16) & 0xff) + 1;
        if (ver == 0xffffffffu) {
            pr_warn("ioapic: IOAPIC %u at %#llx does not answer; skipped", acpi->ioapics[i].id,
                    (unsigned long long)phys);
            continue;
        }
        for (uint32_t n = 0; n < io->count; n++) {
            wr(io, 0x10 + 2 * n, 1u << 16); /* masked */
            wr(io, 0x11 + 2 * n, 0);
        }
        n_ioapics++;
        pr_info("ioapic: id %u at %#llx, GSIs %u..%u, all masked", acpi->ioapics[i].id, (unsigned long long)phys,
                io->gsi_base, io->gsi_base + io->count - 1);
    }
}

uint32_t ioapic_isa_to_gsi(uint8_t irq, uint16_t *flags)
{
    for (unsigned i = 0; i < n_overrides; i++)
        if (overrides[i].bus_irq == irq) {
            *flags = overrides[i].flags;
            return overrides[i].gsi;
        }
    *flags = 0; /* ISA defaults: edge, active high */
    return irq;
}

static struct ioapic *find(uint32_t gsi)
{
    for (unsigned i = 0; i < n_ioapics; i++)
        if (gsi >= ioapics[i].gsi_base && gsi < ioapics[i].gsi_base + ioapics[i].count)
            return &ioapics[i];
    return NULL;
}

status_t ioapic_route(uint32_t gsi, uint8_t vector, uint32_t apic_id, uint16_t mps_flags)
{
    struct ioapic *io = find(gsi);
    if (!io || vector < 32)
        return STATUS_INVALID_PARAMETER;
    uint32_t low = vector;
    if ((mps_flags & 3) == 3)
        low |= 1u << 13; /* active low */
    if (((mps_flags >> 2) & 3) == 3)
        low |= 1u << 15; /* level triggered */
    uint32_t n = gsi - io->gsi_base;
    irql_t old = spin_lock_at(&lock, IRQL_HIGH);
    wr(io, 0x11 + 2 * n, apic_id << 24);
    wr(io, 0x10 + 2 * n, low);
    spin_unlock(&lock, old);
    return STATUS_OK;
}

status_t ioapic_mask(uint32_t gsi)
{
    struct ioapic *io = find(gsi);
    if (!io)
        return STATUS_INVALID_PARAMETER;
    irql_t old = spin_lock_at(&lock, IRQL_HIGH);
    wr(io, 0x10 + 2 * (gsi - io->gsi_base), 1u << 16);
    spin_unlock(&lock, old);
    return STATUS_OK;
}
