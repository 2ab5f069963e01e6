/* The project-wide error codes. Every fallible function returns one; none may be ignored. */
#ifndef KERNEL_STATUS_H
#define KERNEL_STATUS_H

typedef enum status {
    STATUS_OK = 0,
    STATUS_NO_MEMORY,
    STATUS_INVALID_PARAMETER,
    STATUS_TIMEOUT,
    STATUS_NOT_FOUND,
    STATUS_NOT_SUPPORTED,
    STATUS_BAD_DATA,        /* malformed input (from the firmware, the host or the user) */
    STATUS_BUSY,
    STATUS_RETRY,           /* transient: try again */
    STATUS_IO_ERROR,
    STATUS_CANCELLED,
    STATUS_EXISTS,
    STATUS_NO_SPACE,
    STATUS_DEVICE_ERROR,
    STATUS_INVALID_STATE,   /* not now: the object is not set up, or already is */
    STATUS__COUNT
} status_t;

/* A short name for logs ("no-memory", ...); never NULL. */
const char *status_name(status_t s);

#define WARN_UNUSED __attribute__((warn_unused_result))

#endif
