# lib/net/net.mk: hosted tests, fuzzer and benchmark of the IPv4 stack (lib/net/). Included by the
# top-level Makefile (after sim/sim.mk, for HVSIM_TSAN_CFLAGS). Guest images that use the stack
# compile $(NET_SRCS) with KCFLAGS like their own sources (the stack needs kernel/string.c and
# kernel/fmt.c, which every kernel has).
#   $(BUILD)/test/test_net        cmocka tests incl. sweeps and a 3-thread test, ASan/UBSan (HOST_CFLAGS)
#   $(BUILD)/test/test_net_tsan   the same under ThreadSanitizer
#   $(BUILD)/fuzz/fuzz_net        libFuzzer harness: frames into interfaces in several states
#   $(BUILD)/bench/bench_net      instructions per echoed UDP datagram (-O2, callgrind)
#   make bench-net                builds and runs the benchmark (also part of `make bench`)
NET_SRCS := lib/net/net.c lib/net/arp.c lib/net/dhcp.c lib/net/csum.c lib/net/util.c
# The stack on a network device (kernel/netdev.h), for guest images and the hosted system tests:
# not portable (kernel threads, spinlocks, the clock), so not in the stack's own tests.
NET_ATTACH_SRCS := lib/net/net_attach.c
NET_HDRS := lib/net/net.h lib/net/net_wire.h lib/net/net_priv.h kernel/status.h kernel/string.h kernel/fmt.h
NET_HOST_SRCS := $(NET_SRCS) kernel/fmt.c kernel/status.c
NET_TEST_DEPS := test/unit/test_net.c $(NET_HOST_SRCS) $(NET_HDRS) test/lib/test_util.h

$(BUILD)/test/test_net: $(NET_TEST_DEPS) | deps
	@mkdir -p $(@D)
	$(CC) $(HOST_CFLAGS) -pthread $< $(NET_HOST_SRCS) -o $@ -lcmocka

$(BUILD)/test/test_net_tsan: $(NET_TEST_DEPS) | deps
	@mkdir -p $(@D)
	$(CC) $(HVSIM_TSAN_CFLAGS) -pthread $< $(NET_HOST_SRCS) -o $@ -lcmocka

$(BUILD)/fuzz/fuzz_net: test/fuzz/fuzz_net.c test/fuzz/fuzz_input.h $(NET_HOST_SRCS) $(NET_HDRS) | deps
	@mkdir -p $(@D)
	clang -std=gnu11 -g -O1 -DHOSTED -I. -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
		$< $(NET_HOST_SRCS) -o $@

$(BUILD)/bench/bench_net: test/bench/bench_net.c $(NET_HOST_SRCS) $(NET_HDRS) | deps
	@mkdir -p $(@D)
	$(CC) -std=gnu11 -O2 -g -Wall -Wextra -Werror -DHOSTED -I. $< $(NET_HOST_SRCS) -o $@

.PHONY: bench-net
bench-net: $(BUILD)/bench/bench_net
	$(BUILD)/bench/bench_net

BENCHES += bench-net

# `make unit` also builds the TSan variant (test_net itself is in UNIT_TESTS by its name).
unit: $(BUILD)/test/test_net_tsan
