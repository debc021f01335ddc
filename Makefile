# LLMs from Scratch: `make lab` to learn, `make test` to check everything, `make run` for the main job.
# Each target creates the local virtual environment .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Which PyTorch to install before everything else. The default pin is a CPU wheel on our CI
# machines; on your own machine choose a build, e.g.
#   make setup TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"     (CPU only)
#   make setup TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cu126"   (CUDA 12.6)
TORCH_SPEC     ?= torch==2.13.0
TORCH_PIP_ARGS ?=
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))

.PHONY: setup lab test run lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install --quiet -e ".[notebooks,dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

# JupyterLab refuses to run as root (containers often do) unless told so explicitly.
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)
lab: setup
	$(BIN)/jupyter lab $(LAB_ARGS) notebooks/

test: setup
	$(BIN)/ruff check llmhelpers tests benchmarks conftest.py
	$(BIN)/python -m pytest

# The main job: execute every notebook in order; executed copies and HTML land in build/.
run: setup
	mkdir -p build
	for nb in $(NOTEBOOKS); do \
	  $(BIN)/jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=900 \
	    --output-dir build "$$nb" || exit 1; \
	  $(BIN)/jupyter nbconvert --to html --output-dir build "build/$$(basename $$nb)" || exit 1; \
	done

lint: setup
	$(BIN)/ruff check llmhelpers tests benchmarks conftest.py

bench: setup
	for script in benchmarks/*.py; do $(BIN)/python "$$script" || exit 1; done

clean:
	rm -rf build $(VENV)
