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
/* Any 16550 (the console's or another): is one at port (scratch-register test), and set it to
 * 115200 8N1 with interrupts off and the given FIFO and modem control bytes. */
bool uart_probe(uint16_t port);
void uart_setup(uint16_t port, uint8_t fcr, uint8_t mcr);
bool serial_present(void);
void serial_write(const char *s, size_t n);

#endif
