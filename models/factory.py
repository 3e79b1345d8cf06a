"""Load a model and its tokenizer from `builtin:<name>` (shipped in models/assets), a local folder or a hub id:
one code path (`from_pretrained`) for the tiny default and for real recipes, safetensors only. A local folder is
checked from its files before any stage starts (source_problem: config, weights, tokenizer, architecture):

    python -m models.factory <folder> [--reward] [--chat]     # prints the folder's problem, or `model ok`
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)
ASSETS = Path(__file__).parent / "assets"


def resolve_source(source: str) -> str:
    """`builtin:tiny_base` -> the shipped folder; a path or hub id is returned unchanged."""
    if source.startswith("builtin:"):
        return str(ASSETS / source.removeprefix("builtin:"))
    return source


ROLES = {"model": "a causal language model", "reward": "a sequence-classification (reward) model"}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
SAVE_HINT = "save it with model.save_pretrained(folder) and tokenizer.save_pretrained(folder)"


def looks_local(source: str) -> bool:
    """True if `source` names a folder on this machine (a builtin, a path), not a hub id."""
    return source.startswith(("builtin:", "/", "./", "../", "~")) or Path(resolve_source(source)).exists()


def source_problem(source: str, role: str = "model", chat: bool = False, remote_code: bool = False) -> str | None:
    """Why `source` cannot be loaded as `role` (models/factory.py ROLES) from a local folder, checked from its files
    before any stage starts; None if it can (or it is a hub id: loading it is the check, from safetensors only).
    `chat`: the recipe renders chat prompts, so the tokenizer needs a chat template; `remote_code`: the recipe
    allows the folder's own modelling code (model.trust_remote_code)."""
    if not looks_local(source):
        return None
    folder = Path(resolve_source(source)).expanduser()
    if not folder.exists():
        return (
            f"no model folder at '{folder}'; give a Hugging Face model folder (config.json + *.safetensors) or a hub id"
        )
    if not folder.is_dir():
        return f"'{folder}' is a file, not a model folder; give the folder that holds config.json and *.safetensors"
    if not any(folder.iterdir()):
        return f"the model folder '{folder}' is empty; {SAVE_HINT}"
    return (
        config_problem(folder, role)
        or weights_problem(folder)
        or tokenizer_problem(folder, chat)
        or architecture_problem(folder, role, remote_code)
    )


def config_problem(folder: Path, role: str) -> str | None:
    """Why the folder's config.json cannot describe a model (missing, not JSON, no model_type), or None."""
    path = folder / "config.json"
    if not path.is_file():
        return f"'{folder}' has no config.json; {SAVE_HINT}"
    try:
        config = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f" at line {err.lineno} column {err.colno}" if isinstance(err, json.JSONDecodeError) else ""
        return f"'{path}' is not valid JSON{where}; restore it, or re-save the model with save_pretrained"
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        return f"'{path}' has no model_type; restore the config.json saved with the model ({ROLES[role]})"
    return None


def weights_problem(folder: Path) -> str | None:
    """Why the folder holds no loadable safetensors weights (pickle only, none, truncated), or None."""
    safetensors = sorted(folder.glob("*.safetensors"))
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not safetensors and pickles:
        return (
            f"'{folder}' has only pickle weights ({', '.join(pickles)}); models load from safetensors only (a pickle "
            "can run code): convert it once where you trust it, with "
            "AutoModelForCausalLM.from_pretrained(folder, use_safetensors=False).save_pretrained(folder)"
        )
    if not safetensors:
        return f"'{folder}' has no *.safetensors weights; {SAVE_HINT}"
    return next(filter(None, map(safetensors_problem, safetensors)), None) or shards_problem(folder)


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is not whole (its header unreadable, its tensors past its end), or None; reads the
    header only."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        header = handle.read(length) if 0 < length <= size - 8 else b""
    try:
        tensors = json.loads(header)
        end = max((t["data_offsets"][1] for k, t in tensors.items() if k != "__metadata__"), default=0)
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, IndexError, TypeError):
        return f"'{path}' is not a safetensors file (its header cannot be read); re-save or re-download the model"
    if 8 + length + end > size:
        return f"'{path}' is truncated ({size} of {8 + length + end} bytes); re-save or re-download the model"
    return None


def shards_problem(folder: Path) -> str | None:
    """Why a sharded checkpoint is incomplete (a shard its index names is missing), or None."""
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return None
    try:
        shards = set(json.loads(index.read_text())["weight_map"].values())
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, AttributeError):
        return f"'{index}' is not a valid safetensors index; re-save or re-download the model"
    missing = sorted(s for s in shards if not (folder / s).is_file())
    return f"'{folder}' lacks the shard {missing[0]} its index names; copy the whole folder" if missing else None


def tokenizer_problem(folder: Path, chat: bool) -> str | None:
    """Why the folder has no usable tokenizer (no files, no chat template where chat prompts are used), or None."""
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        return f"'{folder}' has no tokenizer ({' / '.join(TOKENIZER_FILES[:2])}); {SAVE_HINT}"
    if chat and not has_chat_template(folder):
        return (
            f"the tokenizer in '{folder}' has no chat template but data.prompt_style is chat; use a chat (instruct) "
            "model, add a chat_template to its tokenizer_config.json, or set data.prompt_style=compact"
        )
    return None


def has_chat_template(folder: Path) -> bool:
    """True if the saved tokenizer carries a chat template (in tokenizer_config.json or a template file)."""
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    config = folder / "tokenizer_config.json"
    try:
        return config.is_file() and bool(json.loads(config.read_text()).get("chat_template"))
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def architecture_problem(folder: Path, role: str, remote_code: bool = False) -> str | None:
    """Why transformers cannot build `role` from the folder's config (an unknown model_type, one with no causal
    LM / sequence-classification head, its own code while the recipe does not allow it), or None."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    )

    config = json.loads((folder / "config.json").read_bytes())
    model_type, custom = config["model_type"], "auto_map" in config
    heads = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES if role == "model" else MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
    if custom and not remote_code:
        return (
            f"'{folder}' needs its own modelling code (auto_map in config.json), which runs on load; set "
            "model.trust_remote_code=true only if you trust that code"
        )
    if model_type not in CONFIG_MAPPING_NAMES and not custom:
        return f"'{folder}': model_type '{model_type}' is unknown to transformers; give {ROLES[role]} it can build"
    if model_type in CONFIG_MAPPING_NAMES and model_type not in heads and not custom:
        return f"'{folder}': a '{model_type}' model is not {ROLES[role]}; give {ROLES[role]} (e.g. llama, qwen2)"
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


_REMOTE_CODE = {"allowed": False}


def allow_remote_code(allowed: bool) -> None:
    """Whether load_model and load_tokenizer may run a model's own code in this process: set by the stage process
    from its spec (the recipe's model.trust_remote_code); off unless set."""
    _REMOTE_CODE["allowed"] = allowed


def remote_code_allowed() -> bool:
    return _REMOTE_CODE["allowed"]


def load_tokenizer(source: str, trust_remote_code: bool | None = None):
    """The tokenizer exactly as saved: a generic one through PreTrainedTokenizerFast, others through AutoTokenizer."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    resolved = resolve_source(source)
    generic = saved_as_generic(Path(resolved).expanduser())
    loader = PreTrainedTokenizerFast if generic else AutoTokenizer
    remote = remote_code_allowed() if trust_remote_code is None else trust_remote_code
    tokenizer = loader.from_pretrained(resolved, trust_remote_code=remote)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(source: str, dtype: str = "auto", trust_remote_code: bool | None = None):
    """(model, tokenizer) from a builtin, a local folder or a hub id, on the GPU when there is one: weights from
    safetensors only (a pickle can run code on load), the model's own code only if the recipe allows it."""
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    trust_remote_code = remote_code_allowed() if trust_remote_code is None else trust_remote_code
    if trust_remote_code:
        log.warning("model.trust_remote_code is on: '%s' runs its own modelling code on load", source)
    model = AutoModelForCausalLM.from_pretrained(
        resolve_source(source), dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code
    )
    return model.to(device()), load_tokenizer(source, trust_remote_code)


def precision_knobs(knobs: dict) -> dict:
    """bf16 where the GPU supports it, fp32 on a CPU, unless the recipe chose (TRL defaults to bf16=True)."""
    import torch

    gpu_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return {"bf16": gpu_bf16, "use_cpu": not torch.cuda.is_available(), **knobs}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Check a model folder as the pipeline does before any stage.")
    parser.add_argument("folder")
    parser.add_argument("--reward", action="store_true", help="check it as a reward (sequence-classification) model")
    parser.add_argument("--chat", action="store_true", help="the recipe uses chat prompts (needs a chat template)")
    args = parser.parse_args(argv)
    problem = source_problem(args.folder, "reward" if args.reward else "model", args.chat)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if problem:
        log.error("model error: %s", problem)
        return 2
    log.info("model ok: %s", resolve_source(args.folder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
