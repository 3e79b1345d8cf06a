"""FastSFTTrainer: TRL's SFTTrainer with the same loss, kernels and metrics, and no wait on the GPU inside a step.

A host sync drains the GPU's queue: the GPU then idles while Python launches the next kernels. Stock SFTTrainer
waits 15 times a step (`python -m models.benchmarks.gpu --syncs sft:stock` lists them):
- boolean-mask indexing around the fused LM head, forward and backward (`hidden[mask]` must learn its size);
- `.item()` on the entropy, token-accuracy and token-count metrics, and `num_valid > 0`;
- the Trainer's NaN/Inf loss filter (`torch.isnan(loss) or torch.isinf(loss)` in a Python `if`);
- blocking host-to-device copies of every batch (accelerate's default);
- transformers' check whether the attention mask has padding.
Here the collator, on the host, lists the positions that carry a label (`scored_positions`), so the head gathers
them with `index_select` and the count is a shape; metrics stay tensors until `log()` (one sync per logging step);
the NaN/Inf filter runs on the device with `torch.where`; an unpadded batch goes without its mask where the backbone
takes a mask mapping; the caller turns on non-blocking copies from pinned memory. Where the fast path does not
apply (see `fast_path_blocker`), the trainer is plain SFTTrainer.
"""

from __future__ import annotations

import logging
import types

import torch
from accelerate.utils import is_peft_model
from torch.distributed.tensor import DTensor
from trl import SFTTrainer
from trl.kernels.chunked_logprob import ChunkedLogProbFunction
from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE, FusedCausalLMOutput, maybe_gather_lm_head_ctx

log = logging.getLogger(__name__)

HEAD_OUTPUTS = ("log_probs", "entropy", "is_top1")  # what SFTTrainer's metrics need, as TRL asks for them
LOGIT_SCALING_KEYS = ("logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


class ScoredPositions:
    """Wraps a collator: adds `scored_positions`, the flat [batch * seq] rows of the hidden states whose next-token
    label is not -100 (or, with `shift_labels`, whose own label is not -100), computed on the host. With
    drop_full_masks, an attention mask without padding is dropped: checking it on the GPU would be a host sync."""

    def __init__(self, collator, drop_full_masks: bool):
        self.collator, self.drop_full_masks = collator, drop_full_masks

    def __call__(self, examples):
        batch = self.collator(examples)
        if "shift_labels" in batch:
            scored = batch["shift_labels"] != -100
        else:
            labels = batch["labels"]
            scored = torch.zeros_like(labels, dtype=torch.bool)
            scored[:, :-1] = labels[:, 1:] != -100
        batch["scored_positions"] = scored.flatten().nonzero().squeeze(1)
        if self.drop_full_masks and "attention_mask" in batch and bool(batch["attention_mask"].all()):
            # no padding: the forward asks for plain causal attention instead (see add_indexed_lm_head)
            del batch["attention_mask"]
        return batch


def fast_path_blocker(trainer: SFTTrainer) -> str | None:
    """Why the fast path cannot run for this trainer (its loss or model needs TRL's general code), or None."""
    args, config = trainer.args, trainer.model.config
    if trainer.compute_loss_func is not None or trainer.label_smoother is not None:
        return "a custom loss function or label smoothing"
    if args.loss_type not in ("nll", "dft"):
        return f"loss_type={args.loss_type}"
    if trainer.aux_loss_enabled:
        return "a mixture-of-experts auxiliary loss"
    parallelism = trainer.accelerator.parallelism_config
    if parallelism is not None and (parallelism.cp_enabled or parallelism.sp_enabled):
        return "context or sequence parallelism"
    if config.get_text_config() is not config or any(getattr(config, k, None) is not None for k in LOGIT_SCALING_KEYS):
        return "a vision-language model or scaled logits"
    if is_peft_model(trainer.model):
        return "a PEFT model"
    return None


def takes_causal_mask_mapping(model) -> bool:
    """Whether the backbone takes its masks as a mapping {layer type: mask} (transformers' Qwen2, Qwen3, Gemma and
    most newer families) and every layer attends causally over the whole sequence. Read from the backbone's source:
    where the answer is no, the mask is kept and checked on the GPU, which costs one host sync a step, nothing else."""
    import inspect

    layer_types = set(getattr(model.config, "layer_types", None) or ["full_attention"])
    try:
        source = inspect.getsource(type(model.base_model).forward)
    except (OSError, TypeError):  # no source to read (a compiled or generated class): keep the mask
        return False
    return layer_types == {"full_attention"} and "causal_mask_mapping := attention_mask" in source


def add_indexed_lm_head(model) -> None:
    """Let `model(..., scored_positions=rows)` run TRL's fused LM head on those rows only, gathered with
    `index_select` (no host sync); without `scored_positions` the forward is the one TRL installed."""
    trl_forward = model.forward
    softcap = getattr(model.config, "final_logit_softcapping", None)

    def forward(self, *args, scored_positions=None, labels=None, shift_labels=None, **kwargs):
        if scored_positions is None:
            return trl_forward(*args, labels=labels, shift_labels=shift_labels, **kwargs)
        kwargs = {k: v for k, v in kwargs.items() if k not in ("fused_lm_head", "num_items_in_batch")}
        if "attention_mask" not in kwargs and "position_ids" not in kwargs:
            # the collator dropped a mask without padding: plain causal attention, given as transformers' per-layer-type
            # mask mapping, since a missing mask makes the model look for packed sequences on the GPU (a host sync)
            kwargs["attention_mask"] = {"full_attention": None}
        hidden = self.base_model(*args, **{**kwargs, "use_cache": False}).last_hidden_state  # [batch, seq, hidden]
        # row b * seq + t of the flat hidden states predicts label (b, t + 1), or shift_labels (b, t)
        targets = shift_labels.flatten() if shift_labels is not None else labels.flatten()[1:]
        head = self.get_output_embeddings()
        weight, bias = head.weight, head.bias
        if isinstance(weight, DTensor):  # FSDP2 shards the head; gathered once, like TRL does
            weight, bias = weight.full_tensor(), None if bias is None else bias.full_tensor()
        with maybe_gather_lm_head_ctx(weight, bias):
            log_probs, entropy, _, _, is_top1 = ChunkedLogProbFunction.apply(
                hidden.flatten(0, 1).index_select(0, scored_positions).to(weight.device),
                weight,
                bias,
                targets.index_select(0, scored_positions).to(weight.device),
                1.0,  # temperature
                _CHUNKED_LOGPROB_CHUNK_SIZE,  # TRL's vocabulary chunk
                softcap,
                1.0,  # logit scale
                HEAD_OUTPUTS,
            )
        return FusedCausalLMOutput(log_probs=log_probs, entropy=entropy, is_top1=is_top1)

    model.forward = types.MethodType(forward, model)


def _host_values(values: list) -> list[float]:
    """Metric values as floats, reading every device tensor among them in one transfer."""
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    if not tensors:
        return values
    read = iter(torch.stack([t.detach().float().reshape(()) for t in tensors]).tolist())
    return [next(read) if isinstance(v, torch.Tensor) else v for v in values]


class FastSFTTrainer(SFTTrainer):
    """SFTTrainer without host syncs in the training step (see the module docstring); same loss and metrics."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fast_path_blocker = fast_path_blocker(self)
        self._filter_nan_on_device = False
        if self.fast_path_blocker:
            log.info("FastSFTTrainer: TRL's SFT step (it waits on the GPU) because of %s", self.fast_path_blocker)
            return
        self.data_collator = ScoredPositions(self.data_collator, drop_full_masks=takes_causal_mask_mapping(self.model))
        add_indexed_lm_head(self.model)
        # the Trainer's own filter reads the loss on the host every step; the same filter runs in training_step
        self._filter_nan_on_device, self.args.logging_nan_inf_filter = self.args.logging_nan_inf_filter, False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "scored_positions" not in inputs or return_outputs:  # TRL's path, which also returns the logits
            inputs.pop("scored_positions", None)
            if "attention_mask" not in inputs and "position_ids" not in inputs:
                inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])  # the mask the collator dropped
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        outputs = model(**inputs, use_cache=False)
        per_token_loss = -outputs.log_probs
        if self.args.loss_type == "dft":  # https://huggingface.co/papers/2508.05629
            per_token_loss = per_token_loss * outputs.log_probs.exp().detach()
        scored = inputs["scored_positions"].numel() if num_items_in_batch is None else num_items_in_batch
        loss = per_token_loss.sum() / torch.as_tensor(scored).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        self._record_metrics(mode, inputs, outputs)
        return loss

    def _record_metrics(self, mode: str, inputs: dict, outputs) -> None:
        """SFTTrainer's entropy, mean_token_accuracy and num_tokens, kept as device tensors until log()."""
        gather = self.accelerator.gather_for_metrics
        scored = torch.full((), inputs["scored_positions"].numel(), device=outputs.log_probs.device)
        valid = gather(scored).sum().clamp(min=1)
        self._metrics[mode]["entropy"].append(gather(outputs.entropy.detach().sum()).sum() / valid)
        self._metrics[mode]["mean_token_accuracy"].append(gather(outputs.is_top1.sum()).sum() / valid)
        if mode == "train":
            if "attention_mask" in inputs:
                tokens = gather(inputs["attention_mask"].sum()).sum()
            else:  # no padding, or padding-free (one packed row): every input token counts
                tokens = gather(torch.full((), inputs["input_ids"].numel(), device=outputs.log_probs.device)).sum()
            self._total_train_tokens = self._total_train_tokens + tokens // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not self._filter_nan_on_device:
            return loss
        # the Trainer's NaN/Inf filter: a non-finite step adds the mean of the losses since the last log instead
        fallback = self._tr_loss / (1 + self.state.global_step - self._globalstep_last_logged)
        return torch.where(torch.isfinite(loss), loss, fallback.to(loss.dtype))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        for key, values in self._metrics[mode].items():
            self._metrics[mode][key] = _host_values(values)
        super().log(logs, start_time)
