/*
 * nvsp_msg: checking and building NVSP messages (drivers/netvsc/proto/nvsp_proto.h). Shared by the guest
 * driver (drivers/netvsc) and hvsim's netvsp (sim/); fuzzed by test/fuzz/fuzz_nvsp.c.
 *
 * Pure: no I/O, no allocation, no logging, no state. IRQL: any (up to HIGH). Thread-safety: pure
 * functions of their arguments.
 *
 * Single fetch: the bytes given to nvsp_msg_check may be memory the other side can still change
 * (a ring slot, a shared buffer). The checker reads every field exactly once, through volatile
 * byte loads, into a private copy, checks the copy and returns it in struct nvsp_msg. Callers use
 * the returned values and never read a length, offset, count or status from the buffer again.
 * The one exception is bulk data that is not a length: the indirection table, which is returned
 * as a pointer into the buffer; copy it out (nvsp_indirection_table_copy) and check each entry
 * after the copy.
 *
 * Who sends what: see PROTOCOL.md. `dir` names the receiver: NVSP_TO_HOST for what a guest sends
 * (checked by the host), NVSP_TO_GUEST for what a host sends (checked by the guest). A known type
 * that is never sent in that direction is rejected ("not sent in this direction").
 *
 * Sizes: the checker accepts a message of at least its natural size (the fields that matter) and
 * ignores the padding after it (hosts pad to 28 or 40 bytes, guests to 32 or 40). The builders
 * write the natural size and then zeros up to `pad_to` (0: no padding).
 */
#ifndef APPS_NETVSC_NVSP_MSG_H
#define APPS_NETVSC_NVSP_MSG_H

#include <stdbool.h>
#include <stdint.h>

#include "drivers/netvsc/proto/nvsp_proto.h"
#include "kernel/status.h"

enum nvsp_dir {
    NVSP_TO_HOST = 0,  /* sent by the guest */
    NVSP_TO_GUEST = 1, /* sent by the host */
};

/* A checked message: the values as read (once) from the buffer. Which member of `u` is valid
 * follows `type` (and for SUB_CHANNEL the direction: request to the host, completion to the guest). */
struct nvsp_msg {
    uint32_t type; /* enum nvsp_msg_type */
    uint32_t len;  /* bytes given (padding included) */
    union {
        struct { uint32_t ver_min, ver_max; } init;
        struct { uint32_t negotiated_version, max_mdl_chain_len, status; } init_complete;
        struct { uint32_t major, minor; } ndis_version;
        struct { uint32_t gpadl; uint16_t id; } send_buf;      /* SEND_RECEIVE_BUFFER, SEND_SEND_BUFFER */
        struct {
            uint32_t status;
            uint32_t num_sections; /* <= NVSP_RECV_SECTIONS_MAX, all copied below */
            struct nvsp_recv_section sections[NVSP_RECV_SECTIONS_MAX];
        } recv_buf_complete;
        struct { uint16_t id; } revoke;                         /* REVOKE_RECEIVE_BUFFER, REVOKE_SEND_BUFFER */
        struct { uint32_t status, section_size; } send_buf_complete;
        struct { uint32_t channel_type, section_index, section_size; } rndis_pkt;
        struct { uint32_t status; } rndis_pkt_complete;
        struct { uint32_t mtu; uint64_t capabilities; } ndis_config;
        struct { uint32_t allocated, serial; } vf_association;
        struct { uint32_t active_path; } switch_data_path;
        struct { uint32_t oid; } oid_query_ex;
        struct { uint32_t status, bytes; } oid_query_ex_complete;
        struct { uint32_t op, num_subchannels; } subchannel_req;          /* NVSP_TO_HOST */
        struct { uint32_t status, num_subchannels; } subchannel_complete; /* NVSP_TO_GUEST */
        struct {
            uint32_t count;       /* in [NVSP_RSS_TABLE_MIN, NVSP_RSS_TABLE_MAX] */
            uint32_t offset;      /* from the message start, >= 12 */
            const uint8_t *table; /* count little-endian u32 inside the buffer (unaligned): not copied */
        } indirection_table;
    } u;
};

/*
 * Checks one NVSP message of `len` bytes as received in direction `dir`. STATUS_OK and *out filled,
 * or STATUS_BAD_DATA with *why set to a static reason:
 *   "shorter than the 4-byte NVSP header", "unknown NVSP message type",
 *   "NVSP message type not sent in this direction", "too short for its NVSP message type",
 *   RECEIVE_BUFFER_COMPLETE: "too many receive buffer sections", "receive buffer sections beyond
 *     the message", "receive buffer section inconsistent" (with status SUCCESS: a zero size or
 *     count, or offset + size * count beyond end_offset),
 *   SEND_INDIRECTION_TABLE: "indirection table entry count out of range",
 *     "indirection table overlaps the message header", "indirection table beyond the message".
 * `out` and `why` must not be NULL; on failure *out holds what was read so far (type, len).
 */
status_t nvsp_msg_check(const void *buf, uint32_t len, enum nvsp_dir dir, struct nvsp_msg *out,
                        const char **why) WARN_UNUSED;

/* The natural size of a message of `type` (for RECEIVE_BUFFER_COMPLETE and SEND_INDIRECTION_TABLE
 * the fixed part); 0 for a type this project does not know. */
uint32_t nvsp_msg_min_size(uint32_t type);
/* "INIT", "SEND_RNDIS_PACKET", ...; "unknown". */
const char *nvsp_msg_name(uint32_t type);
/* The lowest protocol version in which `type` exists (NVSP_VERSION_1 for INIT/INIT_COMPLETE and v1
 * messages, NVSP_VERSION_2 for SEND_NDIS_CONFIG, ...); NVSP_VERSION_INVALID if unknown. openvmm
 * rejects a message whose type is newer than the negotiated version. */
uint32_t nvsp_msg_min_version(uint32_t type);
/* Is `v` one of the six versions (NVSP_VERSION_1 .. NVSP_VERSION_61)? */
bool nvsp_version_known(uint32_t v);
/* The size a host pads its messages to once `version` is negotiated (28, or 40 from 6.1). */
uint32_t nvsp_host_msg_size(uint32_t version);
/* The NDIS version a guest announces for `nvsp_version` (6.30 from NVSP 5, else 6.1). */
uint32_t nvsp_ndis_version_for(uint32_t nvsp_version);
/* Does a checked receive buffer section lie inside a buffer of `buf_bytes` bytes? */
bool nvsp_recv_section_fits(const struct nvsp_recv_section *s, uint32_t buf_bytes);
/* Copies min(count, max) entries of a checked SEND_INDIRECTION_TABLE into dst; returns how many. The
 * entries are not checked: the caller checks each copied entry against its channel count. */
uint32_t nvsp_indirection_table_copy(const struct nvsp_msg *m, uint32_t *dst, uint32_t max);
/* Hyper-V hosts up to NVSP 6 put the table 40 bytes into the message but report a smaller offset
 * (nvsp_proto.h). With negotiated_version <= NVSP_VERSION_6 and a checked message long enough for
 * count entries at 40, moves the view's table to offset 40 (buf must be the checked buffer). */
void nvsp_indirection_table_hyperv_fixup(struct nvsp_msg *m, const void *buf, uint32_t negotiated_version);

/*
 * Builders: each writes one message into buf (cap bytes) and returns its length: the natural size,
 * or pad_to if larger (zero-filled). 0 if cap is too small (nothing written past cap). Pass
 * pad_to = NVSP_GUEST_MSG_SIZE in the guest and nvsp_host_msg_size(version) in a host.
 */
/* guest -> host */
uint32_t nvsp_build_init(void *buf, uint32_t cap, uint32_t pad_to, uint32_t ver_min, uint32_t ver_max) WARN_UNUSED;
uint32_t nvsp_build_ndis_version(void *buf, uint32_t cap, uint32_t pad_to, uint32_t ndis_version) WARN_UNUSED;
uint32_t nvsp_build_ndis_config(void *buf, uint32_t cap, uint32_t pad_to, uint32_t mtu, uint64_t caps) WARN_UNUSED;
uint32_t nvsp_build_send_recv_buf(void *buf, uint32_t cap, uint32_t pad_to, uint32_t gpadl, uint16_t id) WARN_UNUSED;
uint32_t nvsp_build_send_send_buf(void *buf, uint32_t cap, uint32_t pad_to, uint32_t gpadl, uint16_t id) WARN_UNUSED;
uint32_t nvsp_build_revoke_recv_buf(void *buf, uint32_t cap, uint32_t pad_to, uint16_t id) WARN_UNUSED;
uint32_t nvsp_build_revoke_send_buf(void *buf, uint32_t cap, uint32_t pad_to, uint16_t id) WARN_UNUSED;
uint32_t nvsp_build_subchannel_req(void *buf, uint32_t cap, uint32_t pad_to, uint32_t num_subchannels) WARN_UNUSED;
/* both directions */
uint32_t nvsp_build_rndis_pkt(void *buf, uint32_t cap, uint32_t pad_to, uint32_t channel_type,
                              uint32_t section_index, uint32_t section_size) WARN_UNUSED;
uint32_t nvsp_build_rndis_pkt_complete(void *buf, uint32_t cap, uint32_t pad_to, uint32_t status) WARN_UNUSED;
uint32_t nvsp_build_switch_data_path(void *buf, uint32_t cap, uint32_t pad_to, uint32_t active_path) WARN_UNUSED;
/* host -> guest */
uint32_t nvsp_build_init_complete(void *buf, uint32_t cap, uint32_t pad_to, uint32_t negotiated_version,
                                  uint32_t max_mdl_chain_len, uint32_t status) WARN_UNUSED;
uint32_t nvsp_build_recv_buf_complete(void *buf, uint32_t cap, uint32_t pad_to, uint32_t status,
                                      const struct nvsp_recv_section *sections, uint32_t num_sections) WARN_UNUSED;
uint32_t nvsp_build_send_buf_complete(void *buf, uint32_t cap, uint32_t pad_to, uint32_t status,
                                      uint32_t section_size) WARN_UNUSED;
uint32_t nvsp_build_vf_association(void *buf, uint32_t cap, uint32_t pad_to, uint32_t allocated, uint32_t serial) WARN_UNUSED;
uint32_t nvsp_build_oid_query_ex_complete(void *buf, uint32_t cap, uint32_t pad_to, uint32_t status,
                                          uint32_t bytes) WARN_UNUSED;
uint32_t nvsp_build_subchannel_complete(void *buf, uint32_t cap, uint32_t pad_to, uint32_t status,
                                        uint32_t num_subchannels) WARN_UNUSED;
/* The table follows the 12-byte fixed part (offset 12, as openvmm); not padded. */
uint32_t nvsp_build_indirection_table(void *buf, uint32_t cap, const uint32_t *entries, uint32_t count) WARN_UNUSED;

#endif
