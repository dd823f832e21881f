# The README's two commands: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install demo test test-drills test-compat test-spark35 test-spark40 notebooks bench bench-quick bench-record lint clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found %s)" % sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[local,dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)   ## Python packages into .venv; JVM jars are fetched on first use into ~/.cache/xact-pipeline

demo: install       ## start a local broker + file server, run the pipeline on sample events, print a summary
	$(BIN)/xact-pipeline demo

COMPAT ?= 1
test: install       ## the whole suite against a real broker, Spark and Delta (drills apart), then the runtime checks (COMPAT=0 skips them)
	@$(BIN)/python -m pytest -m "not drill" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests; a run that tests nothing is a failure" >&2; fi; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; \
	if [ "$(COMPAT)" = 1 ]; then $(MAKE) --no-print-directory test-compat; fi

# The drills: the whole pipeline on a real broker and Spark (a standalone cluster for some) while
# things fail; each prints what it injected, what it checked, its counts and its wall time.
test-drills: install
	@$(BIN)/python -m pytest -m drill -s -p no:randomly tests/drills $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no drills" >&2; fi; exit $$rc

# The runtimes the users have, each in its own venv outside the clone holding the platform's
# Spark, Delta, pandas and pyarrow plus the wheel's own dependencies (not the project): tests/compat
# builds the wheel and installs it on top, then runs every stage end to end with the matching
# Kafka connector and Delta jars from Maven Central (pipeline_lib/versions.py RUNTIMES).
#   3.5: Fabric Runtime 1.3 (Delta 3.2), Databricks 15.4/16.4 LTS; pyspark 3.5.7 is the newest
#        whose Kafka connector is on Maven Central.
#   4.0: Databricks 17.3 LTS, Fabric Runtime 2.0; 4.0.0 is the only 4.0 whose connector resolves.
CACHE_DIR     ?= $(or $(XACT_CACHE_DIR),$(HOME)/.cache/xact-pipeline)
# The platforms' Python (Fabric Runtime 1.3 and Databricks 15.4 LTS run 3.11), when installed.
COMPAT_PYTHON ?= $(or $(shell command -v python3.11 2>/dev/null),$(PYTHON))
RUNTIME_DEPS   = $(shell $(PYTHON) -c 'import tomllib; print(" ".join(repr(d) for d in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
COMPAT_TOOLS  := 'pytest>=8,<10' 'pytest-timeout>=2.3' 'build>=1.2' 'hatchling>=1.25'
SPARK35_PKGS  := 'pyspark==3.5.7' 'delta-spark==3.2.1' 'pandas>=2.2,<2.3' 'pyarrow>=17'
SPARK40_PKGS  := 'pyspark==4.0.0' 'delta-spark==4.0.0' 'pandas>=2.2,<3' 'pyarrow>=17'
test-compat: test-spark35 test-spark40
test-spark35 test-spark40: test-spark%:
	@venv=$(CACHE_DIR)/venv-compat-spark$*; stamp=$$venv/.installed-$(shell echo "$(SPARK$*_PKGS) $(RUNTIME_DEPS) $(COMPAT_TOOLS)" | cksum | cut -d' ' -f1); \
	test -f $$stamp || { echo "preparing $$venv (once)"; rm -rf $$venv && $(COMPAT_PYTHON) -m venv $$venv && \
		$$venv/bin/python -m pip install --quiet $(SPARK$*_PKGS) $(RUNTIME_DEPS) $(COMPAT_TOOLS) && touch $$stamp; } || exit 1; \
	$$venv/bin/python -m pytest tests/compat -p no:cacheprovider $(PYTEST_ARGS)   # the clone is on sys.path (cwd)

notebooks: install  ## execute every analyst notebook against the local tables (make demo first) into var/reports/*.html
	$(BIN)/xact-pipeline notebooks --out var/reports

# Benchmarks print one table (reference, pipeline, ratio, target, runs, worker RSS); never part of
# `make test`. A plain run leaves the tree clean; bench-record writes the table into docs/performance.md.
bench: install        ## every benchmark, medians of 3 runs (about 40 min)
	$(BIN)/python benchmarks/bench.py

bench-quick: install  ## small sets, one run each, for development (about 15 min)
	$(BIN)/python benchmarks/bench.py --quick

bench-record: install ## make bench, then its table and the machine into docs/performance.md
	$(BIN)/python benchmarks/bench.py --record docs/performance.md

lint: install
	$(BIN)/ruff check pipeline_lib jobs tests benchmarks fabric
	$(BIN)/ruff format --check pipeline_lib jobs tests benchmarks fabric
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache   # the layering contracts in pyproject.toml [tool.importlinter]

clean:              ## local state of the demo (var/); the JVM cache in ~/.cache/xact-pipeline stays
	rm -rf var spark-warehouse
