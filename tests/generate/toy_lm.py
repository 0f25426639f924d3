"""A one-layer decoder that follows the `jaxmm.models.llm` calling contract.

It lets the engine tests run on a model that is not the engine's usual one, so the engine is
checked against the contract rather than against one implementation's details:
`logits, cache = apply(params, tokens [B,T], positions [B,T], cache=...)` writes the T new
k/v rows at slots lengths..lengths+T-1 of each row and returns lengths += T.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class ToyCache:
    k: jax.Array  # [B, max_len, D]
    v: jax.Array  # [B, max_len, D]
    lengths: jax.Array  # [B] int32


def init_toy_cache(batch: int, max_len: int, dim: int = 16, dtype=jnp.float32) -> ToyCache:
    z = jnp.zeros((batch, max_len, dim), dtype)
    return ToyCache(k=z, v=z, lengths=jnp.zeros((batch,), jnp.int32))


class ToyLM(nn.Module):
    vocab: int
    dim: int = 16
    max_pos: int = 128

    @nn.compact
    def __call__(self, tokens, positions, cache=None, segment_ids=None, attention_mask=None):
        x = nn.Embed(self.vocab, self.dim)(tokens) + nn.Embed(self.max_pos, self.dim)(positions)
        q, k, v = (nn.Dense(self.dim, name=n)(x) for n in "qkv")
        b, t = tokens.shape
        if cache is None:
            keys, values = k, v
            k_pos = positions
            valid = jnp.ones((b, t), bool)
        else:
            write = jax.vmap(lambda c, new, s: jax.lax.dynamic_update_slice_in_dim(c, new, s, 0))
            keys = write(cache.k, k, cache.lengths)
            values = write(cache.v, v, cache.lengths)
            max_len = keys.shape[1]
            k_pos = jnp.broadcast_to(jnp.arange(max_len), (b, max_len))
            valid = k_pos < (cache.lengths + t)[:, None]
            cache = ToyCache(k=keys, v=values, lengths=cache.lengths + t)
        mask = valid[:, None, :] & (k_pos[:, None, :] <= positions[:, :, None])
        scores = jnp.einsum("btd,bsd->bts", q, keys) / jnp.sqrt(self.dim)
        attn = jax.nn.softmax(jnp.where(mask, scores, -1e30), axis=-1)
        h = x + jnp.einsum("bts,bsd->btd", attn, values)
        return nn.Dense(self.vocab)(jnp.tanh(h)) * 4.0, cache
