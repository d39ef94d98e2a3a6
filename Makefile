# Two commands set up everything on a fresh machine: `make demo` and `make test`.
# A virtual environment is created in $(VENV); nothing is installed outside it.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/unlearn-kb
# torch first, pinned, so that a CPU machine takes the CPU build instead of a multi-GB CUDA one.
# GPU users: `make install TORCH="torch --index-url https://download.pytorch.org/whl/cu128"`,
# or create $(VENV) with their own torch beforehand (an existing torch is kept).
TORCH ?= torch==2.13.0
export HF_HUB_DISABLE_PROGRESS_BARS := 1
export NO_MKDOCS_2_WARNING := 1

.PHONY: install demo test test-fast lint docs bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[run,docs,test]"
	touch $@

install: $(VENV)/.installed

demo: install
	@echo "== Which methods intend to remove knowledge, and which were seen to only suppress it?"
	$(CLI) query --intent removal --observed suppression-like
	$(CLI) stats
	$(CLI) show npo
	$(CLI) cite npo --format bibtex
	@echo "== Unlearning on the embedded toy world (trains the tiny models once, then cached)"
	rm -rf runs/demo-npo
	$(CLI) run npo --out runs/demo-npo
	@echo "== Is the knowledge gone, or only hidden? Measured against the reference model"
	$(CLI) eval runs/demo-npo

test: install
	$(VENV)/bin/ruff check src methods tests benchmarks
	$(PY) -m pytest -q -ra

test-fast: install
	$(PY) -m pytest -q -m "not slow and not browser"

lint: install
	$(VENV)/bin/ruff check src methods tests benchmarks

docs: install
	$(CLI) docs build

bench: install
	$(PY) benchmarks/cold_start.py

clean:
	rm -rf build dist site runs test-artifacts docs/generated .pytest_cache
