# test/lib: code shared by the tests.
MODULES += test/lib
SRCS.test/lib := $(wildcard test/lib/*.c)
