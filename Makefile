# `make run`: set everything up and start the controller. `make test`: set everything up and run
# every test. Both are idempotent: a second run skips what is already done.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The desktop agent's tests need a real X server, input tools, a window manager, fonts and Chromium.
APT_PACKAGES := docker.io golang-github-containers-common debootstrap python3-venv ca-certificates tar postgresql \
	xvfb xdotool openbox xterm x11-utils fonts-dejavu-core chromium python3-tk
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: setup system engine venv images test test-fast run bench lint clean

setup: system engine venv images

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

venv: $(STAMP)
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Python >= 3.11 is needed (found $$($(PYTHON) --version)); set PYTHON=python3.11"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,browser]'
	@rm -f $(VENV)/.installed-* && touch $@

images: venv engine
	$(BIN)/dispatch images build

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
