# Every target that needs Python creates .venv and installs into it first, so that on a
# fresh machine with only Python 3.11 `make run` and `make test` do all the set-up.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# make run ARGS="--port 9000 --log-level debug": flags for rnn-serve (every setting is one); the
# RNN_SERVE_* environment variables are honoured as they are.
ARGS   ?=
# Python writes its bytecode caches (some environments turn that off): every server process a test
# starts, and pytest's assertion rewriting, then reuse them instead of compiling the sources again.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: run test test-fast fuzz protos docs docs-serve check fmt openapi image container-test bench bench-capacity bench-repository bench-servers bench-publish bench-fairness soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Runtime dependencies only (what the container installs too).
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

# Runtime + test/lint tools.
$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(VENV)/.runtime $@

run: $(VENV)/.runtime
	$(BIN)/rnn-serve $(ARGS)

# The whole suite on two workers (pytest-xdist: every server a test starts takes a free port and
# a folder of its own), with branch coverage of service/ and the client, the server processes the
# tests start included (the floor is set in pyproject.toml), and its 15 slowest tests named.
TEST_WORKERS ?= 2
test: $(VENV)/.dev
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --cov=service --cov=rnn_serve_client --cov-report=term:skip-covered --durations=15 --dist worksteal $(PYTEST_ARGS)

# The fuzz alone, deeper: 200 examples an operation (100 with keys) against the real server, where
# make test draws 25 (FUZZ_EXAMPLES=1000 for a longer hunt). CI runs it after make test.
FUZZ_EXAMPLES ?= 200
fuzz: $(VENV)/.dev
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal -q tests/e2e/test_fuzz.py $(PYTEST_ARGS)

# Triton's vendored protocol files (service/codecs/protos) compiled to the descriptor set the
# gRPC front end loads; a test checks that the committed one is current.
protos: $(VENV)/.dev
	cd service/codecs/protos && ../../../$(BIN)/python -m grpc_tools.protoc -I . --include_imports \
		--descriptor_set_out=triton.binpb grpc_service.proto

# The quick loop: no server process (no redis-server, SeaweedFS, nginx, rnn-serve process, no
# container), no fuzzing, no coverage. The markers come from the fixtures a test takes; a test
# that would start a server anyway fails, saying so (tests/support's may_start).
test-fast: $(VENV)/.dev
	RNN_SERVE_TESTS_START_NO_SERVERS=1 $(BIN)/python -m pytest -q -m "not (e2e or redis or s3 or fuzz or container)" $(PYTEST_ARGS)

# The documentation site (docs/ with mkdocs-material), strict: a broken link fails it.
docs: $(VENV)/.dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: $(VENV)/.dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve -a 127.0.0.1:8002

check: $(VENV)/.dev
	$(BIN)/ruff check service clients tests bench examples tools
	$(BIN)/ruff format --check service clients tests bench examples tools
	$(BIN)/mypy
	$(BIN)/python -m tools.layers >/dev/null || $(BIN)/python -m tools.layers

fmt: $(VENV)/.dev
	$(BIN)/ruff check --fix service clients tests bench examples tools
	$(BIN)/ruff format service clients tests bench examples tools

$(VENV)/.bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(VENV)/.runtime $(VENV)/.dev $@

# Needs wrk (Debian's package); installed here when missing and we are root.
bench: $(VENV)/.bench
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } \
		|| { echo "make bench needs wrk: apt-get install wrk"; exit 1; }
	$(BIN)/python -m bench.run

# Real-time streams within a p99 budget, sessions against stateless (~4 min).
bench-capacity: $(VENV)/.bench
	$(BIN)/python -m bench.capacity

# The HTTP server: rnn-serve's app and a no-op under uvicorn and under granian (needs wrk).
bench-servers: $(VENV)/.bench
	$(BIN)/python -m pip install -q granian
	$(BIN)/python -m bench.servers

# The model repository in a real S3 server (SeaweedFS): client, first use, throughput, lookups.
bench-repository: $(VENV)/.bench
	$(BIN)/python -m bench.repository

# make bench writes bench/out/ (untracked); this makes the last run the committed report.
bench-publish: $(VENV)/.bench
	$(BIN)/python -m bench.run --publish

# Small requests while one 150,000-step forward runs, with and without time slices (~2 min).
bench-fairness: $(VENV)/.bench
	$(BIN)/python -m bench.fairness

# Five minutes of mixed load on the real server: RSS, fds and p99 per 30 s window (not in CI).
soak: $(VENV)/.dev
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

# The CPU image from the Dockerfile: docker if an engine runs, else buildah (deploy/podman/image.sh,
# which makes a Debian base when no registry answers). Installs buildah/podman/runc/mmdebstrap
# from Debian when missing and we are root.
CONTAINER_TOOLS := buildah podman runc mmdebstrap podman-compose
image:
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || command -v buildah >/dev/null \
		|| { [ "$$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(CONTAINER_TOOLS) >/dev/null; } \
		|| { echo "make image needs docker, or: apt-get install $(CONTAINER_TOOLS)"; exit 1; }
	bash deploy/podman/image.sh

# The image for real: healthy, exact, non-root, its volume kept across restarts, SIGTERM drained.
container-test: $(VENV)/.dev image
	$(BIN)/python -m pytest -m container tests/container

openapi: $(VENV)/.runtime
	$(BIN)/python -m service.openapi_export openapi/openapi.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage site
