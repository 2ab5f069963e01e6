#include "arch-x86_64/gdt.h"
#include "arch-x86_64/interrupts.h"
#include "arch-x86_64/irql.h"
#include "arch-x86_64/lapic.h"
#include "kernel/log.h"
#include "kernel/percpu.h"

struct __attribute__((packed)) idt_gate {
    uint16_t offset_lo;
    uint16_t selector;
    uint8_t ist;
    uint8_t type_attr;
    uint16_t offset_mid;
    uint32_t offset_hi;
    uint32_t reserved;
};
_Static_assert(sizeof(struct idt_gate) == 16, "64-bit IDT gate (Intel SDM Vol. 3A, Figure 6-8)");

struct __attribute__((packed)) idtr {
    uint16_t limit;
    uint64_t base;
};

extern const uint64_t isr_stub_table[256];
static struct idt_gate idt[256] __attribute__((aligned(16)));
static struct {
    irq_handler_fn fn;
    void *ctx;
} handlers[256];

void idt_init(void)
{
    for (int v = 0; v < 256; v++) {
        uint64_t a = isr_stub_table[v];
        idt[v].offset_lo = (uint16_t)a;
        idt[v].selector = SEL_KERNEL_CODE;
        idt[v].ist = v == 8 ? IST_DOUBLE_FAULT : v == 2 ? IST_NMI : v == 18 ? IST_MACHINE_CHECK : 0;
        idt[v].type_attr = 0x8e; /* present, DPL 0, interrupt gate (IF cleared on entry) */
        idt[v].offset_mid = (uint16_t)(a >> 16);
        idt[v].offset_hi = (uint32_t)(a >> 32);
    }
}

void idt_load(void)
{
    struct idtr r = { sizeof idt - 1, (uint64_t)idt };
    __asm__ volatile("lidt %0" : : "m"(r));
}

status_t irq_register(uint8_t vector, irq_handler_fn fn, void *ctx)
{
    if (vector < 32 || !fn)
        return STATUS_INVALID_PARAMETER;
    if (handlers[vector].fn)
        return STATUS_EXISTS;
    handlers[vector].ctx = ctx;
    __atomic_store_n(&handlers[vector].fn, fn, __ATOMIC_RELEASE);
    return STATUS_OK;
}

status_t irq_alloc_vector(uint8_t level, irq_handler_fn fn, void *ctx, uint8_t *vector_out)
{
    if (level < IRQL_DEVICE_LOW || level > IRQL_DEVICE_HIGH)
        return STATUS_INVALID_PARAMETER;
    for (unsigned v = (unsigned)level << 4; v < ((unsigned)level << 4) + 16u; v++) {
        if (!handlers[v].fn && irq_register((uint8_t)v, fn, ctx) == STATUS_OK) {
            *vector_out = (uint8_t)v;
            return STATUS_OK;
        }
    }
    return STATUS_NO_SPACE;
}

void isr_dispatch(struct int_frame *f)
{
    uint64_t v = f->vector;
    if (v < 32) {
        exception_handle(f);
        return;
    }
    if (v == VECTOR_SPURIOUS)
        return; /* no EOI for the spurious vector */
    struct cpu *c = this_cpu();
    c->interrupts++;
    irql_t old = irql_current();
    irql_t level = (irql_t)(v >> 4);
    /* The APIC would not deliver a vector whose class is at or under the current level, so
     * level > old holds; the class sets the level the handler runs at. */
    write_cr8(level);
    lapic_eoi();
    sti();
    irq_handler_fn fn = __atomic_load_n(&handlers[v].fn, __ATOMIC_ACQUIRE);
    if (fn)
        fn(f, handlers[v].ctx);
    else
        pr_warn("interrupt: vector %#llx with no handler", (unsigned long long)v);
    cli();
    write_cr8(old);
}
