/* 16550 registers: PC16550D datasheet (THR/RBR 0, IER 1, FCR 2, LCR 3, MCR 4, LSR 5, SCR 7). */
#include "arch-x86_64/serial.h"

#include "arch-x86_64/cpu.h"

static uint16_t base;
static bool present;

enum { THR = 0, IER = 1, DLL = 0, DLH = 1, FCR = 2, LCR = 3, MCR = 4, LSR = 5, SCR = 7 };
#define LSR_THRE 0x20

bool uart_probe(uint16_t port)
{
    /* No UART: reads float to 0xff and the scratch register does not hold a value. */
    outb(port + SCR, 0x5a);
    if (inb(port + SCR) != 0x5a)
        return false;
    outb(port + SCR, 0xa5);
    return inb(port + SCR) == 0xa5;
}

void uart_setup(uint16_t port, uint8_t fcr, uint8_t mcr)
{
    outb(port + IER, 0x00);  /* no interrupts until the caller asks */
    outb(port + LCR, 0x80);  /* DLAB */
    outb(port + DLL, 0x01);  /* 115200 baud */
    outb(port + DLH, 0x00);
    outb(port + LCR, 0x03);  /* 8N1 */
    outb(port + FCR, fcr);
    outb(port + MCR, mcr);
}

bool serial_init(uint16_t port)
{
    if (!uart_probe(port))
        return false;
    uart_setup(port, 0xc7, 0x03); /* FIFO on, cleared, 14-byte threshold; DTR, RTS; polled */
    base = port;
    present = true;
    return true;
}

bool serial_present(void)
{
    return present;
}

static void put(char c)
{
    /* Bounded: a wedged UART must not hang the log. ~1 ms at 115200 baud is one character. */
    for (int i = 0; i < 100000 && !(inb(base + LSR) & LSR_THRE); i++)
        cpu_relax();
    outb(base + THR, (uint8_t)c);
}

void serial_write(const char *s, size_t n)
{
    if (!present)
        return;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n')
            put('\r');
        put(s[i]);
    }
}
