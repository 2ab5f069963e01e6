# test/dsim/dsim.mk: the deterministic simulation platform (test/dsim/) and what runs on it.
# Included at the end of the top-level Makefile (after sim/sim.mk, test/hosted/hosted.mk and
# kmcl/kmcl.mk, whose source lists it uses).
#
#   $(BUILD)/test/sim_test    the seeded system simulation (ASan/UBSan): sim_test --seeds A:B, --seed N
#   $(BUILD)/test/test_dsim   the platform's own tests (cmocka)
#   $(BUILD)/test/fuzz_host_replay  fuzz_host without libFuzzer (gcc): replays files and directories
#   $(BUILD)/fuzz/fuzz_host   the stateful host fuzzer (libFuzzer, ASan/UBSan)
#   make sim-test             runs DSIM_SEEDS seeds (default 0:3000), as `make test` does
#   make sim-long             runs SEEDS seeds (default 100000) from SEED0 (default 1000000)
#
# Every source is compiled with -include test/dsim/dsim_platform.h (virtual time, hvsim's threads as
# scheduler contexts) and test/dsim/include first on the include path (its arch-x86_64/irql.h). The
# platform replaces test/hosted/hosted.c; the guest and hvsim sources are the same files.
DSIM_PLATFORM_SRCS := test/dsim/dsim.c kernel/dpc.c kernel/fmt.c kernel/status.c
DSIM_GUEST_SRCS := hv/hv.c hv/synic.c hv/reftime.c hv/stimer.c $(VMBUS_GUEST_SRCS) kmcl/channel.c drivers/netvsc/netvsc.c
DSIM_SRCS = $(sort $(DSIM_PLATFORM_SRCS) $(DSIM_GUEST_SRCS) $(HVSIM_LIB_SRCS) $(VMBUS_PROTO_SRCS))
DSIM_HDRS = $(wildcard test/dsim/*.h test/dsim/include/*/*.h) $(HOSTED_HDRS) $(wildcard kmcl/*.h kmcl/core/*.h sim/*.h sim/*/*.h)
DSIM_CFLAGS := -Itest/dsim/include -include test/dsim/dsim_platform.h -pthread

$(BUILD)/test/sim_test: test/dsim/sim_test.c test/dsim/scenario.c $(DSIM_SRCS) $(DSIM_HDRS) | deps
	@mkdir -p $(@D)
	$(CC) $(DSIM_CFLAGS) $(HOST_CFLAGS) test/dsim/sim_test.c test/dsim/scenario.c $(DSIM_SRCS) -o $@

# The platform's own tests (cmocka; picked up by test/run_tests.py's unit run as test_*).
$(BUILD)/test/test_dsim: test/dsim/test_dsim.c $(DSIM_SRCS) $(DSIM_HDRS) | deps
	@mkdir -p $(@D)
	$(CC) $(DSIM_CFLAGS) $(HOST_CFLAGS) $< $(DSIM_SRCS) -o $@ -lcmocka

unit: $(BUILD)/test/test_dsim

DSIM_SEEDS ?= 0:3000
.PHONY: sim-test sim-long
sim-test: $(BUILD)/test/sim_test
	$(BUILD)/test/sim_test --seeds $(DSIM_SEEDS)

SEEDS ?= 100000
SEED0 ?= 1000000
sim-long: $(BUILD)/test/sim_test
	$(BUILD)/test/sim_test --seeds $(SEED0):$$(( $(SEED0) + $(SEEDS) )) --max-failures 50

unit: $(BUILD)/test/sim_test

# The stateful host fuzzer on the same platform (test/fuzz/fuzz_host.c; its seeds: test/fuzz/corpus/host).
# clang without -Werror, as the other harnesses (its warnings on the shared sources differ from
# gcc's), and with libatomic (clang calls it for the monitor page's packed atomics).
# An explicit rule: the generic $(BUILD)/fuzz/fuzz_% rule of the top Makefile links only PORTABLE_SRCS.
$(BUILD)/fuzz/fuzz_host: test/fuzz/fuzz_host.c test/fuzz/fuzz_input.h $(DSIM_SRCS) $(DSIM_HDRS) | deps
	@mkdir -p $(@D)
	clang $(DSIM_CFLAGS) -std=gnu11 -g -O1 -DHOSTED -I. -fsanitize=fuzzer,address,undefined \
		-fno-sanitize-recover=all $< $(DSIM_SRCS) -o $@ -latomic

# The same harness without libFuzzer (gcc, ASan/UBSan): replays files or directories of inputs.
$(BUILD)/test/fuzz_host_replay: test/fuzz/fuzz_host.c test/fuzz/standalone_main.c test/fuzz/fuzz_input.h $(DSIM_SRCS) \
		$(DSIM_HDRS) | deps
	@mkdir -p $(@D)
	$(CC) $(DSIM_CFLAGS) $(HOST_CFLAGS) test/fuzz/fuzz_host.c test/fuzz/standalone_main.c $(DSIM_SRCS) -o $@
