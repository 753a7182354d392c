# Two commands for a fresh Debian machine with Python 3.11: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

NATIVE := setup.py $(wildcard src/tonebridge/_native/*.c src/tonebridge/_native/*.h)

.PHONY: run cluster test peers toolchain docs lint bench-sip bench-mixer bench-rtp bench-flood bench-soak bench-dtmf bench-fuzz bench-api clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { $(SUDO) apt-get update && $(SUDO) apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip

# pip builds the media plane's native core (src/tonebridge/_native) with the system's C compiler.
$(VENV)/.installed: $(BIN)/python pyproject.toml $(NATIVE) | toolchain
	$(BIN)/pip install -q -e .
	touch $@

# A C compiler and the Python headers, from Debian when missing.
toolchain:
	@command -v cc >/dev/null && $(PYTHON) -c 'import os, sys, sysconfig; \
	  sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' || { \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q build-essential python3-dev; }

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/tonebridge serve

# A cluster on this machine (docs/cluster.md): Redis, one node per core, Kamailio as the SIP entry
# (127.0.0.1:5060) and HAProxy as the HTTP entry (127.0.0.1:8080), state in ./cluster; it keeps running after
# make returns: `$(BIN)/tonebridge cluster status`, `$(BIN)/tonebridge cluster down`. CLUSTER_ARGS for options.
cluster: $(VENV)/.installed peers
	$(BIN)/tonebridge cluster up $(CLUSTER_ARGS)

# The real peers the integration tests drive: SIPp and baresip, espeak-ng for text to speech, and
# headless Chromium with its WebDriver for the console's browser test; Redis, Kamailio (with its Redis
# modules) and HAProxy for `make cluster` and its test (Debian packages).
peers:
	@command -v sipp >/dev/null && command -v baresip >/dev/null && command -v espeak-ng >/dev/null && \
	  command -v chromium >/dev/null && command -v chromedriver >/dev/null && \
	  command -v redis-server >/dev/null && [ -x /usr/sbin/kamailio ] && [ -x /usr/sbin/haproxy ] && \
	  dpkg -s kamailio-redis-modules >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q sip-tester baresip espeak-ng \
	    chromium chromium-driver redis-server kamailio kamailio-redis-modules haproxy; }

test: $(VENV)/.installed-test peers
	$(BIN)/pytest -q

# The documentation site (mkdocs, Material theme) into site/; --strict turns every warning (a broken
# link, a page missing from the navigation) into a failure.
docs: $(VENV)/.installed-test
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench-sip: $(VENV)/.installed-test peers
	$(BIN)/python bench/sip_load.py

# The server's real conference tick, pinned to one core (docs/benchmarks.md).
bench-mixer: $(VENV)/.installed-test
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 taskset -c 1 $(BIN)/python bench/mixer.py

# The media plane under load: N conference legs streaming from SIPp, the server on core 0, SIPp on core 1;
# table on stdout, plot in bench/out/ (docs/benchmarks.md). About 5 minutes. matplotlib only for the plot,
# installed here rather than as a project dependency.
bench-rtp: $(VENV)/.installed peers
	@$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/pip install -q matplotlib
	$(BIN)/python bench/rtp_load.py $(RTP_ARGS)

# An INVITE flood from one source (SIPp's uac, 500/s for 8 s) against the server with an application and its
# default [limits], the server on core 0 and SIPp on core 1; a caller from 127.0.0.2 in the middle of it, a
# steady call through it, and the calls left up a minute later (docs/benchmarks.md). About 90 s; exits 1 when
# the other caller waits over 10 s or a call is still up. FLOOD_ARGS for other rates or limits.
bench-flood: $(VENV)/.installed peers
	$(BIN)/python bench/sip_flood.py $(FLOOD_ARGS)

# The soak: 300 churning conference participants with presses, callouts and kicks for 30 minutes, the server
# on core 0 and SIPp on core 1; memory, file descriptors, tasks, ports and store size must stay flat
# (docs/benchmarks.md). About 32 minutes; SOAK_ARGS for other sizes.
bench-soak: $(VENV)/.installed peers
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

# Every fuzz target (SIP, SDP, RTP/RTCP/RFC 4733 and the native plane, SVAML) for 10 minutes each with
# atheris, installed here rather than as a project dependency (docs/benchmarks.md).
bench-fuzz: $(VENV)/.installed-test
	@$(BIN)/python -c 'import atheris' 2>/dev/null || $(BIN)/pip install -q atheris
	$(BIN)/python bench/fuzz.py --all --seconds 600

# Schemathesis over the served OpenAPI document, signed requests, positive and negative cases for every
# operation: zero 5xx and every 4xx in the Sinch error format (docs/benchmarks.md).
bench-api: $(VENV)/.installed-test
	$(BIN)/python bench/api_fuzz.py --examples 300 --seconds 300

clean:
	rm -rf $(VENV) data

# The DTMF detector against the shared bench (Q.24, Mitel, talk-off); about 4 minutes (docs/dtmf.md).
bench-dtmf: $(VENV)/.installed-test
	$(BIN)/python bench/dtmf_quality.py --holdout
