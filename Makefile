# make setup: build .venv (idempotent; the first run compiles mmcv, ~10 min)
# make test:  run the test suite
# make demo:  generate data/demo, train the CPU demo, evaluate its checkpoint
PY := .venv/bin/python
DEMO_CONFIG := configs/demo/mona_fasterrcnn_voc.py
DEMO_WORK_DIR := work_dirs/demo
# The tiny demo model trains ~3x faster on one intra-op thread than on two
# (measured on 2 cores): its ops are too small to split.
DEMO_ENV := OMP_NUM_THREADS=1

.PHONY: setup test demo

setup:
	bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q

demo: setup
	$(PY) tools/make_demo_data.py --out data/demo
	$(DEMO_ENV) $(PY) tools/train.py $(DEMO_CONFIG) --work-dir $(DEMO_WORK_DIR)
	$(DEMO_ENV) $(PY) tools/test.py $(DEMO_CONFIG) \
		$$(cat $(DEMO_WORK_DIR)/last_checkpoint) --work-dir $(DEMO_WORK_DIR)
