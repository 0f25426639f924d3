"""OpenAI request bodies as pydantic (v2) models -> engine inputs, with errors that name the
bad field (HTTP 400, OpenAI's error shape).

The models are strict and closed: a wrong type is an error (no "3" -> 3 coercion), and a field
this server does not know is refused, never ignored, so a client never silently gets something
other than what it asked for. Fields the engine cannot honour (logprobs, tools, penalties,
JSON mode, ...) are accepted only at their no-op default.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError

from jaxmm.generate.image_parts import ImageInputError, part_text
from jaxmm.generate.params import GenerationParams

Prompt = str | list[int]


class RequestError(ValueError):
    """A client error: answered with HTTP `status` and an OpenAI-style error body."""

    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.param = param
        self.status = status


def _refuse(name: str, why: str = "is not supported by this server") -> PydanticCustomError:
    return PydanticCustomError("unsupported", f"'{name}' {why}")


# Fields whose non-default values this server cannot honour, with the values that mean "off".
_UNSUPPORTED: dict[str, tuple[Any, ...]] = {
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


def _stop(value: Any) -> tuple[str, ...]:
    """`stop`: a string or a list of non-empty strings (OpenAI allows both)."""
    stops = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise PydanticCustomError(
            "stop_type", "'stop' must be a string or a list of non-empty strings"
        )
    return tuple(stops)


def _prompts(value: Any) -> list[Prompt]:
    """`prompt`: a string, a list of strings, a list of token ids, or a list of such lists
    (OpenAI's four forms). Each string or id list becomes one choice."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(p, str) for p in value):
            return list(value)
        if all(_is_token_id(t) for t in value):
            return [list(value)]
        if all(isinstance(p, list) and p and all(_is_token_id(t) for t in p) for p in value):
            return [list(p) for p in value]
    raise PydanticCustomError(
        "prompt_type",
        "'prompt' must be a string, a non-empty list of strings, a non-empty list of token ids "
        "(integers) or a list of non-empty token-id lists",
    )


def _is_token_id(t: Any) -> bool:
    return isinstance(t, int) and not isinstance(t, bool)


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Closed):
    include_usage: bool = False


def _content(value: Any) -> str | list[dict[str, Any]]:
    """A message's `content`: a string, or a list of text / image_url parts (text-only lists
    are joined; with images the parts are kept, and the server refuses them when its engine
    takes no images)."""
    if isinstance(value, list):
        try:
            texts = [part_text(p, f"part {j}") for j, p in enumerate(value)]
        except ImageInputError as e:
            raise PydanticCustomError("content_type", str(e)) from None
        if all(isinstance(t, str) for t in texts):
            return "".join(texts)
        return [dict(p) for p in value]
    if not isinstance(value, str):
        raise PydanticCustomError("content_type", "must be a string or a list of parts")
    return value


class Message(_Closed):
    role: str
    content: Annotated[str | list[dict[str, Any]], BeforeValidator(_content)]


class _Request(_Closed):
    """Fields both endpoints share."""

    model: str | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # extension, as in vLLM (-1 or 0: off)
    seed: int | None = None
    stop: Annotated[tuple[str, ...], BeforeValidator(_stop)] = ()
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    n: int | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None  # an end-user id for the caller's logs; changes no output
    logprobs: Any = None
    top_logprobs: Any = None
    echo: Any = None
    best_of: Any = None
    suffix: Any = None
    tools: Any = None
    functions: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None
    logit_bias: Any = None

    @field_validator(*_UNSUPPORTED, mode="before")
    @classmethod
    def _no_op_only(cls, value: Any, info: Any) -> Any:
        if not any(value == d and type(value) is type(d) for d in _UNSUPPORTED[info.field_name]):
            raise _refuse(info.field_name)
        return value

    @field_validator("response_format", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if value is None:
            return value
        kind = value.get("type") if isinstance(value, dict) else None
        if kind == "text" and len(value) == 1:
            return value
        if kind in ("json_object", "json_schema"):
            raise _refuse(
                "response_format",
                f"type {kind!r} is not supported: this server has no constrained (JSON) "
                "decoding; only {'type': 'text'} is accepted",
            )
        raise _refuse("response_format", "must be {'type': 'text'}")

    def params(self, default_max_tokens: int | None) -> GenerationParams:
        """GenerationParams for this request; RequestError names the bad field."""
        if self.stream_options is not None and not self.stream:
            raise RequestError(
                "'stream_options' is only allowed when 'stream' is true", "stream_options"
            )
        if self.n not in (None, 1):
            raise RequestError("'n' must be 1 (send several requests for several samples)", "n")
        temperature = 1.0 if self.temperature is None else self.temperature  # OpenAI's default
        if not 0 <= temperature <= 2:
            raise RequestError(f"'temperature' must be in [0, 2], got {temperature}", "temperature")
        top_k = self.top_k or 0
        max_tokens = self.max_tokens
        if max_tokens is None:
            max_tokens = self.max_completion_tokens or default_max_tokens
        try:
            return GenerationParams(
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=1.0 if self.top_p is None else self.top_p,
                top_k=0 if top_k == -1 else top_k,  # -1: vLLM's "disabled"
                stop=self.stop,
                seed=self.seed,
            )
        except ValueError as e:
            field = str(e).split(" ", 1)[0]
            raise RequestError(f"'{field}': {e}", field) from None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(_Request):
    messages: list[Message] = Field(min_length=1)
    # vLLM's extension: continue the last (assistant) message instead of answering it.
    continue_final_message: bool = False

    def conversation(self) -> list[dict[str, Any]]:
        return [{"role": m.role, "content": m.content} for m in self.messages]


class CompletionRequest(_Request):
    prompt: Annotated[list[Prompt], BeforeValidator(_prompts)]


def parse(model: type[_Request], body: Any) -> Any:
    """Validate a decoded JSON body; RequestError names the first bad field."""
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise _request_error(e) from None


def _request_error(e: ValidationError) -> RequestError:
    err = e.errors(include_url=False)[0]
    loc = err["loc"]
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    msg = err["msg"]
    if err["type"] == "missing":
        msg = f"'{path}' is required"
    elif err["type"] == "extra_forbidden":
        msg = f"'{path}' is not a field this server knows (it refuses options it cannot honour)"
    elif not msg.startswith("'"):  # pydantic's own message: say where, and what came
        got = type(err["input"]).__name__ if "input" in err else None
        msg = f"'{path}': {msg}" + (f", got {got}" if got else "")
    return RequestError(msg, str(loc[0]) if loc else None)
