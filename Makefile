# The two commands a newcomer runs: `make demo` and `make test`. Both install first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
STAMP := $(VENV)/.installed
DEMO_OUT ?= runs/demo
DEMO_ARGS ?=

.PHONY: install demo flwr-demo test test-all bench lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/privatune simulate --config examples/demo.toml --output $(DEMO_OUT) --overwrite $(DEMO_ARGS)

# The same app under Flower's own CLI (local simulation federation). Flower's home stays
# in runs/, runtime dependency installation is off (it would download a multi-GB torch),
# and the local SuperLink that `flwr run` starts is stopped afterwards.
FLWR_ENV := PATH=$(abspath $(VENV))/bin:$$PATH FLWR_HOME=$(abspath runs/flwr-home) \
	FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
FLWR_NODES ?= 5
FLWR_SET ?=
flwr-demo: $(STAMP)
	@mkdir -p runs
	$(FLWR_ENV) flwr run . --stream --federation-config "num-supernodes=$(FLWR_NODES)" \
		--run-config 'set="$(FLWR_SET)" output-dir="$(abspath runs/flwr)"'; \
	status=$$?; pkill -f "[f]lower-superlink --insecure --simulation" || true; exit $$status

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

# Every benchmark (README "Performance"): BENCH_ARGS=--quick for a 2-minute smoke run,
# BENCH_ARGS="--only utility scale" for some of them.
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) -m simulations.benchmarks $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) runs
