#include "kernel/status.h"

const char *status_name(status_t s)
{
    static const char *const names[STATUS__COUNT] = {
        [STATUS_OK] = "ok",
        [STATUS_NO_MEMORY] = "no-memory",
        [STATUS_INVALID_PARAMETER] = "invalid-parameter",
        [STATUS_TIMEOUT] = "timeout",
        [STATUS_NOT_FOUND] = "not-found",
        [STATUS_NOT_SUPPORTED] = "not-supported",
        [STATUS_BAD_DATA] = "bad-data",
        [STATUS_BUSY] = "busy",
        [STATUS_RETRY] = "retry",
        [STATUS_IO_ERROR] = "io-error",
        [STATUS_CANCELLED] = "cancelled",
        [STATUS_EXISTS] = "exists",
        [STATUS_NO_SPACE] = "no-space",
        [STATUS_DEVICE_ERROR] = "device-error",
        [STATUS_INVALID_STATE] = "invalid-state",
    };
    if ((unsigned)s >= STATUS__COUNT || !names[s])
        return "unknown-status";
    return names[s];
}
