# test/dsim/tests.mk: what runs on the deterministic platform (tools/hosted.mk for the macros).
#   build/test/sim_test          the seeded system simulation: sim_test --seeds A:B, --seed N
#   build/test/test_dsim         the platform's own tests (cmocka)
#   build/fuzz/fuzz_host         the stateful host fuzzer (libFuzzer; seeds in test/fuzz/corpus/host)
#   build/test/fuzz_host_replay  the same harness without libFuzzer: replays files and directories
#   make sim-test                runs DSIM_SEEDS seeds (default 0:3000), as `make test` does
#   make sim-long                runs SEEDS seeds (default 100000) from SEED0 (default 1000000)
DSIM_GUEST := hv/vmbus kmcl drivers/netvsc test/dsim
$(call hosted,$(BUILD)/test/sim_test,asan,test/dsim/sim_test.c,$(DSIM_GUEST),test/dsim/scenario.c)
$(call unit_test,test_dsim,test/dsim/test_dsim.c,$(DSIM_GUEST))
$(call fuzzer,fuzz_host,test/fuzz/fuzz_host.c,$(DSIM_GUEST))
$(call hosted,$(BUILD)/test/fuzz_host_replay,asan,test/fuzz/fuzz_host.c,$(DSIM_GUEST),test/fuzz/standalone_main.c)
unit: $(BUILD)/test/sim_test $(BUILD)/test/fuzz_host_replay

DSIM_SEEDS ?= 0:3000
SEEDS ?= 100000
SEED0 ?= 1000000
.PHONY: sim-test sim-long
sim-test: $(BUILD)/test/sim_test
	$(BUILD)/test/sim_test --seeds $(DSIM_SEEDS)
sim-long: $(BUILD)/test/sim_test
	$(BUILD)/test/sim_test --seeds $(SEED0):$$(( $(SEED0) + $(SEEDS) )) --max-failures 50
