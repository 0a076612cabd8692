# Two commands do everything on a fresh machine:
#   make report   generate the synthetic data, run every notebook (default profile),
#                 write figures/ and results/
#   make test     unit tests + notebooks under nbval (smoke profile)
# Both create .venv and install the project into it first.

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL = 3
export TF_FORCE_GPU_ALLOW_GROWTH = true
export PYTHONHASHSEED = 0

.PHONY: report test bench install clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,hed]"
	touch $(STAMP)

report: $(STAMP)
	$(PY) -m scratch_utils report --profile default

test: $(STAMP)
	SCRATCH_PROFILE=smoke $(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/bench_prepare.py
	$(PY) benchmarks/bench_pipeline.py
	$(PY) benchmarks/bench_models.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_inference.py
	$(PY) benchmarks/bench_serve.py
	$(PY) benchmarks/bench_serve.py --run data/default/runs/vgg16_unet

clean-venv:
	rm -rf $(VENV)
