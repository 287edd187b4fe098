# celery-fleet: the commands the README teaches. Run as root (the lab boots containers).
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo lab down status test test-pure bench-lab

setup: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# bring the local lab up (3 real systemd hosts) and show what pyinfra sees of them
demo: lab
	$(BIN)/pyinfra -y inventory/lab.py fact hardware.Memory hardware.Cpus

lab: setup
	$(BIN)/fleet lab up

status: setup
	$(BIN)/fleet lab status

down: setup
	$(BIN)/fleet lab down

# every test: pure ones (milliseconds) and the lab ones (real hosts, ~30 s)
test: setup
	$(BIN)/pytest

test-pure: setup
	$(BIN)/pytest -m "not lab"

bench-lab: setup
	$(BIN)/python benchmarks/lab_cycle.py --cycles 5 --build
