"""`prompt`: one model call per record, the simplest pipeline (batch inference over a file).

Input records: {"id", "prompt"} (a raw completion) or {"id", "messages"} (a chat, a list of
{"role", "content"}), optionally "system" (prepended to a chat). Output: {"id", "output"}.
"""

from __future__ import annotations

from typing import Any

from jaxmm.generate.backends import Backend
from jaxmm.generate.params import GenerationParams
from jaxmm.pipelines.runtime import Pipeline, Record


def validate(record: Record) -> None:
    has_prompt, has_messages = "prompt" in record, "messages" in record
    if has_prompt == has_messages:
        raise ValueError("give exactly one of the fields 'prompt' or 'messages'")
    if has_prompt and not isinstance(record["prompt"], str):
        raise ValueError("field 'prompt' must be a string")
    if has_messages:
        msgs = record["messages"]
        ok = (
            isinstance(msgs, list)
            and msgs
            and all(
                isinstance(m, dict)
                and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str)
                for m in msgs
            )
        )
        if not ok:
            raise ValueError(
                "field 'messages' must be a non-empty list of {'role', 'content'} strings"
            )


def run(record: Record, backend: Backend, params: GenerationParams) -> dict[str, Any]:
    if "prompt" in record:
        return {"output": backend.complete([record["prompt"]], params)[0]}
    messages = list(record["messages"])
    if record.get("system"):
        messages = [{"role": "system", "content": record["system"]}, *messages]
    return {"output": backend.chat([messages], params)[0]}


PIPELINE = Pipeline(name="prompt", version="1", run=run, validate=validate)
