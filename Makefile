# ipkit - plain GNU make. `make help` lists the targets.
#
# Layout: lib/*.c -> build/libipkit.a, tools/ip-*.c -> build/bin/ip-*,
# tests/unit/test-*.c -> C unit tests, tests/t*.sh -> integration tests.
# New files are picked up by the wildcards below; nothing to register.

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANPREFIX  ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/vendor-completions
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DATADIR    ?= $(PREFIX)/share/ipkit
DESTDIR    ?=

VERSION := $(shell sed -n 's/^\#define IPK_VERSION "\(.*\)"/\1/p' lib/ipk.h)

CC         ?= cc
PKGS       := libvirt libcjson liblz4 libcurl libxxhash readline libzstd
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
WARN       := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
CFLAGS     ?= -O2 -g
ALL_CFLAGS := -std=c11 $(WARN) -iquote lib $(PKG_CFLAGS) $(CFLAGS)
LDLIBS     := $(PKG_LIBS) -lm -lpthread -ldl
SAN        := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

# CUDA is optional: lib/*.cu build only when nvcc exists (HAVE_CUDA=1).
NVCC       ?= $(firstword $(wildcard /usr/local/cuda/bin/nvcc) $(shell command -v nvcc 2>/dev/null))
HAVE_CUDA  ?= $(if $(NVCC),1,0)
CU_SRC     := $(wildcard lib/*.cu)
ifeq ($(HAVE_CUDA),1)
CUDA_HOME  := $(patsubst %/bin/nvcc,%,$(NVCC))
ALL_CFLAGS += -DHAVE_CUDA=1
LDLIBS     += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lstdc++
endif

# Debian packages for the build, the tests, the demo and the benchmarks.
DEB_PKGS := build-essential pkg-config clang libclang-rt-14-dev \
	libvirt-dev libcjson-dev liblz4-dev libzstd-dev libcurl4-openssl-dev libxxhash-dev libreadline-dev \
	libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils \
	busybox-static linux-image-amd64 cpio gzip iproute2 procps psmisc kmod \
	python3 python3-torch gawk mawk curl socat man-db groff-base \
	haproxy caddy openssl xdelta3 zstd gnuplot-nox openssh-server openssh-client xxhash lz4

V ?= 0
Q := $(if $(filter 1,$(V)),,@)

LIB_SRC   := $(wildcard lib/*.c)
TOOL_SRC  := $(wildcard tools/ip-*.c)
TOOLS     := $(patsubst tools/%.c,%,$(TOOL_SRC))
UNIT_SRC  := $(wildcard tests/unit/test-*.c)
FUZZ_SRC  := $(wildcard tests/fuzz/fuzz-*.c)
HDRS      := $(wildcard lib/*.h)

B := build
LIB_OBJ   := $(patsubst lib/%.c,$(B)/lib/%.o,$(LIB_SRC))
CU_OBJ    := $(if $(filter 1,$(HAVE_CUDA)),$(patsubst lib/%.cu,$(B)/lib/%.cu.o,$(CU_SRC)))
BINS      := $(addprefix $(B)/bin/,$(TOOLS))

# The sanitizer build used by `make check`.
S := $(B)/san
SLIB_OBJ  := $(patsubst lib/%.c,$(S)/lib/%.o,$(LIB_SRC))
SBINS     := $(addprefix $(S)/bin/,$(TOOLS))
SUNITS    := $(patsubst tests/unit/%.c,$(S)/unit/%,$(UNIT_SRC))

.PHONY: all help deps check unit demo bench qemu-backports install uninstall clean guest completions model fuzz
.DELETE_ON_ERROR:

all: $(BINS)

help:
	@echo "make            build the programs into $(B)/bin"
	@echo "make deps       install the Debian packages everything needs (apt-get, as root)"
	@echo "make check      build with ASan/UBSan and run unit and integration tests"
	@echo "make demo       run the pipeline end to end in the two-host lab"
	@echo "make bench      benchmarks against peer tools (prints ratios)"
	@echo "make qemu-backports  unpack QEMU 10 from bookworm-backports into $(B)/qemu-backports (make bench then runs b0500 on it too)"
	@echo "make guest      build the lab's test guest (kernel + initramfs)"
	@echo "make completions regenerate completions/ from the programs' --help"
	@echo "make model      retrain models/default.ipkm from ../shared/data (seeded, reproducible)"
	@echo "make install    install (PREFIX=$(PREFIX) DESTDIR=$(DESTDIR))"
	@echo "make clean      remove $(B)"
	@echo "V=1             show the commands"

deps:
	$(Q)missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		if [ "$$(id -u)" != 0 ]; then echo "make deps: run as root to install:" $$missing >&2; exit 1; fi; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(B)/lib/%.o: lib/%.c $(HDRS)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(B)/lib/%.cu.o: lib/%.cu $(HDRS)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  NVCC    $<")
	$(Q)$(NVCC) -O2 -Ilib -Xcompiler -fPIC -c -o $@ $<

$(B)/libipkit.a: $(LIB_OBJ) $(CU_OBJ)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(B)/bin/%: tools/%.c $(B)/libipkit.a $(HDRS)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CCLD    $@")
	$(Q)$(CC) $(ALL_CFLAGS) -o $@ $< $(B)/libipkit.a $(LDLIBS)

$(S)/lib/%.o: lib/%.c $(HDRS)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC san  $<")
	$(Q)$(CC) $(ALL_CFLAGS) $(SAN) -c -o $@ $<

$(S)/libipkit.a: $(SLIB_OBJ) $(CU_OBJ)
	$(Q)rm -f $@ && ar rcs $@ $^

$(S)/bin/%: tools/%.c $(S)/libipkit.a $(HDRS)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CCLD san $@")
	$(Q)$(CC) $(ALL_CFLAGS) $(SAN) -o $@ $< $(S)/libipkit.a $(LDLIBS)

$(S)/unit/%: tests/unit/%.c tests/unit/check.h $(S)/libipkit.a $(HDRS)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CCLD san $@")
	$(Q)$(CC) $(ALL_CFLAGS) $(SAN) -iquote tests/unit -o $@ $< $(S)/libipkit.a $(LDLIBS)

# libFuzzer targets (clang): tests/fuzz/fuzz-NAME.c linked with all of lib/.
F := $(B)/fuzz
FUZZERS   := $(patsubst tests/fuzz/%.c,$(F)/%,$(FUZZ_SRC))
FUZZ_FLAGS := -std=c11 -g -O1 -iquote lib $(PKG_CFLAGS) -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_TIME ?= 60

$(F)/%: tests/fuzz/%.c $(LIB_SRC) $(HDRS)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  FUZZ    $@")
	$(Q)clang $(FUZZ_FLAGS) -o $@ $< $(LIB_SRC) $(LDLIBS)

# Build the fuzzers and run each for FUZZ_TIME seconds on its corpus.
fuzz: $(FUZZERS)
	$(Q)tests/fuzz/make-seeds.sh $(F) >/dev/null
	$(Q)for f in $(FUZZERS); do n=$$(basename $$f); mkdir -p $(F)/corpus-$$n; \
		c=; [ -d tests/fuzz/corpus/$$n ] && c=tests/fuzz/corpus/$$n; \
		$$f -max_total_time=$(FUZZ_TIME) -timeout=10 -rss_limit_mb=1024 $(F)/corpus-$$n $$c || exit 1; done

-include examples/guest/guest.mk

check: deps
	$(Q)$(MAKE) --no-print-directory $(SBINS) $(SUNITS) $(BINS) guest
	$(Q)IPKIT_BIN=$(CURDIR)/$(S)/bin IPKIT_UNIT=$(CURDIR)/$(S)/unit IPKIT_TOP=$(CURDIR) tests/run.sh $(T)

unit: $(SUNITS)
	$(Q)IPKIT_BIN=$(CURDIR)/$(S)/bin IPKIT_UNIT=$(CURDIR)/$(S)/unit IPKIT_TOP=$(CURDIR) tests/run.sh --unit-only

demo: deps
	$(Q)$(MAKE) --no-print-directory all guest
	$(Q)IPKIT_BIN=$(CURDIR)/$(B)/bin IPKIT_TOP=$(CURDIR) examples/demo.sh

bench: deps
	$(Q)$(MAKE) --no-print-directory all guest
	$(Q)IPKIT_BIN=$(CURDIR)/$(B)/bin IPKIT_TOP=$(CURDIR) tests/bench/run.sh $(BENCH)

qemu-backports:
	$(Q)examples/lab/ipkit-qemu-backports $(B)/qemu-backports

completions: $(BINS)
	$(Q)completions/generate $(B)/bin $(TOOLS)

# The default model of ip-predict, from the shared Balabit data (skipped,
# with a message, when the data set is absent).
MODEL_DATA ?= ../shared/data/balabit-mouse
model: $(B)/bin/ip-collect $(B)/bin/ip-train
	$(Q)IPKIT_BIN=$(B)/bin MODEL_DATA=$(MODEL_DATA) models/make-model.sh

# The pkg-config file is written at install time from this run's PREFIX,
# LIBDIR and INCLUDEDIR: a copy kept in build/ would go stale when they
# change between two installs.
install: all $(B)/libipkit.a
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR)/ipkit $(DESTDIR)$(PKGCONFIGDIR) \
		$(DESTDIR)$(MANPREFIX)/man1 $(DESTDIR)$(MANPREFIX)/man5 $(DESTDIR)$(MANPREFIX)/man7 \
		$(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR)
	install -m 755 $(BINS) $(DESTDIR)$(BINDIR)/
	install -m 644 $(B)/libipkit.a $(DESTDIR)$(LIBDIR)/
	install -m 644 $(HDRS) $(DESTDIR)$(INCLUDEDIR)/ipkit/
	printf 'prefix=%s\nlibdir=%s\nincludedir=%s\n\nName: ipkit\nDescription: ipkit idle prediction and session migration library\nVersion: %s\nRequires: %s\nLibs: -L$${libdir} -lipkit -lm -lpthread -ldl\nCflags: -I$${includedir}\n' \
		'$(PREFIX)' '$(LIBDIR)' '$(INCLUDEDIR)' '$(VERSION)' '$(PKGS)' > $(DESTDIR)$(PKGCONFIGDIR)/ipkit.pc
	chmod 644 $(DESTDIR)$(PKGCONFIGDIR)/ipkit.pc
	for m in man/*.[157]; do install -m 644 $$m $(DESTDIR)$(MANPREFIX)/man$${m##*.}/; done
	for t in $(TOOLS); do install -m 644 completions/bash/$$t $(DESTDIR)$(BASHCOMPDIR)/$$t; \
		install -m 644 completions/zsh/_$$t $(DESTDIR)$(ZSHCOMPDIR)/_$$t; done
	install -d $(DESTDIR)$(DATADIR)
	install -m 644 models/default.ipkm $(DESTDIR)$(DATADIR)/

uninstall:
	for t in $(TOOLS); do rm -f $(DESTDIR)$(BINDIR)/$$t $(DESTDIR)$(BASHCOMPDIR)/$$t $(DESTDIR)$(ZSHCOMPDIR)/_$$t; done
	for m in man/*.[157]; do rm -f $(DESTDIR)$(MANPREFIX)/man$${m##*.}/$${m##*/}; done
	rm -rf $(DESTDIR)$(LIBDIR)/libipkit.a $(DESTDIR)$(INCLUDEDIR)/ipkit $(DESTDIR)$(PKGCONFIGDIR)/ipkit.pc
	rm -f $(DESTDIR)$(DATADIR)/default.ipkm
	-rmdir $(DESTDIR)$(DATADIR) 2>/dev/null

clean:
	rm -rf $(B)
