# hvrt: build, run and test. `make` builds build/$(APP)/$(APP).efi and a bootable GPT disk image;
# `make run` boots it in QEMU with OVMF; `make test` runs the hosted tests and the QEMU boot tests.
# Every entry point first installs missing Debian packages (tools/deps.sh). V=1 shows every command.
#
# Modules: each folder that is a build unit has a module.mk stating its sources once (SRCS.<dir>),
# what it needs (DEPS.<dir>) and, where its hosted build differs, HSRCS.<dir>. An image links the
# base (arch-x86_64, kernel, hv) plus the modules its application names in apps/<app>/app.mk
# (APP_MODULES) and what they need; sections nothing references are dropped (--gc-sections). The
# hosted programs (tests, fuzzers, benchmarks, hvsim) are made by one macro, `hosted`, from a
# main file and a module list (tools/hosted.mk).

APP ?= udp-echo
BUILD := build
B := $(BUILD)/$(APP)
OBJ := $(BUILD)/obj

CC := gcc
NASM := nasm
LD := ld
OBJCOPY := objcopy

# Quiet build lines ("  CC      kernel/heap.o") unless V=1.
V ?= 0
ifeq ($(V),1)
msg :=
else
msg = @printf '  %-7s %s\n' '$(1)' '$(patsubst $(BUILD)/%,%,$(2))';
endif

.PHONY: all deps run test unit boot-tests fuzz bench vhdx clean
all: deps $(BUILD)/$(APP).efi $(B)/disk.img

deps:
	@tools/deps.sh

# ---- modules ----
MODULES :=
include $(sort $(wildcard */module.mk */*/module.mk */*/*/module.mk))
# The modules a list needs, transitively.
mod_closure = $(if $(filter-out $(1),$(sort $(foreach m,$(1),$(DEPS.$(m))))),$(call mod_closure,$(sort $(1) $(foreach m,$(1),$(DEPS.$(m))))),$(sort $(1)))
mod_srcs = $(sort $(foreach m,$(call mod_closure,$(1)),$(SRCS.$(m))))
mod_hsrcs = $(sort $(foreach m,$(call mod_closure,$(1)),$(if $(filter undefined,$(origin HSRCS.$(m))),$(SRCS.$(m)),$(HSRCS.$(m)))))
mod_hdrs = $(foreach m,$(call mod_closure,$(1)),$(wildcard $(m)/*.h))

# ---- the kernel image (freestanding, linked with linker.ld) ----
KCFLAGS := -std=gnu11 -ffreestanding -fno-pic -fno-pie -mcmodel=kernel -mno-red-zone -mgeneral-regs-only \
	-fno-stack-protector -fno-omit-frame-pointer -fno-asynchronous-unwind-tables -fcf-protection=none \
	-fno-strict-aliasing -ffunction-sections -fdata-sections -O2 -g -Wall -Wextra -Werror \
	-Wno-address-of-packed-member -I. -MMD -MP
KASFLAGS := -f elf64 -g -F dwarf

ifeq ($(wildcard apps/$(APP)/main.c),)
$(error APP=$(APP): no application in apps/$(APP)/ (have: $(notdir $(patsubst %/main.c,%,$(wildcard apps/*/main.c)))))
endif
APP_MODULES :=
-include apps/$(APP)/app.mk
IMAGE_MODULES := $(call mod_closure,arch-x86_64 kernel hv $(APP_MODULES))
IMAGE_C := $(call mod_srcs,$(IMAGE_MODULES)) $(wildcard apps/$(APP)/*.c)
IMAGE_OBJS := $(IMAGE_C:%.c=$(OBJ)/%.o) $(ASM.arch-x86_64:%.asm=$(OBJ)/%.o)

$(OBJ)/%.o: %.c | deps
	@mkdir -p $(@D)
	$(call msg,CC,$@)$(CC) $(KCFLAGS) -c $< -o $@

$(OBJ)/arch-x86_64/trampoline.bin: arch-x86_64/trampoline.asm | deps
	@mkdir -p $(@D)
	$(call msg,NASM,$@)$(NASM) -f bin $< -o $@

$(OBJ)/arch-x86_64/trampoline_blob.o: arch-x86_64/trampoline_blob.asm $(OBJ)/arch-x86_64/trampoline.bin
	@mkdir -p $(@D)
	$(call msg,NASM,$@)$(NASM) $(KASFLAGS) -DTRAMPOLINE_BIN='"$(OBJ)/arch-x86_64/trampoline.bin"' $< -o $@

$(OBJ)/%.o: %.asm | deps
	@mkdir -p $(@D)
	$(call msg,NASM,$@)$(NASM) $(KASFLAGS) $< -o $@

# The image's object list is recorded so that a change of APP_MODULES relinks.
$(B)/kernel.elf: $(IMAGE_OBJS) linker.ld apps/$(APP)/app.mk
	@mkdir -p $(@D)
	$(call msg,LD,$@)$(LD) -nostdlib -static -z max-page-size=4096 -z noexecstack --gc-sections -T linker.ld \
		-o $@ $(IMAGE_OBJS)

# ---- the UEFI loader (GNU-EFI) ----
EFI_INC := /usr/include/efi
EFI_LIB := /usr/lib
EFI_CFLAGS := -std=gnu11 -I$(EFI_INC) -I$(EFI_INC)/x86_64 -I. -fpic -ffreestanding -fno-stack-protector \
	-fno-stack-check -fshort-wchar -mno-red-zone -maccumulate-outgoing-args -mgeneral-regs-only \
	-DEFI_FUNCTION_WRAPPER -O2 -Wall -Wextra -Werror -Wno-unused-parameter -MMD -MP
EFI_LDFLAGS := -nostdlib -shared -Bsymbolic -znocombreloc -L$(EFI_LIB) -T$(EFI_LIB)/elf_x86_64_efi.lds

$(BUILD)/loader/efi_main.o: boot/efi_main.c | deps
	@mkdir -p $(@D)
	$(call msg,CC,$@)$(CC) $(EFI_CFLAGS) -c $< -o $@

# The loader embeds the kernel without debug information or symbols (build/<app>/kernel.elf keeps them for
# addr2line and gdb).
$(B)/kernel.stripped.elf: $(B)/kernel.elf
	$(call msg,STRIP,$@)$(OBJCOPY) --strip-all $< $@

$(B)/loader/kernel_blob.o: boot/kernel_blob.S $(B)/kernel.stripped.elf
	@mkdir -p $(@D)
	$(call msg,AS,$@)$(CC) -c -DKERNEL_ELF='"$(B)/kernel.stripped.elf"' $< -o $@

$(B)/loader.so: $(BUILD)/loader/efi_main.o $(B)/loader/kernel_blob.o
	$(call msg,LD,$@)$(LD) $(EFI_LDFLAGS) $(EFI_LIB)/crt0-efi-x86_64.o $^ -o $@ -lefi -lgnuefi

$(B)/$(APP).efi: $(B)/loader.so
	$(call msg,EFI,$@)$(OBJCOPY) -j .text -j .sdata -j .data -j .rodata -j .dynamic -j .dynsym -j .rel -j .rela \
		-j .rel.* -j .rela.* -j .reloc --target efi-app-x86_64 --subsystem=10 $< $@
	@echo "image: $@ ($$(stat -c %s $@) bytes)"

$(BUILD)/$(APP).efi: $(B)/$(APP).efi
	@cp $< $@

# A GPT disk with one EFI system partition (FAT), built without root: mtools and sgdisk.
DISK_MB := 64
$(B)/disk.img: $(B)/$(APP).efi tools/mkdisk.sh
	$(call msg,DISK,$@)tools/mkdisk.sh $@ $(B)/$(APP).efi $(DISK_MB) "$(CMDLINE)"

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

# ---- hosted programs: tests, fuzzers, benchmarks, hvsim ----
include tools/hosted.mk

# Images the boot tests need (built with the default command line; tests add theirs per boot).
test: deps
	@$(MAKE) --no-print-directory APP=hello all vhdx
	@$(MAKE) --no-print-directory APP=hvprobe all
	@$(MAKE) --no-print-directory APP=vmbusprobe all
	@$(MAKE) --no-print-directory APP=udp-echo all
	@$(MAKE) --no-print-directory unit fuzzers $(BUILD)/sim/hvsim
	@python3 test/run_tests.py --build $(BUILD) --fuzz-seconds $(or $(FUZZ_SECONDS),10)

# Benchmarks add their targets to BENCHES; each prints its method.
bench: deps
	@$(MAKE) --no-print-directory APP=hello all
	@python3 tools/bench_boot.py --build $(BUILD) --boots $(or $(BOOTS),5)
	$(if $(BENCHES),@$(MAKE) --no-print-directory $(BENCHES))

fuzz: deps fuzzers
	@python3 test/run_tests.py --build $(BUILD) --only fuzz --fuzz-seconds $(or $(FUZZ_SECONDS),300)

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
