# udp-echo links the NIC driver and the IPv4 stack (and what they need: kmcl, VMBus).
APP_MODULES := drivers/netvsc lib/net
