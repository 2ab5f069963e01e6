/*
 * Unit tests for the NVSP and RNDIS wire formats and their pure checkers/builders
 * (drivers/netvsc/proto/nvsp_msg.c, drivers/netvsc/proto/rndis_msg.c): every builder round-trips through its checker,
 * every reject reason is reached, every prefix of every valid message is handled consistently from
 * an exactly-sized heap copy (so ASan sees any read past the bytes given), offsets and lengths that
 * wrap 32 bits are refused, PPI walks that would not terminate (size 0) are refused, and a seeded
 * mutation run checks the invariants of whatever is accepted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/netvsc/proto/nvsp_msg.h"
#include "drivers/netvsc/proto/rndis_msg.h"
#include "test/lib/bytes.h"
#include "test/lib/test_util.h"

/* ---- helpers ---- */

/* An exactly-sized heap copy (at least one byte allocated, so a 0-length copy is a valid pointer). */
static uint8_t *dup_exact(const void *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    assert_non_null(c);
    if (n)
        memcpy(c, p, n);
    return c;
}

/* Runs the NVSP checker on an exact copy; returns the status, *why, and the view (pointers into the
 * copy are only compared, never dereferenced after the copy is freed). */
static status_t ncheck(const void *msg, uint32_t len, enum nvsp_dir dir, struct nvsp_msg *m, const char **why)
{
    uint8_t *c = dup_exact(msg, len);
    status_t st = nvsp_msg_check(c, len, dir, m, why);
    if (st == STATUS_OK && m->type == NVSP_MSG5_SEND_INDIRECTION_TABLE) {
        /* Touch the table while the copy lives. */
        uint32_t t[NVSP_RSS_TABLE_MAX];
        assert_int_equal(nvsp_indirection_table_copy(m, t, NVSP_RSS_TABLE_MAX), m->u.indirection_table.count);
        m->u.indirection_table.table = NULL;
    }
    free(c);
    return st;
}

static void nvsp_expect_bad(const void *msg, uint32_t len, enum nvsp_dir dir, const char *reason)
{
    struct nvsp_msg m;
    const char *why = NULL;
    status_t st = ncheck(msg, len, dir, &m, &why);
    if (st != STATUS_BAD_DATA || !why || strcmp(why, reason) != 0)
        print_message("expected \"%s\", got status %d \"%s\"\n", reason, st, why ? why : "(null)");
    assert_int_equal(st, STATUS_BAD_DATA);
    assert_non_null(why);
    assert_string_equal(why, reason);
}

static void nvsp_expect_ok(const void *msg, uint32_t len, enum nvsp_dir dir, struct nvsp_msg *m)
{
    const char *why = NULL;
    status_t st = ncheck(msg, len, dir, m, &why);
    if (st != STATUS_OK)
        print_message("unexpected reject: %s\n", why ? why : "(null)");
    assert_int_equal(st, STATUS_OK);
    assert_null(why);
}

/* RNDIS: the checker on an exact copy; the caller frees *copy after looking at the view. */
static status_t rcheck(const void *msg, uint32_t len, struct rndis_msg *m, const char **why, uint8_t **copy)
{
    *copy = dup_exact(msg, len);
    return rndis_msg_check(*copy, len, m, why);
}

/* Asserts every pointer of an accepted view lies inside [base, base + msg_len) and reads it all. */
static void rndis_view_in_bounds(const struct rndis_msg *m, const uint8_t *base, uint32_t len)
{
    volatile uint8_t sink = 0;
    assert_true(m->msg_len >= 8 && m->msg_len <= len);
    const uint8_t *end = base + m->msg_len;
    const uint8_t *p = NULL;
    uint32_t n = 0;
    switch (m->type) {
    case RNDIS_MSG_PACKET:
        assert_non_null(m->u.packet.data);
        assert_true(m->u.packet.data_len > 0);
        assert_true(m->u.packet.data >= base + sizeof(struct rndis_packet));
        assert_true(m->u.packet.data + m->u.packet.data_len <= end);
        for (uint32_t i = 0; i < m->u.packet.data_len; i++)
            sink ^= m->u.packet.data[i];
        p = m->u.packet.ppi;
        n = m->u.packet.ppi_len;
        break;
    case RNDIS_MSG_QUERY:
    case RNDIS_MSG_SET:
        p = m->u.oid_req.info;
        n = m->u.oid_req.info_len;
        break;
    case RNDIS_MSG_QUERY_CMPLT:
        p = m->u.query_cmplt.info;
        n = m->u.query_cmplt.info_len;
        break;
    case RNDIS_MSG_INDICATE_STATUS:
        p = m->u.indicate.buf;
        n = m->u.indicate.len;
        break;
    default:
        break;
    }
    if (n) {
        assert_non_null(p);
        assert_true(p >= base + 8 && p + n <= end);
        for (uint32_t i = 0; i < n; i++)
            sink ^= p[i];
    } else {
        assert_null(p);
    }
    (void)sink;
}

static void rndis_expect_bad(const void *msg, uint32_t len, const char *reason)
{
    struct rndis_msg m;
    const char *why = NULL;
    uint8_t *c;
    status_t st = rcheck(msg, len, &m, &why, &c);
    free(c);
    if (st != STATUS_BAD_DATA || !why || strcmp(why, reason) != 0)
        print_message("expected \"%s\", got status %d \"%s\"\n", reason, st, why ? why : "(null)");
    assert_int_equal(st, STATUS_BAD_DATA);
    assert_non_null(why);
    assert_string_equal(why, reason);
}

/* Checks msg (len bytes) is accepted; *m is valid, its pointers point into *copy (free it). */
static void rndis_expect_ok(const void *msg, uint32_t len, struct rndis_msg *m, uint8_t **copy)
{
    const char *why = NULL;
    status_t st = rcheck(msg, len, m, &why, copy);
    if (st != STATUS_OK)
        print_message("unexpected reject: %s\n", why ? why : "(null)");
    assert_int_equal(st, STATUS_OK);
    assert_null(why);
    rndis_view_in_bounds(m, *copy, len);
}

/* A PACKET header with the given fields at the start of b (the rest of b is left as is). */
static void craft_packet(uint8_t *b, uint32_t msg_len, uint32_t data_off, uint32_t data_len, uint32_t oob_off,
                         uint32_t oob_len, uint32_t ppi_off, uint32_t ppi_len)
{
    put32(b, RNDIS_MSG_PACKET);
    put32(b + 4, msg_len);
    put32(b + 8, data_off);
    put32(b + 12, data_len);
    put32(b + 16, oob_off);
    put32(b + 20, oob_len);
    put32(b + 24, 0);
    put32(b + 28, ppi_off);
    put32(b + 32, ppi_len);
    put32(b + 36, 0);
    put32(b + 40, 0);
}

static void put_ppi(uint8_t *e, uint32_t size, uint32_t type, uint32_t voff, uint32_t value)
{
    put32(e, size);
    put32(e + 4, type);
    put32(e + 8, voff);
    if (voff >= 12 && (uint64_t)voff + 4 <= size)
        put32(e + voff, value);
}

/* A PACKET in b (cap bytes, zeroed first) with a PPI area of ppi_len bytes at 44 (offset 36) and 20
 * bytes of data after it; returns its msg_len. */
static uint32_t ppi_packet(uint8_t *b, size_t cap, uint32_t ppi_len)
{
    memset(b, 0, cap);
    craft_packet(b, 44 + ppi_len + 20, 36 + ppi_len, 20, 0, 0, 36, ppi_len);
    return 44 + ppi_len + 20;
}

/* Such a PACKET whose PPI area is count minimal elements (12 bytes, no value, unknown type 100). */
static uint32_t ppi_packet_elements(uint8_t *b, size_t cap, uint32_t count)
{
    uint32_t n = ppi_packet(b, cap, count * 12);
    for (uint32_t i = 0; i < count; i++)
        put_ppi(b + 44 + 12 * i, 12, 100, 12, 0);
    return n;
}

/* Such a PACKET whose first PPI element has the header (size, type, value offset) is refused. */
static void ppi_expect_bad(uint8_t *b, size_t cap, uint32_t ppi_len, uint32_t size, uint32_t type, uint32_t voff,
                           const char *reason)
{
    uint32_t n = ppi_packet(b, cap, ppi_len);
    put_ppi(b + 44, size, type, voff, 0);
    rndis_expect_bad(b, n, reason);
}

/* Checks the n bytes at b are accepted as a message of `type` with request id rid. */
static void rndis_expect_msg(const uint8_t *b, uint32_t n, uint32_t type, uint32_t rid)
{
    struct rndis_msg m;
    uint8_t *c;
    rndis_expect_ok(b, n, &m, &c);
    assert_int_equal(m.type, type);
    assert_int_equal(m.request_id, rid);
    free(c);
}

/* What every RNDIS (offset, length) buffer is refused for, on a valid message of n bytes at b whose
 * buffer ends the message: the offset field at off_at holds the first offset past the fixed part,
 * the length field at len_at the buffer's length. Each offset below the first overlaps the header;
 * an offset one byte further, offsets that wrap 32 bits, one byte more and lengths that wrap are
 * beyond the message. The two fields are put back afterwards. */
static void rndis_buffer_errors(uint8_t *b, uint32_t n, uint32_t off_at, uint32_t len_at, const char *overlaps,
                                const char *beyond)
{
    const uint32_t first = get32(b + off_at), len = get32(b + len_at);
    for (uint32_t off = 0; off < first; off++) {
        put32(b + off_at, off);
        rndis_expect_bad(b, n, overlaps);
    }
    const uint32_t offs[] = { first + 1, 0xFFFFFFF8, 0xFFFFFFF9, 0xFFFFFFFC, 0xFFFFFFFF, 0x80000000 };
    for (unsigned i = 0; i < sizeof offs / sizeof offs[0]; i++) {
        put32(b + off_at, offs[i]);
        rndis_expect_bad(b, n, beyond);
    }
    put32(b + off_at, first);
    const uint32_t lens[] = { len + 1, 0xFFFFFFFE, 0xFFFFFFFF };
    for (unsigned i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        put32(b + len_at, lens[i]);
        rndis_expect_bad(b, n, beyond);
    }
    put32(b + len_at, len);
}

/* ================================ NVSP ================================ */

/* The numbers against hyperv-facts.md §3.14 and the sources named in nvsp_proto.h. */
static void test_nvsp_numbers(void **state)
{
    (void)state;
    assert_int_equal(NVSP_VERSION_1, 0x2);
    assert_int_equal(NVSP_VERSION_2, 0x30002);
    assert_int_equal(NVSP_VERSION_4, 0x40000);
    assert_int_equal(NVSP_VERSION_5, 0x50000);
    assert_int_equal(NVSP_VERSION_6, 0x60000);
    assert_int_equal(NVSP_VERSION_61, 0x60001);
    assert_int_equal(NVSP_MSG1_SEND_NDIS_VERSION, 100);
    assert_int_equal(NVSP_MSG1_SEND_RNDIS_PACKET_COMPLETE, 108);
    assert_int_equal(NVSP_MSG2_SEND_NDIS_CONFIG, 125);
    assert_int_equal(NVSP_MSG4_SEND_VF_ASSOCIATION, 128);
    assert_int_equal(NVSP_MSG5_SUB_CHANNEL, 133);
    assert_int_equal(NVSP_MSG5_SEND_INDIRECTION_TABLE, 134);
    assert_int_equal(NVSP_STATUS_SUCCESS, 1);
    assert_int_equal(NVSP_STATUS_FAILURE, 2);
    assert_int_equal(NVSP_MSG_SIZE_LEGACY, 0x1c);
    assert_int_equal(NVSP_MSG_SIZE_V61, 0x28);
    /* The legacy size is the header plus the largest v1 body (one-section RECEIVE_BUFFER_COMPLETE). */
    assert_int_equal(sizeof(struct nvsp_msg_recv_buf_complete) + sizeof(struct nvsp_recv_section),
                     NVSP_MSG_SIZE_LEGACY);
    assert_int_equal(nvsp_host_msg_size(NVSP_VERSION_6), 28);
    assert_int_equal(nvsp_host_msg_size(NVSP_VERSION_61), 40);
    assert_int_equal(nvsp_host_msg_size(NVSP_VERSION_1), 28);
    assert_int_equal(nvsp_ndis_version_for(NVSP_VERSION_5), 0x6001E);
    assert_int_equal(nvsp_ndis_version_for(NVSP_VERSION_4), 0x60001);
    assert_int_equal(nvsp_ndis_version_for(NVSP_VERSION_61), 0x6001E);
    assert_true(nvsp_version_known(NVSP_VERSION_61));
    assert_false(nvsp_version_known(0x30000));
    assert_false(nvsp_version_known(0x00010002));
    assert_int_equal(nvsp_msg_min_version(NVSP_MSG_INIT), NVSP_VERSION_1);
    assert_int_equal(nvsp_msg_min_version(NVSP_MSG2_SEND_NDIS_CONFIG), NVSP_VERSION_2);
    assert_int_equal(nvsp_msg_min_version(NVSP_MSG4_SWITCH_DATA_PATH), NVSP_VERSION_4);
    assert_int_equal(nvsp_msg_min_version(NVSP_MSG5_SUB_CHANNEL), NVSP_VERSION_5);
    assert_int_equal(nvsp_msg_min_version(109), NVSP_VERSION_INVALID);
    assert_string_equal(nvsp_msg_name(NVSP_MSG1_SEND_RNDIS_PACKET), "SEND_RNDIS_PACKET");
    assert_string_equal(nvsp_msg_name(12345), "unknown");
    assert_int_equal(nvsp_msg_min_size(NVSP_MSG1_SEND_RECEIVE_BUFFER), 10);
    assert_int_equal(nvsp_msg_min_size(NVSP_MSG_INIT_COMPLETE), 16);
    assert_int_equal(nvsp_msg_min_size(7), 0);
}

/* Everything a guest sends, padded to 40 and unpadded, through the host's check. */
static void test_nvsp_roundtrip_guest(void **state)
{
    (void)state;
    uint8_t b[64];
    struct nvsp_msg m;
    for (int pass = 0; pass < 2; pass++) {
        uint32_t pad = pass ? NVSP_GUEST_MSG_SIZE : 0, n;

        n = nvsp_build_init(b, sizeof b, pad, NVSP_VERSION_61, NVSP_VERSION_61);
        assert_int_equal(n, pass ? 40 : 12);
        nvsp_expect_ok(b, n, NVSP_TO_HOST, &m);
        assert_int_equal(m.type, NVSP_MSG_INIT);
        assert_int_equal(m.len, n);
        assert_int_equal(m.u.init.ver_min, NVSP_VERSION_61);
        assert_int_equal(m.u.init.ver_max, NVSP_VERSION_61);

        n = nvsp_build_ndis_version(b, sizeof b, pad, NVSP_NDIS_VERSION_6_30);
        nvsp_expect_ok(b, n, NVSP_TO_HOST, &m);
        assert_int_equal(m.u.ndis_version.major, 6);
        assert_int_equal(m.u.ndis_version.minor, 30);

        n = nvsp_build_ndis_config(b, sizeof b, pad, 1514, NVSP_NDIS_CAP_IEEE_8021Q | NVSP_NDIS_CAP_SRIOV);
        assert_int_equal(n, pass ? 40 : 20);
        nvsp_expect_ok(b, n, NVSP_TO_HOST, &m);
        assert_int_equal(m.u.ndis_config.mtu, 1514);
        assert_int_equal(m.u.ndis_config.capabilities, 0xC);

        n = nvsp_build_send_recv_buf(b, sizeof b, pad, 0xE1E10, NVSP_RECV_BUF_ID);
        nvsp_expect_ok(b, n, NVSP_TO_HOST, &m);
        assert_int_equal(m.type, NVSP_MSG1_SEND_RECEIVE_BUFFER);
        assert_int_equal(m.u.send_buf.gpadl, 0xE1E10);
        assert_int_equal(m.u.send_buf.id, 0xCAFE);

        n = nvsp_build_send_send_buf(b, sizeof b, pad, 0xE1E11, NVSP_SEND_BUF_ID);
        nvsp_expect_ok(b, n, NVSP_TO_HOST, &m);
        assert_int_equal(m.type, NVSP_MSG1_SEND_SEND_BUFFER);
        assert_int_equal(m.u.send_buf.gpadl, 0xE1E11);
        assert_int_equal(m.u.send_buf.id, 0xFACE);

        n = nvsp_build_revoke_recv_buf(b, sizeof b, pad, NVSP_RECV_BUF_ID);
        assert_int_equal(n, pass ? 40 : 6);
        nvsp_expect_ok(b, n, NVSP_TO_HOST, &m);
        assert_int_equal(m.type, NVSP_MSG1_REVOKE_RECEIVE_BUFFER);
        assert_int_equal(m.u.revoke.id, 0xCAFE);

        n = nvsp_build_revoke_send_buf(b, sizeof b, pad, NVSP_SEND_BUF_ID);
        nvsp_expect_ok(b, n, NVSP_TO_HOST, &m);
        assert_int_equal(m.type, NVSP_MSG1_REVOKE_SEND_BUFFER);
        assert_int_equal(m.u.revoke.id, 0xFACE);

        n = nvsp_build_subchannel_req(b, sizeof b, pad, 7);
        nvsp_expect_ok(b, n, NVSP_TO_HOST, &m);
        assert_int_equal(m.u.subchannel_req.op, NVSP_SUBCHANNEL_ALLOCATE);
        assert_int_equal(m.u.subchannel_req.num_subchannels, 7);

        n = nvsp_build_rndis_pkt(b, sizeof b, pad, NVSP_CHANNEL_TYPE_DATA, 12, 1500);
        nvsp_expect_ok(b, n, NVSP_TO_HOST, &m);
        assert_int_equal(m.u.rndis_pkt.channel_type, 0);
        assert_int_equal(m.u.rndis_pkt.section_index, 12);
        assert_int_equal(m.u.rndis_pkt.section_size, 1500);

        n = nvsp_build_rndis_pkt_complete(b, sizeof b, pad, NVSP_STATUS_SUCCESS);
        nvsp_expect_ok(b, n, NVSP_TO_HOST, &m);
        assert_int_equal(m.u.rndis_pkt_complete.status, 1);

        n = nvsp_build_switch_data_path(b, sizeof b, pad, NVSP_DATA_PATH_VF);
        nvsp_expect_ok(b, n, NVSP_TO_HOST, &m);
        assert_int_equal(m.u.switch_data_path.active_path, 1);
    }
    /* The padding is zeros. */
    memset(b, 0xAA, sizeof b);
    assert_int_equal(nvsp_build_init(b, sizeof b, 40, 2, 2), 40);
    for (int i = 12; i < 40; i++)
        assert_int_equal(b[i], 0);
    assert_int_equal(b[40], 0xAA);
}

/* Everything a host sends, at the v1 (28) and v6.1 (40) sizes, through the guest's check. */
static void test_nvsp_roundtrip_host(void **state)
{
    (void)state;
    uint8_t b[256];
    struct nvsp_msg m;
    const uint32_t pads[] = { 0, NVSP_MSG_SIZE_LEGACY, NVSP_MSG_SIZE_V61 };
    for (unsigned k = 0; k < 3; k++) {
        uint32_t pad = pads[k], n;

        n = nvsp_build_init_complete(b, sizeof b, pad, NVSP_VERSION_INVALID, 34, NVSP_STATUS_SUCCESS);
        assert_int_equal(n, pad ? pad : 16);
        nvsp_expect_ok(b, n, NVSP_TO_GUEST, &m);
        assert_int_equal(m.type, NVSP_MSG_INIT_COMPLETE);
        assert_int_equal(m.u.init_complete.negotiated_version, 0xFFFFFFFF);
        assert_int_equal(m.u.init_complete.max_mdl_chain_len, 34);
        assert_int_equal(m.u.init_complete.status, NVSP_STATUS_SUCCESS);
        assert_int_equal(get32(b + 12), NVSP_STATUS_SUCCESS); /* status is the last field */

        struct nvsp_recv_section s = { 0, 1806, 9000, 1806u * 9000u };
        n = nvsp_build_recv_buf_complete(b, sizeof b, pad, NVSP_STATUS_SUCCESS, &s, 1);
        assert_int_equal(n, pad > 28 ? pad : 28);
        nvsp_expect_ok(b, n, NVSP_TO_GUEST, &m);
        assert_int_equal(m.u.recv_buf_complete.status, 1);
        assert_int_equal(m.u.recv_buf_complete.num_sections, 1);
        assert_int_equal(m.u.recv_buf_complete.sections[0].sub_alloc_size, 1806);
        assert_int_equal(m.u.recv_buf_complete.sections[0].num_sub_allocs, 9000);
        assert_int_equal(m.u.recv_buf_complete.sections[0].end_offset, 1806u * 9000u);
        assert_true(nvsp_recv_section_fits(&m.u.recv_buf_complete.sections[0], 16u << 20));
        assert_false(nvsp_recv_section_fits(&m.u.recv_buf_complete.sections[0], 1806u * 9000u - 1));

        n = nvsp_build_send_buf_complete(b, sizeof b, pad, NVSP_STATUS_SUCCESS, 6144);
        nvsp_expect_ok(b, n, NVSP_TO_GUEST, &m);
        assert_int_equal(m.u.send_buf_complete.section_size, 6144);

        n = nvsp_build_vf_association(b, sizeof b, pad, 1, 0x1234);
        nvsp_expect_ok(b, n, NVSP_TO_GUEST, &m);
        assert_int_equal(m.u.vf_association.allocated, 1);
        assert_int_equal(m.u.vf_association.serial, 0x1234);

        n = nvsp_build_oid_query_ex_complete(b, sizeof b, pad, RNDIS_STATUS_NOT_SUPPORTED, 0);
        nvsp_expect_ok(b, n, NVSP_TO_GUEST, &m);
        assert_int_equal(m.u.oid_query_ex_complete.status, RNDIS_STATUS_NOT_SUPPORTED);

        n = nvsp_build_subchannel_complete(b, sizeof b, pad, NVSP_STATUS_SUCCESS, 3);
        nvsp_expect_ok(b, n, NVSP_TO_GUEST, &m);
        assert_int_equal(m.u.subchannel_complete.status, 1);
        assert_int_equal(m.u.subchannel_complete.num_subchannels, 3);

        n = nvsp_build_rndis_pkt(b, sizeof b, pad, NVSP_CHANNEL_TYPE_CONTROL, NVSP_NO_SECTION, 0);
        nvsp_expect_ok(b, n, NVSP_TO_GUEST, &m);
        assert_int_equal(m.u.rndis_pkt.channel_type, 1);
        assert_int_equal(m.u.rndis_pkt.section_index, 0xFFFFFFFF);

        n = nvsp_build_rndis_pkt_complete(b, sizeof b, pad, NVSP_STATUS_FAILURE);
        nvsp_expect_ok(b, n, NVSP_TO_GUEST, &m);
        assert_int_equal(m.u.rndis_pkt_complete.status, 2);

        n = nvsp_build_switch_data_path(b, sizeof b, pad, NVSP_DATA_PATH_SYNTHETIC);
        nvsp_expect_ok(b, n, NVSP_TO_GUEST, &m);
    }

    /* The indirection table, openvmm style: offset 12, 16 entries. */
    uint32_t e[16];
    for (int i = 0; i < 16; i++)
        e[i] = (uint32_t)i % 4;
    uint32_t n = nvsp_build_indirection_table(b, sizeof b, e, 16);
    assert_int_equal(n, 12 + 64);
    assert_int_equal(get32(b + 8), 12);
    uint8_t *c = dup_exact(b, n);
    const char *why;
    assert_int_equal(nvsp_msg_check(c, n, NVSP_TO_GUEST, &m, &why), STATUS_OK);
    assert_int_equal(m.u.indirection_table.count, 16);
    assert_int_equal(m.u.indirection_table.offset, 12);
    assert_ptr_equal(m.u.indirection_table.table, c + 12);
    uint32_t t[20];
    assert_int_equal(nvsp_indirection_table_copy(&m, t, 20), 16);
    assert_memory_equal(t, e, sizeof e);
    assert_int_equal(nvsp_indirection_table_copy(&m, t, 5), 5);
    free(c);
    struct nvsp_msg other = { .type = NVSP_MSG_INIT };
    assert_int_equal(nvsp_indirection_table_copy(&other, t, 20), 0); /* not a table */
}

/* SUB_CHANNEL is a request one way and a completion the other; the same bytes read differently. */
static void test_nvsp_subchannel_directions(void **state)
{
    (void)state;
    uint8_t b[40];
    struct nvsp_msg m;
    uint32_t n = nvsp_build_subchannel_complete(b, sizeof b, 0, NVSP_STATUS_FAILURE, 0);
    nvsp_expect_ok(b, n, NVSP_TO_HOST, &m);
    assert_int_equal(m.u.subchannel_req.op, NVSP_STATUS_FAILURE);
    nvsp_expect_ok(b, n, NVSP_TO_GUEST, &m);
    assert_int_equal(m.u.subchannel_complete.status, NVSP_STATUS_FAILURE);
}

/* Each type is accepted only in the direction it is sent in. */
static void test_nvsp_wrong_direction(void **state)
{
    (void)state;
    static const struct {
        uint32_t type;
        enum nvsp_dir bad_dir;
    } cases[] = {
        { NVSP_MSG_INIT, NVSP_TO_GUEST },
        { NVSP_MSG_INIT_COMPLETE, NVSP_TO_HOST },
        { NVSP_MSG1_SEND_NDIS_VERSION, NVSP_TO_GUEST },
        { NVSP_MSG1_SEND_RECEIVE_BUFFER, NVSP_TO_GUEST },
        { NVSP_MSG1_SEND_RECEIVE_BUFFER_COMPLETE, NVSP_TO_HOST },
        { NVSP_MSG1_REVOKE_RECEIVE_BUFFER, NVSP_TO_GUEST },
        { NVSP_MSG1_SEND_SEND_BUFFER, NVSP_TO_GUEST },
        { NVSP_MSG1_SEND_SEND_BUFFER_COMPLETE, NVSP_TO_HOST },
        { NVSP_MSG1_REVOKE_SEND_BUFFER, NVSP_TO_GUEST },
        { NVSP_MSG2_SEND_NDIS_CONFIG, NVSP_TO_GUEST },
        { NVSP_MSG4_SEND_VF_ASSOCIATION, NVSP_TO_HOST },
        { NVSP_MSG5_OID_QUERY_EX, NVSP_TO_GUEST },
        { NVSP_MSG5_OID_QUERY_EX_COMPLETE, NVSP_TO_HOST },
        { NVSP_MSG5_SEND_INDIRECTION_TABLE, NVSP_TO_HOST },
    };
    uint8_t b[40] = { 0 };
    for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        put32(b, cases[i].type);
        nvsp_expect_bad(b, sizeof b, cases[i].bad_dir, "NVSP message type not sent in this direction");
    }
}

/* Too short for the header, unknown types (including the chimney, deprecated and v6 PD ones). */
static void test_nvsp_short_and_unknown(void **state)
{
    (void)state;
    uint8_t b[40] = { 0 };
    put32(b, NVSP_MSG_INIT);
    for (uint32_t n = 0; n < 4; n++) {
        nvsp_expect_bad(b, n, NVSP_TO_HOST, "shorter than the 4-byte NVSP header");
        nvsp_expect_bad(b, n, NVSP_TO_GUEST, "shorter than the 4-byte NVSP header");
    }
    const uint32_t unknown[] = { 0, 3, 99, 109, 117, 124, 126, 127, 130, 135, 136, 137, 0x80000001u, 0xFFFFFFFFu };
    for (unsigned i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        put32(b, unknown[i]);
        nvsp_expect_bad(b, sizeof b, NVSP_TO_HOST, "unknown NVSP message type");
        nvsp_expect_bad(b, sizeof b, NVSP_TO_GUEST, "unknown NVSP message type");
    }
}

/* Every prefix of every valid message: rejected below its natural size ("too short"), accepted at
 * and above it; the check reads nothing past the prefix (exact heap copies under ASan). */
static void test_nvsp_truncation_sweep(void **state)
{
    (void)state;
    uint8_t b[128];
    struct {
        uint32_t n;
        enum nvsp_dir dir;
        uint8_t bytes[128];
    } msgs[24];
    unsigned count = 0;
#define ADD(dir_, call)                                                                                        \
    do {                                                                                                       \
        msgs[count].n = (call);                                                                                \
        assert_true(msgs[count].n > 0);                                                                        \
        msgs[count].dir = (dir_);                                                                              \
        memcpy(msgs[count].bytes, b, msgs[count].n);                                                           \
        count++;                                                                                               \
    } while (0)
    struct nvsp_recv_section s = { 0, 2048, 16, 32768 };
    uint32_t e[16] = { 0 };
    ADD(NVSP_TO_HOST, nvsp_build_init(b, sizeof b, 40, 2, 2));
    ADD(NVSP_TO_HOST, nvsp_build_ndis_version(b, sizeof b, 40, 0x60001));
    ADD(NVSP_TO_HOST, nvsp_build_ndis_config(b, sizeof b, 40, 1514, 8));
    ADD(NVSP_TO_HOST, nvsp_build_send_recv_buf(b, sizeof b, 40, 1, 0xCAFE));
    ADD(NVSP_TO_HOST, nvsp_build_send_send_buf(b, sizeof b, 40, 1, 0xFACE));
    ADD(NVSP_TO_HOST, nvsp_build_revoke_recv_buf(b, sizeof b, 40, 0xCAFE));
    ADD(NVSP_TO_HOST, nvsp_build_revoke_send_buf(b, sizeof b, 40, 0xFACE));
    ADD(NVSP_TO_HOST, nvsp_build_subchannel_req(b, sizeof b, 40, 2));
    ADD(NVSP_TO_HOST, nvsp_build_rndis_pkt(b, sizeof b, 40, 0, 3, 100));
    ADD(NVSP_TO_HOST, nvsp_build_rndis_pkt_complete(b, sizeof b, 40, 1));
    ADD(NVSP_TO_HOST, nvsp_build_switch_data_path(b, sizeof b, 40, 1));
    ADD(NVSP_TO_GUEST, nvsp_build_init_complete(b, sizeof b, 28, 0xFFFFFFFF, 34, 1));
    ADD(NVSP_TO_GUEST, nvsp_build_recv_buf_complete(b, sizeof b, 28, 1, &s, 1));
    ADD(NVSP_TO_GUEST, nvsp_build_send_buf_complete(b, sizeof b, 40, 1, 6144));
    ADD(NVSP_TO_GUEST, nvsp_build_vf_association(b, sizeof b, 28, 1, 5));
    ADD(NVSP_TO_GUEST, nvsp_build_oid_query_ex_complete(b, sizeof b, 28, 0, 0));
    ADD(NVSP_TO_GUEST, nvsp_build_subchannel_complete(b, sizeof b, 28, 1, 1));
    ADD(NVSP_TO_GUEST, nvsp_build_indirection_table(b, sizeof b, e, 16));
#undef ADD
    for (unsigned i = 0; i < count; i++) {
        uint32_t type = get32(msgs[i].bytes);
        uint32_t need = nvsp_msg_min_size(type);
        if (type == NVSP_MSG1_SEND_RECEIVE_BUFFER_COMPLETE)
            need += 16; /* its one section */
        if (type == NVSP_MSG5_SEND_INDIRECTION_TABLE)
            need += 64; /* its table */
        for (uint32_t p = 0; p <= msgs[i].n; p++) {
            struct nvsp_msg m;
            const char *why = NULL;
            status_t st = ncheck(msgs[i].bytes, p, msgs[i].dir, &m, &why);
            if (p < 4) {
                assert_int_equal(st, STATUS_BAD_DATA);
                assert_string_equal(why, "shorter than the 4-byte NVSP header");
            } else if (p < nvsp_msg_min_size(type)) {
                assert_int_equal(st, STATUS_BAD_DATA);
                assert_string_equal(why, "too short for its NVSP message type");
            } else if (p < need) {
                assert_int_equal(st, STATUS_BAD_DATA);
                assert_true(strstr(why, "beyond the message") != NULL);
            } else {
                if (st != STATUS_OK)
                    print_message("%s prefix %u: %s\n", nvsp_msg_name(type), p, why);
                assert_int_equal(st, STATUS_OK);
                assert_int_equal(m.type, type);
            }
        }
    }
}

/* RECEIVE_BUFFER_COMPLETE: section count, sections inside the message, sections consistent. */
static void test_nvsp_recv_buf_complete_checks(void **state)
{
    (void)state;
    uint8_t b[128];
    struct nvsp_msg m;
    struct nvsp_recv_section s[5] = {
        { 0, 1806, 100, 180600 }, { 180600, 256, 10, 183160 }, { 0, 1, 1, 1 }, { 0, 1, 1, 1 }, { 0, 1, 1, 1 }
    };

    /* 0..4 sections are fine; 5 are too many even when the message holds them. */
    for (uint32_t k = 0; k <= 4; k++) {
        uint32_t n = nvsp_build_recv_buf_complete(b, sizeof b, 28, NVSP_STATUS_SUCCESS, s, k);
        nvsp_expect_ok(b, n, NVSP_TO_GUEST, &m);
        assert_int_equal(m.u.recv_buf_complete.num_sections, k);
        if (k >= 2)
            assert_int_equal(m.u.recv_buf_complete.sections[1].offset, 180600);
    }
    uint32_t n = nvsp_build_recv_buf_complete(b, sizeof b, 0, NVSP_STATUS_SUCCESS, s, 5);
    assert_int_equal(n, 12 + 80);
    nvsp_expect_bad(b, n, NVSP_TO_GUEST, "too many receive buffer sections");
    put32(b + 8, 0xFFFFFFFF);
    nvsp_expect_bad(b, n, NVSP_TO_GUEST, "too many receive buffer sections");

    /* The count says 2 but the message has room for 1 (a 28-byte host message). */
    n = nvsp_build_recv_buf_complete(b, sizeof b, 0, NVSP_STATUS_SUCCESS, s, 1);
    put32(b + 8, 2);
    nvsp_expect_bad(b, n, NVSP_TO_GUEST, "receive buffer sections beyond the message");
    put32(b + 8, 1);
    nvsp_expect_bad(b, n - 1, NVSP_TO_GUEST, "receive buffer sections beyond the message");

    /* Inconsistent sections, with SUCCESS. */
    const struct nvsp_recv_section badsec[] = {
        { 0, 0, 10, 100 },                   /* zero size */
        { 0, 10, 0, 100 },                   /* zero count */
        { 200, 10, 1, 100 },                 /* offset past the end */
        { 0, 10, 11, 100 },                  /* size * count past the end */
        { 95, 10, 1, 100 },                  /* offset + size past the end */
        { 0, 0x10000, 0x10001, 0xFFFFFFFF }, /* size * count wraps 32 bits */
        { 0xFFFFFFF0, 0x20, 1, 0xFFFFFFFF }, /* offset + size wraps 32 bits */
    };
    for (unsigned i = 0; i < sizeof badsec / sizeof badsec[0]; i++) {
        n = nvsp_build_recv_buf_complete(b, sizeof b, 28, NVSP_STATUS_SUCCESS, &badsec[i], 1);
        nvsp_expect_bad(b, n, NVSP_TO_GUEST, "receive buffer section inconsistent");
        /* With a failure status the sections are not looked at. */
        n = nvsp_build_recv_buf_complete(b, sizeof b, 28, NVSP_STATUS_FAILURE, &badsec[i], 1);
        nvsp_expect_ok(b, n, NVSP_TO_GUEST, &m);
        assert_int_equal(m.u.recv_buf_complete.status, NVSP_STATUS_FAILURE);
    }
}

/* SEND_INDIRECTION_TABLE: count range, the offset's base (the message start), bounds, wrapping. */
static void test_nvsp_indirection_table_checks(void **state)
{
    (void)state;
    uint8_t b[1024];
    uint32_t e[129];
    struct nvsp_msg m;
    for (int i = 0; i < 129; i++)
        e[i] = (uint32_t)i;

    /* 16 .. 128 entries. */
    nvsp_expect_ok(b, nvsp_build_indirection_table(b, sizeof b, e, 16), NVSP_TO_GUEST, &m);
    nvsp_expect_ok(b, nvsp_build_indirection_table(b, sizeof b, e, 128), NVSP_TO_GUEST, &m);
    assert_int_equal(m.u.indirection_table.count, 128);
    const uint32_t badcount[] = { 0, 1, 15, 129, 0x40000000, 0xFFFFFFFF };
    for (unsigned i = 0; i < sizeof badcount / sizeof badcount[0]; i++) {
        uint32_t n = nvsp_build_indirection_table(b, sizeof b, e, 16);
        put32(b + 4, badcount[i]);
        nvsp_expect_bad(b, n, NVSP_TO_GUEST, "indirection table entry count out of range");
    }
    nvsp_expect_bad(b, nvsp_build_indirection_table(b, sizeof b, e, 129), NVSP_TO_GUEST,
                    "indirection table entry count out of range");

    /* The offset counts from the message start: 12 is the first byte after the fixed part. */
    uint32_t n = nvsp_build_indirection_table(b, sizeof b, e, 16);
    for (uint32_t off = 0; off < 12; off++) {
        put32(b + 8, off);
        nvsp_expect_bad(b, n, NVSP_TO_GUEST, "indirection table overlaps the message header");
    }
    put32(b + 8, 13); /* one byte too far for the bytes given */
    nvsp_expect_bad(b, n, NVSP_TO_GUEST, "indirection table beyond the message");
    put32(b + 8, 12);
    nvsp_expect_bad(b, n - 1, NVSP_TO_GUEST, "indirection table beyond the message");
    const uint32_t wrap[] = { 0xFFFFFFFC, 0xFFFFFFC0, 0x80000000 };
    for (unsigned i = 0; i < 3; i++) {
        put32(b + 8, wrap[i]);
        nvsp_expect_bad(b, n, NVSP_TO_GUEST, "indirection table beyond the message");
    }

    /* Hyper-V <= 6 layout: the table at 40, the offset field too small; the fix-up moves it. */
    memset(b, 0, sizeof b);
    put32(b, NVSP_MSG5_SEND_INDIRECTION_TABLE);
    put32(b + 4, 16);
    put32(b + 8, 28);
    for (int i = 0; i < 16; i++)
        put32(b + 40 + 4 * i, (uint32_t)i + 100);
    n = 40 + 64;
    uint8_t *c = dup_exact(b, n);
    const char *why;
    assert_int_equal(nvsp_msg_check(c, n, NVSP_TO_GUEST, &m, &why), STATUS_OK);
    assert_int_equal(m.u.indirection_table.offset, 28);
    struct nvsp_msg m61 = m;
    nvsp_indirection_table_hyperv_fixup(&m61, c, NVSP_VERSION_61); /* 6.1: left alone */
    assert_int_equal(m61.u.indirection_table.offset, 28);
    nvsp_indirection_table_hyperv_fixup(&m, c, NVSP_VERSION_6);
    assert_int_equal(m.u.indirection_table.offset, 40);
    uint32_t t[16];
    assert_int_equal(nvsp_indirection_table_copy(&m, t, 16), 16);
    for (int i = 0; i < 16; i++)
        assert_int_equal(t[i], (uint32_t)i + 100);
    free(c);
    /* Long enough for the reported offset (28 + 64) but not for a table at 40: left alone. */
    c = dup_exact(b, 92);
    assert_int_equal(nvsp_msg_check(c, 92, NVSP_TO_GUEST, &m, &why), STATUS_OK);
    nvsp_indirection_table_hyperv_fixup(&m, c, NVSP_VERSION_5);
    assert_int_equal(m.u.indirection_table.offset, 28);
    free(c);
}

/* Builders never write past cap and return 0 when the message does not fit. */
static void test_nvsp_builder_caps(void **state)
{
    (void)state;
    uint8_t b[64];
    struct nvsp_recv_section s = { 0, 1, 1, 1 };
    uint32_t e[16] = { 0 };
    for (uint32_t cap = 0; cap < 40; cap++) {
        memset(b, 0x5A, sizeof b);
        assert_int_equal(nvsp_build_init(b, cap, 40, 2, 2), 0);
        assert_int_equal(nvsp_build_ndis_config(b, cap, 40, 1, 1), 0);
        assert_int_equal(nvsp_build_recv_buf_complete(b, cap, 40, 1, &s, 1), 0);
        assert_int_equal(nvsp_build_indirection_table(b, cap, e, 16), 0);
        for (unsigned i = 0; i < sizeof b; i++)
            assert_int_equal(b[i], 0x5A);
    }
    assert_int_equal(nvsp_build_init(b, 12, 0, 2, 2), 12);
    assert_int_equal(nvsp_build_init(NULL, 64, 0, 2, 2), 0);
    assert_int_equal(nvsp_build_recv_buf_complete(b, 64, 0, 1, NULL, 1), 0);
    assert_int_equal(nvsp_build_recv_buf_complete(b, 64, 0, 1, NULL, 0), 12);
    /* 12 + 16 * 0x10000000 passes 4 GiB: refused before anything is read or written. */
    assert_int_equal(nvsp_build_recv_buf_complete(b, 0xFFFFFFFF, 0, 1, &s, 0x10000000), 0);
    assert_int_equal(nvsp_build_indirection_table(b, 64, NULL, 16), 0);
    assert_int_equal(nvsp_build_init(b, 64, 0xFFFFFFFF, 2, 2), 0); /* padding past cap */
}

/* ================================ RNDIS ================================ */

static void test_rndis_numbers(void **state)
{
    (void)state;
    assert_int_equal(RNDIS_MSG_INITIALIZE_CMPLT, RNDIS_MSG_INITIALIZE | RNDIS_MSG_COMPLETION);
    assert_int_equal(RNDIS_MSG_KEEPALIVE_CMPLT, 0x80000008);
    assert_int_equal(RNDIS_STATUS_MEDIA_CONNECT, 0x4001000B);
    assert_int_equal(RNDIS_STATUS_MEDIA_DISCONNECT, 0x4001000C);
    assert_int_equal(RNDIS_STATUS_LINK_SPEED_CHANGE, 0x40010013);
    assert_int_equal(RNDIS_STATUS_NETWORK_CHANGE, 0x40010018);
    assert_int_equal(RNDIS_OID_GEN_CURRENT_PACKET_FILTER, 0x0001010E);
    assert_int_equal(RNDIS_OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES, 0xFC01020D);
    assert_int_equal(RNDIS_PPI_IEEE_8021Q, 6);
    assert_int_equal(RNDIS_PPI_HASH_VALUE, 8);
    assert_int_equal(RNDIS_PPI_HASH_INFO, 9);
    assert_int_equal(RNDIS_PACKET_OFFSET_MIN, 36);
    assert_string_equal(rndis_msg_name(RNDIS_MSG_QUERY_CMPLT), "QUERY_CMPLT");
    assert_string_equal(rndis_msg_name(9), "unknown");
    assert_int_equal(rndis_msg_min_size(RNDIS_MSG_INITIALIZE_CMPLT), 48);
    assert_int_equal(rndis_msg_min_size(RNDIS_MSG_PACKET), 44);
    assert_int_equal(rndis_msg_min_size(0), 0);
    assert_int_equal(RNDIS_VLAN_INFO_ID(RNDIS_VLAN_INFO(100, 5)), 100);
}

/* The guest's messages through the (host's) check. */
static void test_rndis_roundtrip_guest(void **state)
{
    (void)state;
    uint8_t b[512];
    struct rndis_msg m;
    uint8_t *c;
    uint32_t n;

    n = rndis_build_init(b, sizeof b, 7, 0x4000);
    assert_int_equal(n, 24);
    rndis_expect_ok(b, n, &m, &c);
    assert_int_equal(m.type, RNDIS_MSG_INITIALIZE);
    assert_int_equal(m.request_id, 7);
    assert_int_equal(m.u.init_req.major, 1);
    assert_int_equal(m.u.init_req.minor, 0);
    assert_int_equal(m.u.init_req.max_xfer_size, 0x4000);
    free(c);

    rndis_expect_msg(b, rndis_build_halt(b, sizeof b, 8), RNDIS_MSG_HALT, 8);

    n = rndis_build_query(b, sizeof b, 9, RNDIS_OID_802_3_PERMANENT_ADDRESS, NULL, 0);
    assert_int_equal(n, 28);
    assert_int_equal(get32(b + 20), 20);
    rndis_expect_ok(b, n, &m, &c);
    assert_int_equal(m.u.oid_req.oid, RNDIS_OID_802_3_PERMANENT_ADDRESS);
    assert_null(m.u.oid_req.info);
    free(c);

    uint32_t filter = RNDIS_PACKET_TYPE_DIRECTED | RNDIS_PACKET_TYPE_BROADCAST;
    n = rndis_build_set(b, sizeof b, 10, RNDIS_OID_GEN_CURRENT_PACKET_FILTER, &filter, 4);
    assert_int_equal(n, 32);
    rndis_expect_ok(b, n, &m, &c);
    assert_int_equal(m.type, RNDIS_MSG_SET);
    assert_int_equal(m.request_id, 10);
    assert_int_equal(m.u.oid_req.info_len, 4);
    assert_ptr_equal(m.u.oid_req.info, c + 28);
    assert_int_equal(get32(m.u.oid_req.info), 9);
    free(c);

    uint8_t rss_caps_in[18] = { 0x88, 2, 18, 0 };
    n = rndis_build_query(b, sizeof b, 11, RNDIS_OID_GEN_RECEIVE_SCALE_CAPABILITIES, rss_caps_in, 18);
    assert_int_equal(n, 46);
    rndis_expect_ok(b, n, &m, &c);
    assert_memory_equal(m.u.oid_req.info, rss_caps_in, 18);
    free(c);

    rndis_expect_msg(b, rndis_build_keepalive(b, sizeof b, 12), RNDIS_MSG_KEEPALIVE, 12);
    rndis_expect_msg(b, rndis_build_keepalive_cmplt(b, sizeof b, 13, RNDIS_STATUS_SUCCESS), RNDIS_MSG_KEEPALIVE_CMPLT,
                     13);

    /* A transmitted frame without and with PPIs (checksum and VLAN). */
    uint8_t frame[60];
    for (int i = 0; i < 60; i++)
        frame[i] = (uint8_t)i;
    uint32_t h = rndis_build_packet(b, sizeof b, NULL, 0, sizeof frame);
    assert_int_equal(h, 44);
    memcpy(b + h, frame, sizeof frame);
    rndis_expect_ok(b, h + 60, &m, &c);
    assert_int_equal(m.msg_len, 104);
    assert_int_equal(m.u.packet.data_offset, 44);
    assert_int_equal(get32(c + 8), 36); /* relative to data_offset's field */
    assert_int_equal(m.u.packet.data_len, 60);
    assert_memory_equal(m.u.packet.data, frame, 60);
    assert_null(m.u.packet.ppi);
    assert_int_equal(m.u.packet.ppi_flags, 0);
    free(c);

    const struct rndis_ppi_u32 ppi[] = { { RNDIS_PPI_CHECKSUM, 0x00000005 },
                                         { RNDIS_PPI_IEEE_8021Q, RNDIS_VLAN_INFO(42, 3) } };
    h = rndis_build_packet(b, sizeof b, ppi, 2, sizeof frame);
    assert_int_equal(h, 44 + 32);
    memcpy(b + h, frame, sizeof frame);
    rndis_expect_ok(b, h + 60, &m, &c);
    assert_int_equal(m.u.packet.data_offset, 76);
    assert_int_equal(m.u.packet.ppi_len, 32);
    assert_int_equal(m.u.packet.ppi_count, 2);
    assert_ptr_equal(m.u.packet.ppi, c + 44);
    assert_int_equal(m.u.packet.ppi_flags, RNDIS_PKT_HAS_CSUM | RNDIS_PKT_HAS_VLAN);
    assert_int_equal(m.u.packet.csum_info, 5);
    assert_int_equal(RNDIS_VLAN_INFO_ID(m.u.packet.vlan_info), 42);
    assert_memory_equal(m.u.packet.data, frame, 60);
    free(c);
}

/* The host's messages through the (guest's) check. */
static void test_rndis_roundtrip_host(void **state)
{
    (void)state;
    uint8_t b[512];
    struct rndis_msg m;
    uint8_t *c;
    uint32_t n;

    const struct rndis_init_info ii = { RNDIS_DF_CONNECTIONLESS, RNDIS_MEDIUM_802_3, 8, 0xEFFFFFFF, 3 };
    n = rndis_build_init_cmplt(b, sizeof b, 1, RNDIS_STATUS_SUCCESS, &ii);
    assert_int_equal(n, 52);
    rndis_expect_ok(b, n, &m, &c);
    assert_int_equal(m.type, RNDIS_MSG_INITIALIZE_CMPLT);
    assert_int_equal(m.request_id, 1);
    assert_int_equal(m.status, 0);
    assert_int_equal(m.u.init_cmplt.major, 1);
    assert_int_equal(m.u.init_cmplt.device_flags, 1);
    assert_int_equal(m.u.init_cmplt.medium, 0);
    assert_int_equal(m.u.init_cmplt.max_pkts_per_msg, 8);
    assert_int_equal(m.u.init_cmplt.max_xfer_size, 0xEFFFFFFF);
    assert_int_equal(m.u.init_cmplt.pkt_align_factor, 3);
    free(c);

    /* openvmm's answer to the MAC query: 24 + 6 = 30 bytes, info at offset 16 (abs 24). */
    const uint8_t mac[6] = { 0x00, 0x15, 0x5d, 0x01, 0x02, 0x03 };
    n = rndis_build_query_cmplt(b, sizeof b, 2, RNDIS_STATUS_SUCCESS, mac, 6);
    assert_int_equal(n, 30);
    assert_int_equal(get32(b + 20), 16);
    rndis_expect_ok(b, n, &m, &c);
    assert_int_equal(m.type, RNDIS_MSG_QUERY_CMPLT);
    assert_int_equal(m.u.query_cmplt.info_len, 6);
    assert_ptr_equal(m.u.query_cmplt.info, c + 24);
    assert_memory_equal(m.u.query_cmplt.info, mac, 6);
    free(c);

    n = rndis_build_query_cmplt(b, sizeof b, 3, RNDIS_STATUS_NOT_SUPPORTED, NULL, 0);
    rndis_expect_ok(b, n, &m, &c);
    assert_int_equal(m.status, RNDIS_STATUS_NOT_SUPPORTED);
    assert_null(m.u.query_cmplt.info);
    free(c);

    rndis_expect_msg(b, rndis_build_set_cmplt(b, sizeof b, 4, RNDIS_STATUS_SUCCESS), RNDIS_MSG_SET_CMPLT, 4);

    n = rndis_build_indicate_status(b, sizeof b, RNDIS_STATUS_MEDIA_CONNECT, NULL, 0);
    assert_int_equal(n, 20);
    assert_int_equal(get32(b + 16), 0); /* openvmm: offset 0 without a buffer */
    rndis_expect_ok(b, n, &m, &c);
    assert_int_equal(m.type, RNDIS_MSG_INDICATE_STATUS);
    assert_int_equal(m.status, RNDIS_STATUS_MEDIA_CONNECT);
    assert_null(m.u.indicate.buf);
    free(c);

    uint32_t change = 2;
    n = rndis_build_indicate_status(b, sizeof b, RNDIS_STATUS_NETWORK_CHANGE, &change, 4);
    assert_int_equal(get32(b + 16), 12);
    rndis_expect_ok(b, n, &m, &c);
    assert_int_equal(m.u.indicate.len, 4);
    assert_ptr_equal(m.u.indicate.buf, c + 20);
    free(c);

    /* A received frame with checksum, VLAN, hash value and hash info PPIs. */
    const struct rndis_ppi_u32 ppi[] = { { RNDIS_PPI_CHECKSUM, RNDIS_RXCSUM_IP_OK | RNDIS_RXCSUM_UDP_OK },
                                         { RNDIS_PPI_IEEE_8021Q, RNDIS_VLAN_INFO(7, 0) },
                                         { RNDIS_PPI_HASH_VALUE, 0xDEADBEEF },
                                         { RNDIS_PPI_HASH_INFO, 0x00000201 },
                                         { RNDIS_PPI_LSO, 0x12345 } };
    uint32_t h = rndis_build_packet(b, sizeof b, ppi, 5, 100);
    memset(b + h, 0xEE, 100);
    rndis_expect_ok(b, h + 100, &m, &c);
    assert_int_equal(m.u.packet.ppi_count, 5);
    assert_int_equal(m.u.packet.ppi_flags, RNDIS_PKT_HAS_CSUM | RNDIS_PKT_HAS_VLAN | RNDIS_PKT_HAS_HASH_VALUE |
                                               RNDIS_PKT_HAS_HASH_INFO | RNDIS_PKT_HAS_LSO);
    assert_int_equal(m.u.packet.csum_info, 0x30);
    assert_int_equal(m.u.packet.hash_value, 0xDEADBEEF);
    assert_int_equal(m.u.packet.hash_info, 0x201);
    assert_int_equal(m.u.packet.lso_info, 0x12345);
    assert_int_equal(m.u.packet.data_len, 100);
    free(c);
}

/* openvmm's receive layout (buffers.rs write_header): msg_len = the whole sub-allocation (mtu 1514:
 * 256 + 1514 + 36 = 1806), PPIs at offset 36 (checksum, VLAN: 16 bytes each), the frame at 248
 * (256 from the start), in a transfer-page range of exactly the sub-allocation. */
static void test_rndis_openvmm_rx_layout(void **state)
{
    (void)state;
    enum { SUB = 1806, FRAME = 98 };
    uint8_t *b = calloc(1, SUB);
    assert_non_null(b);
    craft_packet(b, SUB, 256 - 8, FRAME, 0, 0, 36, 32);
    put_ppi(b + 44, 16, RNDIS_PPI_CHECKSUM, 12, RNDIS_RXCSUM_TCP_OK | RNDIS_RXCSUM_IP_OK);
    put_ppi(b + 60, 16, RNDIS_PPI_IEEE_8021Q, 12, RNDIS_VLAN_INFO(5, 1));
    memset(b + 256, 0x42, FRAME);
    struct rndis_iter it;
    struct rndis_msg m;
    const char *why;
    uint8_t *c = dup_exact(b, SUB);
    rndis_iter_init(&it, c, SUB, RNDIS_ITER_ONE);
    assert_int_equal(rndis_iter_next(&it, &m, &why), STATUS_OK);
    rndis_view_in_bounds(&m, c, SUB);
    assert_int_equal(m.u.packet.data_offset, 256);
    assert_ptr_equal(m.u.packet.data, c + 256);
    assert_int_equal(m.u.packet.data_len, FRAME);
    assert_int_equal(m.u.packet.ppi_flags, RNDIS_PKT_HAS_CSUM | RNDIS_PKT_HAS_VLAN);
    assert_int_equal(RNDIS_VLAN_INFO_ID(m.u.packet.vlan_info), 5);
    assert_int_equal(rndis_iter_next(&it, &m, &why), STATUS_NOT_FOUND);
    assert_null(why);
    free(c);
    free(b);
}

/* Header: too short, msg_len below the header or beyond the bytes, unknown type, below the type's
 * minimum (every type). */
static void test_rndis_header_errors(void **state)
{
    (void)state;
    uint8_t b[64] = { 0 };
    put32(b, RNDIS_MSG_KEEPALIVE);
    put32(b + 4, 12);
    for (uint32_t n = 0; n < 8; n++)
        rndis_expect_bad(b, n, "shorter than the 8-byte RNDIS header");
    for (uint32_t l = 0; l < 8; l++) {
        put32(b + 4, l);
        rndis_expect_bad(b, 64, "RNDIS message length smaller than its header");
    }
    put32(b + 4, 65);
    rndis_expect_bad(b, 64, "RNDIS message length beyond the bytes received");
    put32(b + 4, 0xFFFFFFFF);
    rndis_expect_bad(b, 64, "RNDIS message length beyond the bytes received");
    const uint32_t unknown[] = { 0, 9, 0x80000001, 0x80000003, 0x80000007, 0xFF000001, 0xFFFFFFFF };
    for (unsigned i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        put32(b, unknown[i]);
        put32(b + 4, 64);
        rndis_expect_bad(b, 64, "unknown RNDIS message type");
    }
    const uint32_t types[] = { RNDIS_MSG_PACKET, RNDIS_MSG_INITIALIZE, RNDIS_MSG_HALT, RNDIS_MSG_QUERY,
                               RNDIS_MSG_SET, RNDIS_MSG_RESET, RNDIS_MSG_INDICATE_STATUS, RNDIS_MSG_KEEPALIVE,
                               RNDIS_MSG_INITIALIZE_CMPLT, RNDIS_MSG_QUERY_CMPLT, RNDIS_MSG_SET_CMPLT,
                               RNDIS_MSG_RESET_CMPLT, RNDIS_MSG_KEEPALIVE_CMPLT };
    for (unsigned i = 0; i < sizeof types / sizeof types[0]; i++) {
        uint32_t min = rndis_msg_min_size(types[i]);
        assert_true(min >= 12);
        put32(b, types[i]);
        for (uint32_t l = 8; l < min; l++) {
            put32(b + 4, l);
            rndis_expect_bad(b, 64, "too short for its RNDIS message type");
        }
    }
}

/* INITIALIZE_CMPLT may stop before af_list_size (48 bytes, FreeBSD's minimum). */
static void test_rndis_init_cmplt_48(void **state)
{
    (void)state;
    uint8_t b[64];
    const struct rndis_init_info ii = { 1, 0, 1, 0x4000, 0 };
    assert_int_equal(rndis_build_init_cmplt(b, sizeof b, 5, 0, &ii), 52);
    put32(b + 48, 0x77); /* af_list_size beyond the 48-byte message: not read */
    put32(b + 4, 48);
    struct rndis_msg m;
    uint8_t *c;
    rndis_expect_ok(b, 48, &m, &c);
    assert_int_equal(m.u.init_cmplt.af_list_size, 0);
    assert_int_equal(m.request_id, 5);
    free(c);
    put32(b + 4, 52);
    rndis_expect_ok(b, 52, &m, &c);
    assert_int_equal(m.u.init_cmplt.af_list_size, 0x77);
    free(c);
    rndis_expect_bad(b, 51, "RNDIS message length beyond the bytes received");
    put32(b + 4, 47);
    rndis_expect_bad(b, 52, "too short for its RNDIS message type");
}

/* QUERY/SET information buffers: inside the header, beyond, wrapping; length 0 ignores the offset. */
static void test_rndis_oid_req_info_errors(void **state)
{
    (void)state;
    uint8_t b[64];
    uint32_t v = 1;
    uint32_t n = rndis_build_set(b, sizeof b, 1, RNDIS_OID_GEN_CURRENT_PACKET_FILTER, &v, 4);
    assert_int_equal(get32(b + 20), 20);
    rndis_buffer_errors(b, n, 20, 16, "information buffer overlaps the request header",
                        "information buffer beyond the message");
    struct rndis_msg m;
    uint8_t *c;
    put32(b + 16, 0);
    put32(b + 20, 0xFFFFFFFF); /* no buffer: the offset is not used */
    rndis_expect_ok(b, n, &m, &c);
    assert_null(m.u.oid_req.info);
    free(c);
    /* The QUERY request follows the same rules. */
    n = rndis_build_query(b, sizeof b, 1, RNDIS_OID_GEN_LINK_SPEED, &v, 4);
    put32(b + 20, 19);
    rndis_expect_bad(b, n, "information buffer overlaps the request header");
}

static void test_rndis_query_cmplt_errors(void **state)
{
    (void)state;
    uint8_t b[64];
    const uint8_t mac[6] = { 1, 2, 3, 4, 5, 6 };
    uint32_t n = rndis_build_query_cmplt(b, sizeof b, 2, 0, mac, 6);
    assert_int_equal(get32(b + 20), 16);
    rndis_buffer_errors(b, n, 20, 16, "information buffer overlaps the completion header",
                        "information buffer beyond the message");
    /* msg_len shorter than the buffer, bytes given longer: still beyond the message. */
    put32(b + 16, 6);
    put32(b + 4, 29);
    rndis_expect_bad(b, sizeof b, "information buffer beyond the message");
}

static void test_rndis_indicate_status_errors(void **state)
{
    (void)state;
    uint8_t b[64];
    uint32_t x = 0;
    uint32_t n = rndis_build_indicate_status(b, sizeof b, RNDIS_STATUS_NETWORK_CHANGE, &x, 4);
    assert_int_equal(get32(b + 16), 12);
    rndis_buffer_errors(b, n, 16, 12, "status buffer overlaps the header", "status buffer beyond the message");
}

/* PACKET: data, OOB and PPI areas. */
static void test_rndis_packet_errors(void **state)
{
    (void)state;
    uint8_t b[256] = { 0 };
    /* Valid base: data at 44, 100 bytes; msg_len 144. */
    craft_packet(b, 144, 36, 100, 0, 0, 0, 0);
    struct rndis_msg m;
    uint8_t *c;
    rndis_expect_ok(b, 144, &m, &c);
    free(c);

    /* The header's fields (craft_packet), the bytes given to the check, why it is refused. Only the
     * header changes from one to the next: the bytes after it stay 0. */
    static const struct {
        uint32_t msg_len, data_off, data_len, oob_off, oob_len, ppi_off, ppi_len, given;
        const char *reason;
    } bad[] = {
        { 144, 36, 0, 0, 0, 0, 0, 144, "PACKET without data" },
        { 144, 37, 100, 0, 0, 0, 0, 144, "PACKET data beyond the message" },
        { 144, 0xFFFFFFF8, 16, 0, 0, 0, 0, 144, "PACKET data beyond the message" }, /* offset wraps */
        { 144, 36, 0xFFFFFFFF, 0, 0, 0, 0, 144, "PACKET data beyond the message" }, /* length wraps */
        { 100, 36, 100, 0, 0, 0, 0, 144, "PACKET data beyond the message" },        /* beyond msg_len only */
        { 200, 36, 100, 10, 8, 0, 0, 200, "PACKET OOB area inside the PACKET header" },
        { 200, 36, 100, 180, 16, 0, 0, 200, "PACKET OOB area beyond the message" },
        { 200, 36, 100, 0xFFFFFFF0, 0x20, 0, 0, 200, "PACKET OOB area beyond the message" },
        { 200, 36, 100, 130, 8, 0, 0, 200, "PACKET OOB area overlaps the data" },
        { 200, 52, 100, 0, 0, 20, 16, 200, "PACKET PPI area inside the PACKET header" },
        { 200, 36, 100, 0, 0, 190, 16, 200, "PACKET PPI area beyond the message" },
        { 200, 36, 100, 0, 0, 0xFFFFFFFC, 16, 200, "PACKET PPI area beyond the message" },
        { 200, 36, 100, 0, 0, 36, 0xFFFFFFF0, 200, "PACKET PPI area beyond the message" },
        { 200, 36, 100, 0, 0, 120, 16, 200, "PACKET PPI area overlaps the data" },
    };
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        craft_packet(b, bad[i].msg_len, bad[i].data_off, bad[i].data_len, bad[i].oob_off, bad[i].oob_len,
                     bad[i].ppi_off, bad[i].ppi_len);
        rndis_expect_bad(b, bad[i].given, bad[i].reason);
    }
    for (uint32_t off = 0; off < 36; off++) {
        craft_packet(b, 144, off, 10, 0, 0, 0, 0);
        rndis_expect_bad(b, 144, "PACKET data offset inside the PACKET header");
    }
    /* Unaligned data offset is fine (Hyper-V does it). */
    craft_packet(b, 144, 37, 99, 0, 0, 0, 0);
    rndis_expect_ok(b, 144, &m, &c);
    assert_int_equal(m.u.packet.data_offset, 45);
    free(c);
    /* OOB right after the data. */
    craft_packet(b, 200, 36, 100, 136, 8, 0, 0);
    rndis_expect_ok(b, 200, &m, &c);
    assert_int_equal(m.u.packet.oob_len, 8);
    free(c);
    craft_packet(b, 200, 36, 100, 0, 0, 0, 0); /* OOB length 0: its offset is not used */
    put32(b + 16, 3);
    rndis_expect_ok(b, 200, &m, &c);
    free(c);
    /* OOB and PPI areas that overlap each other (the PPI area holds an element). */
    craft_packet(b, 200, 36, 100, 136, 16, 144, 16);
    put_ppi(b + 152, 16, RNDIS_PPI_CHECKSUM, 12, 0);
    rndis_expect_bad(b, 200, "PACKET OOB area overlaps the PPI area");
}

/* PPI elements, including the ones that would never end the walk. */
static void test_rndis_ppi_errors(void **state)
{
    (void)state;
    uint8_t b[2048];
    struct rndis_msg m;
    uint8_t *c;

    /* PPIs at 44 (offset 36), data after them (ppi_packet). */
    uint32_t n = ppi_packet(b, sizeof b, 8);
    rndis_expect_bad(b, n, "PPI element header truncated");
    ppi_expect_bad(b, sizeof b, 20, 16, RNDIS_PPI_CHECKSUM, 12,
                   "PPI element header truncated"); /* 4 bytes left after the first */

    /* Size 0: a walk that would never advance. */
    ppi_expect_bad(b, sizeof b, 16, 0, RNDIS_PPI_CHECKSUM, 0, "PPI element smaller than its header");
    for (uint32_t s = 1; s < 12; s++)
        ppi_expect_bad(b, sizeof b, 16, s, 1234, 12, "PPI element smaller than its header");
    ppi_expect_bad(b, sizeof b, 16, 20, RNDIS_PPI_CHECKSUM, 12, "PPI element beyond the PPI area");
    ppi_expect_bad(b, sizeof b, 16, 0xFFFFFFF0, RNDIS_PPI_CHECKSUM, 12, "PPI element beyond the PPI area");
    for (uint32_t o = 0; o < 12; o++)
        ppi_expect_bad(b, sizeof b, 16, 16, RNDIS_PPI_CHECKSUM, o, "PPI value offset outside its element");
    ppi_expect_bad(b, sizeof b, 16, 16, RNDIS_PPI_CHECKSUM, 17, "PPI value offset outside its element");
    ppi_expect_bad(b, sizeof b, 16, 16, RNDIS_PPI_CHECKSUM, 0xFFFFFFFF, "PPI value offset outside its element");
    /* A known type needs 4 bytes of value; an unknown one may have none. */
    const uint32_t known[] = { RNDIS_PPI_CHECKSUM, RNDIS_PPI_LSO, RNDIS_PPI_IEEE_8021Q, RNDIS_PPI_HASH_VALUE,
                               RNDIS_PPI_HASH_INFO };
    for (unsigned i = 0; i < 5; i++) {
        ppi_expect_bad(b, sizeof b, 16, 16, known[i], 13, "PPI value too short for its type");
        ppi_expect_bad(b, sizeof b, 12, 12, known[i], 12, "PPI value too short for its type");
    }
    n = ppi_packet(b, sizeof b, 12);
    put_ppi(b + 44, 12, RNDIS_PPI_PKT_PAD, 12, 0);
    rndis_expect_ok(b, n, &m, &c);
    assert_int_equal(m.u.packet.ppi_count, 1);
    assert_int_equal(m.u.packet.ppi_flags, 0);
    free(c);
    /* Internal (high-bit) types are not matched to the public ones. */
    n = ppi_packet(b, sizeof b, 16);
    put_ppi(b + 44, 16, RNDIS_PPI_INTERNAL | RNDIS_PPI_CHECKSUM, 12, 7);
    rndis_expect_ok(b, n, &m, &c);
    assert_int_equal(m.u.packet.ppi_flags, 0);
    free(c);
    /* An odd-sized element (not 4-aligned) is accepted; the next one is read unaligned. */
    n = ppi_packet(b, sizeof b, 17 + 16);
    put_ppi(b + 44, 17, 99, 12, 0);
    put_ppi(b + 44 + 17, 16, RNDIS_PPI_HASH_VALUE, 12, 0xABCD);
    rndis_expect_ok(b, n, &m, &c);
    assert_int_equal(m.u.packet.hash_value, 0xABCD);
    free(c);

    /* 64 elements are walked, the 65th is refused. */
    n = ppi_packet_elements(b, sizeof b, 64);
    rndis_expect_ok(b, n, &m, &c);
    assert_int_equal(m.u.packet.ppi_count, 64);
    free(c);
    rndis_expect_bad(b, ppi_packet_elements(b, sizeof b, 65), "too many PPI elements");
}

/* Every prefix of every valid message (the bytes given shrink, msg_len stays): refused as beyond the
 * bytes (or shorter than the header), never read past; and for a PACKET every msg_len from 0 to its
 * full length with the bytes all there: accepted exactly when msg_len covers the PPIs and the data. */
static void test_rndis_truncation_sweep(void **state)
{
    (void)state;
    uint8_t b[256], msgs[12][256];
    uint32_t lens[12], k = 0;
    const uint32_t v = 0x2d;
    const uint8_t mac[6] = { 1, 2, 3, 4, 5, 6 };
    const struct rndis_init_info ii = { 1, 0, 8, 0xEFFFFFFF, 3 };
    const struct rndis_ppi_u32 ppi[] = { { RNDIS_PPI_CHECKSUM, 1 }, { RNDIS_PPI_HASH_VALUE, 2 } };
#define KEEP(call) (lens[k] = (call), assert_true(lens[k] > 0), memcpy(msgs[k], b, lens[k]), k++)
    KEEP(rndis_build_init(b, sizeof b, 1, 0x4000));
    KEEP(rndis_build_query(b, sizeof b, 2, RNDIS_OID_GEN_LINK_SPEED, &v, 4));
    KEEP(rndis_build_set(b, sizeof b, 3, RNDIS_OID_GEN_CURRENT_PACKET_FILTER, &v, 4));
    KEEP(rndis_build_keepalive(b, sizeof b, 4));
    KEEP(rndis_build_keepalive_cmplt(b, sizeof b, 5, 0));
    KEEP(rndis_build_init_cmplt(b, sizeof b, 6, 0, &ii));
    KEEP(rndis_build_query_cmplt(b, sizeof b, 7, 0, mac, 6));
    KEEP(rndis_build_set_cmplt(b, sizeof b, 8, 0));
    KEEP(rndis_build_indicate_status(b, sizeof b, RNDIS_STATUS_NETWORK_CHANGE, &v, 4));
    KEEP(rndis_build_halt(b, sizeof b, 9));
    uint32_t h = rndis_build_packet(b, sizeof b, ppi, 2, 64);
    memset(b + h, 0x11, 64);
    KEEP(h + 64);
#undef KEEP
    for (uint32_t i = 0; i < k; i++) {
        for (uint32_t p = 0; p < lens[i]; p++) {
            struct rndis_msg m;
            const char *why;
            uint8_t *c;
            assert_int_equal(rcheck(msgs[i], p, &m, &why, &c), STATUS_BAD_DATA);
            free(c);
            assert_string_equal(why, p < 8 ? "shorter than the 8-byte RNDIS header"
                                           : "RNDIS message length beyond the bytes received");
        }
        struct rndis_msg m;
        uint8_t *c;
        rndis_expect_ok(msgs[i], lens[i], &m, &c);
        free(c);
    }
    /* The PACKET (last one): PPIs end at 76, data ends at 140. */
    uint8_t *pk = msgs[k - 1];
    for (uint32_t l = 0; l <= lens[k - 1]; l++) {
        put32(pk + 4, l);
        struct rndis_msg m;
        const char *why;
        uint8_t *c;
        status_t st = rcheck(pk, lens[k - 1], &m, &why, &c);
        if (l == lens[k - 1]) {
            assert_int_equal(st, STATUS_OK);
            rndis_view_in_bounds(&m, c, lens[k - 1]);
        } else {
            assert_int_equal(st, STATUS_BAD_DATA);
            const char *want = l < 8    ? "RNDIS message length smaller than its header"
                               : l < 44 ? "too short for its RNDIS message type"
                                        : "PACKET data beyond the message";
            assert_string_equal(why, want);
        }
        free(c);
    }
}

/* One message per range, trailing bytes ignored; an empty or bad range is an error. */
static void test_rndis_iter_one(void **state)
{
    (void)state;
    uint8_t b[128];
    memset(b, 0xCC, sizeof b);
    uint32_t n = rndis_build_set_cmplt(b, sizeof b, 1, 0);
    struct rndis_iter it;
    struct rndis_msg m;
    const char *why;
    rndis_iter_init(&it, b, sizeof b, RNDIS_ITER_ONE); /* 16-byte message + 112 trailing bytes */
    assert_int_equal(rndis_iter_next(&it, &m, &why), STATUS_OK);
    assert_int_equal(m.type, RNDIS_MSG_SET_CMPLT);
    assert_int_equal(m.msg_len, n);
    assert_int_equal(rndis_iter_next(&it, &m, &why), STATUS_NOT_FOUND);
    assert_null(why);
    assert_int_equal(rndis_iter_next(&it, &m, &why), STATUS_NOT_FOUND);
    assert_int_equal(it.count, 1);

    rndis_iter_init(&it, b, 0, RNDIS_ITER_ONE);
    assert_int_equal(rndis_iter_next(&it, &m, &why), STATUS_BAD_DATA);
    assert_string_equal(why, "shorter than the 8-byte RNDIS header");
    assert_int_equal(rndis_iter_next(&it, &m, &why), STATUS_NOT_FOUND);

    rndis_iter_init(&it, b, 15, RNDIS_ITER_ONE);
    assert_int_equal(rndis_iter_next(&it, &m, &why), STATUS_BAD_DATA);
    assert_string_equal(why, "RNDIS message length beyond the bytes received");
    assert_int_equal(rndis_iter_next(&it, &m, &why), STATUS_NOT_FOUND);
}

/* Iterating PACKETs over an exact copy of b[0, n) finds three PACKETs, then fails for `reason` and
 * stays at the end. */
static void iter_three_packets_then(const uint8_t *b, uint32_t n, const char *reason)
{
    struct rndis_iter it;
    struct rndis_msg m;
    const char *why;
    uint8_t *c = dup_exact(b, n);
    rndis_iter_init(&it, c, n, RNDIS_ITER_PACKETS);
    for (int i = 0; i < 3; i++)
        assert_int_equal(rndis_iter_next(&it, &m, &why), STATUS_OK);
    assert_int_equal(rndis_iter_next(&it, &m, &why), STATUS_BAD_DATA);
    assert_string_equal(why, reason);
    assert_int_equal(rndis_iter_next(&it, &m, &why), STATUS_NOT_FOUND);
    free(c);
}

/* Concatenated PACKETs, each msg_len apart (with alignment padding inside msg_len). */
static void test_rndis_iter_packets(void **state)
{
    (void)state;
    uint8_t b[1024] = { 0 };
    uint32_t at = 0;
    for (int i = 0; i < 3; i++) {
        uint32_t h = rndis_build_packet(b + at, sizeof b - at, NULL, 0, 60 + (uint32_t)i);
        memset(b + at + h, i + 1, 60 + (uint32_t)i);
        uint32_t len = (h + 60 + (uint32_t)i + 7) & ~7u; /* padded to 8 as an aggregating guest does */
        put32(b + at + 4, len);
        at += len;
    }
    struct rndis_iter it;
    struct rndis_msg m;
    const char *why;
    uint8_t *c = dup_exact(b, at);
    rndis_iter_init(&it, c, at, RNDIS_ITER_PACKETS);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(rndis_iter_next(&it, &m, &why), STATUS_OK);
        assert_int_equal(m.type, RNDIS_MSG_PACKET);
        assert_int_equal(m.u.packet.data_len, 60 + i);
        assert_int_equal(m.u.packet.data[0], i + 1);
    }
    assert_int_equal(rndis_iter_next(&it, &m, &why), STATUS_NOT_FOUND);
    assert_null(why);
    free(c);

    /* Trailing bytes too few for a header. */
    for (uint32_t extra = 1; extra < 8; extra++)
        iter_three_packets_then(b, at + extra, "trailing bytes after the last RNDIS message");

    /* A control message after a PACKET. */
    uint32_t n = rndis_build_keepalive(b + at, sizeof b - at, 1);
    iter_three_packets_then(b, at + n, "non-PACKET message after a PACKET");

    /* A control message first is alone in its range: what follows is not looked at. */
    n = rndis_build_query(b, sizeof b, 3, RNDIS_OID_GEN_LINK_SPEED, NULL, 0);
    memset(b + n, 0xFF, 40);
    c = dup_exact(b, n + 40);
    rndis_iter_init(&it, c, n + 40, RNDIS_ITER_PACKETS);
    assert_int_equal(rndis_iter_next(&it, &m, &why), STATUS_OK);
    assert_int_equal(m.type, RNDIS_MSG_QUERY);
    assert_int_equal(rndis_iter_next(&it, &m, &why), STATUS_NOT_FOUND);
    free(c);

    /* Empty range; a bad second PACKET. */
    rndis_iter_init(&it, b, 0, RNDIS_ITER_PACKETS);
    assert_int_equal(rndis_iter_next(&it, &m, &why), STATUS_BAD_DATA);
    uint32_t h = rndis_build_packet(b, sizeof b, NULL, 0, 10);
    h = rndis_build_packet(b + h + 10, sizeof b - h - 10, NULL, 0, 10);
    put32(b + 54 + 8, 0); /* the second one's data offset into its header */
    rndis_iter_init(&it, b, 108, RNDIS_ITER_PACKETS);
    assert_int_equal(rndis_iter_next(&it, &m, &why), STATUS_OK);
    assert_int_equal(rndis_iter_next(&it, &m, &why), STATUS_BAD_DATA);
    assert_string_equal(why, "PACKET data offset inside the PACKET header");
    assert_int_equal(rndis_iter_next(&it, &m, &why), STATUS_NOT_FOUND);
}

/* Builders never write past cap. */
static void test_rndis_builder_caps(void **state)
{
    (void)state;
    uint8_t b[128];
    const struct rndis_init_info ii = { 1, 0, 8, 0, 3 };
    const struct rndis_ppi_u32 ppi[2] = { { 0, 0 }, { 6, 0 } };
    uint32_t v = 0;
    for (uint32_t cap = 0; cap < 52; cap++) {
        memset(b, 0x5A, sizeof b);
        if (cap < 24)
            assert_int_equal(rndis_build_init(b, cap, 1, 0), 0);
        if (cap < 12) {
            assert_int_equal(rndis_build_halt(b, cap, 1), 0);
            assert_int_equal(rndis_build_keepalive(b, cap, 1), 0);
        }
        if (cap < 16) {
            assert_int_equal(rndis_build_keepalive_cmplt(b, cap, 1, 0), 0);
            assert_int_equal(rndis_build_set_cmplt(b, cap, 1, 0), 0);
        }
        if (cap < 32)
            assert_int_equal(rndis_build_set(b, cap, 1, 1, &v, 4), 0);
        if (cap < 28)
            assert_int_equal(rndis_build_query_cmplt(b, cap, 1, 0, &v, 4), 0);
        if (cap < 24)
            assert_int_equal(rndis_build_indicate_status(b, cap, 1, &v, 4), 0);
        assert_int_equal(rndis_build_init_cmplt(b, cap, 1, 0, &ii), 0);
        if (cap < 44)
            assert_int_equal(rndis_build_packet(b, cap, NULL, 0, 1), 0);
        assert_int_equal(rndis_build_packet(b, cap, ppi, 2, 1), 0);
        for (uint32_t i = cap; i < sizeof b; i++)
            assert_int_equal(b[i], 0x5A);
    }
    /* msg_len would pass 4 GiB; too many PPIs; NULL arguments. */
    assert_int_equal(rndis_build_packet(b, sizeof b, NULL, 0, 0xFFFFFFFF - 43), 0);
    assert_int_equal(rndis_build_packet(b, sizeof b, NULL, 0, 0xFFFFFFFF - 44), 44);
    assert_int_equal(rndis_build_packet(b, 0xFFFFFFFF, ppi, RNDIS_PPI_MAX + 1, 1), 0);
    assert_int_equal(rndis_build_packet(b, sizeof b, NULL, 1, 1), 0);
    assert_int_equal(rndis_build_set(b, sizeof b, 1, 1, NULL, 4), 0);
    assert_int_equal(rndis_build_set(b, 0xFFFFFFFF, 1, 1, &v, 0xFFFFFFF0), 0); /* 28 + len passes 4 GiB */
    assert_int_equal(rndis_build_init_cmplt(b, sizeof b, 1, 0, NULL), 0);
    assert_int_equal(rndis_build_init(NULL, 64, 1, 0), 0);
}

/* Seeded mutations of valid messages: whatever is accepted keeps every pointer inside msg_len,
 * and the verdict does not depend on the bytes after msg_len. */
static void test_rndis_nvsp_mutations(void **state)
{
    (void)state;
    struct rng r;
    rng_seed(&r, 0x6e76737052ull);
    uint8_t base[4][256];
    uint32_t blen[4];
    const struct rndis_ppi_u32 ppi[] = { { 0, 1 }, { 6, 2 }, { 8, 3 } };
    uint32_t h = rndis_build_packet(base[0], 256, ppi, 3, 100);
    memset(base[0] + h, 7, 100);
    blen[0] = h + 100;
    const uint8_t mac[6] = { 1, 2, 3, 4, 5, 6 };
    blen[1] = rndis_build_query_cmplt(base[1], 256, 1, 0, mac, 6);
    uint32_t v = 1;
    blen[2] = rndis_build_indicate_status(base[2], 256, 0x40010018, &v, 4);
    blen[3] = rndis_build_set(base[3], 256, 1, 0x0001010E, &v, 4);
    unsigned accepted = 0;
    for (int iter = 0; iter < 60000; iter++) {
        unsigned k = (unsigned)rng_below(&r, 4);
        uint8_t msg[256];
        memcpy(msg, base[k], sizeof msg);
        uint32_t len = blen[k];
        int flips = 1 + (int)rng_below(&r, 4);
        for (int f = 0; f < flips; f++) {
            uint32_t at = (uint32_t)rng_below(&r, len);
            if (rng_below(&r, 2))
                msg[at] = (uint8_t)rng_next(&r);
            else if (at + 4 <= len)
                put32(msg + at, (uint32_t)rng_next(&r) >> (rng_below(&r, 32)));
        }
        if (rng_below(&r, 4) == 0)
            len = (uint32_t)rng_below(&r, len + 1);
        struct rndis_msg m;
        const char *why;
        uint8_t *c;
        status_t st = rcheck(msg, len, &m, &why, &c);
        if (st == STATUS_OK) {
            accepted++;
            rndis_view_in_bounds(&m, c, len);
            /* The same bytes with garbage appended past msg_len give the same view. */
            uint8_t *big = malloc(len + 32);
            memcpy(big, c, len);
            memset(big + len, 0xA5, 32);
            struct rndis_msg m2;
            assert_int_equal(rndis_msg_check(big, len + 32, &m2, &why), STATUS_OK);
            assert_int_equal(m2.msg_len, m.msg_len);
            assert_int_equal(m2.type, m.type);
            free(big);
        } else {
            assert_int_equal(st, STATUS_BAD_DATA);
            assert_non_null(why);
        }
        free(c);

        /* NVSP from the same bytes, both directions. */
        struct nvsp_msg nm;
        st = ncheck(msg, len < 64 ? len : 64, rng_below(&r, 2) ? NVSP_TO_GUEST : NVSP_TO_HOST, &nm, &why);
        assert_true(st == STATUS_OK || (st == STATUS_BAD_DATA && why));
    }
    assert_true(accepted > 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nvsp_numbers),
        cmocka_unit_test(test_nvsp_roundtrip_guest),
        cmocka_unit_test(test_nvsp_roundtrip_host),
        cmocka_unit_test(test_nvsp_subchannel_directions),
        cmocka_unit_test(test_nvsp_wrong_direction),
        cmocka_unit_test(test_nvsp_short_and_unknown),
        cmocka_unit_test(test_nvsp_truncation_sweep),
        cmocka_unit_test(test_nvsp_recv_buf_complete_checks),
        cmocka_unit_test(test_nvsp_indirection_table_checks),
        cmocka_unit_test(test_nvsp_builder_caps),
        cmocka_unit_test(test_rndis_numbers),
        cmocka_unit_test(test_rndis_roundtrip_guest),
        cmocka_unit_test(test_rndis_roundtrip_host),
        cmocka_unit_test(test_rndis_openvmm_rx_layout),
        cmocka_unit_test(test_rndis_header_errors),
        cmocka_unit_test(test_rndis_init_cmplt_48),
        cmocka_unit_test(test_rndis_oid_req_info_errors),
        cmocka_unit_test(test_rndis_query_cmplt_errors),
        cmocka_unit_test(test_rndis_indicate_status_errors),
        cmocka_unit_test(test_rndis_packet_errors),
        cmocka_unit_test(test_rndis_ppi_errors),
        cmocka_unit_test(test_rndis_truncation_sweep),
        cmocka_unit_test(test_rndis_iter_one),
        cmocka_unit_test(test_rndis_iter_packets),
        cmocka_unit_test(test_rndis_builder_caps),
        cmocka_unit_test(test_rndis_nvsp_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
