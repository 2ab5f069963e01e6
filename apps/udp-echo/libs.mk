# The driver libraries linked into the udp-echo image (folders whose *.c are compiled in, see the Makefile).
APP_LIBS := drivers/netvsc drivers/netvsc/proto lib/net
