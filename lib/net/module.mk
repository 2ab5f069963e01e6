# lib/net: the IPv4 stack (guest; portable, so its unit tests and fuzzer run hosted).
MODULES += lib/net
SRCS.lib/net := $(wildcard lib/net/*.c)
