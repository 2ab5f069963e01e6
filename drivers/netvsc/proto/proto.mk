# drivers/netvsc/proto/proto.mk: hosted tests and fuzzers of the NVSP and RNDIS wire formats
# (drivers/netvsc/proto/nvsp_msg.c, drivers/netvsc/proto/rndis_msg.c), shared by the guest driver and hvsim's netvsp.
# Included by the top-level Makefile. These explicit rules override the Makefile's test_%/fuzz_%
# pattern rules, which link kernel sources only.
#
#   $(BUILD)/test/test_netvsc_proto   cmocka tests, ASan/UBSan (HOST_CFLAGS)
#   $(BUILD)/fuzz/fuzz_nvsp           libFuzzer: one NVSP message (test/fuzz/corpus/nvsp)
#   $(BUILD)/fuzz/fuzz_rndis          libFuzzer: one received RNDIS range (test/fuzz/corpus/rndis)
#   make netvsc-proto-freestanding    compiles both sources with the kernel's flags (KCFLAGS)
#
# The guest build picks the sources up with the netvsc app (APP_C = drivers/netvsc/*.c).

# Defaults for when this file is read before the Makefile (make --eval 'include drivers/netvsc/proto/proto.mk'
# evaluates it before any makefile): targets and prerequisites are expanded as they are read.
BUILD ?= build
OBJ ?= $(BUILD)/obj

NETVSC_PROTO_SRCS := drivers/netvsc/proto/nvsp_msg.c drivers/netvsc/proto/rndis_msg.c
NETVSC_PROTO_HDRS := drivers/netvsc/proto/nvsp_proto.h drivers/netvsc/proto/rndis_proto.h drivers/netvsc/proto/nvsp_msg.h \
	drivers/netvsc/proto/rndis_msg.h kernel/status.h kernel/string.h
NETVSC_FUZZ_CFLAGS := -std=gnu11 -g -O1 -DHOSTED -I. -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all

$(BUILD)/test/test_netvsc_proto: test/unit/test_netvsc_proto.c $(NETVSC_PROTO_SRCS) $(NETVSC_PROTO_HDRS) \
		kernel/status.c test/lib/test_util.h | deps
	@mkdir -p $(@D)
	$(CC) $(HOST_CFLAGS) $< $(NETVSC_PROTO_SRCS) kernel/status.c -o $@ -lcmocka

$(BUILD)/fuzz/fuzz_nvsp: test/fuzz/fuzz_nvsp.c $(NETVSC_PROTO_SRCS) $(NETVSC_PROTO_HDRS) kernel/status.c | deps
	@mkdir -p $(@D)
	clang $(NETVSC_FUZZ_CFLAGS) $< $(NETVSC_PROTO_SRCS) kernel/status.c -o $@

$(BUILD)/fuzz/fuzz_rndis: test/fuzz/fuzz_rndis.c $(NETVSC_PROTO_SRCS) $(NETVSC_PROTO_HDRS) kernel/status.c | deps
	@mkdir -p $(@D)
	clang $(NETVSC_FUZZ_CFLAGS) $< $(NETVSC_PROTO_SRCS) kernel/status.c -o $@

.PHONY: netvsc-proto-freestanding
netvsc-proto-freestanding: $(NETVSC_PROTO_SRCS:%.c=$(OBJ)/%.o)
