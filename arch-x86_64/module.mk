# arch-x86_64: the CPU (guest only). Includes kernel/ and nothing above it.
MODULES += arch-x86_64
SRCS.arch-x86_64 := $(wildcard arch-x86_64/*.c)
ASM.arch-x86_64 := arch-x86_64/isr.asm arch-x86_64/entry.asm arch-x86_64/switch.asm arch-x86_64/trampoline_blob.asm
