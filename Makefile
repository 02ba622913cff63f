# The two commands of the README:  `make report`  and  `make test`.
# Each creates .venv when missing, installs torch==2.13.0 (CPU) only when no torch is importable,
# installs the package with its test dependencies, then runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dpmot-installed
SUITE ?= quick
TEST_WORKERS ?= 2
REPORT_JOBS ?= 2

.PHONY: test report install clean-venv

test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) -q tests

report: $(STAMP)
	$(VENV)/bin/dpmot report --suite $(SUITE) --out reports/$(SUITE) --jobs $(REPORT_JOBS)

install: $(STAMP)

$(STAMP): pyproject.toml scripts/setup-env.sh
	bash scripts/setup-env.sh "$(PYTHON)" "$(VENV)"
	touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
