/*
 * doorbell: the byte-stream parser, HELLO checks, request serving and pending-vector marking of the
 * QEMU doorbell protocol (hv/proto/simdb.h). Contract: sim/doorbell.h.
 */
#include <stdio.h>
#include <string.h>

#include "sim/doorbell.h"

static const uint8_t hello_magic[4] = { 'H', 'V', 'S', '1' };
#define HELLO_GPA_AT 4

void simdb_parser_init(struct simdb_parser *p)
{
    memset(p, 0, sizeof *p);
}

static void feed(struct simdb_parser *p, uint8_t b, const struct simdb_sink *sink)
{
    if (p->len == 0) {
        if (b == hello_magic[0])
            p->frame[p->len++] = b;
        else if (b == SIMDB_KICK)
            sink->kick(sink->ctx);
        return;
    }
    if (p->len < sizeof hello_magic) {
        if (b == hello_magic[p->len]) {
            p->frame[p->len++] = b;
            return;
        }
        /* Not a frame after all; the frame bytes so far ("H", "HV", "HVS") hold no 'H' or KICK
         * after the first, so only this byte needs another look. */
        p->len = 0;
        feed(p, b, sink);
        return;
    }
    p->frame[p->len++] = b;
    if (p->len < SIMDB_HELLO_LEN)
        return;
    p->len = 0;
    if (simdb_checksum(p->frame, SIMDB_HELLO_LEN) == 0) {
        uint64_t gpa = 0;
        for (int i = 7; i >= 0; i--)
            gpa = gpa << 8 | p->frame[HELLO_GPA_AT + i];
        sink->hello(sink->ctx, gpa);
        return;
    }
    /* Bad checksum: a real frame (or a KICK) may have begun inside this one. Bytes 1-3 are "VS1";
     * scan the rest again. No frame fits in those 9 bytes, so this recursion is one level deep. */
    uint8_t rest[SIMDB_HELLO_LEN - HELLO_GPA_AT];
    memcpy(rest, p->frame + HELLO_GPA_AT, sizeof rest);
    for (size_t i = 0; i < sizeof rest; i++)
        feed(p, rest[i], sink);
}

void simdb_parse(struct simdb_parser *p, const uint8_t *bytes, size_t n, const struct simdb_sink *sink)
{
    for (size_t i = 0; i < n; i++)
        feed(p, bytes[i], sink);
}

struct simdb_mailbox *simdb_mailbox_at(void *ram, uint64_t ram_size, uint64_t gpa, const char **why)
{
    const uint64_t size = SIMDB_MAILBOX_PAGES * 4096ull;
    if (gpa % 4096) {
        *why = "mailbox not page-aligned";
        return NULL;
    }
    if (size > ram_size || gpa > ram_size - size) {
        *why = "mailbox outside guest RAM";
        return NULL;
    }
    return (struct simdb_mailbox *)((uint8_t *)ram + gpa);
}

const char *simdb_check_hello(const struct simdb_mailbox *mb, uint32_t *vp_count)
{
    if (__atomic_load_n(&mb->guest_magic, __ATOMIC_ACQUIRE) != SIMDB_GUEST_MAGIC)
        return "wrong guest magic";
    if (__atomic_load_n(&mb->version, __ATOMIC_RELAXED) != SIMDB_VERSION)
        return "unsupported protocol version";
    uint32_t n = __atomic_load_n(&mb->vp_count, __ATOMIC_RELAXED);
    if (n < 1 || n > SIMDB_MAX_VPS)
        return "vp_count outside 1..64";
    *vp_count = n;
    return NULL;
}

uint64_t simdb_hello_guest_tsc(const struct simdb_mailbox *mb)
{
    return __atomic_load_n(&mb->hello_guest_tsc, __ATOMIC_RELAXED);
}

void simdb_accept_hello(struct simdb_mailbox *mb)
{
    __atomic_store_n(&mb->host_magic, SIMDB_HOST_MAGIC, __ATOMIC_RELEASE);
}

static void serve_log(void (*log)(void *ctx, const char *line), void *log_ctx, const char *line)
{
    if (log)
        log(log_ctx, line);
    else
        fprintf(stderr, "%s\n", line);
}

unsigned simdb_serve(struct hvsim *sim, struct simdb_mailbox *mb, uint32_t vp_count,
                     void (*log)(void *ctx, const char *line), void *log_ctx)
{
    unsigned served = 0;
    if (vp_count > SIMDB_MAX_VPS)
        vp_count = SIMDB_MAX_VPS;
    for (uint32_t i = 0; i < vp_count; i++) {
        struct simdb_request *r = &mb->req[i];
        uint32_t seq = __atomic_load_n(&r->seq, __ATOMIC_ACQUIRE);
        if (seq == __atomic_load_n(&r->done, __ATOMIC_RELAXED))
            continue;
        hvsim_observe_guest_tsc(sim, __atomic_load_n(&r->guest_tsc, __ATOMIC_RELAXED), hvsim_host_tsc());
        uint32_t op = __atomic_load_n(&r->op, __ATOMIC_RELAXED);
        uint32_t vp = __atomic_load_n(&r->vp, __ATOMIC_RELAXED);
        uint64_t arg[3];
        for (int k = 0; k < 3; k++)
            arg[k] = __atomic_load_n(&r->arg[k], __ATOMIC_RELAXED);
        uint64_t ret[4] = { 0 };
        bool bad = vp != i;
        if (!bad) {
            switch (op) {
            case SIMDB_OP_CPUID: {
                uint32_t regs[4];
                hvsim_cpuid(sim, i, (uint32_t)arg[0], (uint32_t)arg[1], regs);
                for (int k = 0; k < 4; k++)
                    ret[k] = regs[k];
                break;
            }
            case SIMDB_OP_RDMSR: /* the MSR number is ECX: 32 bits */
                ret[1] = !hvsim_rdmsr(sim, i, (uint32_t)arg[0], &ret[0]);
                break;
            case SIMDB_OP_WRMSR:
                ret[1] = !hvsim_wrmsr(sim, i, (uint32_t)arg[0], arg[1]);
                break;
            case SIMDB_OP_HYPERCALL:
                ret[0] = hvsim_hypercall(sim, i, arg[0], arg[1], arg[2]);
                break;
            default:
                bad = true;
                break;
            }
        }
        if (bad) {
            char line[128];
            snprintf(line, sizeof line, "hvsim: mailbox slot %u: malformed request (vp field %u, op %u)", i, vp, op);
            serve_log(log, log_ctx, line);
            ret[1] = 1;
        }
        for (int k = 0; k < 4; k++)
            __atomic_store_n(&r->ret[k], ret[k], __ATOMIC_RELAXED);
        __atomic_store_n(&r->done, seq, __ATOMIC_RELEASE);
        served++;
    }
    return served;
}

bool simdb_set_pending(struct simdb_mailbox *mb, uint32_t vp, uint8_t vector)
{
    if (vp >= SIMDB_MAX_VPS)
        return false;
    __atomic_fetch_or(&mb->pending[vp][vector / 64], 1ull << (vector % 64), __ATOMIC_SEQ_CST);
    return true;
}
