"""Fast batched sampling for GRPO rollouts: a static KV cache and a decode step (model forward, sampling and the
bookkeeping) captured whole as one CUDA graph on a GPU, with HF generate's sampling semantics (min_new_tokens,
temperature, top-k, top-p, EOS, padding).

HF `generate` spends most of a decode step in Python (logits processors, stopping checks that sync the device,
input preparation): ~20 ms a step uncompiled, ~4.5 ms compiled, for a 0.37B model whose weights take ~0.2 ms to
read. Here a decode step is one graph replay: the model forward (compiled by torch.compile into fused kernels), the
sampling and the writes into the output all run inside it, so the CPU only launches the graph; the device is
synchronised only every `check_every` steps, to stop once every row has ended. On an H200, 64 rows x 256 tokens
take ~0.8 s (~3 ms a token, prefill included; README).

Length: attention reads only the filled prefix of the cache. The cache is allocated for the longest completion, but
a decode step attends over the first `BUCKET`-multiple of slots that holds every token written so far; a graph is
captured for each such prefix length as decoding reaches it (one compiled step with a dynamic length serves all of
them), so a decode step's cost grows with the tokens in the cache, not with the cache's size. The attention itself
(`prefix_attention`, registered with transformers' AttentionInterface and used only while the sampler runs) groups
the query heads of each key/value head, so grouped-query attention reads each cached key once instead of copying
them per query head (what `repeat_kv` does under torch.compile).

Memory: the graph is captured afresh for each batch of prompts, and the KV cache's storage and the side stream's
cuBLAS workspace are released after it, so nothing of the rollout stays allocated while the policy trains (the
graph memory pool stays reserved for the next batch).

Same function as `model.generate(do_sample=True, ...)` for the processors it supports; `supports()` says whether a
generation config uses only those (anything else falls back to HF generate).
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

SUPPORTED = {
    "max_new_tokens",
    "min_new_tokens",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "cache_implementation",
}
EAGER_STEPS_BEFORE_CAPTURE = 2  # compile and warm up (cuBLAS workspaces, autotuning) outside the graph capture
BUCKET = 256  # a decode step attends over a multiple of this many cache slots: one graph per multiple reached
SPARE_SLOTS = 8  # the cache is a little longer than its last prefix: a prefix is never the whole cache (no recompile)
PREFIX_ATTENTION = "r1_prefix_sdpa"  # the name prefix_attention is registered under in transformers


def supports(generation_kwargs: dict) -> bool:
    """True if every set option is one this sampler implements exactly (min_p, repetition penalty, ... are not)."""
    neutral = {"min_p": None, "repetition_penalty": 1.0, "suppress_tokens": None}
    return all(k in SUPPORTED or v == neutral.get(k, object()) or v is None for k, v in generation_kwargs.items())


def _bucket(length: int, multiple: int = 64) -> int:
    return multiple * math.ceil(length / multiple)


def prefix_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Scaled dot-product attention over the first `attention_mask.shape[-1]` cache slots only.

    query (batch, heads, q, dim); key/value (batch, kv_heads, cache slots, dim), the whole static cache; the mask
    (batch, 1, q, slots) is boolean, True where a query may attend. For one query token the query heads that share
    a key/value head become that head's query rows (batch, kv_heads, heads // kv_heads, dim), so the keys are read
    once, not copied per query head. Returns (batch, q, heads, dim) as transformers' attention functions do."""
    slots = attention_mask.shape[-1]
    key, value = key[:, :, :slots], value[:, :, :slots]
    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    if q_len == 1 and heads != kv_heads:
        grouped = query.reshape(batch, kv_heads, heads // kv_heads, dim)
        out = torch.nn.functional.scaled_dot_product_attention(
            grouped, key, value, attn_mask=attention_mask, scale=scaling
        )
        out = out.reshape(batch, heads, 1, dim)
    else:
        repeat = heads // kv_heads
        key, value = key.repeat_interleave(repeat, dim=1), value.repeat_interleave(repeat, dim=1)
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, scale=scaling
        )
    return out.transpose(1, 2).contiguous(), None


def prefix_attention_fits(config) -> bool:
    """Whether a model's attention is plain causal softmax attention that prefix_attention computes exactly (no
    sliding window, soft-capping, sinks or alibi)."""
    text = getattr(config, "get_text_config", lambda: config)()
    plain = not any(getattr(text, k, None) for k in ("attn_logit_softcapping", "alibi", "use_alibi"))
    window = getattr(text, "use_sliding_window", False) or (
        getattr(text, "sliding_window", None) and "sliding_attention" in (getattr(text, "layer_types", None) or [])
    )
    return plain and not window and getattr(text, "model_type", "") not in {"gpt_oss"}


@contextlib.contextmanager
def attention_implementation(model, name: str):
    """Run the block with `model`'s attention modules dispatching to `name` (its config's and sub-configs')."""
    found = {
        id(m.config): m.config
        for m in model.modules()
        if hasattr(getattr(m, "config", None), "_attn_implementation_internal")
    }
    configs = list(found.values())
    saved = [c._attn_implementation_internal for c in configs]
    for config in configs:
        config._attn_implementation_internal = name
    try:
        yield
    finally:
        for config, value in zip(configs, saved, strict=True):
            config._attn_implementation_internal = value


def _register_prefix_attention() -> None:
    from transformers import AttentionInterface

    if PREFIX_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(PREFIX_ATTENTION, prefix_attention)


def sample_next(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """One token per row, as HF's TemperatureLogitsWarper -> TopKLogitsWarper -> TopPLogitsWarper -> multinomial.

    The draw is torch.multinomial's own single-sample method (argmax of p / Exp(1) noise), written out so that it
    has no host synchronisation and can run inside a CUDA graph."""
    logits = logits.float() / temperature
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - top_p)
        remove[:, -1] = False  # keep at least the most likely token
        logits = logits.masked_fill(remove.scatter(1, order, remove), -math.inf)
    probs = logits.softmax(dim=-1)
    return (probs / torch.empty_like(probs).exponential_()).argmax(dim=-1)


@dataclass
class DecodeState:
    """Everything a decode step reads and writes, as tensors at fixed addresses (what a CUDA graph replays on)."""

    token: torch.Tensor  # (batch, 1) the last sampled token, the next step's input
    position: torch.Tensor  # (batch, 1) its position id
    slot: torch.Tensor  # (1,) the cache slot the next decode step writes (prompt length + step - 1)
    step: torch.Tensor  # (1,) index of the next token to sample
    finished: torch.Tensor  # (batch,) a row has produced an EOS
    out: torch.Tensor  # (batch, max_new_tokens) completion ids, pad after EOS
    is_eos: torch.Tensor  # (vocab,) which ids end a completion
    mask: torch.Tensor  # (batch, 1, 1, cache length) which cache slots each row attends to (prompt pads never)


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_k: int
    top_p: float
    min_new_tokens: int
    pad_token_id: int


class StaticSampler:
    """Reusable sampler for one model; one static cache per (batch, length) bucket, whose memory is held only
    while a batch is being generated. `step_marks`, when a list, receives (tokens decoded, CUDA event) every
    `mark_every` decode steps, for timing the decode step against length (the benchmark reads it)."""

    def __init__(self, model, compile_model: bool | None = None, check_every: int = 32):
        # a dynamo limit as before: other compiled code in the process (or a new batch shape) recompiles the step
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        _register_prefix_attention()
        self.model = model
        self.check_every = check_every
        self.compile = torch.cuda.is_available() if compile_model is None else compile_model
        self.use_graphs = True  # on a CUDA device; turned off for good if a capture ever fails
        self.prefix = prefix_attention_fits(model.config)
        self.step_marks: list | None = None
        self.mark_every = 64
        self._caches: dict[tuple[int, int], object] = {}
        self._side_stream = self._graph_pool = self._last_graph = None  # made on first use on a GPU (see _side)
        # dynamic=None: the attended prefix length is marked dynamic, so one compiled step serves every bucket
        self._decode = torch.compile(self._decode_step) if self.compile else self._decode_step

    def _decode_step(self, tokens, attention_mask, position_ids, cache):
        out = self.model(
            input_ids=tokens, attention_mask=attention_mask, position_ids=position_ids, cache=cache, use_cache=True
        )
        return out.logits[:, -1, :]

    def _cache(self, batch: int, length: int):
        """The bucket's cache object (kept, so compiled code guarded on it stays valid), its storage re-grown."""
        from transformers import StaticCache

        key = (batch, length)
        if key not in self._caches:
            self._caches[key] = StaticCache(config=self.model.config, max_cache_len=length)
        cache = self._caches[key]
        for tensor in _cache_tensors(cache):
            tensor.untyped_storage().resize_(tensor.numel() * tensor.element_size())
        cache.reset()
        return cache

    @staticmethod
    def _release(cache) -> None:
        for tensor in _cache_tensors(cache):
            tensor.untyped_storage().resize_(0)

    def _advance(self, logits: torch.Tensor, state: DecodeState, sampling: Sampling) -> None:
        """Sample the token at `state.step` from `logits` and record it; every operation is in place."""
        logits = logits.masked_fill(state.is_eos & (state.step < sampling.min_new_tokens), -math.inf)  # no EOS yet
        token = sample_next(logits, sampling.temperature, sampling.top_k, sampling.top_p)
        token = torch.where(state.finished, sampling.pad_token_id, token)
        state.out.index_copy_(1, state.step, token[:, None])
        state.finished |= state.is_eos[token]
        state.token.copy_(token[:, None])
        state.position.add_(1)
        state.step.add_(1)

    def _step(self, cache, state: DecodeState, sampling: Sampling, slots: int) -> None:
        """One decode step attending over the cache's first `slots` slots (the whole cache without prefix
        attention)."""
        state.mask.index_fill_(-1, state.slot, True)  # the slot this step's token is written to
        state.slot.add_(1)
        mask = state.mask[..., :slots] if self.prefix else state.mask
        if self.compile and self.prefix:
            torch._dynamo.maybe_mark_dynamic(mask, 3)
        logits = self._decode(state.token, mask, state.position, cache)
        self._advance(logits, state, sampling)

    def _side(self) -> torch.cuda.Stream:
        """The one stream the warm-up steps run and the graphs are captured on: a stream carries its own cuBLAS
        workspace, so one for the sampler's life, not one per batch."""
        if self._side_stream is None:
            self._side_stream, self._graph_pool = torch.cuda.Stream(), torch.cuda.graph_pool_handle()
        self._side_stream.wait_stream(torch.cuda.current_stream())
        return self._side_stream

    def _capture(self, cache, state: DecodeState, sampling: Sampling, slots: int):
        """One decode step as a CUDA graph, or None (and eager decoding from then on) if capture fails.

        capture_begin/end rather than `torch.cuda.graph`, which empties the allocator's cache on every capture (the
        policy would then re-allocate its training memory from the driver each step); every graph reuses one
        memory pool, so capturing anew for each batch and prefix length does not grow reserved memory."""
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.stream(self._side()):
                graph.capture_begin(pool=self._graph_pool, capture_error_mode="thread_local")
                try:
                    self._step(cache, state, sampling, slots)
                finally:
                    graph.capture_end()
        except RuntimeError as err:
            log.warning("CUDA graph capture of the decode step failed, decoding without graphs: %s", err)
            self.use_graphs = False
            return None
        finally:
            torch.cuda.current_stream().wait_stream(self._side_stream)
        self._last_graph = graph  # keeps the shared pool in use (reserved, not allocated) until the next capture
        return graph

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        max_new_tokens: int,
        eos_token_ids: list[int],
        pad_token_id: int,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        min_new_tokens: int = 0,
    ) -> torch.Tensor:
        """Completion ids (batch, <= max_new_tokens) for left-padded prompts; pad after a row's EOS."""
        batch, prompt_len = input_ids.shape
        length = _bucket(prompt_len + max_new_tokens, BUCKET if self.prefix else 64)
        length += SPARE_SLOTS if self.prefix else 0
        cache = self._cache(batch, length)
        name = PREFIX_ATTENTION if self.prefix else self.model.config._attn_implementation
        try:
            sampling = Sampling(temperature, top_k, top_p, min_new_tokens, pad_token_id)
            with attention_implementation(self.model, name):
                return self._generate(cache, input_ids, attention_mask, max_new_tokens, eos_token_ids, sampling)
        finally:
            self._release(cache)
            _release_cublas_workspaces()

    def _prefill(self, cache, input_ids, attention_mask, position) -> torch.Tensor:
        """The prompt's forward (eager: its shape changes with every batch), writing the cache's first slots; the
        last position's logits. With prefix attention its mask is causal over the prompt's own slots, each padded
        position attending to itself only (its outputs are never used; a row with nothing to attend gives NaN)."""
        if self.prefix:
            prompt_len = input_ids.size(1)
            causal = torch.ones(prompt_len, prompt_len, dtype=torch.bool, device=input_ids.device).tril()
            mask = (causal & attention_mask.bool()[:, None, :]) | torch.eye(
                prompt_len, dtype=torch.bool, device=input_ids.device
            )
            mask = mask[:, None]
        else:
            mask = torch.ones(input_ids.size(0), cache.layers[0].max_cache_len, dtype=attention_mask.dtype)
            mask = mask.to(input_ids.device)
            mask[:, : input_ids.size(1)] = attention_mask  # future slots stay 1: hidden by causality until written
        prefill = dict(input_ids=input_ids, attention_mask=mask, position_ids=position, cache=cache, use_cache=True)
        return self.model(**prefill, logits_to_keep=1).logits[:, -1, :]

    def _state(self, cache, attention_mask, position, vocab, max_new_tokens, eos_token_ids, sampling) -> DecodeState:
        batch, prompt_len = attention_mask.shape
        device = attention_mask.device
        mask = torch.zeros(batch, 1, 1, cache.layers[0].max_cache_len, dtype=torch.bool, device=device)
        mask[:, 0, 0, :prompt_len] = attention_mask.bool()
        if not self.prefix:  # the model's own attention: an integer 2D mask, future slots hidden by causality
            mask = torch.ones(batch, cache.layers[0].max_cache_len, dtype=attention_mask.dtype, device=device)
            mask[:, :prompt_len] = attention_mask
        is_eos = torch.zeros(vocab, dtype=torch.bool, device=device)
        is_eos[torch.tensor(eos_token_ids, device=device)] = True
        return DecodeState(
            token=torch.zeros(batch, 1, dtype=torch.long, device=device),
            position=position[:, -1:].clone(),
            slot=torch.full((1,), prompt_len, dtype=torch.long, device=device),
            step=torch.zeros(1, dtype=torch.long, device=device),
            finished=torch.zeros(batch, dtype=torch.bool, device=device),
            out=torch.full((batch, max_new_tokens), sampling.pad_token_id, dtype=torch.long, device=device),
            is_eos=is_eos,
            mask=mask,
        )

    def _generate(self, cache, input_ids, attention_mask, max_new_tokens, eos_token_ids, sampling) -> torch.Tensor:
        prompt_len = input_ids.size(1)
        position = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        logits = self._prefill(cache, input_ids, attention_mask, position)
        state = self._state(cache, attention_mask, position, logits.size(-1), max_new_tokens, eos_token_ids, sampling)
        self._advance(logits, state, sampling)  # the first token comes from the prefill's logits
        del logits
        decoder = _GraphDecoder(self, cache, state, sampling) if input_ids.is_cuda else None
        for done in range(1, max_new_tokens):
            if done % self.check_every == 0 and bool(state.finished.all()):
                return state.out[:, :done]
            if self.step_marks is not None and done % self.mark_every == 0 and input_ids.is_cuda:
                self.step_marks.append((done, _event()))
            slots = _bucket(prompt_len + done, BUCKET) if self.prefix else cache.layers[0].max_cache_len
            if decoder is None:
                self._step(cache, state, sampling, slots)
            else:
                decoder(slots)
        if self.step_marks is not None and input_ids.is_cuda:
            self.step_marks.append((max_new_tokens, _event()))
        return state.out


class _GraphDecoder:
    """One decode step per call: eager warm-up steps on a side stream (compilation, library workspaces, kernels
    tuned for a new prefix length), then replays of the step captured as a CUDA graph for that prefix length,
    whose intermediates live in the sampler's one graph pool."""

    def __init__(self, sampler: StaticSampler, cache, state: DecodeState, sampling: Sampling):
        self.sampler, self.args = sampler, (cache, state, sampling)
        self.graph, self.slots, self.warm = None, None, 0

    def __call__(self, slots: int) -> None:
        sampler = self.sampler
        if slots != self.slots:  # a longer prefix: warm up at its length, then capture it
            self.graph, self.slots = None, slots
            self.warm = min(self.warm, EAGER_STEPS_BEFORE_CAPTURE - 1)
        if self.graph is None and sampler.use_graphs and self.warm >= EAGER_STEPS_BEFORE_CAPTURE:
            self.graph = sampler._capture(*self.args, slots)
        if self.graph is not None:
            self.graph.replay()
            return
        with torch.cuda.stream(sampler._side()):
            sampler._step(*self.args, slots)
        torch.cuda.current_stream().wait_stream(sampler._side_stream)
        self.warm += 1


def _event() -> torch.cuda.Event:
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


def _release_cublas_workspaces() -> None:
    """cuBLAS keeps a workspace (tens of MiB) per stream it ran on; the side stream's would stay allocated through
    training. Dropped here; the training stream's own is re-made on its next matrix product."""
    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is not None and torch.cuda.is_available():
        clear()


def _cache_tensors(cache) -> list[torch.Tensor]:
    """Every tensor the cache allocated: keys, values and each layer's position counter."""
    initialized = [layer for layer in cache.layers if getattr(layer, "is_initialized", False)]
    return [t for layer in initialized for t in (layer.keys, layer.values, layer.cumulative_length)]
