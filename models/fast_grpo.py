"""TRL's GRPOTrainer with faster rollouts: the same prompts, sampling settings, on-policy schedule and loss, but
completions come from models.fast_generation.StaticSampler instead of HF generate. Anything the sampler does not
implement (vLLM, continuous batching, images, min_p, repetition penalty) goes through TRL's own path."""

from __future__ import annotations

import torch
from trl import GRPOTrainer
from trl.models import unwrap_model_for_generation
from trl.trainer.utils import pad

from models.fast_generation import StaticSampler, supports


class FastGRPOTrainer(GRPOTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sampler: StaticSampler | None = None
        self.fast_rollouts = (
            not self.use_vllm
            and not getattr(self, "use_transformers_continuous_batching", False)
            and not getattr(self, "_is_vlm", False)
            and supports(self.generation_kwargs)
        )

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        if not self.fast_rollouts or images or multimodal_fields:
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images
            )
        device = self.accelerator.device
        pad_id = self._tokenizer.pad_token_id
        prompts = [torch.tensor(ids) for ids in prompt_ids]
        input_ids = pad(prompts, padding_value=pad_id, padding_side="left").to(device)
        attention_mask = pad([torch.ones_like(t) for t in prompts], padding_value=0, padding_side="left").to(device)
        kwargs = self.generation_kwargs
        with (
            unwrap_model_for_generation(
                self.model_wrapped,
                self.accelerator,
                gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                generation_kwargs=kwargs,
                gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs,
            ) as model,
            torch.no_grad(),
            self._dist.summon_full_params(self.model_wrapped, recurse=False),
        ):
            if self._sampler is None or self._sampler.model is not model:
                self._sampler = StaticSampler(model)
            completions = self._sampler.generate(
                input_ids,
                attention_mask,
                max_new_tokens=kwargs["max_new_tokens"],
                eos_token_ids=self.eos_token_ids,
                pad_token_id=pad_id,
                temperature=kwargs.get("temperature") or 1.0,
                top_k=kwargs.get("top_k") or 0,
                top_p=kwargs.get("top_p") or 1.0,
                min_new_tokens=kwargs.get("min_new_tokens") or 0,
            )
        # keep each completion up to and including its first EOS, as TRL does
        is_eos = torch.isin(completions, torch.tensor(self.eos_token_ids, device=device))
        ends = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1) + 1, completions.size(1))
        return [row[:end].tolist() for row, end in zip(completions.cpu(), ends.cpu(), strict=True)], None
