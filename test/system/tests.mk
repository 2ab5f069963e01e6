# test/system/tests.mk: the guest's layers on hosted VPs against the in-process hvsim
# (tools/hosted.mk for the macros). Under TSan, test/run_tests.py sets report_signal_unsafe=0:
# the interrupt signal handler runs guest code that takes locks, by design.
$(call test_pair,test_hv,test/system/test_hv.c,hv test/hosted)
$(call test_pair,test_vmbus,test/system/test_vmbus.c,hv/vmbus test/hosted)
$(call test_pair,test_kmcl,test/system/test_kmcl.c,kmcl test/hosted)
$(call test_pair,test_netvsc,test/system/test_netvsc.c,drivers/netvsc lib/netattach test/hosted)
# The hostile-host tests on the layers of test/system/layers.c (the kmcl test device and netvsc):
# test_hazards runs every hvsim hazard and every pair against every layer (the TSan build: singles;
# HAZARDS_PAIRS=1 the pairs too); test_shmem_flip flips bytes of the rings, the receive buffer and
# the SynIC slots while the guest parses them.
$(call test_pair,test_hazards,test/system/test_hazards.c,drivers/netvsc test/hosted,test/system/layers.c)
$(call test_pair,test_shmem_flip,test/system/test_shmem_flip.c,drivers/netvsc test/hosted,test/system/layers.c)
