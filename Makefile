# The two commands a newcomer needs: `make run` and `make test`.
# uv is bootstrapped from PyPI into .tools/ when it is not on PATH, so a fresh machine
# with only python3 can run both.

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
HOST ?= 127.0.0.1
PORT ?= 8080
DATA_DIR ?= ./data

.PHONY: run test lint typecheck check openapi sync clean bench bench-large bench-large-s3 bench-dimse system-deps

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-groups
	touch $@

sync: .venv/.synced

## Start the service on the embedded default (local files + SQLite under ./data).
run: .venv/.synced
	.venv/bin/python -m service serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

# The API suites run a second time against S3 + DynamoDB (a moto server the tests start);
# test_qido.py already runs every search on both indexes in the first pass.
AWS_API_TESTS := tests/test_stow.py tests/test_wado.py tests/test_dicomweb_client.py \
	tests/test_bulkdata.py tests/test_frames.py tests/test_transcode.py \
	tests/test_metadata_cache.py tests/test_rendered.py tests/test_cors.py \
	tests/test_browser_cors.py tests/test_workers.py

## Debian packages the tests use as peers (DCMTK, Chromium); installs what is missing.
system-deps:
	sh scripts/system-deps.sh

## Install what the tests need, then lint, type-check and run every test.
test: .venv/.synced system-deps
	.venv/bin/ruff check service tests scripts bench
	.venv/bin/ruff format --check service tests scripts bench
	.venv/bin/mypy
	.venv/bin/python -m pytest
	TEST_BACKEND=aws .venv/bin/python -m pytest $(AWS_API_TESTS)

lint: .venv/.synced
	.venv/bin/ruff check service tests scripts bench
	.venv/bin/ruff format --check service tests scripts bench

typecheck: .venv/.synced
	.venv/bin/mypy

## Regenerate openapi/openapi.json from the code (a test fails when it drifts).
openapi: .venv/.synced
	.venv/bin/python -m service openapi > openapi/openapi.json

## STOW and retrieve a generated 2 GB multi-frame instance, reporting the server's peak RSS.
bench-large: .venv/.synced
	.venv/bin/python scripts/large_instance.py

## The same on the S3 backend (a moto server started for it), checking the multipart parts.
bench-large-s3: .venv/.synced
	.venv/bin/python scripts/large_instance.py --backend s3

## Benchmark against Orthanc on this machine (default corpus; PROFILE=tiny for 100k tiny).
PROFILE ?= default
RUNS ?= 1
WORKERS ?= $(shell nproc)
bench: .venv/.synced
	.venv/bin/python bench/compare.py --profile $(PROFILE) --runs $(RUNS) --workers $(WORKERS)

## C-STORE throughput: storescu of 500 x 512 KB instances into the sidecar and into Orthanc.
bench-dimse: .venv/.synced system-deps
	.venv/bin/python scripts/dimse_bench.py

clean:
	rm -rf .venv .tools .pytest_cache .mypy_cache .ruff_cache
