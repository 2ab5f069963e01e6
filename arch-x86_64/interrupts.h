/*
 * interrupts: the IDT and interrupt dispatch.
 *
 * Every vector enters through isr.asm into isr_dispatch(). Exceptions (0..31) go to the exception
 * handler. For vectors 32..255 dispatch raises IRQL to the vector's class (vector >> 4), sends EOI to
 * the local APIC (CR8 now masks the class, so EOI early is safe), enables interrupts so higher
 * levels can nest, runs the registered handler, then restores IRQL on the way out. A pending
 * lower-level interrupt (a DPC request, say) is then taken right after iretq.
 *
 * Handlers run at their vector's IRQL and must not block. Registration happens at boot, at PASSIVE.
 */
#ifndef ARCH_INTERRUPTS_H
#define ARCH_INTERRUPTS_H

#include <stdint.h>

#include "kernel/status.h"

struct int_frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t vector, error;
    uint64_t rip, cs, rflags, rsp, ss; /* pushed by the CPU */
};
_Static_assert(sizeof(struct int_frame) == 22 * 8, "int_frame matches isr.asm");

typedef void (*irq_handler_fn)(struct int_frame *f, void *ctx);

void idt_init(void);    /* builds the IDT (once) */
void idt_load(void);    /* per CPU */
status_t irq_register(uint8_t vector, irq_handler_fn fn, void *ctx) WARN_UNUSED;
/* A free vector in the class of `level` (IRQL_DEVICE_LOW..IRQL_DEVICE_HIGH), registered to fn. */
status_t irq_alloc_vector(uint8_t level, irq_handler_fn fn, void *ctx, uint8_t *vector_out) WARN_UNUSED;

void isr_dispatch(struct int_frame *f);

/* exceptions.c */
void exception_handle(struct int_frame *f);
/* Runs fn() with `vector` expected: if fn raises it, the fault is reported (marked expected) and
 * fn's caller resumes. Returns 1 if the exception happened, 0 if not. At PASSIVE or DISPATCH. */
int exception_probe(uint8_t vector, void (*fn)(void));
void dump_frame(const struct int_frame *f, const char *title);
void backtrace_from(uint64_t rbp, uint64_t rip);

#endif
