/*
 * libFuzzer harness for the NVSP checks both sides run on what the other sends
 * (drivers/netvsc/proto/nvsp_msg.c: nvsp_msg_check and the helpers on its result).
 *
 * Input: one flag byte, then the message bytes (one NVSP message as a VMBus packet payload carries
 * it). Flag bit 0: the direction (0 = to the host, 1 = to the guest); bit 1: apply the Hyper-V
 * indirection-table fix-up for NVSP 5 afterwards. The message is copied to a heap block of exactly
 * its size, so ASan sees any read past it.
 *
 * Checked for every input: a verdict of OK implies a known type sent in that direction and at
 * least its natural size; a reject carries a reason. For an accepted message: the section count
 * is bounded and the sections fit the message and (with SUCCESS) are consistent; the indirection
 * table's entry count is in range and every byte of the table is read from inside the message
 * (before and after the fix-up); the builders rebuild the same message from the view (checked
 * again, the same values come back); and the verdict is the same with 16 more bytes of padding.
 *
 * Seeds: test/fuzz/corpus/nvsp (written by test/fuzz/gen_netvsc_seeds.py).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/netvsc/proto/nvsp_msg.h"
#include "test/fuzz/fuzz_check.h"

static volatile uint32_t sink;

/* Rebuilds an accepted message from its view with the matching builder; 0 if there is none (or
 * the view holds values the builder cannot express). */
static uint32_t rebuild(const struct nvsp_msg *m, enum nvsp_dir dir, uint8_t *b, uint32_t cap)
{
    switch (m->type) {
    case NVSP_MSG_INIT:
        return nvsp_build_init(b, cap, 0, m->u.init.ver_min, m->u.init.ver_max);
    case NVSP_MSG_INIT_COMPLETE:
        return nvsp_build_init_complete(b, cap, 0, m->u.init_complete.negotiated_version,
                                        m->u.init_complete.max_mdl_chain_len, m->u.init_complete.status);
    case NVSP_MSG1_SEND_NDIS_VERSION:
        if (m->u.ndis_version.major > 0xFFFF || m->u.ndis_version.minor > 0xFFFF)
            return 0;
        return nvsp_build_ndis_version(b, cap, 0, m->u.ndis_version.major << 16 | m->u.ndis_version.minor);
    case NVSP_MSG1_SEND_RECEIVE_BUFFER:
        return nvsp_build_send_recv_buf(b, cap, 0, m->u.send_buf.gpadl, m->u.send_buf.id);
    case NVSP_MSG1_SEND_SEND_BUFFER:
        return nvsp_build_send_send_buf(b, cap, 0, m->u.send_buf.gpadl, m->u.send_buf.id);
    case NVSP_MSG1_SEND_RECEIVE_BUFFER_COMPLETE:
        return nvsp_build_recv_buf_complete(b, cap, 0, m->u.recv_buf_complete.status, m->u.recv_buf_complete.sections,
                                            m->u.recv_buf_complete.num_sections);
    case NVSP_MSG1_REVOKE_RECEIVE_BUFFER:
        return nvsp_build_revoke_recv_buf(b, cap, 0, m->u.revoke.id);
    case NVSP_MSG1_REVOKE_SEND_BUFFER:
        return nvsp_build_revoke_send_buf(b, cap, 0, m->u.revoke.id);
    case NVSP_MSG1_SEND_SEND_BUFFER_COMPLETE:
        return nvsp_build_send_buf_complete(b, cap, 0, m->u.send_buf_complete.status,
                                            m->u.send_buf_complete.section_size);
    case NVSP_MSG1_SEND_RNDIS_PACKET:
        return nvsp_build_rndis_pkt(b, cap, 0, m->u.rndis_pkt.channel_type, m->u.rndis_pkt.section_index,
                                    m->u.rndis_pkt.section_size);
    case NVSP_MSG1_SEND_RNDIS_PACKET_COMPLETE:
        return nvsp_build_rndis_pkt_complete(b, cap, 0, m->u.rndis_pkt_complete.status);
    case NVSP_MSG2_SEND_NDIS_CONFIG:
        return nvsp_build_ndis_config(b, cap, 0, m->u.ndis_config.mtu, m->u.ndis_config.capabilities);
    case NVSP_MSG4_SEND_VF_ASSOCIATION:
        return nvsp_build_vf_association(b, cap, 0, m->u.vf_association.allocated, m->u.vf_association.serial);
    case NVSP_MSG4_SWITCH_DATA_PATH:
        return nvsp_build_switch_data_path(b, cap, 0, m->u.switch_data_path.active_path);
    case NVSP_MSG5_OID_QUERY_EX_COMPLETE:
        return nvsp_build_oid_query_ex_complete(b, cap, 0, m->u.oid_query_ex_complete.status,
                                                m->u.oid_query_ex_complete.bytes);
    case NVSP_MSG5_SUB_CHANNEL:
        if (dir == NVSP_TO_GUEST)
            return nvsp_build_subchannel_complete(b, cap, 0, m->u.subchannel_complete.status,
                                                  m->u.subchannel_complete.num_subchannels);
        if (m->u.subchannel_req.op != NVSP_SUBCHANNEL_ALLOCATE)
            return 0;
        return nvsp_build_subchannel_req(b, cap, 0, m->u.subchannel_req.num_subchannels);
    default:
        return 0; /* OID_QUERY_EX (no builder), SEND_INDIRECTION_TABLE (checked separately) */
    }
}

static void check_accepted(const struct nvsp_msg *m, const uint8_t *buf, uint32_t len, enum nvsp_dir dir,
                           uint8_t flags)
{
    CHECK(m->len == len);
    CHECK(nvsp_msg_min_size(m->type) != 0 && len >= nvsp_msg_min_size(m->type));
    CHECK(strcmp(nvsp_msg_name(m->type), "unknown") != 0);
    CHECK(nvsp_msg_min_version(m->type) != NVSP_VERSION_INVALID);

    if (m->type == NVSP_MSG1_SEND_RECEIVE_BUFFER_COMPLETE) {
        uint32_t n = m->u.recv_buf_complete.num_sections;
        CHECK(n <= NVSP_RECV_SECTIONS_MAX);
        CHECK(12ull + 16ull * n <= len);
        for (uint32_t i = 0; i < n; i++) {
            const struct nvsp_recv_section *s = &m->u.recv_buf_complete.sections[i];
            CHECK(memcmp(s, buf + 12 + 16 * i, 16) == 0); /* copied as sent */
            if (m->u.recv_buf_complete.status == NVSP_STATUS_SUCCESS) {
                CHECK(s->sub_alloc_size && s->num_sub_allocs);
                CHECK((uint64_t)s->offset + (uint64_t)s->sub_alloc_size * s->num_sub_allocs <= s->end_offset);
                CHECK(nvsp_recv_section_fits(s, s->end_offset));
            }
        }
    }

    if (m->type == NVSP_MSG5_SEND_INDIRECTION_TABLE) {
        struct nvsp_msg v = *m;
        uint32_t count = v.u.indirection_table.count;
        CHECK(count >= NVSP_RSS_TABLE_MIN && count <= NVSP_RSS_TABLE_MAX);
        CHECK(v.u.indirection_table.offset >= 12);
        CHECK((uint64_t)v.u.indirection_table.offset + 4ull * count <= len);
        CHECK(v.u.indirection_table.table == buf + v.u.indirection_table.offset);
        uint32_t t[NVSP_RSS_TABLE_MAX];
        CHECK(nvsp_indirection_table_copy(&v, t, NVSP_RSS_TABLE_MAX) == count);
        for (uint32_t i = 0; i < count; i++)
            sink += t[i];
        if (flags & 2) {
            nvsp_indirection_table_hyperv_fixup(&v, buf, NVSP_VERSION_5);
            CHECK((uint64_t)v.u.indirection_table.offset + 4ull * count <= len);
            CHECK(nvsp_indirection_table_copy(&v, t, NVSP_RSS_TABLE_MAX) == count);
            for (uint32_t i = 0; i < count; i++)
                sink += t[i];
        }
        /* The builder's layout of the same entries checks back to the same entries. */
        uint8_t b[12 + 4 * NVSP_RSS_TABLE_MAX];
        uint32_t n = nvsp_build_indirection_table(b, sizeof b, t, count);
        CHECK(n == 12 + 4 * count);
        struct nvsp_msg r;
        const char *why;
        CHECK(nvsp_msg_check(b, n, dir, &r, &why) == STATUS_OK);
        uint32_t t2[NVSP_RSS_TABLE_MAX];
        CHECK(nvsp_indirection_table_copy(&r, t2, NVSP_RSS_TABLE_MAX) == count);
        CHECK(memcmp(t, t2, 4 * count) == 0);
        return;
    }

    /* Rebuild from the view: the same values must come back. */
    uint8_t b[128];
    uint32_t n = rebuild(m, dir, b, sizeof b);
    if (n) {
        /* The natural size (SEND_*_BUFFER: 12 with the reserved u16, 2 more than the minimum). */
        if (m->type == NVSP_MSG1_SEND_RECEIVE_BUFFER_COMPLETE)
            CHECK(n == 12 + 16 * m->u.recv_buf_complete.num_sections);
        else
            CHECK(n >= nvsp_msg_min_size(m->type) && n <= nvsp_msg_min_size(m->type) + 2);
        uint8_t *c = fuzz_copy(b, n);
        struct nvsp_msg r;
        const char *why;
        CHECK(nvsp_msg_check(c, n, dir, &r, &why) == STATUS_OK);
        r.len = m->len;
        CHECK(memcmp(&r, m, sizeof r) == 0);
        free(c);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    enum nvsp_dir dir = (flags & 1) ? NVSP_TO_GUEST : NVSP_TO_HOST;
    uint32_t len;
    uint8_t *buf = fuzz_payload(data, size, 4096, &len);

    struct nvsp_msg m;
    const char *why = (const char *)1;
    status_t st = nvsp_msg_check(buf, len, dir, &m, &why);
    if (st == STATUS_OK) {
        CHECK(why == NULL);
        check_accepted(&m, buf, len, dir, flags);
    } else {
        CHECK(st == STATUS_BAD_DATA);
        CHECK(why && why[0]);
    }

    /* The same message padded by 16 zero bytes: the same verdict (padding is never read as a
     * field), except where the padding is what was missing. */
    uint8_t *pad = calloc(1, len + 16);
    memcpy(pad, buf, len);
    struct nvsp_msg m2;
    const char *why2;
    status_t st2 = nvsp_msg_check(pad, len + 16, dir, &m2, &why2);
    if (st == STATUS_OK) {
        CHECK(st2 == STATUS_OK);
        CHECK(m2.type == m.type);
        if (m.type != NVSP_MSG5_SEND_INDIRECTION_TABLE) {
            m2.len = m.len;
            CHECK(memcmp(&m2, &m, sizeof m) == 0);
        }
    }
    free(pad);
    free(buf);
    return 0;
}
