; Application-processor start-up code, assembled as a flat binary and copied by smp.c to a page below
; 1 MiB (the SIPI vector page). It runs in real mode at CS = page >> 4, IP = 0, so everything is
; addressed relative to CS; the few absolute (linear) addresses are patched in by the BSP into the
; data block at the end (struct smp_trampoline_data in smp.c: keep the offsets in step).
;
; Real mode -> long mode directly: load a GDT, set PAE, CR3 (the kernel's PML4, below 4 GiB), EFER.LME
; and NXE, then PE|PG together, and far-jump into a 64-bit segment.

bits 16
org 0

tramp_start:
    cli
    cld
    mov ax, cs
    mov ds, ax
    ; Fix up the GDT pointer's base: linear = (cs << 4) + gdt offset.
    xor ebx, ebx
    mov bx, cs
    shl ebx, 4
    lea eax, [ebx + tramp_gdt]
    mov [tramp_gdtr + 2], eax
    lgdt [tramp_gdtr]
    ; The far jump's 32-bit linear target, patched the same way.
    lea eax, [ebx + long_mode]
    mov [far_target], eax

    mov eax, cr4
    or eax, (1 << 5) | (1 << 7)     ; PAE, PGE
    mov cr4, eax
    mov eax, [data_cr3]
    mov cr3, eax
    mov ecx, 0xC0000080             ; EFER
    rdmsr
    or eax, (1 << 8) | (1 << 11)    ; LME, NXE
    wrmsr
    mov eax, cr0
    or eax, 0x80010001              ; PG, WP, PE
    mov cr0, eax
    ; 32-bit operand-size far jump to the 64-bit code segment.
    db 0x66, 0xEA
far_target:
    dd 0
    dw 0x08

bits 64
long_mode:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov ebx, ebx                    ; the linear base, zero-extended (upper halves are undefined)
    mov rsp, [rbx + data_stack]
    mov rdi, [rbx + data_cpu]
    mov rax, [rbx + data_entry]
    xor ebp, ebp
    push rbp
    jmp rax

align 16
tramp_gdt:
    dq 0
    dq 0x00af9a000000ffff           ; 64-bit code
    dq 0x00cf92000000ffff           ; data
tramp_gdtr:
    dw 3 * 8 - 1
    dd 0

align 8
; struct smp_trampoline_data (offsets published below for smp.c)
data_block:
data_cr3:   dq 0
data_stack: dq 0
data_cpu:   dq 0
data_entry: dq 0
data_alive: dq 0        ; the AP writes 1 here once in C: the BSP's proof of life

tramp_end:

; Offsets exported to C by the Makefile through `nasm -f bin` + a generated header would be overkill;
; instead the data block is the last 40 bytes of the image, as smp.c assumes (checked there).
