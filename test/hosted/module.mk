# test/hosted: the hosted platform: guest VPs as threads beside an in-process hvsim (tests only).
MODULES += test/hosted
SRCS.test/hosted := $(wildcard test/hosted/*.c)
DEPS.test/hosted := sim kernel
