/*
 * fuzz_host: the stateful host fuzzer. The input drives a hostile host against the real guest layers
 * (hv/, hv/vmbus, kmcl) on the deterministic platform (test/dsim/dsim.h), so that every input replays
 * exactly: the same bytes, the same schedule, the same bug.
 *
 * Input: byte 0-7 the schedule's seed; byte 8 the machine (VPs, preemption, VMBus version, a NIC:
 * hvsim's netvsp and the guest's netvsc, whose receive path the script feeds); the rest
 * is a script of 3-byte host actions (test/fuzz/gen_host_seeds.py lists them), run by a host context
 * while guest workers go through a fixed workload (choices from the seed); after the script the host
 * reads and answers everything until the workers are done. The workload: kmcl
 * channels on a "fuzz device" whose host side is this script, raw opens, GPADLs and a kmcl echo on
 * hvsim's test device. The host is hvsim's real VMBus server, plus what the script does beside it:
 *
 *   VMBus  answers forged for any request the guest has pending (in any order, with any status),
 *          earlier answers replayed (late, duplicate), forged offers and rescinds, real rescinds
 *          and hot-adds through the server, stray channel signals;
 *   kmcl   on the fuzz device's rings: completions for any transaction id the guest used (or any
 *          number), data packets asking for completions, reading k packets (answering or not), a
 *          host that stops reading, ring indices moved to any value;
 *   netvsc frames, script bytes as RNDIS messages in receive sub-allocations with the transfer-page
 *          packet's range, page set and NVSP type moved (hvsim_netvsp_deliver_raw), link changes.
 *
 * Invariants: no sanitizer report, no hang (bounded virtual time and steps: every wait of the guest
 * has a timeout), every kmcl send's completion routine runs exactly once by the time the channel is
 * disabled, the workers finish.
 *
 * Known bugs: KNOWN_BUGS=1 (every group of test/dsim/known_bugs.h) or KNOWN_BUGS=group,... lets the
 * script rescind channels the guest is using (forged or real), complete guessed transaction ids,
 * move the read index kmcl's writer reads, and run kmcl channels on another CPU than their
 * disabler, which reach the bugs issue 13 lists as being fixed and the ones this fuzzer found;
 * without it those are left out (the script's other actions are not), so `make test` stays green
 * until the fixes land.
 * Reproducers: test/fuzz/corpus/host-known-bugs/ (docs/TESTING.md).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test/dsim/dsim.h"
#include "test/dsim/known_bugs.h"
#include "test/fuzz/fuzz_input.h"

#include "hv/hv.h"
#include "hv/vmbus/vmbus.h"
#include "hv/vmbus/vmbus_internal.h"
#include "kernel/app.h"
#include "kernel/cmdline.h"
#include "kernel/mm.h"
#include "kernel/netdev.h"
#include "kernel/percpu.h"
#include "drivers/netvsc/netvsc.h"
#include "kmcl/channel.h"
#include "kmcl/core/packet.h"
#include "kmcl/core/ring.h"
#include "sim/hvsim.h"
#include "sim/netvsp/netvsp.h"
#include "sim/vmbus_server.h"
#include "sim/vsp/vsp_test.h"

/* "fuzzdev\0..." */
#define FUZZ_GUID VMBUS_GUID_INIT(0x7a7a7566, 0x6564, 0x0076, 0x66, 0x75, 0x7a, 0x7a, 0x64, 0x65, 0x76, 0x00)
#define HISTORY 16
#define SEEN_IDS 64

/* What the host's own writes into the fuzz device's rings returned: a full ring or a failed
 * endpoint is part of the game, so the count is only reported with VERBOSE. */
static uint32_t host_write_refusals;

static void host_wrote(status_t s)
{
    if (s != STATUS_OK)
        host_write_refusals++;
}

static struct {
    uint32_t known_bugs; /* enum known_bug groups */
    struct reader script;
    struct hvsim_vmbus *vb;
    struct hvsim_vsp_test *vsp;
    struct hvsim_vmbus_device devs[4];
    uint32_t ndev;
    bool host_done, workers_done;
    bool claimed[VMBUS_MAX_RELID + 1];
    bool doomed[VMBUS_MAX_RELID + 1]; /* the script rescinded it: no worker may pick it up (safe mode) */
    /* the fuzz device's host side */
    struct hvsim_vmbus_channel *fch;
    struct kmcl_ring from_guest, to_guest;
    struct kmcl_ring_control *from_ctl, *to_ctl;
    bool attached;
    uint8_t bounce[64 * 1024];
    uint64_t seen[SEEN_IDS];
    uint32_t nseen;
    /* answers sent, for replays */
    uint8_t hist[HISTORY][HV_MESSAGE_PAYLOAD_MAX];
    uint32_t hist_len[HISTORY], nhist;
    /* the NIC (machine bit 6): hvsim's netvsp, netvsc in the guest */
    struct hvsim_netvsp *nvsp;
    struct netvsc *nv;
    uint32_t nic_rx;
} F;

/* ---- the fuzz device (callbacks on the server's context) ---- */

static void fd_open(void *ctx, struct hvsim_vmbus_channel *ch, void *in_ring, uint32_t in_bytes, void *out_ring,
                    uint32_t out_bytes)
{
    (void)ctx;
    F.fch = ch;
    /* Ids seen in an earlier open name packets of a new xact table now (kmcl's ids restart at
     * generation 1): completing them is a guess, and may hit a packet still on the send backlog
     * (issue 13 item 1: found this way by the fuzzer). */
    if (!(F.known_bugs & KB_GUESSED_IDS))
        F.nseen = 0;
    F.from_ctl = in_ring;
    F.to_ctl = out_ring;
    F.attached = kmcl_ring_attach_pages(&F.from_guest, KMCL_RING_READER, in_ring, in_bytes, 0) == STATUS_OK &&
                 kmcl_ring_attach_pages(&F.to_guest, KMCL_RING_WRITER, out_ring, out_bytes, 0) == STATUS_OK;
}

static void fd_close(void *ctx, struct hvsim_vmbus_channel *ch)
{
    (void)ctx;
    if (F.fch == ch) {
        F.fch = NULL;
        F.attached = false;
    }
}

static void fd_signal(void *ctx, struct hvsim_vmbus_channel *ch)
{
    (void)ctx;
    (void)ch; /* the script decides when the host reads */
}

static void signal_fuzz_guest(void)
{
    if (F.fch)
        (void)hvsim_vmbus_signal_guest(F.fch);
}

/* Reads up to n packets from the guest; each that asks for a completion is answered (how: mode). */
static void fd_read(uint32_t n, uint8_t mode)
{
    if (!F.attached)
        return;
    kmcl_ring_begin_read(&F.from_guest);
    for (uint32_t i = 0; i < n; i++) {
        struct kmcl_ring_packet p;
        if (kmcl_ring_peek(&F.from_guest, &p, F.bounce, sizeof F.bounce) != STATUS_OK)
            break;
        uint64_t id = p.desc.trans_id;
        bool wants = p.desc.flags & KMCL_PKT_FLAG_COMPLETION_REQUESTED;
        kmcl_ring_consume(&F.from_guest);
        if (wants)
            F.seen[F.nseen++ % SEEN_IDS] = id;
        if (getenv("VERBOSE"))
            fprintf(stderr, "fuzz_host: host read a packet, id %#llx%s\n", (unsigned long long)id,
                    wants ? (mode & 3 ? ", answered" : ", kept") : "");
        if (wants && (mode & 3) != 0) { /* 0: keep the id for later; else answer now (twice for 3) */
            uint8_t payload[64];
            memset(payload, mode, sizeof payload);
            struct kmcl_iov iov = { payload, 8u * (mode >> 5) };
            bool sig = false;
            for (int k = 0; k < ((mode & 3) == 3 ? 2 : 1); k++)
                host_wrote(kmcl_pkt_send_completion(&F.to_guest, id, &iov, 1, 0, &sig));
            if (sig)
                signal_fuzz_guest();
        }
    }
    bool sig = false, raced = kmcl_ring_end_read(&F.from_guest, &sig);
    (void)raced; /* a packet that raced in waits for the next read */
    if (sig)
        signal_fuzz_guest(); /* the guest's writer asked (pending_send_sz) to hear of the room */
}

/* ---- forged VMBus messages ---- */

static void post_guest(const void *m, uint32_t size)
{
    (void)hvsim_post(dsim_sim(), vmbus_bus.target_vp, VMBUS_MESSAGE_SINT, HV_MESSAGE_VMBUS, m, size, false);
    uint32_t h = F.nhist++ % HISTORY;
    memcpy(F.hist[h], m, size);
    F.hist_len[h] = size;
}

/* An answer to the guest's k-th pending request, status from the script. */
/* The answer the host owes a request (the bus's table in hv/vmbus/vmbus.c pairs them the same way). */
static uint32_t answer_to(uint32_t request)
{
    switch (request) {
    case VMBUS_MSG_INITIATE_CONTACT: return VMBUS_MSG_VERSION_RESPONSE;
    case VMBUS_MSG_REQUESTOFFERS: return VMBUS_MSG_ALLOFFERS_DELIVERED;
    case VMBUS_MSG_GPADL_HEADER: return VMBUS_MSG_GPADL_CREATED;
    case VMBUS_MSG_GPADL_TEARDOWN: return VMBUS_MSG_GPADL_TORNDOWN;
    case VMBUS_MSG_OPENCHANNEL: return VMBUS_MSG_OPENCHANNEL_RESULT;
    case VMBUS_MSG_MODIFYCHANNEL: return VMBUS_MSG_MODIFYCHANNEL_RESPONSE;
    case VMBUS_MSG_UNLOAD: return VMBUS_MSG_UNLOAD_RESPONSE;
    default: return VMBUS_MSG_INVALID;
    }
}

static void forge_answer(uint8_t k, uint8_t status)
{
    struct vmbus_request *r = NULL;
    uint32_t n = 0;
    for (struct list *l = vmbus_bus.requests.next; l && l != &vmbus_bus.requests; l = l->next)
        n++;
    if (!n)
        return;
    uint32_t want = k % n;
    for (struct list *l = vmbus_bus.requests.next; l != &vmbus_bus.requests; l = l->next)
        if (want-- == 0) {
            r = container_of(l, struct vmbus_request, link);
            break;
        }
    uint32_t st = status < 200 ? 0 : 0xC0000001u;
    uint8_t m[HV_MESSAGE_PAYLOAD_MAX] = { 0 };
    uint32_t size = 0;
    uint32_t type = answer_to(r->request);
    switch (type) {
    case VMBUS_MSG_VERSION_RESPONSE: {
        struct vmbus_msg_version_response2 *v = (void *)m;
        v->v1.version_supported = status & 1;
        v->v1.msg_conn_id = status & 2 ? 0 : VMBUS_CONN_MESSAGE;
        size = sizeof *v;
        break;
    }
    case VMBUS_MSG_GPADL_CREATED: {
        struct vmbus_msg_gpadl_created *g = (void *)m;
        g->child_relid = r->relid;
        g->gpadl = r->key;
        g->status = st;
        size = sizeof *g;
        break;
    }
    case VMBUS_MSG_GPADL_TORNDOWN: {
        struct vmbus_msg_gpadl_torndown *g = (void *)m;
        g->gpadl = r->key;
        size = sizeof *g;
        break;
    }
    case VMBUS_MSG_OPENCHANNEL_RESULT: {
        struct vmbus_msg_open_result *o = (void *)m;
        o->child_relid = r->relid;
        o->open_id = r->key;
        o->status = st;
        size = sizeof *o;
        break;
    }
    case VMBUS_MSG_MODIFYCHANNEL_RESPONSE: {
        struct vmbus_msg_modify_channel_response *o = (void *)m;
        o->child_relid = r->relid;
        o->status = st;
        size = sizeof *o;
        break;
    }
    default: /* ALLOFFERS_DELIVERED, UNLOAD_RESPONSE: the header is all */
        size = sizeof(struct vmbus_msg_header);
        break;
    }
    ((struct vmbus_msg_header *)m)->type = type;
    post_guest(m, size);
}

/* Safe mode: only an offer no worker holds, and none will pick up (a rescind frees an unheld
 * offered channel at once; one still held is issue 13's channel-lifetime bug). */
static bool may_rescind(uint32_t relid)
{
    struct vmbus_channel *ch = relid <= VMBUS_MAX_RELID ? vmbus_bus.by_relid[relid] : NULL;
    uint32_t need = 0; /* the group that may rescind it (test/dsim/known_bugs.h), 0: always */
    if (ch && ch->sub_index)
        need = KB_RESCIND_SUB;
    else if (ch && ch->state == VMBUS_CH_OPENING)
        need = KB_RESCIND_DURING_OPEN;
    else if (ch && ch->state != VMBUS_CH_OFFERED)
        need = KB_RESCIND_OPEN;
    else if (ch && F.claimed[relid])
        need = KB_RESCIND_HELD;
    bool ok = !need || (F.known_bugs & need);
    if (ok && relid <= VMBUS_MAX_RELID)
        F.doomed[relid] = true;
    return ok;
}

static void forge_offer(uint8_t relid, uint8_t how)
{
    struct vmbus_msg_offer_channel o;
    memset(&o, 0, sizeof o);
    o.hdr.type = VMBUS_MSG_OFFERCHANNEL;
    struct vmbus_guid fz = FUZZ_GUID, t = VMBUS_GUID_HVSIM_TEST;
    o.offer.if_type = how & 1 ? fz : t;
    o.offer.if_instance.b[0] = how;
    o.offer.sub_channel_index = how & 2 ? (uint16_t)(how >> 4) : 0;
    o.child_relid = relid;
    o.monitor_id = how;
    o.monitor_allocated = how >> 7;
    o.connection_id = HVSIM_VMBUS_CONN_CHANNEL_BASE + relid;
    post_guest(&o, sizeof o);
}

/* ---- the NIC (a machine with bit 6): the script's netvsp actions ---- */

/* What the host does to the guest's netvsc (op 8 with b bit 7): a frame, bytes of the script as an
 * RNDIS message in a receive sub-allocation with the transfer-page packet's fields moved, the link
 * plugged or unplugged, a frame of any length. */
static void nic_action(uint8_t a, uint8_t b)
{
    uint8_t buf[HVSIM_NETVSP_MAX_FRAME];
    switch (a % 4) {
    case 0:
    case 3: {
        uint32_t len = a % 4 == 0 ? 14u + 6u * (b & 0x7f) : 1u + 72u * (b & 0x7f); /* <= 9145 */
        memset(buf, 0xff, 12);
        buf[12] = 0x88;
        buf[13] = 0xb5;
        for (uint32_t i = 14; i < len; i++)
            buf[i] = (uint8_t)i;
        (void)hvsim_netvsp_deliver(F.nvsp, buf, len); /* false: dropped, counted by reason */
        break;
    }
    case 1: {
        uint32_t len = 8 + 8u * (b & 15);
        for (uint32_t i = 0; i < len; i++)
            buf[i] = take8(&F.script);
        struct hvsim_netvsp_raw how = { .range_offset_delta = (int8_t)take8(&F.script) * 64,
                                        .range_len = b & 0x40 ? take8(&F.script) * 7u : 0,
                                        .pageset_id = b & 0x20 ? take8(&F.script) : 0,
                                        .nvsp_type = b & 0x10 ? take8(&F.script) : 0 };
        (void)hvsim_netvsp_deliver_raw(F.nvsp, buf, len, &how);
        break;
    }
    default:
        hvsim_netvsp_set_link(F.nvsp, b & 1);
        break;
    }
}

/* ---- the script ---- */

static void host_script(void *arg)
{
    (void)arg;
    struct reader *s = &F.script;
    while (s->n && !F.workers_done) {
        uint8_t op = take8(s), a = take8(s), b = take8(s);
        switch (op % 16) {
        case 0: case 1: case 2: /* time passes */
            dsim_sleep_ns((uint64_t)(a + 1) * (op % 16 == 2 ? 1000000u : 20000u));
            break;
        case 3:
            forge_answer(a, b);
            break;
        case 4: { /* an earlier answer again: late, or a duplicate */
            if (!F.nhist)
                break;
            uint32_t h = a % (F.nhist < HISTORY ? F.nhist : HISTORY);
            (void)hvsim_post(dsim_sim(), vmbus_bus.target_vp, VMBUS_MESSAGE_SINT, HV_MESSAGE_VMBUS, F.hist[h],
                             F.hist_len[h], false);
            break;
        }
        case 5:
            forge_offer(a % 48 + 1, b);
            break;
        case 6: { /* a forged rescind (the server does not know) */
            uint32_t relid = a % 48 + 1;
            if (!may_rescind(relid))
                break;
            struct vmbus_msg_relid m = { .hdr.type = VMBUS_MSG_RESCIND_CHANNELOFFER, .child_relid = relid };
            post_guest(&m, sizeof m);
            break;
        }
        case 7: { /* a real rescind through the server */
            uint32_t relid = a % 16 + 1;
            if (may_rescind(relid))
                (void)hvsim_vmbus_rescind(F.vb, relid);
            break;
        }
        case 8:
            if (F.nvsp && (b & 0x80)) {
                nic_action(a, b);
                break;
            }
            /* a channel signal, maybe for a channel that is not open */
            (void)hvsim_signal(dsim_sim(), vmbus_bus.target_vp, VMBUS_MESSAGE_SINT, a % 48);
            break;
        case 9: { /* a completion for a transaction id: one the guest wrote, any number, or a guess */
            if (!F.attached)
                break;
            uint64_t id = (uint64_t)a | (uint64_t)b << 8; /* never a valid id: generation 0 */
            if ((b & 3) == 1 && F.nseen)
                id = F.seen[a % (F.nseen < SEEN_IDS ? F.nseen : SEEN_IDS)];
            else if ((b & 2) && (F.known_bugs & KB_GUESSED_IDS))
                /* kmcl's ids are generation << 32 | slot + 1 (kmcl/core/xact.c): predictable, also
                 * for packets still waiting on the send backlog (issue 13 item 1). */
                id = (uint64_t)(1 + (b >> 4 & 3)) << 32 | (uint64_t)(a % 64 + 1);
            uint8_t payload[32] = { 0 };
            struct kmcl_iov iov = { payload, 8u * (b >> 6) };
            bool sig = false;
            if (getenv("VERBOSE"))
                fprintf(stderr, "fuzz_host: host completes id %#llx\n", (unsigned long long)id);
            host_wrote(kmcl_pkt_send_completion(&F.to_guest, id, &iov, 1, 0, &sig));
            if (sig || (b & 4))
                signal_fuzz_guest();
            break;
        }
        case 10:
            fd_read(a % 32 + 1, b);
            break;
        case 11: { /* a data packet for the guest, maybe asking for a completion */
            if (!F.attached)
                break;
            uint8_t payload[256];
            memset(payload, a, sizeof payload);
            struct kmcl_iov iov = { payload, 8u * (a % 32) };
            bool sig = false;
            host_wrote(kmcl_pkt_send_inband(&F.to_guest, (uint64_t)b << 8 | a,
                                            b & 1 ? KMCL_PKT_FLAG_COMPLETION_REQUESTED : 0, &iov, 1, 0, &sig));
            if (sig || (b & 2))
                signal_fuzz_guest();
            break;
        }
        case 12: { /* a ring index moved: the guest must fail the channel, not fault */
            if (!F.fch || !F.from_ctl)
                break;
            uint32_t v = (uint32_t)a << 3 | (uint32_t)b << 11;
            if (b % 4 == 1 && !(F.known_bugs & KB_BACKLOG_READ_INDEX))
                break; /* a bad read index found while flushing the send backlog loses a packet's
                        * completion routine (found by this fuzzer; see docs/TESTING.md) */
            switch (b % 4) {
            case 0: __atomic_store_n(&F.to_ctl->write_index, v, __ATOMIC_RELEASE); break;
            case 1: __atomic_store_n(&F.from_ctl->read_index, v, __ATOMIC_RELEASE); break;
            case 2: __atomic_store_n(&F.to_ctl->interrupt_mask, a, __ATOMIC_RELEASE); break;
            default: __atomic_store_n(&F.from_ctl->pending_send_sz, v, __ATOMIC_RELEASE); break;
            }
            signal_fuzz_guest();
            break;
        }
        case 13:
            signal_fuzz_guest();
            break;
        case 14: { /* hot-add a device */
            if (F.ndev == sizeof F.devs / sizeof F.devs[0])
                break;
            struct hvsim_vmbus_device *d = &F.devs[F.ndev++];
            *d = a & 1 ? hvsim_vsp_test_device(F.vsp) : F.devs[0];
            d->instance.b[15] = (uint8_t)(0x80 + F.ndev);
            (void)hvsim_vmbus_offer(F.vb, d);
            break;
        }
        default: /* the host stops reading for a while: nothing read, nothing answered */
            dsim_sleep_ns((uint64_t)(a + 1) * 100000u);
            break;
        }
    }
    F.host_done = true;
    /* The script is over: from here on a well-behaved host that reads and answers everything, so
     * that a short script is a perturbation of a normal run, not a host that fell silent. */
    while (!F.workers_done) {
        dsim_sleep_ns(200000);
        fd_read(64, 1);
    }
}

/* ---- the guest workload ---- */

struct kobs {
    uint32_t sent, routines, bad, sync_failed;
};

static void k_packet(struct kmcl_channel *ch, struct kmcl_incoming *pkt, const void *buf, uint32_t len,
                     uint32_t flags)
{
    (void)ch;
    (void)buf;
    (void)len;
    if (!(flags & KMCL_PROCESS_AT_PASSIVE) && dsim_one_in(5) &&
        kmcl_channel_packet_defer_to_passive(pkt) == STATUS_OK)
        return;
    kmcl_channel_packet_complete(pkt, NULL, 0);
}

static void k_routine(struct kmcl_packet *pkt, status_t status, const void *buf, uint32_t len)
{
    (void)buf;
    (void)len;
    struct kobs *o = kmcl_packet_get_context(pkt);
    o->routines++;
    if (status != STATUS_OK && status != STATUS_CANCELLED)
        o->bad++;
    kmcl_packet_free(pkt);
}

struct found {
    struct vmbus_guid type;
    struct vmbus_channel *ch;
};

static void find_claim(struct vmbus_channel *ch, void *ctx)
{
    struct found *f = ctx;
    uint32_t r = vmbus_channel_relid(ch);
    if (!f->ch && !F.claimed[r] && ((F.known_bugs & KB_RESCIND_HELD) || !F.doomed[r]) && !vmbus_channel_sub_index(ch) && !vmbus_channel_rescinded(ch) &&
        !vmbus_channel_is_open(ch) && vmbus_guid_equal(&vmbus_channel_offer(ch)->if_type, &f->type)) {
        F.claimed[r] = true; /* under the bus lock, no preemption point: the script sees it at once */
        vmbus_channel_hold(ch); /* the claim keeps the channel past a rescind (hv/vmbus/vmbus.h) */
        f->ch = ch;
    }
}

static struct vmbus_channel *claim(struct vmbus_guid type)
{
    struct found f = { .type = type };
    vmbus_for_each_channel(find_claim, &f);
    return f.ch;
}

static void unclaim(struct vmbus_channel *ch)
{
    F.claimed[vmbus_channel_relid(ch)] = false;
    vmbus_channel_release(ch);
}

static void kmcl_round(struct vmbus_guid type)
{
    struct vmbus_channel *vch = claim(type);
    if (!vch)
        return;
    uint32_t relid = vmbus_channel_relid(vch);
    struct kmcl_channel *ch;
    if (kmcl_channel_allocate(vch, &ch) != STATUS_OK)
        abort();
    struct kobs obs = { 0 };
    uint32_t out_pages = 2 + dsim_below(3); /* one draw per statement: argument order is unspecified */
    uint32_t in_pages = 2 + dsim_below(3);
    /* Another CPU's DPC may be dequeued but not yet running when disable frees the channel (found by
     * this fuzzer, docs/TESTING.md): without KNOWN_BUGS the channel's CPU is the worker's own. */
    uint32_t cpu = dsim_below(dsim_vps());
    if (!(F.known_bugs & KB_CROSS_CPU_DPC))
        cpu = this_cpu()->id;
    if (kmcl_channel_init_set_process_packet_callbacks(ch, k_packet, NULL) != STATUS_OK ||
        kmcl_channel_init_set_ring_buffer_page_count(ch, out_pages, in_pages) != STATUS_OK ||
        kmcl_channel_init_set_target_cpu(ch, cpu) != STATUS_OK)
        abort();
    if (kmcl_channel_enable(ch) == STATUS_OK) {
        for (uint32_t n = 0, count = 1 + dsim_below(80); n < count; n++) {
            if (dsim_one_in(8)) {
                uint8_t req[16] = { HVSIM_VSP_TEST_OP_ECHO_COMPLETION }, resp[64];
                uint32_t resp_len = sizeof resp;
                status_t r = kmcl_channel_send_synchronous_request(ch, req, sizeof req, NULL, 0, resp, &resp_len,
                                                                   (1 + dsim_below(50)) * 1000000ull);
                obs.sync_failed += r != STATUS_OK; /* the script answers or not: any status is allowed */
                continue;
            }
            struct kmcl_packet *pkt;
            if (kmcl_packet_allocate(ch, &pkt) != STATUS_OK)
                abort();
            kmcl_packet_set_context(pkt, &obs);
            kmcl_packet_set_completion_routine(pkt, k_routine);
            uint8_t buf[512] = { HVSIM_VSP_TEST_OP_ECHO_COMPLETION };
            uint32_t flags = dsim_one_in(4) ? 0 : KMCL_SEND_WAIT_FOR_COMPLETION;
            if (kmcl_packet_send(pkt, buf, 8 * (1 + dsim_below(64)), NULL, 0, flags) != STATUS_OK) {
                kmcl_packet_free(pkt);
                continue;
            }
            obs.sent++;
            if (dsim_one_in(6))
                dsim_sleep_ns(dsim_below(3000000));
        }
        /* Give the script time to answer (or not) before the channel goes away. */
        for (uint32_t t = 0; t < 200 && obs.routines < obs.sent && !F.host_done; t++)
            dsim_sleep_ns(100000);
        kmcl_channel_disable(ch);
        if (getenv("VERBOSE"))
            fprintf(stderr, "fuzz_host: kmcl round on relid %u: %u sends, %u routines, %u synchronous requests failed\n",
                    relid, obs.sent, obs.routines, obs.sync_failed);
        if (obs.routines != obs.sent || obs.bad) {
            fprintf(stderr, "fuzz_host: kmcl relid %u: %u sends, %u completion routines (%u with a bad status)\n",
                    relid, obs.sent, obs.routines, obs.bad);
            abort();
        }
    }
    kmcl_channel_cleanup(ch);
    unclaim(vch);
}

static void raw_round(void)
{
    struct vmbus_channel *ch = claim((struct vmbus_guid)VMBUS_GUID_HVSIM_TEST);
    if (!ch)
        return;
    uint32_t relid = vmbus_channel_relid(ch);
    struct vmbus_open_params p = { .out_ring_bytes = 8192, .in_ring_bytes = 8192, .target_cpu = 0 };
    status_t s = vmbus_channel_open(ch, &p);
    if (s == STATUS_OK) {
        void *buf = page_alloc(4);
        uint32_t h;
        if (buf && vmbus_gpadl_create(ch, buf, 4 * 4096, &h) == STATUS_OK &&
            vmbus_gpadl_destroy(ch, h) == STATUS_OK)
            page_free(buf, 4);
        if (dsim_one_in(2))
            vmbus_channel_signal(ch);
        s = vmbus_channel_close(ch); /* OK, or a timeout when the script ate the answer: both allowed */
    } else if (F.known_bugs & KB_ANY_RESCIND) {
        s = vmbus_channel_close(ch); /* the holder lets go of a channel whose open failed */
    }
    if (getenv("VERBOSE"))
        fprintf(stderr, "fuzz_host: raw round on relid %u: %s\n", relid, status_name(s));
    unclaim(ch);
}

/* Rounds while the script runs (at least two, at most twelve). */
static void worker(void *arg)
{
    bool second = arg != NULL;
    for (uint32_t round = 0; round < 12 && (round < 2 || !F.host_done); round++) {
        if (second || dsim_one_in(3))
            raw_round();
        else
            kmcl_round((struct vmbus_guid)FUZZ_GUID);
        if (!second && dsim_one_in(3))
            kmcl_round((struct vmbus_guid)VMBUS_GUID_HVSIM_TEST);
    }
}

/* The kernel command line netvsc reads when unconfigured (the image's comes from the loader): empty.
 * init_job configures it, so this is only what the link needs. */
static struct cmdline harness_cmdline;
const struct cmdline *kernel_cmdline(void) { return &harness_cmdline; }

static void nic_receive(void *ctx, uint32_t queue, const void *frame, uint32_t len)
{
    (void)ctx;
    (void)queue;
    (void)frame;
    (void)len;
    F.nic_rx++;
}

static const struct netdev_client nic_client = { .receive = nic_receive };

/* netvsc was bound by vmbus_init (its probe ran the handshake, answered by hvsim's netvsp, and
 * registered the netdev, configured by init_job): the worker finds and opens the device, sends
 * frames through the zero-copy transmit while the script acts, keepalives, then closes it and
 * removes the driver (netdev_unregister, HALT, buffers revoked, channels closed). Every status is
 * allowed (the script may unplug, starve or confuse it), a crash, a hang or a sanitizer report is
 * not. */
static void nic_worker(void *arg)
{
    (void)arg;
    struct netdev *dev = netdev_first();
    struct netvsc *nv = dev ? netvsc_from_netdev(dev) : NULL;
    if (nv && netdev_open(dev, &nic_client) == STATUS_OK) {
        static const uint8_t hdr[14] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x88, 0xb5 };
        for (uint32_t k = 0; k < 40 && !F.host_done; k++) {
            uint32_t len = 60 + dsim_below(140);
            uint8_t *f = netdev_tx_begin(dev, 0, len);
            status_t t = STATUS_NO_SPACE;
            if (f) {
                memcpy(f, hdr, sizeof hdr);
                memset(f + sizeof hdr, 0, len - sizeof hdr);
                t = netdev_tx_end(dev, 0, f, len);
            }
            if (t != STATUS_OK || dsim_one_in(4))
                dsim_sleep_ns(200000);
            if (dsim_one_in(10)) {
                t = netvsc_keepalive(nv);
                if (getenv("VERBOSE"))
                    fprintf(stderr, "fuzz_host: netvsc keepalive: %s\n", status_name(t));
            }
        }
        netdev_close(dev);
    }
    if (dev)
        netdev_put(dev);
    vmbus_driver_unregister(&netvsc_driver);
}

static void init_job(void *arg)
{
    status_t *s = arg;
    *s = hv_init();
    if (*s == STATUS_OK) {
        vmbus_set_timeout_ms(500);
        if (F.nvsp) {
            /* netvsc's probe (during vmbus_init) takes this configuration. One draw per statement. */
            uint32_t queues = dsim_below(3);
            uint32_t recv = (16 + dsim_below(32)) * 4096;
            struct netvsc_config cfg = { .queues = queues, .recv_buf_bytes = recv, .send_buf_bytes = 16 * 4096,
                                         .ring_pages = 8 };
            netvsc_configure(&cfg);
        }
        *s = vmbus_init(0);
    }
}

static const uint32_t versions[] = { 0, VMBUS_VERSION_WIN10_V5_3, VMBUS_VERSION_WIN10_V5, VMBUS_VERSION_WIN10 };

static void fuzz_main(void *arg)
{
    uint8_t machine = *(const uint8_t *)arg;
    F.vsp = hvsim_vsp_test_create();
    struct hvsim_vmbus_device fz = { .name = "fuzz", .type = FUZZ_GUID, .on_open = fd_open, .on_close = fd_close,
                                     .on_signal = fd_signal };
    F.devs[F.ndev++] = fz;
    F.devs[F.ndev] = hvsim_vsp_test_device(F.vsp);
    F.devs[F.ndev++].sub_channels = machine >> 7;
    if (machine & 0x40) {
        struct hvsim_netvsp_config nc = { .queues = 1 + (machine >> 3 & 1), .log = dsim_host_log };
        F.nvsp = hvsim_netvsp_create(&nc);
        if (!F.nvsp)
            abort();
        F.devs[F.ndev++] = hvsim_netvsp_device(F.nvsp);
    }
    struct hvsim_vmbus_config c = { .max_version = versions[(machine >> 4) & 3], .devices = F.devs,
                                    .device_count = F.ndev, .monitor_latency_us = 1000 };
    F.vb = hvsim_vmbus_create(dsim_sim(), &c);
    if (!F.vb || !F.vsp)
        abort();
    status_t s;
    dsim_run_on(0, init_job, &s);
    if (s == STATUS_OK) {
        struct dsim_ctx *host = dsim_spawn_host("fuzz-host", host_script, NULL);
        struct dsim_ctx *w1 = dsim_spawn_guest(0, "worker", worker, NULL);
        struct dsim_ctx *w2 = dsim_vps() > 1 ? dsim_spawn_guest(1, "worker2", worker, (void *)1) : NULL;
        struct dsim_ctx *w3 = F.nvsp ? dsim_spawn_guest(dsim_vps() - 1, "nic", nic_worker, NULL) : NULL;
        dsim_join(w1);
        if (w2)
            dsim_join(w2);
        if (w3)
            dsim_join(w3);
        F.workers_done = true;
        dsim_join(host);
    }
    dsim_power_off();
    hvsim_vmbus_destroy(F.vb);
    hvsim_vsp_test_destroy(F.vsp);
    if (F.nvsp)
        hvsim_netvsp_destroy(F.nvsp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint32_t preempts[] = { 2, 4, 8, 32 };
    memset(&F, 0, sizeof F);
    const char *kb = getenv("KNOWN_BUGS"), *bad;
    F.known_bugs = kb && *kb ? known_bugs_parse(kb, &bad) : KB_FIXED;
    struct reader r = { data, size };
    uint64_t seed = take64(&r);
    uint8_t machine = take8(&r);
    F.script = r;
    struct dsim_config dc = { .seed = seed, .vps = 1 + (machine & 1), .preempt_one_in = preempts[(machine >> 1) & 3],
                              .max_virtual_ns = 300ull * 1000000000ull, .max_steps = 3000000,
                              .verbose = getenv("VERBOSE") != NULL };
    host_write_refusals = 0;
    enum dsim_result res = dsim_run(&dc, fuzz_main, &machine);
    if (dc.verbose)
        fprintf(stderr, "fuzz_host: %u host ring writes refused\n", host_write_refusals);
    if (getenv("FUZZ_HOST_TRACE")) /* the schedule's hash: an input replays to the same one */
        fprintf(stderr, "fuzz_host: trace %016llx, %llu steps\n", (unsigned long long)dsim_trace_hash(),
                (unsigned long long)dsim_steps());
    if (res != DSIM_OK) {
        dsim_log_dump_tail(6000);
        fprintf(stderr, "fuzz_host: %s\n", dsim_failure());
        abort();
    }
    return 0;
}
