# genexp: `make demo` and `make test` work on a fresh machine (they install first).
PYTHON ?= python3
VENV   ?= .venv
# Installed only when the venv cannot import torch already (CI pins it; a present torch is kept).
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.genexp-installed
# Stacked MNIST in make bench-modes: a CPU-sized budget (the papers train about 100k steps).
STACKED_STEPS ?= 1000
STACKED_SEEDS ?= 1
DEMO   := outputs/demo/$(shell date +%Y-%m-%d_%H-%M-%S)

.DEFAULT_GOAL := help
.PHONY: help install demo test test-slow bench bench-modes lint clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install genexp with its dev tools (torch only if missing)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install "$(TORCH)"
	$(BIN)/python -m pip install --disable-pip-version-check -q -e ".[dev]"
	touch $(STAMP)

demo: install ## train the default GAN on the embedded digits, then evaluate and sample it
	$(BIN)/genexp train hydra.run.dir=$(DEMO)/train
	$(BIN)/genexp eval ckpt=$(DEMO)/train/checkpoints/last.pt hydra.run.dir=$(DEMO)/eval
	$(BIN)/genexp sample ckpt=$(DEMO)/train/checkpoints/last.pt n=64 seed=0 hydra.run.dir=$(DEMO)/sample
	@echo "demo outputs: $(DEMO)/{train,eval,sample}"

test: install ## the fast test suite (under 10 minutes on 2 cores), in two workers
	$(BIN)/python -m pytest -q -n 2 --durations=25

test-slow: install ## the slow tests only (full-length training runs)
	$(BIN)/python -m pytest -q -m slow

bench: install ## benchmarks: loop overhead, demo; metrics; StyleGAN2 step time; digits likelihoods; DDP / AMP / compile
	$(BIN)/python scripts/bench_help.py
	$(BIN)/python scripts/bench_loop_overhead.py --demo
	$(BIN)/python scripts/bench_metrics.py
	$(BIN)/python scripts/bench_stylegan2.py --resolutions 32,64 --batch 4 --steps 3
	$(BIN)/python scripts/bench_stylegan2_modconv.py
	OMP_NUM_THREADS=1 $(BIN)/python scripts/bench_likelihood.py --seeds 3
	$(BIN)/python scripts/bench_scale.py

bench-modes: install ## mode-collapse tables: ring/grid best config, every objective, Stacked MNIST (hours on CPU)
	$(BIN)/python scripts/bench_modes.py --seeds 5 --steps 8000 --decay linear --losses lsgan --experiments ring_mlp
	$(BIN)/python scripts/bench_modes.py --seeds 5 --steps 12000 --decay linear --losses ns --experiments grid_mlp
	$(BIN)/python scripts/bench_modes.py --seeds 5 --steps 3000 --experiments ring_mlp
	$(BIN)/python scripts/bench_modes.py --seeds 5 --steps 3000 --losses ns --experiments grid_mlp,ring_pacgan,grid_pacgan
	$(BIN)/python scripts/bench_modes.py --seeds $(STACKED_SEEDS) --steps $(STACKED_STEPS) --losses ns \
		--experiments stacked_mnist_dcgan,stacked_mnist_pacgan

gpu-check: ## on one CUDA GPU, < 8 min: StyleGAN2 256² s/kimg, Inception throughput, demo -> docs/bench/gpu.json
	scripts/gpu_check.sh

bench-hostile: install ; OMP_NUM_THREADS=1 $(BIN)/python scripts/bench_hostile.py ## kill/resume, kills during writes, signals, 60+ bad inputs and crafted files (docs/bench/hostile.json)

lint: install ## ruff
	$(BIN)/python -m ruff check genexp tests scripts

clean: ## remove outputs and caches (keeps .venv)
	rm -rf outputs multirun build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
