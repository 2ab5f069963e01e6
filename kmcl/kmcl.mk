# kmcl/kmcl.mk: hosted tests, fuzzers and benchmarks of the channel library (kmcl/). Included by the
# top-level Makefile after sim/sim.mk and test/hosted/hosted.mk. The guest build compiles kmcl/*.c
# into the kernel (KERNEL_C in the Makefile).

# ---- the ring, packet and transaction layer (kmcl/ring*.h, packet, xact) ----
#   $(BUILD)/test/test_ring        cmocka tests incl. a two-thread stress test, ASan/UBSan (HOST_CFLAGS)
#   $(BUILD)/test/test_ring_tsan   the same under ThreadSanitizer
#   $(BUILD)/fuzz/fuzz_ring        libFuzzer harness: a hostile inbound ring drained with every parser
#   $(BUILD)/bench/bench_ring      throughput, latency and instructions per packet (-O2, no sanitizers)
#   make bench-kmcl                builds and runs the benchmark (also part of `make bench`)
KMCL_RING_SRCS := kmcl/core/ring.c kmcl/core/packet.c kmcl/core/xact.c kmcl/core/endpoint.c
KMCL_RING_HDRS := kmcl/core/ring_format.h kmcl/core/ring.h kmcl/core/packet.h kmcl/core/xact.h kmcl/core/endpoint.h \
	kernel/status.h kernel/string.h kernel/list.h
KMCL_RING_TEST_DEPS := test/unit/test_ring.c $(KMCL_RING_SRCS) $(KMCL_RING_HDRS) kernel/status.c test/lib/test_util.h

$(BUILD)/test/test_ring: $(KMCL_RING_TEST_DEPS) | deps
	@mkdir -p $(@D)
	$(CC) $(HOST_CFLAGS) -pthread $< $(KMCL_RING_SRCS) kernel/status.c -o $@ -lcmocka

$(BUILD)/test/test_ring_tsan: $(KMCL_RING_TEST_DEPS) | deps
	@mkdir -p $(@D)
	$(CC) $(HVSIM_TSAN_CFLAGS) -pthread $< $(KMCL_RING_SRCS) kernel/status.c -o $@ -lcmocka

$(BUILD)/fuzz/fuzz_ring: test/fuzz/fuzz_ring.c $(KMCL_RING_SRCS) $(KMCL_RING_HDRS) kernel/status.c | deps
	@mkdir -p $(@D)
	clang -std=gnu11 -g -O1 -DHOSTED -I. -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
		$< $(KMCL_RING_SRCS) kernel/status.c -o $@

$(BUILD)/bench/bench_ring: test/bench/bench_ring.c $(KMCL_RING_SRCS) $(KMCL_RING_HDRS) kernel/status.c | deps
	@mkdir -p $(@D)
	$(CC) -std=gnu11 -O2 -g -Wall -Wextra -Werror -DHOSTED -I. -pthread $< $(KMCL_RING_SRCS) kernel/status.c -o $@

.PHONY: bench-kmcl
bench-kmcl: $(BUILD)/bench/bench_ring
	$(BUILD)/bench/bench_ring

BENCHES += bench-kmcl

# `make unit` also builds the TSan variant (test_ring itself is in UNIT_TESTS by its name).
unit: $(BUILD)/test/test_ring_tsan

# ---- the server endpoint (sim/kmcl/server.h; hosted only, not in the kernel image) ----
#   $(BUILD)/test/test_kmcl_server        cmocka tests incl. a three-thread stress test, ASan/UBSan
#   $(BUILD)/test/test_kmcl_server_tsan   the same under ThreadSanitizer
KMCL_SERVER_TEST_DEPS := test/host/test_kmcl_server.c sim/kmcl/server.c sim/kmcl/server.h $(KMCL_RING_SRCS) $(KMCL_RING_HDRS) \
	kernel/status.c test/lib/test_util.h

$(BUILD)/test/test_kmcl_server: $(KMCL_SERVER_TEST_DEPS) | deps
	@mkdir -p $(@D)
	$(CC) $(HOST_CFLAGS) -pthread $< sim/kmcl/server.c $(KMCL_RING_SRCS) kernel/status.c -o $@ -lcmocka

$(BUILD)/test/test_kmcl_server_tsan: $(KMCL_SERVER_TEST_DEPS) | deps
	@mkdir -p $(@D)
	$(CC) $(HVSIM_TSAN_CFLAGS) -pthread $< sim/kmcl/server.c $(KMCL_RING_SRCS) kernel/status.c -o $@ -lcmocka

unit: $(BUILD)/test/test_kmcl_server_tsan
