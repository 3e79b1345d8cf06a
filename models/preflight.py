"""Checks that run before the first stage, so a run that cannot finish fails in seconds with one line that names the
problem and the fix, having written nothing: TRL's own configs built from the resolved stage settings exactly as the
stages build them (TRL's and transformers' checks run), precision the device can train in, the reward model, the
state folder, and the tracking server and Prefect API (a short timeout, not minutes of retries).

    python -m models.preflight [recipe.yaml] [key=value ...]     # prints each problem found, or `preflight ok`
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from models.config import Recipe

REACH_TIMEOUT_S = 3.0  # a server that does not answer its health check within this is taken as down
PROBE_BYTES = 64 * 1024  # written (and removed) in the state folder: a full disk or a file size limit fails here


def _stage_config(name: str, recipe: Recipe, output_dir: str):
    """TRL's config object of trained stage `name`, built from the recipe as models/sft.py and models/grpo.py do."""
    from models.factory import precision_knobs
    from models.resume import trainer_args
    from models.stages import stage
    from models.trl_knobs import coerce_knobs, resolved_knobs

    declared = stage(name)
    section = getattr(recipe, declared.section)
    knobs = coerce_knobs(name, resolved_knobs(name, section.trl)) | trainer_args(section.checkpoint_every)
    common = {"output_dir": output_dir, "report_to": "none", "seed": recipe.seed}
    if declared.trainer == "sft":
        from trl import SFTConfig

        return SFTConfig(**common, **precision_knobs({"save_strategy": "no"} | knobs))
    from trl import GRPOConfig

    weights = list(section.rewards.values()) + ([0.0] if name == "final_rl" else [])
    return GRPOConfig(**common, reward_weights=weights, **precision_knobs(knobs))


def _named_keys(name: str, recipe: Recipe, message: str) -> list[str]:
    """`<stage>.trl.<knob>` for each knob of the stage that TRL's message mentions, else for each knob the recipe
    sets in that stage (one of them made TRL refuse), else `<stage>.trl`."""
    from models.stages import stage
    from models.trl_knobs import resolved_knobs

    section = getattr(recipe, stage(name).section)
    knobs = [k for k in resolved_knobs(name, section.trl) if re.search(rf"\b{re.escape(k)}\b", message)]
    return [f"{name}.trl.{k}" for k in knobs or section.trl] or [f"{name}.trl"]


def trl_config_problem(recipe: Recipe) -> str | None:
    """Why TRL (or transformers) refuses a training stage's settings, as one line naming the recipe keys, or None."""
    from models.stages import trained_stages

    with tempfile.TemporaryDirectory(prefix="r1-preflight-") as scratch:
        for declared in trained_stages():
            try:
                config = _stage_config(declared.name, recipe, str(Path(scratch) / declared.name))
            except (ValueError, TypeError) as err:
                message = " ".join(str(err).split()).rstrip(".")
                keys = _named_keys(declared.name, recipe, message)
                trainer = "SFTConfig" if declared.trainer == "sft" else "GRPOConfig"
                return f"{keys[0]}: TRL's {trainer} refuses it ({message}); change {' or '.join(keys)} in the recipe"
            del config
    return None


def precision_problem(recipe: Recipe) -> str | None:
    """Why the stages would train in a precision this machine cannot train in (float16 on a CPU gives NaN gradients
    from the first step), or None. Stages sent to another worker (launch.stage_deployment) are its business."""
    import torch

    if recipe.launch.stage_deployment is not None or torch.cuda.is_available():
        return None
    if recipe.model.dtype == "float16":
        return "model.dtype: float16 on a CPU gives NaN gradients from the first step; use float32 or auto"
    from models.stages import trained_stages

    for declared in trained_stages():
        if getattr(recipe, declared.section).trl.get("fp16"):
            return f"{declared.name}.trl.fp16: float16 mixed precision needs a GPU; remove it on a CPU"
    return None


def reward_model_problem(recipe: Recipe) -> str | None:
    """Why final_rl's reward model cannot be loaded (a local folder that is missing, a hub id that neither the hub
    nor the local cache resolves), or None: checked before the first stage, not when final_rl starts."""
    source = recipe.final_rl.general_reward.model
    if source is None:
        return None
    from models.factory import resolve_source, source_problem
    from models.fingerprints import SourceError, hub_fingerprint

    problem = source_problem(source)
    if problem is None and not Path(resolve_source(source)).expanduser().is_dir():
        try:
            hub_fingerprint(resolve_source(source), "model")
        except SourceError as err:
            problem = str(err)
    return f"final_rl.general_reward.model: {problem}" if problem else None


def training_problem(recipe: Recipe) -> str | None:
    """The first reason the recipe's training stages cannot run here, or None (each check in seconds)."""
    return trl_config_problem(recipe) or precision_problem(recipe) or reward_model_problem(recipe)


def state_problem() -> str | None:
    """Why the state folder ($R1_STATE_DIR, default .state) cannot hold the run, or None. A probe file is written and
    removed; folders the probe had to create are removed again, so a refused run leaves nothing behind."""
    from models.storage import StorageError, state_dir

    try:
        folder = state_dir()
    except StorageError as err:
        return str(err)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        return f"state folder {folder}: {existing} is a file, not a folder; set R1_STATE_DIR to a folder"
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        _probe_write(folder)
    except OSError as err:
        why = err.strerror or type(err).__name__
        return f"state folder {folder} is not writable ({why}); fix its permissions or free space, or set R1_STATE_DIR"
    finally:
        for path in created:  # deepest first
            try:
                path.rmdir()
            except OSError:
                break
    return None


def _probe_write(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".probe-", dir=folder)
    try:
        left = memoryview(b"\0" * PROBE_BYTES)
        while left:  # a write that hits a size limit is short first; the next one fails (EFBIG, ENOSPC)
            left = left[os.write(fd, left) :]
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(name)


def _request(url: str) -> urllib.request.Request:
    """A request for `url` with its user:password part (which urllib cannot take in the host) as Basic auth."""
    import base64
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.username is None:
        return urllib.request.Request(url)
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    request = urllib.request.Request(urlunsplit(parts._replace(netloc=host)))
    credentials = f"{parts.username}:{parts.password or ''}".encode()
    request.add_header("Authorization", "Basic " + base64.b64encode(credentials).decode())
    return request


def _unreachable(url: str) -> str | None:
    """Why nothing answers at `url` within REACH_TIMEOUT_S (refused, timed out, no such host), or None. Any HTTP
    answer, an error status included, means something is listening."""
    try:
        with urllib.request.urlopen(_request(url), timeout=REACH_TIMEOUT_S):  # noqa: S310 - http(s) only, checked
            return None
    except urllib.error.HTTPError:
        return None
    except urllib.error.URLError as err:
        reason = err.reason
        return getattr(reason, "strerror", None) or str(reason)
    except (TimeoutError, OSError) as err:
        return getattr(err, "strerror", None) or type(err).__name__


def tracking_problem() -> str | None:
    """Why the MLflow tracking server in MLFLOW_TRACKING_URI does not answer (http(s) URIs only; a SQLite file is
    checked with the state folder), or None."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith(("http://", "https://")):
        return None
    why = _unreachable(uri.rstrip("/") + "/health")
    if why is None:
        return None
    return (
        f"MLflow tracking server {_shown(uri)} does not answer ({why}); start it (make up) or fix MLFLOW_TRACKING_URI"
    )


def prefect_problem() -> str | None:
    """Why the Prefect API in PREFECT_API_URL does not answer, or None (unset: Prefect starts its own)."""
    url = os.environ.get("PREFECT_API_URL", "")
    if not url:
        return None
    if not url.startswith(("http://", "https://")):
        return f"PREFECT_API_URL '{_shown(url)}' is not an http(s) URL; write e.g. http://127.0.0.1:4200/api"
    why = _unreachable(url.rstrip("/") + "/health")
    if why is None:
        return None
    return f"Prefect API {_shown(url)} does not answer ({why}); start it (make up) or fix or unset PREFECT_API_URL"


def _shown(url: str) -> str:
    """A URL without its user:password part (never printed)."""
    return re.sub(r"//[^/@]*@", "//***@", url)


def main(argv: list[str]) -> int:
    from models.recipe import RecipeError, load_recipe

    try:
        recipe = load_recipe(argv[0] if argv and "=" not in argv[0] else None, [a for a in argv if "=" in a])
    except RecipeError as err:
        sys.stderr.write(f"recipe error: {err}\n")
        return 2
    problems = [p for p in (training_problem(recipe), state_problem(), tracking_problem(), prefect_problem()) if p]
    sys.stdout.write("\n".join(problems or ["preflight ok"]) + "\n")
    return 2 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
