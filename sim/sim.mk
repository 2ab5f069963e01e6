# sim/sim.mk: builds hvsim (the simulated Hyper-V root partition), its unit tests and the doorbell
# fuzzer. Included by the top-level Makefile, which defines BUILD, CC, HOST_CFLAGS and `deps`.
#
#   $(BUILD)/sim/hvsim              the program QEMU's doorbell socket talks to
#   $(BUILD)/test/test_hvsim        cmocka tests, ASan/UBSan (HOST_CFLAGS)
#   $(BUILD)/test/test_hvsim_tsan   the same tests under ThreadSanitizer
#   $(BUILD)/test/test_vmbus_server[_tsan]  the VMBus server's tests, the same two ways
#   $(BUILD)/test/test_vsp_test[_tsan]      the test device's VSP (sim/vsp/vsp_test.c), the same two ways
#   $(BUILD)/test/test_netvsp[_tsan]        the netvsp (sim/netvsp/netvsp.c) and the gateway (sim/netvsp/netgw.c)
#   $(BUILD)/fuzz/fuzz_simdb        libFuzzer harness for the doorbell byte parser
#
# The VMBus server uses the shared message checker hv/vmbus/proto/vmbus_msg.c, which the guest's VMBus layer links
# too; it is kept out of HVSIM_LIB_SRCS (VMBUS_PROTO_SRCS) so that a program linking the guest's hv/
# sources with the hvsim library (test/hosted/hosted.mk) gets it once: such a program must link
# VMBUS_PROTO_SRCS itself, through its hv/ sources or explicitly.
#
# The VSPs (sim/vsp_*.c) serve their channels with kmcl's server endpoint (sim/kmcl/server.c, through the
# glue in sim/vsp/vsp.c) on kmcl's ring, packet and transaction layer, so the hvsim library links those
# sources too (HVSIM_KMCL_SRCS, in HVSIM_LIB_SRCS). kmcl/kmcl.mk names the
# same list KMCL_RING_SRCS, but the top Makefile includes it after this file and a rule's
# prerequisites (and := variables) expand as they are read, so the list is repeated here;
# HVSIM_KMCL_CHECK, expanded in the recipes below (after every makefile is read), stops the build if
# the two lists ever differ. Programs that link HVSIM_LIB_SRCS beside kmcl's own sources must drop
# the duplicates ($(sort ...), as test/hosted/hosted.mk does).
HVSIM_KMCL_SRCS := kmcl/core/ring.c kmcl/core/packet.c kmcl/core/xact.c kmcl/core/endpoint.c
HVSIM_KMCL_CHECK = $(if $(filter-out $(KMCL_RING_SRCS),$(HVSIM_KMCL_SRCS))$(filter-out $(HVSIM_KMCL_SRCS),$(KMCL_RING_SRCS)),\
	$(error sim/sim.mk: HVSIM_KMCL_SRCS ($(HVSIM_KMCL_SRCS)) differs from kmcl/kmcl.mk KMCL_RING_SRCS ($(KMCL_RING_SRCS))))

# The netvsp (sim/netvsp/netvsp.c) checks and builds NVSP and RNDIS with the guest driver's shared code
# (drivers/netvsc/proto/nvsp_msg.c, rndis_msg.c), so the library links those two as well (HVSIM_NETVSC_SRCS,
# checked against drivers/netvsc/proto/proto.mk's NETVSC_PROTO_SRCS the same way as the kmcl list). A program
# that links HVSIM_LIB_SRCS beside the guest's netvsc sources must drop the duplicates ($(sort ...)).
HVSIM_NETVSC_SRCS := drivers/netvsc/proto/nvsp_msg.c drivers/netvsc/proto/rndis_msg.c
HVSIM_NETVSC_CHECK = $(if $(filter-out $(NETVSC_PROTO_SRCS),$(HVSIM_NETVSC_SRCS))$(filter-out $(HVSIM_NETVSC_SRCS),$(NETVSC_PROTO_SRCS)),\
	$(error sim/sim.mk: HVSIM_NETVSC_SRCS ($(HVSIM_NETVSC_SRCS)) differs from drivers/netvsc/proto/proto.mk NETVSC_PROTO_SRCS ($(NETVSC_PROTO_SRCS))))

HVSIM_LIB_SRCS := sim/hvsim.c sim/synic.c sim/hypercall.c sim/clock.c sim/stimer.c sim/doorbell.c \
	sim/vmbus_server.c sim/vmbus_channels.c sim/vmbus_devices.c sim/vsp/vsp.c sim/vsp/vsp_test.c sim/netvsp/netvsp.c sim/netvsp/netgw.c \
	$(HVSIM_KMCL_SRCS) sim/kmcl/server.c $(HVSIM_NETVSC_SRCS)
VMBUS_PROTO_SRCS := hv/vmbus/proto/vmbus_msg.c
HVSIM_HDRS := sim/hvsim.h sim/hvsim_internal.h sim/doorbell.h sim/vmbus_server.h sim/vmbus_internal.h \
	sim/vsp/vsp.h sim/vsp/vsp_test.h sim/netvsp/netvsp.h sim/netvsp/netgw.h hv/proto/hvdefs.h hv/proto/simdb.h hv/vmbus/proto/vmbus_proto.h \
	kmcl/core/ring_format.h kmcl/core/ring.h kmcl/core/packet.h kmcl/core/xact.h kmcl/core/endpoint.h sim/kmcl/server.h kernel/status.h kernel/string.h \
	drivers/netvsc/proto/nvsp_proto.h drivers/netvsc/proto/rndis_proto.h drivers/netvsc/proto/nvsp_msg.h drivers/netvsc/proto/rndis_msg.h
HVSIM_CFLAGS := -std=gnu11 -O2 -g -Wall -Wextra -Werror -I. -pthread
HVSIM_TSAN_CFLAGS := -std=gnu11 -g -O1 -Wall -Wextra -Werror -DHOSTED -I. -fsanitize=thread -fno-omit-frame-pointer

HVSIM_ALL_SRCS := $(HVSIM_LIB_SRCS) $(VMBUS_PROTO_SRCS)

$(BUILD)/sim/hvsim: $(HVSIM_ALL_SRCS) sim/hvsim_main.c $(HVSIM_HDRS) | deps
	@mkdir -p $(@D)$(HVSIM_KMCL_CHECK)$(HVSIM_NETVSC_CHECK)
	$(CC) $(HVSIM_CFLAGS) $(HVSIM_ALL_SRCS) sim/hvsim_main.c -o $@

$(BUILD)/test/test_hvsim: test/host/test_hvsim.c $(HVSIM_ALL_SRCS) $(HVSIM_HDRS) test/lib/test_util.h | deps
	@mkdir -p $(@D)$(HVSIM_KMCL_CHECK)$(HVSIM_NETVSC_CHECK)
	$(CC) $(HOST_CFLAGS) -pthread $< $(HVSIM_ALL_SRCS) -o $@ -lcmocka

$(BUILD)/test/test_hvsim_tsan: test/host/test_hvsim.c $(HVSIM_ALL_SRCS) $(HVSIM_HDRS) test/lib/test_util.h | deps
	@mkdir -p $(@D)$(HVSIM_KMCL_CHECK)$(HVSIM_NETVSC_CHECK)
	$(CC) $(HVSIM_TSAN_CFLAGS) -pthread $< $(HVSIM_ALL_SRCS) -o $@ -lcmocka

$(BUILD)/test/test_vmbus_server: test/host/test_vmbus_server.c $(HVSIM_ALL_SRCS) $(HVSIM_HDRS) test/lib/test_util.h \
		| deps
	@mkdir -p $(@D)$(HVSIM_KMCL_CHECK)$(HVSIM_NETVSC_CHECK)
	$(CC) $(HOST_CFLAGS) -pthread $< $(HVSIM_ALL_SRCS) -o $@ -lcmocka

$(BUILD)/test/test_vmbus_server_tsan: test/host/test_vmbus_server.c $(HVSIM_ALL_SRCS) $(HVSIM_HDRS) \
		test/lib/test_util.h | deps
	@mkdir -p $(@D)$(HVSIM_KMCL_CHECK)$(HVSIM_NETVSC_CHECK)
	$(CC) $(HVSIM_TSAN_CFLAGS) -pthread $< $(HVSIM_ALL_SRCS) -o $@ -lcmocka

$(BUILD)/fuzz/fuzz_simdb: test/fuzz/fuzz_simdb.c $(HVSIM_ALL_SRCS) $(HVSIM_HDRS) | deps
	@mkdir -p $(@D)$(HVSIM_KMCL_CHECK)$(HVSIM_NETVSC_CHECK)
	clang -std=gnu11 -g -O1 -DHOSTED -I. -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -pthread \
		$< $(HVSIM_ALL_SRCS) -o $@

$(BUILD)/test/test_vsp_test: test/host/test_vsp_test.c $(HVSIM_ALL_SRCS) $(HVSIM_HDRS) test/lib/test_util.h | deps
	@mkdir -p $(@D)$(HVSIM_KMCL_CHECK)$(HVSIM_NETVSC_CHECK)
	$(CC) $(HOST_CFLAGS) -pthread $< $(HVSIM_ALL_SRCS) -o $@ -lcmocka

$(BUILD)/test/test_vsp_test_tsan: test/host/test_vsp_test.c $(HVSIM_ALL_SRCS) $(HVSIM_HDRS) test/lib/test_util.h \
		| deps
	@mkdir -p $(@D)$(HVSIM_KMCL_CHECK)$(HVSIM_NETVSC_CHECK)
	$(CC) $(HVSIM_TSAN_CFLAGS) -pthread $< $(HVSIM_ALL_SRCS) -o $@ -lcmocka

# The netvsp and the gateway against a fake guest on kmcl's ring layer, with real loopback sockets.
$(BUILD)/test/test_netvsp: test/host/test_netvsp.c $(HVSIM_ALL_SRCS) $(HVSIM_HDRS) test/lib/test_util.h | deps
	@mkdir -p $(@D)$(HVSIM_KMCL_CHECK)$(HVSIM_NETVSC_CHECK)
	$(CC) $(HOST_CFLAGS) -pthread $< $(HVSIM_ALL_SRCS) -o $@ -lcmocka

$(BUILD)/test/test_netvsp_tsan: test/host/test_netvsp.c $(HVSIM_ALL_SRCS) $(HVSIM_HDRS) test/lib/test_util.h \
		| deps
	@mkdir -p $(@D)$(HVSIM_KMCL_CHECK)$(HVSIM_NETVSC_CHECK)
	$(CC) $(HVSIM_TSAN_CFLAGS) -pthread $< $(HVSIM_ALL_SRCS) -o $@ -lcmocka

# `make unit` also builds the TSan variants (test_hvsim, test_vmbus_server, test_vsp_test and
# test_netvsp themselves are in UNIT_TESTS by their names).
unit: $(BUILD)/test/test_hvsim_tsan $(BUILD)/test/test_vmbus_server_tsan $(BUILD)/test/test_vsp_test_tsan \
	$(BUILD)/test/test_netvsp_tsan
