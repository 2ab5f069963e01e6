# tools/hosted.mk: every hosted program (unit, host-component and system tests, fuzzers, benchmarks,
# hvsim) is made by one macro from a main file and the modules it names (module.mk files). Each
# source is compiled once per flavour into build/host/<flavour>/ and linked from there:
#   asan   ASan + UBSan, the tests       tsan   ThreadSanitizer, the _tsan tests
#   fuzz   libFuzzer + ASan + UBSan      bench  -O2, no sanitizers (benchmarks, hvsim)
# A program whose modules include the hosted platform (test/hosted: guest VPs as threads) is built
# in the "-vp" twin of its flavour, with test/hosted/include first (its arch-x86_64/irql.h replaces
# the CR8 one); one on the deterministic platform (test/dsim: one OS thread, seeded scheduler,
# virtual time) in the "-dsim" twin, with test/dsim/include first and test/dsim/dsim_platform.h
# included into every source. Included by the top-level Makefile after the modules.

HOST_BASE := -std=gnu11 -g -Wall -Wextra -Werror -DHOSTED -I. -pthread
CC.asan := $(CC)
CFLAGS.asan := $(HOST_BASE) -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS.asan := -fsanitize=address,undefined -pthread
CC.tsan := $(CC)
CFLAGS.tsan := $(HOST_BASE) -O1 -fsanitize=thread -fno-omit-frame-pointer
LDFLAGS.tsan := -fsanitize=thread -pthread
CC.fuzz := clang
CFLAGS.fuzz := -std=gnu11 -g -O1 -DHOSTED -I. -pthread -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
LDFLAGS.fuzz := -fsanitize=fuzzer,address,undefined -pthread
CC.bench := $(CC)
CFLAGS.bench := $(HOST_BASE) -O2
LDFLAGS.bench := -pthread
FLAVOURS := asan tsan fuzz bench
$(foreach f,$(FLAVOURS),$(eval CC.$(f)-vp := $(CC.$(f)))$(eval CFLAGS.$(f)-vp := -Itest/hosted/include $(CFLAGS.$(f)))$(eval LDFLAGS.$(f)-vp := $(LDFLAGS.$(f))))
$(foreach f,$(FLAVOURS),$(eval CC.$(f)-dsim := $(CC.$(f)))$(eval CFLAGS.$(f)-dsim := -Itest/dsim/include -include test/dsim/dsim_platform.h $(CFLAGS.$(f)))$(eval LDFLAGS.$(f)-dsim := $(LDFLAGS.$(f))))
# clang calls libatomic for the monitor page's packed atomics.
LDFLAGS.fuzz-dsim += -latomic

define flavour_rule
$(BUILD)/host/$(1)/%.o: %.c | deps
	@mkdir -p $$(@D)
	$$(call msg,CC,$$@)$$(CC.$(1)) $$(CFLAGS.$(1)) -MMD -MP -c $$< -o $$@
endef
$(foreach f,$(FLAVOURS),$(eval $(call flavour_rule,$(f)))$(eval $(call flavour_rule,$(f)-vp))$(eval $(call flavour_rule,$(f)-dsim)))

host_objs = $(patsubst %.c,$(BUILD)/host/$(1)/%.o,$(2))
vp = $(if $(filter test/hosted,$(call mod_closure,$(1))),-vp)$(if $(filter test/dsim,$(call mod_closure,$(1))),-dsim)

# $(call hosted,OUT,FLAVOUR,MAIN,MODULES,EXTRA_SOURCES,LIBS): OUT linked from MAIN, the hosted sources
# of MODULES and what they need, and EXTRA_SOURCES.
define hosted_rule
$(1): $(call host_objs,$(2),$(sort $(3) $(call mod_hsrcs,$(4)) $(5)))
	@mkdir -p $$(@D)
	$$(call msg,LD,$$@)$$(CC.$(2)) $$(LDFLAGS.$(2)) $$^ -o $$@ $(6)
endef
hosted = $(eval $(call hosted_rule,$(1),$(2)$(call vp,$(4)),$(3),$(4),$(5),$(6)))

# The kinds of program, each a use of `hosted`:
#   $(call unit_test,NAME,MAIN,MODULES,EXTRA)   build/test/NAME (ASan/UBSan)
#   $(call test_pair,NAME,MAIN,MODULES,EXTRA)   build/test/NAME and build/test/NAME_tsan
#   $(call fuzzer,NAME,MAIN,MODULES,EXTRA)      build/fuzz/NAME (libFuzzer)
#   $(call bench,NAME,MAIN,MODULES,EXTRA,LIBS)  build/bench/NAME (-O2)
# test/run_tests.py runs every build/test/test_* and build/fuzz/fuzz_*.
UNIT_TESTS :=
FUZZERS :=
BENCHES :=
unit_test = $(call hosted,$(BUILD)/test/$(1),asan,$(2),$(3),$(4),-lcmocka)$(eval UNIT_TESTS += $(BUILD)/test/$(1))
test_pair = $(call unit_test,$(1),$(2),$(3),$(4))$(call hosted,$(BUILD)/test/$(1)_tsan,tsan,$(2),$(3),$(4),-lcmocka)$(eval UNIT_TESTS += $(BUILD)/test/$(1)_tsan)
fuzzer = $(call hosted,$(BUILD)/fuzz/$(1),fuzz,$(2),$(3),$(4))$(eval FUZZERS += $(BUILD)/fuzz/$(1))
bench = $(call hosted,$(BUILD)/bench/$(1),bench,$(2),$(3),$(4),$(5))

include sim/hvsim.mk $(sort $(wildcard test/*/tests.mk))

.PHONY: unit fuzzers
unit: $(UNIT_TESTS)
fuzzers: $(FUZZERS)
