"""Mutation check: do the tests catch the bugs they claim to? (docs/testing.md)

Each mutant is a planted bug: (name, file, exact original snippet, mutated snippet, pytest
arguments that must catch it). For each one this script copies the repository (git's tracked
and untracked-but-not-ignored files) to a temporary directory, applies the mutant there, runs
the listed tests and reports `killed` (a test failed), `survived` (all passed), `stale` (the
snippet is no longer in the file: update the mutant) or `error` (no tests ran). The working
tree is never written.

    python tools/mutation_check.py                 # every mutant; `make mutation`
    python tools/mutation_check.py --list
    python tools/mutation_check.py NAME [NAME ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # relative to the repository root
    original: str  # must occur exactly once in the file
    mutated: str
    tests: tuple[str, ...]  # pytest arguments (node ids, -k expressions)


SPLAT = "kernels_pallas/splat/"
CLAMP_TESTS = ("tests/kernels_pallas/splat/test_clamp_cases.py",)
SFT_DATA_TESTS = "tests/data/test_sft_data.py"
PEFT = "jaxmm/models/peft.py"
PEFT_TESTS = "tests/models/test_peft.py"
QWEN25VL = "tests/models/qwen2_5_vl/"
MEXA_TESTS = ("tests/pipelines/test_mexa.py", "-m", "not slow")
MEXA_METRICS_TESTS = "tests/eval/test_mexa_metrics.py"
REAGENT_FRAMES_TESTS = "tests/pipelines/test_reagent_frames.py"
REAGENT_CRITIC_TESTS = "tests/pipelines/test_reagent_critic.py"
REAGENT_TESTS = "tests/pipelines/test_reagent_v.py"
SKOT_TESTS = "tests/pipelines/test_video_skot.py"
SKOT_MODEL_TESTS = "tests/pipelines/test_video_skot_models.py"
SPLAT_VIEWS_TESTS = "tests/kernels_pallas/splat/test_views_and_work_items.py"
MAXSIM_PAD_TESTS = ("tests/kernels_pallas/maxsim/test_topk_padding_cases.py",)

MUTANTS: tuple[Mutant, ...] = (
    # --- splat rasteriser -------------------------------------------------------------
    Mutant(
        "splat_bwd_ignores_clamp",
        SPLAT + "pallas_gpu.py",
        "d_alpha_raw = jnp.where(clamped, 0.0, d_alpha)",
        "d_alpha_raw = d_alpha",
        CLAMP_TESTS,
    ),
    Mutant(
        "maxsim_config_ignores_shared_memory",
        "kernels_pallas/maxsim/padding.py",
        "while staged_operand_bytes(base, q_len, dim, itemsize) > SHARED_MEMORY_BUDGET:",
        "while False:",
        ("tests/kernels_pallas/maxsim/test_dot_shapes.py",),
    ),
    Mutant(
        "splat_clamp_0999",
        SPLAT + "common.py",
        "ALPHA_MAX = 0.99",
        "ALPHA_MAX = 0.999",
        CLAMP_TESTS,
    ),
    Mutant(
        "splat_no_alpha_min_cut",
        SPLAT + "common.py",
        "keep = in_range[:, None] & (power <= 0.0) & (alpha >= ALPHA_MIN)",
        "keep = in_range[:, None] & (power <= 0.0)",
        CLAMP_TESTS,
    ),
    Mutant(
        "splat_pallas_fwd_no_t_min_stop",
        SPLAT + "pallas_gpu.py",
        "contrib = (alpha > 0.0) & (t_after >= common.T_MIN) & (done[None, :] < 1.0)",
        "contrib = (alpha > 0.0) & (done[None, :] < 1.0)",
        ("tests/kernels_pallas/splat/test_rasterize.py::test_values_match_reference",),
    ),
    Mutant(
        "splat_ref_no_t_min_stop",
        SPLAT + "reference.py",
        "contrib = (alpha > 0) & (t_after >= common.T_MIN) & ~done[:, None]",
        "contrib = (alpha > 0) & ~done[:, None]",
        ("tests/kernels_pallas/splat/test_rasterize.py::test_values_match_reference",),
    ),
    # --- MaxSim --------------------------------------------------------------------------
    Mutant(
        "maxsim_fused_topk_ignores_doc_valid",
        "kernels_pallas/maxsim/pallas_gpu.py",
        "scores = jnp.where(valid[None, :] > 0, scores, NEG_INF)",
        "scores = scores",
        MAXSIM_PAD_TESTS,
    ),
    Mutant(
        "maxsim_scan_topk_ignores_doc_valid",
        "kernels_pallas/maxsim/topk.py",
        "chunk_scores = jnp.where(v[None, :], score(d, s), reference.NEG_INF)",
        "chunk_scores = score(d, s)",
        MAXSIM_PAD_TESTS,
    ),
    Mutant(
        "index_padding_docs_valid",
        "jaxmm/retrieval/index.py",
        "valid = np.arange(n_d) < self.num_docs",
        "valid = np.ones(n_d, bool)",
        MAXSIM_PAD_TESTS,
    ),
    # --- image metrics ---------------------------------------------------------------------
    Mutant(
        "ssim_c2_uses_k1",
        "jaxmm/eval/image_metrics.py",
        "c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2",
        "c1, c2 = (k1 * max_val) ** 2, (k1 * max_val) ** 2",
        ("tests/eval/test_ssim_skimage.py",),
    ),
    Mutant(
        "ssim_c1_not_squared",
        "jaxmm/eval/image_metrics.py",
        "c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2",
        "c1, c2 = k1 * max_val, (k2 * max_val) ** 2",
        ("tests/eval/test_ssim_skimage.py",),
    ),
    Mutant(
        "psnr_20log10_of_mse",
        "jaxmm/eval/image_metrics.py",
        "return 10.0 * jnp.log10(max_val**2 / jnp.maximum(mse(pred, target), 1e-10))",
        "return 20.0 * jnp.log10(max_val**2 / jnp.maximum(mse(pred, target), 1e-10))",
        ("tests/eval/test_image_metrics.py::test_psnr_closed_form",),
    ),
    # --- trainer, LoRA, launch -------------------------------------------------------------
    Mutant(
        "trainer_nan_guard_checks_only_loss",
        "jaxmm/train/trainer.py",
        "finite = jnp.isfinite(loss) & jnp.all(\n"
        "            jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)])\n"
        "        )",
        "finite = jnp.isfinite(loss)",
        ("tests/train/test_trainer.py", "-k", "nonfinite"),
    ),
    Mutant(
        "lora_rslora_scale",
        "jaxmm/nn/lora.py",
        "        return self.alpha / self.rank\n",
        "        return self.alpha / self.rank**0.5\n",
        ("tests/nn/test_lora_scale.py",),
    ),
    # --- peft adapters (jaxmm/models/peft.py) ---------------------------------------------
    Mutant(
        "peft_load_lora_a_not_transposed",
        PEFT,
        'a_map.to_jax(ab["A"], (*ins, rank))',
        'ab["A"].reshape(*ins, rank)',
        (PEFT_TESTS, "-k", "load_peft_adapter_matches and llama-attn"),
    ),
    Mutant(
        "peft_load_ignores_rslora",
        PEFT,
        'use_rslora=bool(cfg.get("use_rslora", False)),',
        "use_rslora=False,",
        (PEFT_TESTS, "-k", "load_peft_adapter_matches and rslora"),
    ),
    Mutant(
        "lora_rslora_scale_alpha_over_rank",
        "jaxmm/nn/lora.py",
        "return self.alpha / self.rank**0.5",
        "return self.alpha / self.rank",
        (PEFT_TESTS, "-k", "rslora"),
    ),
    Mutant(
        "peft_load_drops_modules_to_save",
        PEFT,
        "            full[name] = value\n",
        "            pass\n",
        (PEFT_TESTS, "-k", "load_peft_adapter_matches and modules_to_save"),
    ),
    Mutant(
        "peft_load_targets_every_layer",
        PEFT,
        "    if len(modules) == len(names) * config.num_layers:\n        return tuple(names)",
        "    if True:\n        return tuple(names)",
        (PEFT_TESTS, "-k", "load_peft_adapter_matches and regex"),
    ),
    Mutant(
        "peft_load_no_layer_count_check",
        PEFT,
        "if i >= config.num_layers:",
        "if False:",
        (PEFT_TESTS, "-k", "another_base"),
    ),
    Mutant(
        "peft_load_ignores_base_model_name",
        PEFT,
        "        if not same:\n",
        "        if False:\n",
        (PEFT_TESTS, "-k", "base_model_name"),
    ),
    Mutant(
        "peft_load_accepts_dora",
        PEFT,
        '_UNSUPPORTED = ("use_dora", ',
        "_UNSUPPORTED = (",
        (PEFT_TESTS, "-k", "unsupported and dora"),
    ),
    Mutant(
        "peft_load_tied_without_ensure_weight_tying",
        PEFT,
        'if not cfg.get("ensure_weight_tying"):',
        "if False:",
        (PEFT_TESTS, "-k", "tied_modules_to_save"),
    ),
    Mutant(
        "peft_save_lora_b_not_transposed",
        PEFT,
        'tensors[f"{PREFIX}{module}.lora_B.weight"] = b_map.to_hf(b_i)',
        'tensors[f"{PREFIX}{module}.lora_B.weight"] = b_i.reshape(b_map.hf_shape(b_i.shape))',
        (PEFT_TESTS, "-k", "save_peft_adapter_loads_in_peft and llama-attn"),
    ),
    Mutant(
        "peft_save_alpha_is_rank",
        PEFT,
        '"lora_alpha": lora.alpha,',
        '"lora_alpha": lora.rank,',
        (PEFT_TESTS, "-k", "save_peft_adapter_loads_in_peft and llama-attn"),
    ),
    Mutant(
        "peft_save_stacked_layer0_only",
        PEFT,
        "a_i, b_i = (a[i], b[i]) if m.stacked_layers else (a, b)",
        "a_i, b_i = (a[0], b[0]) if m.stacked_layers else (a, b)",
        (PEFT_TESTS, "-k", "round_trip"),
    ),
    Mutant(
        "lrm4d_goal_ignores_margin_db",
        "launch/lrm4d_goal.py",
        '"passes": all(m >= _MARGIN.value for m in margins.values()),',
        '"passes": all(m >= 3.0 for m in margins.values()),',
        ("tests/launch/test_cli.py", "-k", "lrm4d_goal"),
    ),
    # CLaMR (tests/tasks/test_clamr_task.py, tests/models/test_clamr.py)
    Mutant(
        "clamr_temperature_twice",
        "jaxmm/tasks/clamr_loss.py",
        "logits = scores / temperature",
        "logits = scores / temperature / temperature",
        ("tests/tasks/test_clamr_task.py::test_objectives_match_numpy",),
    ),
    Mutant(
        "clamr_gold_view_not_excluded",
        "jaxmm/tasks/clamr_loss.py",
        "extra = extra.at[rows, rows * m + gold].set(-jnp.inf)",
        "extra = extra",
        ("tests/tasks/test_clamr_task.py::test_objectives_match_numpy",),
    ),
    Mutant(
        "clamr_negatives_not_gathered",
        "jaxmm/tasks/clamr_loss.py",
        "        if axes:\n            d = jax.lax",
        "        if False:\n            d = jax.lax",
        (
            "tests/tasks/test_clamr_task.py::test_negatives_gathered_across_devices_equal_one_device",
        ),
    ),
    Mutant(
        "clamr_modality_ids_shifted",
        "jaxmm/models/clamr_inputs.py",
        "VIDEO, OCR, ASR, DESCRIPTION = 1, 2, 3, 4",
        "VIDEO, OCR, ASR, DESCRIPTION = 1, 3, 4, 5",
        ("tests/models/test_clamr.py::test_document_modality_ids_follow_the_layout",),
    ),
    Mutant(
        "clamr_padding_not_zeroed",
        "jaxmm/models/clamr.py",
        "return x * keep[..., None], keep",
        "return x, keep",
        ("tests/models/test_clamr.py::test_embeddings_are_unit_norm_and_padding_is_zero",),
    ),
    Mutant(
        "clamr_no_budget_truncation",
        "jaxmm/models/clamr_inputs.py",
        "(lay.text_prefix + text)[:budget] if budget",
        "(lay.text_prefix + text) if budget",
        ("tests/models/test_clamr.py::test_overlong_text_is_truncated_to_its_budget",),
    ),
    # --- SFT data and loss -------------------------------------------------------------------
    Mutant(
        "sft_mask_misses_end_of_turn",
        "jaxmm/data/sft_records.py",
        "turn_end = end + gap + len(closer)",
        "turn_end = end",
        (SFT_DATA_TESTS, "-k", "end_of_turn"),
    ),
    Mutant(
        "sft_mask_off_by_one",
        "jaxmm/data/packing.py",
        'row["loss_mask"][o : o + n] = ex.weights[1:]',
        'row["loss_mask"][o : o + n] = ex.weights[:-1]',
        (SFT_DATA_TESTS, "-k", "first_fit"),
    ),
    Mutant(
        "sft_no_position_reset",
        "jaxmm/data/packing.py",
        'row["positions"][o : o + n] = np.arange(n)',
        'row["positions"][o : o + n] = np.arange(o, o + n)',
        (SFT_DATA_TESTS, "-k", "first_fit"),
    ),
    Mutant(
        "sft_packed_rows_one_segment",
        "jaxmm/data/packing.py",
        'row["segment_ids"][o : o + n] = k',
        'row["segment_ids"][o : o + n] = 1',
        ("tests/tasks/test_sft.py", "-k", "packed"),
    ),
    Mutant(
        "sft_cings_context_mask_shifted",
        "jaxmm/data/sft_records.py",
        "trained[origin + ex_start : origin + ex_end] = 0",
        "trained[origin + ex_start + 1 : origin + ex_end + 1] = 0",
        (SFT_DATA_TESTS, "-k", "cings"),
    ),
    Mutant(
        "sft_loss_mean_of_row_means",
        "jaxmm/tasks/sft.py",
        "return -jnp.sum(logprobs * mask), jnp.sum(mask)",
        "per_row = -jnp.sum(logprobs * mask, -1) / jnp.maximum(mask.sum(-1), 1)\n"
        "    return jnp.mean(per_row) * jnp.sum(mask), jnp.sum(mask)",  # loss = mean of means
        ("tests/tasks/test_sft.py", "-k", "sharded"),
    ),
    # --- chunked cross-entropy (tests/nn/test_logprobs.py, tests/tasks/test_sft.py) --------
    Mutant(
        "chunked_ce_chunks_out_of_order",
        "jaxmm/nn/logprobs.py",
        "return logp.swapaxes(0, 1).reshape(b, n * size)[:, :t]",
        "return logp.reshape(b, n * size)[:, :t]",  # [n, B, c] read as if [B, n, c]
        ("tests/nn/test_logprobs.py",),
    ),
    Mutant(
        "chunked_ce_targets_padded_in_front",
        "jaxmm/nn/logprobs.py",
        "targets = jnp.pad(targets, ((0, 0), (0, n * size - t)))",
        "targets = jnp.pad(targets, ((0, 0), (n * size - t, 0)))",
        ("tests/nn/test_logprobs.py",),
    ),
    Mutant(
        "chunked_ce_saves_chunk_logits",  # no checkpoint: the scan stacks every chunk's logits
        "jaxmm/nn/logprobs.py",
        "    @jax.checkpoint\n    def chunk(",
        "    def chunk(",
        ("tests/nn/test_logprobs.py", "-k", "never_hold"),
    ),
    Mutant(
        "sft_ignores_loss_chunk_tokens",
        "jaxmm/tasks/sft.py",
        "chunk_tokens=self.config.loss.chunk_tokens,",
        "chunk_tokens=0,",
        ("tests/tasks/test_sft.py", "-k", "sharded"),
    ),
    Mutant(
        "llm_head_params_tied_only",  # an untied model's chunked loss loses its lm_head
        "jaxmm/models/llm.py",
        'HEAD_PARAMS = ("embed_tokens", "lm_head")',
        'HEAD_PARAMS = ("embed_tokens",)',
        ("tests/tasks/test_sft.py", "-k", "packed and 32"),
    ),
    Mutant(
        "trainer_accum_mean_of_micro_means",
        "jaxmm/train/trainer.py",
        "w = metrics[LOSS_WEIGHT] if weighted else jnp.float32(1.0)",
        "w = jnp.float32(1.0)",
        ("tests/tasks/test_sft.py", "-k", "accumulation"),
    ),
    # --- DPO (tests/tasks/test_dpo.py) --------------------------------------------------------
    Mutant(
        "dpo_reference_not_frozen",
        "jaxmm/tasks/dpo.py",
        'ref = jax.lax.stop_gradient(params["reference"])',
        'ref = params["reference"]',
        ("tests/tasks/test_dpo.py", "-k", "log2"),
    ),
    Mutant(
        "dpo_scores_every_assistant_turn",
        "jaxmm/tasks/dpo.py",
        "out.append(Example(ex.ids, last_turn_only(ex.weights), where))",
        "out.append(Example(ex.ids, ex.weights, where))",
        ("tests/tasks/test_dpo.py", "-k", "final_reply"),
    ),
    # --- GRPO (tests/tasks/test_grpo.py) ------------------------------------------------------
    Mutant(
        "grpo_advantage_sign_flipped",
        "jaxmm/tasks/grpo.py",
        "adv = np.asarray(grpo_loss.group_advantages(",
        "adv = -np.asarray(grpo_loss.group_advantages(",
        ("tests/tasks/test_grpo.py", "-k", "raises_the_mean_reward"),
    ),
    # --- real-renderer scene (tests/fixtures/blender_scene, Blender Cycles) -------------------
    Mutant(
        "dnerf_pose_flips_world_not_camera",
        "jaxmm/data/dnerf.py",
        "c2w=np.stack([m @ opengl_to_opencv for m in c2ws]).astype(np.float32),",
        "c2w=np.stack([opengl_to_opencv @ m for m in c2ws]).astype(np.float32),",
        ("tests/tasks/test_gs_fit_blender.py", "-k", "short_fit"),
    ),
    Mutant(
        "trainer_logs_config_schedule_for_own_optimizer",
        "jaxmm/train/trainer.py",
        "self.schedule = self.task.learning_rate(cfg.num_steps)",
        "self.schedule = optim.make_schedule(cfg.optimizer, cfg.num_steps)",
        ("tests/train/test_trainer.py", "-k", "learning_rate_logged"),
    ),
    Mutant(
        "grpo_rollout_seed_ignores_step",
        "jaxmm/tasks/grpo.py",
        "SeedSequence([self.config.seed, step, k])",
        "SeedSequence([self.config.seed, k])",
        ("tests/tasks/test_grpo.py", "-k", "rollout"),
    ),
    # --- Qwen2.5-VL (tests/models/qwen2_5_vl/, parity vs transformers) ---------------------
    Mutant(
        "qwen25vl_mrope_sections_reversed",
        "jaxmm/nn/rotary.py",
        "np.full(s, j % 3, np.int32)",
        "np.full(s, (2 - j) % 3, np.int32)",
        (QWEN25VL + "test_text_parity.py", "-k", "3d_positions"),
    ),
    Mutant(
        "qwen25vl_window_ignores_merge_size",
        "jaxmm/models/qwen2_5_vl/vision.py",
        "win = config.window_size // merge // config.patch_size",
        "win = config.window_size // config.patch_size",
        (QWEN25VL + "test_vision_parity.py", "-k", "features"),
    ),
    Mutant(
        "qwen25vl_full_attention_one_layer_late",
        "jaxmm/models/qwen2_5_vl/vision.py",
        "full = i in cfg.fullatt_block_indexes",
        "full = i - 1 in cfg.fullatt_block_indexes",
        (QWEN25VL + "test_vision_parity.py", "-k", "features"),
    ),
    Mutant(
        "qwen25vl_vision_rope_h_w_swapped",
        "jaxmm/models/qwen2_5_vl/vision.py",
        "angles = positions.astype(jnp.float32)[..., None] * inv_freq",
        "angles = positions[:, ::-1].astype(jnp.float32)[..., None] * inv_freq",
        (QWEN25VL + "test_vision_parity.py", "-k", "features"),
    ),
    Mutant(
        "qwen25vl_merger_tanh_gelu",
        "jaxmm/models/qwen2_5_vl/vision.py",
        "x = nn.gelu(x, approximate=False)",
        "x = nn.gelu(x, approximate=True)",
        (QWEN25VL + "test_vision_parity.py", "-k", "features"),
    ),
    Mutant(
        "qwen25vl_video_time_not_scaled",
        "jaxmm/models/qwen2_5_vl/mrope.py",
        "interval = tokens_per_second * float(next(seconds)) if kind == VIDEO else 1.0",
        "interval = 1.0",
        (QWEN25VL + "test_model_parity.py", "-k", "video"),
    ),
    Mutant(
        "qwen25vl_text_after_image_counts_tokens",
        "jaxmm/models/qwen2_5_vl/mrope.py",
        "current += max(grid[1], grid[2]) // spatial_merge_size",
        "current += length",
        (QWEN25VL + "test_model_parity.py", "-k", "images"),
    ),
    Mutant(
        "qwen25vl_decode_ignores_rope_delta",
        "jaxmm/models/qwen2_5_vl/mrope.py",
        "return (lengths + deltas)[:, None]",
        "return lengths[:, None]",
        (QWEN25VL + "test_generate.py",),
    ),
    Mutant(
        "qwen25vl_patch_channel_time_swapped",
        "jaxmm/models/qwen2_5_vl/processor.py",
        "x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)",
        "x = x.transpose(0, 3, 6, 4, 7, 1, 2, 5, 8)",
        (QWEN25VL + "test_processor.py", "-k", "image_matches"),
    ),
    # --- MEXA --------------------------------------------------------------------------------
    Mutant(
        "mexa_unknown_ids_selected",
        "jaxmm/pipelines/mexa_skills.py",
        "bucket = selected if sid in SKILLS else unknown",
        "bucket = selected",
        MEXA_TESTS,
    ),
    Mutant(
        "mexa_names_override_ids",
        "jaxmm/pipelines/mexa_skills.py",
        "    if selected or unknown:\n        return selected, unknown",
        "    if unknown:\n        return selected, unknown",
        MEXA_TESTS,
    ),
    Mutant(
        "mexa_no_router_fallback",
        "jaxmm/pipelines/mexa.py",
        "    fallback = not selected\n",
        "    fallback = False\n",
        MEXA_TESTS,
    ),
    Mutant(
        "mexa_aggregator_drops_experts",
        "jaxmm/pipelines/mexa.py",
        "experts=blocks,",
        'experts="",',
        MEXA_TESTS,
    ),
    Mutant(
        "mexa_choice_article_as_letter",
        "jaxmm/eval/mexa.py",
        '        if not _article(text, m):\n            return m.group(1), "lone_letter"',
        '        return m.group(1), "lone_letter"',
        (MEXA_METRICS_TESTS,),
    ),
    Mutant(
        "mexa_unparsed_over_all_rows",
        "jaxmm/eval/mexa.py",
        '"unparsed_rate": sum(r["prediction"] is None for r in scored) / len(scored),',
        '"unparsed_rate": sum(r["prediction"] is None for r in scored) / len(rows),',
        (MEXA_METRICS_TESTS,),
    ),
    Mutant(
        "mexa_expert_frames_ignore_stride",
        "jaxmm/data/expert_files.py",
        "[:: max(stride, 1)]",
        "[:]",
        MEXA_TESTS,
    ),
    Mutant(
        "mcq_answer_letter_off_by_one",
        "jaxmm/data/movies_mcq.py",
        "string.ascii_uppercase[opts.index(correct)]",
        "string.ascii_uppercase[opts.index(correct) - 1]",
        ("tests/data/test_movies_mcq.py",),
    ),
    Mutant(
        "mexa_router_never_sees_frames",
        "jaxmm/pipelines/mexa.py",
        'if getattr(x.backend, "accepts_images", False) and rec.get("video"):',
        "if False:",
        MEXA_TESTS,
    ),
    Mutant(
        "mexa_ocr_ignores_tesseract",
        "jaxmm/pipelines/mexa_experts.py",
        "    read = _tesseract()\n",
        "    read = None\n",
        MEXA_TESTS,
    ),
    Mutant(
        "mcq_annotation_answer_text_first_option",
        "jaxmm/data/mcq_annotations.py",
        "            return letters[matches[0]]",
        "            return letters[0]",
        ("tests/data/test_mcq_annotations.py",),
    ),
    Mutant(
        "mexa_ignores_precomputed_skills",
        "jaxmm/pipelines/mexa.py",
        '    if "skills" in rec:  # the router',
        '    if "skills" in rec and False:  # the router',
        MEXA_TESTS,
    ),
    # --- ReAgent-V (tests/pipelines/test_reagent_*.py) -----------------------------------------
    Mutant(
        "reagent_ecrs_scores_not_renormalised_per_round",
        "jaxmm/pipelines/reagent_frames.py",
        "scores = ecrs_scores(entropy[kept], sim)",
        "scores = ecrs_scores(entropy, similarity)[kept]",
        (REAGENT_FRAMES_TESTS, "-k", "product_rule"),
    ),
    Mutant(
        "reagent_ecrs_threshold_does_not_grow",
        "jaxmm/pipelines/reagent_frames.py",
        "threshold = base_threshold * growth**m",
        "threshold = base_threshold",
        (REAGENT_FRAMES_TESTS, "-k", "grows"),
    ),
    Mutant(
        "reagent_ecrs_top_up_ties_to_later_frames",
        "jaxmm/pipelines/reagent_frames.py",
        'best = np.argsort(-whole, kind="stable")[:min_frames]',
        "best = np.argsort(whole)[::-1][:min_frames]",
        (REAGENT_FRAMES_TESTS, "-k", "top_up"),
    ),
    Mutant(
        "reagent_merge_threshold_strict",
        "jaxmm/pipelines/reagent_critic.py",
        "if r.confidence >= THRESHOLDS[r.perspective]:",
        "if r.confidence > THRESHOLDS[r.perspective]:",
        (REAGENT_CRITIC_TESTS, "-k", "merge_rules"),
    ),
    Mutant(
        "reagent_merge_aggressive_first",
        "jaxmm/pipelines/reagent_critic.py",
        "ordered = [by_name[p] for p in PERSPECTIVES if p in by_name]",
        "ordered = [by_name[p] for p in reversed(PERSPECTIVES) if p in by_name]",
        (REAGENT_CRITIC_TESTS, "-k", "merge"),
    ),
    Mutant(
        "reagent_reward_range_0_to_5",
        "jaxmm/pipelines/reagent_critic.py",
        'reward = _number(obj.get("scalar_reward"), "scalar_reward", 0.0, 1.0)',
        'reward = _number(obj.get("scalar_reward"), "scalar_reward", 0.0, 5.0)',
        (REAGENT_CRITIC_TESTS, "-k", "bad_reports"),
    ),
    Mutant(
        "reagent_final_answer_ignores_merge",
        "jaxmm/pipelines/reagent_v.py",
        "final = merged.answer if merged.answer is not None else initial",
        "final = initial",
        (REAGENT_TESTS, "-k", "every_step"),
    ),
    Mutant(
        "reagent_final_reward_is_the_initial_one",
        "jaxmm/pipelines/reagent_v.py",
        "if final == initial or (final_choice is not None and final_choice == initial_choice):",
        "if True:",
        (REAGENT_TESTS, "-k", "every_step"),
    ),
    Mutant(
        "reagent_dpo_pair_reversed",
        "jaxmm/pipelines/reagent_data.py",
        "if r1 > r0",
        "if r1 < r0",
        (REAGENT_TESTS, "-k", "selection"),
    ),
    Mutant(
        "reagent_grpo_takes_easy_questions",
        "jaxmm/pipelines/reagent_data.py",
        "if r0 is not None and r0 <= config.grpo_max_reward:",
        "if r0 is not None and r0 >= config.grpo_max_reward:",
        (REAGENT_TESTS, "-k", "selection"),
    ),
    # --- Video-SKoT (jaxmm/pipelines/skot_*.py, video_skot.py) ---------------------------
    Mutant(
        "skot_cot_keeps_wrong_answers",
        "jaxmm/pipelines/skot_cot.py",
        'elif predicted != record["answer"]:',
        "elif False:",
        (SKOT_TESTS, "-k", "cot_filter"),
    ),
    Mutant(
        "skot_taxonomy_names_by_farthest_member",
        "jaxmm/pipelines/skot_taxonomy.py",
        "names.append(phrases[int(idx[int(np.argmin(d))])])",
        "names.append(phrases[int(idx[int(np.argmax(d))])])",
        (SKOT_TESTS, "-k", "taxonomy"),
    ),
    Mutant(
        "skot_routes_to_untrained_expert",
        "jaxmm/pipelines/video_skot.py",
        '"expert": name if name in trained else skot_experts.BASE',
        '"expert": name',
        (SKOT_TESTS, "-k", "route"),
    ),
    Mutant(
        "skot_first_answer_line_wins",
        "jaxmm/pipelines/skot_prompts.py",
        "return found[-1].upper()",
        "return found[0].upper()",
        (SKOT_TESTS, "-k", "parse_final_answer"),
    ),
    Mutant(
        "skot_option_text_first_mention_wins",
        "jaxmm/pipelines/skot_prompts.py",
        "best = cand if best is None or cand[:2] > best[:2] else best",
        "best = cand if best is None else best",
        (SKOT_TESTS, "-k", "read_answer"),
    ),
    Mutant(
        "skot_answer_letter_ignores_case",
        "jaxmm/pipelines/skot_prompts.py",
        'ANSWER_RE = re.compile(r"(?i:answer)\\s*(?:(?i:is))?\\s*[:\\-]?\\s*\\(?\\**([A-D])\\b")',
        'ANSWER_RE = re.compile(r"answer\\s*(?:is)?\\s*[:\\-]?\\s*\\(?\\**([A-D])\\b", re.I)',
        (SKOT_TESTS, "-k", "read_answer"),
    ),
    Mutant(
        "skot_top_skills_farthest_first",
        "jaxmm/pipelines/skot_taxonomy.py",
        'np.argsort(d, kind="stable")[:n]',
        'np.argsort(-d, kind="stable")[:n]',
        (SKOT_TESTS, "-k", "taxonomy or route"),
    ),
    Mutant(
        "skot_adapter_copies_base_weights",
        "jaxmm/pipelines/skot_experts.py",
        "lambda m, b, x: x if m else b,",
        "lambda m, b, x: x if m else b.copy(),",
        (SKOT_MODEL_TESTS, "-k", "swapping"),
    ),
    Mutant(
        "skot_cache_key_ignores_adapter",
        "jaxmm/pipelines/skot_experts.py",
        'self.model = f"{self.engine.model_name}+{name}@{self.digests[name]}"',
        "self.model = self.engine.model_name",
        (SKOT_MODEL_TESTS, "-k", "routed"),
    ),
    # --- CINGS experiment ----------------------------------------------------------------
    Mutant(
        "cings_prefill_without_answer_marker",
        "jaxmm/eval/grounding.py",
        'prefill = f"{CONTEXT_MARKER}{context}{ANSWER_MARKER}"',
        'prefill = f"{CONTEXT_MARKER}{context}\\n"',
        ("tests/eval/test_grounding.py", "-k", "prefill_prompt_is or prompt_formats"),
    ),
    Mutant(
        "cings_memory_rate_counts_gold",
        "jaxmm/eval/grounding.py",
        'memory_hits.append(exact_match(answer, r["memory_answer"]))',
        'memory_hits.append(exact_match(answer, r["answer"]))',
        ("tests/eval/test_grounding.py", "-k", "accounting"),
    ),
    Mutant(
        "cings_answer_after_first_marker",
        "jaxmm/eval/grounding.py",
        "text = text.rsplit(marker, 1)[1]",
        "text = text.split(marker, 1)[1]",
        ("tests/eval/test_grounding.py", "-k", "extract_answer"),
    ),
    Mutant(
        "text_record_without_eos",
        "jaxmm/data/sft_records.py",
        "        ids.append(int(tokenizer.eos_token_id))",
        "        pass",
        ("tests/data/test_text_records.py", "-k", "every_token"),
    ),
    Mutant(
        "cings_world_ignores_seed",
        "jaxmm/tasks/cings_experiment.py",
        "world = fact_world.make_world(sizes.n_entities, sizes.known_fraction, seed=seed)",
        "world = fact_world.make_world(sizes.n_entities, sizes.known_fraction, seed=0)",
        ("tests/tasks/test_cings_experiment.py", "-k", "seed_data"),
    ),
    Mutant(
        "small_tokenizer_spaces_merged_into_words",
        "jaxmm/data/small_tokenizer.py",
        '            pre_tokenizers.Split(" ", behavior="isolated"),\n',
        "",
        ("tests/data/test_text_records.py", "-k", "line_start"),
    ),
    Mutant(
        "pretraining_documents_repeat_a_fact",
        "jaxmm/data/fact_world.py",
        "for r in relations[i : i + facts_per_doc]",
        "for r in by_entity[entity][:1] + relations[i : i + facts_per_doc]",
        ("tests/data/test_fact_world.py", "-k", "documents"),
    ),
    # --- CLaMR on Qwen2.5-VL (tests/models/test_clamr_qwen.py) -------------------------------
    Mutant(
        "clamr_qwen_frames_not_spliced",
        "jaxmm/models/clamr.py",
        "            x = jnp.where(visual_mask[..., None], gathered, x)",
        "            x = jnp.where(visual_mask[..., None], x, x)",
        ("tests/models/test_clamr_qwen.py", "-k", "changed_frame"),
    ),
    Mutant(
        "clamr_qwen_text_after_video_not_shifted",
        "jaxmm/models/clamr.py",
        "    text_pos = text_before + jnp.where(after_run, max(h, w), 0)",
        "    text_pos = text_before + jnp.where(after_run, 0, 0)",
        ("tests/models/test_clamr_qwen.py", "-k", "hidden_states_equal"),
    ),
    Mutant(
        "clamr_paper_lora_without_down_proj",
        "configs/clamr.py",
        '        *("gate_proj", "up_proj", "down_proj"),',
        '        *("gate_proj", "up_proj"),',
        ("tests/models/test_clamr_qwen.py", "-k", "paper_config"),
    ),
    # --- MaxSim persistent scan (issue 13; tests/kernels_pallas/maxsim/test_persistent.py) ---
    Mutant(
        "maxsim_schedule_option_ignored",
        "kernels_pallas/maxsim/vjp.py",
        'if cfg.schedule == "persistent":\n        tokens, side, doc_len, tile',
        "if False:\n        tokens, side, doc_len, tile",
        ("tests/kernels_pallas/maxsim/test_persistent.py", "-k", "schedule_selects"),
    ),
    Mutant(
        "maxsim_persistent_one_pass_modality_off_by_one",
        "kernels_pallas/maxsim/pallas_persistent.py",
        "better = (hi == m + 1)[None] & (tile_max > maxes[m])",
        "better = (hi == m)[None] & (tile_max > maxes[m])",
        ("tests/kernels_pallas/maxsim/test_persistent.py", "-k", "segments"),
    ),
    Mutant(
        "maxsim_persistent_padding_makes_tiles_mixed",
        "kernels_pallas/maxsim/pallas_persistent.py",
        "lo = jnp.where(mod > 0, mod, _NO_MODALITY).min(axis=-1)",
        "lo = mod.min(axis=-1)",
        ("tests/kernels_pallas/maxsim/test_persistent.py", "-k", "tile_modality"),
    ),
    Mutant(
        "maxsim_persistent_grid_stride_drops_last_group",
        "kernels_pallas/maxsim/pallas_persistent.py",
        "return p, (n_groups - p + num_programs - 1) // num_programs",
        "return p, (n_groups - p) // num_programs",
        ("tests/kernels_pallas/maxsim/test_persistent.py", "-k", "plain_matches"),
    ),
    Mutant(
        "maxsim_persistent_topk_ignores_doc_valid",
        "kernels_pallas/maxsim/pallas_persistent.py",
        "scores = jnp.where(doc_ok[None, :] != 0, scores, NEG_INF)",
        "scores = scores",
        (*MAXSIM_PAD_TESTS, "-k", "persistent"),
    ),
    Mutant(
        "maxsim_persistent_uniform_tiles_take_m_passes",
        "kernels_pallas/maxsim/pallas_persistent.py",
        "return jax.lax.cond(uniform, one_pass, m_passes, (maxes, args))",
        "return jax.lax.cond(uniform, m_passes, m_passes, (maxes, args))",
        ("tests/kernels_pallas/maxsim/test_persistent.py", "-k", "tile_work"),
    ),
    Mutant(
        "maxsim_fused_topk_ties_by_program_order",
        "kernels_pallas/maxsim/topk.py",
        "neg_s, ids = jax.lax.sort((-cand_s, cand_i), dimension=1, num_keys=2)",
        "neg_s, ids = jax.lax.sort((-cand_s, cand_i), dimension=1, num_keys=1, is_stable=True)",
        ("tests/kernels_pallas/maxsim/test_persistent.py", "-k", "ties"),
    ),
    # --- CLaMR paper path: Qwen inputs, weights, dropout, schedule (issue 16) ------------------
    Mutant(
        "clamr_qwen_inputs_no_vision_end",
        "jaxmm/models/clamr_inputs.py",
        "            run = [*lay.visual_open, *[lay.visual] * n_vis, *lay.visual_close]",
        "            run = [*lay.visual_open, *[lay.visual] * n_vis]",
        ("tests/models/test_clamr_qwen_inputs.py",),
    ),
    Mutant(
        "clamr_qwen_inputs_budget_off_by_one",
        "jaxmm/models/clamr_inputs.py",
        "self._encode(lay.text_prefix + text)[:budget]",
        "self._encode(lay.text_prefix + text)[: budget + 1]",
        ("tests/models/test_clamr_qwen_inputs.py",),
    ),
    Mutant(
        "clamr_pretrained_norms_left_at_init",
        "jaxmm/tasks/clamr.py",
        '    return keys[0] != "backbone" or keys[-1] in ("lora_a", "lora_b")',
        '    return keys[0] != "backbone" or keys[-1] in ("lora_a", "lora_b", "scale")',
        ("tests/tasks/test_clamr_qwen_pretrained.py", "-k", "match_torch"),
    ),
    Mutant(
        "clamr_qwen_train_model_without_dropout",
        "jaxmm/tasks/clamr.py",
        "self.model.clone(backbone=backbone.clone(deterministic=False))",
        "self.model.clone(backbone=backbone.clone(deterministic=True))",
        ("tests/tasks/test_clamr_qwen_train.py", "-k", "dropout"),
    ),
    Mutant(
        "epoch_schedule_drops_partial_batch",
        "jaxmm/train/optim.py",
        "    num_steps = math.ceil(epochs * num_examples / global_batch)",
        "    num_steps = int(epochs * num_examples // global_batch)",
        ("tests/tasks/test_clamr_qwen_train.py", "-k", "epoch"),
    ),
    # --- engine image path (VLM backends) --------------------------------------------------
    Mutant(
        "engine_image_rows_read_the_first_requests_features",
        "jaxmm/generate/vision.py",
        "                index[i, : len(p) * tpi] = start[id(p)] + np.arange(len(p) * tpi)",
        "                index[i, : len(p) * tpi] = np.arange(len(p) * tpi)",
        ("tests/generate/test_engine_vision.py", "-k", "match_full_sequence"),
    ),
    Mutant(
        "prefill_drops_image_features",
        "jaxmm/generate/steps.py",
        "            embeds = jnp.where(here, feats, embeds)",
        "            embeds = jnp.where(here, embeds, embeds)",
        ("tests/generate/test_engine_vision.py", "-k", "changing_an_image"),
    ),
    Mutant(
        "reagent_v_never_attaches_frames",
        "jaxmm/pipelines/reagent_v.py",
        '        if not getattr(backend, "accepts_images", False):\n            return prompt',
        "        if True:\n            return prompt",
        (REAGENT_TESTS, "-k", "selected_frames_with_the_answer_prompt"),
    ),
    Mutant(
        "vision_feature_layer_ignored",
        "jaxmm/models/vision.py",
        "            return hidden_states[cfg.feature_layer]",
        "            return hidden_states[-1]",
        ("tests/models/test_llava_hf.py", "-k", "matches_transformers"),
    ),
    # CLaMR noisy corpus (tests/data/test_multivent.py) and optimizer param groups
    Mutant(
        "clamr_synth_distractors_in_one_modality",
        "jaxmm/data/clamr_synth.py",
        "            for w, t in zip(query_words, wrong, strict=False):",
        "            for w, t in [(w, wrong[0]) for w in query_words]:",
        ("tests/data/test_multivent.py", "-k", "noisy"),
    ),
    Mutant(
        "optim_lr_scale_factor_ignored",
        "jaxmm/train/optim.py",
        "        groups[name] = optimizer(lambda step, f=factor: f * schedule(step))",
        "        groups[name] = optimizer(schedule)",
        ("tests/train/test_optim.py",),
    ),
    # --- splat: one grid over (view, tile), work items (issue 13) ----------------------------
    Mutant(
        "splat_views_wrong_feature_offset",
        SPLAT + "pallas_gpu.py",
        "flat_ids = (gauss_ids + (n + 1) * jnp.arange(v, dtype=jnp.int32)[:, None])",
        "flat_ids = (gauss_ids + n * jnp.arange(v, dtype=jnp.int32)[:, None])",
        (SPLAT_VIEWS_TESTS + "::test_views_in_one_grid_match_reference_per_view",),
    ),
    Mutant(
        "splat_items_ignore_incoming_T",
        SPLAT + "pallas_gpu.py",
        "trans0 = t_in_ref[...] if has_t_in else zeros + 1.0\n    done0",
        "trans0 = zeros + 1.0\n    done0",
        (SPLAT_VIEWS_TESTS + "::test_work_items_match_reference_across_item_boundaries",),
    ),
    Mutant(
        "splat_items_final_T_of_last_item",
        SPLAT + "pallas_gpu.py",
        "final = active & ~(next_active & ~wl.last[:, None])",
        "final = jnp.broadcast_to(wl.last[:, None], active.shape)",
        (SPLAT_VIEWS_TESTS + "::test_work_items_match_reference_across_item_boundaries",),
    ),
    Mutant(
        "splat_items_bwd_suffix_own_item_only",
        SPLAT + "pallas_gpu.py",
        "return [ct[tile] for ct in cts] + suffix + [t_final[tile], last]",
        "return [ct[tile] for ct in cts] + list(partials) + [t_final[tile], last]",
        (SPLAT_VIEWS_TESTS + "::test_work_items_match_reference_across_item_boundaries",),
    ),
    Mutant(
        "skot_answer_never_attaches_frames",
        "jaxmm/pipelines/skot_answer.py",
        'backend.chat([P.with_frames(P.render("answer", **fields), frames)], params)',
        'backend.chat([P.render("answer", **fields)], params)',
        ("tests/pipelines/test_video_skot_frames.py", "-k", "answer_attaches_frames"),
    ),
    Mutant(
        "skot_frames_out_of_time_order",
        "jaxmm/pipelines/skot_prompts.py",
        "*frame_parts(clip.frames, clip.timestamps_s)]",
        "*frame_parts(clip.frames[::-1], clip.timestamps_s)]",
        ("tests/pipelines/test_video_skot_frames.py", "-k", "cot_attaches_frames"),
    ),
    Mutant(
        "siglip_normalise_mean_zero",
        "jaxmm/models/siglip.py",
        "return (x - np.float32(self.mean)) / np.float32(self.std)",
        "return x / np.float32(self.std)",
        ("tests/pipelines/test_reagent_v.py::test_siglip_similarity_is_what_ecrs_receives",),
    ),
    Mutant(
        "siglip_text_pools_first_token",
        "jaxmm/models/siglip.py",
        '"head")(x[:, -1])',
        '"head")(x[:, 0])',
        ("tests/models/test_siglip.py::test_matches_transformers_siglip_model",),
    ),
    Mutant(
        "siglip_frame_batches_keep_padding",
        "jaxmm/models/siglip.py",
        "out.append(np.asarray(emb)[: len(chunk)])",
        "out.append(np.asarray(emb)[-len(chunk) :])",
        ("tests/pipelines/test_reagent_v.py::test_siglip_similarity_is_what_ecrs_receives",),
    ),
)


def copy_tree(dst: str, root: str = ROOT) -> None:
    """Tracked + untracked-but-not-ignored files of `root` into `dst` (no .venv, no runs)."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for rel in filter(None, (f.decode() for f in files)):
        src = os.path.join(root, rel)
        if not os.path.isfile(src):  # deleted in the working tree, or a submodule
            continue
        os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
        shutil.copy2(src, os.path.join(dst, rel))


def apply(m: Mutant, tree: str) -> bool:
    """Applies `m` inside `tree`; False (nothing written) if its snippet is not there once."""
    path = os.path.join(tree, m.path)
    if not os.path.isfile(path):
        return False
    with open(path) as f:
        text = f.read()
    if text.count(m.original) != 1:
        return False
    with open(path, "w") as f:
        f.write(text.replace(m.original, m.mutated))
    return True


def run_mutant(m: Mutant, root: str = ROOT, timeout: float = 1800) -> tuple[str, float, str]:
    """(status, seconds, pytest output tail) for one mutant, in a fresh temporary copy."""
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix=f"mutant_{m.name}_") as tree:
        copy_tree(tree, root)
        if not apply(m, tree):
            return "stale", time.time() - t0, f"snippet not found once in {m.path}"
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-n", "0", "-p", "no:cacheprovider"]
        cmd += ["-m", "not gpu", *m.tests]
        env = dict(os.environ, PYTHONPATH=tree, PYTHONDONTWRITEBYTECODE="1")
        try:
            proc = subprocess.run(
                cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return "killed", time.time() - t0, f"timed out after {timeout} s"
        tail = (proc.stdout + proc.stderr)[-1500:]
        # pytest: 0 all passed, 1 some failed, 2 interrupted/collection error, 5 none collected.
        status = {0: "survived", 1: "killed", 2: "killed"}.get(proc.returncode, "error")
        return status, time.time() - t0, tail


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("names", nargs="*", help="mutants to run (default: all)")
    p.add_argument("--list", action="store_true", help="print the mutant names and exit")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per mutant")
    p.add_argument("-v", "--verbose", action="store_true", help="print pytest's tail per mutant")
    args = p.parse_args(argv)
    by_name = {m.name: m for m in MUTANTS}
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:40s} {m.path}  <- {' '.join(m.tests)}")
        return 0
    unknown = [n for n in args.names if n not in by_name]
    if unknown:
        p.error(f"unknown mutants {unknown}; see --list")
    chosen = [by_name[n] for n in args.names] if args.names else list(MUTANTS)
    results = {}
    for m in chosen:
        status, secs, tail = run_mutant(m, timeout=args.timeout)
        results[m.name] = status
        print(f"{status:9s} {secs:6.0f} s  {m.name}  ({m.path}; {' '.join(m.tests)})", flush=True)
        if args.verbose or status in ("stale", "error"):
            print("    " + tail.replace("\n", "\n    "))
    counted = [s for s in results.values() if s in ("killed", "survived")]
    killed = counted.count("killed")
    rate = killed / len(counted) if counted else 0.0
    others = {s: list(results.values()).count(s) for s in ("stale", "error")}
    print(f"kill rate: {killed}/{len(counted)} = {rate:.0%}  (stale {others['stale']}, "
          f"error {others['error']})")  # fmt: skip
    return 0 if killed == len(counted) and not others["stale"] and not others["error"] else 1


if __name__ == "__main__":
    sys.exit(main())
