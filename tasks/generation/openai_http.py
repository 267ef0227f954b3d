"""A model already served over an OpenAI-compatible API (`vllm serve` or any compatible server).

Spec: `openai:URL[#MODEL]`; without MODEL the server must serve exactly one base model. LoRA
fine-tunes served by the same server (`vllm serve --lora-modules NAME=PATH`) are `--adapter NAME`.
The `completion` style posts the raw prompt to /v1/completions with the protocol's stop
sequence, `instruct` posts the chat to /v1/chat/completions (the server applies its template).
One request per task with `n` samples and the same per-request seed rule as the vLLM engine;
at most `concurrency` requests in flight. Transient failures (connection errors, 408, 429, 5xx)
are retried with exponential backoff; a request still failing after the retries becomes `n`
generation_failed rows. Any other refusal (e.g. 400: prompt too long) stops the run, naming the
task: it would fail the same way for every retry and every sample.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
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
from tasks.generation.prompts import INSTRUCTION, PromptStyle, messages_for, stop_for

log = structlog.get_logger(__name__)

RETRYABLE = {408, 409, 429, 500, 502, 503, 504}
MAX_SHOWN = 5


def parse_openai_spec(spec: str) -> tuple[str, str | None]:
    """`openai:http://host:port[/v1][#model]` → (base URL without /v1, model or None)."""
    rest = spec.removeprefix("openai:")
    url, _, model = rest.partition("#")
    url = url.rstrip("/").removesuffix("/v1")
    if not url.startswith(("http://", "https://")):
        raise GenerationError(f"{spec!r}: want openai:http(s)://HOST:PORT[#MODEL]")
    return url, model or None


class OpenAISource(SampleSource):
    def __init__(
        self,
        base_url: str,
        model: str | None,
        style: PromptStyle,
        label: str,
        adapter: str | None = None,
        concurrency: int = 8,
        retries: int = 4,
        backoff_s: float = 0.5,
        timeout_s: float = 600.0,
        api_key: str | None = None,
    ):
        self.base_url, self.requested_model, self.style, self.label = base_url, model, style, label
        self.adapter = adapter
        self.concurrency, self.retries, self.backoff_s = concurrency, retries, backoff_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=base_url, timeout=timeout_s, headers=headers)
        self.served: dict | None = None  # the /v1/models entry of the base model

    # ------------------------------------------------------------------ identity and checks

    def _discover(self) -> dict:
        if self.served is None:
            try:
                response = self.client.get("/v1/models")
                response.raise_for_status()
            except httpx.HTTPError as exc:
                raise GenerationError(f"{self.base_url}: cannot list the served models: {exc}") from None
            models = response.json().get("data", [])
            names = [m["id"] for m in models]
            if self.adapter is not None and self.adapter not in names:
                raise GenerationError(f"{self.base_url} does not serve adapter {self.adapter!r}; it serves {names}")
            bases = [m for m in models if not m.get("parent")]
            if self.requested_model is not None:
                bases = [m for m in bases if m["id"] == self.requested_model]
            if len(bases) != 1:
                raise GenerationError(
                    f"{self.base_url} serves {names}; name the base model as openai:{self.base_url}#MODEL"
                )
            self.served = bases[0]
        return self.served

    def identity(self) -> dict:
        served = self._discover()
        return {
            "source": "openai",
            "model_id": served["id"],
            "model_revision": f"served:{served.get('root') or served['id']}",
            "adapter": self.adapter,
            "adapter_revision": "served" if self.adapter else None,
            "prompt_style": self.style.value,
            "instruction": INSTRUCTION if self.style is PromptStyle.INSTRUCT else None,
            "stop": stop_for(self.style),
        }

    @property
    def request_model(self) -> str:
        return self.adapter or self._discover()["id"]

    def _payload(self, problem) -> dict:
        if self.style is PromptStyle.INSTRUCT:
            return {"messages": messages_for(problem)}
        return {"prompt": problem.prompt, "stop": stop_for(self.style)}

    def prepare(self, problems, sampling: Sampling) -> dict[str, str]:
        served = self._discover()
        limit = served.get("max_model_len")
        if limit:
            self._check_lengths(problems, sampling, int(limit))
        return {p.task_id: text_sha256(repr(sorted(self._payload(p).items()))) for p in problems}

    def _check_lengths(self, problems, sampling: Sampling, limit: int) -> None:
        """With vLLM's /tokenize (not every server has it) the context is checked up front."""
        too_long = []
        for problem in problems:
            payload = {"model": self.request_model, **self._payload(problem)}
            payload.pop("stop", None)
            try:
                response = self.client.post("/tokenize", json=payload)
            except httpx.HTTPError:
                return
            if response.status_code == 404:
                log.info("no_tokenize_endpoint", url=self.base_url)
                return
            if response.status_code == 200:
                count = int(response.json()["count"])
                if count + sampling.max_tokens > limit:
                    too_long.append((problem.task_id, count))
        if too_long:
            shown = ", ".join(f"{tid} ({n} prompt tokens)" for tid, n in too_long[:MAX_SHOWN])
            raise GenerationError(
                f"{len(too_long)} prompt(s) do not fit the served model's context of {limit} tokens "
                f"with max_tokens={sampling.max_tokens}: {shown}"
            )

    # ------------------------------------------------------------------ generation

    def generate(self, problems: Sequence, sampling: Sampling) -> list[TaskOutput]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda p: self._one(p, sampling), problems))

    def _one(self, problem, sampling: Sampling) -> TaskOutput:
        chat = self.style is PromptStyle.INSTRUCT
        body = {
            "model": self.request_model,
            **self._payload(problem),
            "n": sampling.n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "seed": request_seed(sampling.seed, self.model_key(), problem.task_id),
        }
        path = "/v1/chat/completions" if chat else "/v1/completions"
        last_error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.backoff_s * 2 ** (attempt - 1), 30.0) * (0.5 + random.random()))
            try:
                response = self.client.post(path, json=body)
            except httpx.TransportError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code in RETRYABLE:
                last_error = f"HTTP {response.status_code}: {response.text[:300]}"
                continue
            if response.status_code != 200:
                raise GenerationError(
                    f"{self.base_url} refused {problem.task_id} (HTTP {response.status_code}): {response.text[:500]}"
                )
            return self._output(problem.task_id, response.json(), chat, sampling.n)
        log.warning("generation_failed", model=self.label, task_id=problem.task_id, error=last_error)
        return failed_output(problem.task_id, sampling.n, f"after {self.retries} retries: {last_error}")

    @staticmethod
    def _output(task_id: str, data: dict, chat: bool, n: int) -> TaskOutput:
        choices = sorted(data.get("choices", []), key=lambda c: c.get("index", 0))
        if len(choices) != n:
            return failed_output(task_id, n, f"the server returned {len(choices)} choices for n={n}")
        texts = [(c.get("message") or {}).get("content") if chat else c.get("text") for c in choices]
        samples = tuple(
            Generated(text or "", text, choice.get("finish_reason")) for text, choice in zip(texts, choices)
        )
        return TaskOutput(task_id, samples, prompt_tokens=(data.get("usage") or {}).get("prompt_tokens"))

    def close(self) -> None:
        self.client.close()
