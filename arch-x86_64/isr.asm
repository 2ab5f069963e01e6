; Interrupt and exception entry stubs: one per vector, all funnelled into isr_common, which saves the
; general registers into a struct int_frame (arch-x86_64/interrupts.h) and calls isr_dispatch(frame).
; Vectors that push no error code get a zero so the frame has one shape.

bits 64
section .text

extern isr_dispatch
global isr_stub_table

%macro STUB 1
isr_stub_%1:
%if %1 = 8 || (%1 >= 10 && %1 <= 14) || %1 = 17 || %1 = 21 || %1 = 29 || %1 = 30
    ; the CPU pushed an error code
%else
    push qword 0
%endif
    push qword %1
    jmp isr_common
%endmacro

%assign i 0
%rep 256
    align 16
    STUB i
%assign i i+1
%endrep

isr_common:
    cld
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rdi, rsp
    ; Keep the C ABI's 16-byte stack alignment whatever the interrupted code had.
    mov rbx, rsp
    and rsp, -16
    call isr_dispatch
    mov rsp, rbx
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 16         ; vector and error code
    iretq

section .rodata
align 8
isr_stub_table:
%assign i 0
%rep 256
    dq isr_stub_ %+ i
%assign i i+1
%endrep

section .note.GNU-stack noalloc noexec nowrite progbits
