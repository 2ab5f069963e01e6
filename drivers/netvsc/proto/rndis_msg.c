/*
 * rndis_msg: the RNDIS checks, the range iterator and the builders (contract in rndis_msg.h).
 * Pure: no state, no logging.
 */
#include "drivers/netvsc/proto/rndis_msg.h"

#include "kernel/readonce.h"
#include "kernel/string.h"

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static void put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, sizeof v);
}

struct type_info {
    uint32_t type;
    const char *name;
    uint32_t min_size;
};

static const struct type_info types[] = {
    { RNDIS_MSG_PACKET, "PACKET", sizeof(struct rndis_packet) },
    { RNDIS_MSG_INITIALIZE, "INITIALIZE", sizeof(struct rndis_init_req) },
    { RNDIS_MSG_HALT, "HALT", sizeof(struct rndis_rid_req) },
    { RNDIS_MSG_QUERY, "QUERY", sizeof(struct rndis_oid_req) },
    { RNDIS_MSG_SET, "SET", sizeof(struct rndis_oid_req) },
    { RNDIS_MSG_RESET, "RESET", sizeof(struct rndis_rid_req) },
    { RNDIS_MSG_INDICATE_STATUS, "INDICATE_STATUS", sizeof(struct rndis_indicate_status) },
    { RNDIS_MSG_KEEPALIVE, "KEEPALIVE", sizeof(struct rndis_rid_req) },
    { RNDIS_MSG_INITIALIZE_CMPLT, "INITIALIZE_CMPLT", RNDIS_INIT_CMPLT_MIN },
    { RNDIS_MSG_QUERY_CMPLT, "QUERY_CMPLT", sizeof(struct rndis_query_cmplt) },
    { RNDIS_MSG_SET_CMPLT, "SET_CMPLT", sizeof(struct rndis_status_cmplt) },
    { RNDIS_MSG_RESET_CMPLT, "RESET_CMPLT", sizeof(struct rndis_reset_cmplt) },
    { RNDIS_MSG_KEEPALIVE_CMPLT, "KEEPALIVE_CMPLT", sizeof(struct rndis_status_cmplt) },
};
#define NTYPES (sizeof types / sizeof types[0])
#define FIXED_MAX 52u /* sizeof(struct rndis_init_cmplt), the largest fixed part */

static const struct type_info *type_info(uint32_t type)
{
    for (uint32_t i = 0; i < NTYPES; i++)
        if (types[i].type == type)
            return &types[i];
    return NULL;
}

const char *rndis_msg_name(uint32_t type)
{
    const struct type_info *t = type_info(type);
    return t ? t->name : "unknown";
}

uint32_t rndis_msg_min_size(uint32_t type)
{
    const struct type_info *t = type_info(type);
    return t ? t->min_size : 0;
}

static status_t bad(const char **why, const char *reason)
{
    *why = reason;
    return STATUS_BAD_DATA;
}

static bool overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

/* An information/status buffer: offset counted from RNDIS_OFFSET_BASE, alen bytes, must start at or
 * after hdr_size and end within msg_len. Length 0: no buffer (NULL), the offset is not looked at. */
static const char *area(const uint8_t *msg, uint32_t msg_len, uint32_t hdr_size, uint32_t off, uint32_t alen,
                        const uint8_t **p, const char *inside, const char *beyond)
{
    *p = NULL;
    if (alen == 0)
        return NULL;
    uint64_t abs = (uint64_t)RNDIS_OFFSET_BASE + off;
    if (abs < hdr_size)
        return inside;
    if (abs + alen > msg_len)
        return beyond;
    *p = msg + abs;
    return NULL;
}

/* Walks the PPI area [ppi, ppi + ppi_len) (inside the message), filling the packet view. */
static const char *walk_ppi(const uint8_t *ppi, uint32_t ppi_len, struct rndis_pkt_view *v)
{
    uint32_t pos = 0, n = 0;
    while (pos < ppi_len) {
        if (n == RNDIS_PPI_MAX)
            return "too many PPI elements";
        uint32_t rem = ppi_len - pos;
        if (rem < sizeof(struct rndis_ppi))
            return "PPI element header truncated";
        uint8_t h[sizeof(struct rndis_ppi)];
        read_once_copy(h, ppi + pos, sizeof h);
        uint32_t size = get32(h), type = get32(h + 4), voff = get32(h + 8);
        if (size < sizeof(struct rndis_ppi))
            return "PPI element smaller than its header"; /* also what makes the loop progress */
        if (size > rem)
            return "PPI element beyond the PPI area";
        if (voff < sizeof(struct rndis_ppi) || voff > size)
            return "PPI value offset outside its element";
        uint32_t flag = 0, *slot = NULL;
        switch (type) {
        case RNDIS_PPI_CHECKSUM: flag = RNDIS_PKT_HAS_CSUM; slot = &v->csum_info; break;
        case RNDIS_PPI_LSO: flag = RNDIS_PKT_HAS_LSO; slot = &v->lso_info; break;
        case RNDIS_PPI_IEEE_8021Q: flag = RNDIS_PKT_HAS_VLAN; slot = &v->vlan_info; break;
        case RNDIS_PPI_HASH_VALUE: flag = RNDIS_PKT_HAS_HASH_VALUE; slot = &v->hash_value; break;
        case RNDIS_PPI_HASH_INFO: flag = RNDIS_PKT_HAS_HASH_INFO; slot = &v->hash_info; break;
        default: break; /* others (and internal ones) are skipped */
        }
        if (slot) {
            if (size - voff < 4)
                return "PPI value too short for its type";
            uint8_t val[4];
            read_once_copy(val, ppi + pos + voff, 4);
            *slot = get32(val);
            v->ppi_flags |= flag;
        }
        pos += size;
        n++;
    }
    v->ppi_count = n;
    return NULL;
}

static const char *check_packet(const uint8_t *msg, uint32_t msg_len, const uint8_t *f, struct rndis_pkt_view *v)
{
    uint32_t data_off = get32(f + 8), data_len = get32(f + 12);
    uint32_t oob_off = get32(f + 16), oob_len = get32(f + 20);
    uint32_t ppi_off = get32(f + 28), ppi_len = get32(f + 32);
    const uint64_t hdr = sizeof(struct rndis_packet);

    if (data_len == 0)
        return "PACKET without data";
    uint64_t dabs = (uint64_t)RNDIS_OFFSET_BASE + data_off;
    if (dabs < hdr)
        return "PACKET data offset inside the PACKET header";
    if (dabs + data_len > msg_len)
        return "PACKET data beyond the message";

    uint64_t oabs = (uint64_t)RNDIS_OFFSET_BASE + oob_off;
    if (oob_len) {
        if (oabs < hdr)
            return "PACKET OOB area inside the PACKET header";
        if (oabs + oob_len > msg_len)
            return "PACKET OOB area beyond the message";
        if (overlap(oabs, oob_len, dabs, data_len))
            return "PACKET OOB area overlaps the data";
    }

    uint64_t pabs = (uint64_t)RNDIS_OFFSET_BASE + ppi_off;
    if (ppi_len) {
        if (pabs < hdr)
            return "PACKET PPI area inside the PACKET header";
        if (pabs + ppi_len > msg_len)
            return "PACKET PPI area beyond the message";
        if (overlap(pabs, ppi_len, dabs, data_len))
            return "PACKET PPI area overlaps the data";
        if (oob_len && overlap(pabs, ppi_len, oabs, oob_len))
            return "PACKET OOB area overlaps the PPI area";
        const char *why = walk_ppi(msg + pabs, ppi_len, v);
        if (why)
            return why;
        v->ppi = msg + pabs;
        v->ppi_len = ppi_len;
    }
    v->data = msg + dabs;
    v->data_len = data_len;
    v->data_offset = (uint32_t)dabs;
    v->oob_len = oob_len;
    return NULL;
}

status_t rndis_msg_check(const void *buf, uint32_t len, struct rndis_msg *out, const char **why)
{
    const uint8_t *msg = buf;
    memset(out, 0, sizeof *out);
    *why = NULL;
    if (len < sizeof(struct rndis_hdr))
        return bad(why, "shorter than the 8-byte RNDIS header");

    /* The fixed part, read once: the header first, then the rest of the type's fixed part. */
    uint8_t f[FIXED_MAX];
    memset(f, 0, sizeof f);
    read_once_copy(f, msg, sizeof(struct rndis_hdr));
    uint32_t type = get32(f), msg_len = get32(f + 4);
    out->type = type;
    out->msg_len = msg_len;
    if (msg_len < sizeof(struct rndis_hdr))
        return bad(why, "RNDIS message length smaller than its header");
    if (msg_len > len)
        return bad(why, "RNDIS message length beyond the bytes received");
    const struct type_info *t = type_info(type);
    if (!t)
        return bad(why, "unknown RNDIS message type");
    if (msg_len < t->min_size)
        return bad(why, "too short for its RNDIS message type");
    uint32_t fixed = t->min_size;
    if (type == RNDIS_MSG_INITIALIZE_CMPLT && msg_len >= sizeof(struct rndis_init_cmplt))
        fixed = sizeof(struct rndis_init_cmplt);
    read_once_copy(f + sizeof(struct rndis_hdr), msg + sizeof(struct rndis_hdr), fixed - (uint32_t)sizeof(struct rndis_hdr));

    const char *r = NULL;
    switch (type) {
    case RNDIS_MSG_PACKET:
        r = check_packet(msg, msg_len, f, &out->u.packet);
        break;
    case RNDIS_MSG_INITIALIZE:
        out->request_id = get32(f + 8);
        out->u.init_req.major = get32(f + 12);
        out->u.init_req.minor = get32(f + 16);
        out->u.init_req.max_xfer_size = get32(f + 20);
        break;
    case RNDIS_MSG_HALT:
    case RNDIS_MSG_KEEPALIVE:
        out->request_id = get32(f + 8);
        break;
    case RNDIS_MSG_RESET:
        break; /* "reserved" */
    case RNDIS_MSG_QUERY:
    case RNDIS_MSG_SET:
        out->request_id = get32(f + 8);
        out->u.oid_req.oid = get32(f + 12);
        out->u.oid_req.info_len = get32(f + 16);
        out->u.oid_req.vc_handle = get32(f + 24);
        r = area(msg, msg_len, sizeof(struct rndis_oid_req), get32(f + 20), out->u.oid_req.info_len,
                 &out->u.oid_req.info, "information buffer overlaps the request header",
                 "information buffer beyond the message");
        break;
    case RNDIS_MSG_INDICATE_STATUS:
        out->status = get32(f + 8);
        out->u.indicate.len = get32(f + 12);
        r = area(msg, msg_len, sizeof(struct rndis_indicate_status), get32(f + 16), out->u.indicate.len,
                 &out->u.indicate.buf, "status buffer overlaps the header", "status buffer beyond the message");
        break;
    case RNDIS_MSG_INITIALIZE_CMPLT:
        out->request_id = get32(f + 8);
        out->status = get32(f + 12);
        out->u.init_cmplt.major = get32(f + 16);
        out->u.init_cmplt.minor = get32(f + 20);
        out->u.init_cmplt.device_flags = get32(f + 24);
        out->u.init_cmplt.medium = get32(f + 28);
        out->u.init_cmplt.max_pkts_per_msg = get32(f + 32);
        out->u.init_cmplt.max_xfer_size = get32(f + 36);
        out->u.init_cmplt.pkt_align_factor = get32(f + 40);
        out->u.init_cmplt.af_list_offset = get32(f + 44);
        out->u.init_cmplt.af_list_size = get32(f + 48); /* 0 (zeroed copy) when the message stops at 48 */
        break;
    case RNDIS_MSG_QUERY_CMPLT:
        out->request_id = get32(f + 8);
        out->status = get32(f + 12);
        out->u.query_cmplt.info_len = get32(f + 16);
        r = area(msg, msg_len, sizeof(struct rndis_query_cmplt), get32(f + 20), out->u.query_cmplt.info_len,
                 &out->u.query_cmplt.info, "information buffer overlaps the completion header",
                 "information buffer beyond the message");
        break;
    case RNDIS_MSG_SET_CMPLT:
    case RNDIS_MSG_KEEPALIVE_CMPLT:
        out->request_id = get32(f + 8);
        out->status = get32(f + 12);
        break;
    case RNDIS_MSG_RESET_CMPLT:
        out->status = get32(f + 8);
        out->u.reset_cmplt.addressing_reset = get32(f + 12);
        break;
    default:
        r = "unknown RNDIS message type"; /* not reached: the table has no other type */
        break;
    }
    return r ? bad(why, r) : STATUS_OK;
}

/* ---- iterating a range ---- */

void rndis_iter_init(struct rndis_iter *it, const void *range, uint32_t len, enum rndis_iter_mode mode)
{
    it->p = range;
    it->left = len;
    it->count = 0;
    it->mode = mode;
    it->done = false;
}

status_t rndis_iter_next(struct rndis_iter *it, struct rndis_msg *out, const char **why)
{
    *why = NULL;
    if (it->done || (it->count > 0 && (it->mode == RNDIS_ITER_ONE || it->left == 0))) {
        it->done = true;
        memset(out, 0, sizeof *out);
        return STATUS_NOT_FOUND;
    }
    if (it->count > 0 && it->left < sizeof(struct rndis_hdr)) {
        it->done = true;
        memset(out, 0, sizeof *out);
        return bad(why, "trailing bytes after the last RNDIS message");
    }
    status_t st = rndis_msg_check(it->p, it->left, out, why);
    if (st != STATUS_OK) {
        it->done = true;
        return st;
    }
    if (it->mode == RNDIS_ITER_PACKETS && out->type != RNDIS_MSG_PACKET) {
        if (it->count > 0) {
            it->done = true;
            return bad(why, "non-PACKET message after a PACKET");
        }
        it->done = true; /* a control message is alone in its range; what follows is its padding */
    }
    /* msg_len >= 8 and <= left (checked), so this always progresses and never underflows. */
    it->p += out->msg_len;
    it->left -= out->msg_len;
    it->count++;
    return STATUS_OK;
}

/* ---- builders ---- */

static uint32_t hdr(uint8_t *p, uint32_t type, uint32_t msg_len)
{
    put32(p, type);
    put32(p + 4, msg_len);
    return msg_len;
}

uint32_t rndis_build_init(void *buf, uint32_t cap, uint32_t request_id, uint32_t max_xfer_size)
{
    uint8_t *p = buf;
    if (!p || cap < sizeof(struct rndis_init_req))
        return 0;
    put32(p + 8, request_id);
    put32(p + 12, RNDIS_MAJOR_VERSION);
    put32(p + 16, RNDIS_MINOR_VERSION);
    put32(p + 20, max_xfer_size);
    return hdr(p, RNDIS_MSG_INITIALIZE, sizeof(struct rndis_init_req));
}

static uint32_t build_rid(void *buf, uint32_t cap, uint32_t type, uint32_t request_id)
{
    uint8_t *p = buf;
    if (!p || cap < sizeof(struct rndis_rid_req))
        return 0;
    put32(p + 8, request_id);
    return hdr(p, type, sizeof(struct rndis_rid_req));
}

uint32_t rndis_build_halt(void *buf, uint32_t cap, uint32_t request_id)
{
    return build_rid(buf, cap, RNDIS_MSG_HALT, request_id);
}

uint32_t rndis_build_keepalive(void *buf, uint32_t cap, uint32_t request_id)
{
    return build_rid(buf, cap, RNDIS_MSG_KEEPALIVE, request_id);
}

static uint32_t build_status_cmplt(void *buf, uint32_t cap, uint32_t type, uint32_t request_id, uint32_t status)
{
    uint8_t *p = buf;
    if (!p || cap < sizeof(struct rndis_status_cmplt))
        return 0;
    put32(p + 8, request_id);
    put32(p + 12, status);
    return hdr(p, type, sizeof(struct rndis_status_cmplt));
}

uint32_t rndis_build_keepalive_cmplt(void *buf, uint32_t cap, uint32_t request_id, uint32_t status)
{
    return build_status_cmplt(buf, cap, RNDIS_MSG_KEEPALIVE_CMPLT, request_id, status);
}

uint32_t rndis_build_set_cmplt(void *buf, uint32_t cap, uint32_t request_id, uint32_t status)
{
    return build_status_cmplt(buf, cap, RNDIS_MSG_SET_CMPLT, request_id, status);
}

static uint32_t build_oid_req(void *buf, uint32_t cap, uint32_t type, uint32_t request_id, uint32_t oid,
                              const void *info, uint32_t info_len)
{
    uint8_t *p = buf;
    uint64_t n = sizeof(struct rndis_oid_req) + (uint64_t)info_len;
    if (!p || n > cap || (info_len && !info))
        return 0;
    put32(p + 8, request_id);
    put32(p + 12, oid);
    put32(p + 16, info_len);
    put32(p + 20, sizeof(struct rndis_oid_req) - RNDIS_OFFSET_BASE); /* 20: the buffer follows */
    put32(p + 24, 0);
    if (info_len)
        memcpy(p + sizeof(struct rndis_oid_req), info, info_len);
    return hdr(p, type, (uint32_t)n);
}

uint32_t rndis_build_query(void *buf, uint32_t cap, uint32_t request_id, uint32_t oid, const void *info,
                           uint32_t info_len)
{
    return build_oid_req(buf, cap, RNDIS_MSG_QUERY, request_id, oid, info, info_len);
}

uint32_t rndis_build_set(void *buf, uint32_t cap, uint32_t request_id, uint32_t oid, const void *info,
                         uint32_t info_len)
{
    return build_oid_req(buf, cap, RNDIS_MSG_SET, request_id, oid, info, info_len);
}

uint32_t rndis_build_packet(void *buf, uint32_t cap, const struct rndis_ppi_u32 *ppi, uint32_t nppi,
                            uint32_t frame_len)
{
    uint8_t *p = buf;
    if (!p || nppi > RNDIS_PPI_MAX || (nppi && !ppi))
        return 0;
    uint32_t hlen = (uint32_t)sizeof(struct rndis_packet) + nppi * RNDIS_PPI_U32_SIZE;
    uint64_t msg_len = (uint64_t)hlen + frame_len;
    if (hlen > cap || msg_len > UINT32_MAX)
        return 0;
    put32(p + 8, hlen - RNDIS_OFFSET_BASE); /* data_offset: the frame follows the PPIs */
    put32(p + 12, frame_len);
    put32(p + 16, 0);                       /* no OOB data */
    put32(p + 20, 0);
    put32(p + 24, 0);
    put32(p + 28, nppi ? (uint32_t)RNDIS_PACKET_OFFSET_MIN : 0); /* PPIs right after the header */
    put32(p + 32, nppi * RNDIS_PPI_U32_SIZE);
    put32(p + 36, 0); /* vc_handle */
    put32(p + 40, 0);
    for (uint32_t i = 0; i < nppi; i++) {
        uint8_t *e = p + sizeof(struct rndis_packet) + i * RNDIS_PPI_U32_SIZE;
        put32(e, RNDIS_PPI_U32_SIZE);
        put32(e + 4, ppi[i].type);
        put32(e + 8, sizeof(struct rndis_ppi));
        put32(e + 12, ppi[i].value);
    }
    hdr(p, RNDIS_MSG_PACKET, (uint32_t)msg_len);
    return hlen;
}

uint32_t rndis_build_init_cmplt(void *buf, uint32_t cap, uint32_t request_id, uint32_t status,
                                const struct rndis_init_info *info)
{
    uint8_t *p = buf;
    if (!p || !info || cap < sizeof(struct rndis_init_cmplt))
        return 0;
    put32(p + 8, request_id);
    put32(p + 12, status);
    put32(p + 16, RNDIS_MAJOR_VERSION);
    put32(p + 20, RNDIS_MINOR_VERSION);
    put32(p + 24, info->device_flags);
    put32(p + 28, info->medium);
    put32(p + 32, info->max_pkts_per_msg);
    put32(p + 36, info->max_xfer_size);
    put32(p + 40, info->pkt_align_factor);
    put32(p + 44, 0); /* no address-family list (connectionless device) */
    put32(p + 48, 0);
    return hdr(p, RNDIS_MSG_INITIALIZE_CMPLT, sizeof(struct rndis_init_cmplt));
}

uint32_t rndis_build_query_cmplt(void *buf, uint32_t cap, uint32_t request_id, uint32_t status, const void *info,
                                 uint32_t info_len)
{
    uint8_t *p = buf;
    uint64_t n = sizeof(struct rndis_query_cmplt) + (uint64_t)info_len;
    if (!p || n > cap || (info_len && !info))
        return 0;
    put32(p + 8, request_id);
    put32(p + 12, status);
    put32(p + 16, info_len);
    put32(p + 20, sizeof(struct rndis_query_cmplt) - RNDIS_OFFSET_BASE); /* 16, as openvmm */
    if (info_len)
        memcpy(p + sizeof(struct rndis_query_cmplt), info, info_len);
    return hdr(p, RNDIS_MSG_QUERY_CMPLT, (uint32_t)n);
}

uint32_t rndis_build_indicate_status(void *buf, uint32_t cap, uint32_t status, const void *sbuf, uint32_t sbuf_len)
{
    uint8_t *p = buf;
    uint64_t n = sizeof(struct rndis_indicate_status) + (uint64_t)sbuf_len;
    if (!p || n > cap || (sbuf_len && !sbuf))
        return 0;
    put32(p + 8, status);
    put32(p + 12, sbuf_len);
    put32(p + 16, sbuf_len ? (uint32_t)(sizeof(struct rndis_indicate_status) - RNDIS_OFFSET_BASE) : 0);
    if (sbuf_len)
        memcpy(p + sizeof(struct rndis_indicate_status), sbuf, sbuf_len);
    return hdr(p, RNDIS_MSG_INDICATE_STATUS, (uint32_t)n);
}
