# make setup: build .venv, the pinned stack (idempotent; the first run compiles
#             mmcv, ~10 min; later runs reuse the cached wheel)
# make test:  run the test suite on the pinned stack (what .ci/run runs)
# make test-latest: build the latest stack (mmcv 2.1.0, mmdet 3.3.0, mmseg
#             1.2.2, no mmrotate) into $(LATEST_VENV) and run the fast tier
#             there ($(LATEST_PYTEST)); mmrotate tests skip with the reason
# make env-info: print the detected stack and the available backbones / hooks
# make demo:  generate data/demo, put step 1 in place (the tiny Swin detector
#             trained on the COCO-format shapes until its validation mAP stops
#             improving: once, then cached; tools/compare.py demo
#             --source-only), fine-tune Mona on its frozen backbone with 8
#             images per class of the visibly different VOC-format set (step
#             2), evaluate the merged deploy checkpoint and the adapter-only
#             checkpoint on step 1's model
# make compare-demo: the comparison table on the demo task, every method with
#             a demo config, three seeds each (tools/compare.py demo --seeds 3;
#             two single-threaded runs at a time)
PY := .venv/bin/python
# Step 1's source model, where tools/compare.py places it from its cache and
# step 2's config loads it (swin_pretrained in configs/demo/_base_/tiny_swin.py).
DEMO_SOURCE := work_dirs/demo_source/swin_source.pth
DEMO_CONFIG := configs/demo/mona_fasterrcnn_voc.py
DEMO_WORK_DIR := work_dirs/mona_fasterrcnn_voc
# The tiny demo model trains ~3x faster on one intra-op thread than on two
# (measured on 2 cores): its ops are too small to split.
DEMO_ENV := OMP_NUM_THREADS=1

# The second supported stack's venv and test selection (README "Support matrix").
LATEST_VENV := .venv-latest
LATEST_PYTEST := -q -m "not slow"

COMPARE_WORK_DIR := work_dirs/compare_demo

.PHONY: setup test test-latest env-info demo compare-demo

setup:
	bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q

test-latest:
	MMPEFT_STACK=latest MMPEFT_VENV=$(LATEST_VENV) bash scripts/setup.sh
	$(LATEST_VENV)/bin/python -m pytest $(LATEST_PYTEST)

env-info: setup
	$(PY) tools/env_info.py

demo: setup
	$(PY) tools/make_demo_data.py --out data/demo
	$(DEMO_ENV) $(PY) tools/compare.py demo --methods mona --source-only
	$(DEMO_ENV) $(PY) tools/train.py $(DEMO_CONFIG) --work-dir $(DEMO_WORK_DIR)
	ckpt=$$(cat $(DEMO_WORK_DIR)/last_checkpoint) && \
	$(DEMO_ENV) $(PY) tools/test.py $${ckpt%.pth}_deploy.py \
		$${ckpt%.pth}_deploy.pth --work-dir $(DEMO_WORK_DIR) && \
	$(DEMO_ENV) $(PY) tools/test.py $(DEMO_CONFIG) $(DEMO_SOURCE) \
		--adapter $${ckpt%.pth}_adapters.pth --work-dir $(DEMO_WORK_DIR)

compare-demo: setup
	$(PY) tools/make_demo_data.py --out data/demo
	$(DEMO_ENV) $(PY) tools/compare.py demo --seeds 3 --jobs 2 \
		--work-dir $(COMPARE_WORK_DIR)
