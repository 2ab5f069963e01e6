# lib/netattach: the IPv4 stack on a network device (kernel/netdev.h): open, transmit hooks, DHCP or a
# static address, link and gone handling, the stack's timers (guest: kernel threads and the clock; the
# portable stack itself is lib/net).
MODULES += lib/netattach
SRCS.lib/netattach := $(wildcard lib/netattach/*.c)
DEPS.lib/netattach := lib/net kernel
