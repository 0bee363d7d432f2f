# defectdet — the two commands a fresh machine needs are `make demo` and `make test`.
# Everything is installed into .venv by this file; nothing is assumed to be on the machine but python3.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# torch goes in first, pinned to the builds that match torchvision (a plain `pip install ultralytics`
# would otherwise pick a torch of its own). Override TORCH_SPEC for your workstation's CUDA build.
ARCH := $(shell uname -m)
ifeq ($(ARCH),aarch64)
TORCH_SPEC ?= torch==2.9.1 torchvision==0.24.1
else
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
endif

.PHONY: venv demo test test-fast lint docs bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[train,edge,station,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/defectdet demo

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check defectdet tests bench deploy
	$(VENV)/bin/ruff format --check defectdet tests bench deploy

# The user guide (docs/, mkdocs.yml) -> site/; --strict: a broken link or anchor fails. settings.md and
# configs/inspect.yaml are written from defectdet/settings first.
docs: $(STAMP)
	$(PY) -m defectdet.settings.render
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf runs .pytest_cache .ruff_cache
