; Kernel entry from the UEFI loader: rdi = struct boot_info *, interrupts off, long mode, the loader's
; temporary page tables (identity + kernel at its link address). Switch to the kernel's boot stack
; and enter C.

bits 64
default rel

section .text
global _start
extern kmain

_start:
    cli
    cld
    lea rsp, [boot_stack_top]
    xor ebp, ebp
    push rbp                ; zero return address: backtraces stop here
    push rbp
    call kmain
.hang:
    hlt
    jmp .hang

section .bss
align 4096
global boot_stack_bottom
boot_stack_bottom:
    resb 32768
boot_stack_top:

section .note.GNU-stack noalloc noexec nowrite progbits
