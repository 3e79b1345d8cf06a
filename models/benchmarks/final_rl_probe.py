"""Probe for non-finite GRPO steps (issue 12): per-step statistics of what feeds the loss, and on the first step
whose loss or gradients are not finite, a dump of the batch and the weights before that step, then the same loss
recomputed in float32 without autocast (is bf16 the cause?) and term by term (which term is not finite?).

    R1_PROBE_OUT=probe PYTHONPATH=<folder with a sitecustomize that calls install() once
        trl.trainer.grpo_trainer is imported>:$PYTHONPATH python -m flows.cli seed=0

Every process that imports TRL's GRPO trainer then writes probe/<pid>.jsonl (one line a step) and, at the first
non-finite step, probe/<pid>_step<N>.pt plus a line with "nonfinite": true. The stage itself is left to run on, so
that NonFiniteGuard's stop is exercised as it would be without the probe. A diagnostic, not part of the pipeline.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch


def _finite(value) -> bool:
    return bool(torch.isfinite(value).all()) if isinstance(value, torch.Tensor) else math.isfinite(value)


def _masked(t: torch.Tensor, mask: torch.Tensor, reduce: str) -> float:
    if t is None or not bool(mask.any()):
        return float("nan")
    values = t.float()[mask.bool()]
    return float(getattr(values, reduce)())


def batch_stats(trainer, model, inputs: dict) -> tuple[dict, dict]:
    """Scalars describing one batch (logged every step) and the per-token tensors behind them (kept for a dump)."""
    prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
    mask = inputs["completion_mask"]
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention = torch.cat([inputs["prompt_mask"], mask], dim=1)
    with torch.no_grad():
        logps = trainer._get_per_token_logps_and_entropies(model, input_ids, attention, completion_ids.size(1))[0]
    ref = inputs.get("ref_per_token_logps")
    adv = inputs["advantages"]
    stats = {
        "tokens": int(mask.sum()),
        "prompt_len": int(prompt_ids.size(1)),
        "completion_len": int(completion_ids.size(1)),
        "adv_absmax": float(adv.abs().max()),
        "adv_finite": _finite(adv),
        "logp_min": _masked(logps, mask, "min"),
        "logp_finite": _finite(logps[mask.bool()]),
    }
    tensors = {"logps": logps.detach().cpu()}
    if ref is not None:
        diff = ref - logps
        kl = torch.exp(diff) - diff - 1
        stats |= {
            "ref_logp_min": _masked(ref, mask, "min"),
            "ref_minus_logp_max": _masked(diff, mask, "max"),
            "kl_max": _masked(kl, mask, "max"),
            "ref_finite": _finite(ref[mask.bool()]),
        }
        tensors |= {"ref_logps": ref.detach().cpu(), "kl": kl.detach().cpu()}
    return stats, tensors


def _fp32_loss(trainer, model, inputs: dict) -> float:
    """The same loss without autocast and in float32: finite here and not under bf16 points at precision."""
    autocast_forward, plain_forward = model.__dict__.get("forward"), model.__dict__.get("_original_forward")
    if plain_forward is not None:  # accelerate wraps forward in autocast; call the model's own
        model.forward = plain_forward
    try:
        with torch.autocast("cuda", enabled=False), torch.no_grad():
            return float(original_compute_loss(trainer, model, inputs))
    finally:
        if plain_forward is not None:
            model.forward = autocast_forward


original_compute_loss = None
original_training_step = None


class Probe:
    def __init__(self, out: Path):
        out.mkdir(parents=True, exist_ok=True)
        self.out, self.pid, self.dumped = out, os.getpid(), False
        self.log = (out / f"{self.pid}.jsonl").open("a")

    def write(self, record: dict) -> None:
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()


PROBE: Probe | None = None


def compute_loss(self, model, inputs):
    loss = original_compute_loss(self, model, inputs)
    self._probe_inputs = inputs
    self._probe_loss = loss.detach()
    return loss


def training_step(self, model, inputs, num_items_in_batch):
    before = None if PROBE.dumped else {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    loss = original_training_step(self, model, inputs, num_items_in_batch)
    grads = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]
    bad_grads = [n for n, g in grads if not bool(torch.isfinite(g).all())]
    batch = self._probe_inputs
    stats, tensors = batch_stats(self, model, batch)
    loss_value = float(self._probe_loss)
    grad_norm = float(torch.stack([g.float().norm() for _, g in grads]).norm()) if grads else 0.0
    record = {"step": self.state.global_step, "loss": loss_value, "grad_norm": grad_norm, **stats}
    if (bad_grads or not math.isfinite(loss_value)) and not PROBE.dumped:
        PROBE.dumped = True
        record |= {"nonfinite": True, "bad_grads": bad_grads[:8], "loss_fp32": _fp32_loss(self, model, batch)}
        dump = {
            "record": record,
            "inputs": {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in batch.items()},
            "weights_before_step": before,
            "ref_weights": (
                {k: v.detach().cpu() for k, v in self.ref_model.state_dict().items()}
                if getattr(self, "ref_model", None) is not None
                else None
            ),
            "tensors": tensors,
            "args": {k: getattr(self.args, k, None) for k in ("temperature", "beta", "loss_type", "bf16")},
        }
        torch.save(dump, PROBE.out / f"{PROBE.pid}_step{self.state.global_step}.pt")
    PROBE.write(record)
    return loss


def install() -> None:
    """Wrap TRL's GRPOTrainer step and loss (call after trl.trainer.grpo_trainer is imported)."""
    global PROBE, original_compute_loss, original_training_step
    from trl.trainer.grpo_trainer import GRPOTrainer

    if original_compute_loss is not None:
        return
    PROBE = Probe(Path(os.environ["R1_PROBE_OUT"]))
    original_compute_loss, original_training_step = GRPOTrainer._compute_loss, GRPOTrainer.training_step
    GRPOTrainer._compute_loss, GRPOTrainer.training_step = compute_loss, training_step
