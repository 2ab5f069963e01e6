# test/system/tests.mk: the guest's layers on hosted VPs against the in-process hvsim
# (tools/hosted.mk for the macros). Under TSan, test/run_tests.py sets report_signal_unsafe=0:
# the interrupt signal handler runs guest code that takes locks, by design.
$(call test_pair,test_hv,test/system/test_hv.c,hv test/hosted)
$(call test_pair,test_vmbus,test/system/test_vmbus.c,hv/vmbus test/hosted)
$(call test_pair,test_kmcl,test/system/test_kmcl.c,kmcl test/hosted)
$(call test_pair,test_netvsc,test/system/test_netvsc.c,drivers/netvsc lib/net test/hosted)
