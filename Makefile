# `make run`: set everything up and start the controller. `make test`: set everything up and run
# every test. Both are idempotent: a second run skips what is already done.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The libvirt backend: the daemon, QEMU, what builds the VM disk, and what compiles libvirt-python.
VM_PACKAGES := libvirt-daemon-system qemu-system-x86 qemu-utils e2fsprogs libvirt-dev pkg-config \
	gcc python3-dev
# The desktop agent's tests need a real X server, input tools, a window manager, fonts and Chromium.
APT_PACKAGES := docker.io golang-github-containers-common debootstrap python3-venv ca-certificates tar postgresql \
	xvfb xdotool openbox xterm x11-utils fonts-dejavu-core chromium python3-tk \
	$(VM_PACKAGES)
EXTRAS := test,browser,libvirt
STAMP := $(VENV)/.installed-$(shell (cat pyproject.toml; echo $(EXTRAS)) | sha1sum | cut -c1-12)

.PHONY: setup system engine libvirtd venv images test test-fast run bench lint clean

setup: system engine libvirtd venv images

# System packages: installed with apt when root on Debian; otherwise say what is missing.
system:
	@missing=""; \
	for pkg in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -z "$$missing" ]; then echo "system packages: present"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
	  echo "missing system packages:$$missing"; \
	  echo "install them (on Debian/Ubuntu: sudo apt-get install$$missing; elsewhere: Docker Engine," \
	       "debootstrap and Python >= 3.11 with venv), then run make again"; \
	  exit 1; \
	fi

# The Docker engine: started when none answers (systemd if it runs, else dockerd in the background).
engine:
	@if docker info >/dev/null 2>&1; then echo "docker engine: running"; exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "the Docker engine is not reachable; start it (sudo systemctl start docker) or add"; \
	  echo "yourself to the docker group, then run make again"; exit 1; fi; \
	echo "starting the docker engine"; \
	if [ -d /run/systemd/system ]; then systemctl start docker; \
	else nohup dockerd >/var/log/dockerd.log 2>&1 & fi; \
	for i in $$(seq 60); do docker info >/dev/null 2>&1 && { echo "docker engine: running"; exit 0; }; sleep 1; done; \
	echo "dockerd did not answer within 60 s; see /var/log/dockerd.log"; exit 1

# libvirtd, started when none answers (systemd if it runs, else the daemons in the background).
# Without udev, /dev/kvm keeps the kernel's root-only mode, and libvirt then finds KVM usable
# when it probes QEMU but not when it checks its cache, so it probes again (a minute) on every
# connection: give /dev/kvm the mode Debian's udev rule gives it. QEMU runs as the sandbox
# user (a per-domain label), which must reach its domain's folder in /var/lib/libvirt/qemu.
libvirtd:
	@if [ "$$(id -u)" = 0 ]; then \
	  if [ -c /dev/kvm ] && [ ! -d /run/systemd/system ]; then chgrp kvm /dev/kvm && chmod 0666 /dev/kvm; fi; \
	  if [ -d /var/lib/libvirt/qemu ]; then chmod o+x /var/lib/libvirt/qemu; fi; \
	fi; \
	if virsh -c qemu:///system version >/dev/null 2>&1; then echo "libvirtd: running"; exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "libvirtd is not reachable; start it (sudo systemctl start libvirtd) or add yourself"; \
	  echo "to the libvirt group, then run make again"; exit 1; fi; \
	echo "starting libvirtd"; \
	if [ -d /run/systemd/system ]; then systemctl start libvirtd; \
	else virtlogd -d; libvirtd -d; fi; \
	for i in $$(seq 60); do virsh -c qemu:///system version >/dev/null 2>&1 && { echo "libvirtd: running"; exit 0; }; sleep 1; done; \
	echo "libvirtd did not answer within 60 s; see /var/log/libvirt/"; exit 1

venv: $(STAMP)
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Python >= 3.11 is needed (found $$($(PYTHON) --version)); set PYTHON=python3.11"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
	@# Compiled now, as pip does for what it installs: an editable install's modules would
	@# otherwise be compiled on every start where PYTHONDONTWRITEBYTECODE is set.
	$(BIN)/python -m compileall -q controller sandbox computer_use >/dev/null
	@rm -f $(VENV)/.installed-* && touch $@

images: venv engine libvirtd
	$(BIN)/dispatch images build
	$(BIN)/dispatch images build --vm

test: setup
	$(BIN)/pytest -q

test-fast: venv
	$(BIN)/pytest -q -m "not docker"

run: setup
	$(BIN)/dispatch serve

bench: setup
	$(BIN)/python bench/sandbox_start.py

lint: venv
	$(BIN)/ruff check sandbox computer_use controller tests bench
	$(BIN)/ruff format --check sandbox computer_use controller tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
