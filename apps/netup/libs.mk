# The driver libraries linked into the netup image (folders whose *.c are compiled in, see the Makefile):
# the NIC driver (bound by the VMBus registry) and the IPv4 stack with its binding to network devices.
APP_LIBS := drivers/netvsc drivers/netvsc/proto lib/net
