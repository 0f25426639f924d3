"""CLaMR task: multimodal late-interaction retrieval over MultiVENT-layout videos.

    python launch/train.py --config=configs/clamr.py:tiny --workdir=runs/clamr

Model `jaxmm.models.clamr` (MiniLM backbone + frame patch embedder; with
`configs/clamr.py:qwen_tiny` a tiny random Qwen2.5-VL backbone, LoRA + head trained, MiniLM
token ids folded into its vocabulary as a stand-in tokenizer), objectives
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
)
from jaxmm.models.clamr_inputs import NUM_MODALITIES, ClamrInputs, InputConfig
from jaxmm.models.text_encoder import minilm_model_dir
from jaxmm.tasks import clamr_eval
from jaxmm.tasks.clamr_loss import clamr_loss, in_batch_scores, token_max_modality
from jaxmm.train import checkpoint
from jaxmm.train.task import DataShard, Task

SCORINGS = ("modality_max", "token_max")


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
        self.qwen = m.backbone == "qwen2_5_vl" and bool(m.get("minilm_ids_stand_in", False))
        if m.backbone != "minilm" and not self.qwen:
            raise NotImplementedError(
                f"config.model.backbone={m.backbone!r}: the trainer drives only 'minilm'; the "
                "Qwen2.5-VL backbone exists (jaxmm.models.clamr.qwen_backbone / "
                "Qwen25VLBackbone) but its input builder (Qwen tokenizer) and weight loading "
                "are not wired into this task yet"
            )
        if loss.scoring not in SCORINGS:
            raise ValueError(f"config.loss.scoring must be one of {SCORINGS}, got {loss.scoring!r}")
        if m.pooling == "mean" and (loss.scoring != "token_max" or not m.contextualized):
            raise ValueError("mean pooling needs loss.scoring='token_max', model.contextualized")
        if self.qwen:
            # Plumbing only (qwen_tiny): the MiniLM tokenizer's ids folded into the tiny random
            # model's vocabulary (below its special ids); no Qwen tokenizer, no Qwen weights.
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(minilm_model_dir() / "tokenizer.json"))
            backbone = qwen_backbone(m)
            self.fold_vocab = min(backbone.config.image_token_id, backbone.config.video_token_id)
            self.bert_params = None
            grid_t = -(-d.num_frames // backbone.config.vision.temporal_patch_size)
            merge = backbone.config.vision.spatial_merge_size
            n_vis = grid_t * (d.frame_size // m.patch) ** 2 // merge**2
        else:
            bert, self.bert_params, tokenizer = load_minilm(
                m.model_dir or minilm_model_dir(), m.num_layers or None
            )
            backbone = MiniLMBackbone(bert, m.patch)
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
        )
        self.model = Clamr(backbone, m.dim, m.pooling)
        self.root: Path | None = Path(d.data_dir) if d.data_dir else None
        self._splits: dict[str, MultiventSplit] = {}

    # ------------------------------------------------------------------ data
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
        ids = self._fold(docs.ids)
        return {"d_ids": ids, "d_mask": docs.mask, "d_mod": docs.modality, "frames": frames}

    def _fold(self, ids: np.ndarray) -> np.ndarray:
        return ids % self.fold_vocab if self.qwen else ids

    def query_arrays(self, split: MultiventSplit, query_ids: list[str]) -> dict[str, np.ndarray]:
        queries = [split.queries[q] for q in query_ids]
        ids, mask = self.inputs.queries([q.text for q in queries])
        ids = self._fold(ids)
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

    def trainable_mask(self, params):
        """LoRA backbones: the LoRA factors and the projection head; else everything."""
        if not (self.qwen and self.config.model.lora_rank):
            return None
        keys = {"lora_a", "lora_b", "head"}
        return jax.tree_util.tree_map_with_path(
            lambda p, _: any(getattr(k, "key", None) in keys for k in p), params
        )

    def scores(self, params, batch) -> tuple[jax.Array, int]:
        """In-batch per-modality scores [B, B, M] (M = 1 for token-max / mean pooling)."""
        q_emb, q_keep = encode_queries(self.model, params, batch["q_ids"], batch["q_mask"])
        d_emb, d_mod = encode_documents(
            self.model, params, batch["d_ids"], batch["d_mask"], batch["d_mod"], batch["frames"]
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
        per_mod, _ = self.scores(params, batch)
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
