# The two commands the README opens with: `make demo` and `make test`. Each sets itself up.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# pyproject.toml holds ranges; constraints.txt the exact versions CI tests with.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt 2>/dev/null | cksum | cut -d' ' -f1)
# CPU runs here have 2 cores; more threads than cores only adds contention.
export OMP_NUM_THREADS ?= 2
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: venv system-data demo test test-host test-slow test-gpu lint bench clean

$(STAMP):
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[all,test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

# Debian packages that ship the real data some tests evaluate on (scripts/install_system_data.sh).
system-data:
	@scripts/install_system_data.sh

demo: venv
	$(BIN)/ssmkit demo

lint: venv
	$(BIN)/ruff check core apps tests

test: venv system-data lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The numerics tests once more on torch's portable CPU kernels: results must not depend on the
# host's vector unit (AVX-512, AVX2 or none).
test-host: venv
	ATEN_CPU_CAPABILITY=default $(BIN)/python -m pytest -q -p no:cacheprovider tests/core/ops tests/core/layers

test-slow: venv system-data
	$(BIN)/python -m pytest -q -m slow

test-gpu: venv
	$(BIN)/python -m pytest -q -m gpu

bench: venv
	$(BIN)/ssmkit bench scan --cpu

clean:
	rm -rf $(VENV) runs .pytest_cache
