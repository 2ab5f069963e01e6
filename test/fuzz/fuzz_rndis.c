/*
 * libFuzzer harness for the RNDIS checks and the range iterator both sides run on what the other
 * sends (drivers/netvsc/proto/rndis_msg.c: rndis_msg_check, rndis_iter_init/next).
 *
 * Input: one mode byte, then the bytes of one received range (a receive-buffer sub-allocation, a
 * send-buffer section, GPA-direct data). mode % 3: 0 = rndis_msg_check on the range; 1 = iterate
 * with RNDIS_ITER_ONE; 2 = iterate with RNDIS_ITER_PACKETS. The range is copied to a heap block of
 * exactly its size, so ASan sees any read past it.
 *
 * Checked for every accepted message: msg_len within the bytes left; every pointer of the view
 * (frame data, PPI area, information/status buffer) inside [message + 8, message + msg_len), the
 * frame after the 44-byte PACKET header and not overlapping the PPI area, and every byte of each
 * is read; the PPI area re-walked by an independent reference walk gives the same element count
 * and the same values; the verdict does not change when bytes after msg_len change; and for
 * types with a builder the builder's rendering of the view checks back to the same view.
 * The iterator: terminates within len / 8 + 1 steps and every message lies within the range.
 *
 * Seeds: test/fuzz/corpus/rndis (written by test/fuzz/gen_netvsc_seeds.py).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/netvsc/proto/rndis_msg.h"
#include "test/fuzz/fuzz_check.h"
#include "test/lib/bytes.h"

static volatile uint8_t sink;

static void touch(const uint8_t *p, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        sink ^= p[i];
}

static void in_msg(const uint8_t *msg, uint32_t msg_len, const uint8_t *p, uint32_t n)
{
    if (!n) {
        CHECK(p == NULL);
        return;
    }
    CHECK(p != NULL);
    CHECK(p >= msg + 8 && (uint64_t)(p - msg) + n <= msg_len);
    touch(p, n);
}

/* A second, simpler PPI walk to compare with the checker's. */
static void reference_ppi(const uint8_t *ppi, uint32_t len, const struct rndis_pkt_view *v)
{
    uint32_t pos = 0, count = 0, flags = 0;
    while (pos < len) {
        CHECK(len - pos >= 12);
        uint32_t size = get32(ppi + pos), type = get32(ppi + pos + 4), off = get32(ppi + pos + 8);
        CHECK(size >= 12 && size <= len - pos && off >= 12 && off <= size);
        const uint8_t *val = ppi + pos + off;
        uint32_t want_flag = 0, got = 0;
        switch (type) {
        case RNDIS_PPI_CHECKSUM: want_flag = RNDIS_PKT_HAS_CSUM; got = v->csum_info; break;
        case RNDIS_PPI_LSO: want_flag = RNDIS_PKT_HAS_LSO; got = v->lso_info; break;
        case RNDIS_PPI_IEEE_8021Q: want_flag = RNDIS_PKT_HAS_VLAN; got = v->vlan_info; break;
        case RNDIS_PPI_HASH_VALUE: want_flag = RNDIS_PKT_HAS_HASH_VALUE; got = v->hash_value; break;
        case RNDIS_PPI_HASH_INFO: want_flag = RNDIS_PKT_HAS_HASH_INFO; got = v->hash_info; break;
        default: break;
        }
        if (want_flag) {
            CHECK(size - off >= 4);
            flags |= want_flag;
            (void)got;
        }
        touch(ppi + pos, size);
        (void)val;
        pos += size;
        count++;
    }
    CHECK(count == v->ppi_count);
    CHECK(count <= RNDIS_PPI_MAX);
    CHECK(flags == v->ppi_flags);
    /* The last element of each known type wins: re-derive the values. */
    pos = 0;
    uint32_t csum = 0, lso = 0, vlan = 0, hv = 0, hi = 0;
    while (pos < len) {
        uint32_t size = get32(ppi + pos), type = get32(ppi + pos + 4), off = get32(ppi + pos + 8);
        uint32_t val = (size - off >= 4) ? get32(ppi + pos + off) : 0;
        switch (type) {
        case RNDIS_PPI_CHECKSUM: csum = val; break;
        case RNDIS_PPI_LSO: lso = val; break;
        case RNDIS_PPI_IEEE_8021Q: vlan = val; break;
        case RNDIS_PPI_HASH_VALUE: hv = val; break;
        case RNDIS_PPI_HASH_INFO: hi = val; break;
        default: break;
        }
        pos += size;
    }
    CHECK(!(flags & RNDIS_PKT_HAS_CSUM) || csum == v->csum_info);
    CHECK(!(flags & RNDIS_PKT_HAS_LSO) || lso == v->lso_info);
    CHECK(!(flags & RNDIS_PKT_HAS_VLAN) || vlan == v->vlan_info);
    CHECK(!(flags & RNDIS_PKT_HAS_HASH_VALUE) || hv == v->hash_value);
    CHECK(!(flags & RNDIS_PKT_HAS_HASH_INFO) || hi == v->hash_info);
}

/* Renders the view with the matching builder and checks the result back. */
static void rebuild(const struct rndis_msg *m)
{
    uint8_t *b = malloc(65536);
    uint32_t n = 0;
    switch (m->type) {
    case RNDIS_MSG_QUERY:
        if (m->u.oid_req.info_len <= 60000)
            n = rndis_build_query(b, 65536, m->request_id, m->u.oid_req.oid, m->u.oid_req.info, m->u.oid_req.info_len);
        break;
    case RNDIS_MSG_SET:
        if (m->u.oid_req.info_len <= 60000)
            n = rndis_build_set(b, 65536, m->request_id, m->u.oid_req.oid, m->u.oid_req.info, m->u.oid_req.info_len);
        break;
    case RNDIS_MSG_QUERY_CMPLT:
        if (m->u.query_cmplt.info_len <= 60000)
            n = rndis_build_query_cmplt(b, 65536, m->request_id, m->status, m->u.query_cmplt.info,
                                        m->u.query_cmplt.info_len);
        break;
    case RNDIS_MSG_INDICATE_STATUS:
        if (m->u.indicate.len <= 60000)
            n = rndis_build_indicate_status(b, 65536, m->status, m->u.indicate.buf, m->u.indicate.len);
        break;
    case RNDIS_MSG_KEEPALIVE_CMPLT:
        n = rndis_build_keepalive_cmplt(b, 65536, m->request_id, m->status);
        break;
    case RNDIS_MSG_SET_CMPLT:
        n = rndis_build_set_cmplt(b, 65536, m->request_id, m->status);
        break;
    case RNDIS_MSG_KEEPALIVE:
        n = rndis_build_keepalive(b, 65536, m->request_id);
        break;
    case RNDIS_MSG_HALT:
        n = rndis_build_halt(b, 65536, m->request_id);
        break;
    case RNDIS_MSG_PACKET: {
        const struct rndis_pkt_view *v = &m->u.packet;
        struct rndis_ppi_u32 ppi[5];
        uint32_t k = 0;
        if (v->ppi_flags & RNDIS_PKT_HAS_CSUM) ppi[k++] = (struct rndis_ppi_u32){ RNDIS_PPI_CHECKSUM, v->csum_info };
        if (v->ppi_flags & RNDIS_PKT_HAS_LSO) ppi[k++] = (struct rndis_ppi_u32){ RNDIS_PPI_LSO, v->lso_info };
        if (v->ppi_flags & RNDIS_PKT_HAS_VLAN) ppi[k++] = (struct rndis_ppi_u32){ RNDIS_PPI_IEEE_8021Q, v->vlan_info };
        if (v->ppi_flags & RNDIS_PKT_HAS_HASH_VALUE) ppi[k++] = (struct rndis_ppi_u32){ RNDIS_PPI_HASH_VALUE, v->hash_value };
        if (v->ppi_flags & RNDIS_PKT_HAS_HASH_INFO) ppi[k++] = (struct rndis_ppi_u32){ RNDIS_PPI_HASH_INFO, v->hash_info };
        if (v->data_len > 60000)
            break;
        uint32_t h = rndis_build_packet(b, 65536, ppi, k, v->data_len);
        CHECK(h == 44 + 16 * k);
        memcpy(b + h, v->data, v->data_len);
        n = h + v->data_len;
        struct rndis_msg r;
        const char *why;
        CHECK(rndis_msg_check(b, n, &r, &why) == STATUS_OK);
        CHECK(r.u.packet.ppi_flags == v->ppi_flags && r.u.packet.data_len == v->data_len);
        CHECK(memcmp(r.u.packet.data, v->data, v->data_len) == 0);
        CHECK(!(v->ppi_flags & RNDIS_PKT_HAS_VLAN) || r.u.packet.vlan_info == v->vlan_info);
        CHECK(!(v->ppi_flags & RNDIS_PKT_HAS_HASH_VALUE) || r.u.packet.hash_value == v->hash_value);
        n = 0;
        break;
    }
    default:
        break;
    }
    if (n) {
        struct rndis_msg r;
        const char *why;
        CHECK(rndis_msg_check(b, n, &r, &why) == STATUS_OK);
        CHECK(r.type == m->type && r.request_id == m->request_id && r.status == m->status);
        switch (m->type) {
        case RNDIS_MSG_QUERY:
        case RNDIS_MSG_SET:
            CHECK(r.u.oid_req.oid == m->u.oid_req.oid && r.u.oid_req.info_len == m->u.oid_req.info_len);
            CHECK(!m->u.oid_req.info_len || memcmp(r.u.oid_req.info, m->u.oid_req.info, m->u.oid_req.info_len) == 0);
            break;
        case RNDIS_MSG_QUERY_CMPLT:
            CHECK(r.u.query_cmplt.info_len == m->u.query_cmplt.info_len);
            break;
        case RNDIS_MSG_INDICATE_STATUS:
            CHECK(r.u.indicate.len == m->u.indicate.len);
            break;
        default:
            break;
        }
    }
    free(b);
}

/* Everything about one accepted message at msg (len bytes were available). */
static void check_accepted(const struct rndis_msg *m, const uint8_t *msg, uint32_t len)
{
    CHECK(m->msg_len >= 8 && m->msg_len <= len);
    CHECK(rndis_msg_min_size(m->type) && m->msg_len >= rndis_msg_min_size(m->type));
    CHECK(strcmp(rndis_msg_name(m->type), "unknown") != 0);
    switch (m->type) {
    case RNDIS_MSG_PACKET: {
        const struct rndis_pkt_view *v = &m->u.packet;
        CHECK(v->data_len > 0 && v->data != NULL);
        CHECK(v->data >= msg + 44 && v->data == msg + v->data_offset);
        in_msg(msg, m->msg_len, v->data, v->data_len);
        in_msg(msg, m->msg_len, v->ppi, v->ppi_len);
        if (v->ppi_len) {
            CHECK(v->ppi >= msg + 44);
            CHECK(v->ppi + v->ppi_len <= v->data || v->data + v->data_len <= v->ppi);
            reference_ppi(v->ppi, v->ppi_len, v);
        } else {
            CHECK(v->ppi_count == 0 && v->ppi_flags == 0);
        }
        break;
    }
    case RNDIS_MSG_QUERY:
    case RNDIS_MSG_SET:
        in_msg(msg, m->msg_len, m->u.oid_req.info, m->u.oid_req.info_len);
        CHECK(!m->u.oid_req.info_len || m->u.oid_req.info >= msg + 28);
        break;
    case RNDIS_MSG_QUERY_CMPLT:
        in_msg(msg, m->msg_len, m->u.query_cmplt.info, m->u.query_cmplt.info_len);
        CHECK(!m->u.query_cmplt.info_len || m->u.query_cmplt.info >= msg + 24);
        break;
    case RNDIS_MSG_INDICATE_STATUS:
        in_msg(msg, m->msg_len, m->u.indicate.buf, m->u.indicate.len);
        CHECK(!m->u.indicate.len || m->u.indicate.buf >= msg + 20);
        break;
    case RNDIS_MSG_INITIALIZE_CMPLT:
        CHECK(m->msg_len >= 52 || m->u.init_cmplt.af_list_size == 0);
        break;
    default:
        break;
    }
    rebuild(m);

    /* Bytes after msg_len do not matter: flip them all and check again. */
    uint8_t *c = fuzz_copy(msg, len);
    for (uint32_t i = m->msg_len; i < len; i++)
        c[i] ^= 0xFF;
    struct rndis_msg m2;
    const char *why;
    CHECK(rndis_msg_check(c, len, &m2, &why) == STATUS_OK);
    CHECK(m2.type == m->type && m2.msg_len == m->msg_len && m2.request_id == m->request_id && m2.status == m->status);
    if (m->type == RNDIS_MSG_PACKET) {
        CHECK(m2.u.packet.data - c == m->u.packet.data - msg && m2.u.packet.data_len == m->u.packet.data_len);
        CHECK(m2.u.packet.ppi_flags == m->u.packet.ppi_flags && m2.u.packet.ppi_count == m->u.packet.ppi_count);
    }
    free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned mode = data[0] % 3;
    uint32_t len;
    uint8_t *buf = fuzz_payload(data, size, 65536, &len);

    if (mode == 0) {
        struct rndis_msg m;
        const char *why = (const char *)1;
        status_t st = rndis_msg_check(buf, len, &m, &why);
        if (st == STATUS_OK) {
            CHECK(why == NULL);
            check_accepted(&m, buf, len);
        } else {
            CHECK(st == STATUS_BAD_DATA && why && why[0]);
        }
    } else {
        struct rndis_iter it;
        rndis_iter_init(&it, buf, len, mode == 1 ? RNDIS_ITER_ONE : RNDIS_ITER_PACKETS);
        uint32_t steps = 0, used = 0;
        for (;;) {
            CHECK(steps++ <= len / 8 + 1);
            const uint8_t *at = it.p;
            uint32_t left = it.left;
            struct rndis_msg m;
            const char *why = (const char *)1;
            status_t st = rndis_iter_next(&it, &m, &why);
            if (st == STATUS_NOT_FOUND) {
                CHECK(why == NULL);
                break;
            }
            if (st != STATUS_OK) {
                CHECK(st == STATUS_BAD_DATA && why && why[0]);
                CHECK(rndis_iter_next(&it, &m, &why) == STATUS_NOT_FOUND);
                break;
            }
            CHECK(at == buf + used && left == len - used);
            check_accepted(&m, at, left);
            used += m.msg_len;
            CHECK(used <= len);
            if (mode == 1)
                CHECK(it.count == 1);
            else if (it.count > 1)
                CHECK(m.type == RNDIS_MSG_PACKET);
        }
    }
    free(buf);
    return 0;
}
