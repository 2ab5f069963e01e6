/*
 * simtest: hvsim's test ports, as a guest reaches them: connection ids of HvPostMessage and
 * HvSignalEvent endpoints that only hvsim has (Hyper-V answers INVALID_CONNECTION_ID), which the
 * guest's self-checks (apps/hvprobe) and the hosted tests use to make hvsim echo and misbehave on
 * request. This project's own protocol, not Hyper-V's; hvsim serves it (sim/hypercall.c). Portable:
 * includes nothing of the guest or the host. All numbers little-endian.
 *
 *  - HVSIM_CONN_ECHO: a posted message whose payload starts with struct hvsim_echo_header comes back
 *    as a message of the same type and payload (all of it) into that VP's SINT slot.
 *  - HVSIM_CONN_EVENT_ECHO + s (s < 16): HvSignalEvent(flag f) sets flag f in the calling VP's
 *    SIEF block for SINT s and raises that SINT.
 *  - HVSIM_CONN_CONTROL: a posted message (struct hvsim_control_msg, then the bytes of the message a
 *    command delivers) asks hvsim to misbehave, see enum hvsim_control. A vp or sint out of range or
 *    a bad argument: INVALID_PARAMETER.
 */
#ifndef HV_SIMTEST_H
#define HV_SIMTEST_H

#include <stdint.h>

#define HVSIM_CONN_ECHO        0x7e570u
#define HVSIM_CONN_EVENT_ECHO  0x7e580u
#define HVSIM_CONN_CONTROL     0x7e5c0u

struct hvsim_echo_header {
    uint8_t vp;   /* @0: where the echo goes */
    uint8_t sint; /* @1 */
} __attribute__((packed));
_Static_assert(sizeof(struct hvsim_echo_header) == 2, "echo header is 2 bytes");

enum hvsim_control {
    HVSIM_CTL_FAIL_POSTS = 1,      /* the next `arg` HvPostMessage calls get INSUFFICIENT_BUFFERS */
    HVSIM_CTL_BAD_SIZE = 2,        /* deliver a message with payload_size = arg (> 240) to vp/sint */
    HVSIM_CTL_UNKNOWN_TYPE = 3,    /* deliver a message of type arg (unknown to the guest) */
    HVSIM_CTL_STRAY_EVENT = 4,     /* set event flag arg in vp's SINT block and raise the SINT */
    HVSIM_CTL_TSC_UNSETTLED = 5,   /* arg 1: keep changing the TSC page's sequence; 0: stop */
};

struct hvsim_control_msg {
    uint32_t cmd;  /* @0: enum hvsim_control */
    uint32_t vp;   /* @4 */
    uint32_t sint; /* @8 */
    uint32_t arg;  /* @12 */
} __attribute__((packed));
_Static_assert(sizeof(struct hvsim_control_msg) == 16, "control message is 16 bytes");

#endif
