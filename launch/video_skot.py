"""Video-SKoT (arXiv 2506.03525) on procedural movie questions: skills -> taxonomy -> skill
CoT -> one LoRA expert per skill cluster (shared trainer) -> routed inference, against the
paper's baseline (one expert on all CoT data) and the untuned model, in one job. Running the
same command again repeats no model call and trains no finished expert.

    XLA_FLAGS=--xla_force_host_platform_device_count=1 python launch/video_skot.py \\
        --out_dir=runs/skot --num_train=15 --num_test=10 --k=5 --allow_fewer_clusters \\
        --max_tokens=96 --max_seq_len=1024 --max_batch=4 \\
        --train_overrides='("num_steps=8", "batch_size=2", "data.seq_len=512")'

Frames: `--videos` writes each question's procedural MP4 under `<out_dir>/movies` and gives
the record its `video`; with `--vision=tiny_random` (a random image tower: orchestration only)
the answer and CoT prompts then show `--frame_budget` uniformly sampled frames
(`skot_prompts.video_parts`). Without `--vision` the engine takes no images and every prompt
is text.

Model: `--model` (a HF folder or .gguf; default the SmolLM2-135M-Instruct GGUF) runs every
stage in process; experts are trained from `--train_config` (default
`configs/sft.py:smollm2_lora`, LoRA rank 8 on attention + MLP) plus `--train_overrides`.
Outputs and their meaning: jaxmm/pipelines/video_skot.py and docs/video_skot.md (measured
there: 15 + 10 questions, about an hour on a shared 2-core CPU).
"""

import ast
import json
import os

import jax
from absl import flags

from jaxmm import cli, tasks
from jaxmm.data import movie_qa
from jaxmm.generate.backends import EngineBackend
from jaxmm.generate.engine import Engine
from jaxmm.generate.params import GenerationParams
from jaxmm.models import gguf
from jaxmm.models.llm_config import LLMConfig
from jaxmm.nn import lora as lora_lib
from jaxmm.pipelines import skot_experts, video_skot
from jaxmm.pipelines.skot_taxonomy import TaxonomyError
from jaxmm.tasks.sft import lora_config
from jaxmm.train import trainer

_OUT_DIR = flags.DEFINE_string("out_dir", None, "Folder for every stage's files.")
_MODEL = flags.DEFINE_string("model", None, "HF folder or .gguf (default: SmolLM2-135M GGUF).")
_NUM_TRAIN = flags.DEFINE_integer("num_train", 20, "Generated training questions.")
_NUM_TEST = flags.DEFINE_integer("num_test", 10, "Generated test questions.")
_SEED = flags.DEFINE_integer("seed", 0, "Question generator and k-means seed.")
_K = flags.DEFINE_integer("k", 10, "Skill clusters (the paper: 10).")
_TOP = flags.DEFINE_integer("top_skills", 3, "Skills per chain of thought (the paper: 3).")
_FEWER = flags.DEFINE_bool(
    "allow_fewer_clusters", False, "Fewer distinct skill phrases than k: cluster into fewer."
)
_VIDEOS = flags.DEFINE_bool("videos", False, "Write each question's MP4; records get `video`.")
_VISION = flags.DEFINE_string(
    "vision", None, "Engine image tower: tiny_random (random; orchestration only) or unset."
)
_FRAME_BUDGET = flags.DEFINE_integer("frame_budget", 8, "Frames per question (image engines).")
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", 128, "Tokens for rationales and answers.")
_MAX_SEQ = flags.DEFINE_integer("max_seq_len", 1024, "Engine KV-cache length.")
_MAX_BATCH = flags.DEFINE_integer("max_batch", 4, "Engine slots decoded together.")
_TRAIN_CONFIG = flags.DEFINE_string(
    "train_config", "configs/sft.py:smollm2_lora", "SFT config of every expert."
)
_TRAIN_OVERRIDES = flags.DEFINE_string(
    "train_overrides", "()", "Python tuple of extra 'key=value' overrides for the experts."
)
# What every expert's config must say, whatever the variant: its own data, no held-out split,
# no merged HF export (the adapter is saved from the final params).
EXPERT_OVERRIDES = (
    "data.cings_mode=no_context",
    "data.eval_examples=0",
    "data.num_epochs=0",
    "export.hf=False",
    "export.peft=False",
)


def expert_config(spec: str, overrides, data_path: str):
    return cli.load_config(
        spec, [*EXPERT_OVERRIDES, *overrides, f"data.train_files=({data_path!r},)"]
    )


def make_train_fn(spec: str, overrides) -> video_skot.TrainFn:
    """(name, data, workdir, adapter_dir) -> trains with the shared trainer, saves the adapter."""

    def train(name: str, data_path: str, workdir: str, adapter_dir: str) -> None:
        config = expert_config(spec, overrides, data_path)
        task = tasks.build(config)
        if getattr(task, "lora", None) is None:
            raise cli.UsageError(f"{spec}: experts need LoRA (model.lora_rank > 0)")
        result = trainer.train(config, workdir, task)
        lora_lib.save_adapters(jax.device_get(result.state.params), task.lora, adapter_dir)
        print(f"expert {name}: {trainer.describe(result)}")

    return train


def main(argv) -> None:
    del argv
    overrides = ast.literal_eval(_TRAIN_OVERRIDES.value)
    lora = lora_config(expert_config(_TRAIN_CONFIG.value, overrides, "unused.jsonl").model)
    if lora is None:
        raise cli.UsageError(f"{_TRAIN_CONFIG.value}: experts need LoRA (model.lora_rank > 0)")
    model = _MODEL.value or gguf.default_instruct_model()
    hf_dir = gguf.ensure_hf_folder(model) if model.endswith(".gguf") else model
    engine = Engine.from_pretrained(
        model, max_seq_len=_MAX_SEQ.value, max_batch=_MAX_BATCH.value, vision=_VISION.value
    )
    movies = os.path.join(_OUT_DIR.value, "movies") if _VIDEOS.value else None
    train = movie_qa.generate(_NUM_TRAIN.value, _SEED.value, prefix="train", video_root=movies)
    test = movie_qa.generate(_NUM_TEST.value, _SEED.value + 1000, prefix="test", video_root=movies)
    if movies:
        train, test = (
            [q | {"frame_budget": _FRAME_BUDGET.value} for q in qs] for qs in (train, test)
        )
    cfg = video_skot.SkotConfig(
        k=_K.value, seed=_SEED.value, top_skills=_TOP.value,
        params=GenerationParams(max_tokens=_MAX_TOKENS.value),
        allow_fewer_clusters=_FEWER.value,
    )  # fmt: skip
    results = video_skot.run_video_skot(
        _OUT_DIR.value,
        train,
        test,
        EngineBackend(engine),
        video_skot.minilm_embed(),
        make_train_fn(_TRAIN_CONFIG.value, overrides),
        lambda: skot_experts.ExpertBackend(
            skot_experts.lora_engine(engine, LLMConfig.from_hf(hf_dir), lora)
        ),
        cfg,
    )
    summary = {k: v for k, v in results.items() if k != "routing"}
    print(json.dumps(summary, indent=1))
    print(f"wrote {os.path.join(_OUT_DIR.value, 'results.json')}")


if __name__ == "__main__":
    cli.run(main, config=False, required=["out_dir"], errors=(TaxonomyError, FileNotFoundError))
