# The two commands a newcomer needs: `make run` (local stack + the reconciler) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STACK := $(PYTHON) scripts/stack/stack.py
# The local stack's shape for `make run`, `make test` and `make bench`: Kafka Connect with Debezium (the
# database-change source, about 0.5 GB and 20-40 s more at start) and OpenLDAP federated into the realm.
# `make stack-up STACK_CDC=0 STACK_LDAP=0` starts the smaller shape (the CDC and LDAP tests then fail).
# Only this stack: the reliability suite's stacks keep their own shapes.
STACK_CDC ?= 1
STACK_LDAP ?= 1
# Loads the local stack's settings (written by stack-up) into a recipe's shell.
WITH_STACK_ENV := set -a; . .stack/env; set +a;

.PHONY: help install tools image stack-up stack-down stack-status lint typecheck pytest test run bench bench-scale bench-scale-down reliability reliability-production reliability-production-all reliability-stack-down test-containers test-compat docs clean

help:
	@echo "make run          start the local stack, create demo users, run the reconciler in the foreground"
	@echo "make test         install, start the stack, ruff, mypy, pytest"
	@echo "make stack-up     start Kafka, Keycloak and SecantusDB on 127.0.0.1 (stack-down / stack-status)"
	@echo "make bench        benchmarks (not part of make test)"
	@echo "make bench-scale  the listing at 10,000 / 100,000 / 1,000,000 users on a stack of its own"
	@echo "make reliability  fault-injection suite on a second stack of its own (CI runs it after make test)"
	@echo "make reliability-production  scenarios 9-12 on two Keycloak nodes and three brokers (CI runs it last)"
	@echo "make test-containers  the event-path and full-reconcile tests on containers (testcontainers, podman)"
	@echo "make test-compat  the listener, event path, full reconcile and sweep tests on Keycloak 26.5.6"

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# podman, runc, debootstrap, prometheus + promtool, Go (the tests of the image, rules, metrics and dashboard);
# installs with apt what is missing when run as root, else says what is missing.
tools:
	bash scripts/tools/install.sh

# The reconciler's image, built on a local Debian base (no registry needed); see README "Container image".
image: tools
	LOCAL_BASE=1 scripts/image/build.sh keycloak-user-reconciler:dev

stack-up: install
	STACK_CDC=$(STACK_CDC) STACK_LDAP=$(STACK_LDAP) $(STACK) up

stack-down:
	$(STACK) down

stack-status:
	$(STACK) status

PY_DIRS := $(wildcard reconciler tests scripts bench)

# The layering contract (pyproject.toml [tool.importlinter]) is part of lint: a lower layer importing a higher
# one fails here.
lint: install
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy reconciler

# The fault-injection suite (tests/reliability, its own second stack) runs with `make reliability` and
# `make reliability-production` (CI runs both after `make test`, see .ci/run).
pytest: install
	$(WITH_STACK_ENV) $(BIN)/pytest -m "not reliability" $(PYTEST_ARGS)

test: tools stack-up lint typecheck pytest

run: stack-up
	$(WITH_STACK_ENV) LOG_FORMAT=$${LOG_FORMAT:-console} $(BIN)/python scripts/demo_users.py && \
		LOG_FORMAT=$${LOG_FORMAT:-console} CONSUMER_START_OFFSET=$${CONSUMER_START_OFFSET:-latest} $(BIN)/reconciler run

bench: stack-up
	$(WITH_STACK_ENV) $(BIN)/python -m bench

# The listing at scale (bench/scale.py) on a stack of its own (.stack-scale-<version>/: PostgreSQL, no CDC or
# LDAP; ports 49092/49093, 48080/49100, 27060, 45432 for 26.7.3, 5xxxx and 27061 for any other version, so
# both can run side by side), left running with its realms (one per size), so the next run inserts nothing
# (`make bench-scale-down` stops it). SCALE_KEYCLOAK_VERSION=26.5.6 BENCH_SCALE_PARTS=listings measures the
# previous Keycloak's listing (offset pages only: it has no creation-time filters).
SCALE_KEYCLOAK_VERSION ?= 26.7.3
SCALE_P := $(if $(filter 26.7.3,$(SCALE_KEYCLOAK_VERSION)),4,5)
SCALE_STACK := STACK_STATE_DIR=.stack-scale-$(SCALE_KEYCLOAK_VERSION) \
	STACK_KEYCLOAK_VERSION=$(SCALE_KEYCLOAK_VERSION) STACK_CDC=0 STACK_LDAP=0 STACK_KAFKA_PORT=$(SCALE_P)9092 \
	STACK_KAFKA_CONTROLLER_PORT=$(SCALE_P)9093 STACK_KEYCLOAK_PORT=$(SCALE_P)8080 \
	STACK_KEYCLOAK_MANAGEMENT_PORT=$(SCALE_P)9100 STACK_MONGO_PORT=2706$(subst 4,0,$(subst 5,1,$(SCALE_P))) \
	STACK_POSTGRES_PORT=$(SCALE_P)5432

bench-scale: install
	$(SCALE_STACK) $(STACK) up
	set -a; . .stack-scale-$(SCALE_KEYCLOAK_VERSION)/env; set +a; \
		STACK_KEYCLOAK_VERSION=$(SCALE_KEYCLOAK_VERSION) $(BIN)/python -m bench.scale

bench-scale-down:
	$(SCALE_STACK) $(STACK) down

# Fault injection on a second stack of its own (.stack-reliability/, ports 19092/18080/27018/15432), started and
# stopped by the suite itself: the main stack is never touched. See RELIABILITY.md.
reliability: install
	$(BIN)/pytest -m reliability tests/reliability $(PYTEST_ARGS)

# The production shape (two Keycloak nodes behind the front, three Kafka brokers): `reliability-production`
# runs the scenarios that need it (9-11) or differ on it (12: PostgreSQL under both nodes); CI runs it after
# `make reliability`. `reliability-production-all` runs the whole suite on that shape.
PRODUCTION_SHAPE := RELIABILITY_KEYCLOAK_NODES=2 RELIABILITY_KAFKA_BROKERS=3
PRODUCTION_SCENARIOS := $(addprefix tests/reliability/,test_9_cluster_stale_reads.py test_10_broker_kill.py \
	test_11_keycloak_node_kill.py test_12_postgres_restart.py)

# Its stack has a state folder of its own (.stack-reliability-production/), so switching shapes never reuses
# the other shape's Kafka and Keycloak state.
PRODUCTION_STATE := RELIABILITY_STATE_DIR=$${RELIABILITY_STATE_DIR:-.stack-reliability-production}

reliability-production: install
	$(PRODUCTION_STATE) $(PRODUCTION_SHAPE) $(BIN)/pytest -m reliability $(PRODUCTION_SCENARIOS) $(PYTEST_ARGS)

reliability-production-all: install
	$(PRODUCTION_STATE) $(PRODUCTION_SHAPE) $(BIN)/pytest -m reliability tests/reliability $(PYTEST_ARGS)

# The suite stops its stack itself; this is for a run that was interrupted (or kept with RELIABILITY_KEEP_STACK).
reliability-stack-down:
	STACK_STATE_DIR=$${RELIABILITY_STATE_DIR:-.stack-reliability} $(STACK) down
	STACK_STATE_DIR=$${RELIABILITY_STATE_DIR:-.stack-reliability-production} $(STACK) down

# The testcontainers fixtures on Podman's Docker API, with local images built on the Debian base (no registry
# needed; cached, so a second run only starts containers). CONTAINER_TESTS chooses the tests (by default the
# event-path and full-reconcile modules, wherever the test tree keeps them).
CONTAINER_TESTS ?= $(wildcard tests/test_event_path.py tests/*/test_event_path.py tests/test_reconcile.py \
	tests/*/test_reconcile.py)

test-containers: install tools
	@test -n "$(strip $(CONTAINER_TESTS))" || { echo "CONTAINER_TESTS names no test file" >&2; exit 1; }
	$(BIN)/python scripts/image/container_tests.py $(CONTAINER_TESTS) $(PYTEST_ARGS)

# The compatibility subset on the previous Keycloak (26.5.6: no creation-time filters, so the full reconcile
# takes the offset road) on a small stack of its own (.stack-compat/, H2, no CDC or LDAP, ports 39092/39093,
# 38080/39000, 27040), started and stopped here: the main stack is never touched. CI runs it after make test.
COMPAT_STACK := STACK_STATE_DIR=.stack-compat STACK_KEYCLOAK_VERSION=26.5.6 STACK_KEYCLOAK_DB=h2 \
	STACK_CDC=0 STACK_LDAP=0 STACK_KAFKA_PORT=39092 STACK_KAFKA_CONTROLLER_PORT=39093 \
	STACK_KEYCLOAK_PORT=38080 STACK_KEYCLOAK_MANAGEMENT_PORT=39000 STACK_MONGO_PORT=27040
COMPAT_TESTS := tests/stack/test_stack_smoke.py tests/sources/test_event_path.py tests/fullsync/test_reconcile.py \
	tests/sources/test_sweep.py tests/fullsync/test_listing.py tests/fullsync/test_listing_roads.py

test-compat: install
	$(COMPAT_STACK) $(STACK) up
	set -a; . .stack-compat/env; set +a; status=0; \
		$(BIN)/pytest -m "not reliability" $(COMPAT_TESTS) $(PYTEST_ARGS) || status=$$?; \
		$(COMPAT_STACK) $(STACK) down; exit $$status

docs: install
	$(BIN)/python scripts/gen_docs.py
	$(BIN)/python scripts/gen_monitoring.py

clean: stack-down
	rm -rf $(VENV) .stack .stack-compat .stack-scale-* .pytest_cache .mypy_cache .ruff_cache
