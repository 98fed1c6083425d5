# auditbox: the two commands are `make image` and `make test`; both set up what is missing.
PYTHON ?= python3
# the example site profile: audit-laptop.yaml is a base that names no gateway
PROFILE ?= profiles/audit-laptop-example.yaml
OUT ?= out
PYTEST_ARGS ?=

.PHONY: deps image test test-fast lint bench clean

deps:
	@bash builder/scripts/deps.sh

image: deps
	auditbox build $(PROFILE) -o $(OUT)

# the whole suite; then the compliance report of the test image from the checks' results.
# Each run has its own directory (tests/rundir.py), so runs can share the machine.
test: deps
	@mkdir -p build/runs
	run=$$(mktemp -d $(CURDIR)/build/runs/test-XXXXXX); export AUDITBOX_RUN_DIR=$$run; \
	$(PYTHON) -m pytest -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	if [ -f $$run/images/test/manifest.json ] && [ -f $$run/check-results.json ]; then \
	  auditbox report $$run/images/test --profile profiles/audit-laptop-test.yaml \
	    --results $$run/check-results.json; fi; \
	echo "test run: $$run (images, logs, check results, report)"; exit $$rc

# unit tests only: no image build, no QEMU
test-fast: deps
	$(PYTHON) -m pytest -p no:cacheprovider -m "not build and not vm" \
	  --ignore=tests/vm --deselect tests/test_build.py $(PYTEST_ARGS)

lint: deps
	$(PYTHON) -m ruff check builder attestation kiosk gateway tests
	$(PYTHON) -m mypy builder attestation kiosk gateway

bench: deps
	$(PYTHON) tests/bench/build_bench.py
	$(PYTHON) tests/bench/size_bench.py
	$(PYTHON) tests/bench/attest_bench.py
	$(PYTHON) tests/bench/web_bench.py
	$(PYTHON) tests/bench/lynis_bench.py
	$(PYTHON) tests/bench/ssh_lib_bench.py
	$(PYTHON) tests/bench/gateway_bench.py
	$(PYTHON) tests/bench/kiosk_bench.py
	$(PYTHON) tests/bench/fleet_bench.py

clean:
	rm -rf build out bench-results.json
