"""Model and adapter specs: a local directory or a Hugging Face repo id, resolved before any engine.

Spec syntax: a path (absolute, `./…`, `../…`, `~/…`, or any existing path), or
`owner/name[/sub/folder][@revision]` on the Hugging Face hub (repo ids have exactly one slash,
so whatever follows the name is a subfolder, e.g. an adapter's `checkpoint-9000`).

Resolution happens in the main process, before the vLLM worker starts: a missing path, a repo
that is neither cached nor reachable, a directory that is not a model, or an adapter whose rank
exceeds the engine's limit is a clear error before anything expensive. The resolved revision
(the hub's commit, or a content fingerprint of a local directory) is recorded in every sample.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tasks.generation.base import GenerationError

_REPO_SPEC = re.compile(
    r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:/(?P<subfolder>[\w.-]+(?:/[\w.-]+)*))?(?:@(?P<revision>[\w./-]+))?$"
)
_FULL_HASH_LIMIT = 64 << 20  # files up to this size are hashed whole; bigger ones are sampled
_SAMPLE_BLOCK = 1 << 20


@dataclass(frozen=True)
class ResolvedModel:
    """Where the weights are on disk, and what exactly they are."""

    spec: str  # as given
    path: Path  # the directory vLLM loads
    revision: str  # hub commit sha, or "local-sha256:<fingerprint>"
    repo_id: str | None = None
    subfolder: str | None = None

    @property
    def model_id(self) -> str:
        """The stable name recorded in samples (the repo id + subfolder, or the absolute path)."""
        if self.repo_id:
            return f"{self.repo_id}/{self.subfolder}" if self.subfolder else self.repo_id
        return str(self.path)


def is_path_spec(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~")) or os.path.exists(os.path.expanduser(spec))


def resolve(spec: str, what: str = "model", cache_dir: Path | None = None) -> ResolvedModel:
    """A local directory for `spec` plus its revision; GenerationError says what is wrong."""
    if not spec or not spec.strip():
        raise GenerationError(f"empty {what} spec")
    if is_path_spec(spec):
        path = Path(os.path.expanduser(spec)).resolve()
        if not path.exists():
            raise GenerationError(f"{what} path {spec!r} does not exist")
        if not path.is_dir():
            raise GenerationError(f"{what} path {spec!r} is not a directory")
        resolved = ResolvedModel(spec, path, "local-sha256:" + directory_fingerprint(path))
    else:
        match = _REPO_SPEC.match(spec)
        if not match:
            raise GenerationError(
                f"{what} {spec!r} is neither an existing path nor a Hugging Face repo id "
                "(owner/name[/subfolder][@revision])"
            )
        resolved = _from_hub(spec, match["repo"], match["subfolder"], match["revision"], what, cache_dir)
    _check_contents(resolved, what)
    return resolved


def _from_hub(
    spec: str, repo: str, subfolder: str | None, revision: str | None, what: str, cache_dir: Path | None
) -> ResolvedModel:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        snapshot = Path(
            snapshot_download(
                repo,
                revision=revision,
                allow_patterns=[f"{subfolder}/*"] if subfolder else None,
                cache_dir=cache_dir,
            )
        )
    except LocalEntryNotFoundError as exc:
        raise GenerationError(
            f"{what} {spec!r}: not in the local Hugging Face cache and the hub cannot be reached "
            f"(offline: {os.environ.get('HF_HUB_OFFLINE', '0')}); download it first or give a local path ({exc})"
        ) from None
    except (RepositoryNotFoundError, HfHubHTTPError, ValueError, OSError) as exc:
        raise GenerationError(f"{what} {spec!r}: cannot fetch from the Hugging Face hub: {exc}") from None
    path = snapshot / subfolder if subfolder else snapshot
    if not path.is_dir():
        raise GenerationError(f"{what} {spec!r}: the repo has no folder {subfolder!r}")
    return ResolvedModel(spec, path, snapshot.name, repo_id=repo, subfolder=subfolder)


def _check_contents(resolved: ResolvedModel, what: str) -> None:
    marker = "adapter_config.json" if what == "adapter" else "config.json"
    if not (resolved.path / marker).is_file():
        raise GenerationError(f"{what} {resolved.spec!r}: {resolved.path} has no {marker}; is it a {what}?")


def adapter_rank(adapter: ResolvedModel) -> int:
    """The LoRA rank `r` from adapter_config.json (what vLLM's max_lora_rank must cover)."""
    path = adapter.path / "adapter_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        rank = int(config["r"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GenerationError(f"adapter {adapter.spec!r}: cannot read its rank from {path}: {exc!r}") from None
    if rank < 1:
        raise GenerationError(f"adapter {adapter.spec!r}: rank r={rank} in {path}")
    return rank


def check_adapter_ranks(adapters: list[ResolvedModel], max_lora_rank: int) -> dict[str, int]:
    """Refuse adapters the engine cannot load (one too big kills the whole vLLM engine)."""
    ranks = {adapter.spec: adapter_rank(adapter) for adapter in adapters}
    too_big = {spec: rank for spec, rank in ranks.items() if rank > max_lora_rank}
    if too_big:
        shown = ", ".join(f"{spec} (r={rank})" for spec, rank in too_big.items())
        raise GenerationError(
            f"adapter rank exceeds the engine's max_lora_rank={max_lora_rank}: {shown}; "
            f"raise --max-lora-rank to at least {max(too_big.values())}"
        )
    return ranks


def model_context_length(model: ResolvedModel) -> int | None:
    """The context length the model's config declares, if it says (vLLM may use less)."""
    try:
        config = json.loads((model.path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    config = config.get("text_config", config)
    value = config.get("max_position_embeddings") or config.get("max_sequence_length")
    return int(value) if isinstance(value, int) else None


def directory_fingerprint(path: Path) -> str:
    """Content fingerprint of a local model directory: names, sizes and content hashes.

    Small files are hashed whole; multi-GB weight files are hashed by size plus 16 evenly spread
    1 MiB blocks, which tells apart any two checkpoints in practice at a cost of milliseconds.
    """
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not _ignored(p, path)):
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path).as_posix()}\0{size}\0".encode("utf-8"))
        with open(file, "rb") as handle:
            if size <= _FULL_HASH_LIMIT:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            else:
                for i in range(16):
                    handle.seek((size - _SAMPLE_BLOCK) * i // 15)
                    digest.update(handle.read(_SAMPLE_BLOCK))
    return digest.hexdigest()


def _ignored(file: Path, root: Path) -> bool:
    parts = file.relative_to(root).parts
    return any(part.startswith(".") or part == "__pycache__" for part in parts) or file.name == "README.md"
