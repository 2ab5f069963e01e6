/*
 * acpi_checksum: how the ACPI test and fuzzer make a table's (or the RSDP's) checksum right after
 * writing its bytes: ACPI 6.5 §5.2.5.3 and §5.2.6, the bytes of the covered range sum to 0 mod 256.
 * Written from the specification, not from kernel/acpi.c, so the two are checked against each other.
 * Shared by test/unit/test_acpi.c and test/fuzz/fuzz_acpi.c (header only).
 */
#ifndef TEST_LIB_ACPI_CHECKSUM_H
#define TEST_LIB_ACPI_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

/* Sets p[at], the checksum byte of the len bytes at p, so that they sum to 0 (at < len). */
static inline void acpi_fix_checksum(uint8_t *p, size_t len, size_t at)
{
    p[at] = 0;
    uint8_t s = 0;
    for (size_t i = 0; i < len; i++)
        s = (uint8_t)(s + p[i]);
    p[at] = (uint8_t)-s;
}

#endif
