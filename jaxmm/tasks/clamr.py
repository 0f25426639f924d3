"""CLaMR task: multimodal late-interaction retrieval over MultiVENT-layout videos.

    python launch/train.py --config=configs/clamr.py:tiny --workdir=runs/clamr

Model `jaxmm.models.clamr` (MiniLM backbone + frame patch embedder; or, with
`configs/clamr.py:paper` / `qwen_tiny`, Qwen2.5-VL from a HF folder: its tokenizer.json builds
the inputs, its safetensors are the backbone's starting weights, LoRA (with dropout in
training) + head trained; the epoch recipe becomes num_steps), objectives
`jaxmm.tasks.clamr_loss`, evaluation (index -> search -> nDCG / recall / modality accuracy)
`jaxmm.tasks.clamr_eval`. With an empty `config.data.data_dir` the procedural corpus
(`jaxmm.data.clamr_synth`) is generated into `<workdir>/data` before training.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxmm.data import clamr_synth
from jaxmm.data.multivent import MODALITIES, MultiventSplit, load_frames, load_multivent
from jaxmm.data.pipeline import batched
from jaxmm.models.clamr import (
    Clamr,
    MiniLMBackbone,
    encode_documents,
    encode_queries,
    load_minilm,
    qwen_backbone,
    qwen_text_overrides,
)
from jaxmm.models.clamr_inputs import (
    NUM_MODALITIES,
    ClamrInputs,
    InputConfig,
    load_tokenizer,
    model_folder,
    qwen_layout,
)
from jaxmm.models.qwen2_5_vl.hf import load_hf
from jaxmm.models.text_encoder import minilm_model_dir
from jaxmm.tasks import clamr_eval
from jaxmm.tasks.clamr_loss import clamr_loss, in_batch_scores, token_max_modality
from jaxmm.train import checkpoint
from jaxmm.train.optim import epoch_schedule
from jaxmm.train.task import DataShard, Task

SCORINGS = ("modality_max", "token_max")
BACKBONES = ("minilm", "qwen2_5_vl")


class ArraySource:
    """Record i = row i of every array (a random-access grain source)."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays
        self.size = len(next(iter(arrays.values())))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {k: v[i] for k, v in self.arrays.items()}


class ClamrTask(Task):
    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        m, d, loss = config.model, config.data, config.loss
        if m.backbone not in BACKBONES:
            raise ValueError(
                f"config.model.backbone must be one of {BACKBONES}, got {m.backbone!r}"
            )
        self.qwen = m.backbone == "qwen2_5_vl"
        if loss.scoring not in SCORINGS:
            raise ValueError(f"config.loss.scoring must be one of {SCORINGS}, got {loss.scoring!r}")
        if m.pooling == "mean" and (loss.scoring != "token_max" or not m.contextualized):
            raise ValueError("mean pooling needs loss.scoring='token_max', model.contextualized")
        if self.qwen:
            backbone, tokenizer, layout, n_vis = self._qwen_backbone()
        else:
            bert, self.bert_params, tokenizer = load_minilm(
                m.model_dir or minilm_model_dir(), m.num_layers or None
            )
            backbone = MiniLMBackbone(bert, m.patch)
            layout = None
            n_vis = d.num_frames * (d.frame_size // m.patch) ** 2
        self.inputs = ClamrInputs(
            tokenizer,
            InputConfig(
                query_len=d.query_len,
                num_buffer_tokens=d.num_buffer_tokens,
                num_visual_tokens=n_vis,
                budgets=(
                    ("ocr", d.budget_ocr),
                    ("asr", d.budget_asr),
                    ("description", d.budget_description),
                ),  # fmt: skip
                max_doc_len=d.max_doc_len,
            ),
            layout,
        )
        self.model = Clamr(backbone, m.dim, m.pooling)  # eval / index: deterministic
        # Training: LoRA dropout on (Qwen with LoRA and model.lora_dropout > 0); same params.
        self.train_model = self.model
        if self.qwen and m.lora_rank and m.lora_dropout > 0:
            self.train_model = self.model.clone(backbone=backbone.clone(deterministic=False))
        self.root: Path | None = Path(d.data_dir) if d.data_dir else None
        self._splits: dict[str, MultiventSplit] = {}
        self._resolve_epochs()

    def _qwen_backbone(self):
        """(backbone, the folder's tokenizer, Qwen's token layout, placeholders per video)."""
        m, d = self.config.model, self.config.data
        backbone = qwen_backbone(m)
        qc = backbone.config
        tokenizer = load_tokenizer(m.model_dir)
        layout = qwen_layout(
            tokenizer,
            expect={
                "<|video_pad|>": qc.video_token_id,
                "<|vision_start|>": qc.vision_start_token_id,
                "<|vision_end|>": qc.vision_end_token_id,
            },
        )
        self.bert_params = None
        v = qc.vision
        unit = v.patch_size * v.spatial_merge_size
        if d.frame_size % unit:
            raise ValueError(
                f"config.data.frame_size={d.frame_size}: Qwen2.5-VL frames must be a multiple "
                f"of {unit} px (patch {v.patch_size} x merge {v.spatial_merge_size})"
            )
        grid_t = -(-d.num_frames // v.temporal_patch_size)
        n_vis = grid_t * (d.frame_size // v.patch_size) ** 2 // v.spatial_merge_size**2
        return backbone, tokenizer, layout, n_vis

    # ------------------------------------------------------------------ data
    def num_train_queries(self) -> int:
        """Training examples per epoch: the train split's queries (the procedural corpus'
        size is known from its config before it is generated)."""
        d = self.config.data
        if not d.data_dir:
            return clamr_synth.num_queries(d.train_groups)
        return len(self.split("train").queries)

    def _resolve_epochs(self) -> None:
        """`recipe.epochs > 0` (the paper: 1 epoch, warmup 0.1) with `num_steps == 0` sets
        num_steps and warmup_steps from the train split's size; an explicit num_steps wins
        (then warmup is still the ratio of it). The resolved values land in config.json."""
        c = self.config
        recipe = c.get("recipe")
        if recipe is None or recipe.epochs <= 0:
            return
        with c.unlocked():
            if c.num_steps <= 0:
                c.num_steps, _ = epoch_schedule(
                    recipe.epochs, self.num_train_queries(), c.batch_size
                )
            if recipe.warmup_ratio > 0:
                c.optimizer.warmup_steps = round(recipe.warmup_ratio * c.num_steps)

    def prepare(self, workdir: str) -> None:
        """Generates the procedural corpus into `<workdir>/data` when no data_dir is set."""
        d = self.config.data
        if d.data_dir:
            return
        self.root = Path(workdir) / "data"
        if not (self.root / "test.jsonl").is_file():
            clamr_synth.generate(
                self.root,
                splits={"train": d.train_groups, "test": d.test_groups},
                seed=d.seed,
                n_frames=d.num_frames,
                frame_size=d.synth_frame_size,
                noise=d.get("synth_noise", False),
            )

    def split(self, name: str) -> MultiventSplit:
        if self.root is None:
            raise ValueError("config.data.data_dir is empty and prepare(workdir) was not called")
        if name not in self._splits:
            self._splits[name] = load_multivent(self.root, name)
        return self._splits[name]

    def video_arrays(self, split: MultiventSplit, video_ids: list[str]) -> dict[str, np.ndarray]:
        """Document ids / mask / modality (joint [n, L] or separate [n, 4, L]) + frames."""
        d = self.config.data
        videos = [split.videos[v] for v in video_ids]
        texts = [{k: v.text(k) for k in ("ocr", "asr", "description")} for v in videos]
        docs = self.inputs.documents(
            texts, separate=not self.config.model.contextualized, names=video_ids
        )
        frames = np.stack([load_frames(v, d.num_frames, d.frame_size) for v in videos])
        return {"d_ids": docs.ids, "d_mask": docs.mask, "d_mod": docs.modality, "frames": frames}

    def query_arrays(self, split: MultiventSplit, query_ids: list[str]) -> dict[str, np.ndarray]:
        queries = [split.queries[q] for q in query_ids]
        ids, mask = self.inputs.queries([q.text for q in queries])
        gold = np.array([q.modality_id for q in queries], np.int32)
        return {"q_ids": ids, "q_mask": mask, "gold_modality": gold}

    def train_arrays(self) -> dict[str, np.ndarray]:
        split = self.split("train")
        qids = list(split.queries)
        gold_videos = [split.gold(q)[0] for q in qids]
        return self.query_arrays(split, qids) | self.video_arrays(split, gold_videos)

    def train_dataset(self, shard: DataShard) -> grain.IterDataset:
        return batched(ArraySource(self.train_arrays()), shard)

    # ----------------------------------------------------------------- model
    def init(self, rng: jax.Array):
        c = self.config.data
        q = jnp.zeros((1, c.query_len), jnp.int32)
        ids = jnp.zeros((1, self.inputs.doc_len), jnp.int32)
        mod = ids.at[:, 1].set(1)
        frames = jnp.zeros((1, c.num_frames, c.frame_size, c.frame_size, 3))
        params = self.model.init(rng, ids, jnp.ones_like(ids), mod, frames)["params"]
        del q
        if self.qwen:
            return params  # random init (qwen_tiny); LoRA factors from the model's init
        pretrained = jax.tree.map(jnp.asarray, self.bert_params)

        def load(box, value):
            if isinstance(box, nn.meta.AxisMetadata):
                return box.replace_boxed(value)
            return value

        is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)
        bert = jax.tree.map(load, params["backbone"]["bert"], pretrained, is_leaf=is_box)
        return {**params, "backbone": {**params["backbone"], "bert": bert}}

    def pretrained_params(self, abstract_params):
        """Qwen2.5-VL: the checkpoint folder's safetensors (`load_hf`, each tensor straight into
        its shards) under `backbone/`; the head and the LoRA factors as `init` makes them (a
        jitted init that returns only those, so the backbone's random weights are never
        materialised). MiniLM's weights come in through `init` (None here)."""
        if not self.qwen:
            return None
        m = self.config.model
        mesh = getattr(getattr(jax.tree.leaves(abstract_params)[0], "sharding", None), "mesh", None)
        _, base = load_hf(
            model_folder(m.model_dir),
            mesh=mesh,
            rules=tuple(self.config.logical_axis_rules),
            text_overrides=qwen_text_overrides(m),
        )
        base["lm"].pop("lm_head", None)  # an encoder: hidden states, never logits
        return with_backbone(abstract_params, base, self.init, self.config.seed)

    def trainable_mask(self, params):
        """LoRA backbones: the LoRA factors and the projection head; else everything."""
        if not (self.qwen and self.config.model.lora_rank):
            return None
        keys = {"lora_a", "lora_b", "head"}
        return jax.tree_util.tree_map_with_path(
            lambda p, _: any(getattr(k, "key", None) in keys for k in p), params
        )

    def scores(self, params, batch, rng: jax.Array | None = None) -> tuple[jax.Array, int]:
        """In-batch per-modality scores [B, B, M] (M = 1 for token-max / mean pooling). With
        `rng` (training) the dropout model runs, queries and documents on their own keys."""
        model, q_rngs, d_rngs = self.model, None, None
        if rng is not None:
            q_key, d_key = jax.random.split(rng)
            model, q_rngs, d_rngs = self.train_model, {"dropout": q_key}, {"dropout": d_key}
        q_emb, q_keep = encode_queries(model, params, batch["q_ids"], batch["q_mask"], rngs=q_rngs)
        d_emb, d_mod = encode_documents(
            model,
            params,
            batch["d_ids"],
            batch["d_mask"],
            batch["d_mod"],
            batch["frames"],
            rngs=d_rngs,
        )
        m = NUM_MODALITIES
        if self.config.loss.scoring == "token_max" or self.model.pooling == "mean":
            d_mod, m = token_max_modality(d_mod), 1
        loss = self.config.loss
        per_mod = in_batch_scores(
            q_emb, q_keep, d_emb, d_mod, m, normalize=loss.normalize, impl=loss.impl
        )
        return per_mod, m

    def loss(self, params, batch, rng):
        per_mod, _ = self.scores(params, batch, rng)
        return clamr_loss(
            per_mod,
            batch["gold_modality"],
            objective=self.config.loss.objective,
            temperature=self.config.loss.temperature,
        )

    # ------------------------------------------------------------------ eval
    @functools.cached_property
    def encoders(self):
        """Jitted (query encoder, document encoder) for evaluation and indexing."""
        q = jax.jit(functools.partial(encode_queries, self.model))
        d = jax.jit(functools.partial(encode_documents, self.model))
        return q, d

    def evaluate(self, params, step: int, workdir: str) -> dict[str, float]:
        """Test-split retrieval metrics; the TREC run goes to `<workdir>/eval/run.trec`. With
        `data.eval_per_modality`, also each modality's tokens alone (`only_<m>/<metric>`)."""
        out = os.path.join(workdir, "eval")
        split = self.config.data.eval_split
        encoded = clamr_eval.encode_split(self, params, split)
        metrics, _ = clamr_eval.evaluate(
            self, params, split, run_out=os.path.join(out, "run.trec"), encoded=encoded
        )
        if self.config.data.eval_per_modality and self.model.pooling == "tokens":
            for mid, name in enumerate(MODALITIES, start=1):
                only, _ = clamr_eval.evaluate(
                    self, params, split, only_modality=mid, encoded=encoded
                )
                metrics |= {f"only_{name}/{k}": v for k, v in only.items()}
        return metrics


def _is_fresh(path) -> bool:
    """Leaves `init` owns in a pretrained run: everything outside backbone/, LoRA factors."""
    keys = [getattr(k, "key", None) for k in path]
    return keys[0] != "backbone" or keys[-1] in ("lora_a", "lora_b")


def with_backbone(abstract_params, backbone, init_fn, seed: int):
    """Full params: `backbone` (e.g. HF weights) under backbone/ + the head and LoRA factors
    from `init_fn(key(seed))`. Structure and shapes are checked against `abstract_params`;
    a mismatch names the param (a checkpoint of another base model)."""
    abstract = nn.meta.unbox(abstract_params)
    name = lambda path: "/".join(str(getattr(k, "key", k)) for k in path)

    def fresh_fn(rng):
        leaves = jax.tree_util.tree_leaves_with_path(nn.meta.unbox(init_fn(rng)))
        return {name(p): v for p, v in leaves if _is_fresh(p)}

    fresh = jax.jit(fresh_fn)(jax.random.key(seed))  # XLA drops the unused random weights
    used = set()

    def pick(path, want):
        key = name(path)
        if _is_fresh(path):
            return fresh[key]
        node = backbone
        for k in path[1:]:
            if not isinstance(node, dict) or k.key not in node:
                raise ValueError(f"pretrained backbone has no param {key} (another base model?)")
            node = node[k.key]
        if tuple(node.shape) != tuple(want.shape):
            raise ValueError(
                f"pretrained {key} has shape {tuple(node.shape)}, the model wants "
                f"{tuple(want.shape)} (a checkpoint of another base model?)"
            )
        used.add(key)
        return node

    out = jax.tree_util.tree_map_with_path(pick, abstract)
    extra = {"backbone/" + name(p) for p, _ in jax.tree_util.tree_leaves_with_path(backbone)}
    if extra - used:
        raise ValueError(
            f"pretrained backbone params the model does not use: {sorted(extra - used)[:5]}"
        )
    return out


def load_trained(workdir: str, data_dir: str = "") -> tuple[ClamrTask, Any]:
    """(task, params) of a trained CLaMR workdir (its config.json + newest checkpoint), for
    indexing and search; `data_dir` points the task at another MultiVENT-layout folder."""
    path = Path(workdir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {workdir} is not a training workdir")
    config = ml_collections.ConfigDict(json.loads(path.read_text()))
    if config.get("task") != "clamr":
        raise ValueError(f"{path}: task is {config.get('task')!r}, not 'clamr'")
    config.data.data_dir = data_dir or config.data.data_dir or str(Path(workdir) / "data")
    task = ClamrTask(config)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
        nn.meta.unbox(jax.eval_shape(task.init, jax.random.key(0))),
    )
    _, params = checkpoint.load_params(workdir, abstract)
    return task, params


def build(config: ml_collections.ConfigDict) -> Task:
    return ClamrTask(config)
