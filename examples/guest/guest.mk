# guest.mk - builds ipkit's test guest: kernel, busybox initramfs, renderer.
#
# Standalone (from the repository root):  make -f examples/guest/guest.mk
# Included from another makefile:          include examples/guest/guest.mk
#   (it does not change the including makefile's default goal).
#
# Outputs (GUEST_OUT, default build/guest next to examples/):
#   vmlinuz              copy of the newest /boot/vmlinuz-*
#   initramfs.cpio.gz    busybox-static + applet links, init, renderer and the
#                        virtio NIC modules of that kernel (with their deps)
#   renderer-host        host build of the renderer (--frame-checksum)
#   renderer             the static guest build (also inside the initramfs)
#
# Needs only Debian packages: busybox-static linux-image-amd64 cpio gzip gcc
# libc6-dev (xz-utils/zstd only if the kernel's modules are compressed).
# Every variable is prefixed GUEST_ so that it cannot clash with the includer.

GUEST_SAVED_GOAL := $(.DEFAULT_GOAL)
GUEST_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
GUEST_ROOT := $(abspath $(GUEST_DIR)/../..)

GUEST_OUT ?= $(GUEST_ROOT)/build/guest
GUEST_CC ?= gcc
GUEST_CFLAGS ?= -std=c11 -O2 -Wall -Wextra -Werror
GUEST_BUSYBOX ?= /bin/busybox
GUEST_KERNEL ?= $(shell ls -1v /boot/vmlinuz-* 2>/dev/null | tail -n 1)
GUEST_KVER ?= $(patsubst /boot/vmlinuz-%,%,$(GUEST_KERNEL))
GUEST_MODDIR ?= /lib/modules/$(GUEST_KVER)
# Loaded in this order, each after its own dependencies (from modules.dep).
GUEST_MODULES ?= virtio_pci virtio_net

GUEST_STAGE := $(GUEST_OUT)/initramfs

.PHONY: guest guest-clean

guest: $(GUEST_OUT)/vmlinuz $(GUEST_OUT)/initramfs.cpio.gz $(GUEST_OUT)/renderer-host

$(GUEST_OUT)/vmlinuz: $(GUEST_KERNEL)
	@if [ -z "$(GUEST_KERNEL)" ] || [ ! -r "$(GUEST_KERNEL)" ]; then \
		echo "guest.mk: no readable /boot/vmlinuz-* (install linux-image-amd64: make deps)" >&2; \
		exit 1; fi
	@mkdir -p $(@D)
	cp $(GUEST_KERNEL) $@.tmp && mv $@.tmp $@

$(GUEST_OUT)/renderer: $(GUEST_DIR)/renderer.c
	@mkdir -p $(@D)
	$(GUEST_CC) $(GUEST_CFLAGS) -static -o $@ $< -lm

$(GUEST_OUT)/renderer-host: $(GUEST_DIR)/renderer.c
	@mkdir -p $(@D)
	$(GUEST_CC) $(GUEST_CFLAGS) -DIPKIT_RENDERER_HOST -o $@ $< -lm

$(GUEST_OUT)/initramfs.cpio.gz: $(GUEST_OUT)/renderer $(GUEST_DIR)/init $(GUEST_DIR)/guest.mk \
		$(GUEST_KERNEL)
	@set -e; \
	bb="$(GUEST_BUSYBOX)"; \
	if [ ! -x "$$bb" ] || ldd "$$bb" >/dev/null 2>&1; then \
		echo "guest.mk: $$bb is missing or not static (install busybox-static: make deps)" >&2; \
		exit 1; fi; \
	dep="$(GUEST_MODDIR)/modules.dep"; \
	if [ ! -r "$$dep" ]; then \
		echo "guest.mk: $$dep missing (install linux-image-amd64: make deps)" >&2; exit 1; fi; \
	rm -rf "$(GUEST_STAGE)"; \
	mkdir -p "$(GUEST_STAGE)"; cd "$(GUEST_STAGE)"; \
	mkdir -p bin sbin usr/bin usr/sbin proc sys dev tmp lib/modules; \
	cp "$$bb" bin/busybox; \
	for a in $$(bin/busybox --list-full); do \
		[ -e "$$a" ] || ln -s /bin/busybox "$$a"; \
	done; \
	cp "$(abspath $(GUEST_DIR))/init" init; chmod 755 init; \
	cp "$(GUEST_OUT)/renderer" bin/renderer; \
	order=""; \
	for m in $(GUEST_MODULES); do \
		line=$$(awk -v m="$$m" '{ p = $$1; sub(/:$$/, "", p); n = p; sub(/.*\//, "", n); \
			sub(/\.ko(\.[a-z]+)?$$/, "", n); gsub(/-/, "_", n); \
			if (n == m) { print; exit } }' "$$dep"); \
		if [ -z "$$line" ]; then \
			if grep -q "/$$m.ko" "$(GUEST_MODDIR)/modules.builtin" 2>/dev/null; then continue; fi; \
			echo "guest.mk: module $$m not found for kernel $(GUEST_KVER)" >&2; exit 1; fi; \
		self=$${line%%:*}; deps=$${line#*:}; rev=""; \
		for d in $$deps; do rev="$$d $$rev"; done; \
		for d in $$rev $$self; do \
			case " $$order " in *" $$d "*) ;; *) order="$$order $$d" ;; esac; \
		done; \
	done; \
	: > lib/modules/load-order; \
	for p in $$order; do \
		b=$${p##*/}; \
		case "$$b" in \
		*.ko) cp "$(GUEST_MODDIR)/$$p" "lib/modules/$$b" ;; \
		*.ko.xz) b=$${b%.xz}; xz -dc "$(GUEST_MODDIR)/$$p" > "lib/modules/$$b" ;; \
		*.ko.zst) b=$${b%.zst}; zstd -qdc "$(GUEST_MODDIR)/$$p" > "lib/modules/$$b" ;; \
		*.ko.gz) b=$${b%.gz}; gzip -dc "$(GUEST_MODDIR)/$$p" > "lib/modules/$$b" ;; \
		*) echo "guest.mk: cannot handle module $$p" >&2; exit 1 ;; \
		esac; \
		echo "$$b" >> lib/modules/load-order; \
	done; \
	echo "guest.mk: modules: $$(tr '\n' ' ' < lib/modules/load-order)"; \
	find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 | gzip -9n > "$@.tmp"; \
	mv "$@.tmp" "$@"; \
	echo "guest.mk: $@ ($$(wc -c < "$@") bytes, kernel $(GUEST_KVER))"

guest-clean:
	rm -rf $(GUEST_OUT)

# Leave the includer's default goal alone; standalone, "guest" is the default.
ifneq ($(words $(MAKEFILE_LIST)),1)
.DEFAULT_GOAL := $(GUEST_SAVED_GOAL)
endif
