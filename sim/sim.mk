# sim/sim.mk: builds hvsim (the simulated Hyper-V root partition), its unit tests and the doorbell
# fuzzer. Included by the top-level Makefile, which defines BUILD, CC, HOST_CFLAGS and `deps`.
#
#   $(BUILD)/sim/hvsim              the program QEMU's doorbell socket talks to
#   $(BUILD)/test/test_hvsim        cmocka tests, ASan/UBSan (HOST_CFLAGS)
#   $(BUILD)/test/test_hvsim_tsan   the same tests under ThreadSanitizer
#   $(BUILD)/test/test_vmbus_server[_tsan]  the VMBus server's tests, the same two ways
#   $(BUILD)/fuzz/fuzz_simdb        libFuzzer harness for the doorbell byte parser
#
# The VMBus server uses the shared message checker hv/vmbus_msg.c, which the guest's VMBus layer links
# too; it is kept out of HVSIM_LIB_SRCS (VMBUS_PROTO_SRCS) so that a program linking the guest's hv/
# sources with the hvsim library (test/hosted/hosted.mk) gets it once: such a program must link
# VMBUS_PROTO_SRCS itself, through its hv/ sources or explicitly.

HVSIM_LIB_SRCS := sim/hvsim.c sim/synic.c sim/hypercall.c sim/clock.c sim/stimer.c sim/doorbell.c \
	sim/vmbus_server.c sim/vmbus_channels.c sim/vmbus_devices.c
VMBUS_PROTO_SRCS := hv/vmbus_msg.c
HVSIM_HDRS := sim/hvsim.h sim/hvsim_internal.h sim/doorbell.h sim/vmbus_server.h sim/vmbus_internal.h \
	hv/hvdefs.h hv/simdb.h hv/vmbus_proto.h
HVSIM_CFLAGS := -std=gnu11 -O2 -g -Wall -Wextra -Werror -I. -pthread
HVSIM_TSAN_CFLAGS := -std=gnu11 -g -O1 -Wall -Wextra -Werror -DHOSTED -I. -fsanitize=thread -fno-omit-frame-pointer

HVSIM_ALL_SRCS := $(HVSIM_LIB_SRCS) $(VMBUS_PROTO_SRCS)

$(BUILD)/sim/hvsim: $(HVSIM_ALL_SRCS) sim/hvsim_main.c $(HVSIM_HDRS) | deps
	@mkdir -p $(@D)
	$(CC) $(HVSIM_CFLAGS) $(HVSIM_ALL_SRCS) sim/hvsim_main.c -o $@

$(BUILD)/test/test_hvsim: test/unit/test_hvsim.c $(HVSIM_ALL_SRCS) $(HVSIM_HDRS) test/unit/test_util.h | deps
	@mkdir -p $(@D)
	$(CC) $(HOST_CFLAGS) -pthread $< $(HVSIM_ALL_SRCS) -o $@ -lcmocka

$(BUILD)/test/test_hvsim_tsan: test/unit/test_hvsim.c $(HVSIM_ALL_SRCS) $(HVSIM_HDRS) test/unit/test_util.h | deps
	@mkdir -p $(@D)
	$(CC) $(HVSIM_TSAN_CFLAGS) -pthread $< $(HVSIM_ALL_SRCS) -o $@ -lcmocka

$(BUILD)/test/test_vmbus_server: test/unit/test_vmbus_server.c $(HVSIM_ALL_SRCS) $(HVSIM_HDRS) test/unit/test_util.h \
		| deps
	@mkdir -p $(@D)
	$(CC) $(HOST_CFLAGS) -pthread $< $(HVSIM_ALL_SRCS) -o $@ -lcmocka

$(BUILD)/test/test_vmbus_server_tsan: test/unit/test_vmbus_server.c $(HVSIM_ALL_SRCS) $(HVSIM_HDRS) \
		test/unit/test_util.h | deps
	@mkdir -p $(@D)
	$(CC) $(HVSIM_TSAN_CFLAGS) -pthread $< $(HVSIM_ALL_SRCS) -o $@ -lcmocka

$(BUILD)/fuzz/fuzz_simdb: test/fuzz/fuzz_simdb.c $(HVSIM_ALL_SRCS) $(HVSIM_HDRS) | deps
	@mkdir -p $(@D)
	clang -std=gnu11 -g -O1 -DHOSTED -I. -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -pthread \
		$< $(HVSIM_ALL_SRCS) -o $@

# `make unit` also builds the TSan variants (test_hvsim and test_vmbus_server themselves are in
# UNIT_TESTS by their names).
unit: $(BUILD)/test/test_hvsim_tsan $(BUILD)/test/test_vmbus_server_tsan
