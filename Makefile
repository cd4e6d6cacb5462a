# The two commands of the README. Both set up .venv first (created on first use, reused after).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: env run test
env:
	VENV=$(VENV) bash scripts/setup_env.sh

# Main job: PCL's continual pipeline on ml-100k (shipped inside RecBole).
run: env
	$(PY) run_recbole_pcl.py --model=PCL --dataset=ml-100k

# Tests, after the linter and the formatter check (ruff.toml); one pytest worker per core.
test: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -n auto --dist loadgroup tests
