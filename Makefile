# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# NetKernel: one Makefile for everything.  Quiet by default, V=1 for the
# full commands; all build output under $(OUTPUT) (build/).
#
#   make            build nkd, nkctl, nk-nsm, libnkguest.so, nk-run, tests
#   make test       run the test suite (as root; builds first)
#   make fuzz       run each libFuzzer harness (nk-vhost-vsock's, nkd's
#                   configuration parser, nkctl's command line) for
#                   FUZZ_SECS (default 60) seconds
#   make test-asan  nk-nsm built with AddressSanitizer + UBSan under the
#                   protocol tests (a 30 s protocol fuzz), semantics and apps
#   make demo       run the demo topology (as root)
#   make bench      benchmark vs native, pasta, slirp4netns (as root;
#                   BENCH_ARGS=--quick for a short run); docs/benchmarks.md
#   make install    PREFIX=/usr/local DESTDIR=
#   make deb        the guest package (netkernel-guest_VERSION_ARCH.deb)
#   make check      static analysis (cppcheck, clang --analyze)
#   make help       this list

OUTPUT ?= build
PREFIX ?= /usr/local
DESTDIR ?=
CC ?= cc
CLANG ?= clang

ifeq ($(V),1)
  Q =
  msg =
else
  Q = @
  msg = @printf '  %-8s %s\n' "$(1)" "$(2)";
endif

.DELETE_ON_ERROR:
.DEFAULT_GOAL := all

PKGS := jansson libmnl libbpf
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS ?= -O2 -g
# -Wno-missing-field-initializers: "= { .x = 1 }" designated initialisers
# are the house style and zero the rest on purpose.
WARNINGS := -Wall -Wextra -Werror -Wno-missing-field-initializers
# -MMD -MP: every object also depends on the headers it included.
ALL_CFLAGS := $(CFLAGS) $(WARNINGS) -std=gnu11 -D_GNU_SOURCE -fPIC -MMD -MP \
	-Iinclude -Ilib $(PKG_CFLAGS)
LDFLAGS ?=

LIB_SRCS := $(wildcard lib/*.c)
LIB_OBJS := $(LIB_SRCS:%.c=$(OUTPUT)/%.o)
NKD_SRCS := $(wildcard ctl/nkd*.c)
NKCTL_SRCS := $(wildcard ctl/nkctl*.c)
NSM_SRCS := $(wildcard nsm/*.c)
SHIM_SRCS := $(filter-out guest-shim/nk-run.c,$(wildcard guest-shim/*.c))
SELFTEST_SRCS := $(wildcard selftests/*.c)
# nk-vhost-vsock (ctl/vhost/): the vhost-user-vsock device backend; its
# fuzz_*.c are libFuzzer harnesses over the rest of it (make fuzz).
VHOST_SRCS := $(filter-out ctl/vhost/fuzz_%.c,$(wildcard ctl/vhost/*.c))
VHOST_CORE_SRCS := $(filter-out ctl/vhost/nk-vhost-vsock.c,$(VHOST_SRCS))
FUZZ_BINS := $(patsubst ctl/vhost/%.c,$(OUTPUT)/fuzz/%,$(wildcard ctl/vhost/fuzz_*.c))

BINS := $(OUTPUT)/nkd $(OUTPUT)/nkctl $(OUTPUT)/nk-nsm $(OUTPUT)/nk-run \
	$(OUTPUT)/libnkguest.so $(OUTPUT)/nk-vhost-vsock
SELFTEST_BINS := $(SELFTEST_SRCS:selftests/%.c=$(OUTPUT)/selftests/%)

.PHONY: all
all: $(BINS) $(SELFTEST_BINS)

-include $(shell find $(OUTPUT) -name '*.d' 2>/dev/null)

$(OUTPUT)/%.o: %.c $(wildcard include/netkernel/*.h lib/*.h) | $(OUTPUT)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@

$(OUTPUT)/libnkcommon.a: $(LIB_OBJS)
	$(call msg,AR,$@)
	$(Q)$(AR) rcs $@ $^

$(OUTPUT)/nkd: $(NKD_SRCS:%.c=$(OUTPUT)/%.o) $(OUTPUT)/libnkcommon.a
	$(call msg,LINK,$@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(OUTPUT)/nkctl: $(NKCTL_SRCS:%.c=$(OUTPUT)/%.o) $(OUTPUT)/libnkcommon.a
	$(call msg,LINK,$@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(OUTPUT)/nk-nsm: $(NSM_SRCS:%.c=$(OUTPUT)/%.o) $(OUTPUT)/libnkcommon.a
	$(call msg,LINK,$@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

# The guest library exports only the interposed symbols (libnkguest.map).
$(OUTPUT)/libnkguest.so: $(SHIM_SRCS:%.c=$(OUTPUT)/%.o) $(OUTPUT)/libnkcommon.a guest-shim/libnkguest.map
	$(call msg,LINK,$@)
	$(Q)$(CC) $(LDFLAGS) -shared -Wl,--version-script=guest-shim/libnkguest.map \
		-Wl,-z,defs -o $@ $(filter %.o %.a,$^) -ldl -lpthread

$(OUTPUT)/nk-run: $(OUTPUT)/guest-shim/nk-run.o
	$(call msg,LINK,$@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^

$(OUTPUT)/nk-vhost-vsock: $(VHOST_SRCS:%.c=$(OUTPUT)/%.o) $(OUTPUT)/libnkcommon.a
	$(call msg,LINK,$@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^

$(VHOST_SRCS:%.c=$(OUTPUT)/%.o): ctl/vhost/vhost_vsock.h

# libFuzzer harnesses (clang, ASan + UBSan), built with everything else so
# selftests/test_fuzz.sh can run them briefly; `make fuzz` runs each for
# FUZZ_SECS seconds.
FUZZ_SECS ?= 60
FUZZ_CFLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	$(WARNINGS) -std=gnu11 -D_GNU_SOURCE -Iinclude -Ilib -Ictl/vhost
all: $(FUZZ_BINS)

$(FUZZ_BINS): $(OUTPUT)/fuzz/%: ctl/vhost/%.c $(VHOST_CORE_SRCS) lib/log.c ctl/vhost/vhost_vsock.h
	$(call msg,FUZZ-CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) $(FUZZ_CFLAGS) -o $@ $< $(VHOST_CORE_SRCS) lib/log.c

# nkd's configuration parser (ctl/fuzz_nkd_config.c): nkd's sources but
# its main(), which libFuzzer's replaces.
NKD_FUZZ := $(OUTPUT)/fuzz/fuzz_nkd_config
all: $(NKD_FUZZ)

$(NKD_FUZZ): ctl/fuzz_nkd_config.c $(NKD_SRCS) $(LIB_SRCS) $(wildcard ctl/*.h include/netkernel/*.h lib/*.h) \
	     $(OUTPUT)/steer.skel.h
	$(call msg,FUZZ-CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) $(FUZZ_CFLAGS) -I$(OUTPUT) $(PKG_CFLAGS) -Dmain=nkd_main -o $@ \
		$(filter %.c,$^) $(PKG_LIBS)

# nkctl's command line (ctl/fuzz_nkctl_args.c): the parser, without the
# socket to nkd.
NKCTL_FUZZ := $(OUTPUT)/fuzz/fuzz_nkctl_args
all: $(NKCTL_FUZZ)

$(NKCTL_FUZZ): ctl/fuzz_nkctl_args.c ctl/nkctl_args.c ctl/nkctl.h ctl/nkd.h \
	       $(wildcard include/netkernel/*.h lib/*.h)
	$(call msg,FUZZ-CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) $(FUZZ_CFLAGS) -I$(OUTPUT) $(PKG_CFLAGS) -o $@ $(filter %.c,$^) $(PKG_LIBS)

.PHONY: fuzz
fuzz: $(FUZZ_BINS) $(NKD_FUZZ) $(NKCTL_FUZZ)
	$(Q)OUTPUT=$(abspath $(OUTPUT)) NK_FUZZ_SECS=$(FUZZ_SECS) bash selftests/test_fuzz.sh

$(OUTPUT)/selftests/%: $(OUTPUT)/selftests/%.o $(OUTPUT)/libnkcommon.a
	$(call msg,LINK,$@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lpthread

# ---- BPF: bpf/NAME.bpf.c -> $(OUTPUT)/bpf/NAME.bpf.o -> $(OUTPUT)/NAME.skel.h
# (struct NAME_bpf).  No vmlinux.h: the programs parse packets with the uapi
# headers, and userspace shares types with them through
# include/netkernel/steer.h only.  Userspace that includes a skeleton gets
# -I$(OUTPUT) and depends on it below.
BPFTOOL ?= bpftool
BPF_ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')
# Debian keeps asm/types.h under the multiarch directory, which clang
# -target bpf does not search by itself.
BPF_CFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_$(BPF_ARCH) -Wall -Werror \
	-I/usr/include/$(shell $(CC) -dumpmachine) -Iinclude -Ibpf
BPF_SRCS := $(wildcard bpf/*.bpf.c)
BPF_OBJS := $(BPF_SRCS:%.c=$(OUTPUT)/%.o)
BPF_SKELS := $(BPF_SRCS:bpf/%.bpf.c=$(OUTPUT)/%.skel.h)
BPF_HDRS := $(wildcard bpf/lib/*.h) $(wildcard include/netkernel/*.h)

all: $(BPF_SKELS)

$(BPF_OBJS): $(OUTPUT)/bpf/%.bpf.o: bpf/%.bpf.c $(BPF_HDRS) | $(OUTPUT)
	$(call msg,BPF,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(BPF_SKELS): $(OUTPUT)/%.skel.h: $(OUTPUT)/bpf/%.bpf.o
	$(call msg,GEN-SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< > $@

STEER_USERS := $(OUTPUT)/lib/steer_maps.o $(OUTPUT)/selftests/steer_test.o
$(STEER_USERS): $(OUTPUT)/steer.skel.h
$(STEER_USERS): ALL_CFLAGS += -I$(OUTPUT)
$(OUTPUT)/nsm/krelay.o: $(OUTPUT)/relay.skel.h
$(OUTPUT)/nsm/krelay.o: ALL_CFLAGS += -I$(OUTPUT)

$(OUTPUT):
	$(Q)mkdir -p $@

.PHONY: test
test: all
	$(Q)OUTPUT=$(abspath $(OUTPUT)) bash selftests/run.sh $(TESTS)

# The NSM reads every byte a guest sends: run it with sanitizers that abort
# on the first error (nkd then restarts it, which the tests catch).
ASAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer
.PHONY: test-asan
test-asan: all
	$(Q)$(MAKE) --no-print-directory OUTPUT=$(abspath $(OUTPUT))/asan \
		CFLAGS="$(ASAN_FLAGS)" LDFLAGS="-fsanitize=address,undefined" \
		$(abspath $(OUTPUT))/asan/nk-nsm
	$(Q)ASAN_OPTIONS=abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		NK_PROTO_FUZZ_SECS=$${NK_PROTO_FUZZ_SECS:-30} \
		NK_NKD_EXTRA_ARGS="--nsm-bin $(abspath $(OUTPUT))/asan/nk-nsm" \
		OUTPUT=$(abspath $(OUTPUT)) bash selftests/run.sh \
		$${TESTS:-test_nsm_proto test_semantics test_apps}

.PHONY: demo
demo: all
	$(Q)OUTPUT=$(abspath $(OUTPUT)) bash tools/demo.sh

# The benchmark's C helpers (tools/bench/NAME.c -> $(OUTPUT)/bench/NAME),
# dynamically linked so that nk-run covers them.
BENCH_BINS := $(patsubst tools/bench/%.c,$(OUTPUT)/bench/%,$(wildcard tools/bench/*.c))

all: $(BENCH_BINS)

$(OUTPUT)/bench/%: tools/bench/%.c | $(OUTPUT)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< -lpthread

# The packages first: on a fresh machine the build itself needs some of
# them (libjansson-dev, libbpf-dev, clang ...).
.PHONY: bench
bench:
	$(Q)bash tools/install-deps.sh --bench
	$(Q)$(MAKE) --no-print-directory all
	$(Q)OUTPUT=$(abspath $(OUTPUT)) bash tools/bench.sh $(BENCH_ARGS)

NK_VERSION ?= 0.1.0

# The guest package: netkernel-guest_$(NK_VERSION)_<arch>.deb in $(OUTPUT).
.PHONY: deb
deb: $(OUTPUT)/libnkguest.so $(OUTPUT)/nk-run
	$(call msg,DEB,netkernel-guest $(NK_VERSION))
	$(Q)bash tools/mkdeb.sh $(OUTPUT) $(NK_VERSION)

# systemd units (tools/systemd/): nkd.service, nk-vhost-vsock@.service
SYSTEMD_UNIT_DIR ?= $(PREFIX)/lib/systemd/system

.PHONY: install
install: all
	$(call msg,INSTALL,$(DESTDIR)$(PREFIX))
	$(Q)install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/bin \
		$(DESTDIR)$(PREFIX)/lib/netkernel
	$(Q)install -m 0755 $(OUTPUT)/nkd $(OUTPUT)/nk-nsm $(OUTPUT)/nk-vhost-vsock \
		$(DESTDIR)$(PREFIX)/sbin/
	$(Q)install -m 0755 $(OUTPUT)/nkctl $(OUTPUT)/nk-run $(DESTDIR)$(PREFIX)/bin/
	$(Q)install -m 0644 $(OUTPUT)/libnkguest.so $(DESTDIR)$(PREFIX)/lib/netkernel/
	$(Q)install -d $(DESTDIR)$(SYSTEMD_UNIT_DIR) $(DESTDIR)$(PREFIX)/share/doc/netkernel
	$(Q)for u in tools/systemd/*.service; do \
		sed -e 's|@SBINDIR@|$(PREFIX)/sbin|g' -e 's|@DOCDIR@|$(PREFIX)/share/doc/netkernel|g' \
			"$$u" >"$(DESTDIR)$(SYSTEMD_UNIT_DIR)/$$(basename "$$u")" || exit 1; \
	done
	$(Q)install -m 0644 docs/*.md $(DESTDIR)$(PREFIX)/share/doc/netkernel/

.PHONY: check
check: $(BPF_SKELS)
	$(call msg,CPPCHECK,.)
	$(Q)cppcheck --quiet --error-exitcode=1 --enable=warning,portability \
		--inline-suppr -D_GNU_SOURCE -Iinclude -Ilib \
		--suppress=missingIncludeSystem lib ctl nsm guest-shim selftests
	$(call msg,ANALYZE,.)
	$(Q)for f in $(LIB_SRCS) $(NKD_SRCS) $(NKCTL_SRCS) $(NSM_SRCS) $(SHIM_SRCS) guest-shim/nk-run.c $(VHOST_SRCS) \
		 ctl/fuzz_nkd_config.c ctl/fuzz_nkctl_args.c; do \
		$(CLANG) --analyze -Xanalyzer -analyzer-output=text $(WARNINGS) \
			-std=gnu11 -D_GNU_SOURCE -Iinclude -Ilib -I$(OUTPUT) $(PKG_CFLAGS) $$f -o /dev/null || exit 1; \
	done

.PHONY: clean
clean:
	$(call msg,CLEAN,$(OUTPUT))
	$(Q)rm -rf $(OUTPUT)

.PHONY: help
help:
	@sed -n 's/^#   /  /p' Makefile
