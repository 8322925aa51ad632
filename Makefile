# The README's two commands:
#   make demo   set up .venv, then run the offline demo job (demo assets -> merge -> GGUF -> quantize -> a reply)
#   make test   set up .venv, then run every unit test and execute every notebook in smoke mode, downloading
#               the tiny stand-ins through a local hub twin (notebooks/conftest.py; NOTEBOOK_HUB=offline: no twin)
PY := .venv/bin/python
OUT ?= out/demo
PYTEST_ARGS ?=

.PHONY: setup demo test unit notebooks clean

setup:
	@scripts/setup.sh

demo: setup
	$(PY) -m helpers pipeline --out $(OUT)

unit: setup
	$(PY) -m pytest -q -n 2 --dist loadfile tests $(PYTEST_ARGS)

notebooks: setup
	NOTEBOOK_SMOKE=1 $(PY) -m pytest -q -n 2 --nbmake --nbmake-timeout=900 notebooks $(PYTEST_ARGS)

test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile tests $(PYTEST_ARGS)
	NOTEBOOK_SMOKE=1 $(PY) -m pytest -q -n 2 --nbmake --nbmake-timeout=900 notebooks $(PYTEST_ARGS)

clean:
	rm -rf out .pytest_cache
