# CellTally: the two commands a person needs are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)

.PHONY: run test venv services bench demo-model clean

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

run: venv
	CELLTALLY_DEMO=$${CELLTALLY_DEMO:-1} $(PY) -m streamlit run app.py \
		--server.address=$${HOST:-127.0.0.1} --server.port=$${PORT:-8501} \
		--server.headless=true --browser.gatherUsageStats=false

# Brings up PostgreSQL and Chromium (from Debian's packages, once), then runs every test.
test: venv
	bash scripts/test.sh

bench: venv
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

demo-model: venv
	$(PY) -m training demo-model

clean:
	rm -rf data/test .pytest_cache
