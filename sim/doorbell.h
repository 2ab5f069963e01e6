/*
 * doorbell: hvsim's side of the QEMU doorbell protocol (hv/proto/simdb.h), as functions the hvsim program
 * and the tests share:
 *  - a resynchronising parser for the bytes the guest writes to the doorbell UART (HELLO frames and
 *    KICK bytes among whatever the firmware printed before);
 *  - the checks that accept a HELLO's mailbox;
 *  - serving the requests the guest left in the mailbox, through the hvsim library;
 *  - marking a vector pending for a VP.
 *
 * The mailbox lives in guest RAM, which the guest changes concurrently: every field is read once
 * into a local before it is checked and used. Not thread-safe per mailbox: one thread serves it
 * (simdb_set_pending may run concurrently with serving).
 */
#ifndef SIM_DOORBELL_H
#define SIM_DOORBELL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hv/proto/simdb.h"
#include "sim/hvsim.h"

/* What the parser found; called in stream order. */
struct simdb_sink {
    void (*kick)(void *ctx);
    void (*hello)(void *ctx, uint64_t mailbox_gpa);
    void *ctx;
};

/* Parser state: the bytes of a HELLO frame seen so far. Zero-initialise (or simdb_parser_init). */
struct simdb_parser {
    uint8_t frame[SIMDB_HELLO_LEN];
    uint8_t len;
};

void simdb_parser_init(struct simdb_parser *p);

/*
 * Feeds n bytes. A HELLO is 'H' 'V' 'S' '1', 8 bytes of GPA (little-endian) and a checksum byte that
 * makes all 13 sum to 0; a KICK is one SIMDB_KICK byte outside a frame. Any other byte is ignored.
 * A candidate frame that turns out bad (wrong prefix or checksum) is dropped and its bytes after the
 * 'H' are scanned again, so a real frame that started inside it is still found and a KICK inside it
 * still counts. The result does not depend on how the stream is split into calls.
 */
void simdb_parse(struct simdb_parser *p, const uint8_t *bytes, size_t n, const struct simdb_sink *sink);

/* The mailbox at gpa if its SIMDB_MAILBOX_PAGES pages are page-aligned and inside ram[0, ram_size);
 * else NULL with *why set. */
struct simdb_mailbox *simdb_mailbox_at(void *ram, uint64_t ram_size, uint64_t gpa, const char **why);

/* Checks the guest's part of a HELLO (magic, version, 1 <= vp_count <= SIMDB_MAX_VPS): NULL and
 * *vp_count on success, else why not. */
const char *simdb_check_hello(const struct simdb_mailbox *mb, uint32_t *vp_count);

/* The guest's TSC when it sent HELLO. */
uint64_t simdb_hello_guest_tsc(const struct simdb_mailbox *mb);

/* Accepts the HELLO: writes host_magic (release). */
void simdb_accept_hello(struct simdb_mailbox *mb);

/* Executes every request of VPs 0..vp_count-1 with seq != done through sim, writes ret[] and then
 * done = seq (release). A malformed request (its vp field is not its slot, an unknown op) is
 * answered with ret = {0, 1, 0, 0} and logged through `log` (may be NULL). Returns the number of
 * requests served. */
unsigned simdb_serve(struct hvsim *sim, struct simdb_mailbox *mb, uint32_t vp_count,
                     void (*log)(void *ctx, const char *line), void *log_ctx);

/* Sets bit `vector` of pending[vp] atomically; false if vp is out of range. */
bool simdb_set_pending(struct simdb_mailbox *mb, uint32_t vp, uint8_t vector);

#endif
