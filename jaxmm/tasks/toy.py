"""Toy task: an MLP regresses a fixed random teacher network on procedural inputs.

Trains in seconds on CPU and exercises every trainer feature (sharded params with logical
axes, data pipeline, checkpoints, eval), so it is the trainer's test bed and the smoke demo.
"""

from __future__ import annotations

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxmm.data.pipeline import batched
from jaxmm.train.task import DataShard, Task


class MLP(nn.Module):
    """Residual MLP; kernels carry logical axes so FSDP / tensor rules can shard them."""

    features: int
    hidden: int
    depth: int
    out: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dense = lambda n, axes, name: nn.Dense(
            n,
            dtype=self.dtype,
            name=name,
            kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[1],)),
        )
        h = dense(self.features, (None, "embed"), "embed_in")(x)
        for i in range(self.depth):
            h = nn.with_logical_constraint(h, ("batch", "embed"))
            u = nn.gelu(
                dense(self.hidden, ("embed", "mlp"), f"up_{i}")(
                    nn.LayerNorm(dtype=self.dtype, name=f"norm_{i}")(h)
                )
            )
            u = nn.with_logical_constraint(u, ("batch", "mlp"))
            h = h + dense(self.features, ("mlp", "embed"), f"down_{i}")(u)
        return dense(self.out, ("embed", None), "head")(h).astype(jnp.float32)


def _teacher(seed: int, d_in: int, d_out: int):
    rng = np.random.default_rng(seed + 1_000_003)
    w1 = rng.normal(size=(d_in, 64)) / np.sqrt(d_in)
    w2 = rng.normal(size=(64, d_out)) / 8.0
    return lambda x: np.tanh(x @ w1) @ w2


class ToySource:
    """Record i: input x ~ N(0, I) seeded by (seed, stream, i) and target teacher(x).

    `stream` separates train (0) and held-out (1) inputs under the same teacher.
    """

    def __init__(self, size: int, d_in: int, d_out: int, seed: int, stream: int = 0):
        self.size, self.d_in, self.seed, self.stream = size, d_in, seed, stream
        self.teacher = _teacher(seed, d_in, d_out)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        x = (
            np.random.default_rng([self.seed, self.stream, i])
            .normal(size=(self.d_in,))
            .astype(np.float32)
        )
        return {"x": x, "y": self.teacher(x).astype(np.float32)}


class ToyTask(Task):
    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        m = config.model
        self.model = MLP(
            m.features,
            m.hidden,
            m.depth,
            config.data.d_out,
            dtype=jnp.dtype(config.precision.compute_dtype),
        )

    def init(self, rng):
        return self.model.init(rng, jnp.zeros((1, self.config.data.d_in)))["params"]

    def loss(self, params, batch, rng):
        pred = self.model.apply({"params": params}, batch["x"])
        mse = jnp.mean(jnp.square(pred - batch["y"]))
        return mse, {"mse": mse}

    def train_dataset(self, shard: DataShard) -> grain.IterDataset:
        d = self.config.data
        return batched(ToySource(d.train_size, d.d_in, d.d_out, d.seed), shard)

    def evaluate(self, params, step, workdir):
        d = self.config.data
        src = ToySource(d.eval_size, d.d_in, d.d_out, d.seed, stream=1)
        x = np.stack([src[i]["x"] for i in range(len(src))])
        y = np.stack([src[i]["y"] for i in range(len(src))])
        pred = jax.jit(self.model.apply)({"params": params}, x)
        mse = float(jnp.mean(jnp.square(pred - y)))
        baseline = float(np.mean(np.square(y - y.mean(0))))  # predict-the-mean
        return {"mse": mse, "r2": 1.0 - mse / baseline}


def build(config: ml_collections.ConfigDict) -> Task:
    return ToyTask(config)
