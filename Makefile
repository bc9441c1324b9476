# pointctx set-up and common jobs. Everything lives in .venv at the repo root.
#   make test   - create .venv, install torch==2.13.0 (CPU wheel), install pointctx editable
#                 with its extras, run the test suite
#   make accel  - optional: build torch-cluster into .venv (from source the first time)
#   make demo   - the main job on the bundled real sample (see README)
#   make lint   - ruff
#   make rgbd-demo / masked-study / cifar-compare / segment-demo / bench-all - the other demos
#                 and benchmarks
#   make gpu-check - bench/gpu_check.sh on a CUDA machine (no .venv needed; never installs torch)
PYTHON ?= python3
PYTHON_GPU ?=
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
PYTEST_ARGS ?=
# the checkout's default data folder; the package itself reads only root= or $POINTCTX_DATA
export POINTCTX_DATA ?= $(abspath ../shared/data)

.PHONY: setup accel test test-fast test-all lint demo rgbd-demo masked-study cifar-compare segment-demo bench bench-all clean system-deps gpu-check

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# torch first and pinned, so that no later step resolves another (CUDA) torch.
$(VENV)/.torch: | $(VENV)/bin/python
	$(PIP) install -q --upgrade "pip>=23" setuptools wheel
	$(PIP) install -q "torch==$(TORCH_VERSION)"
	@touch $@

$(VENV)/.pointctx: $(VENV)/.torch pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	$(PIP) install -q --no-build-isolation -e ".[dev,pyg,open3d,images]" "torch==$(TORCH_VERSION)"
	@$(PY) -c "import torch; assert torch.__version__.startswith('$(TORCH_VERSION)'), torch.__version__"
	@touch $@

# open3d-cpu needs libusb-1.0 at import time. Install it when we can, say so when we cannot.
system-deps:
	@if ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		echo "[setup] installing libusb-1.0-0 (needed by open3d-cpu)"; \
		(apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1 || \
		 (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1)) || \
		echo "[setup] WARNING: could not install libusb-1.0-0; open3d tests will be skipped"; \
	else \
		echo "[setup] WARNING: libusb-1.0-0 is missing (open3d-cpu needs it): run 'sudo apt-get install libusb-1.0-0'; open3d tests will be skipped"; \
	fi

setup: $(VENV)/.pointctx

# Optional accelerator. torch-cluster's setup imports torch, so it is built against the installed
# torch without build isolation (measured 2026-12-05: 11.5 CPU-minutes, then pip's cache).
accel: setup
	$(PIP) install -q --no-build-isolation "torch-cluster>=1.6"

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q -m "not slow" -x $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest -q -m "" $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check pointctx tests bench examples

demo: setup
	$(PY) examples/scanobjectnn.py --sample

# RGB-D: clustering maps of the bundled TUM frame (PNG + coloured PLY in runs/rgbd)
rgbd-demo: setup
	$(PY) examples/rgbd_demo.py --out runs/rgbd --threads 1

# Images with missing pixels: CoC vs CNN on real MNIST, the few-minute version (runs/masked_quick)
masked-study: setup
	$(PY) examples/masked_images.py --quick --threads 1 --out runs/masked_quick

# cluenet_micro_cifar vs coc_tiny_cifar on real CIFAR-10, same budget (docs/images.md)
cifar-compare: setup
	$(PY) examples/train_images.py --dataset cifar10 --models cluenet_micro_cifar,coc_tiny_cifar \
		--train-size 5000 --val-size 2000 --epochs 4 --batch-size 64 --threads 1 --output runs/cifar_side

# CamVid segmentation, the few-minute pipeline check: 48 train / 16 val images at 90x120 (runs/segment_demo_<time>)
segment-demo: setup
	$(PY) examples/segment_images.py --recipe quick --output runs/segment_demo_$$(date +%Y%m%d-%H%M%S)

bench: setup
	$(PY) bench/ops.py

bench-all: setup
	$(PY) bench/ops.py
	$(PY) bench/context_cluster.py
	$(PY) bench/pointmlp.py
	$(PY) bench/models.py
	$(PY) bench/linear.py
	$(PY) bench/segmentation.py

# CUDA tests, a short sample run, ops / PointMLP / coc_tiny benches on CUDA, one JSON
# (runs/gpu_check/gpu_check.json). Uses $(PYTHON_GPU) or .venv or python3 with a CUDA torch.
gpu-check:
	PYTHON="$(PYTHON_GPU)" bash bench/gpu_check.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
