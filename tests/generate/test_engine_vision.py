"""The engine's image path on a tiny random VLM: token-for-token equal to a full-sequence
greedy decode with `VLM.apply` (no cache), with an image straddling a prefill-chunk boundary,
rows with and without images in one batch; and the image actually reaches the logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm.generate.image_parts import ImageInputError
from jaxmm.generate.params import GenerationParams
from tests.generate.fixtures import IMG, TPI

MAX_NEW = 8


@pytest.fixture(scope="module")
def vlm(tiny_vlm):
    return tiny_vlm


def _prompt(n_text_before: int, n_images: int) -> list[int]:
    """BOS, text, then images separated by 3 text tokens, then 2 text tokens."""
    ids = [0] + list(range(20, 20 + n_text_before))
    for i in range(n_images):
        ids += [IMG] * TPI + ([40 + i, 41 + i, 42 + i] if i < n_images - 1 else [])
    return ids + [50, 51]


def _images(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)


def _reference(model, params, engine, ids: list[int], images: np.ndarray | None) -> list[int]:
    """Greedy decode with VLM.apply on the whole sequence each step (no KV cache; a
    right-padded buffer of fixed length, read at the last real token: one compile)."""
    pixels = None if images is None else engine.image_encoder.preprocess(images)[None]
    logits_at = jax.jit(
        lambda buf, n, px: model.apply({"params": params}, buf, images=px)[0][0, n - 1]
    )
    out, ids = [], list(ids)
    for _ in range(MAX_NEW):
        buf = np.full((1, 48), 50, np.int32)  # pad with a text token, after the prompt
        buf[0, : len(ids)] = ids
        t = int(jnp.argmax(logits_at(buf, len(ids), pixels)))
        if t in engine.eos_token_ids:
            break
        assert t != IMG, "the reference would splice an image feature at a generated token"
        out.append(t)
        ids.append(t)
    return out


def test_engine_images_match_full_sequence_vlm(vlm):
    model, params, engine = vlm
    # Row 0: 12 text tokens put its first image at positions 13..16, across the chunk
    # boundary at 16 (prefill_chunk=16, prompt of 26 tokens -> 2 chunks).
    cases = [(_prompt(12, 2), _images(0, 2)), (_prompt(5, 0), None), (_prompt(3, 1), _images(1, 1))]
    assert cases[0][0][13:17] == [IMG] * TPI
    got = engine.generate(
        [c[0] for c in cases], GenerationParams(max_tokens=MAX_NEW), [c[1] for c in cases]
    )
    for (ids, images), completion in zip(cases, got, strict=True):
        assert completion.token_ids == _reference(model, params, engine, ids, images)
    # Alone (one row, one chunk-straddling request) it is the same answer.
    (alone,) = engine.generate([cases[0][0]], GenerationParams(max_tokens=MAX_NEW), [cases[0][1]])
    assert alone.token_ids == got[0].token_ids


def test_changing_an_image_changes_the_answer(vlm):
    _, _, engine = vlm
    ids = _prompt(12, 2)
    sets = [_images(seed, 2) for seed in range(4)]
    got = engine.generate([ids] * 4, GenerationParams(max_tokens=MAX_NEW), sets)
    # Same text, different pixels: the answers differ (a random model, so not all pairs).
    assert len({tuple(c.token_ids) for c in got}) > 1


def test_image_count_must_match_placeholders(vlm):
    _, _, engine = vlm
    with pytest.raises(ImageInputError, match="8 image placeholder tokens .* 1 images x 4"):
        engine.submit_many([_prompt(3, 2)], GenerationParams(max_tokens=2), [_images(0, 1)])
    with pytest.raises(ImageInputError, match=r"images\[0\] must be uint8"):
        engine.submit_many(
            [_prompt(3, 1)], GenerationParams(max_tokens=2), [np.zeros((1, 16, 16), np.uint8)]
        )
    assert not engine.has_work()
