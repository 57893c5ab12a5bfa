# Two commands on a fresh machine: `make run` (the platform on :3000) and `make test` (everything CI runs).
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
UV    := $(VENV)/bin/uv
CLI   := $(VENV)/bin/coder-platform

.PHONY: bytecode run up test lint typecheck audit check bench tools install system-deps migrate clean

# UV_SYSTEM_CERTS: the registries may sit behind a proxy whose CA only the system store has.
# UV_COMPILE_BYTECODE: compiled once here, not at every start (with PYTHONDONTWRITEBYTECODE set, every
# start would compile the dependencies again: most of `run --target all`'s time to ready). The
# project's own modules too (`bytecode`, before each run: a tenth of the CPU until ready otherwise).
$(VENV)/.installed: pyproject.toml uv.lock Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv==0.13.9
	UV_SYSTEM_CERTS=1 UV_COMPILE_BYTECODE=1 UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --quiet
	touch $@

bytecode: install
	$(PY) -m compileall -q -j 0 -x '/\.(venv|pkg)/' .

install: $(VENV)/.installed  ## Create the virtualenv and install the locked dependencies

migrate: bytecode  ## Migrate every target (embedded PostgreSQL unless DATABASE_URL is set)
	$(CLI) migrate

run: migrate  ## The whole platform in one process on http://127.0.0.1:3000
	$(CLI) run --target all

up: bytecode  ## Every target as its own process against real PostgreSQL, Redis and RabbitMQ
	$(CLI) up

system-deps:  ## Debian packages the tests start: redis-server, rabbitmq-server, nginx
	bash tools/system-deps.sh

tools:  ## etcd, kube-apiserver, kube-controller-manager, kubectl, helm built from Go modules (cached)
	bash tools/build-k8s.sh

lint: install  ## ruff, and the import layers of pyproject.toml's [tool.importlinter]
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: install
	$(VENV)/bin/mypy

# The locked dependencies (every group) against PyPI's advisories; fails on any known vulnerability.
# A dependency the service cannot answer for is reported, not fatal (a registry mirror may not
# serve the per-version documents the check needs).
audit: install  ## Known vulnerabilities in the locked dependencies
	UV_SYSTEM_CERTS=1 $(UV) export --frozen --all-groups --no-emit-project --format requirements-txt \
		| $(VENV)/bin/pip-audit --requirement /dev/stdin --disable-pip --no-deps --vulnerability-service pypi --progress-spinner off

test: install system-deps tools lint typecheck audit  ## Everything CI runs
	$(VENV)/bin/pytest -q

bench: bytecode system-deps  ## Side-by-side benchmarks; prints ratios, then one table against the goals
	$(PY) -P -m coder.bench

clean:
	rm -rf $(VENV) .data
