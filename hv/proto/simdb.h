/*
 * simdb: the wire protocol between the guest's sim binding (hv/binding_sim.c) and the hvsim process
 * (sim/hvsim_main.c) when the image runs under QEMU. This project's own protocol, not Hyper-V's.
 *
 * Two channels:
 *  - Guest RAM, shared: QEMU runs with `-object memory-backend-file,...,share=on` and hvsim maps the
 *    same file, so a guest physical address below the RAM size is that offset in the file. The guest
 *    allocates a mailbox (struct simdb_mailbox, SIMDB_MAILBOX_PAGES contiguous pages) and tells hvsim
 *    its address with a HELLO frame.
 *  - A spare 16550 UART (COM2, 0x2F8, IRQ 3) on a QEMU `-chardev socket` whose other end is hvsim:
 *    the doorbell, both ways. The firmware may print on any UART it knows, so hvsim ignores bytes
 *    until a HELLO frame with a correct checksum, and ignores anything that is not a frame after it.
 *
 * Guest -> hvsim bytes:
 *   HELLO: 'H' 'V' 'S' '1', the mailbox GPA (8 bytes, little-endian), then one checksum byte such that
 *          all 13 bytes sum to 0 mod 256. The guest first fills in mailbox->guest_magic, version,
 *          vp_count and hello_guest_tsc.
 *   KICK:  SIMDB_KICK (one byte): "some VP posted a request"; hvsim then scans every VP's slot.
 * hvsim -> guest bytes:
 *   SIMDB_IRQ (one byte): "look at the pending vectors"; after a HELLO, hvsim also writes
 *   mailbox->host_magic and sends SIMDB_IRQ.
 *
 * A request (the guest's cpuid, rdmsr, wrmsr or hypercall, executed by hvsim as Hyper-V would):
 *   guest: fill op/args of its VP's slot, store seq+1 (release), send KICK, spin until done == seq
 *          (acquire), read ret[]. One request per VP at a time; VP n is the guest CPU with id n.
 *   hvsim: for each slot with seq != done: execute, write ret[], store done = seq (release).
 * Interrupts (a SINT, a direct-mode timer):
 *   hvsim: atomically OR bit v of pending[vp], then send SIMDB_IRQ.
 *   guest: on the UART interrupt, read the UART until its FIFO is empty, then for every VP take
 *          pending[vp] with an atomic exchange and send each vector to that CPU as a fixed IPI. Bits
 *          set after the FIFO was drained come with another SIMDB_IRQ byte, so none is missed.
 */
#ifndef HV_SIMDB_H
#define HV_SIMDB_H

#include <stddef.h>
#include <stdint.h>

#define SIMDB_UART_PORT      0x2F8
#define SIMDB_UART_IRQ       3
#define SIMDB_VERSION        1
#define SIMDB_MAX_VPS        64
#define SIMDB_MAILBOX_PAGES  4
#define SIMDB_GUEST_MAGIC    0x3173706d69737668ull /* "hvsimps1" */
#define SIMDB_HOST_MAGIC     0x316d697376687668ull /* "hvhvsim1" */
#define SIMDB_KICK           0xA5
#define SIMDB_IRQ            0x5A
#define SIMDB_HELLO_LEN      13

enum simdb_op {
    SIMDB_OP_CPUID = 1,     /* arg0 leaf, arg1 subleaf -> ret0..3 eax ebx ecx edx */
    SIMDB_OP_RDMSR = 2,     /* arg0 msr -> ret0 value, ret1 1 if the access would #GP */
    SIMDB_OP_WRMSR = 3,     /* arg0 msr, arg1 value -> ret1 1 if the access would #GP */
    SIMDB_OP_HYPERCALL = 4, /* arg0 control (RCX), arg1 input GPA or fast input (RDX), arg2 output GPA
                             * or fast input (R8) -> ret0 the hypercall result (RAX) */
};

struct simdb_request {
    volatile uint32_t seq;  /* written by the guest */
    volatile uint32_t done; /* written by hvsim */
    uint32_t op;
    uint32_t vp;            /* the slot's own index, checked by hvsim */
    uint64_t arg[3];
    uint64_t ret[4];
    uint64_t guest_tsc;     /* the guest's TSC when it posted */
    uint8_t reserved[128 - 80];
} __attribute__((aligned(64)));
_Static_assert(sizeof(struct simdb_request) == 128, "simdb_request");
_Static_assert(offsetof(struct simdb_request, arg) == 16, "simdb_request.arg");
_Static_assert(offsetof(struct simdb_request, ret) == 40, "simdb_request.ret");

struct simdb_mailbox {
    uint64_t guest_magic;       /* SIMDB_GUEST_MAGIC, set before HELLO */
    uint32_t version;           /* SIMDB_VERSION */
    uint32_t vp_count;          /* guest CPUs; VP n <-> CPU id n */
    uint64_t hello_guest_tsc;   /* guest TSC when it sent HELLO: hvsim estimates the TSC offset */
    volatile uint64_t host_magic; /* SIMDB_HOST_MAGIC, written by hvsim when it accepts HELLO */
    uint8_t reserved[1024 - 32];
    volatile uint64_t pending[SIMDB_MAX_VPS][4]; /* 256 vector bits per VP */
    struct simdb_request req[SIMDB_MAX_VPS];
};
_Static_assert(offsetof(struct simdb_mailbox, host_magic) == 24, "mailbox.host_magic");
_Static_assert(offsetof(struct simdb_mailbox, pending) == 1024, "mailbox.pending");
_Static_assert(offsetof(struct simdb_mailbox, req) == 1024 + 2048, "mailbox.req");
_Static_assert(sizeof(struct simdb_mailbox) <= SIMDB_MAILBOX_PAGES * 4096, "mailbox fits its pages");

static inline uint8_t simdb_checksum(const uint8_t *b, size_t n)
{
    uint8_t s = 0;
    for (size_t i = 0; i < n; i++)
        s = (uint8_t)(s + b[i]);
    return (uint8_t)-s;
}

#endif
