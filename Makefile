# Two commands do everything on a fresh machine:
#   make report   generate the synthetic data, run every notebook (default profile),
#                 write figures/ and results/
#   make test     every test: unit tests, trainings, the app, each notebook under nbval from
#                 the built wheel (smoke profile); what CI runs
# Both create .venv and install the project into it first, at the versions in constraints.txt.
#   make test-fast  the tests without notebooks, trainings past a few steps or servers: one to two
#                   minutes, for the edit-test loop

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL = 3
export TF_FORCE_GPU_ALLOW_GROWTH = true
export PYTHONHASHSEED = 0

.PHONY: report test test-fast bench install clean-venv constraints

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,hed]"
	touch $(STAMP)

report: $(STAMP)
	$(PY) -m scratch_utils report --profile default

# One worker per core (pytest-xdist): the notebooks and trainings are mostly single-threaded
# Python at the smoke profile's sizes, so two run side by side on a 2-core machine.
test: $(STAMP)
	SCRATCH_PROFILE=smoke $(PY) -m pytest -n auto --dist worksteal

test-fast: $(STAMP)
	SCRATCH_PROFILE=smoke $(PY) -m pytest -q -m "not slow"

# Pin what is installed now (after an upgrade that the committed results were re-made with).
constraints: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | grep -v '^scratch-utils' > constraints.txt

bench: $(STAMP)
	$(PY) benchmarks/bench_prepare.py
	$(PY) benchmarks/bench_pipeline.py
	$(PY) benchmarks/bench_models.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_throughput.py
	$(PY) benchmarks/bench_precision.py
	$(PY) benchmarks/bench_inference.py
	$(PY) benchmarks/bench_serve.py

clean-venv:
	rm -rf $(VENV)
