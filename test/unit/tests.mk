# test/unit/tests.mk: pure unit tests, one module each, no platform (tools/hosted.mk for the macros).
$(foreach t,acpi cmdline fmt heap memlog pmm,$(call unit_test,test_$(t),test/unit/test_$(t).c,,$(UNIT.kernel)))
$(call unit_test,test_fbcon,test/unit/test_fbcon.c,,kernel/fbcon.c kernel/font8x16.c)
$(call test_pair,test_ring,test/unit/test_ring.c,kmcl/core,kernel/status.c)
$(call unit_test,test_netvsc_proto,test/unit/test_netvsc_proto.c,drivers/netvsc/proto,kernel/status.c)
$(call test_pair,test_net,test/unit/test_net.c,lib/net,kernel/fmt.c kernel/status.c)
# The device contracts and their registry (kernel/devreg.c, netdev.c, blkdev.c) with the test's own
# stand-ins for the kernel services they use; the hosted irql.h keeps the IRQL in a variable.
DEVREG_TEST_SRCS := kernel/devreg.c kernel/netdev.c kernel/blkdev.c kernel/fmt.c kernel/status.c
$(call hosted,$(BUILD)/test/test_devreg,asan-vp,test/unit/test_devreg.c,,$(DEVREG_TEST_SRCS),-lcmocka)
$(call hosted,$(BUILD)/test/test_devreg_tsan,tsan-vp,test/unit/test_devreg.c,,$(DEVREG_TEST_SRCS),-lcmocka)
UNIT_TESTS += $(BUILD)/test/test_devreg $(BUILD)/test/test_devreg_tsan
