/* CPU exceptions: a full report (vector, name, error code, registers, control registers, a stack
 * backtrace), then panic; or, for an armed probe, the report and a return to the prober. */
#include "arch-x86_64/cpu.h"
#include "arch-x86_64/interrupts.h"
#include "arch-x86_64/paging.h"
#include "arch-x86_64/smp.h"
#include "kernel/log.h"
#include "kernel/panic.h"
#include "kernel/percpu.h"
#include "kernel/thread.h"

static const char *const names[32] = {
    "divide error (#DE)", "debug (#DB)", "NMI", "breakpoint (#BP)", "overflow (#OF)", "bound range (#BR)",
    "invalid opcode (#UD)", "device not available (#NM)", "double fault (#DF)", "coprocessor overrun",
    "invalid TSS (#TS)", "segment not present (#NP)", "stack fault (#SS)", "general protection (#GP)",
    "page fault (#PF)", "reserved 15", "x87 FP error (#MF)", "alignment check (#AC)", "machine check (#MC)",
    "SIMD FP error (#XM)", "virtualization (#VE)", "control protection (#CP)", "reserved 22", "reserved 23",
    "reserved 24", "reserved 25", "reserved 26", "reserved 27", "hypervisor injection (#HV)",
    "VMM communication (#VC)", "security (#SX)", "reserved 31",
};

struct probe_ctx {
    uint64_t rbx, rbp, r12, r13, r14, r15, rsp, rip;
};
int probe_call(void (*fn)(void), struct probe_ctx *ctx);

static struct probe_ctx probe_ctx[MAX_CPUS];

void backtrace_from(uint64_t rbp, uint64_t rip)
{
    kprintf("backtrace (innermost first; addr2line -e build/<app>/kernel.elf resolves):\n  #0 %016llx\n",
            (unsigned long long)rip);
    for (int depth = 1; depth < 32 && rbp; depth++) {
        /* Follow only frame pointers that are aligned, mapped and in kernel space. */
        if ((rbp & 7) || rbp < 0xffff800000000000ull || !paging_is_mapped(rbp) || !paging_is_mapped(rbp + 15)) {
            kprintf("  (frame pointer %016llx not followed)\n", (unsigned long long)rbp);
            break;
        }
        uint64_t ret = ((uint64_t *)rbp)[1];
        if (!ret)
            break;
        kprintf("  #%d %016llx\n", depth, (unsigned long long)ret);
        rbp = ((uint64_t *)rbp)[0];
    }
}

void dump_frame(const struct int_frame *f, const char *title)
{
    struct cpu *c = percpu_ready() ? this_cpu() : NULL;
    const char *name = f->vector < 32 ? names[f->vector] : "interrupt";
    kprintf("\n*** %s: vector %llu, %s, error code %#llx, cpu %u, thread %s\n", title, (unsigned long long)f->vector,
            name, (unsigned long long)f->error, c ? c->id : 0,
            c && c->current ? c->current->name : "(boot)");
    if (f->vector == 14)
        kprintf("    fault address (CR2) %016llx: %s, %s, %s%s\n", (unsigned long long)read_cr2(),
                f->error & 1 ? "protection violation" : "page not present", f->error & 2 ? "write" : "read",
                f->error & 4 ? "user" : "kernel", f->error & 16 ? ", instruction fetch" : "");
    if ((f->vector == 8 || f->vector == 14) && f->rsp >= STACK_REGION_BASE && f->rsp < STACK_REGION_BASE + (1ull << 39) &&
        !paging_is_mapped(f->rsp))
        kprintf("    kernel stack overflow: rsp %016llx is in a stack guard page\n", (unsigned long long)f->rsp);
    kprintf("    rip %016llx  cs %04llx  rflags %016llx  rsp %016llx  ss %04llx\n", (unsigned long long)f->rip,
            (unsigned long long)f->cs, (unsigned long long)f->rflags, (unsigned long long)f->rsp,
            (unsigned long long)f->ss);
    kprintf("    rax %016llx  rbx %016llx  rcx %016llx  rdx %016llx\n", (unsigned long long)f->rax,
            (unsigned long long)f->rbx, (unsigned long long)f->rcx, (unsigned long long)f->rdx);
    kprintf("    rsi %016llx  rdi %016llx  rbp %016llx  r8  %016llx\n", (unsigned long long)f->rsi,
            (unsigned long long)f->rdi, (unsigned long long)f->rbp, (unsigned long long)f->r8);
    kprintf("    r9  %016llx  r10 %016llx  r11 %016llx  r12 %016llx\n", (unsigned long long)f->r9,
            (unsigned long long)f->r10, (unsigned long long)f->r11, (unsigned long long)f->r12);
    kprintf("    r13 %016llx  r14 %016llx  r15 %016llx\n", (unsigned long long)f->r13, (unsigned long long)f->r14,
            (unsigned long long)f->r15);
    kprintf("    cr0 %016llx  cr3 %016llx  cr4 %016llx  cr8 %llu\n", (unsigned long long)read_cr0(),
            (unsigned long long)read_cr3(), (unsigned long long)read_cr4(), (unsigned long long)read_cr8());
    backtrace_from(f->rbp, f->rip);
}

int exception_probe(uint8_t vector, void (*fn)(void))
{
    struct cpu *c = this_cpu();
    irql_t old = irql_raise(IRQL_DISPATCH); /* stay on this CPU while armed */
    c->probe_vector = vector;
    int hit = probe_call(fn, &probe_ctx[c->id]);
    c->probe_vector = 0xff;
    irql_lower(old);
    return hit;
}

void exception_handle(struct int_frame *f)
{
    struct cpu *c = percpu_ready() ? this_cpu() : NULL;
    if (c && c->probe_vector == f->vector) {
        dump_frame(f, "EXCEPTION (expected, caught by probe)");
        c->probe_vector = 0xff;
        c->probe_hits++;
        struct probe_ctx *p = &probe_ctx[c->id];
        f->rbx = p->rbx;
        f->rbp = p->rbp;
        f->r12 = p->r12;
        f->r13 = p->r13;
        f->r14 = p->r14;
        f->r15 = p->r15;
        f->rsp = p->rsp;
        f->rip = p->rip;
        f->rax = 1;
        return;
    }
    if (f->vector == 2 && c && c->nmi_dump_request) {
        if (!log_held_here())
            dump_frame(f, "STATE DUMP (NMI)");
        __atomic_store_n(&c->nmi_dump_request, false, __ATOMIC_RELEASE);
        return;
    }
    if (f->vector == 2 && (panic_in_progress() || smp_stopping)) {
        /* Another CPU panicked or is powering off, and stopped us. */
        for (;;)
            hlt();
    }
    log_panic_mode();
    dump_frame(f, "FATAL EXCEPTION");
    panic("unhandled %s at %016llx", names[f->vector & 31], (unsigned long long)f->rip);
}
