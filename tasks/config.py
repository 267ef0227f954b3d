"""The one typed configuration shared by the CLI, the flow parameters and prefect.yaml.

Every field that can change a verdict is part of the results' identity (see `identity()`),
so a resumed run can never mix results computed under different settings.
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


class SandboxKind(str, Enum):
    FIREJAIL = "firejail"
    BUBBLEWRAP = "bubblewrap"
    NONE = "none"  # explicit opt-out only: recorded in every row and warned about


class PolicyChoice(str, Enum):
    ON = "on"
    OFF = "off"
    BOTH = "both"

    def modes(self) -> list[str]:
        """Policy modes to report; both come from the same samples (policy is pure)."""
        return {"on": ["policy"], "off": ["no_policy"], "both": ["no_policy", "policy"]}[self.value]


class ExecutorConfig(BaseModel):
    """How completions are compiled, run and judged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sandbox: SandboxKind = SandboxKind.BUBBLEWRAP  # allow-list filesystem, ~5x faster launch
    edition: str = "2021"
    compile_timeout_s: float = Field(15.0, gt=0)  # bigcode-evaluation-harness uses 15 s
    run_timeout_s: float = Field(5.0, gt=0)  # … and 5 s for the run
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    max_completion_bytes: int = Field(64_000, gt=0)
    diagnostic_chars: int = Field(2_000, gt=0)
    work_root: Path | None = None  # where per-sample work dirs live; the sandbox picks a default

    @field_validator("edition")
    @classmethod
    def _known_edition(cls, value: str) -> str:
        if value not in {"2015", "2018", "2021", "2024"}:
            raise ValueError(f"unknown Rust edition {value!r}; use 2015, 2018, 2021 or 2024")
        return value

    def identity(self) -> dict:
        """Settings that can change a verdict (workers and paths cannot)."""
        return {
            "sandbox": self.sandbox.value,
            "edition": self.edition,
            "compile_timeout_s": self.compile_timeout_s,
            "run_timeout_s": self.run_timeout_s,
            "max_completion_bytes": self.max_completion_bytes,
        }
