/*
 * nvsp_msg: the NVSP checks and builders (contract in nvsp_msg.h). Pure: no state, no logging.
 */
#include "drivers/netvsc/proto/nvsp_msg.h"

#include "kernel/readonce.h"
#include "kernel/string.h"

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint16_t get16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

#define TO_HOST_BIT (1u << NVSP_TO_HOST)
#define TO_GUEST_BIT (1u << NVSP_TO_GUEST)
#define BOTH_BITS (TO_HOST_BIT | TO_GUEST_BIT)

struct type_info {
    uint32_t type;
    const char *name;
    uint8_t min_size;
    uint8_t dirs;
    uint32_t min_version;
};

/* Who sends which type: openvmm:lib.rs parse_packet (what the host accepts) and the messages it
 * writes; DPDK:hn_nvs.c / freebsd:if_hn.c (what the guests send and handle). */
static const struct type_info types[] = {
    { NVSP_MSG_INIT, "INIT", sizeof(struct nvsp_msg_init), TO_HOST_BIT, NVSP_VERSION_1 },
    { NVSP_MSG_INIT_COMPLETE, "INIT_COMPLETE", sizeof(struct nvsp_msg_init_complete), TO_GUEST_BIT, NVSP_VERSION_1 },
    { NVSP_MSG1_SEND_NDIS_VERSION, "SEND_NDIS_VERSION", sizeof(struct nvsp_msg_ndis_version), TO_HOST_BIT,
      NVSP_VERSION_1 },
    { NVSP_MSG1_SEND_RECEIVE_BUFFER, "SEND_RECEIVE_BUFFER", NVSP_MSG_SEND_BUF_MIN, TO_HOST_BIT, NVSP_VERSION_1 },
    { NVSP_MSG1_SEND_RECEIVE_BUFFER_COMPLETE, "SEND_RECEIVE_BUFFER_COMPLETE",
      sizeof(struct nvsp_msg_recv_buf_complete), TO_GUEST_BIT, NVSP_VERSION_1 },
    { NVSP_MSG1_REVOKE_RECEIVE_BUFFER, "REVOKE_RECEIVE_BUFFER", sizeof(struct nvsp_msg_revoke_buf), TO_HOST_BIT,
      NVSP_VERSION_1 },
    { NVSP_MSG1_SEND_SEND_BUFFER, "SEND_SEND_BUFFER", NVSP_MSG_SEND_BUF_MIN, TO_HOST_BIT, NVSP_VERSION_1 },
    { NVSP_MSG1_SEND_SEND_BUFFER_COMPLETE, "SEND_SEND_BUFFER_COMPLETE", sizeof(struct nvsp_msg_send_buf_complete),
      TO_GUEST_BIT, NVSP_VERSION_1 },
    { NVSP_MSG1_REVOKE_SEND_BUFFER, "REVOKE_SEND_BUFFER", sizeof(struct nvsp_msg_revoke_buf), TO_HOST_BIT,
      NVSP_VERSION_1 },
    { NVSP_MSG1_SEND_RNDIS_PACKET, "SEND_RNDIS_PACKET", sizeof(struct nvsp_msg_rndis_pkt), BOTH_BITS,
      NVSP_VERSION_1 },
    { NVSP_MSG1_SEND_RNDIS_PACKET_COMPLETE, "SEND_RNDIS_PACKET_COMPLETE", sizeof(struct nvsp_msg_rndis_pkt_complete),
      BOTH_BITS, NVSP_VERSION_1 },
    { NVSP_MSG2_SEND_NDIS_CONFIG, "SEND_NDIS_CONFIG", sizeof(struct nvsp_msg_ndis_config), TO_HOST_BIT,
      NVSP_VERSION_2 },
    { NVSP_MSG4_SEND_VF_ASSOCIATION, "SEND_VF_ASSOCIATION", sizeof(struct nvsp_msg_vf_association), TO_GUEST_BIT,
      NVSP_VERSION_4 },
    { NVSP_MSG4_SWITCH_DATA_PATH, "SWITCH_DATA_PATH", sizeof(struct nvsp_msg_switch_data_path), BOTH_BITS,
      NVSP_VERSION_4 },
    { NVSP_MSG5_OID_QUERY_EX, "OID_QUERY_EX", sizeof(struct nvsp_msg_oid_query_ex), TO_HOST_BIT, NVSP_VERSION_5 },
    { NVSP_MSG5_OID_QUERY_EX_COMPLETE, "OID_QUERY_EX_COMPLETE", sizeof(struct nvsp_msg_oid_query_ex_complete),
      TO_GUEST_BIT, NVSP_VERSION_5 },
    { NVSP_MSG5_SUB_CHANNEL, "SUB_CHANNEL", sizeof(struct nvsp_msg_subchannel), BOTH_BITS, NVSP_VERSION_5 },
    { NVSP_MSG5_SEND_INDIRECTION_TABLE, "SEND_INDIRECTION_TABLE", sizeof(struct nvsp_msg_indirection_table),
      TO_GUEST_BIT, NVSP_VERSION_5 },
};
#define NTYPES (sizeof types / sizeof types[0])
#define FIXED_MAX 20u /* the largest natural size above (SEND_NDIS_CONFIG) */

static const struct type_info *type_info(uint32_t type)
{
    for (uint32_t i = 0; i < NTYPES; i++)
        if (types[i].type == type)
            return &types[i];
    return NULL;
}

uint32_t nvsp_msg_min_size(uint32_t type)
{
    const struct type_info *t = type_info(type);
    return t ? t->min_size : 0;
}

const char *nvsp_msg_name(uint32_t type)
{
    const struct type_info *t = type_info(type);
    return t ? t->name : "unknown";
}

uint32_t nvsp_msg_min_version(uint32_t type)
{
    const struct type_info *t = type_info(type);
    return t ? t->min_version : NVSP_VERSION_INVALID;
}

bool nvsp_version_known(uint32_t v)
{
    return v == NVSP_VERSION_1 || v == NVSP_VERSION_2 || v == NVSP_VERSION_4 || v == NVSP_VERSION_5 ||
           v == NVSP_VERSION_6 || v == NVSP_VERSION_61;
}

uint32_t nvsp_host_msg_size(uint32_t version)
{
    /* The comparison is on the packed value, as openvmm's `version >= Version::V61`. */
    return version >= NVSP_VERSION_61 && version != NVSP_VERSION_INVALID ? NVSP_MSG_SIZE_V61 : NVSP_MSG_SIZE_LEGACY;
}

uint32_t nvsp_ndis_version_for(uint32_t nvsp_version)
{
    return nvsp_version >= NVSP_VERSION_5 ? NVSP_NDIS_VERSION_6_30 : NVSP_NDIS_VERSION_6_1;
}

bool nvsp_recv_section_fits(const struct nvsp_recv_section *s, uint32_t buf_bytes)
{
    uint64_t used = (uint64_t)s->offset + (uint64_t)s->sub_alloc_size * s->num_sub_allocs;
    return s->offset <= s->end_offset && used <= s->end_offset && s->end_offset <= buf_bytes;
}

uint32_t nvsp_indirection_table_copy(const struct nvsp_msg *m, uint32_t *dst, uint32_t max)
{
    if (m->type != NVSP_MSG5_SEND_INDIRECTION_TABLE || !m->u.indirection_table.table)
        return 0;
    uint32_t n = m->u.indirection_table.count < max ? m->u.indirection_table.count : max;
    read_once_copy(dst, m->u.indirection_table.table, n * 4u);
    return n;
}

void nvsp_indirection_table_hyperv_fixup(struct nvsp_msg *m, const void *buf, uint32_t negotiated_version)
{
    if (m->type != NVSP_MSG5_SEND_INDIRECTION_TABLE || negotiated_version > NVSP_VERSION_6)
        return;
    uint64_t need = NVSP_INDIRECTION_TABLE_HYPERV_OFFSET + 4ull * m->u.indirection_table.count;
    if (need > m->len)
        return;
    m->u.indirection_table.offset = NVSP_INDIRECTION_TABLE_HYPERV_OFFSET;
    m->u.indirection_table.table = (const uint8_t *)buf + NVSP_INDIRECTION_TABLE_HYPERV_OFFSET;
}

static status_t bad(const char **why, const char *reason)
{
    *why = reason;
    return STATUS_BAD_DATA;
}

status_t nvsp_msg_check(const void *buf, uint32_t len, enum nvsp_dir dir, struct nvsp_msg *out, const char **why)
{
    memset(out, 0, sizeof *out);
    out->len = len;
    *why = NULL;
    if (len < sizeof(struct nvsp_hdr))
        return bad(why, "shorter than the 4-byte NVSP header");

    /* The fixed part, read once; f[0..3] is the type. */
    uint8_t f[FIXED_MAX];
    memset(f, 0, sizeof f);
    read_once_copy(f, buf, 4);
    uint32_t type = get32(f);
    out->type = type;
    const struct type_info *t = type_info(type);
    if (!t)
        return bad(why, "unknown NVSP message type");
    if (!(t->dirs & (1u << (dir == NVSP_TO_GUEST ? NVSP_TO_GUEST : NVSP_TO_HOST))))
        return bad(why, "NVSP message type not sent in this direction");
    if (len < t->min_size)
        return bad(why, "too short for its NVSP message type");
    read_once_copy(f + 4, (const uint8_t *)buf + 4, t->min_size - 4u);
    const uint8_t *b = f + 4; /* the body */

    switch (type) {
    case NVSP_MSG_INIT:
        out->u.init.ver_min = get32(b);
        out->u.init.ver_max = get32(b + 4);
        break;
    case NVSP_MSG_INIT_COMPLETE:
        out->u.init_complete.negotiated_version = get32(b);
        out->u.init_complete.max_mdl_chain_len = get32(b + 4);
        out->u.init_complete.status = get32(b + 8);
        break;
    case NVSP_MSG1_SEND_NDIS_VERSION:
        out->u.ndis_version.major = get32(b);
        out->u.ndis_version.minor = get32(b + 4);
        break;
    case NVSP_MSG1_SEND_RECEIVE_BUFFER:
    case NVSP_MSG1_SEND_SEND_BUFFER:
        out->u.send_buf.gpadl = get32(b);
        out->u.send_buf.id = get16(b + 4);
        break;
    case NVSP_MSG1_SEND_RECEIVE_BUFFER_COMPLETE: {
        uint32_t status = get32(b), n = get32(b + 4);
        out->u.recv_buf_complete.status = status;
        out->u.recv_buf_complete.num_sections = n;
        if (n > NVSP_RECV_SECTIONS_MAX)
            return bad(why, "too many receive buffer sections");
        uint32_t need = (uint32_t)sizeof(struct nvsp_msg_recv_buf_complete) + n * (uint32_t)sizeof(struct nvsp_recv_section);
        if (need > len)
            return bad(why, "receive buffer sections beyond the message");
        read_once_copy(out->u.recv_buf_complete.sections, (const uint8_t *)buf + sizeof(struct nvsp_msg_recv_buf_complete),
              n * (uint32_t)sizeof(struct nvsp_recv_section));
        if (status == NVSP_STATUS_SUCCESS) {
            for (uint32_t i = 0; i < n; i++) {
                const struct nvsp_recv_section *s = &out->u.recv_buf_complete.sections[i];
                if (s->sub_alloc_size == 0 || s->num_sub_allocs == 0 || !nvsp_recv_section_fits(s, UINT32_MAX))
                    return bad(why, "receive buffer section inconsistent");
            }
        }
        break;
    }
    case NVSP_MSG1_REVOKE_RECEIVE_BUFFER:
    case NVSP_MSG1_REVOKE_SEND_BUFFER:
        out->u.revoke.id = get16(b);
        break;
    case NVSP_MSG1_SEND_SEND_BUFFER_COMPLETE:
        out->u.send_buf_complete.status = get32(b);
        out->u.send_buf_complete.section_size = get32(b + 4);
        break;
    case NVSP_MSG1_SEND_RNDIS_PACKET:
        out->u.rndis_pkt.channel_type = get32(b);
        out->u.rndis_pkt.section_index = get32(b + 4);
        out->u.rndis_pkt.section_size = get32(b + 8);
        break;
    case NVSP_MSG1_SEND_RNDIS_PACKET_COMPLETE:
        out->u.rndis_pkt_complete.status = get32(b);
        break;
    case NVSP_MSG2_SEND_NDIS_CONFIG: {
        uint64_t caps;
        memcpy(&caps, b + 8, sizeof caps);
        out->u.ndis_config.mtu = get32(b);
        out->u.ndis_config.capabilities = caps;
        break;
    }
    case NVSP_MSG4_SEND_VF_ASSOCIATION:
        out->u.vf_association.allocated = get32(b);
        out->u.vf_association.serial = get32(b + 4);
        break;
    case NVSP_MSG4_SWITCH_DATA_PATH:
        out->u.switch_data_path.active_path = get32(b);
        break;
    case NVSP_MSG5_OID_QUERY_EX:
        out->u.oid_query_ex.oid = get32(b + 4);
        break;
    case NVSP_MSG5_OID_QUERY_EX_COMPLETE:
        out->u.oid_query_ex_complete.status = get32(b);
        out->u.oid_query_ex_complete.bytes = get32(b + 4);
        break;
    case NVSP_MSG5_SUB_CHANNEL:
        /* Same layout both ways: {op, n} to the host, {status, n} to the guest. */
        if (dir == NVSP_TO_GUEST) {
            out->u.subchannel_complete.status = get32(b);
            out->u.subchannel_complete.num_subchannels = get32(b + 4);
        } else {
            out->u.subchannel_req.op = get32(b);
            out->u.subchannel_req.num_subchannels = get32(b + 4);
        }
        break;
    case NVSP_MSG5_SEND_INDIRECTION_TABLE: {
        uint32_t count = get32(b), offset = get32(b + 4);
        out->u.indirection_table.count = count;
        out->u.indirection_table.offset = offset;
        if (count < NVSP_RSS_TABLE_MIN || count > NVSP_RSS_TABLE_MAX)
            return bad(why, "indirection table entry count out of range");
        if (offset < sizeof(struct nvsp_msg_indirection_table))
            return bad(why, "indirection table overlaps the message header");
        if ((uint64_t)offset + 4ull * count > len)
            return bad(why, "indirection table beyond the message");
        out->u.indirection_table.table = (const uint8_t *)buf + offset;
        break;
    }
    default:
        return bad(why, "unknown NVSP message type"); /* not reached: the table has no other type */
    }
    return STATUS_OK;
}

/* ---- builders ---- */

/* Writes msg (n bytes) and zeros up to pad_to; 0 if it does not fit in cap. */
static uint32_t emit(void *buf, uint32_t cap, uint32_t pad_to, const void *msg, uint32_t n)
{
    uint32_t total = n > pad_to ? n : pad_to;
    if (!buf || cap < total)
        return 0;
    memcpy(buf, msg, n);
    memset((uint8_t *)buf + n, 0, total - n);
    return total;
}

uint32_t nvsp_build_init(void *buf, uint32_t cap, uint32_t pad_to, uint32_t ver_min, uint32_t ver_max)
{
    struct nvsp_msg_init m = { { NVSP_MSG_INIT }, ver_min, ver_max };
    return emit(buf, cap, pad_to, &m, sizeof m);
}

uint32_t nvsp_build_ndis_version(void *buf, uint32_t cap, uint32_t pad_to, uint32_t ndis_version)
{
    struct nvsp_msg_ndis_version m = { { NVSP_MSG1_SEND_NDIS_VERSION }, ndis_version >> 16, ndis_version & 0xFFFFu };
    return emit(buf, cap, pad_to, &m, sizeof m);
}

uint32_t nvsp_build_ndis_config(void *buf, uint32_t cap, uint32_t pad_to, uint32_t mtu, uint64_t caps)
{
    struct nvsp_msg_ndis_config m = { { NVSP_MSG2_SEND_NDIS_CONFIG }, mtu, 0, caps };
    return emit(buf, cap, pad_to, &m, sizeof m);
}

static uint32_t build_send_buf(void *buf, uint32_t cap, uint32_t pad_to, uint32_t type, uint32_t gpadl, uint16_t id)
{
    struct nvsp_msg_send_buf m = { { type }, gpadl, id, 0 };
    return emit(buf, cap, pad_to, &m, sizeof m);
}

uint32_t nvsp_build_send_recv_buf(void *buf, uint32_t cap, uint32_t pad_to, uint32_t gpadl, uint16_t id)
{
    return build_send_buf(buf, cap, pad_to, NVSP_MSG1_SEND_RECEIVE_BUFFER, gpadl, id);
}

uint32_t nvsp_build_send_send_buf(void *buf, uint32_t cap, uint32_t pad_to, uint32_t gpadl, uint16_t id)
{
    return build_send_buf(buf, cap, pad_to, NVSP_MSG1_SEND_SEND_BUFFER, gpadl, id);
}

static uint32_t build_revoke(void *buf, uint32_t cap, uint32_t pad_to, uint32_t type, uint16_t id)
{
    struct nvsp_msg_revoke_buf m = { { type }, id };
    return emit(buf, cap, pad_to, &m, sizeof m);
}

uint32_t nvsp_build_revoke_recv_buf(void *buf, uint32_t cap, uint32_t pad_to, uint16_t id)
{
    return build_revoke(buf, cap, pad_to, NVSP_MSG1_REVOKE_RECEIVE_BUFFER, id);
}

uint32_t nvsp_build_revoke_send_buf(void *buf, uint32_t cap, uint32_t pad_to, uint16_t id)
{
    return build_revoke(buf, cap, pad_to, NVSP_MSG1_REVOKE_SEND_BUFFER, id);
}

uint32_t nvsp_build_subchannel_req(void *buf, uint32_t cap, uint32_t pad_to, uint32_t num_subchannels)
{
    struct nvsp_msg_subchannel m = { { NVSP_MSG5_SUB_CHANNEL }, NVSP_SUBCHANNEL_ALLOCATE, num_subchannels };
    return emit(buf, cap, pad_to, &m, sizeof m);
}

uint32_t nvsp_build_rndis_pkt(void *buf, uint32_t cap, uint32_t pad_to, uint32_t channel_type, uint32_t section_index,
                              uint32_t section_size)
{
    struct nvsp_msg_rndis_pkt m = { { NVSP_MSG1_SEND_RNDIS_PACKET }, channel_type, section_index, section_size };
    return emit(buf, cap, pad_to, &m, sizeof m);
}

uint32_t nvsp_build_rndis_pkt_complete(void *buf, uint32_t cap, uint32_t pad_to, uint32_t status)
{
    struct nvsp_msg_rndis_pkt_complete m = { { NVSP_MSG1_SEND_RNDIS_PACKET_COMPLETE }, status };
    return emit(buf, cap, pad_to, &m, sizeof m);
}

uint32_t nvsp_build_switch_data_path(void *buf, uint32_t cap, uint32_t pad_to, uint32_t active_path)
{
    struct nvsp_msg_switch_data_path m = { { NVSP_MSG4_SWITCH_DATA_PATH }, active_path };
    return emit(buf, cap, pad_to, &m, sizeof m);
}

uint32_t nvsp_build_init_complete(void *buf, uint32_t cap, uint32_t pad_to, uint32_t negotiated_version,
                                  uint32_t max_mdl_chain_len, uint32_t status)
{
    struct nvsp_msg_init_complete m = { { NVSP_MSG_INIT_COMPLETE }, negotiated_version, max_mdl_chain_len, status };
    return emit(buf, cap, pad_to, &m, sizeof m);
}

uint32_t nvsp_build_recv_buf_complete(void *buf, uint32_t cap, uint32_t pad_to, uint32_t status,
                                      const struct nvsp_recv_section *sections, uint32_t num_sections)
{
    uint64_t n = sizeof(struct nvsp_msg_recv_buf_complete) + (uint64_t)num_sections * sizeof(struct nvsp_recv_section);
    uint64_t total = n > pad_to ? n : pad_to;
    if (!buf || total > cap || (num_sections && !sections))
        return 0;
    struct nvsp_msg_recv_buf_complete m = { { NVSP_MSG1_SEND_RECEIVE_BUFFER_COMPLETE }, status, num_sections };
    uint8_t *p = buf;
    memcpy(p, &m, sizeof m);
    if (num_sections)
        memcpy(p + sizeof m, sections, (uint32_t)n - sizeof m);
    memset(p + n, 0, (uint32_t)(total - n));
    return (uint32_t)total;
}

uint32_t nvsp_build_send_buf_complete(void *buf, uint32_t cap, uint32_t pad_to, uint32_t status, uint32_t section_size)
{
    struct nvsp_msg_send_buf_complete m = { { NVSP_MSG1_SEND_SEND_BUFFER_COMPLETE }, status, section_size };
    return emit(buf, cap, pad_to, &m, sizeof m);
}

uint32_t nvsp_build_vf_association(void *buf, uint32_t cap, uint32_t pad_to, uint32_t allocated, uint32_t serial)
{
    struct nvsp_msg_vf_association m = { { NVSP_MSG4_SEND_VF_ASSOCIATION }, allocated, serial };
    return emit(buf, cap, pad_to, &m, sizeof m);
}

uint32_t nvsp_build_oid_query_ex_complete(void *buf, uint32_t cap, uint32_t pad_to, uint32_t status, uint32_t bytes)
{
    struct nvsp_msg_oid_query_ex_complete m = { { NVSP_MSG5_OID_QUERY_EX_COMPLETE }, status, bytes };
    return emit(buf, cap, pad_to, &m, sizeof m);
}

uint32_t nvsp_build_subchannel_complete(void *buf, uint32_t cap, uint32_t pad_to, uint32_t status,
                                        uint32_t num_subchannels)
{
    struct nvsp_msg_subchannel m = { { NVSP_MSG5_SUB_CHANNEL }, status, num_subchannels };
    return emit(buf, cap, pad_to, &m, sizeof m);
}

uint32_t nvsp_build_indirection_table(void *buf, uint32_t cap, const uint32_t *entries, uint32_t count)
{
    uint64_t n = sizeof(struct nvsp_msg_indirection_table) + 4ull * count;
    if (!buf || n > cap || (count && !entries))
        return 0;
    struct nvsp_msg_indirection_table m = { { NVSP_MSG5_SEND_INDIRECTION_TABLE }, count,
                                            sizeof(struct nvsp_msg_indirection_table) };
    memcpy(buf, &m, sizeof m);
    if (count)
        memcpy((uint8_t *)buf + sizeof m, entries, 4u * count);
    return (uint32_t)n;
}
