# The two commands the README opens with: `make demo` and `make test`. Each sets itself up.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements-lock.txt 2>/dev/null | cksum | cut -d' ' -f1)
# CPU runs here have 2 cores; more threads than cores only adds contention.
export OMP_NUM_THREADS ?= 2

.PHONY: venv demo test test-slow test-gpu lint bench clean

$(STAMP):
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/ssmkit demo

test: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-slow: venv
	$(BIN)/python -m pytest -q -m slow

test-gpu: venv
	$(BIN)/python -m pytest -q -m gpu

bench: venv
	$(BIN)/ssmkit bench scan --cpu

clean:
	rm -rf $(VENV) runs .pytest_cache
