# test/hosted/hosted.mk: the hosted tests of the guest's portable layers (hv/ now; VMBus and kmcl
# later) against the in-process hvsim. Included by the top-level Makefile after sim/sim.mk.
# The hosted include directory comes first so its arch-x86_64/irql.h replaces the CR8 one.

HOSTED_GUEST_SRCS := hv/hv.c hv/synic.c hv/reftime.c hv/stimer.c kernel/dpc.c kernel/fmt.c kernel/status.c \
	test/hosted/hosted.c test/hosted/binding_hosted.c
HOSTED_HDRS := $(wildcard hv/*.h kernel/*.h arch-x86_64/*.h test/hosted/*.h test/hosted/include/*/*.h) $(HVSIM_HDRS)
HOSTED_CFLAGS := -Itest/hosted/include -pthread

$(BUILD)/test/test_hv: test/unit/test_hv.c $(HOSTED_GUEST_SRCS) $(HVSIM_LIB_SRCS) $(HOSTED_HDRS) | deps
	@mkdir -p $(@D)
	$(CC) $(HOSTED_CFLAGS) $(HOST_CFLAGS) $< $(HOSTED_GUEST_SRCS) $(HVSIM_LIB_SRCS) -o $@ -lcmocka

# The same under ThreadSanitizer. The interrupt signal handler runs guest code that takes locks
# (by design: interrupts arrive anywhere), so TSan's signal-safety report is turned off for it
# (TSAN_OPTIONS=report_signal_unsafe=0, set by test/run_tests.py); data races are still reported.
$(BUILD)/test/test_hv_tsan: test/unit/test_hv.c $(HOSTED_GUEST_SRCS) $(HVSIM_LIB_SRCS) $(HOSTED_HDRS) | deps
	@mkdir -p $(@D)
	$(CC) $(HOSTED_CFLAGS) $(HVSIM_TSAN_CFLAGS) $< $(HOSTED_GUEST_SRCS) $(HVSIM_LIB_SRCS) -o $@ -lcmocka

unit: $(BUILD)/test/test_hv_tsan
