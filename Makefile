# The README's two commands: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install demo test test-drills test-spark35 notebooks lint clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found %s)" % sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)   ## Python packages into .venv; JVM jars are fetched on first use into ~/.cache/xact-pipeline

demo: install       ## start a local broker + file server, run the pipeline on sample events, print a summary
	$(BIN)/xact-pipeline demo

SPARK35 ?= 1
test: install       ## the whole suite against a real broker, Spark and Delta (drills apart), then the Spark 3.5 check (SPARK35=0 skips it)
	@$(BIN)/python -m pytest -m "not drill" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests; a run that tests nothing is a failure" >&2; fi; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; \
	if [ "$(SPARK35)" = 1 ]; then $(MAKE) --no-print-directory test-spark35; fi

# The drills: the whole pipeline on a real broker and Spark (a standalone cluster for some) while
# things fail; each prints what it injected, what it checked, its counts and its wall time.
test-drills: install
	@$(BIN)/python -m pytest -m drill -s -p no:randomly tests/drills $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no drills" >&2; fi; exit $$rc

# Spark 3.5 (Fabric Runtime 1.3) compatibility of the retry scheduler: its own venv outside the
# clone, pyspark 3.5.7 and its Kafka connector from Maven Central (Spark's Ivy, ~/.ivy2) on first run
# (3.5.8 and 3.5.9 connectors are not on Maven Central).
SPARK35_VENV ?= $(or $(XACT_CACHE_DIR),$(HOME)/.cache/xact-pipeline)/venv-spark35
SPARK35_PKGS := 'pyspark==3.5.7' 'pandas>=2.2,<2.3' 'pyarrow>=17' 'pydantic>=2.7,<3' 'PyYAML>=6,<7' \
	'orjson>=3.10,<4' 'requests>=2.32,<3' 'confluent-kafka==2.16.1' 'pytest>=8,<10' pytest-timeout
SPARK35_STAMP = $(SPARK35_VENV)/.installed-$(shell echo "$(SPARK35_PKGS)" | cksum | cut -d' ' -f1)
test-spark35:
	@test -f $(SPARK35_STAMP) || { $(PYTHON) -m venv $(SPARK35_VENV) && \
		$(SPARK35_VENV)/bin/python -m pip install --quiet $(SPARK35_PKGS) && touch $(SPARK35_STAMP); }
	$(SPARK35_VENV)/bin/python -m pytest tests/compat -p no:cacheprovider   # the clone is on sys.path (cwd)

notebooks: install  ## execute every analyst notebook against the local tables (make demo first) into var/reports/*.html
	$(BIN)/xact-pipeline notebooks --out var/reports

lint: install
	$(BIN)/ruff check pipeline_lib jobs tests
	$(BIN)/mypy

clean:              ## local state of the demo (var/); the JVM cache in ~/.cache/xact-pipeline stays
	rm -rf var spark-warehouse
