"""Errors that mean "the input or the machine is wrong", shown to the user without a traceback."""

from __future__ import annotations


def user_errors() -> tuple[type[BaseException], ...]:
    """Every exception type whose message alone tells the user what to fix."""
    from tasks.artifacts import RunDirLocked, RunIdentityMismatch
    from tasks.metrics import MetricsError
    from tasks.problems import BenchmarkError
    from tasks.samples import SamplesError
    from tasks.sandbox import SandboxUnavailable
    from tasks.toolchain import ToolchainMissing

    return (
        BenchmarkError,
        SamplesError,
        SandboxUnavailable,
        ToolchainMissing,
        MetricsError,
        RunDirLocked,
        RunIdentityMismatch,
    )
