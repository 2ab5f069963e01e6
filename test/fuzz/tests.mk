# test/fuzz/tests.mk: the libFuzzer harnesses, one per parser of bytes the host (or a peer)
# controls (tools/hosted.mk for the macros; test/fuzz/README.md for each harness and its corpus).
$(foreach f,acpi cmdline fmt pmm hvmsg,$(call fuzzer,fuzz_$(f),test/fuzz/fuzz_$(f).c,,$(UNIT.kernel)))
$(call fuzzer,fuzz_vmbusmsg,test/fuzz/fuzz_vmbusmsg.c,hv/vmbus/proto)
$(call fuzzer,fuzz_simdb,test/fuzz/fuzz_simdb.c,sim)
$(call fuzzer,fuzz_ring,test/fuzz/fuzz_ring.c,kmcl/core,kernel/status.c)
$(foreach f,nvsp rndis,$(call fuzzer,fuzz_$(f),test/fuzz/fuzz_$(f).c,drivers/netvsc/proto,kernel/status.c))
$(call fuzzer,fuzz_net,test/fuzz/fuzz_net.c,lib/net,kernel/fmt.c kernel/status.c)
