# The README's two commands: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install demo test lint clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10+ is required (found %s)" % sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)   ## Python packages into .venv; JVM jars are fetched on first use into ~/.cache/xact-pipeline

demo: install       ## start a local broker + file server, run the pipeline on sample events, print a summary
	$(BIN)/xact-pipeline demo

test: install       ## the whole suite against a real broker, Spark and Delta
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests; a run that tests nothing is a failure" >&2; fi; \
	exit $$rc

lint: install
	$(BIN)/ruff check pipeline_lib jobs tests
	$(BIN)/mypy

clean:              ## local state of the demo (var/); the JVM cache in ~/.cache/xact-pipeline stays
	rm -rf var spark-warehouse
