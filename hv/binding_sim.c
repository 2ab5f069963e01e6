/*
 * binding_sim: the hvsim process as the hypervisor, under QEMU (protocol: hv/proto/simdb.h). CPUID, MSR
 * and hypercall requests go into this VP's slot of a mailbox in guest RAM, which hvsim maps, with a
 * KICK byte on COM2; hvsim executes them as Hyper-V would and the CPU spins for the answer, as it
 * would wait in a real exit. hvsim's interrupts arrive as COM2's interrupt on the boot CPU, which
 * passes each pending vector to its VP's CPU as a fixed IPI, so the SINT and timer handlers above
 * run exactly as on Hyper-V.
 */
#include "arch-x86_64/cpu.h"
#include "arch-x86_64/interrupts.h"
#include "arch-x86_64/ioapic.h"
#include "arch-x86_64/irql.h"
#include "arch-x86_64/lapic.h"
#include "arch-x86_64/paging.h"
#include "arch-x86_64/serial.h"
#include "arch-x86_64/spinlock.h"
#include "arch-x86_64/tsc.h"
#include "hv/binding.h"
#include "hv/proto/simdb.h"
#include "kernel/log.h"
#include "kernel/mm.h"
#include "kernel/panic.h"
#include "kernel/percpu.h"

#define UART_IRQL 10               /* above the SINT level, so forwarding is never held up by it */
#define ANSWER_TIMEOUT_NS 5000000000ull
#define HELLO_TIMEOUT_NS 2000000000ull

enum { RBR = 0, THR = 0, IER = 1, LSR = 5 };
#define LSR_DR 0x01
#define LSR_THRE 0x20

static struct simdb_mailbox *mb;
static uint32_t vp_count;
static spinlock_t tx_lock = SPINLOCK_INIT;
static uint64_t forwarded;

static void tx_byte(uint8_t b)
{
    for (int i = 0; i < 1000000 && !(inb(SIMDB_UART_PORT + LSR) & LSR_THRE); i++)
        cpu_relax();
    outb(SIMDB_UART_PORT + THR, b);
}

static const char *op_name(uint32_t op)
{
    static const char *const names[] = { "?", "cpuid", "rdmsr", "wrmsr", "hypercall" };
    return op < 5 ? names[op] : "?";
}

static void request(uint32_t op, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t ret[4])
{
    irql_t old = irql_raise(IRQL_HIGH); /* one request per VP at a time, interrupt handlers included */
    uint32_t vp = this_cpu()->id;
    struct simdb_request *r = &mb->req[vp];
    r->op = op;
    r->vp = vp;
    r->arg[0] = a0;
    r->arg[1] = a1;
    r->arg[2] = a2;
    r->guest_tsc = rdtsc();
    uint32_t seq = r->seq + 1;
    __atomic_store_n(&r->seq, seq, __ATOMIC_RELEASE);
    raw_spin_lock(&tx_lock);
    tx_byte(SIMDB_KICK);
    raw_spin_unlock(&tx_lock);
    uint64_t deadline = rdtsc() + ns_to_tsc(ANSWER_TIMEOUT_NS);
    while (__atomic_load_n(&r->done, __ATOMIC_ACQUIRE) != seq) {
        if (rdtsc() > deadline)
            panic("hvsim did not answer %s(%#llx, %#llx) from VP %u in 5 s: is the hvsim process still running?",
                  op_name(op), (unsigned long long)a0, (unsigned long long)a1, vp);
        cpu_relax();
    }
    for (int i = 0; i < 4; i++)
        ret[i] = r->ret[i];
    irql_lower(old);
}

static void sim_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t regs[4])
{
    uint64_t ret[4];
    request(SIMDB_OP_CPUID, leaf, subleaf, 0, ret);
    for (int i = 0; i < 4; i++)
        regs[i] = (uint32_t)ret[i];
}

/* A faulting access is a #GP on Hyper-V, which would end in the exception handler's panic: the
 * same here, with the MSR named. */
static uint64_t sim_rdmsr(uint32_t msr)
{
    uint64_t ret[4];
    request(SIMDB_OP_RDMSR, msr, 0, 0, ret);
    if (ret[1])
        panic("hvsim: rdmsr %#x raised #GP", msr);
    return ret[0];
}

static void sim_wrmsr(uint32_t msr, uint64_t value)
{
    uint64_t ret[4];
    request(SIMDB_OP_WRMSR, msr, value, 0, ret);
    if (ret[1])
        panic("hvsim: wrmsr %#x <- %#llx raised #GP", msr, (unsigned long long)value);
}

static uint64_t sim_hypercall(uint64_t control, uint64_t input, uint64_t output)
{
    uint64_t ret[4];
    request(SIMDB_OP_HYPERCALL, control, input, output, ret);
    return ret[0];
}

/* COM2's interrupt, on the boot CPU: drain the FIFO first, then take every VP's pending vectors, so
 * a vector set after the drain comes with a byte that raises the interrupt again. */
static void doorbell_interrupt(struct int_frame *f, void *ctx)
{
    (void)f;
    (void)ctx;
    for (int i = 0; i < 256 && (inb(SIMDB_UART_PORT + LSR) & LSR_DR); i++)
        (void)inb(SIMDB_UART_PORT + RBR);
    for (uint32_t vp = 0; vp < vp_count; vp++) {
        struct cpu *c = cpus[vp];
        for (uint32_t w = 0; w < 4; w++) {
            if (!__atomic_load_n(&mb->pending[vp][w], __ATOMIC_RELAXED))
                continue;
            uint64_t bits = __atomic_exchange_n(&mb->pending[vp][w], 0, __ATOMIC_ACQ_REL);
            while (bits) {
                uint8_t vector = (uint8_t)(w * 64 + (uint32_t)__builtin_ctzll(bits));
                bits &= bits - 1;
                if (!c || !c->online || vector < 32) {
                    pr_warn("hvsim: vector %#x for VP %u, which is not a running CPU: dropped", vector, vp);
                    continue;
                }
                forwarded++;
                lapic_send_ipi(c->apic_id, vector);
            }
        }
    }
}

static void sim_shutdown(void)
{
    outb(SIMDB_UART_PORT + IER, 0);
}

static const struct hv_binding sim_binding = {
    .name = "hvsim",
    .cpuid = sim_cpuid,
    .rdmsr = sim_rdmsr,
    .wrmsr = sim_wrmsr,
    .hypercall = sim_hypercall,
    .shutdown = sim_shutdown,
};

const struct hv_binding *hv_binding_sim_probe(void)
{
    if (!uart_probe(SIMDB_UART_PORT))
        return NULL;
    uint16_t p = SIMDB_UART_PORT;
    /* FIFO on and cleared, interrupt at 1 byte; DTR, RTS, OUT2 (the IRQ gate on PC UARTs). */
    uart_setup(p, 0x07, 0x0b);
    for (uint32_t i = 0; i < MAX_CPUS; i++)
        if (cpus[i] && cpus[i]->online)
            vp_count = i + 1;
    mb = page_alloc(SIMDB_MAILBOX_PAGES);
    if (!mb)
        return NULL;
    mb->guest_magic = SIMDB_GUEST_MAGIC;
    mb->version = SIMDB_VERSION;
    mb->vp_count = vp_count;
    mb->hello_guest_tsc = rdtsc();
    uint64_t gpa = virt_to_phys(mb);
    uint8_t hello[SIMDB_HELLO_LEN] = { 'H', 'V', 'S', '1' };
    for (int i = 0; i < 8; i++)
        hello[4 + i] = (uint8_t)(gpa >> (8 * i));
    hello[12] = simdb_checksum(hello, 12);
    irql_t old = spin_lock(&tx_lock);
    for (int i = 0; i < SIMDB_HELLO_LEN; i++)
        tx_byte(hello[i]);
    spin_unlock(&tx_lock, old);
    uint64_t deadline = rdtsc() + ns_to_tsc(HELLO_TIMEOUT_NS);
    while (mb->host_magic != SIMDB_HOST_MAGIC) {
        if (rdtsc() > deadline) {
            pr_info("hv: a UART at COM2 but no hvsim answer in 2 s: not using hvsim");
            page_free(mb, SIMDB_MAILBOX_PAGES);
            mb = NULL;
            return NULL;
        }
        cpu_relax();
    }
    while (inb(p + LSR) & LSR_DR)
        (void)inb(p + RBR);
    uint8_t vector;
    uint16_t flags;
    uint32_t gsi = ioapic_isa_to_gsi(SIMDB_UART_IRQ, &flags);
    if (irq_alloc_vector(UART_IRQL, doorbell_interrupt, NULL, &vector) != STATUS_OK ||
        ioapic_route(gsi, vector, cpus[0]->apic_id, flags) != STATUS_OK) {
        pr_err("hv: hvsim answered but its doorbell interrupt (GSI %u) cannot be routed", gsi);
        return NULL;
    }
    outb(p + IER, 0x01); /* received data available */
    pr_info("hv: hvsim answered on COM2: mailbox at %#llx, %u VPs, doorbell GSI %u -> vector %#x on cpu0",
            (unsigned long long)gpa, vp_count, gsi, vector);
    return &sim_binding;
}
