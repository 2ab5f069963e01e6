# test/bench/tests.mk: the benchmarks (`make bench` runs every target in BENCHES; each prints its
# method; docs/PERFORMANCE.md records the results).
$(call bench,bench_ring,test/bench/bench_ring.c,kmcl/core,kernel/status.c)
$(call bench,bench_net,test/bench/bench_net.c,lib/net,kernel/fmt.c kernel/status.c)
# The hosted network path: test/system/test_netvsc.c at -O2 (NETSYS_BENCH=1), then the guest's
# instructions per echo under callgrind.
$(call bench,bench_netsys,test/system/test_netvsc.c,drivers/netvsc lib/netattach test/hosted,,-lcmocka)

.PHONY: bench-kmcl bench-net bench-netsys
bench-kmcl: $(BUILD)/bench/bench_ring
	$(BUILD)/bench/bench_ring
bench-net: $(BUILD)/bench/bench_net
	$(BUILD)/bench/bench_net
bench-netsys: $(BUILD)/bench/bench_netsys
	NETSYS_BENCH=1 $(BUILD)/bench/bench_netsys 2>/dev/null
	test/bench/netsys_callgrind.sh $(BUILD)/bench/bench_netsys
BENCHES += bench-kmcl bench-net bench-netsys
