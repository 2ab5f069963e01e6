/*
 * rndis_msg: checking, iterating and building RNDIS messages (drivers/netvsc/proto/rndis_proto.h). Shared by
 * the guest driver (drivers/netvsc) and hvsim's netvsp (sim/); fuzzed by test/fuzz/fuzz_rndis.c.
 *
 * Pure: no I/O, no allocation, no logging, no state. IRQL: any (up to HIGH). Thread-safety: pure
 * functions of their arguments (an iterator belongs to one caller).
 *
 * Single fetch: RNDIS messages sit in shared memory (the receive buffer, the send buffer, GPA
 * ranges) that the other side can change while we parse. The checker reads every header field,
 * offset, length and PPI element header exactly once (volatile byte loads into a private copy),
 * checks the copy and returns what the caller needs in struct rndis_msg: values, and pointers +
 * lengths for the variable parts (frame data, information buffers). Callers never re-read a
 * length or an offset from the buffer. What the pointers point at is payload: copy it before
 * interpreting it if its content matters (e.g. a MAC address), and expect it may change under you.
 * The PPI values this project uses (checksum, VLAN, hash value/info, LSO) are copied into the view.
 *
 * Bounds: everything is checked against the message length from the header (msg_len), which must
 * itself be within the bytes given (`len`); bytes after msg_len are not looked at. All arithmetic
 * on offsets and lengths is 64-bit, so no offset + length can wrap.
 *
 * Strictness (where hosts and guests agree, see PROTOCOL.md): msg_len need not be a multiple of 4
 * (openvmm's QUERY_CMPLT for a MAC address is 30 bytes); a PACKET's data offset need not be
 * aligned ("Hyper-V does not meet data offset alignment requirement", FreeBSD); a PACKET must carry
 * data; its data, OOB and PPI areas lie after the 44-byte PACKET header, inside msg_len, and do
 * not overlap; every PPI element is at least its 12-byte header, within the PPI area, with its
 * value offset in [12, size]; at most RNDIS_PPI_MAX elements. INITIALIZE_CMPLT may stop before
 * af_list_size (48 bytes). An information/status buffer of length 0 has no offset to check (hosts
 * send offset 0 with it) and is returned as NULL.
 */
#ifndef APPS_NETVSC_RNDIS_MSG_H
#define APPS_NETVSC_RNDIS_MSG_H

#include <stdbool.h>
#include <stdint.h>

#include "drivers/netvsc/proto/rndis_proto.h"
#include "kernel/status.h"

#define RNDIS_PPI_MAX 64u /* elements walked per PACKET (this project's bound) */

/* Which PPI values a checked PACKET carried (struct rndis_pkt_view.ppi_flags). */
#define RNDIS_PKT_HAS_CSUM (1u << 0)
#define RNDIS_PKT_HAS_LSO (1u << 1)
#define RNDIS_PKT_HAS_VLAN (1u << 2)
#define RNDIS_PKT_HAS_HASH_VALUE (1u << 3)
#define RNDIS_PKT_HAS_HASH_INFO (1u << 4)

struct rndis_pkt_view {
    const uint8_t *data; /* the frame: data_len bytes inside the message, never NULL */
    uint32_t data_len;   /* > 0 */
    uint32_t data_offset; /* from the message start (absolute) */
    const uint8_t *ppi;  /* the PPI area (already walked), NULL when ppi_len == 0 */
    uint32_t ppi_len;
    uint32_t ppi_count;  /* elements in it */
    uint32_t oob_len;    /* OOB data, bounds-checked, not interpreted */
    uint32_t ppi_flags;  /* RNDIS_PKT_HAS_* */
    uint32_t csum_info, lso_info, vlan_info, hash_value, hash_info; /* valid with the flag */
};

/* A checked message. Which member of `u` is valid follows `type`. */
struct rndis_msg {
    uint32_t type;       /* RNDIS_MSG_* */
    uint32_t msg_len;    /* from the header: >= the type's minimum, <= the bytes given */
    uint32_t request_id; /* INITIALIZE, HALT, QUERY, SET, KEEPALIVE and their completions; else 0 */
    uint32_t status;     /* completions, INDICATE_STATUS (the indicated status), RESET_CMPLT; else 0 */
    union {
        struct { uint32_t major, minor, max_xfer_size; } init_req;
        struct {
            uint32_t major, minor, device_flags, medium, max_pkts_per_msg, max_xfer_size, pkt_align_factor;
            uint32_t af_list_offset, af_list_size; /* af_list_size 0 if the message stops before it */
        } init_cmplt;
        struct {                 /* QUERY, SET */
            uint32_t oid, vc_handle;
            const uint8_t *info; /* NULL when info_len == 0 */
            uint32_t info_len;
        } oid_req;
        struct { const uint8_t *info; uint32_t info_len; } query_cmplt;
        struct { const uint8_t *buf; uint32_t len; } indicate; /* the status buffer */
        struct { uint32_t addressing_reset; } reset_cmplt;
        struct rndis_pkt_view packet;
    } u;
};

/*
 * Checks the RNDIS message at the start of buf (len bytes available). STATUS_OK and *out filled,
 * or STATUS_BAD_DATA with *why set to a static reason:
 *   "shorter than the 8-byte RNDIS header", "RNDIS message length smaller than its header",
 *   "RNDIS message length beyond the bytes received", "unknown RNDIS message type",
 *   "too short for its RNDIS message type",
 *   QUERY/SET: "information buffer overlaps the request header", "information buffer beyond the message",
 *   QUERY_CMPLT: "information buffer overlaps the completion header", "information buffer beyond the message",
 *   INDICATE_STATUS: "status buffer overlaps the header", "status buffer beyond the message",
 *   PACKET: "PACKET without data", "PACKET data offset inside the PACKET header",
 *     "PACKET data beyond the message", "PACKET OOB area ..." (inside the header / beyond the
 *     message / overlaps the data), "PACKET PPI area inside the PACKET header",
 *     "PACKET PPI area beyond the message", "PACKET PPI area overlaps the data",
 *     "PPI element header truncated", "PPI element smaller than its header",
 *     "PPI element beyond the PPI area", "PPI value offset outside its element",
 *     "PPI value too short for its type", "too many PPI elements".
 * Every known type is accepted in either direction; the caller rejects the ones it does not expect.
 */
status_t rndis_msg_check(const void *buf, uint32_t len, struct rndis_msg *out, const char **why) WARN_UNUSED;

/* "PACKET", "INITIALIZE_CMPLT", ...; "unknown". */
const char *rndis_msg_name(uint32_t type);
/* The smallest valid size of a message of `type`; 0 if unknown. */
uint32_t rndis_msg_min_size(uint32_t type);

/*
 * Walking the RNDIS messages of one received range.
 *  RNDIS_ITER_ONE: the range holds one message. Its msg_len may be smaller than the range: the
 *    trailing bytes are ignored (Hyper-V sets msg_len to the message; openvmm's receive path
 *    claims the whole sub-allocation, buffers.rs write_header). This is the guest's receive path:
 *    one transfer-page range = one message.
 *  RNDIS_ITER_PACKETS: the range holds PACKET messages back to back, msg_len apart (a guest may
 *    batch up to max_pkts_per_msg of them in one send, each padded to the alignment by its own
 *    msg_len; openvmm lib.rs handle_rndis_packet_messages). Any other type is allowed only as the
 *    first and only message (a control message). Bytes after the last message are an error
 *    ("trailing bytes after the last RNDIS message"), and so is a non-PACKET after a PACKET
 *    ("non-PACKET message after a PACKET").
 * rndis_iter_next: STATUS_OK with *out (one message checked by rndis_msg_check), STATUS_NOT_FOUND at
 * the end (*why NULL), STATUS_BAD_DATA with *why (the iterator then stays at the end). Terminates:
 * every message consumes at least 8 bytes.
 */
enum rndis_iter_mode { RNDIS_ITER_ONE = 0, RNDIS_ITER_PACKETS = 1 };
struct rndis_iter {
    const uint8_t *p;
    uint32_t left;
    uint32_t count; /* messages returned so far */
    enum rndis_iter_mode mode;
    bool done;
};
void rndis_iter_init(struct rndis_iter *it, const void *range, uint32_t len, enum rndis_iter_mode mode);
status_t rndis_iter_next(struct rndis_iter *it, struct rndis_msg *out, const char **why) WARN_UNUSED;

/*
 * Builders: each writes one message into buf (cap bytes) and returns msg_len, or 0 if it does not
 * fit (nothing written past cap). Information/status buffers follow the fixed part.
 */
/* guest -> host */
uint32_t rndis_build_init(void *buf, uint32_t cap, uint32_t request_id, uint32_t max_xfer_size) WARN_UNUSED;
uint32_t rndis_build_halt(void *buf, uint32_t cap, uint32_t request_id) WARN_UNUSED;
uint32_t rndis_build_query(void *buf, uint32_t cap, uint32_t request_id, uint32_t oid, const void *info,
                           uint32_t info_len) WARN_UNUSED;
uint32_t rndis_build_set(void *buf, uint32_t cap, uint32_t request_id, uint32_t oid, const void *info,
                         uint32_t info_len) WARN_UNUSED;
uint32_t rndis_build_keepalive(void *buf, uint32_t cap, uint32_t request_id) WARN_UNUSED;
/* either side (the host may send KEEPALIVE, the guest answers) */
uint32_t rndis_build_keepalive_cmplt(void *buf, uint32_t cap, uint32_t request_id, uint32_t status) WARN_UNUSED;

/* PACKET, either direction. Writes the 44-byte header and nppi PPI elements of one u32 each
 * (16 bytes each, at offset 44), sets data_offset so that the frame follows them and msg_len =
 * header + PPIs + frame_len. Returns the header length (where the frame goes: buf + return value);
 * the frame itself is not written (copy it there, or send it as further GPA ranges). 0 if the header
 * does not fit in cap, if nppi > RNDIS_PPI_MAX or if msg_len would exceed UINT32_MAX. */
struct rndis_ppi_u32 {
    uint32_t type;  /* RNDIS_PPI_* */
    uint32_t value;
};
uint32_t rndis_build_packet(void *buf, uint32_t cap, const struct rndis_ppi_u32 *ppi, uint32_t nppi,
                            uint32_t frame_len) WARN_UNUSED;

/* host -> guest */
struct rndis_init_info {
    uint32_t device_flags;     /* RNDIS_DF_CONNECTIONLESS */
    uint32_t medium;           /* RNDIS_MEDIUM_802_3 */
    uint32_t max_pkts_per_msg; /* openvmm: 8 */
    uint32_t max_xfer_size;    /* openvmm: 0xEFFFFFFF */
    uint32_t pkt_align_factor; /* openvmm: 3 */
};
uint32_t rndis_build_init_cmplt(void *buf, uint32_t cap, uint32_t request_id, uint32_t status,
                                const struct rndis_init_info *info) WARN_UNUSED;
uint32_t rndis_build_query_cmplt(void *buf, uint32_t cap, uint32_t request_id, uint32_t status, const void *info,
                                 uint32_t info_len) WARN_UNUSED;
uint32_t rndis_build_set_cmplt(void *buf, uint32_t cap, uint32_t request_id, uint32_t status) WARN_UNUSED;
uint32_t rndis_build_indicate_status(void *buf, uint32_t cap, uint32_t status, const void *sbuf, uint32_t sbuf_len) WARN_UNUSED;

#endif
