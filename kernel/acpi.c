/*
 * ACPI table parsing. Layouts: ACPI Specification 6.5, §5.2.5.3 (RSDP), §5.2.6 (table header),
 * §5.2.8 (XSDT), §5.2.9 (FADT), §5.2.12 (MADT and its entries), §5.2.3.2 (GAS); IA-PC HPET
 * specification 1.0a §3.2.4 (HPET table); AML encoding of \_S5 per §19.6 / §20.2 (NameOp 0x08,
 * PackageOp 0x12, BytePrefix 0x0A, ZeroOp 0x00, OneOp 0x01).
 */
#include "kernel/acpi.h"

#include "kernel/fmt.h"
#include "kernel/readonce.h"
#include "kernel/string.h"

struct __attribute__((packed)) acpi_rsdp {
    char signature[8]; /* "RSD PTR " */
    uint8_t checksum;  /* first 20 bytes */
    char oem_id[6];
    uint8_t revision; /* 0 = ACPI 1.0, 2 = 2.0+ */
    uint32_t rsdt;
    uint32_t length; /* 2.0+ */
    uint64_t xsdt;
    uint8_t ext_checksum;
    uint8_t reserved[3];
};
_Static_assert(sizeof(struct acpi_rsdp) == 36, "RSDP is 36 bytes (ACPI 6.5 5.2.5.3)");
_Static_assert(__builtin_offsetof(struct acpi_rsdp, xsdt) == 24, "RSDP XsdtAddress at 24");

struct __attribute__((packed)) acpi_header {
    char signature[4];
    uint32_t length;
    uint8_t revision;
    uint8_t checksum;
    char oem_id[6];
    char oem_table_id[8];
    uint32_t oem_revision;
    uint32_t creator_id;
    uint32_t creator_revision;
};
_Static_assert(sizeof(struct acpi_header) == 36, "SDT header is 36 bytes (ACPI 6.5 5.2.6)");

struct __attribute__((packed)) acpi_gas {
    uint8_t space;
    uint8_t bit_width;
    uint8_t bit_offset;
    uint8_t access_size;
    uint64_t address;
};
_Static_assert(sizeof(struct acpi_gas) == 12, "GAS is 12 bytes (ACPI 6.5 5.2.3.2)");

/* FADT fields we read, by offset from the table start (ACPI 6.5 Table 5.9). */
enum {
    FADT_DSDT = 40,          /* u32 */
    FADT_SCI_INT = 46,       /* u16 */
    FADT_SMI_CMD = 48,       /* u32 */
    FADT_ACPI_ENABLE = 52,   /* u8 */
    FADT_PM1A_CNT_BLK = 64,  /* u32 */
    FADT_PM1B_CNT_BLK = 68,  /* u32 */
    FADT_PM_TMR_BLK = 76,    /* u32 */
    FADT_FLAGS = 112,        /* u32 */
    FADT_X_DSDT = 140,       /* u64 */
    FADT_X_PM1A_CNT = 172,   /* GAS */
    FADT_X_PM_TMR = 208,     /* GAS */
    FADT_SLEEP_CONTROL = 244, /* GAS */
    FADT_SLEEP_STATUS = 256, /* GAS */
};
#define FADT_FLAG_TMR_VAL_EXT (1u << 8)
#define FADT_FLAG_HW_REDUCED (1u << 20)

/* MADT (ACPI 6.5 5.2.12): header, local APIC address u32 @36, flags u32 @40, entries @44. */
#define MADT_ENTRIES 44
#define MADT_FLAG_PCAT_COMPAT 1u
enum {
    MADT_LAPIC = 0,      /* 8 bytes: uid u8 @2, apic id u8 @3, flags u32 @4 */
    MADT_IOAPIC = 1,     /* 12 bytes: id u8 @2, address u32 @4, gsi base u32 @8 */
    MADT_ISO = 2,        /* 10 bytes: bus u8 @2, source u8 @3, gsi u32 @4, flags u16 @8 */
    MADT_LAPIC_ADDR = 5, /* 12 bytes: address u64 @4 */
    MADT_X2APIC = 9,     /* 16 bytes: x2apic id u32 @4, flags u32 @8, uid u32 @12 */
};
#define MADT_CPU_ENABLED 1u
#define MADT_CPU_ONLINE_CAPABLE 2u

#define REPORT(...)                                                                                            \
    do {                                                                                                       \
        if (ctx->report) {                                                                                     \
            char m_[200];                                                                                      \
            fmt_snprintf(m_, sizeof m_, __VA_ARGS__);                                                          \
            ctx->report(ctx->report_ctx, m_);                                                                  \
        }                                                                                                      \
    } while (0)

struct parse_ctx {
    acpi_map_fn map;
    void *map_ctx;
    acpi_report_fn report;
    void *report_ctx;
};

/* Multi-byte fields stand at any alignment in the tables the firmware (the host) wrote: they are
 * loaded with kernel/readonce.h's alignment-1 loads, read_once_u16/u32/u64. */

static uint8_t sum(const uint8_t *p, size_t n)
{
    uint8_t s = 0;
    for (size_t i = 0; i < n; i++)
        s = (uint8_t)(s + p[i]);
    return s;
}

/* Maps a whole table, after checking its header; NULL (reported) if unusable. */
static const uint8_t *map_table(struct parse_ctx *ctx, uint64_t phys, const char *what, uint32_t *len_out)
{
    if (phys == 0) {
        REPORT("acpi: %s: null address", what);
        return NULL;
    }
    const struct acpi_header *h = ctx->map(ctx->map_ctx, phys, sizeof *h);
    if (!h) {
        REPORT("acpi: %s at %#llx: not in readable memory", what, (unsigned long long)phys);
        return NULL;
    }
    uint32_t len = h->length;
    if (len < sizeof *h || len > (16u << 20)) {
        REPORT("acpi: %s at %#llx: implausible length %u", what, (unsigned long long)phys, len);
        return NULL;
    }
    const uint8_t *t = ctx->map(ctx->map_ctx, phys, len);
    if (!t) {
        REPORT("acpi: %s at %#llx: %u bytes not in readable memory", what, (unsigned long long)phys, len);
        return NULL;
    }
    *len_out = len;
    return t;
}

static void parse_madt(struct acpi_info *out, struct parse_ctx *ctx, const uint8_t *t, uint32_t len)
{
    if (len < MADT_ENTRIES) {
        REPORT("acpi: MADT too short (%u bytes)", len);
        return;
    }
    out->have_madt = true;
    out->lapic_phys = read_once_u32(t + 36);
    out->pcat_compat = read_once_u32(t + 40) & MADT_FLAG_PCAT_COMPAT;
    for (uint32_t off = MADT_ENTRIES; off < len;) {
        if (len - off < 2) {
            REPORT("acpi: MADT: truncated entry header at offset %u", off);
            return;
        }
        uint8_t type = t[off], elen = t[off + 1];
        if (elen < 2 || elen > len - off) {
            REPORT("acpi: MADT: entry type %u at offset %u has bad length %u; rest of MADT skipped", type, off,
                   elen);
            return;
        }
        const uint8_t *e = t + off;
        off += elen;
        switch (type) {
        case MADT_LAPIC:
        case MADT_X2APIC: {
            bool x2 = type == MADT_X2APIC;
            if (elen < (x2 ? 16 : 8)) {
                REPORT("acpi: MADT: %s entry too short (%u)", x2 ? "x2APIC" : "LAPIC", elen);
                continue;
            }
            uint32_t flags = read_once_u32(e + (x2 ? 8 : 4));
            uint32_t id = x2 ? read_once_u32(e + 4) : e[3];
            uint32_t uid = x2 ? read_once_u32(e + 12) : e[2];
            if (!(flags & (MADT_CPU_ENABLED | MADT_CPU_ONLINE_CAPABLE)))
                continue; /* not present */
            bool dup = false;
            for (unsigned i = 0; i < out->cpu_count; i++)
                dup |= out->cpus[i].apic_id == id;
            if (dup) {
                REPORT("acpi: MADT: APIC id %u listed twice; second entry ignored", id);
                continue;
            }
            if (out->cpu_count == ACPI_MAX_CPUS) {
                out->cpus_dropped++;
                continue;
            }
            struct acpi_cpu *c = &out->cpus[out->cpu_count++];
            c->apic_id = id;
            c->uid = uid;
            c->enabled = flags & MADT_CPU_ENABLED;
            c->online_capable = !c->enabled && (flags & MADT_CPU_ONLINE_CAPABLE);
            c->x2apic_entry = x2;
            break;
        }
        case MADT_IOAPIC:
            if (elen < 12) {
                REPORT("acpi: MADT: IOAPIC entry too short (%u)", elen);
                continue;
            }
            if (out->ioapic_count == ACPI_MAX_IOAPICS) {
                REPORT("acpi: MADT: more than %d IOAPICs; extra ignored", ACPI_MAX_IOAPICS);
                continue;
            }
            out->ioapics[out->ioapic_count].id = e[2];
            out->ioapics[out->ioapic_count].phys = read_once_u32(e + 4);
            out->ioapics[out->ioapic_count].gsi_base = read_once_u32(e + 8);
            out->ioapic_count++;
            break;
        case MADT_ISO:
            if (elen < 10) {
                REPORT("acpi: MADT: interrupt override entry too short (%u)", elen);
                continue;
            }
            if (out->override_count == ACPI_MAX_OVERRIDES) {
                REPORT("acpi: MADT: more than %d interrupt overrides; extra ignored", ACPI_MAX_OVERRIDES);
                continue;
            }
            out->overrides[out->override_count].bus_irq = e[3];
            out->overrides[out->override_count].gsi = read_once_u32(e + 4);
            out->overrides[out->override_count].flags = read_once_u16(e + 8);
            out->override_count++;
            break;
        case MADT_LAPIC_ADDR:
            if (elen < 12) {
                REPORT("acpi: MADT: APIC address override too short (%u)", elen);
                continue;
            }
            out->lapic_phys = read_once_u64(e + 4);
            break;
        default:
            break; /* NMI sources, GIC entries and others: not needed */
        }
    }
    if (out->cpus_dropped)
        REPORT("acpi: MADT lists %u more CPUs than the %d supported; they stay off", out->cpus_dropped,
               ACPI_MAX_CPUS);
}

static void read_gas(const uint8_t *t, uint32_t len, uint32_t off, struct acpi_gas_info *g)
{
    memset(g, 0, sizeof *g);
    if (off + sizeof(struct acpi_gas) > len)
        return;
    g->space = t[off];
    g->bit_width = t[off + 1];
    g->address = read_once_u64(t + off + 4);
}

static void parse_fadt(struct acpi_info *out, struct parse_ctx *ctx, const uint8_t *t, uint32_t len)
{
    if (len < FADT_FLAGS + 4) {
        REPORT("acpi: FADT too short (%u bytes)", len);
        return;
    }
    out->have_fadt = true;
    uint32_t flags = read_once_u32(t + FADT_FLAGS);
    out->hw_reduced = flags & FADT_FLAG_HW_REDUCED;
    out->sci_irq = read_once_u16(t + FADT_SCI_INT);
    out->smi_cmd_port = read_once_u32(t + FADT_SMI_CMD);
    out->acpi_enable_value = t[FADT_ACPI_ENABLE];
    out->pm1a_cnt_port = read_once_u32(t + FADT_PM1A_CNT_BLK);
    out->pm1b_cnt_port = read_once_u32(t + FADT_PM1B_CNT_BLK);
    out->pm_tmr_port = read_once_u32(t + FADT_PM_TMR_BLK);
    out->pm_tmr_32bit = flags & FADT_FLAG_TMR_VAL_EXT;
    out->dsdt_phys = read_once_u32(t + FADT_DSDT);
    if (len >= FADT_X_DSDT + 8 && read_once_u64(t + FADT_X_DSDT))
        out->dsdt_phys = read_once_u64(t + FADT_X_DSDT);
    struct acpi_gas_info g;
    read_gas(t, len, FADT_X_PM1A_CNT, &g);
    if (g.address && g.space == 1 && g.address <= 0xffff)
        out->pm1a_cnt_port = (uint32_t)g.address;
    read_gas(t, len, FADT_X_PM_TMR, &g);
    if (g.address && g.space == 1 && g.address <= 0xffff)
        out->pm_tmr_port = (uint32_t)g.address;
    if (out->pm1a_cnt_port > 0xffff || out->pm1b_cnt_port > 0xffff || out->pm_tmr_port > 0xffff) {
        REPORT("acpi: FADT: I/O port past 0xffff; ignored");
        if (out->pm1a_cnt_port > 0xffff) out->pm1a_cnt_port = 0;
        if (out->pm1b_cnt_port > 0xffff) out->pm1b_cnt_port = 0;
        if (out->pm_tmr_port > 0xffff) out->pm_tmr_port = 0;
    }
    read_gas(t, len, FADT_SLEEP_CONTROL, &out->sleep_control);
    read_gas(t, len, FADT_SLEEP_STATUS, &out->sleep_status);
}

/* PkgLength (ACPI 6.5 20.2.4): returns bytes of the encoding, 0 if it runs off the end. */
static size_t pkg_length_size(const uint8_t *p, size_t avail)
{
    if (avail < 1)
        return 0;
    size_t n = 1 + (p[0] >> 6);
    return n <= avail ? n : 0;
}

/* One integer element of a package: ZeroOp, OneOp, BytePrefix b, WordPrefix w (low byte used). */
static size_t aml_small_int(const uint8_t *p, size_t avail, uint8_t *v)
{
    if (avail < 1)
        return 0;
    if (p[0] == 0x00 || p[0] == 0x01) {
        *v = p[0];
        return 1;
    }
    if (p[0] == 0x0a && avail >= 2) {
        *v = p[1];
        return 2;
    }
    if (p[0] == 0x0b && avail >= 3) {
        *v = p[1];
        return 3;
    }
    if (p[0] == 0x0c && avail >= 5) {
        *v = p[1];
        return 5;
    }
    return 0;
}

bool acpi_find_s5(const uint8_t *aml, size_t len, uint8_t *typa, uint8_t *typb)
{
    for (size_t i = 0; i + 4 <= len; i++) {
        if (memcmp(aml + i, "_S5_", 4) != 0)
            continue;
        /* NameOp, optionally with a root ('\\') or parent ('^') prefix, before the name. */
        bool named = (i >= 1 && aml[i - 1] == 0x08) ||
                     (i >= 2 && aml[i - 2] == 0x08 && (aml[i - 1] == '\\' || aml[i - 1] == '^'));
        if (!named)
            continue;
        size_t p = i + 4;
        if (p >= len || aml[p] != 0x12) /* PackageOp */
            continue;
        p++;
        size_t pl = pkg_length_size(aml + p, len - p);
        if (!pl)
            return false;
        p += pl;
        if (p >= len) /* NumElements */
            return false;
        p++;
        uint8_t a, b = 0;
        size_t n = aml_small_int(aml + p, len - p, &a);
        if (!n)
            continue;
        p += n;
        if (!aml_small_int(aml + p, len - p, &b))
            b = a;
        *typa = a & 7;
        *typb = b & 7;
        return true;
    }
    return false;
}

const struct acpi_table_info *acpi_find(const struct acpi_info *info, const char *sig)
{
    for (unsigned i = 0; i < info->table_count; i++)
        if (memcmp(info->tables[i].signature, sig, 4) == 0)
            return &info->tables[i];
    return NULL;
}

status_t acpi_parse(struct acpi_info *out, uint64_t rsdp_phys, acpi_map_fn map, void *map_ctx,
                    acpi_report_fn report, void *report_ctx)
{
    struct parse_ctx c = { map, map_ctx, report, report_ctx }, *ctx = &c;
    memset(out, 0, sizeof *out);
    if (!rsdp_phys) {
        REPORT("acpi: no RSDP from the firmware");
        return STATUS_NOT_FOUND;
    }
    const struct acpi_rsdp *rsdp = map(map_ctx, rsdp_phys, 20);
    if (!rsdp || memcmp(rsdp->signature, "RSD PTR ", 8) != 0) {
        REPORT("acpi: RSDP at %#llx: bad signature", (unsigned long long)rsdp_phys);
        return STATUS_BAD_DATA;
    }
    if (sum((const uint8_t *)rsdp, 20) != 0) {
        REPORT("acpi: RSDP checksum wrong");
        return STATUS_BAD_DATA;
    }
    out->rsdp_revision = rsdp->revision;
    memcpy(out->oem_id, rsdp->oem_id, 6);
    out->oem_id[6] = '\0';
    uint64_t root = rsdp->rsdt;
    unsigned entry_size = 4;
    const char *root_sig = "RSDT";
    if (rsdp->revision >= 2) {
        const struct acpi_rsdp *full = map(map_ctx, rsdp_phys, sizeof *full);
        if (full && full->length >= sizeof *full && sum((const uint8_t *)full, sizeof *full) == 0 && full->xsdt) {
            root = full->xsdt;
            entry_size = 8;
            root_sig = "XSDT";
        } else {
            REPORT("acpi: RSDP 2.0 extension unusable; using the RSDT");
        }
    }
    uint32_t rlen;
    const uint8_t *rt = map_table(ctx, root, root_sig, &rlen);
    if (!rt)
        return STATUS_BAD_DATA;
    if (memcmp(rt, root_sig, 4) != 0 || sum(rt, rlen) != 0) {
        REPORT("acpi: %s: bad signature or checksum", root_sig);
        return STATUS_BAD_DATA;
    }
    unsigned entries = (rlen - sizeof(struct acpi_header)) / entry_size;
    for (unsigned i = 0; i < entries; i++) {
        const uint8_t *ep = rt + sizeof(struct acpi_header) + (size_t)i * entry_size;
        uint64_t phys = entry_size == 8 ? read_once_u64(ep) : read_once_u32(ep);
        uint32_t len;
        const uint8_t *t = map_table(ctx, phys, "table", &len);
        if (!t)
            continue;
        if (out->table_count == ACPI_MAX_TABLES) {
            REPORT("acpi: more than %d tables; rest ignored", ACPI_MAX_TABLES);
            break;
        }
        struct acpi_table_info *ti = &out->tables[out->table_count++];
        memcpy(ti->signature, t, 4);
        for (int k = 0; k < 4; k++)
            if (ti->signature[k] < 0x20 || ti->signature[k] > 0x7e)
                ti->signature[k] = '?';
        ti->signature[4] = '\0';
        ti->revision = t[8];
        ti->length = len;
        ti->phys = phys;
        ti->checksum_ok = sum(t, len) == 0;
        if (!ti->checksum_ok) {
            REPORT("acpi: table %s at %#llx: checksum wrong; not used", ti->signature, (unsigned long long)phys);
            continue;
        }
        if (memcmp(t, "APIC", 4) == 0)
            parse_madt(out, ctx, t, len);
        else if (memcmp(t, "FACP", 4) == 0)
            parse_fadt(out, ctx, t, len);
        else if (memcmp(t, "HPET", 4) == 0 && len >= 56)
            out->hpet_phys = read_once_u64(t + 44); /* Base address GAS @40, address @44 */
    }
    if (!out->have_madt)
        REPORT("acpi: no usable MADT: only the boot CPU will run");
    if (!out->have_fadt)
        REPORT("acpi: no usable FADT: ACPI power-off unavailable");
    if (out->dsdt_phys) {
        uint32_t len;
        const uint8_t *d = map_table(ctx, out->dsdt_phys, "DSDT", &len);
        if (d && memcmp(d, "DSDT", 4) == 0) {
            if (out->table_count < ACPI_MAX_TABLES) {
                struct acpi_table_info *ti = &out->tables[out->table_count++];
                memcpy(ti->signature, "DSDT", 5);
                ti->revision = d[8];
                ti->length = len;
                ti->phys = out->dsdt_phys;
                ti->checksum_ok = sum(d, len) == 0;
            }
            if (sum(d, len) != 0) {
                REPORT("acpi: DSDT at %#llx: checksum wrong; not used (ACPI power-off will use sleep type 0)",
                       (unsigned long long)out->dsdt_phys);
            } else {
                out->have_s5 = acpi_find_s5(d + sizeof(struct acpi_header), len - sizeof(struct acpi_header),
                                            &out->s5_typa, &out->s5_typb);
                if (!out->have_s5)
                    REPORT("acpi: DSDT has no \\_S5 package: ACPI power-off will use sleep type 0");
            }
        } else if (d) {
            REPORT("acpi: DSDT at %#llx has the wrong signature", (unsigned long long)out->dsdt_phys);
        }
    }
    return STATUS_OK;
}
