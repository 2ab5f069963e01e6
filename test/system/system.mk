# test/system/system.mk: the hostile-host system tests, on the layers of test/system/layers.c (the
# kmcl test device and netvsc, hosted, against the in-process hvsim). Included by the top Makefile
# after every other makefile (it uses TEST_KMCL_SRCS of test/hosted/hosted.mk and NETVSC_PROTO_SRCS).
#   $(BUILD)/test/test_hazards[_tsan]     every hvsim hazard and every pair against every layer (TSan: singles)
SYSTEM_LAYERS_SRCS = $(sort $(TEST_KMCL_SRCS) drivers/netvsc/netvsc.c $(NETVSC_PROTO_SRCS) test/system/layers.c)
SYSTEM_LAYERS_DEPS = $(SYSTEM_LAYERS_SRCS) $(HOSTED_HDRS) $(NETVSC_PROTO_HDRS) test/system/layers.h \
	drivers/netvsc/netvsc.h $(wildcard kmcl/*.h kmcl/core/*.h sim/*.h sim/*/*.h) test/lib/test_util.h

$(BUILD)/test/test_hazards: test/system/test_hazards.c $(SYSTEM_LAYERS_DEPS) | deps
	@mkdir -p $(@D)
	$(CC) $(HOSTED_CFLAGS) $(HOST_CFLAGS) $< $(SYSTEM_LAYERS_SRCS) -o $@ -lcmocka

$(BUILD)/test/test_hazards_tsan: test/system/test_hazards.c $(SYSTEM_LAYERS_DEPS) | deps
	@mkdir -p $(@D)
	$(CC) $(HOSTED_CFLAGS) $(HVSIM_TSAN_CFLAGS) $< $(SYSTEM_LAYERS_SRCS) -o $@ -lcmocka

# The ThreadSanitizer build runs the singles only (HAZARDS_PAIRS=1: the pairs too).
unit: $(BUILD)/test/test_hazards_tsan

#   $(BUILD)/test/test_shmem_flip[_tsan]  a thread flips bytes of the rings, the receive buffer and the SynIC slots
$(BUILD)/test/test_shmem_flip: test/system/test_shmem_flip.c $(SYSTEM_LAYERS_DEPS) | deps
	@mkdir -p $(@D)
	$(CC) $(HOSTED_CFLAGS) $(HOST_CFLAGS) $< $(SYSTEM_LAYERS_SRCS) -o $@ -lcmocka

$(BUILD)/test/test_shmem_flip_tsan: test/system/test_shmem_flip.c $(SYSTEM_LAYERS_DEPS) | deps
	@mkdir -p $(@D)
	$(CC) $(HOSTED_CFLAGS) $(HVSIM_TSAN_CFLAGS) $< $(SYSTEM_LAYERS_SRCS) -o $@ -lcmocka

unit: $(BUILD)/test/test_shmem_flip_tsan
