# test/hosted/hosted.mk: the hosted tests of the guest's portable layers (hv/ and VMBus; kmcl
# later) against the in-process hvsim. Included by the top-level Makefile after sim/sim.mk.
# The hosted include directory comes first so its arch-x86_64/irql.h replaces the CR8 one.

HOSTED_GUEST_SRCS := hv/hv.c hv/synic.c hv/reftime.c hv/stimer.c kernel/dpc.c kernel/fmt.c kernel/status.c \
	test/hosted/hosted.c test/hosted/binding_hosted.c
HOSTED_HDRS := $(wildcard hv/*.h hv/*/*.h hv/vmbus/proto/*.h kernel/*.h arch-x86_64/*.h test/hosted/*.h test/hosted/include/*/*.h) $(HVSIM_HDRS)
HOSTED_CFLAGS := -Itest/hosted/include -pthread

TEST_HV_SRCS = $(sort $(HOSTED_GUEST_SRCS) $(HVSIM_LIB_SRCS) $(VMBUS_PROTO_SRCS))

$(BUILD)/test/test_hv: test/system/test_hv.c $(TEST_HV_SRCS) $(HOSTED_HDRS) | deps
	@mkdir -p $(@D)
	$(CC) $(HOSTED_CFLAGS) $(HOST_CFLAGS) $< $(TEST_HV_SRCS) -o $@ -lcmocka

# The same under ThreadSanitizer. The interrupt signal handler runs guest code that takes locks
# (by design: interrupts arrive anywhere), so TSan's signal-safety report is turned off for it
# (TSAN_OPTIONS=report_signal_unsafe=0, set by test/run_tests.py); data races are still reported.
$(BUILD)/test/test_hv_tsan: test/system/test_hv.c $(TEST_HV_SRCS) $(HOSTED_HDRS) | deps
	@mkdir -p $(@D)
	$(CC) $(HOSTED_CFLAGS) $(HVSIM_TSAN_CFLAGS) $< $(TEST_HV_SRCS) -o $@ -lcmocka

unit: $(BUILD)/test/test_hv_tsan

# The guest's VMBus against hvsim's VMBus server. $(sort) also drops a source listed twice (the
# shared message checker hv/vmbus/proto/vmbus_msg.c belongs to both sides).
VMBUS_GUEST_SRCS := hv/vmbus/vmbus.c hv/vmbus/vmbus_channel.c hv/vmbus/proto/vmbus_msg.c
TEST_VMBUS_SRCS = $(sort $(HOSTED_GUEST_SRCS) $(VMBUS_GUEST_SRCS) $(HVSIM_LIB_SRCS) $(VMBUS_PROTO_SRCS))

$(BUILD)/test/test_vmbus: test/system/test_vmbus.c $(TEST_VMBUS_SRCS) $(HOSTED_HDRS) sim/vmbus_server.h | deps
	@mkdir -p $(@D)
	$(CC) $(HOSTED_CFLAGS) $(HOST_CFLAGS) $< $(TEST_VMBUS_SRCS) -o $@ -lcmocka

$(BUILD)/test/test_vmbus_tsan: test/system/test_vmbus.c $(TEST_VMBUS_SRCS) $(HOSTED_HDRS) sim/vmbus_server.h | deps
	@mkdir -p $(@D)
	$(CC) $(HOSTED_CFLAGS) $(HVSIM_TSAN_CFLAGS) $< $(TEST_VMBUS_SRCS) -o $@ -lcmocka

unit: $(BUILD)/test/test_vmbus_tsan

# kmcl's channel API end to end against hvsim's test device VSP.
TEST_KMCL_SRCS = $(sort $(TEST_VMBUS_SRCS) kmcl/channel.c kmcl/send.c kmcl/receive.c)

$(BUILD)/test/test_kmcl: test/system/test_kmcl.c $(TEST_KMCL_SRCS) $(HOSTED_HDRS) $(wildcard kmcl/*.h kmcl/core/*.h sim/*.h sim/*/*.h) | deps
	@mkdir -p $(@D)
	$(CC) $(HOSTED_CFLAGS) $(HOST_CFLAGS) $< $(TEST_KMCL_SRCS) -o $@ -lcmocka

$(BUILD)/test/test_kmcl_tsan: test/system/test_kmcl.c $(TEST_KMCL_SRCS) $(HOSTED_HDRS) $(wildcard kmcl/*.h kmcl/core/*.h sim/*.h sim/*/*.h) | deps
	@mkdir -p $(@D)
	$(CC) $(HOSTED_CFLAGS) $(HVSIM_TSAN_CFLAGS) $< $(TEST_KMCL_SRCS) -o $@ -lcmocka

unit: $(BUILD)/test/test_kmcl_tsan
