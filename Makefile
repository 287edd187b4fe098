# celery-fleet: the commands the README teaches. Run as root (the lab boots containers).
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup packages demo deploy plan lab down status lab-status test test-pure bench bench-lab

# Debian packages the lab and the tests need on this machine (root; apt only when one is
# missing). A controller that deploys to your own servers needs none of them (`make setup`),
# but g++ and cmake where a host runs llama.cpp (the controller builds it: docs/INFERENCE.md).
HOST_PACKAGES := python3-venv systemd systemd-container debootstrap nftables zstd iproute2 \
	openssh-client util-linux ca-certificates redis-server \
	g++ cmake
packages:
	@missing=$$(for p in $(HOST_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null \
		| grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing $$missing"; apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi

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

lab: packages setup
	$(BIN)/fleet lab up

# every unit, worker, queue and GPU of the lab's fleet against its plan
status: setup
	$(BIN)/fleet status inventory/lab.py

lab-status: setup
	$(BIN)/fleet lab status

down: setup
	$(BIN)/fleet lab down

# every test: pure ones (seconds) and the lab ones on Debian 12 and 13 (real hosts), at once in
# pytest-xdist workers: one a lab (each release's, and the RabbitMQ module's own), one for the
# pure tests (docs/TESTS.md, measured);
# FLEET_LAB_SUITES=bookworm for one release. At the end: where the time went.
TEST_WORKERS ?= 5
test: packages setup
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup --durations=25

test-pure: setup
	$(BIN)/pytest -m "not lab" -n $(TEST_WORKERS)

# the sizing proof: real workers against the fake backend (about 5 minutes)
bench: setup
	$(BIN)/fleet bench

bench-lab: setup
	$(BIN)/python benchmarks/lab_cycle.py --cycles 5 --build
