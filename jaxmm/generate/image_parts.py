"""OpenAI-style image content parts on the host: check them, decode them, take them out of a
conversation.

A message's `content` is a string or a list of parts, `{"type": "text", "text": ...}` or
`{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}` (the format
`jaxmm.pipelines.mf2.frame_parts` writes and OpenAI-compatible VLM servers read). Only data
URLs are decoded: a model call never fetches from the network. Errors name the message and
part index. Numpy + PIL only (no JAX), so backends and the server schema can use it.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Message = Mapping[str, Any]


class ImageInputError(ValueError):
    """An image part is malformed, or images were sent to a model that takes none."""


def part_text(part: Any, where: str) -> str | None:
    """The text of a text part, None for an image part; ImageInputError names `where`."""
    if not isinstance(part, Mapping):
        raise ImageInputError(f"{where} must be a dict part, got {type(part).__name__}")
    kind = part.get("type")
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise ImageInputError(f"{where} is a text part without a string 'text'")
        return part["text"]
    if kind == "image_url":
        image_url = part.get("image_url")
        url = image_url.get("url") if isinstance(image_url, Mapping) else None
        if not isinstance(url, str):
            raise ImageInputError(f"{where} is an image_url part without image_url.url")
        return None
    raise ImageInputError(f"{where} has type {kind!r}; expected 'text' or 'image_url'")


def decode_data_url(url: str, where: str) -> np.ndarray:
    """A `data:image/...;base64,` URL -> uint8 RGB [H, W, 3]."""
    from PIL import Image, UnidentifiedImageError

    head, sep, payload = url.partition(",")
    if not (sep and head.startswith("data:image/") and head.endswith(";base64")):
        raise ImageInputError(
            f"{where}: only base64 image data URLs (data:image/<fmt>;base64,...) are "
            f"accepted, got {url[:40]!r}"
        )
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageInputError(f"{where}: bad base64 in the image data URL ({e})") from None
    try:
        with Image.open(io.BytesIO(raw)) as img:
            return np.asarray(img.convert("RGB"), np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise ImageInputError(f"{where}: the data URL holds no readable image ({e})") from None


def has_images(conversation: Sequence[Message]) -> bool:
    """Whether any message's content is a part list holding an image part."""
    return any(
        isinstance(m.get("content"), list)
        and any(isinstance(p, Mapping) and p.get("type") == "image_url" for p in m["content"])
        for m in conversation
    )


def check_parts(conversation: Sequence[Message]) -> None:
    """Every part of every list content is a well-formed text or image_url part (URLs are
    not decoded here: see `split_images`)."""
    for i, m in enumerate(conversation):
        content = m.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                part_text(part, f"messages[{i}].content[{j}]")


def split_images(
    conversation: Sequence[Message], marker: str
) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """The conversation with string contents, each image part replaced by `marker`, and the
    decoded images in order. A text that already contains `marker` is refused (it would
    become an image slot)."""
    messages: list[dict[str, Any]] = []
    images: list[np.ndarray] = []
    for i, m in enumerate(conversation):
        content = m.get("content")
        if isinstance(content, str):
            pieces = [(content, f"messages[{i}].content")]
        elif isinstance(content, list):
            pieces = []
            for j, part in enumerate(content):
                where = f"messages[{i}].content[{j}]"
                text = part_text(part, where)
                if text is None:
                    images.append(decode_data_url(part["image_url"]["url"], where))
                    pieces.append((marker, None))
                else:
                    pieces.append((text, where))
        else:
            raise ImageInputError(
                f"messages[{i}].content must be a string or a list of parts, "
                f"got {type(content).__name__}"
            )
        for text, where in pieces:
            if where is not None and marker in text:
                raise ImageInputError(f"{where} contains the image marker {marker!r}")
        messages.append({**m, "content": "".join(t for t, _ in pieces)})
    return messages, images
