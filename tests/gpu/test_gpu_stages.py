"""GPU tests (run on the GPU machine: `python3 -m pytest -m gpu tests/gpu`; skipped where there is no CUDA device):
a few steps of each training stage on the tiny model, weights change and stay finite; the CUDA-graph sampler
matches HF greedy decoding on the GPU; the SFT stages' trainer never waits for the GPU inside a step."""

from __future__ import annotations

import pytest
import torch
from stage_chain import TRAINED_FROM, run_chain

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def chain(tmp_path_factory, small_stages):
    from models.recipe import load_recipe

    overrides = [
        *small_stages,
        "cold_start_sft.compile_layers=true",  # the per-layer-compiled SFT path too
        "supervised_merge.compile_layers=true",
        "supervised_merge.activation_memory_budget=0.5",  # and a budget for the activations it keeps
    ]
    return run_chain(load_recipe(None, overrides), tmp_path_factory.mktemp("gpu"))


@pytest.mark.parametrize(("stage", "start"), TRAINED_FROM)
def test_stage_trains_on_the_gpu(chain, stage, start, weights_changed, weights_of):
    assert weights_changed(chain[start].uri, chain[stage].uri)
    assert all(torch.isfinite(v).all() for v in weights_of(chain[stage].uri).values())


def test_graph_sampler_matches_greedy_generate_and_frees_its_memory():
    from models.factory import load_model
    from models.fast_generation import StaticSampler

    model, tok = load_model("builtin:tiny_base")
    tok.padding_side = "left"
    batch = tok(["Q:1+2+3\nA:", "Q:9-8+7-6\nA:", "hi"], return_tensors="pt", padding=True, add_special_tokens=False).to(
        "cuda"
    )
    reference = model.generate(**batch, do_sample=False, max_new_tokens=24, pad_token_id=0)
    reference = reference[:, batch["input_ids"].shape[1] :]
    sampler = StaticSampler(model, compile_model=True)
    held = []
    for _ in range(3):  # later calls re-grow the released cache and capture again
        out = sampler.generate(
            batch["input_ids"], batch["attention_mask"], max_new_tokens=24, eos_token_ids=[2], pad_token_id=0, top_k=1
        )
        assert torch.equal(out, reference)
        assert sampler.use_graphs  # the decode step ran as a captured CUDA graph
        del out
        held.append(torch.cuda.memory_allocated())
    assert held[1] == held[2]  # nothing (cache, graph pool, workspaces) accumulates from call to call


def test_sft_steps_never_wait_for_the_gpu(tmp_path, tiny_qwen2):
    """After the first step, the SFT stages' trainer runs each step (forward, backward, optimizer) with CUDA's sync
    debug mode set to raise on any host sync, and a finite loss comes out. The bench's `--syncs` also covers the
    batch fetches (0 syncs a step on the H200); the logging step (every 10 by default) is the one sync left."""
    from transformers import TrainerCallback

    from models.factory import load_model
    from models.sft import sft_trainer

    class RaiseOnSync(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            torch.cuda.set_sync_debug_mode("error" if state.global_step >= 1 else "default")

        def on_step_end(self, args, state, control, **kwargs):
            torch.cuda.set_sync_debug_mode("default")

    model, tokenizer = load_model(tiny_qwen2, "bfloat16")
    rows = [{"text": f"{a}{b} " * 40} for a in range(8) for b in range(8)]  # equal lengths: no padding
    knobs = dict(max_steps=4, per_device_train_batch_size=8, logging_steps=10, save_strategy="no", disable_tqdm=True)
    trainer = sft_trainer(model, tokenizer, rows, knobs, 0, tmp_path, compile_layers=True, callbacks=[RaiseOnSync()])
    assert trainer.data_collator.drop_full_masks
    try:
        result = trainer.train()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(torch.tensor(result.training_loss))
