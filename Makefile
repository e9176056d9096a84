# Two commands: `make demo` and `make test`. Both set up .venv on first use; re-runs skip the
# install unless pyproject.toml changed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
DEMO_SPEC ?= configs/studies/cpu-fashion-mnist.yaml
SCALING_SPEC ?= configs/studies/cpu-fashion-mnist-scaling.yaml
# 2 runs at once (the local executor gives each 1 of the 2 cores); the spec's bill assumes this.
SCALING_PARALLEL ?= 2
# Intra-op threads of the demo: float sums depend on the thread count, so a pinned count gives every
# machine the same table (1 thread instead of 2 moved one run's APGD-CE accuracy by 4 points).
DEMO_THREADS ?= 2
PYTEST_ARGS ?=
FLOORS_VENV ?= .venv-floors
FLOOR_PACKAGES ?= torch torchvision timm pyautoattack pandas sqlalchemy
FLOOR_TESTS ?= tests/models tests/tasks tests/attacks tests/scaling tests/store tests/evaluation/test_core.py

.PHONY: install test test-floors demo scaling-study fashion-mnist clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]' 2>&1 | grep -v "is ignored: it is neither" || true
	@$(PY) -c "import robustscale, torch, timm" || { echo "install failed"; exit 1; }
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

# The declared floors (pyproject's `>=`) of FLOOR_PACKAGES, then a fast part of the suite (~1 min).
# $(FLOORS_VENV) sees $(VENV)'s packages under its own (a .pth file after its site-packages), so only
# what differs from $(VENV) is installed: the floors, and what they need that $(VENV) lacks.
test-floors: $(STAMP)
	@test -x $(FLOORS_VENV)/bin/python || $(PYTHON) -m venv $(FLOORS_VENV)
	@$(FLOORS_VENV)/bin/python -c "import sys, sysconfig; open(sysconfig.get_paths()['purelib'] + \
	  '/_robustscale_base.pth', 'w').write(sys.argv[1] + '\n')" "$$($(PY) -c "import sysconfig; \
	  print(sysconfig.get_paths()['purelib'])")"
	@$(FLOORS_VENV)/bin/pip install --quiet --disable-pip-version-check $$($(PY) scripts/floors.py \
	  $(FLOOR_PACKAGES)) >$(FLOORS_VENV)/install.log 2>&1 || { cat $(FLOORS_VENV)/install.log; exit 1; }
	@$(FLOORS_VENV)/bin/python scripts/floors.py --check $(FLOOR_PACKAGES)
	PYTHONPATH=src $(FLOORS_VENV)/bin/python -m pytest -q -p no:cacheprovider $(FLOOR_TESTS) -k 'not slow'

# The Debian package `dataset-fashion-mnist` puts the IDX files in $(FASHION_MNIST_DIR).
fashion-mnist:
	@if [ ! -d "$(FASHION_MNIST_DIR)" ] && [ -z "$$ROBUSTSCALE_DATA" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian package dataset-fashion-mnist"; \
	    (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null)) || \
	    { echo "could not install dataset-fashion-mnist; set ROBUSTSCALE_DATA to a folder with the Fashion-MNIST IDX files, or run: $(VENV)/bin/robustscale datasets --download"; exit 2; }; \
	  else \
	    echo "Fashion-MNIST not found in $(FASHION_MNIST_DIR): install the Debian/Ubuntu package dataset-fashion-mnist, set ROBUSTSCALE_DATA, or run: $(VENV)/bin/robustscale datasets fashion_mnist --download"; exit 2; \
	  fi; \
	fi

demo: $(STAMP) fashion-mnist
	OMP_NUM_THREADS=$(DEMO_THREADS) $(VENV)/bin/robustscale study $(DEMO_SPEC) --executor inline

# The scaling study (about 2 h on 2 cores; resumable: a re-run trains only what is missing): the bill first,
# then the grid, its evaluations and fits, the planned run with 3 seeds, and docs/scaling-study.md.
scaling-study: $(STAMP) fashion-mnist
	$(VENV)/bin/robustscale study $(SCALING_SPEC) --bill
	OMP_NUM_THREADS=$(DEMO_THREADS) $(VENV)/bin/robustscale study $(SCALING_SPEC) --executor local --max-parallel $(SCALING_PARALLEL)

clean:
	rm -rf $(VENV) $(FLOORS_VENV) build *.egg-info src/*.egg-info .pytest_cache
