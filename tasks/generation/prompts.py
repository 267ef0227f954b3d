"""Prompt styles: what the model is shown for a problem, and when its answer ends.

- `instruct`: the model's own chat template around one user message: the instruction below and
  the problem's prompt in a ```rust block. The answer is read by the evaluate stage's
  normalizer (markdown fence, full function), so no stop sequence: the model ends its turn.
- `completion`: the raw prompt prefix (comments + signature ending in `{`), continued by the
  model until the function's closing brace at column 0. The stop string is not part of the
  output; the normalizer closes a body that stopped right before its `}` (MultiPL-E's form).

The instruction text, the stop sequences and the chat template's hash are part of the samples'
identity (`prompt_identity`): changing any of them makes new samples, never mixes them.
"""

from __future__ import annotations

from enum import Enum

from tasks.generation.base import GenerationError, text_sha256
from tasks.schema import Problem


class PromptStyle(str, Enum):
    INSTRUCT = "instruct"
    COMPLETION = "completion"


INSTRUCTION = (
    "Complete the following Rust function. Implement only the requested function (helper "
    "functions are allowed); do not write a `main` function, tests, or explanations. Reply with "
    "the complete function in one ```rust code block."
)
COMPLETION_STOP = ("\n}",)  # the function's closing brace at column 0 ends the body


def user_message(problem: Problem) -> str:
    return f"{INSTRUCTION}\n\n```rust\n{problem.prompt}\n```"


def messages_for(problem: Problem) -> list[dict]:
    """The chat of the instruct style: one user turn (the template adds the rest)."""
    return [{"role": "user", "content": user_message(problem)}]


def stop_for(style: PromptStyle) -> list[str]:
    return list(COMPLETION_STOP) if style is PromptStyle.COMPLETION else []


def prompt_identity(style: PromptStyle, chat_template: str | None) -> dict:
    """What of the prompt construction is part of a sample's identity."""
    if style is PromptStyle.INSTRUCT:
        return {
            "prompt_style": style.value,
            "instruction": INSTRUCTION,
            "chat_template_sha256": text_sha256(chat_template) if chat_template else None,
        }
    return {"prompt_style": style.value, "stop": list(COMPLETION_STOP)}


def require_template(style: PromptStyle, chat_template: str | None, model: str) -> None:
    """The instruct style without a chat template would silently become a completion prompt."""
    if style is PromptStyle.INSTRUCT and not chat_template:
        raise GenerationError(
            f"model {model} has no chat template, so the instruct prompt style cannot be used; "
            "use --prompt-style completion"
        )
