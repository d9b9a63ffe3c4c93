# strata: build, install, test, demo.  Run as root on a Debian machine for install/test/demo.
PREFIX ?= /usr/local
CARGO  ?= cargo
HOST   := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
ENGINE_BIN  := target/release/strata
STARTER_BIN := target/$(HOST)/release/strata-starter

# What the project needs from Debian: image tools, mount tools, user tools, static libc,
# and a static busybox for the images the end-to-end tests build.
DEB_PACKAGES := squashfs-tools e2fsprogs util-linux mount passwd libc6-dev make file busybox-static
# What the benchmarks compare against.
BENCH_PACKAGES := bubblewrap hyperfine charliecloud-runtime squashfuse fuse2fs fuse-overlayfs

.PHONY: all deps bench-deps build install install-files test lint demo bench clean

all: build

deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

bench-deps:
	@$(MAKE) -s deps DEB_PACKAGES="$(BENCH_PACKAGES)"

# The engine is an ordinary binary; the starter is linked statically so that no dynamic
# loader ever runs setuid (--target keeps the static flag away from build scripts).
build:
	$(CARGO) build --release -p strata
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release -p strata-starter --target $(HOST)

install: build install-files

# Install the layout others rely on: bin/strata, libexec/strata/strata-starter (root:root 4755),
# etc/strata/strata.conf (kept if it already exists, as an admin's edits must survive).
install-files:
	install -d -m 0755 $(PREFIX)/bin $(PREFIX)/libexec/strata $(PREFIX)/etc/strata $(PREFIX)/var/strata/session
	install -m 0755 $(ENGINE_BIN) $(PREFIX)/bin/strata
	install -m 0755 $(STARTER_BIN) $(PREFIX)/libexec/strata/strata-starter
	@if [ ! -e $(PREFIX)/etc/strata/strata.conf ]; then install -m 0644 config/strata.conf $(PREFIX)/etc/strata/strata.conf; fi
	@# The action shell: a static POSIX sh (Debian's busybox-static) that runs the action script
	@# from the host's page cache. Optional: without it the image's own /bin/sh is used.
	@if [ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q 'statically linked'; then \
	  install -m 0755 /bin/busybox $(PREFIX)/libexec/strata/sh; fi
	@if [ "$$(id -u)" = 0 ]; then \
	  chown root:root $(PREFIX)/libexec/strata/strata-starter $(PREFIX)/etc/strata/strata.conf && \
	  chmod 4755 $(PREFIX)/libexec/strata/strata-starter; \
	else echo "WARNING: not root: strata-starter installed without the setuid bit"; fi

test: deps build
	$(CARGO) test --release --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --workspace -- -D warnings

demo: deps build
	@sh ./demo.sh

bench: deps bench-deps build
	@for b in bench/*.sh; do [ "$$b" = bench/lib.sh ] && continue; echo "== $$b"; sh "$$b" || exit 1; done

clean:
	$(CARGO) clean
