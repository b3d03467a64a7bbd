# extcvr: every set-up step lives here. `make demo` and `make test` bootstrap .venv from
# requirements/cpu.lock on a fresh machine; the bootstrap is a no-op when the venv matches the lock.
SHELL := /bin/bash
PYTHON_BOOTSTRAP ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
LOCK := requirements/cpu.lock
STAMP := $(VENV)/.lock.sha256
ROWS ?= 500000
SEED ?= 7
DEMO_DIR ?= demo_out
BENCH_ROWS ?= 1000000,10000000
BENCH_DIR ?= bench_out
BENCH_TRAIN_ROWS ?= 1000000
PYTEST_ARGS ?=
# In the NGC container the stack is already installed: `make demo USE_SYSTEM_PYTHON=1`.
ifeq ($(USE_SYSTEM_PYTHON),1)
PY := python
VENV_DEP :=
else
VENV_DEP := $(VENV)
endif

.PHONY: demo test bench clean venv-check

# The bootstrap: rebuilds the venv only when the lock's hash differs from the stamp.
$(VENV): $(LOCK)
	@want=$$(sha256sum $(LOCK) | cut -d' ' -f1); \
	if [ -f $(STAMP) ] && [ "$$(cat $(STAMP))" = "$$want" ] && [ -x $(PY) ]; then \
	  echo "[venv] $(VENV) matches $(LOCK)"; touch $(VENV); exit 0; fi; \
	echo "[venv] creating $(VENV) from $(LOCK)"; \
	rm -rf $(VENV) && $(PYTHON_BOOTSTRAP) -m venv $(VENV) && \
	$(PY) -m pip install --quiet --disable-pip-version-check pip==23.2.1 && \
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps wheel -r $(LOCK) && \
	$(PY) -m pip check && \
	echo "$$want" > $(STAMP) && echo "[venv] ready"

venv-check: $(VENV)

# The main job end to end on the embedded default. Each step is a module entry point that ends
# with its own summary table; later stages (train, calibrate, export, serve) append here.
demo: $(VENV_DEP)
	@mkdir -p $(DEMO_DIR)
	$(PY) -m preprocessing.generate --rows $(ROWS) --seed $(SEED) --out $(DEMO_DIR)/generated
	$(PY) -m preprocessing.run --input $(DEMO_DIR)/generated --out $(DEMO_DIR)/processed
	$(PY) -m preprocessing.summary --proc $(DEMO_DIR)/processed --plot $(DEMO_DIR)/dataset_summary.png
	$(PY) -m models.train --model naive --data $(DEMO_DIR)/processed --out $(DEMO_DIR)/runs/naive --seed $(SEED) --config models/configs/demo.yaml
	$(PY) -m models.train --model esmm --data $(DEMO_DIR)/processed --out $(DEMO_DIR)/runs/esmm --seed $(SEED) --config models/configs/demo.yaml
	$(PY) -m models.evaluate --runs $(DEMO_DIR)/runs/naive $(DEMO_DIR)/runs/esmm --data $(DEMO_DIR)/processed --out $(DEMO_DIR)/report
	$(PY) -m calibration.calibrate --method all --run $(DEMO_DIR)/runs/esmm --data $(DEMO_DIR)/processed --field app_id,category_id --out $(DEMO_DIR)/calibration
	$(PY) -m serving.export --run $(DEMO_DIR)/runs/esmm --workflow $(DEMO_DIR)/processed/workflow --calibrator $(DEMO_DIR)/calibration/adacalib --out $(DEMO_DIR)/triton_repo
	$(PY) -m serving.demo --repo $(DEMO_DIR)/triton_repo --input $(DEMO_DIR)/generated/day_006.parquet --rows 5

test: $(VENV_DEP)
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5)"; exit 0; fi; exit $$rc

bench: $(VENV_DEP)
	$(PY) -m benchmarks.run --rows $(BENCH_ROWS)
	@if [ ! -f $(BENCH_DIR)/processed/manifest.json ]; then \
	  $(PY) -m preprocessing.generate --rows $(BENCH_TRAIN_ROWS) --seed $(SEED) --out $(BENCH_DIR)/generated && \
	  $(PY) -m preprocessing.run --input $(BENCH_DIR)/generated --out $(BENCH_DIR)/processed; fi
	$(PY) -m benchmarks.train_bench --data $(BENCH_DIR)/processed
	$(PY) -m benchmarks.train_profile --data $(BENCH_DIR)/processed --optimizer adam
	$(PY) -m benchmarks.train_profile --data $(BENCH_DIR)/processed --optimizer lazy_adam
	$(PY) -m benchmarks.calibration_bench --rows 10000000
	$(PY) -m benchmarks.replay_bench --rows 10000000
	$(PY) -m benchmarks.pseudolabel_bench --rows 10000000 --work $(BENCH_DIR)/pseudolabel
	$(PY) -m benchmarks.federated_bench --data $(BENCH_DIR)/processed --work $(BENCH_DIR)/federated
	@dpkg -s libb64-0d >/dev/null 2>&1 || apt-get install -y libb64-0d || \
	  { echo "perf_analyzer needs Debian's libb64-0d: sudo apt-get install -y libb64-0d"; exit 1; }
	@if [ ! -f $(BENCH_DIR)/runs/esmm/metrics.json ]; then \
	  $(PY) -m models.train --model esmm --data $(BENCH_DIR)/processed --out $(BENCH_DIR)/runs/esmm --seed $(SEED) --config models/configs/demo.yaml; fi
	$(PY) -m benchmarks.serving_bench --run $(BENCH_DIR)/runs/esmm --workflow $(BENCH_DIR)/processed/workflow
	$(PY) -m benchmarks.report

clean:
	rm -rf $(DEMO_DIR) $(BENCH_DIR) .pytest_cache
