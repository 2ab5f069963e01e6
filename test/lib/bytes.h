/*
 * bytes: little-endian fields at any alignment in the byte buffers the tests and fuzzers build and
 * look at (wire messages, ACPI tables). Header only; needs nothing but the C library, so the fuzz
 * harnesses include it too.
 */
#ifndef TEST_LIB_BYTES_H
#define TEST_LIB_BYTES_H

#include <stdint.h>
#include <string.h>

static inline void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static inline uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

#endif
