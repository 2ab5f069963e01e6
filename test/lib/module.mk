# test/lib: code shared by the tests: the fake guest of the host-component tests (fake_guest.c, on
# hvsim) and headers only: test_util.h, bytes.h, and what a test and its fuzzer share (acpi_checksum.h,
# fmt_libc.h, simdb_events.h), which the fuzzers include without linking this module.
MODULES += test/lib
SRCS.test/lib := $(wildcard test/lib/*.c)
DEPS.test/lib := sim
