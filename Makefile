# The two commands of the README:
#   make demo   set everything up from scratch and run the main job end to end
#   make test   run the whole test suite against the real services (what .ci/run calls)
# Everything is installed by these targets: a Python venv (uv, from PyPI), and on first
# `infra up` the Kafka and Spark jars (Maven Central), MinIO (Go module proxy), Postgres+pgvector
# (PyPI wheel) and Redis.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: bootstrap demo test bench lint up down status clean

bootstrap: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m pip install -q --disable-pip-version-check "uv==0.13.9"
	@[ -x $(BIN)/python ] || uv venv -q -p 3.11 $(VENV)
	uv pip install -q -p $(VENV) -r requirements.lock
	uv pip install -q -p $(VENV) --no-deps -e .
	# recbole's wheel ships the real MovieLens-100k (read as data only; --no-deps skips its torch stack)
	uv pip install -q -p $(VENV) --no-deps recbole==1.2.1
	@touch $@

demo: bootstrap
	$(BIN)/lambdarec demo

test: bootstrap
	@bash infra/run-tests.sh $(PYTEST_ARGS)

bench: bootstrap
	$(BIN)/python -m benchmarks.run_all $(BENCH_ARGS)

lint: bootstrap
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

up: bootstrap
	$(BIN)/lambdarec infra up

down:
	$(BIN)/lambdarec infra down

status:
	$(BIN)/lambdarec infra status

clean: down
	rm -rf var
