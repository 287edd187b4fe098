# celery-fleet: the commands the README teaches. Run as root (the lab boots containers).
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo deploy plan lab down status lab-status test test-pure bench bench-lab

setup: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]' -e ./worker
	touch $@

# bring the local lab up (4 real systemd hosts), deploy the fleet to it, show what runs
demo: lab
	$(BIN)/pyinfra -y inventory/lab.py deploy.py
	$(BIN)/fleet status inventory/lab.py

deploy: setup
	$(BIN)/pyinfra -y inventory/lab.py deploy.py

plan: setup
	$(BIN)/fleet plan inventory/lab.py

lab: setup
	$(BIN)/fleet lab up

# every unit, worker, queue and GPU of the lab's fleet against its plan
status: setup
	$(BIN)/fleet status inventory/lab.py

lab-status: setup
	$(BIN)/fleet lab status

down: setup
	$(BIN)/fleet lab down

# every test: pure ones (milliseconds) and the lab ones (real hosts, ~30 s)
test: setup
	$(BIN)/pytest

test-pure: setup
	$(BIN)/pytest -m "not lab"

# the sizing proof: real workers against the fake backend (about 5 minutes)
bench: setup
	$(BIN)/fleet bench

bench-lab: setup
	$(BIN)/python benchmarks/lab_cycle.py --cycles 5 --build
