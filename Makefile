# `make demo` and `make test` work on a fresh Debian machine with Python 3.11:
# they install the Debian packages they need (when missing) and a local venv.
VENV ?= .venv
PYTHON ?= python3
RUNTIME_DEBS := $(shell grep -v '^\#' config/debian-packages.txt)
TEST_DEBS := poppler-utils qpdf openssl libnss3-tools
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: demo test bench debian-runtime debian-test clean

define apt_install
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if ! $(PYTHON) -c 'import ensurepip' >/dev/null 2>&1; then missing="$$missing python3-venv"; fi; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

debian-runtime:
	$(call apt_install,$(RUNTIME_DEBS))

debian-test:
	$(call apt_install,$(RUNTIME_DEBS) $(TEST_DEBS))

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

demo: debian-runtime $(VENV)/.installed
	$(VENV)/bin/archiver demo --dir demo

test: debian-test $(VENV)/.installed
	$(VENV)/bin/pytest -q

bench: debian-runtime $(VENV)/.installed
	$(VENV)/bin/python bench/pipeline.py

clean:
	rm -rf $(VENV) demo .pytest_cache
