# The two commands the README starts with:
#   make demo   set up, then run the main job on the embedded default (SQLite + local folder)
#   make test   set up (with test servers), then lint, type-check and run the whole suite
.PHONY: setup setup-test demo test lint bench

setup:
	bash scripts/setup.sh

setup-test:
	bash scripts/setup.sh --test

demo: setup
	bash scripts/demo.sh

lint: setup-test
	.venv/bin/ruff check vdir cli tests bench
	.venv/bin/mypy

test: lint
	.venv/bin/python -m pytest -q $(PYTEST_ARGS)

bench:
	bash scripts/setup.sh --bench
	.venv/bin/python -m bench.catalog
