# test/unit/tests.mk: pure unit tests, one module each, no platform (tools/hosted.mk for the macros).
$(foreach t,acpi cmdline fmt heap memlog pmm,$(call unit_test,test_$(t),test/unit/test_$(t).c,,$(UNIT.kernel)))
$(call unit_test,test_fbcon,test/unit/test_fbcon.c,,kernel/fbcon.c kernel/font8x16.c)
$(call test_pair,test_ring,test/unit/test_ring.c,kmcl/core,kernel/status.c)
$(call unit_test,test_netvsc_proto,test/unit/test_netvsc_proto.c,drivers/netvsc/proto,kernel/status.c)
$(call test_pair,test_net,test/unit/test_net.c,lib/net,kernel/fmt.c kernel/status.c)
