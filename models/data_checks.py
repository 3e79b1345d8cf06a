"""Checks on the data a recipe trains and evaluates on, run before any stage starts (`flows.cli --check` and every
run call `check_data`): each problem is one line (DataError) that names the file, the split or the text.

- the splits can be built (files readable, columns present, sizes the source can supply);
- no split's prompts contain their own reference answer (countdown's `expression` is its solution);
- the held-out evaluation prompts occur in no training source (cold start, RL pool and rejection pool,
  validation, a cold-start file, the non-reasoning rows), questions normalised;
- the model's tokenizer represents every prompt and answer (no unknown token, a lossless round trip: a Qwen2
  tokenizer swapped in for a character one drops `\\n`) and prompts fit the model's context.

    python -m models.data_checks flows/recipes/tiny.yaml [key=value ...]
"""

from __future__ import annotations

import functools
import logging
import re
import sys

from models.config import DataConfig, Recipe
from models.data import Problem, build_splits, cold_start_rows, load_rows, overlap, prompt_question
from models.problems import DataError

log = logging.getLogger(__name__)
MIN_IDENTIFIABLE_ANSWER = 3  # shorter answers (`5`, `12`) occur in questions by chance
TRAINING_SPLITS = ("cold_start", "rl", "validation")


def answer_in_prompt(prompt: str | list[dict], answer: str) -> bool:
    """True if the question shows its own reference answer as a whole number, word or expression (case folded;
    compared with its spacing collapsed and removed, so `55 + 97 - 15` is found in `Q:55+97-15`)."""
    text, gold = " ".join(prompt_question(prompt).split()).casefold(), " ".join(answer.split()).casefold()
    if len(gold.replace(" ", "")) < MIN_IDENTIFIABLE_ANSWER:
        return False
    forms = ((text, gold), (text.replace(" ", ""), gold.replace(" ", "")))
    return any(re.search(rf"(?<![\w.]){re.escape(g)}(?!\w)(?!\.\d)", t) for t, g in forms)


def check_no_answer_in_prompts(splits: dict[str, list[Problem]], max_share: float) -> None:
    """DataError if more than `max_share` of a split's prompts contain their own reference answer."""
    for name, problems in splits.items():
        leaking = [p for p in problems if answer_in_prompt(p.prompt, p.answer)]
        if problems and len(leaking) > max_share * len(problems):
            raise DataError(
                f"data: {len(leaking)} of {len(problems)} {name} prompts contain their own reference answer (e.g. "
                f"{prompt_question(leaking[0].prompt)!r} -> {leaking[0].answer!r}); show the question only"
            )


def _as_problems(rows: list[dict]) -> list[Problem]:
    return [Problem(r["prompt"], "", "", "") for r in rows]


def training_sources(cfg: DataConfig, splits: dict[str, list[Problem]]) -> dict[str, list[Problem]]:
    """Every source a stage trains on (or tunes alarms with), named for the error message."""
    sources = {f"the {name} split": splits[name] for name in TRAINING_SPLITS}
    if cfg.cold_start:
        sources[f"the cold-start file '{cfg.cold_start}'"] = _as_problems(load_rows(cfg.cold_start))
    sources[f"the non-reasoning rows '{cfg.non_reasoning}'"] = _as_problems(load_rows(cfg.non_reasoning))
    return sources


def check_heldout(cfg: DataConfig, splits: dict[str, list[Problem]]) -> None:
    """DataError naming the source and the count if an evaluation prompt occurs in any training source."""
    for where, problems in training_sources(cfg, splits).items():
        shared = overlap(splits["eval"], problems)
        if shared:
            raise DataError(
                f"data: {shared} of {len(splits['eval'])} evaluation prompts also occur in {where}; remove them "
                "there (evaluation must be held out)"
            )


def _text(tokenizer, prompt: str | list[dict]) -> str:
    if isinstance(prompt, str):
        return prompt
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return "\n".join(m["content"] for m in prompt)


def representation_problem(tokenizer, text: str) -> str | None:
    """Why `tokenizer` cannot represent `text` (an unknown token, a lossy round trip), or None."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
        missing = sorted(
            {ch for ch in text if tokenizer.unk_token_id in tokenizer(ch, add_special_tokens=False)["input_ids"]}
        )
        return f"has no token for {', '.join(map(repr, missing or ['?']))}"
    back = tokenizer.decode(ids, skip_special_tokens=False)
    if back != text:
        index = next((i for i, (a, b) in enumerate(zip(text, back, strict=False)) if a != b), min(len(text), len(back)))
        lost = text[index : index + 1] or back[index : index + 1]
        return f"does not round-trip it: {lost!r} at character {index} comes back as {back[index : index + 1]!r}"
    return None


def texts_to_represent(splits: dict[str, list[Problem]], cfg: DataConfig, tokenizer) -> dict[str, str]:
    """The texts a model must read or write, each named by where it comes from (first of each kind kept)."""
    texts: dict[str, str] = {}
    for name, problems in splits.items():
        for p in problems:
            texts.setdefault(_text(tokenizer, p.prompt), f"{name} prompt")
            texts.setdefault(p.answer, f"{name} answer")
    rows = load_rows(cfg.cold_start) if cfg.cold_start else cold_start_rows(splits["cold_start"])
    for row in rows + load_rows(cfg.non_reasoning):
        texts.setdefault(row["completion"], "cold-start or non-reasoning completion")
    return texts


def generation_budget(recipe: Recipe) -> tuple[int, str]:
    """(tokens, the recipe key that sets them): the longest completion any stage generates after a prompt."""
    from models.trl_knobs import resolved_knobs

    budgets = {
        "evaluation.max_new_tokens": recipe.evaluation.max_new_tokens,
        "rejection_sampling.max_new_tokens": recipe.rejection_sampling.max_new_tokens,
    }
    for name in ("reasoning_rl", "final_rl"):
        knobs = resolved_knobs(name, getattr(recipe, name).trl)
        budgets[f"{name}.trl.max_completion_length"] = knobs["max_completion_length"]
        budgets[f"{name}.alarms.check_sampling.max_new_tokens"] = getattr(
            recipe, name
        ).alarms.check_sampling.max_new_tokens
    key = max(budgets, key=budgets.get)
    return budgets[key], key


def check_context(prompts: list[tuple[str, str]], tokenizer, recipe: Recipe, context: int) -> None:
    """DataError if the longest prompt + the longest generation budget overflows the model's context."""
    lengths = [(len(tokenizer(text, add_special_tokens=False)["input_ids"]), text, where) for text, where in prompts]
    length, text, where = max(lengths, default=(0, "", ""))
    budget, key = generation_budget(recipe)
    if length + budget > context:
        raise DataError(
            f"data: the longest prompt ({where}, {length} tokens: {text[:40]!r}) + {key} {budget} exceeds the model's "
            f"context of {context} tokens (max_position_embeddings of '{recipe.model.base}'); shorten the prompts, "
            f"lower {key} or use a longer-context model"
        )


def check_tokenizer(splits: dict[str, list[Problem]], recipe: Recipe, tokenizer, context: int | None) -> None:
    """DataError if chat prompts meet a tokenizer without a chat template, a prompt or answer cannot be represented,
    or the longest prompt + the generation budget overflows the context."""
    if recipe.data.prompt_style == "chat" and not tokenizer.chat_template:
        raise DataError(
            f"data.prompt_style is chat but the tokenizer of '{recipe.model.base}' has no chat template; use a chat "
            "(instruct) model, add a chat_template to its tokenizer_config.json, or set data.prompt_style=compact"
        )
    texts = texts_to_represent(splits, recipe.data, tokenizer)
    for text, where in texts.items():
        problem = representation_problem(tokenizer, text)
        if problem:
            raise DataError(f"data: the tokenizer of '{recipe.model.base}' {problem} (in {where}: {text[:60]!r})")
    if context:
        check_context([(t, w) for t, w in texts.items() if w.endswith("prompt")], tokenizer, recipe, context)


def model_context(source: str, trust_remote_code: bool = False) -> int | None:
    """The base model's context length (max_position_embeddings), or None if its config does not say."""
    from transformers import AutoConfig

    from models.factory import resolve_source

    config = AutoConfig.from_pretrained(resolve_source(source), trust_remote_code=trust_remote_code)
    return getattr(config, "max_position_embeddings", None)


def check_data(recipe: Recipe, tokenizer=None, context: int | None = None) -> dict[str, list[Problem]]:
    """All data checks of a recipe; returns the splits. `tokenizer` None: the base model's own is loaded, and a recipe
    whose data files are unchanged since it passed in this process is not checked again (the CLI checks, then the
    flow it starts)."""
    if tokenizer is None:
        return _checked(recipe.model_dump_json(), _data_fingerprints(recipe))
    return _check(recipe, tokenizer, context)


def _data_fingerprints(recipe: Recipe) -> tuple[str, ...]:
    """The content fingerprints of the data files a recipe names (problems, cold start, non-reasoning rows)."""
    from models.sources import source_record

    records = (source_record(name, recipe) for name in ("problem_file", "cold_start_data", "non_reasoning_data"))
    return tuple(record.fingerprint for record in records if record is not None)


@functools.lru_cache(maxsize=4)
def _checked(recipe_json: str, data_fingerprints: tuple[str, ...]) -> dict[str, list[Problem]]:
    return _check(Recipe.model_validate_json(recipe_json), None, None)


def base_tokenizer(recipe: Recipe):
    """(tokenizer, context length) of the base model; a warning line when the recipe lets it run its own code."""
    from models.factory import load_tokenizer

    base, remote = recipe.model.base, recipe.model.trust_remote_code
    if remote:
        log.warning("model.trust_remote_code is on: '%s' may run its own code on load; only for code you trust", base)
    return load_tokenizer(base, remote), model_context(base, remote)


def _check(recipe: Recipe, tokenizer, context: int | None) -> dict[str, list[Problem]]:
    try:
        splits = build_splits(recipe.data, recipe.seed)
    except DataError:
        raise
    except ValueError as err:
        raise DataError(str(err).splitlines()[0]) from None
    check_no_answer_in_prompts(splits, recipe.data.max_answer_in_prompt)
    check_heldout(recipe.data, splits)
    if tokenizer is None:
        try:
            tokenizer, context = base_tokenizer(recipe)
        except (OSError, ValueError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise DataError(f"model.base: cannot load the tokenizer of '{recipe.model.base}': {first}") from None
    check_tokenizer(splits, recipe, tokenizer, context)
    return splits


def main() -> None:
    from models.recipe import RecipeError, load_recipe

    try:
        recipe = load_recipe(sys.argv[1] if len(sys.argv) > 1 else None, sys.argv[2:])
        splits = check_data(recipe)
    except (RecipeError, DataError) as err:
        sys.exit(f"data error: {err}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log.info("data ok: %s", {name: len(problems) for name, problems in splits.items()})


if __name__ == "__main__":
    main()
