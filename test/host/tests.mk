# test/host/tests.mk: hvsim's components against a fake guest (tools/hosted.mk for the macros).
$(foreach t,hvsim vmbus_server vsp_test netvsp,$(call test_pair,test_$(t),test/host/test_$(t).c,sim test/lib))
$(call test_pair,test_kmcl_server,test/host/test_kmcl_server.c,sim/kmcl,kernel/status.c)
