# drivers/netvsc/netvsc.mk: the network path's hosted system test and benchmark. Included by the
# top-level Makefile after test/hosted/hosted.mk, drivers/netvsc/proto/proto.mk and lib/net/net.mk.
#   $(BUILD)/test/test_netvsc[_tsan]  the guest's netvsc + IPv4 stack on hosted VP threads against
#                                     hvsim's netvsp in-process (test/system/test_netvsc.c)
#   make bench-netsys                 the same, -O2 without sanitizers: echoes per second, then the
#                                     guest's instructions per echo under callgrind
# The device contract and registry (kernel/netdev.c, kernel/devreg.c), lib/net's binding to it
# (lib/net/net_attach.c) and kernel/cmdline.c (netvsc and net_attach read the command line).
NETDEV_SRCS := kernel/devreg.c kernel/netdev.c kernel/cmdline.c
TEST_NETVSC_SRCS = $(sort $(TEST_KMCL_SRCS) drivers/netvsc/netvsc.c $(NETVSC_PROTO_SRCS) $(NET_SRCS) $(NET_ATTACH_SRCS) \
	$(NETDEV_SRCS))
TEST_NETVSC_DEPS = test/system/test_netvsc.c $(TEST_NETVSC_SRCS) $(HOSTED_HDRS) $(NET_HDRS) $(NETVSC_PROTO_HDRS) \
	drivers/netvsc/netvsc.h lib/net/net_attach.h kernel/netdev.h kernel/devreg.h test/lib/test_util.h \
	$(wildcard apps/udp-echo/*.c apps/netup/*.c)

$(BUILD)/test/test_netvsc: $(TEST_NETVSC_DEPS) | deps
	@mkdir -p $(@D)
	$(CC) $(HOSTED_CFLAGS) $(HOST_CFLAGS) $< $(TEST_NETVSC_SRCS) -o $@ -lcmocka

$(BUILD)/test/test_netvsc_tsan: $(TEST_NETVSC_DEPS) | deps
	@mkdir -p $(@D)
	$(CC) $(HOSTED_CFLAGS) $(HVSIM_TSAN_CFLAGS) $< $(TEST_NETVSC_SRCS) -o $@ -lcmocka

$(BUILD)/bench/bench_netsys: $(TEST_NETVSC_DEPS) | deps
	@mkdir -p $(@D)
	$(CC) $(HOSTED_CFLAGS) -std=gnu11 -O2 -g -Wall -Wextra -Werror -DHOSTED -I. $< $(TEST_NETVSC_SRCS) -o $@ -lcmocka

.PHONY: bench-netsys
bench-netsys: $(BUILD)/bench/bench_netsys
	NETSYS_BENCH=1 $(BUILD)/bench/bench_netsys 2>/dev/null
	test/bench/netsys_callgrind.sh $(BUILD)/bench/bench_netsys

BENCHES += bench-netsys

unit: $(BUILD)/test/test_netvsc_tsan
