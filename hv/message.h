/*
 * message: the checks on what the host writes into a SynIC message slot and a timer message's
 * payload. Portable and pure, so the fuzz harness (test/fuzz/fuzz_hvmsg.c) runs them on any bytes;
 * hv/synic.c and hv/stimer.c act on the verdicts, always on the private copy hv/synic.c read once
 * from the slot (never on the slot itself, which the host may rewrite meanwhile).
 */
#ifndef HV_MESSAGE_H
#define HV_MESSAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "hv/proto/hvdefs.h"

enum hv_slot_verdict {
    HV_SLOT_EMPTY,     /* message type 0: nothing there */
    HV_SLOT_BAD_SIZE,  /* payload size over 240: drop */
    HV_SLOT_DELIVER,   /* a well-formed message */
};

static inline enum hv_slot_verdict hv_slot_check(uint32_t message_type, uint8_t payload_size)
{
    if (message_type == HV_MESSAGE_NONE)
        return HV_SLOT_EMPTY;
    if (payload_size > HV_MESSAGE_PAYLOAD_MAX)
        return HV_SLOT_BAD_SIZE;
    return HV_SLOT_DELIVER;
}

/* A timer-expired message's payload, if it is long enough to hold one. */
static inline bool hv_timer_message_parse(const struct hv_message *msg, struct hv_timer_message_payload *out)
{
    if (msg->header.message_type != HV_MESSAGE_TIMER_EXPIRED || msg->header.payload_size < sizeof *out ||
        msg->header.payload_size > HV_MESSAGE_PAYLOAD_MAX)
        return false;
    __builtin_memcpy(out, msg->payload, sizeof *out);
    return true;
}

#endif
