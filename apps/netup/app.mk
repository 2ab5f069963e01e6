# netup: a NIC with a DHCP address and nothing else: the NIC driver and the stack on a network device.
APP_MODULES := drivers/netvsc lib/netattach
