/*
 * testdev: the wire protocol of hvsim's test device ("hvsim-test", VMBUS_GUID_HVSIM_TEST in
 * hv/vmbus/proto/vmbus_proto.h, with the other device GUIDs): the opcodes, payload layouts and
 * statuses a guest (apps/vmbusprobe, the kmcl tests) and the device's VSP (sim/vsp/vsp_test.c,
 * whose host API is sim/vsp/vsp_test.h) both follow. This project's own protocol, not a Hyper-V one;
 * the device exists only on hvsim. Portable: includes nothing of the guest or the host.
 *
 * Rings. The guest allocates and initialises both rings of a channel (zeroed, or indices 0 and
 * feature bit 0 set) before OPENCHANNEL; in on_open the VSP attaches to them as they are (no
 * KMCL_RING_ATTACH_INIT: the indices found are taken over, checked), as the READER of the
 * guest -> host ring and the WRITER of the host -> guest ring. Every sub-channel is served the same
 * way, independently. All numbers are little-endian; a "u32" is 4 bytes, payloads are packed.
 * Payload lengths travel in 8-byte units (the descriptor's len8), so a payload of n bytes arrives
 * and is echoed as round_up(n, 8) bytes (the writer pads with zeros).
 *
 * Guest -> host packets, by descriptor type:
 *
 *  6 DATA_INBAND: the payload starts with a u32 opcode:
 *    1 ECHO             payload: {u32 op, any bytes}. Answer: an in-band packet with the same
 *                       trans_id, flags 0 and the same payload. If the request asked for a
 *                       completion (descriptor flag bit 0), a completion (type 11, same trans_id,
 *                       the same payload) follows the echo.
 *    2 ECHO_COMPLETION  payload: {u32 op, any bytes}. With the completion flag: a completion (type
 *                       11, same trans_id) whose payload is the request's payload. Without it: no
 *                       answer (counted in completion_unrequested).
 *    3 SEND_N           payload: struct hvsim_vsp_test_send_n {u32 op, u32 count, u32 size}. The
 *                       host sends `count` in-band packets of `size` bytes (8 <= size, and the
 *                       packet must fit the host -> guest ring), trans_id = the request's, flags 0,
 *                       payload {u32 op = 4 DATA, u32 seq (0 .. count-1)} then byte k (8 <= k <
 *                       size) = (uint8_t)(seq + k). With the completion flag, a completion
 *                       {u32 status 0, u32 count} follows the last one. When the ring is full the
 *                       host stops (pending_send_sz tells the guest's reader to signal it when
 *                       there is room) and takes NO further guest packets until the batch is out:
 *                       answers keep their order. A bad size, or a count above
 *                       HVSIM_VSP_TEST_MAX_SEND_N: no packets, counted in bad_requests,
 *                       and with the completion flag a completion {u32 status BAD_REQUEST, u32 0}.
 *                       A payload shorter than 12 bytes: counted in bad_requests, and with the
 *                       completion flag a completion {u32 BAD_REQUEST}.
 *    7 SEND_N_ACKED     payload: struct hvsim_vsp_test_send_n (op 7). As SEND_N, but every DATA
 *                       packet asks for a completion (descriptor flag bit 0; trans_id from the
 *                       host's table), all `count` (at most HVSIM_VSP_TEST_MAX_ACKED) are sent at
 *                       once, and the host keeps reading meanwhile (the guest's completions must get
 *                       through): answers to later requests may come between them. When the guest
 *                       has completed every one, with the completion flag, a completion
 *                       {u32 status 0, u32 count} (status BAD_REQUEST if some could not be sent:
 *                       the host's transaction ids ran out). A bad size or count: as SEND_N's.
 *    5 SIGNAL_ONLY      no in-band answer: the host signals the channel (HvSignalEvent's answer in the
 *                       shape of an interrupt, for raw-VMBus probes). With the completion flag, an
 *                       empty completion (every packet is completed).
 *    other opcodes, and payloads shorter than 4 bytes: counted (unknown_opcodes, bad_requests);
 *                       with the completion flag, a completion {u32 UNKNOWN_OPCODE} or
 *                       {u32 BAD_REQUEST} (every packet is completed, as KMCL requires).
 *  9 DATA_USING_GPA_DIRECT: the bytes the ranges describe (guest pages, in range order) are
 *    checksummed with 32-bit FNV-1a (offset basis 0x811c9dc5, prime 0x01000193, over each byte).
 *    With the completion flag, the answer is a completion with struct hvsim_vsp_test_gpa_result
 *    {u32 status, u32 byte_count, u32 checksum}: status 0 and the sum of the ranges' byte counts,
 *    or status BAD_RANGE (a page outside guest RAM; byte_count and checksum 0). The payload after the
 *    ranges is ignored.
 *  7 DATA_USING_XFER_PAGES: not this device's: counted in unknown_types, with the completion flag a
 *    completion {u32 BAD_REQUEST}.
 * 11 COMPLETION: the host asks for no completion, so any is for a transaction it never sent: the
 *    channel fails (kmcl's rule for untrusted input; counted in completions_in only if valid).
 *  anything else (1 SYNCH, ...): the channel fails (a packet type a server does not take).
 *
 * Flow control: answers go out in the order of the requests. An answer that does not fit the
 * host -> guest ring now is queued by kmcl's server endpoint and written when the guest has made
 * room (pending_send_sz: the guest's reader signals when it publishes past it; counted in
 * ring_full); while anything is queued the host reads no further request, so a guest that stops
 * reading sees its own ring fill. An echo that can never fit that ring is skipped (too_big).
 *
 * Host -> guest extras:
 *  - HVSIM_VMBUS_SEND_ON_OPEN hazard: in on_open, before the guest has the OPENCHANNEL_RESULT, the
 *    host writes one in-band packet {u32 op = 6 HELLO, u32 relid} (trans_id 0, flags 0) into the
 *    host -> guest ring; the server signals the channel after the result.
 *  - Signals: the host signals the channel when a write of its makes the host -> guest ring go from
 *    empty to non-empty while the guest's interrupt_mask is clear, and when its reading of the
 *    guest -> host ring frees the room the guest asked for in pending_send_sz (the ring rules of
 *    docs/KMCL.md). And, for the older behaviour that apps/vmbusprobe checks ("a signal is
 *    answered by an interrupt"): a guest signal that finds nothing to do (the guest -> host ring
 *    empty, no batch to continue) is answered by a signal.
 *
 * Failures: a guest -> host ring that breaks a rule (kmcl's failure model: an index out of range, a
 * bad length, offset or trailer, a bad GPA range header...) or a host -> guest ring whose read index
 * is bad puts the channel into a failed state: one log line through the hvsim log ("hvsim: vmbus:
 * hvsim-test relid N: ... ring failed: <reason> ...: channel no longer served", verbosity 0), and
 * from then on the VSP neither reads nor writes that channel's rings nor signals it. The channel
 * stays open (the guest sees no more answers) until the guest closes it. The same at on_open when
 * the rings' indices are already bad.
 *
 */
#ifndef HV_VMBUS_PROTO_TESTDEV_H
#define HV_VMBUS_PROTO_TESTDEV_H

#include <stdint.h>

/* Opcodes: the first u32 of an in-band payload. */
enum hvsim_vsp_test_op {
    HVSIM_VSP_TEST_OP_ECHO = 1,
    HVSIM_VSP_TEST_OP_ECHO_COMPLETION = 2,
    HVSIM_VSP_TEST_OP_SEND_N = 3,
    HVSIM_VSP_TEST_OP_DATA = 4,        /* host -> guest: one packet of a SEND_N batch */
    HVSIM_VSP_TEST_OP_SIGNAL_ONLY = 5,
    HVSIM_VSP_TEST_OP_HELLO = 6,       /* host -> guest: the send-on-open packet */
    HVSIM_VSP_TEST_OP_SEND_N_ACKED = 7,
};

#define HVSIM_VSP_TEST_MAX_SEND_N (1u << 24) /* SEND_N packets in one request (more: BAD_REQUEST) */
#define HVSIM_VSP_TEST_MAX_ACKED 1000u /* SEND_N_ACKED packets in one request (the host's id table holds 1024) */

/* Completion statuses (the first u32 of the SEND_N and GPA-direct completions). */
#define HVSIM_VSP_TEST_STATUS_OK 0u
#define HVSIM_VSP_TEST_STATUS_BAD_RANGE 1u   /* a GPA range reaches outside guest RAM */
#define HVSIM_VSP_TEST_STATUS_BAD_REQUEST 2u /* SEND_N with a size that cannot be sent, a payload too
                                                short for its opcode, a transfer-page packet */
#define HVSIM_VSP_TEST_STATUS_UNKNOWN_OPCODE 3u

/* Payload formats (this project's, not a Hyper-V protocol). */
struct hvsim_vsp_test_send_n {
    uint32_t op;    /* @0: HVSIM_VSP_TEST_OP_SEND_N */
    uint32_t count; /* @4: packets to send */
    uint32_t size;  /* @8: payload bytes of each, >= 8 */
} __attribute__((packed));
_Static_assert(sizeof(struct hvsim_vsp_test_send_n) == 12, "SEND_N request is 12 bytes");

struct hvsim_vsp_test_data_header {
    uint32_t op;  /* @0: HVSIM_VSP_TEST_OP_DATA */
    uint32_t seq; /* @4: 0 .. count-1 within its batch */
} __attribute__((packed));
_Static_assert(sizeof(struct hvsim_vsp_test_data_header) == 8, "DATA header is 8 bytes");

struct hvsim_vsp_test_send_n_result {
    uint32_t status; /* @0 */
    uint32_t count;  /* @4: packets sent */
} __attribute__((packed));
_Static_assert(sizeof(struct hvsim_vsp_test_send_n_result) == 8, "SEND_N completion is 8 bytes");

struct hvsim_vsp_test_gpa_result {
    uint32_t status;     /* @0 */
    uint32_t byte_count; /* @4: bytes checksummed */
    uint32_t checksum;   /* @8: FNV-1a 32 */
} __attribute__((packed));
_Static_assert(sizeof(struct hvsim_vsp_test_gpa_result) == 12, "GPA completion is 12 bytes");

struct hvsim_vsp_test_hello {
    uint32_t op;    /* @0: HVSIM_VSP_TEST_OP_HELLO */
    uint32_t relid; /* @4: the channel's relid */
} __attribute__((packed));
_Static_assert(sizeof(struct hvsim_vsp_test_hello) == 8, "HELLO is 8 bytes");

#define HVSIM_VSP_TEST_FNV_BASIS 0x811c9dc5u
#define HVSIM_VSP_TEST_FNV_PRIME 0x01000193u

#endif
