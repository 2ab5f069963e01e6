# hvrt: build, run and test. `make` builds build/$(APP)/$(APP).efi and a bootable GPT disk image;
# `make run` boots it in QEMU with OVMF; `make test` runs the hosted tests and the QEMU boot tests.
# Every entry point first installs missing Debian packages (tools/deps.sh).

APP ?= udp-echo
BUILD := build
B := $(BUILD)/$(APP)
OBJ := $(BUILD)/obj

CC := gcc
NASM := nasm
LD := ld
OBJCOPY := objcopy

# ---- the kernel (freestanding, linked with linker.ld) ----
KCFLAGS := -std=gnu11 -ffreestanding -fno-pic -fno-pie -mcmodel=kernel -mno-red-zone -mgeneral-regs-only \
	-fno-stack-protector -fno-omit-frame-pointer -fno-asynchronous-unwind-tables -fcf-protection=none \
	-fno-strict-aliasing -O2 -g -Wall -Wextra -Werror -Wno-address-of-packed-member -I. -MMD -MP
KASFLAGS := -f elf64 -g -F dwarf

KERNEL_C := $(wildcard kernel/*.c) $(wildcard arch-x86_64/*.c) $(wildcard hv/*.c) $(wildcard hv/vmbus/*.c) \
	$(wildcard hv/vmbus/proto/*.c) $(wildcard kmcl/*.c) $(wildcard kmcl/core/*.c)
KERNEL_ASM := arch-x86_64/isr.asm arch-x86_64/entry.asm arch-x86_64/switch.asm arch-x86_64/trampoline_blob.asm
KERNEL_OBJS := $(KERNEL_C:%.c=$(OBJ)/%.o) $(KERNEL_ASM:%.asm=$(OBJ)/%.o)
# An application may use driver libraries: apps/<app>/libs.mk sets APP_LIBS (folders, e.g. drivers/netvsc), whose
# <folder>/*.c are compiled into its image with its own sources.
APP_LIBS :=
-include apps/$(APP)/libs.mk
APP_C := $(wildcard apps/$(APP)/*.c)
ifneq ($(APP_C),)
APP_C += $(foreach l,$(APP_LIBS),$(wildcard $(l)/*.c))
endif
ifeq ($(APP_C),)
$(error APP=$(APP): no application in apps/$(APP)/ (have: $(notdir $(wildcard apps/*))))
endif
APP_OBJS := $(APP_C:%.c=$(B)/%.o)

# ---- the UEFI loader (GNU-EFI) ----
EFI_INC := /usr/include/efi
EFI_LIB := /usr/lib
EFI_CFLAGS := -std=gnu11 -I$(EFI_INC) -I$(EFI_INC)/x86_64 -I. -fpic -ffreestanding -fno-stack-protector \
	-fno-stack-check -fshort-wchar -mno-red-zone -maccumulate-outgoing-args -mgeneral-regs-only \
	-DEFI_FUNCTION_WRAPPER -O2 -Wall -Wextra -Werror -Wno-unused-parameter -MMD -MP
EFI_LDFLAGS := -nostdlib -shared -Bsymbolic -znocombreloc -L$(EFI_LIB) -T$(EFI_LIB)/elf_x86_64_efi.lds

DISK_MB := 64
ESP_SECTORS := $(shell echo $$(( ($(DISK_MB) - 2) * 2048 )))

.PHONY: all deps run test unit boot-tests fuzz bench vhdx clean
all: deps $(BUILD)/$(APP).efi $(B)/disk.img

deps:
	@tools/deps.sh

$(OBJ)/%.o: %.c | deps
	@mkdir -p $(@D)
	$(CC) $(KCFLAGS) -c $< -o $@

$(B)/%.o: %.c | deps
	@mkdir -p $(@D)
	$(CC) $(KCFLAGS) -c $< -o $@

$(OBJ)/arch-x86_64/trampoline.bin: arch-x86_64/trampoline.asm | deps
	@mkdir -p $(@D)
	$(NASM) -f bin $< -o $@

$(OBJ)/arch-x86_64/trampoline_blob.o: arch-x86_64/trampoline_blob.asm $(OBJ)/arch-x86_64/trampoline.bin
	@mkdir -p $(@D)
	$(NASM) $(KASFLAGS) -DTRAMPOLINE_BIN='"$(OBJ)/arch-x86_64/trampoline.bin"' $< -o $@

$(OBJ)/%.o: %.asm | deps
	@mkdir -p $(@D)
	$(NASM) $(KASFLAGS) $< -o $@

$(B)/kernel.elf: $(KERNEL_OBJS) $(APP_OBJS) linker.ld
	$(LD) -nostdlib -static -z max-page-size=4096 -z noexecstack -T linker.ld -o $@ $(KERNEL_OBJS) $(APP_OBJS)

$(B)/loader/efi_main.o: boot/efi_main.c | deps
	@mkdir -p $(@D)
	$(CC) $(EFI_CFLAGS) -c $< -o $@

# The loader embeds the kernel without its debug information (build/<app>/kernel.elf keeps it for
# addr2line and gdb).
$(B)/kernel.stripped.elf: $(B)/kernel.elf
	$(OBJCOPY) --strip-debug $< $@

$(B)/loader/kernel_blob.o: boot/kernel_blob.S $(B)/kernel.stripped.elf
	@mkdir -p $(@D)
	$(CC) -c -DKERNEL_ELF='"$(B)/kernel.stripped.elf"' $< -o $@

$(B)/loader.so: $(B)/loader/efi_main.o $(B)/loader/kernel_blob.o
	$(LD) $(EFI_LDFLAGS) $(EFI_LIB)/crt0-efi-x86_64.o $^ -o $@ -lefi -lgnuefi

$(B)/$(APP).efi: $(B)/loader.so
	$(OBJCOPY) -j .text -j .sdata -j .data -j .rodata -j .dynamic -j .dynsym -j .rel -j .rela -j .rel.* \
		-j .rela.* -j .reloc --target efi-app-x86_64 --subsystem=10 $< $@
	@echo "image: $@ ($$(stat -c %s $@) bytes)"

$(BUILD)/$(APP).efi: $(B)/$(APP).efi
	cp $< $@

# A GPT disk with one EFI system partition (FAT), built without root: mtools and sgdisk.
$(B)/disk.img: $(B)/$(APP).efi tools/mkdisk.sh
	tools/mkdisk.sh $@ $(B)/$(APP).efi $(DISK_MB) "$(CMDLINE)"

vhdx: all
	qemu-img convert -f raw -O vhdx -o subformat=dynamic $(B)/disk.img $(B)/$(APP).vhdx
	@echo "vhdx: $(B)/$(APP).vhdx"

# `make run`: boot in QEMU (q35, OVMF, TCG, 2 CPUs) beside hvsim (HVSIM=0: without), serial console
# here, ends with the application. HVSIM_ARGS passes options to hvsim (sim/README.md); for udp-echo
# the default forwards 127.0.0.1:5555/udp to the guest's echo port and opens the control port 5556.
HVSIM ?= 1
ifeq ($(APP),udp-echo)
HVSIM_ARGS ?= --net-forward 5555:7 --net-control 5556
endif
run: all $(if $(filter 1,$(HVSIM)),$(BUILD)/sim/hvsim)
	python3 tools/qemu_run.py --disk $(B)/disk.img --smp $(or $(SMP),2) $(if $(CMDLINE),--cmdline "$(CMDLINE)") \
		$(if $(filter 1,$(HVSIM)),--hvsim $(BUILD)/sim/hvsim $(foreach a,$(HVSIM_ARGS),--hvsim-arg=$(a)))

# ---- tests ----
HOST_CFLAGS := -std=gnu11 -g -O1 -Wall -Wextra -Werror -DHOSTED -I. -fsanitize=address,undefined \
	-fno-sanitize-recover=all -fno-omit-frame-pointer
PORTABLE_SRCS := kernel/status.c kernel/fmt.c kernel/cmdline.c kernel/pmm.c kernel/heap.c kernel/memlog.c kernel/acpi.c
UNIT_TESTS := $(patsubst test/unit/%.c,$(BUILD)/test/%,$(filter-out test/unit/test_fbcon.c,$(wildcard test/unit/test_*.c)))
UNIT_TESTS += $(patsubst %.c,$(BUILD)/test/%,$(notdir $(wildcard test/host/test_*.c test/system/test_*.c)))
UNIT_TESTS += $(BUILD)/test/test_fbcon

$(BUILD)/test/test_fbcon: test/unit/test_fbcon.c kernel/fbcon.c kernel/font8x16.c $(wildcard kernel/*.h) | deps
	@mkdir -p $(@D)
	$(CC) $(HOST_CFLAGS) $< kernel/fbcon.c kernel/font8x16.c -o $@ -lcmocka

# The device contracts (kernel/devreg.c, netdev.c, blkdev.c) with the test's own stand-ins for the
# kernel services they use; the hosted irql.h (first on the path) keeps the IRQL in a variable.
DEVREG_TEST_SRCS := kernel/devreg.c kernel/netdev.c kernel/blkdev.c kernel/fmt.c kernel/status.c
$(BUILD)/test/test_devreg: test/unit/test_devreg.c $(DEVREG_TEST_SRCS) $(wildcard kernel/*.h) | deps
	@mkdir -p $(@D)
	$(CC) -Itest/hosted/include -pthread $(HOST_CFLAGS) $< $(DEVREG_TEST_SRCS) -o $@ -lcmocka

$(BUILD)/test/test_devreg_tsan: test/unit/test_devreg.c $(DEVREG_TEST_SRCS) $(wildcard kernel/*.h) | deps
	@mkdir -p $(@D)
	$(CC) -Itest/hosted/include -pthread $(HVSIM_TSAN_CFLAGS) $< $(DEVREG_TEST_SRCS) -o $@ -lcmocka

unit: $(BUILD)/test/test_devreg_tsan

$(BUILD)/test/test_%: test/unit/test_%.c $(PORTABLE_SRCS) $(wildcard kernel/*.h) $(wildcard test/lib/*.h) | deps
	@mkdir -p $(@D)
	$(CC) $(HOST_CFLAGS) $< $(PORTABLE_SRCS) -o $@ -lcmocka

unit: $(UNIT_TESTS)

FUZZERS := $(patsubst test/fuzz/fuzz_%.c,$(BUILD)/fuzz/fuzz_%,$(wildcard test/fuzz/fuzz_*.c))
$(BUILD)/fuzz/fuzz_%: test/fuzz/fuzz_%.c $(PORTABLE_SRCS) | deps
	@mkdir -p $(@D)
	clang -std=gnu11 -g -O1 -DHOSTED -I. -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all $< $(PORTABLE_SRCS) -o $@

# The VMBus channel-message checks (shared by the guest and hvsim).
$(BUILD)/fuzz/fuzz_vmbusmsg: test/fuzz/fuzz_vmbusmsg.c hv/vmbus/proto/vmbus_msg.c hv/vmbus/proto/vmbus_proto.h hv/proto/hvdefs.h | deps
	@mkdir -p $(@D)
	clang -std=gnu11 -g -O1 -DHOSTED -I. -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all $< hv/vmbus/proto/vmbus_msg.c -o $@

# Images the boot tests need (built with the default command line; tests add theirs per boot).
test: deps
	@$(MAKE) --no-print-directory APP=hello all vhdx
	@$(MAKE) --no-print-directory APP=hvprobe all
	@$(MAKE) --no-print-directory APP=vmbusprobe all
	@$(MAKE) --no-print-directory APP=udp-echo all
	@$(MAKE) --no-print-directory unit $(FUZZERS) $(BUILD)/sim/hvsim
	@python3 test/run_tests.py --build $(BUILD) --fuzz-seconds $(or $(FUZZ_SECONDS),10)

# Benchmarks of the layers add their targets to BENCHES (kmcl/kmcl.mk); each prints its method.
bench: deps
	@$(MAKE) --no-print-directory APP=hello all
	@python3 tools/bench_boot.py --build $(BUILD) --boots $(or $(BOOTS),5)
	$(if $(BENCHES),@$(MAKE) --no-print-directory $(BENCHES))

fuzz: deps $(FUZZERS)
	@python3 test/run_tests.py --build $(BUILD) --only fuzz --fuzz-seconds $(or $(FUZZ_SECONDS),300)

clean:
	rm -rf $(BUILD)

include sim/sim.mk
include test/hosted/hosted.mk
include kmcl/kmcl.mk
include drivers/netvsc/proto/proto.mk
include lib/net/net.mk
include drivers/netvsc/netvsc.mk

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
