/*
 * serial: a 16550 UART (COM1 at 0x3F8 by default) for the console. serial_init() probes with the
 * scratch register and loopback, so a machine without the port (Hyper-V without Set-VMComPort) is
 * detected and the console simply goes elsewhere. Writes poll the transmitter with a bounded wait;
 * callable at any IRQL (the log serialises).
 */
#ifndef ARCH_SERIAL_H
#define ARCH_SERIAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define COM1_PORT 0x3F8

bool serial_init(uint16_t port);
bool serial_present(void);
void serial_write(const char *s, size_t n);

#endif
