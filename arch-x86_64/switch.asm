; Thread context switch and helpers. The System V ABI's callee-saved registers and RFLAGS are kept
; on the outgoing thread's stack; everything else was saved by the caller.

bits 64
default rel
section .text

global context_switch
global thread_entry_asm
global call_on_stack
global probe_call
extern thread_start

; void context_switch(uint64_t *save_rsp, uint64_t new_rsp)
context_switch:
    pushfq
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    mov [rdi], rsp
    mov rsp, rsi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    popfq
    ret

; First instruction of every new thread (context_switch "returns" here).
thread_entry_asm:
    xor ebp, ebp
    and rsp, -16
    call thread_start
    ud2

; void call_on_stack(void *arg, void (*fn)(void *), uint64_t stack_top) -- never returns
call_on_stack:
    mov rsp, rdx
    xor ebp, ebp
    push rbp                ; zero return address ends backtraces
    push rbp
    call rsi
    ud2

; int probe_call(void (*fn)(void), struct probe_ctx *ctx)
; Saves what a longjmp needs; if fn faults with the expected vector, the exception handler rewrites
; the frame to return from here with eax = 1 (see exceptions.c).
probe_call:
    mov [rsi + 0], rbx
    mov [rsi + 8], rbp
    mov [rsi + 16], r12
    mov [rsi + 24], r13
    mov [rsi + 32], r14
    mov [rsi + 40], r15
    lea rax, [rsp + 8]
    mov [rsi + 48], rax     ; rsp after our ret
    mov rax, [rsp]
    mov [rsi + 56], rax     ; our return address
    sub rsp, 8              ; align for the call
    call rdi
    add rsp, 8
    xor eax, eax
    ret

section .note.GNU-stack noalloc noexec nowrite progbits
