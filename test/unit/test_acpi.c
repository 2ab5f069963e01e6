/*
 * Unit tests for kernel/acpi.c: ACPI table parsing from untrusted memory.
 *
 * Tables are built in a byte buffer that stands for physical memory starting at MEM_BASE. The map
 * callback returns NULL for any range not entirely inside the buffer (or past a configurable limit),
 * and otherwise hands out a private heap copy of exactly the requested bytes, so AddressSanitizer
 * catches any read past what the parser asked to map. Field offsets below are taken from the ACPI 6.5
 * specification (not from acpi.c), so the two are checked against each other.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kernel/acpi.h"
#include "test/lib/acpi_checksum.h"
#include "test/lib/bytes.h"
#include "test/lib/test_util.h"

/* ---- simulated physical memory ---------------------------------------------------------------- */

#define MEM_BASE 0x100000ull
#define MEM_CAP (128u * 1024)

struct mem {
    uint8_t buf[MEM_CAP];
    size_t used;  /* bytes handed out by mem_alloc */
    size_t limit; /* bytes the map callback accepts, from MEM_BASE */
    void **copies;
    unsigned ncopies, capcopies;
    unsigned maps, failed_maps;
};

static struct mem *M;
static struct acpi_info info;
static struct reports rep;

static const void *map(void *ctx, uint64_t phys, size_t len)
{
    struct mem *m = ctx;
    m->maps++;
    if (phys < MEM_BASE || phys - MEM_BASE > m->limit || len > m->limit - (phys - MEM_BASE)) {
        m->failed_maps++;
        return NULL;
    }
    if (m->ncopies == m->capcopies) {
        m->capcopies = m->capcopies ? 2 * m->capcopies : 64;
        m->copies = realloc(m->copies, m->capcopies * sizeof *m->copies);
        assert_non_null(m->copies);
    }
    void *c = malloc(len ? len : 1);
    assert_non_null(c);
    memcpy(c, m->buf + (phys - MEM_BASE), len);
    m->copies[m->ncopies++] = c;
    return c;
}

static void unmap_all(struct mem *m)
{
    for (unsigned i = 0; i < m->ncopies; i++)
        free(m->copies[i]);
    m->ncopies = 0;
}

static int setup(void **state)
{
    (void)state;
    M = calloc(1, sizeof *M);
    if (!M)
        return -1;
    M->limit = MEM_CAP;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unmap_all(M);
    free(M->copies);
    free(M);
    M = NULL;
    return 0;
}

/* Runs acpi_parse on the current memory (info is first filled with junk: the parser must clear it). */
static status_t parse(uint64_t rsdp)
{
    reports_clear(&rep);
    memset(&info, 0xa5, sizeof info);
    status_t s = acpi_parse(&info, rsdp, map, M, reports_record, &rep);
    unmap_all(M);
    return s;
}

static uint64_t mem_alloc(struct mem *m, size_t len)
{
    m->used = (m->used + 15) & ~(size_t)15;
    assert_true(m->used + len <= MEM_CAP);
    uint64_t phys = MEM_BASE + m->used;
    m->used += len;
    return phys;
}

static uint8_t *P(uint64_t phys)
{
    assert_true(phys >= MEM_BASE && phys - MEM_BASE < MEM_CAP);
    return M->buf + (phys - MEM_BASE);
}

/* ---- table builders (ACPI 6.5 layouts) -------------------------------------------------------- */

#define HDR 36 /* SDT header: Signature 0, Length 4, Revision 8, Checksum 9, OEMID 10, ... */

static void sdt_fix(uint64_t phys)
{
    acpi_fix_checksum(P(phys), get32(P(phys) + 4), 9);
}

/* A zeroed table of `len` bytes with a header; the caller fills it and calls sdt_fix. */
static uint64_t sdt_new(const char *sig, uint32_t len, uint8_t rev)
{
    uint64_t phys = mem_alloc(M, len);
    uint8_t *t = P(phys);
    memset(t, 0, len);
    memcpy(t, sig, 4);
    put32(t + 4, len);
    t[8] = rev;
    memcpy(t + 10, "TESTOE", 6);
    memcpy(t + 16, "UNITTEST", 8);
    put32(t + 24, 1);
    memcpy(t + 28, "TEST", 4);
    put32(t + 32, 1);
    return phys;
}

/* RSDP (5.2.5.3): Signature 0, Checksum 8 (first 20 bytes), OEMID 9, Revision 15, RsdtAddress 16,
 * Length 20, XsdtAddress 24, Extended Checksum 32 (all 36 bytes). */
static void rsdp_write(uint64_t phys, uint8_t rev, uint32_t rsdt, uint64_t xsdt)
{
    uint8_t *r = P(phys);
    memset(r, 0, rev >= 2 ? 36 : 20);
    memcpy(r, "RSD PTR ", 8);
    memcpy(r + 9, "OEMXYZ", 6);
    r[15] = rev;
    put32(r + 16, rsdt);
    acpi_fix_checksum(r, 20, 8);
    if (rev >= 2) {
        put32(r + 20, 36);
        put64(r + 24, xsdt);
        acpi_fix_checksum(r, 36, 32);
    }
}

static uint64_t root_new(const char *sig, const uint64_t *entries, unsigned n)
{
    unsigned esz = sig[0] == 'X' ? 8 : 4;
    uint64_t phys = sdt_new(sig, HDR + esz * n, 1);
    for (unsigned i = 0; i < n; i++) {
        if (esz == 8)
            put64(P(phys) + HDR + 8 * i, entries[i]);
        else
            put32(P(phys) + HDR + 4 * i, (uint32_t)entries[i]);
    }
    sdt_fix(phys);
    return phys;
}

/* MADT (5.2.12): Local Interrupt Controller Address 36, Flags 40, entries from 44. */
struct madt {
    uint64_t phys;
    uint32_t len, cap;
};

static struct madt madt_begin(uint32_t cap, uint32_t lapic_addr, uint32_t flags)
{
    struct madt b = { sdt_new("APIC", cap, 5), 44, cap };
    put32(P(b.phys) + 36, lapic_addr);
    put32(P(b.phys) + 40, flags);
    return b;
}

static void madt_put(struct madt *b, const uint8_t *e, size_t n)
{
    assert_true(b->len + n <= b->cap);
    memcpy(P(b->phys) + b->len, e, n);
    b->len += (uint32_t)n;
}

static uint64_t madt_end(struct madt *b)
{
    put32(P(b->phys) + 4, b->len);
    sdt_fix(b->phys);
    return b->phys;
}

/* Processor Local APIC (type 0, 8 bytes): UID 2, APIC ID 3, Flags 4. */
static void madt_lapic(struct madt *b, uint8_t uid, uint8_t id, uint32_t flags)
{
    uint8_t e[8] = { 0, 8, uid, id };
    put32(e + 4, flags);
    madt_put(b, e, sizeof e);
}

/* Processor Local x2APIC (type 9, 16 bytes): x2APIC ID 4, Flags 8, UID 12. */
static void madt_x2apic(struct madt *b, uint32_t id, uint32_t flags, uint32_t uid)
{
    uint8_t e[16] = { 9, 16 };
    put32(e + 4, id);
    put32(e + 8, flags);
    put32(e + 12, uid);
    madt_put(b, e, sizeof e);
}

/* I/O APIC (type 1, 12 bytes): ID 2, Address 4, GSI Base 8. */
static void madt_ioapic(struct madt *b, uint8_t id, uint32_t addr, uint32_t gsi)
{
    uint8_t e[12] = { 1, 12, id };
    put32(e + 4, addr);
    put32(e + 8, gsi);
    madt_put(b, e, sizeof e);
}

/* Interrupt Source Override (type 2, 10 bytes): Bus 2, Source 3, GSI 4, Flags 8. */
static void madt_iso(struct madt *b, uint8_t source, uint32_t gsi, uint16_t flags)
{
    uint8_t e[10] = { 2, 10, 0, source };
    put32(e + 4, gsi);
    put16(e + 8, flags);
    madt_put(b, e, sizeof e);
}

/* Local APIC Address Override (type 5, 12 bytes): Address 4 (64-bit). */
static void madt_lapic_override(struct madt *b, uint64_t addr)
{
    uint8_t e[12] = { 5, 12 };
    put64(e + 4, addr);
    madt_put(b, e, sizeof e);
}

/* FADT (5.2.9, Table 5.9) offsets. */
enum {
    F_DSDT = 40, F_SCI_INT = 46, F_SMI_CMD = 48, F_ACPI_ENABLE = 52, F_PM1A_CNT = 64, F_PM1B_CNT = 68,
    F_PM_TMR = 76, F_FLAGS = 112, F_X_DSDT = 140, F_X_PM1A_CNT = 172, F_X_PM_TMR = 208,
    F_SLEEP_CONTROL = 244, F_SLEEP_STATUS = 256, F_LEN = 276, F_LEN_V1 = 116,
};
#define FADT_TMR_VAL_EXT (1u << 8)
#define FADT_HW_REDUCED (1u << 20)

/* Generic Address Structure (5.2.3.2): Space 0, Bit Width 1, Bit Offset 2, Access Size 3, Address 4. */
static void put_gas(uint8_t *p, uint8_t space, uint8_t width, uint64_t addr)
{
    p[0] = space;
    p[1] = width;
    p[2] = 0;
    p[3] = 1;
    put64(p + 4, addr);
}

/* HPET (IA-PC HPET 1.0a 3.2.4): Event Timer Block ID 36, Base Address GAS 40 (address 44), 56 bytes. */
static uint64_t hpet_new(uint64_t addr, uint32_t len)
{
    uint64_t phys = sdt_new("HPET", len, 1);
    if (len >= 56) {
        put32(P(phys) + 36, 0x8086a201);
        put_gas(P(phys) + 40, 0, 64, addr);
    }
    sdt_fix(phys);
    return phys;
}

static uint64_t dsdt_new(const uint8_t *aml, size_t n)
{
    uint64_t phys = sdt_new("DSDT", (uint32_t)(HDR + n), 2);
    memcpy(P(phys) + HDR, aml, n);
    sdt_fix(phys);
    return phys;
}

/* A DSDT body: an \_S4 package first (must not be mistaken for \_S5), then Name (_S5, Package (4)
 * { 5, 6, 0, 0 }) with BytePrefix elements. */
static const uint8_t std_aml[] = {
    0x10, 0x05, '\\', '_', 'S', 'B', '_',                                    /* Scope (\_SB) {} */
    0x08, '_', 'S', '4', '_', 0x12, 0x08, 0x04, 0x0a, 0x04, 0x0a, 0x04, 0x00, 0x00,
    0x08, '_', 'S', '5', '_', 0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x06, 0x00, 0x00,
};

#define LAPIC_ADDR 0xfee00000u
#define LAPIC_OVERRIDE 0x00000001fee00000ull
#define IOAPIC_ADDR 0xfec00000u
#define HPET_ADDR 0xfed00000ull

struct image {
    uint64_t rsdp, rsdt, xsdt, fadt, madt, hpet, dsdt;
};

/*
 * The standard image, laid out in this order (so cutting memory short loses tables from the end):
 * RSDP, XSDT, RSDT, FADT, MADT, HPET, DSDT. Both roots list FADT, MADT, HPET.
 * rsdp_rev 0 builds a 20-byte ACPI 1.0 RSDP; legacy_fadt a 116-byte FADT without the X_ fields.
 */
static struct image build_image(uint8_t rsdp_rev, bool legacy_fadt)
{
    struct image im;
    memset(M->buf, 0, sizeof M->buf);
    M->used = 0;
    M->limit = MEM_CAP;
    im.rsdp = mem_alloc(M, 36);
    uint64_t root_slot_x = mem_alloc(M, HDR + 3 * 8), root_slot_r = mem_alloc(M, HDR + 3 * 4);

    im.fadt = sdt_new("FACP", legacy_fadt ? F_LEN_V1 : F_LEN, legacy_fadt ? 1 : 6);

    struct madt b = madt_begin(256, LAPIC_ADDR, 1 /* PCAT_COMPAT */);
    madt_lapic(&b, 0, 0, 1);
    madt_lapic(&b, 1, 2, 1);
    madt_lapic(&b, 2, 4, 2); /* online capable, not enabled */
    madt_lapic(&b, 3, 6, 0); /* not present: ignored */
    madt_x2apic(&b, 0x100, 1, 4);
    madt_ioapic(&b, 8, IOAPIC_ADDR, 0);
    madt_iso(&b, 0, 2, 0);
    madt_iso(&b, 9, 9, 0x000d); /* active low, level */
    static const uint8_t nmi[6] = { 4, 6, 0xff, 5, 0, 1 }; /* Local APIC NMI: not used, skipped */
    madt_put(&b, nmi, sizeof nmi);
    if (!legacy_fadt)
        madt_lapic_override(&b, LAPIC_OVERRIDE);
    im.madt = madt_end(&b);

    im.hpet = hpet_new(HPET_ADDR, 56);
    im.dsdt = dsdt_new(std_aml, sizeof std_aml);

    uint8_t *f = P(im.fadt);
    put32(f + F_DSDT, (uint32_t)im.dsdt);
    put16(f + F_SCI_INT, 9);
    put32(f + F_SMI_CMD, 0xb2);
    f[F_ACPI_ENABLE] = 0xa0;
    put32(f + F_PM1A_CNT, 0x404);
    put32(f + F_PM1B_CNT, 0);
    put32(f + F_PM_TMR, 0x408);
    put32(f + F_FLAGS, FADT_TMR_VAL_EXT);
    if (!legacy_fadt) {
        put64(f + F_X_DSDT, im.dsdt);
        put_gas(f + F_X_PM1A_CNT, 1, 16, 0x404);
        put_gas(f + F_X_PM_TMR, 1, 32, 0x408);
    }
    sdt_fix(im.fadt);

    /* The roots were reserved first (low addresses); fill them now. */
    uint64_t entries[3] = { im.fadt, im.madt, im.hpet };
    size_t saved = M->used;
    M->used = root_slot_x - MEM_BASE;
    im.xsdt = root_new("XSDT", entries, 3);
    assert_int_equal(im.xsdt, root_slot_x);
    M->used = root_slot_r - MEM_BASE;
    im.rsdt = root_new("RSDT", entries, 3);
    assert_int_equal(im.rsdt, root_slot_r);
    M->used = saved;

    rsdp_write(im.rsdp, rsdp_rev, (uint32_t)im.rsdt, rsdp_rev >= 2 ? im.xsdt : 0);
    return im;
}

/* Points the RSDP (rev 2) at a new XSDT listing the given tables. */
static uint64_t set_xsdt(const struct image *im, const uint64_t *entries, unsigned n)
{
    uint64_t x = root_new("XSDT", entries, n);
    rsdp_write(im->rsdp, 2, (uint32_t)im->rsdt, x);
    return x;
}

static void assert_reported(const char *a, const char *b)
{
    unsigned hits = b ? reports_matching(&rep, a, b) : reports_matching(&rep, a);
    if (!hits) {
        print_message("expected a report containing \"%s\"%s%s%s\n", a, b ? " and \"" : "", b ? b : "",
                      b ? "\"" : "");
        reports_dump(&rep);
    }
    assert_true(hits > 0);
}

static void assert_no_reports(void)
{
    if (rep.count)
        reports_dump(&rep);
    assert_int_equal(rep.count, 0);
}

/* The MADT of the standard image, as parsed. */
static void assert_std_madt(bool with_override)
{
    assert_true(info.have_madt);
    assert_true(info.lapic_phys == (with_override ? LAPIC_OVERRIDE : LAPIC_ADDR));
    assert_true(info.pcat_compat);
    assert_int_equal(info.cpu_count, 4);
    assert_int_equal(info.cpus_dropped, 0);
    static const struct {
        uint32_t id, uid;
        bool enabled, online_capable, x2;
    } want[4] = { { 0, 0, true, false, false },
                  { 2, 1, true, false, false },
                  { 4, 2, false, true, false },
                  { 0x100, 4, true, false, true } };
    for (int i = 0; i < 4; i++) {
        assert_int_equal(info.cpus[i].apic_id, want[i].id);
        assert_int_equal(info.cpus[i].uid, want[i].uid);
        assert_int_equal(info.cpus[i].enabled, want[i].enabled);
        assert_int_equal(info.cpus[i].online_capable, want[i].online_capable);
        assert_int_equal(info.cpus[i].x2apic_entry, want[i].x2);
    }
    assert_int_equal(info.ioapic_count, 1);
    assert_int_equal(info.ioapics[0].id, 8);
    assert_int_equal(info.ioapics[0].phys, IOAPIC_ADDR);
    assert_int_equal(info.ioapics[0].gsi_base, 0);
    assert_int_equal(info.override_count, 2);
    assert_int_equal(info.overrides[0].bus_irq, 0);
    assert_int_equal(info.overrides[0].gsi, 2);
    assert_int_equal(info.overrides[0].flags, 0);
    assert_int_equal(info.overrides[1].bus_irq, 9);
    assert_int_equal(info.overrides[1].gsi, 9);
    assert_int_equal(info.overrides[1].flags, 0x000d);
}

static void assert_std_fadt(const struct image *im)
{
    assert_true(info.have_fadt);
    assert_false(info.hw_reduced);
    assert_int_equal(info.pm1a_cnt_port, 0x404);
    assert_int_equal(info.pm1b_cnt_port, 0);
    assert_int_equal(info.pm_tmr_port, 0x408);
    assert_true(info.pm_tmr_32bit);
    assert_int_equal(info.sci_irq, 9);
    assert_int_equal(info.smi_cmd_port, 0xb2);
    assert_int_equal(info.acpi_enable_value, 0xa0);
    assert_int_equal(info.sleep_control.address, 0);
    assert_int_equal(info.sleep_status.address, 0);
    assert_int_equal(info.dsdt_phys, im->dsdt);
    assert_true(info.have_s5);
    assert_int_equal(info.s5_typa, 5);
    assert_int_equal(info.s5_typb, 6);
}

/* ---- valid images ----------------------------------------------------------------------------- */

/* ACPI 2.0+ RSDP with an XSDT: every table is listed and parsed, and nothing is reported. */
static void test_valid_v2_xsdt(void **state)
{
    (void)state;
    struct image im = build_image(2, false);
    assert_int_equal(parse(im.rsdp), STATUS_OK);
    assert_no_reports();
    assert_int_equal(info.rsdp_revision, 2);
    assert_string_equal(info.oem_id, "OEMXYZ");
    assert_int_equal(info.table_count, 4);
    static const char *const sigs[4] = { "FACP", "APIC", "HPET", "DSDT" };
    const uint64_t phys[4] = { im.fadt, im.madt, im.hpet, im.dsdt };
    for (int i = 0; i < 4; i++) {
        assert_string_equal(info.tables[i].signature, sigs[i]);
        assert_true(info.tables[i].checksum_ok);
        assert_int_equal(info.tables[i].phys, phys[i]);
        assert_int_equal(info.tables[i].length, get32(P(phys[i]) + 4));
        assert_int_equal(info.tables[i].revision, P(phys[i])[8]);
        assert_ptr_equal(acpi_find(&info, sigs[i]), &info.tables[i]);
    }
    assert_null(acpi_find(&info, "SSDT"));
    assert_null(acpi_find(&info, "XSDT")); /* the root itself is not listed */
    assert_std_madt(true);
    assert_std_fadt(&im);
    assert_int_equal(info.hpet_phys, HPET_ADDR);
}

/* ACPI 1.0 RSDP (20 bytes, nothing read past them) with an RSDT and a 116-byte FADT. */
static void test_valid_v0_rsdt(void **state)
{
    (void)state;
    struct image im = build_image(0, true);
    /* Garbage right after the 20-byte RSDP and the 116-byte FADT must not be looked at. */
    memset(P(im.rsdp) + 20, 0xff, 16);
    assert_int_equal(parse(im.rsdp), STATUS_OK);
    assert_no_reports();
    assert_int_equal(info.rsdp_revision, 0);
    assert_int_equal(info.table_count, 4);
    assert_std_madt(false);
    assert_std_fadt(&im);
    assert_int_equal(info.tables[0].length, F_LEN_V1);
    assert_int_equal(info.hpet_phys, HPET_ADDR);
}

/* A v2 RSDP whose extended checksum is wrong, or whose XSDT address is 0: reported, and the RSDT is
 * used instead. */
static void test_rsdp_v2_falls_back_to_rsdt(void **state)
{
    (void)state;
    struct image im = build_image(2, false);
    P(im.rsdp)[32] ^= 0x01; /* extended checksum */
    assert_int_equal(parse(im.rsdp), STATUS_OK);
    assert_reported("RSDT", NULL);
    assert_int_equal(info.table_count, 4);
    assert_std_madt(true);
    assert_std_fadt(&im);

    rsdp_write(im.rsdp, 2, (uint32_t)im.rsdt, 0);
    assert_int_equal(parse(im.rsdp), STATUS_OK);
    assert_reported("RSDT", NULL);
    assert_int_equal(info.table_count, 4);
    assert_true(info.have_madt);
}

/* A v2 RSDP at the very end of memory, so only its first 20 bytes are mappable: the RSDT is used. */
static void test_rsdp_v2_at_end_of_memory(void **state)
{
    (void)state;
    struct image im = build_image(2, false);
    uint64_t r = mem_alloc(M, 36);
    rsdp_write(r, 2, (uint32_t)im.rsdt, im.xsdt);
    M->limit = (size_t)(r - MEM_BASE) + 20;
    assert_int_equal(parse(r), STATUS_OK);
    assert_reported("RSDT", NULL);
    assert_true(info.have_madt);
    assert_true(info.have_fadt);
}

/* The hardware-reduced FADT: the flag and the sleep control/status registers (GAS). */
static void test_fadt_hw_reduced(void **state)
{
    (void)state;
    struct image im = build_image(2, false);
    uint8_t *f = P(im.fadt);
    put32(f + F_FLAGS, FADT_HW_REDUCED);
    put32(f + F_PM1A_CNT, 0);
    put32(f + F_PM_TMR, 0);
    put_gas(f + F_X_PM1A_CNT, 0, 0, 0);
    put_gas(f + F_X_PM_TMR, 0, 0, 0);
    put_gas(f + F_SLEEP_CONTROL, 0, 8, 0xfed80004ull);
    put_gas(f + F_SLEEP_STATUS, 1, 8, 0x405);
    sdt_fix(im.fadt);
    assert_int_equal(parse(im.rsdp), STATUS_OK);
    assert_no_reports();
    assert_true(info.hw_reduced);
    assert_false(info.pm_tmr_32bit);
    assert_int_equal(info.pm1a_cnt_port, 0);
    assert_int_equal(info.pm_tmr_port, 0);
    assert_int_equal(info.sleep_control.space, 0);
    assert_int_equal(info.sleep_control.bit_width, 8);
    assert_int_equal(info.sleep_control.address, 0xfed80004ull);
    assert_int_equal(info.sleep_status.space, 1);
    assert_int_equal(info.sleep_status.bit_width, 8);
    assert_int_equal(info.sleep_status.address, 0x405);
    assert_true(info.have_s5);
}

/* The extended fields win over the legacy ones: X_DSDT over DSDT, an I/O-space X_PM1a_CNT / X_PM_TMR
 * over the 32-bit ports; a memory-space GAS does not replace a port. */
static void test_fadt_extended_fields(void **state)
{
    (void)state;
    struct image im = build_image(2, false);
    uint8_t *f = P(im.fadt);
    put32(f + F_DSDT, 0x12345678); /* bogus: must not be used */
    put_gas(f + F_X_PM1A_CNT, 1, 16, 0x1004);
    put_gas(f + F_X_PM_TMR, 0, 32, 0xfed00000ull); /* memory space: keep the legacy port */
    sdt_fix(im.fadt);
    assert_int_equal(parse(im.rsdp), STATUS_OK);
    assert_no_reports();
    assert_int_equal(info.dsdt_phys, im.dsdt);
    assert_true(info.have_s5);
    assert_int_equal(info.pm1a_cnt_port, 0x1004);
    assert_int_equal(info.pm_tmr_port, 0x408);

    /* X_DSDT 0: the 32-bit field is used. */
    put32(f + F_DSDT, (uint32_t)im.dsdt);
    put64(f + F_X_DSDT, 0);
    sdt_fix(im.fadt);
    assert_int_equal(parse(im.rsdp), STATUS_OK);
    assert_int_equal(info.dsdt_phys, im.dsdt);
    assert_true(info.have_s5);
}

/* Only the FADT's own length is read: a 116-byte FADT followed by bytes that would look like X_DSDT
 * and the GAS registers yields the legacy values. */
static void test_fadt_short_ignores_following_bytes(void **state)
{
    (void)state;
    struct image im = build_image(2, false);
    /* A full-size FADT whose extended fields point elsewhere, but whose Length says 116. */
    uint64_t f = sdt_new("FACP", F_LEN, 1);
    memcpy(P(f) + HDR, P(im.fadt) + HDR, F_LEN - HDR);
    put64(P(f) + F_X_DSDT, im.hpet);
    put_gas(P(f) + F_X_PM1A_CNT, 1, 16, 0x999);
    put_gas(P(f) + F_SLEEP_CONTROL, 0, 8, 0x1234);
    put32(P(f) + 4, F_LEN_V1);
    sdt_fix(f);
    uint64_t list[] = { f, im.madt };
    set_xsdt(&im, list, 2);
    assert_int_equal(parse(im.rsdp), STATUS_OK);
    assert_no_reports();
    assert_true(info.have_fadt);
    assert_int_equal(info.dsdt_phys, im.dsdt);
    assert_int_equal(info.pm1a_cnt_port, 0x404);
    assert_int_equal(info.sleep_control.address, 0);
}

/* A FADT I/O port above 0xffff is reported and dropped; the others stay. */
static void test_fadt_port_out_of_range(void **state)
{
    (void)state;
    struct image im = build_image(2, false);
    uint8_t *f = P(im.fadt);
    put32(f + F_PM1B_CNT, 0x12345);
    sdt_fix(im.fadt);
    assert_int_equal(parse(im.rsdp), STATUS_OK);
    assert_reported("FADT", "0xffff");
    assert_int_equal(info.pm1b_cnt_port, 0);
    assert_int_equal(info.pm1a_cnt_port, 0x404);
    assert_int_equal(info.pm_tmr_port, 0x408);
}

/* A FADT shorter than the fields we need is reported and not used; the rest is still parsed. */
static void test_fadt_too_short(void **state)
{
    (void)state;
    struct image im = build_image(2, false);
    put32(P(im.fadt) + 4, 100);
    sdt_fix(im.fadt);
    assert_int_equal(parse(im.rsdp), STATUS_OK);
    assert_reported("FADT too short", NULL);
    assert_reported("no usable FADT", NULL);
    assert_false(info.have_fadt);
    assert_false(info.have_s5); /* no FADT, no DSDT */
    assert_std_madt(true);
    assert_int_equal(info.hpet_phys, HPET_ADDR);
}

/* ---- \_S5 in AML ------------------------------------------------------------------------------ */

/* Runs acpi_find_s5 on an exact-size heap copy (so ASan sees any over-read). */
static bool find_s5(const uint8_t *aml, size_t len, uint8_t *a, uint8_t *b)
{
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len)
        memcpy(copy, aml, len);
    *a = *b = 0xee;
    bool r = acpi_find_s5(copy, len, a, b);
    free(copy);
    return r;
}

#define S5(...) ((const uint8_t[]){ __VA_ARGS__ }), sizeof((const uint8_t[]){ __VA_ARGS__ })

/* The encodings of the package elements: BytePrefix, ZeroOp/OneOp, WordPrefix, DWordPrefix; with and
 * without a root prefix; one-, two- and four-byte PkgLength. */
static void test_s5_encodings(void **state)
{
    (void)state;
    uint8_t a, b;
    assert_true(find_s5(S5(0x08, '_', 'S', '5', '_', 0x12, 0x0a, 0x04, 0x0a, 0x05, 0x0a, 0x07, 0, 0), &a, &b));
    assert_int_equal(a, 5);
    assert_int_equal(b, 7);
    assert_true(find_s5(S5(0x08, '\\', '_', 'S', '5', '_', 0x12, 0x06, 0x04, 0x01, 0x00, 0x00, 0x00), &a, &b));
    assert_int_equal(a, 1);
    assert_int_equal(b, 0);
    assert_true(find_s5(S5(0x08, '_', 'S', '5', '_', 0x12, 0x08, 0x02, 0x0b, 0x03, 0x00, 0x0b, 0x02, 0x01), &a, &b));
    assert_int_equal(a, 3);
    assert_int_equal(b, 2);
    assert_true(find_s5(S5(0x08, '_', 'S', '5', '_', 0x12, 0x0c, 0x02, 0x0c, 0x06, 0, 0, 0, 0x0c, 0x04, 0, 0, 0),
                        &a, &b));
    assert_int_equal(a, 6);
    assert_int_equal(b, 4);
    /* PkgLength with one (0x4n) and three (0xCn) follow-on bytes. */
    assert_true(find_s5(S5(0x08, '_', 'S', '5', '_', 0x12, 0x41, 0x00, 0x04, 0x0a, 0x02, 0x0a, 0x03), &a, &b));
    assert_int_equal(a, 2);
    assert_int_equal(b, 3);
    assert_true(find_s5(S5(0x08, '_', 'S', '5', '_', 0x12, 0xc0, 0, 0, 0, 0x02, 0x01, 0x0a, 0x04), &a, &b));
    assert_int_equal(a, 1);
    assert_int_equal(b, 4);
}

/* A single element gives both values; only the 3-bit SLP_TYP field is kept. */
static void test_s5_single_element_and_mask(void **state)
{
    (void)state;
    uint8_t a, b;
    assert_true(find_s5(S5(0x08, '_', 'S', '5', '_', 0x12, 0x04, 0x01, 0x0a, 0x03), &a, &b));
    assert_int_equal(a, 3);
    assert_int_equal(b, 3);
    assert_true(find_s5(S5(0x08, '_', 'S', '5', '_', 0x12, 0x06, 0x02, 0x0a, 0x0f, 0x0a, 0xfd), &a, &b));
    assert_int_equal(a, 7);
    assert_int_equal(b, 5);
}

/* "_S5_" that is not a Name definition (a reference, a string) or whose package starts with an
 * unsupported element is skipped; a later real definition is found. */
static void test_s5_skips_non_definitions(void **state)
{
    (void)state;
    uint8_t a, b;
    assert_true(find_s5(S5('_', 'S', '5', '_', 0x70, '_', 'S', '5', '_', 0x60, /* reference, Store(_S5_,Local0) */
                           0x0d, 'x', '_', 'S', '5', '_', 0x00,               /* inside a string */
                           0x08, '_', 'S', '5', '_', 0x0a, 0x05,              /* Name(_S5_, 5): not a package */
                           0x08, '_', 'S', '5', '_', 0x12, 0x04, 0x02, 0xff, 0xff, /* OnesOp: unsupported */
                           0x08, '_', 'S', '5', '_', 0x12, 0x06, 0x02, 0x0a, 0x02, 0x0a, 0x01),
                        &a, &b));
    assert_int_equal(a, 2);
    assert_int_equal(b, 1);
    /* Nothing usable at all. */
    assert_false(find_s5(S5(0x70, '_', 'S', '5', '_', 0x08, '_', 'S', '5', '_', 0x12, 0x04, 0x02, 0xff, 0xff),
                         &a, &b));
    assert_false(find_s5(S5(0x08, '_', 'S', '4', '_', 0x12, 0x04, 0x01, 0x0a, 0x04), &a, &b));
    assert_false(find_s5(S5(0x08, '_', 'S', '5'), &a, &b));
    assert_false(acpi_find_s5(NULL, 0, &a, &b));
    assert_false(find_s5(std_aml, 1, &a, &b));
}

/* Every truncation of a definition: false while the first element is incomplete, then the values
 * (the second defaulting to the first while it is incomplete); never a read past the end. */
static void test_s5_truncated(void **state)
{
    (void)state;
    static const uint8_t full[] = { 0x10, 0x08, 0x5c, 0x08, '\\', '_', 'S', '5', '_', 0x12, 0x41, 0x00,
                                    0x04, 0x0b, 0x05, 0x00, 0x0c, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00 };
    const size_t first_done = 16; /* bytes up to and including the WordPrefix element */
    const size_t second_done = 21;
    for (size_t len = 0; len <= sizeof full; len++) {
        uint8_t a, b;
        bool r = find_s5(full, len, &a, &b);
        if (len < first_done) {
            assert_false(r);
        } else {
            assert_true(r);
            assert_int_equal(a, 5);
            assert_int_equal(b, len >= second_done ? 6 : 5);
        }
    }
}

/* Name (^_S5, ...): the parent prefix the acpi.c comment mentions alongside the root prefix. */
static void test_s5_parent_prefix(void **state)
{
    (void)state;
    uint8_t a, b;
    assert_true(find_s5(S5(0x08, '^', '_', 'S', '5', '_', 0x12, 0x06, 0x02, 0x0a, 0x05, 0x0a, 0x05), &a, &b));
    assert_int_equal(a, 5);
}

/* A DSDT without \_S5 is reported; power-off falls back (have_s5 false). */
static void test_dsdt_without_s5(void **state)
{
    (void)state;
    struct image im = build_image(2, false);
    uint64_t d = dsdt_new(std_aml, 20); /* only the scope and part of \_S4 */
    uint8_t *f = P(im.fadt);
    put64(f + F_X_DSDT, d);
    sdt_fix(im.fadt);
    assert_int_equal(parse(im.rsdp), STATUS_OK);
    assert_reported("_S5", NULL);
    assert_false(info.have_s5);
    assert_int_equal(info.dsdt_phys, d);
    assert_non_null(acpi_find(&info, "DSDT"));
    assert_true(info.have_madt);
}

/* A DSDT pointer to a table with another signature, or outside memory: reported, no \_S5. */
static void test_dsdt_bad_pointer(void **state)
{
    (void)state;
    struct image im = build_image(2, false);
    uint8_t *f = P(im.fadt);
    put64(f + F_X_DSDT, im.hpet);
    sdt_fix(im.fadt);
    assert_int_equal(parse(im.rsdp), STATUS_OK);
    assert_reported("DSDT", "wrong signature");
    assert_false(info.have_s5);
    assert_null(acpi_find(&info, "DSDT"));

    put64(f + F_X_DSDT, MEM_BASE + MEM_CAP + 0x1000);
    sdt_fix(im.fadt);
    assert_int_equal(parse(im.rsdp), STATUS_OK);
    assert_reported("DSDT", "not in readable memory");
    assert_false(info.have_s5);
    assert_true(info.have_fadt);
}

/* A DSDT with a wrong checksum is reported (the header: "every table's ... checksum"). */
static void test_dsdt_bad_checksum_reported(void **state)
{
    (void)state;
    struct image im = build_image(2, false);
    P(im.dsdt)[9] ^= 0x55;
    assert_int_equal(parse(im.rsdp), STATUS_OK);
    const struct acpi_table_info *t = acpi_find(&info, "DSDT");
    assert_non_null(t);
    assert_false(t->checksum_ok);
    assert_reported("DSDT", "checksum");
}

/* ---- bad input ---------------------------------------------------------------------------------- */

/* No RSDP address: STATUS_NOT_FOUND. An unreadable, misnamed or mis-summed RSDP: STATUS_BAD_DATA.
 * All reported. */
static void test_rsdp_errors(void **state)
{
    (void)state;
    struct image im = build_image(2, false);
    assert_int_equal(parse(0), STATUS_NOT_FOUND);
    assert_reported("RSDP", NULL);
    assert_int_equal(parse(MEM_BASE + MEM_CAP), STATUS_BAD_DATA);
    assert_reported("RSDP", NULL);
    assert_int_equal(parse(MEM_BASE - 8), STATUS_BAD_DATA);
    assert_reported("RSDP", NULL);
    assert_int_equal(parse(im.rsdp + 1), STATUS_BAD_DATA);
    assert_reported("RSDP", "signature");
    P(im.rsdp)[8] ^= 0x20;
    assert_int_equal(parse(im.rsdp), STATUS_BAD_DATA);
    assert_reported("RSDP", "checksum");
    P(im.rsdp)[8] ^= 0x20;
    P(im.rsdp)[0] = 'r';
    assert_int_equal(parse(im.rsdp), STATUS_BAD_DATA);
    assert_reported("RSDP", NULL);
    assert_int_equal(info.table_count, 0);
    assert_false(info.have_madt);
}

/* An unusable root table (outside memory, wrong checksum or signature, implausible or unmappable
 * length) is STATUS_BAD_DATA, reported. */
static void test_root_errors(void **state)
{
    (void)state;
    struct image im = build_image(2, false);
    rsdp_write(im.rsdp, 2, (uint32_t)im.rsdt, MEM_BASE + MEM_CAP + 64);
    assert_int_equal(parse(im.rsdp), STATUS_BAD_DATA);
    assert_reported("XSDT", "not in readable memory");

    rsdp_write(im.rsdp, 2, (uint32_t)im.rsdt, im.xsdt);
    P(im.xsdt)[HDR] ^= 1;
    assert_int_equal(parse(im.rsdp), STATUS_BAD_DATA);
    assert_reported("XSDT", "checksum");
    P(im.xsdt)[HDR] ^= 1;

    rsdp_write(im.rsdp, 2, (uint32_t)im.rsdt, im.rsdt); /* an RSDT where the XSDT should be */
    assert_int_equal(parse(im.rsdp), STATUS_BAD_DATA);
    assert_reported("XSDT", "signature");

    static const uint32_t bad_len[] = { 0, 35, 0x7fffffff, 0xffffffff };
    for (unsigned i = 0; i < 4; i++) {
        rsdp_write(im.rsdp, 2, (uint32_t)im.rsdt, im.xsdt);
        put32(P(im.xsdt) + 4, bad_len[i]); /* rejected before any checksum over it */
        assert_int_equal(parse(im.rsdp), STATUS_BAD_DATA);
        assert_reported("XSDT", "implausible length");
    }
    /* Plausible, but running past the end of memory. */
    put32(P(im.xsdt) + 4, 1u << 20);
    assert_int_equal(parse(im.rsdp), STATUS_BAD_DATA);
    assert_reported("XSDT", "not in readable memory");
    assert_int_equal(info.table_count, 0);
}

/* A table with a wrong checksum is listed (checksum_ok false), reported and not used; the other tables
 * are still parsed. */
static void test_table_bad_checksum(void **state)
{
    (void)state;
    struct image im = build_image(2, false);
    P(im.madt)[50] ^= 0x10;
    assert_int_equal(parse(im.rsdp), STATUS_OK);
    assert_reported("APIC", "checksum");
    assert_reported("no usable MADT", NULL);
    const struct acpi_table_info *t = acpi_find(&info, "APIC");
    assert_non_null(t);
    assert_false(t->checksum_ok);
    assert_false(info.have_madt);
    assert_int_equal(info.cpu_count, 0);
    assert_std_fadt(&im);
    assert_int_equal(info.hpet_phys, HPET_ADDR);
}

/* Root entries pointing outside memory, at 0, at a table running past the end of memory, or at a
 * header with an implausible length: each reported and skipped; the valid tables are parsed. */
static void test_table_pointer_errors(void **state)
{
    (void)state;
    struct image im = build_image(2, false);
    uint64_t at_end = MEM_BASE + MEM_CAP - HDR; /* header readable, body not */
    memcpy(P(at_end), "SSDT", 4);
    put32(P(at_end) + 4, 4096);
    uint64_t tiny = sdt_new("SSDT", HDR, 1);
    put32(P(tiny) + 4, 20); /* length shorter than a header */
    sdt_fix(tiny);
    uint64_t huge = sdt_new("SSDT", HDR, 1);
    put32(P(huge) + 4, 0x80000000u);
    uint64_t entries[] = { MEM_BASE + MEM_CAP + 0x10000, im.fadt, 0, im.madt, at_end, tiny, huge, im.hpet,
                           0xffffffffffffffffull };
    set_xsdt(&im, entries, sizeof entries / sizeof entries[0]);
    assert_int_equal(parse(im.rsdp), STATUS_OK);
    assert_reported("not in readable memory", NULL);
    assert_reported("null address", NULL);
    assert_reported("4096 bytes not in readable memory", NULL);
    assert_reported("implausible length 20", NULL);
    assert_reported("implausible length 2147483648", NULL);
    assert_int_equal(info.table_count, 4);
    assert_std_madt(true);
    assert_std_fadt(&im);
    assert_int_equal(info.hpet_phys, HPET_ADDR);
}

/* Builds a MADT from the raw entry bytes, lists it with the FADT, and parses. */
static status_t parse_with_madt(struct image *im, const uint8_t *entries, size_t n)
{
    struct madt b = madt_begin((uint32_t)(44 + n), LAPIC_ADDR, 0);
    madt_put(&b, entries, n);
    im->madt = madt_end(&b);
    uint64_t list[] = { im->fadt, im->madt };
    set_xsdt(im, list, 2);
    return parse(im->rsdp);
}

/* A MADT entry of length 0 (or 1) would loop forever: reported, the entries before it kept, the rest
 * of the MADT skipped. */
static void test_madt_entry_length_zero(void **state)
{
    (void)state;
    struct image im = build_image(2, false);
    for (uint8_t bad = 0; bad < 2; bad++) {
        const uint8_t e[] = { 0, 8, 0, 1, 1, 0, 0, 0,  /* LAPIC id 1 */
                              0, bad, 0, 0, 0, 0, 0, 0, /* length 0 / 1 */
                              0, 8, 1, 2, 1, 0, 0, 0 }; /* LAPIC id 2: after the bad entry */
        assert_int_equal(parse_with_madt(&im, e, sizeof e), STATUS_OK);
        assert_reported("MADT", "bad length");
        assert_true(info.have_madt);
        assert_int_equal(info.cpu_count, 1);
        assert_int_equal(info.cpus[0].apic_id, 1);
        assert_true(info.have_fadt);
    }
}

/* A MADT entry whose length runs past the end of the table: reported, earlier entries kept. */
static void test_madt_entry_past_end(void **state)
{
    (void)state;
    struct image im = build_image(2, false);
    const uint8_t e[] = { 1, 12, 3, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0, /* IOAPIC */
                          9, 16, 0, 0, 7, 0, 0, 0, 1, 0, 0 };      /* x2APIC claiming 16, 11 left */
    assert_int_equal(parse_with_madt(&im, e, sizeof e), STATUS_OK);
    assert_reported("MADT", "bad length");
    assert_int_equal(info.ioapic_count, 1);
    assert_int_equal(info.ioapics[0].phys, 0xfec00000u);
    assert_int_equal(info.cpu_count, 0);

    /* A single stray byte at the end: a truncated entry header. */
    const uint8_t f[] = { 0, 8, 0, 5, 1, 0, 0, 0, 0 };
    assert_int_equal(parse_with_madt(&im, f, sizeof f), STATUS_OK);
    assert_reported("MADT", "truncated");
    assert_int_equal(info.cpu_count, 1);
    assert_int_equal(info.cpus[0].apic_id, 5);
}

/* Entries shorter than their type needs are reported and skipped; later entries still count. */
static void test_madt_short_entries(void **state)
{
    (void)state;
    struct image im = build_image(2, false);
    const uint8_t e[] = {
        0, 6, 0, 1, 1, 0,                         /* LAPIC, 6 bytes */
        9, 12, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0,      /* x2APIC, 12 bytes */
        1, 8, 1, 0, 0, 0, 0xc0, 0xfe,             /* IOAPIC, 8 bytes */
        2, 8, 0, 0, 2, 0, 0, 0,                   /* ISO, 8 bytes */
        5, 8, 0, 0, 0, 0, 0xe0, 0xfe,             /* LAPIC address override, 8 bytes */
        0, 8, 9, 9, 1, 0, 0, 0,                   /* a good LAPIC, id 9 */
        0, 10, 10, 10, 1, 0, 0, 0, 0xaa, 0xbb,    /* a longer-than-needed LAPIC: fine */
    };
    assert_int_equal(parse_with_madt(&im, e, sizeof e), STATUS_OK);
    assert_reported("LAPIC entry too short", NULL);
    assert_reported("x2APIC entry too short", NULL);
    assert_reported("IOAPIC entry too short", NULL);
    assert_reported("interrupt override entry too short", NULL);
    assert_reported("address override too short", NULL);
    assert_int_equal(info.cpu_count, 2);
    assert_int_equal(info.cpus[0].apic_id, 9);
    assert_int_equal(info.cpus[1].apic_id, 10);
    assert_int_equal(info.ioapic_count, 0);
    assert_int_equal(info.override_count, 0);
    assert_int_equal(info.lapic_phys, LAPIC_ADDR);
}

/* A duplicate APIC id (LAPIC or x2APIC) is reported; the first entry is kept. */
static void test_madt_duplicate_apic_ids(void **state)
{
    (void)state;
    struct image im = build_image(2, false);
    const uint8_t e[] = {
        0, 8, 0, 1, 1, 0, 0, 0,                    /* uid 0, id 1 */
        0, 8, 1, 2, 1, 0, 0, 0,                    /* uid 1, id 2 */
        0, 8, 2, 1, 1, 0, 0, 0,                    /* uid 2, id 1 again */
        9, 16, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, /* x2APIC id 2 again */
        0, 8, 4, 1, 0, 0, 0, 0,                    /* id 1 but not present: ignored silently */
    };
    assert_int_equal(parse_with_madt(&im, e, sizeof e), STATUS_OK);
    assert_int_equal(info.cpu_count, 2);
    assert_int_equal(info.cpus[0].apic_id, 1);
    assert_int_equal(info.cpus[0].uid, 0);
    assert_int_equal(info.cpus[1].apic_id, 2);
    assert_int_equal(info.cpus[1].uid, 1);
    assert_int_equal(reports_matching(&rep, "APIC id 1 ", "twice"), 1);
    assert_int_equal(reports_matching(&rep, "APIC id 2 ", "twice"), 1);
}

/* More than ACPI_MAX_CPUS usable CPUs: the first ACPI_MAX_CPUS are kept, the rest counted as dropped
 * and reported. Entries that are not present do not count. */
static void test_madt_too_many_cpus(void **state)
{
    (void)state;
    struct image im = build_image(2, false);
    enum { N = ACPI_MAX_CPUS + 44 };
    size_t n = 0;
    uint8_t *e = calloc(N + 10, 16);
    assert_non_null(e);
    for (uint32_t i = 0; i < N + 10; i++) {
        uint8_t *x = e + n;
        x[0] = 9;
        x[1] = 16;
        put32(x + 4, 1000 + i);
        put32(x + 8, i % 30 == 29 ? 0 : 1); /* every 30th not present */
        put32(x + 12, i);
        n += 16;
    }
    unsigned present = 0;
    for (uint32_t i = 0; i < N + 10; i++)
        present += i % 30 != 29;
    assert_int_equal(parse_with_madt(&im, e, n), STATUS_OK);
    free(e);
    assert_int_equal(info.cpu_count, ACPI_MAX_CPUS);
    assert_int_equal(info.cpus_dropped, present - ACPI_MAX_CPUS);
    char num[16];
    snprintf(num, sizeof num, "%u more", present - ACPI_MAX_CPUS);
    assert_reported(num, NULL);
    /* The kept ones are the first present entries, in order. */
    assert_int_equal(info.cpus[0].apic_id, 1000);
    assert_int_equal(info.cpus[ACPI_MAX_CPUS - 1].x2apic_entry, true);
    for (unsigned i = 1; i < ACPI_MAX_CPUS; i++)
        assert_true(info.cpus[i].apic_id > info.cpus[i - 1].apic_id);
}

/* More IOAPICs or interrupt overrides than the arrays hold: kept up to the limit, reported. */
static void test_madt_too_many_ioapics_and_overrides(void **state)
{
    (void)state;
    struct image im = build_image(2, false);
    uint8_t e[(ACPI_MAX_IOAPICS + 2) * 12 + (ACPI_MAX_OVERRIDES + 3) * 10];
    size_t n = 0;
    for (unsigned i = 0; i < ACPI_MAX_IOAPICS + 2; i++) {
        uint8_t x[12] = { 1, 12, (uint8_t)i };
        put32(x + 4, IOAPIC_ADDR + 0x1000 * i);
        put32(x + 8, 24 * i);
        memcpy(e + n, x, 12);
        n += 12;
    }
    for (unsigned i = 0; i < ACPI_MAX_OVERRIDES + 3; i++) {
        uint8_t x[10] = { 2, 10, 0, (uint8_t)i };
        put32(x + 4, 100 + i);
        memcpy(e + n, x, 10);
        n += 10;
    }
    assert_int_equal(parse_with_madt(&im, e, n), STATUS_OK);
    assert_int_equal(info.ioapic_count, ACPI_MAX_IOAPICS);
    assert_int_equal(info.ioapics[ACPI_MAX_IOAPICS - 1].gsi_base, 24 * (ACPI_MAX_IOAPICS - 1));
    assert_int_equal(info.override_count, ACPI_MAX_OVERRIDES);
    assert_int_equal(info.overrides[ACPI_MAX_OVERRIDES - 1].gsi, 100 + ACPI_MAX_OVERRIDES - 1);
    assert_reported("IOAPICs", NULL);
    assert_reported("interrupt overrides", NULL);
}

/* A MADT shorter than its fixed part is reported and not used. */
static void test_madt_too_short(void **state)
{
    (void)state;
    struct image im = build_image(2, false);
    put32(P(im.madt) + 4, 40);
    sdt_fix(im.madt);
    assert_int_equal(parse(im.rsdp), STATUS_OK);
    assert_reported("MADT too short", NULL);
    assert_false(info.have_madt);
    assert_int_equal(info.cpu_count, 0);
    assert_true(info.have_fadt);
}

/* An HPET table too short to hold the base address is not used. */
static void test_hpet_too_short(void **state)
{
    (void)state;
    struct image im = build_image(2, false);
    uint64_t h = hpet_new(HPET_ADDR, 50);
    uint64_t list[] = { im.fadt, im.madt, h };
    set_xsdt(&im, list, 3);
    assert_int_equal(parse(im.rsdp), STATUS_OK);
    assert_int_equal(info.hpet_phys, 0);
    assert_non_null(acpi_find(&info, "HPET"));
}

/* More than ACPI_MAX_TABLES tables: the list stops at the limit (reported), and \_S5 is still found
 * through the FADT even though the DSDT no longer fits in the list. */
static void test_too_many_tables(void **state)
{
    (void)state;
    struct image im = build_image(2, false);
    uint64_t ssdt = sdt_new("SSDT", HDR + 4, 2);
    sdt_fix(ssdt);
    uint64_t list[ACPI_MAX_TABLES + 5];
    list[0] = im.fadt;
    for (unsigned i = 1; i < ACPI_MAX_TABLES + 5; i++)
        list[i] = ssdt;
    set_xsdt(&im, list, ACPI_MAX_TABLES + 5);
    assert_int_equal(parse(im.rsdp), STATUS_OK);
    assert_int_equal(info.table_count, ACPI_MAX_TABLES);
    assert_reported("more than", "tables");
    assert_true(info.have_fadt);
    assert_true(info.have_s5);
    assert_null(acpi_find(&info, "DSDT"));
}

/* Unprintable signature bytes are shown as '?'. */
static void test_unprintable_signature(void **state)
{
    (void)state;
    struct image im = build_image(2, false);
    uint64_t t = sdt_new("A\x01\xff" "B", HDR, 1);
    sdt_fix(t);
    uint64_t list[] = { t, im.fadt };
    set_xsdt(&im, list, 2);
    assert_int_equal(parse(im.rsdp), STATUS_OK);
    assert_string_equal(info.tables[0].signature, "A??B");
    assert_true(info.tables[0].checksum_ok);
}

/* No MADT and no FADT: both absences are reported, parsing still succeeds. */
static void test_no_madt_no_fadt(void **state)
{
    (void)state;
    struct image im = build_image(2, false);
    uint64_t list[] = { im.hpet };
    set_xsdt(&im, list, 1);
    assert_int_equal(parse(im.rsdp), STATUS_OK);
    assert_reported("no usable MADT", NULL);
    assert_reported("no usable FADT", NULL);
    assert_int_equal(info.table_count, 1);
    assert_int_equal(info.hpet_phys, HPET_ADDR);
    assert_false(info.have_s5);
}

/* The sweeps below: the standard image, parsed once as it is; each variant's result is compared with
 * that one (sweep_same). */
static struct acpi_info sweep_full;

static struct image sweep_begin(void)
{
    struct image im = build_image(2, false);
    assert_int_equal(parse(im.rsdp), STATUS_OK);
    sweep_full = info;
    return im;
}

/* Whether the last parse, which returned s, gave the full image's result. */
static bool sweep_same(status_t s)
{
    return s == STATUS_OK && memcmp(&info, &sweep_full, sizeof info) == 0;
}

/* Memory cut short at every byte of the image: never a crash or an over-read, and whatever is lost
 * compared with the full image is reported. */
static void test_truncated_memory_sweep(void **state)
{
    (void)state;
    struct image im = sweep_begin();
    size_t used = M->used;
    for (size_t limit = 0; limit <= used; limit++) {
        M->limit = limit;
        bool same = sweep_same(parse(im.rsdp));
        if (!same && rep.count == 0)
            fail_msg("memory cut at %zu bytes: result changed without a report", limit);
        if (limit < used)
            assert_false(same); /* the DSDT is last: cutting anything loses it */
    }
}

/* Every single-byte corruption of the image: never a crash or an over-read; a change in the result
 * comes with a report (checksums catch corrupted tables, the DSDT's included). */
static void test_corrupted_byte_sweep(void **state)
{
    (void)state;
    struct image im = sweep_begin();
    size_t used = M->used;
    for (size_t off = 0; off < used; off++) {
        for (int pass = 0; pass < 2; pass++) {
            uint8_t x = pass ? 0xff : 0x01;
            M->buf[off] ^= x;
            status_t s = parse(im.rsdp);
            M->buf[off] ^= x;
            bool same = sweep_same(s);
            if (!same && rep.count == 0)
                fail_msg("byte %zu ^ %#x changed the result without a report", off, x);
        }
    }
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_valid_v2_xsdt),
        T(test_valid_v0_rsdt),
        T(test_rsdp_v2_falls_back_to_rsdt),
        T(test_rsdp_v2_at_end_of_memory),
        T(test_fadt_hw_reduced),
        T(test_fadt_extended_fields),
        T(test_fadt_short_ignores_following_bytes),
        T(test_fadt_port_out_of_range),
        T(test_fadt_too_short),
        T(test_s5_encodings),
        T(test_s5_single_element_and_mask),
        T(test_s5_skips_non_definitions),
        T(test_s5_truncated),
        T(test_s5_parent_prefix),
        T(test_dsdt_without_s5),
        T(test_dsdt_bad_pointer),
        T(test_dsdt_bad_checksum_reported),
        T(test_rsdp_errors),
        T(test_root_errors),
        T(test_table_bad_checksum),
        T(test_table_pointer_errors),
        T(test_madt_entry_length_zero),
        T(test_madt_entry_past_end),
        T(test_madt_short_entries),
        T(test_madt_duplicate_apic_ids),
        T(test_madt_too_many_cpus),
        T(test_madt_too_many_ioapics_and_overrides),
        T(test_madt_too_short),
        T(test_hpet_too_short),
        T(test_too_many_tables),
        T(test_unprintable_signature),
        T(test_no_madt_no_fadt),
        T(test_truncated_memory_sweep),
        T(test_corrupted_byte_sweep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
