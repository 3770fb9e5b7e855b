# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv,
# install the project and HAProxy (apt-get when root), then do their work.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup haproxy demo test bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

haproxy:
	@command -v haproxy >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing HAProxy with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null; \
	  else \
	    echo "HAProxy is missing: install it (Debian/Ubuntu: sudo apt-get install -y haproxy), then run make again"; \
	    exit 2; \
	  fi; }

setup: $(VENV)/.installed haproxy

demo: setup
	$(PY) -m pytest experiments/ --chaos-report reports/out $(PYTEST_ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) bench/lb_throughput.py
	$(PY) bench/load_logging.py

clean:
	rm -rf $(VENV) reports/out .inferchaos .pytest_cache
