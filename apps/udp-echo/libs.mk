# The driver libraries linked into the udp-echo image (their apps/<lib>/*.c, see the Makefile).
APP_LIBS := netvsc net
