"""OpenAI request bodies -> engine inputs, with errors that name the bad field (HTTP 400).

Fields this engine cannot honour (logprobs, tools, penalties, ...) are refused, not ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jaxmm.generate.params import GenerationParams


class RequestError(ValueError):
    """A client error: answered with HTTP `status` and an OpenAI-style error body."""

    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.param = param
        self.status = status


def get_field(body: Mapping[str, Any], name: str, types: tuple[type, ...], default: Any) -> Any:
    """body[name] if it has one of `types` (None -> default); RequestError names the field."""
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in types:
        raise RequestError(f"'{name}' must be {_type_names(types)}, got a boolean", name)
    if not isinstance(value, types):
        raise RequestError(
            f"'{name}' must be {_type_names(types)}, got {type(value).__name__}", name
        )
    return value


def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join(
        {
            int: "an integer",
            float: "a number",
            str: "a string",
            bool: "a boolean",
            list: "a list",
        }.get(t, t.__name__)
        for t in types
    )


# Fields whose non-default values this server cannot honour: refused rather than ignored, so
# a client never silently gets something other than what it asked for.
_UNSUPPORTED = {
    "logprobs": (None, False, 0),
    "top_logprobs": (None, 0),
    "echo": (None, False),
    "best_of": (None, 1),
    "suffix": (None, ""),
    "tools": (None, []),
    "functions": (None, []),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "logit_bias": (None, {}),
}


def parse_params(body: Mapping[str, Any], default_max_tokens: int | None) -> GenerationParams:
    """GenerationParams from an OpenAI request body; RequestError names the bad field."""
    for name, defaults in _UNSUPPORTED.items():
        value = body.get(name)
        if not any(value == d and type(value) is type(d) for d in defaults):
            raise RequestError(f"'{name}' is not supported by this server", name)
    max_tokens = get_field(body, "max_completion_tokens", (int,), None)
    max_tokens = get_field(body, "max_tokens", (int,), max_tokens or default_max_tokens)
    temperature = float(get_field(body, "temperature", (int, float), 1.0))
    top_p = float(get_field(body, "top_p", (int, float), 1.0))
    top_k = get_field(body, "top_k", (int,), 0)
    seed = get_field(body, "seed", (int,), None)
    stop = get_field(body, "stop", (str, list), [])
    stop = [stop] if isinstance(stop, str) else stop
    if not all(isinstance(s, str) and s for s in stop):
        raise RequestError("'stop' must be a string or a list of non-empty strings", "stop")
    n = get_field(body, "n", (int,), 1)
    if n != 1:
        raise RequestError("'n' must be 1 (send several requests for several samples)", "n")
    if not 0 <= temperature <= 2:
        raise RequestError(f"'temperature' must be in [0, 2], got {temperature}", "temperature")
    if top_k == -1:  # vLLM's "disabled"
        top_k = 0
    try:
        return GenerationParams(
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            stop=tuple(stop),
            seed=seed,
        )
    except ValueError as e:
        field = str(e).split(" ", 1)[0]
        raise RequestError(f"'{field}': {e}", field) from None


def parse_messages(body: Mapping[str, Any]) -> list[dict[str, str]]:
    if "messages" not in body:
        raise RequestError("'messages' is required", "messages")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list", "messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise RequestError(
                f"'messages[{i}]' must be an object with a string 'role'", "messages"
            )
        content = m.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            parts = [p.get("text") for p in content if isinstance(p, dict)]
            if len(parts) != len(content) or not all(isinstance(p, str) for p in parts):
                raise RequestError(f"'messages[{i}].content' parts must be text parts", "messages")
            content = "".join(parts)
        if not isinstance(content, str):
            raise RequestError(f"'messages[{i}].content' must be a string", "messages")
        out.append({"role": m["role"], "content": content})
    return out


def parse_prompts(body: Mapping[str, Any]) -> list[str]:
    if "prompt" not in body:
        raise RequestError("'prompt' is required", "prompt")
    prompt = body["prompt"]
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise RequestError("'prompt' must be a string or a non-empty list of strings", "prompt")
    return prompts
