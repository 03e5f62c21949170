# The two commands the README names:
#   make demo   install, build the synthetic dataset, run the problem1.lr ablation (quick profile), report it
#   make test   install, run the test suite (CPU, offline, W&B disabled)
# Any CPython 3.10 to 3.13 (make clean install PYTHON=python3.10): pip takes its pins from constraints.txt.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
RUNS   ?= runs
PROFILE ?= quick
ENTRY  ?= problem1.lr
# A PyTorch wheel index for torch/torchvision, e.g. https://download.pytorch.org/whl/cpu for a CPU-only
# build; the rest still comes from PyPI. Unset: pip's configured indexes, untouched. After a CUDA
# install, `make clean install TORCH_INDEX_URL=...` replaces it.
TORCH_INDEX_URL ?=

.PHONY: install demo test lint summary clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL) --extra-index-url https://pypi.org/simple) -e ".[test]"
	touch $@

# problem1.lr builds on the winner of problem1.optimizer: `run` trains that entry first (--no-deps refuses).
demo: install
	$(BIN)/mtl-ablate run $(ENTRY) --profile $(PROFILE) --runs-dir $(RUNS)
	$(BIN)/mtl-ablate report $(ENTRY) --runs-dir $(RUNS) --out reports

# -n auto: one worker per core (pytest-xdist); --dist loadfile keeps a file's tests, and so its module
# fixtures (trained runs shared by several tests), in one worker; --no-loadscope-reorder hands the files out
# in the order tests/conftest.py sorts them (longest first) instead of by their number of tests.
PYTEST := $(BIN)/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder
# The tests' folders (their runs' checkpoints, 160 MB each) in memory where /dev/shm is a writable tmpfs with
# 4 GB free: on a VM's disk, writing and fsyncing them took a third of a tiny training's time. Only the last
# session's failed tests keep their folders (pyproject.toml). TEST_TMPDIR=/tmp make test keeps them on disk.
TEST_TMPDIR ?= $(shell free=$$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 {print $$4}'); \
	if [ -w /dev/shm ] && [ "$${free:-0}" -gt 4000000 ]; then echo /dev/shm; else echo "$${TMPDIR:-/tmp}"; fi)
test: install lint
	TMPDIR=$(TEST_TMPDIR) WANDB_MODE=disabled $(PYTEST)

# The edit loop: everything but the tests marked slow (trainings in subprocesses).
.PHONY: test-fast
test-fast: install
	TMPDIR=$(TEST_TMPDIR) WANDB_MODE=disabled $(PYTEST) -m "not slow"

# The import layers (pyproject.toml [tool.importlinter]), ruff's rules and mypy ([tool.mypy]); part of `make test`.
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

summary: install
	$(BIN)/python -m mtl.models.summary --height 256 --width 512

clean:
	rm -rf $(VENV) .pytest_cache
