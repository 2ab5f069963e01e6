# test/lib: code shared by the tests: test_util.h (header only) and the fake guest of the
# host-component tests (fake_guest.c, on hvsim).
MODULES += test/lib
SRCS.test/lib := $(wildcard test/lib/*.c)
DEPS.test/lib := sim
