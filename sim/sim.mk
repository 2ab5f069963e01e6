# sim/sim.mk: builds hvsim (the simulated Hyper-V root partition), its unit tests and the doorbell
# fuzzer. Included by the top-level Makefile, which defines BUILD, CC, HOST_CFLAGS and `deps`.
#
#   $(BUILD)/sim/hvsim              the program QEMU's doorbell socket talks to
#   $(BUILD)/test/test_hvsim        cmocka tests, ASan/UBSan (HOST_CFLAGS)
#   $(BUILD)/test/test_hvsim_tsan   the same tests under ThreadSanitizer
#   $(BUILD)/fuzz/fuzz_simdb        libFuzzer harness for the doorbell byte parser

HVSIM_LIB_SRCS := sim/hvsim.c sim/synic.c sim/hypercall.c sim/clock.c sim/stimer.c sim/doorbell.c
HVSIM_HDRS := sim/hvsim.h sim/hvsim_internal.h sim/doorbell.h hv/hvdefs.h hv/simdb.h
HVSIM_CFLAGS := -std=gnu11 -O2 -g -Wall -Wextra -Werror -I. -pthread
HVSIM_TSAN_CFLAGS := -std=gnu11 -g -O1 -Wall -Wextra -Werror -DHOSTED -I. -fsanitize=thread -fno-omit-frame-pointer

$(BUILD)/sim/hvsim: $(HVSIM_LIB_SRCS) sim/hvsim_main.c $(HVSIM_HDRS) | deps
	@mkdir -p $(@D)
	$(CC) $(HVSIM_CFLAGS) $(HVSIM_LIB_SRCS) sim/hvsim_main.c -o $@

$(BUILD)/test/test_hvsim: test/unit/test_hvsim.c $(HVSIM_LIB_SRCS) $(HVSIM_HDRS) test/unit/test_util.h | deps
	@mkdir -p $(@D)
	$(CC) $(HOST_CFLAGS) -pthread $< $(HVSIM_LIB_SRCS) -o $@ -lcmocka

$(BUILD)/test/test_hvsim_tsan: test/unit/test_hvsim.c $(HVSIM_LIB_SRCS) $(HVSIM_HDRS) test/unit/test_util.h | deps
	@mkdir -p $(@D)
	$(CC) $(HVSIM_TSAN_CFLAGS) -pthread $< $(HVSIM_LIB_SRCS) -o $@ -lcmocka

$(BUILD)/fuzz/fuzz_simdb: test/fuzz/fuzz_simdb.c $(HVSIM_LIB_SRCS) $(HVSIM_HDRS) | deps
	@mkdir -p $(@D)
	clang -std=gnu11 -g -O1 -DHOSTED -I. -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -pthread \
		$< $(HVSIM_LIB_SRCS) -o $@

# `make unit` also builds the TSan variant (test_hvsim itself is in UNIT_TESTS by its name).
unit: $(BUILD)/test/test_hvsim_tsan
