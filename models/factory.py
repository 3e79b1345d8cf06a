"""Load a model and its tokenizer from `builtin:<name>` (shipped in models/assets), a local folder or a hub id:
one code path (`from_pretrained`) for the tiny default and for real recipes.
"""

from __future__ import annotations

import json
from pathlib import Path

ASSETS = Path(__file__).parent / "assets"


def resolve_source(source: str) -> str:
    """`builtin:tiny_base` -> the shipped folder; a path or hub id is returned unchanged."""
    if source.startswith("builtin:"):
        return str(ASSETS / source.removeprefix("builtin:"))
    return source


def source_problem(source: str) -> str | None:
    """Why `source` cannot be a model (a builtin or local folder that is missing), or None if it can."""
    resolved = resolve_source(source)
    looks_local = source.startswith(("builtin:", "/", "./", "../", "~")) or Path(resolved).exists()
    if looks_local and not (Path(resolved).expanduser() / "config.json").is_file():
        return f"no model folder with a config.json at '{resolved}'; give a Hugging Face folder or a hub id"
    return None


def model_record(source: str, stage: str):
    """A model to start from as a record: a local folder fingerprinted by content, a hub id by its resolved commit
    (models/fingerprints.py; SourceError in one line when neither the hub nor the local cache can say)."""
    from models.fingerprints import content_fingerprint, hub_fingerprint
    from models.records import Artifact

    resolved = resolve_source(source)
    folder = Path(resolved).expanduser()
    fingerprint = content_fingerprint(folder) if folder.is_dir() else hub_fingerprint(resolved, "model")
    return Artifact(uri=resolved, fingerprint=fingerprint, stage=stage, kind="model")


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")


def saved_as_generic(folder: Path) -> bool:
    """True if the folder's tokenizer was saved as a plain tokenizers backend (the tiny default's character
    tokenizer): AutoTokenizer would swap in the model type's own class (Qwen2Tokenizer drops `\\n`)."""
    config = folder / "tokenizer_config.json"
    return config.is_file() and json.loads(config.read_text()).get("tokenizer_class") in GENERIC_TOKENIZERS


def load_tokenizer(source: str):
    """The tokenizer exactly as saved: a generic one through PreTrainedTokenizerFast, others through AutoTokenizer."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    resolved = resolve_source(source)
    generic = saved_as_generic(Path(resolved).expanduser())
    tokenizer = (PreTrainedTokenizerFast if generic else AutoTokenizer).from_pretrained(resolved)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(source: str, dtype: str = "auto"):
    """(model, tokenizer) from a builtin, a local folder or a hub id, on the GPU when there is one."""
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(resolve_source(source), dtype=torch_dtype).to(device())
    return model, load_tokenizer(source)


def precision_knobs(knobs: dict) -> dict:
    """bf16 where the GPU supports it, fp32 on a CPU, unless the recipe chose (TRL defaults to bf16=True)."""
    import torch

    gpu_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return {"bf16": gpu_bf16, "use_cpu": not torch.cuda.is_available(), **knobs}
