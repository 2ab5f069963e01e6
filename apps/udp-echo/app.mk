# udp-echo links the NIC driver and the IPv4 stack on a network device (and what they need: kmcl, VMBus).
APP_MODULES := drivers/netvsc lib/netattach
