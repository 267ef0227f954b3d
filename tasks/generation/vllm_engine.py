"""vLLM as a sample source: one engine per base model, fine-tunes as LoRA adapters per request.

The engine lives in a worker process under the vLLM venv (`vllm_worker.py`; see there why).
`VllmEngine` owns that process: it loads the tokenizer first (prompts are rendered and their
lengths checked before the engine exists), builds the engine once on the first shard that needs
generating, and serves every `VllmSource` of that base model — the base itself and each adapter.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from tasks.generation.base import (
    Generated,
    GenerationError,
    Sampling,
    SampleSource,
    TaskOutput,
    failed_output,
    request_seed,
    text_sha256,
)
from tasks.generation.models import ResolvedModel, model_context_length
from tasks.generation.prompts import PromptStyle, messages_for, prompt_identity, require_template, stop_for
from tasks.schema import Problem

log = structlog.get_logger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_SCRIPT = Path(__file__).with_name("vllm_worker.py")
VLLM_PYTHON_ENV = "FERRISBENCH_VLLM_PYTHON"
MAX_SHOWN = 5


def vllm_python() -> Path:
    """The vLLM venv's interpreter (made by infra/setup.sh), or $FERRISBENCH_VLLM_PYTHON."""
    path = Path(os.environ.get(VLLM_PYTHON_ENV) or REPO_ROOT / ".venv-vllm" / "bin" / "python")
    if not path.exists():
        raise GenerationError(
            f"the vLLM venv's Python {path} does not exist; run `bash infra/setup.sh` "
            f"(or point ${VLLM_PYTHON_ENV} at a Python with vllm installed)"
        )
    return path


@dataclass(frozen=True)
class EngineSettings:
    """What the engine is built with (vllm.LLM arguments); dtype also changes the samples."""

    dtype: str = "auto"
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_lora_rank: int = 16
    max_loras: int = 1
    enforce_eager: bool = False
    in_process: bool | None = None  # None: in-process engine core on CPU, vLLM's default elsewhere
    seed: int = 0

    def llm_args(self, lora: bool) -> dict:
        args = {
            "dtype": self.dtype,
            "tensor_parallel_size": self.tensor_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "enforce_eager": self.enforce_eager,
            "seed": self.seed,
        }
        if self.max_model_len is not None:
            args["max_model_len"] = self.max_model_len
        if lora:
            args.update(enable_lora=True, max_lora_rank=self.max_lora_rank, max_loras=self.max_loras)
        return args


class WorkerProcess:
    """A JSON-lines conversation with the worker; its stderr goes to a log file."""

    def __init__(self, log_path: Path, env: dict[str, str] | None = None):
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(vllm_python()), str(WORKER_SCRIPT), str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, **(env or {})},
            text=True,
            encoding="utf-8",
        )

    def call(self, op: str, **arguments) -> object:
        if self.process.poll() is not None:
            raise GenerationError(self._death_message(f"before {op!r}"))
        try:
            self.process.stdin.write(json.dumps({"op": op, **arguments}) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            self.process.wait(timeout=30)
            raise GenerationError(self._death_message(f"during {op!r}"))
        reply = json.loads(line)
        if not reply["ok"]:
            raise WorkerError(reply["error"], fatal=bool(reply.get("fatal")), log_path=self.log_path)
        return reply["result"]

    def _death_message(self, when: str) -> str:
        return f"the vLLM worker exited (code {self.process.returncode}) {when}; its log {self.log_path} ends:\n{self.log_tail()}"

    def log_tail(self, lines: int = 25) -> str:
        self._log.flush()
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.call("shutdown")
                self.process.wait(timeout=60)
            except (GenerationError, subprocess.TimeoutExpired, OSError, ValueError):
                self.process.kill()
                self.process.wait()
        self._log.close()


class WorkerError(GenerationError):
    def __init__(self, message: str, fatal: bool, log_path: Path):
        super().__init__(f"{message} (vLLM worker log: {log_path})")
        self.fatal = fatal


@dataclass
class VllmEngine:
    """The one engine of a base model, shared by the base and its adapters."""

    model: ResolvedModel
    settings: EngineSettings
    log_path: Path
    lora: bool = False
    env: dict[str, str] = field(default_factory=dict)
    _worker: WorkerProcess | None = None
    chat_template: str | None = None
    max_model_len: int | None = None  # the engine's actual limit, once built
    engine_info: dict | None = None
    _rendered: dict[tuple[str, str], dict] = field(default_factory=dict)

    @property
    def worker(self) -> WorkerProcess:
        if self._worker is None:
            self._worker = WorkerProcess(self.log_path, self.env)
            info = self._worker.call("tokenizer", model=str(self.model.path))
            self.chat_template = info["chat_template"]
        return self._worker

    def context_limit(self) -> int | None:
        """The engine's limit once built; before, the configured or declared context length."""
        return self.max_model_len or self.settings.max_model_len or model_context_length(self.model)

    def render(self, problems: Sequence[Problem], style: PromptStyle) -> dict[str, dict]:
        """task_id → {"text", "token_ids"}, rendered once per style and shared by all adapters."""
        missing = [p for p in problems if (style.value, p.task_id) not in self._rendered]
        if missing:
            items = [
                {"key": p.task_id, "messages": messages_for(p)}
                if style is PromptStyle.INSTRUCT
                else {"key": p.task_id, "text": p.prompt}
                for p in missing
            ]
            for item in self.worker.call("render", items=items):
                self._rendered[(style.value, item["key"])] = item
        return {p.task_id: self._rendered[(style.value, p.task_id)] for p in problems}

    def start(self) -> None:
        if self.engine_info is None:
            log.info("vllm_engine_starting", model=self.model.model_id, settings=self.settings.llm_args(self.lora))
            self.engine_info = self.worker.call(
                "engine", model=str(self.model.path), args=self.settings.llm_args(self.lora), in_process=self.settings.in_process
            )
            self.max_model_len = int(self.engine_info["max_model_len"])
            log.info("vllm_engine_ready", **self.engine_info)

    def generate(self, requests: list[dict]) -> list[dict]:
        self.start()
        try:
            return self.worker.call("generate", requests=requests)
        except WorkerError as error:
            if error.fatal:
                raise GenerationError(f"the vLLM engine died; finished shards are kept, rerun to resume: {error}") from None
            raise

    def close(self) -> None:
        """Stop the worker; a later call starts a fresh one (and builds the engine again)."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        self.engine_info = self.max_model_len = None


class VllmSource(SampleSource):
    """The base model (adapter None) or one LoRA fine-tune of it, on a shared engine."""

    def __init__(
        self, engine: VllmEngine, label: str, style: PromptStyle, adapter: ResolvedModel | None = None, lora_id: int = 0
    ):
        self.engine, self.label, self.style, self.adapter, self.lora_id = engine, label, style, adapter, lora_id
        self._prompts: dict[str, dict] = {}

    def identity(self) -> dict:
        return {
            "source": "vllm",
            "model_id": self.engine.model.model_id,
            "model_revision": self.engine.model.revision,
            "adapter": self.adapter.model_id if self.adapter else None,
            "adapter_revision": self.adapter.revision if self.adapter else None,
            "dtype": self.engine.settings.dtype,
            **prompt_identity(self.style, self.engine.chat_template),
        }

    def prepare(self, problems: Sequence[Problem], sampling: Sampling) -> dict[str, str]:
        self.engine.worker  # noqa: B018  (loads the tokenizer: the chat template is part of the identity)
        require_template(self.style, self.engine.chat_template, self.engine.model.model_id)
        self._prompts = self.engine.render(problems, self.style)
        self._check_lengths(problems, sampling)
        return {tid: text_sha256(json.dumps(p["token_ids"])) for tid, p in self._prompts.items()}

    def _check_lengths(self, problems: Sequence[Problem], sampling: Sampling) -> None:
        limit = self.engine.context_limit()
        if limit is None:
            return
        too_long = [
            (p.task_id, len(self._prompts[p.task_id]["token_ids"]))
            for p in problems
            if len(self._prompts[p.task_id]["token_ids"]) + sampling.max_tokens > limit
        ]
        if too_long:
            shown = ", ".join(f"{tid} ({n} prompt tokens)" for tid, n in too_long[:MAX_SHOWN])
            raise GenerationError(
                f"{len(too_long)} prompt(s) of {self.label} do not fit the model's context of {limit} tokens "
                f"with max_tokens={sampling.max_tokens}: {shown}; raise max_model_len, lower max_tokens, "
                "or leave those tasks out"
            )

    def generate(self, problems: Sequence[Problem], sampling: Sampling) -> list[TaskOutput]:
        self.engine.start()
        self._check_lengths(problems, sampling)  # against the engine's actual limit
        lora = (
            {"name": self.label, "id": self.lora_id, "path": str(self.adapter.path)} if self.adapter else None
        )
        requests = [
            {
                "key": p.task_id,
                "token_ids": self._prompts[p.task_id]["token_ids"],
                "sampling": {
                    "n": sampling.n,
                    "temperature": sampling.temperature,
                    "top_p": sampling.top_p,
                    "max_tokens": sampling.max_tokens,
                    "seed": request_seed(sampling.seed, self.model_key(), p.task_id),
                    "stop": stop_for(self.style),
                },
                "lora": lora,
            }
            for p in problems
        ]
        outputs = []
        for request, result in zip(requests, self.engine.generate(requests)):
            prompt_tokens = len(request["token_ids"])
            if result["error"] or len(result["outputs"]) != sampling.n:
                error = result["error"] or f"{len(result['outputs'])} outputs for n={sampling.n}"
                log.warning("generation_failed", model=self.label, task_id=request["key"], error=error)
                outputs.append(failed_output(request["key"], sampling.n, error))
                continue
            samples = tuple(
                Generated(o["text"], o["text"], o["finish_reason"], completion_tokens=o["tokens"]) for o in result["outputs"]
            )
            outputs.append(TaskOutput(request["key"], samples, prompt_tokens=prompt_tokens))
        return outputs

    def close(self) -> None:
        self.engine.close()  # closing twice (base and adapters) is harmless

