"""Typed recipe: strict, frozen pydantic models; every field described (they become the Prefect form and --help).

TRL's own knobs pass through `trl:` dicts whose keys and types are checked against TRL's config dataclasses
(models/trl_knobs.py), so a typo fails when the recipe loads, before anything trains.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.guard_config import GuardConfig, SamplingGuardConfig, SftGuardConfig
from models.storage import StorageConfig

REWARD_NAMES = ("accuracy", "format", "language_consistency")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_NAME, DEFAULT_REGISTERED_NAME = "tiny-r1", "r1-tiny"
# One safe path component (it names folders in the state folder and the bucket, and an MLflow experiment) that is
# also a valid MLflow registry name and fits models:/<name>@<alias>: no '/', ':', '@', no leading '.' or '-'.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def safe_name_problem(name: str, what: str) -> str | None:
    """Why `name` cannot name the pipeline's folders, experiment or registered model, or None."""
    if SAFE_NAME.fullmatch(name):
        return None
    return (
        f"'{name}' is not a safe name for {what}; use 1-100 letters, digits, '.', '_' or '-', starting with a letter "
        "or digit (it becomes a folder name, so nothing may be written outside the state folder or bucket prefix)"
    )


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(Strict):
    base: str = Field("builtin:tiny_base", description="Base model: `builtin:tiny_base`, a local folder, or a hub id.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Weights dtype on load.")
    registered_name: str | None = Field(
        None,
        description="MLflow Model Registry name of the final model; None: the recipe's `name` (the embedded default "
        "tiny-r1 registers as r1-tiny), so that no recipe registers its model under another recipe's name.",
    )
    trust_remote_code: bool = Field(
        False,
        description="Run the model folder's own modelling code on load (auto_map in its config.json): only for code "
        "you trust; every load then logs a warning. Off: such a folder is refused before any stage.",
    )
    promotion_floor: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Least held-out pass@1 a final model needs to become `champion`, on top of the gate's own rules "
        "(no alarm raised by any training stage, pass@1 above the base model's, above the current champion's); "
        "None: no recipe floor. Not in any cache key.",
    )


VERIFIER_NAMES = ("exact", "numeric", "math_verify")


def _local_problem(source: str) -> str | None:
    """Why a local rows source cannot be read (missing file or folder), or None (it exists, or is a hub id)."""
    from models.problems import local_source

    path = local_source(source)
    if path is not None and not path.exists():
        return f"no file at '{path}'; give builtin:<name>, a .jsonl/.json/.parquet/.csv file, a folder or a hub id"
    return None


class ProblemFile(Strict):
    """Verifiable problems from question/answer rows, loaded through `datasets` (the same call serves a hub id
    and a local file or folder)."""

    path: str = Field(
        description="Question/answer rows: builtin:<name> (models/assets/<name>.jsonl), a local .jsonl/.json/"
        ".parquet/.csv file, a local dataset folder, or a hub dataset id (e.g. openai/gsm8k)."
    )
    name: str | None = Field(None, description="Configuration of a hub dataset (GSM8K: main); None: its default.")
    revision: str | None = Field(
        None,
        description="Revision of a hub dataset to read: a commit sha, branch or tag; None: main. Either way the run "
        "is keyed by the commit it resolves to (offline: the commit of the local `datasets` cache), so new data "
        "under the same id re-runs what depends on it; a full commit sha pins the data exactly.",
    )
    split: str = Field("train", description="Split that cold start, RL and rejection sampling draw from.")
    eval_split: str | None = Field(
        None,
        description="Where evaluation and validation draw from: a split of the same dataset (GSM8K: test) or, for "
        "a local file, a second file; training rows with an evaluation question are dropped. None: a hash bucket "
        "(data.heldout_permille) of `split`'s questions is held out.",
    )
    question: str = Field("question", description="Column holding the question (the prompt shows only this).")
    answer: str = Field("answer", description="Column holding the reference answer (read through answer_format).")
    answer_format: Literal["plain", "gsm8k", "boxed"] = Field(
        "plain",
        description="How the reference answer is read from its column: plain (the whole cell); gsm8k (the text after "
        "the last `####`; what precedes it, without <<...>> calculator notes, is the worked solution); boxed (the "
        "content of the last \\boxed{}; the whole cell is the worked solution, as in MATH).",
    )
    solution: str | None = Field(
        None, description="Column of worked solutions for cold-start rows (gsm8k and boxed answers carry their own)."
    )
    verifier: Literal["exact", "numeric", "math_verify"] = Field(
        "math_verify",
        description="How a final answer is checked against the reference: exact (same text after trimming and "
        "collapsing whitespace), numeric (same number within `tolerance`; commas, $ and % ignored, fractions "
        "read), math_verify (symbolic equivalence: LaTeX, \\boxed{}, fractions, sets, intervals).",
    )
    verifier_column: str | None = Field(
        None, description="Column naming each row's verifier (exact, numeric, math_verify); empty cells: `verifier`."
    )
    tolerance: float = Field(
        1e-6, ge=0, description="numeric: relative tolerance |answer - gold| <= t * max(1, |gold|)."
    )

    @field_validator("path")
    @classmethod
    def _path_exists(cls, source: str) -> str:
        problem = _local_problem(source)
        if problem:
            raise ValueError(problem)
        return source

    @model_validator(mode="after")
    def _eval_file_exists(self) -> ProblemFile:
        from models.problems import local_source

        path = local_source(self.path)
        if self.revision and path is not None:
            raise ValueError(f"revision: '{self.path}' is a local path; a revision applies to a hub dataset id only")
        if self.eval_split and path is not None and path.is_file() and not Path(self.eval_split).is_file():
            raise ValueError(f"eval_split: no file at '{self.eval_split}'; a local file's eval_split is a second file")
        return self

    @property
    def has_solutions(self) -> bool:
        return self.solution is not None or self.answer_format != "plain"


class DataConfig(Strict):
    task: str = Field(
        "chain_sum", description="reasoning-gym dataset that makes the verifiable prompts (unless `problems` is set)."
    )
    task_config: dict[str, Any] = Field(
        default_factory=lambda: {"min_terms": 3, "max_terms": 4, "min_digits": 1, "max_digits": 1},
        description="Keyword arguments of the reasoning-gym dataset (checked against its config class).",
    )
    problems: ProblemFile | None = Field(
        None,
        description="Verifiable problems from your own question/answer rows (a local file or a hub dataset) instead "
        "of the reasoning-gym task.",
    )
    prompt_style: Literal["compact", "chat"] = Field(
        "compact",
        description="compact: `Q:<question>\\nA:` for tiny character models (a reasoning-gym question that ends in "
        "an arithmetic expression shows only that expression, spaces removed); chat: R1 system prompt + question.",
    )
    heldout_permille: int = Field(100, ge=1, le=500, description="Share (per mille) of problem keys held out for eval.")
    eval_size: int = Field(300, ge=10, description="Held-out evaluation prompts (same set for every stage).")
    validation_size: int = Field(
        64, ge=1, description="Held-out prompts (disjoint from eval) for the periodic check during RL stages."
    )
    cold_start_size: int = Field(1000, ge=1, description="Cold-start long-CoT examples (R1: thousands).")
    rl_pool_size: int = Field(2000, ge=1, description="Prompts for the RL stages and rejection sampling.")
    max_answer_in_prompt: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Largest share of a split's prompts that may contain their own reference answer (a quantity a "
        "word problem states may equal its answer); above it the split is refused when the data loads.",
    )
    cold_start: str | None = Field(
        None,
        description="Cold-start rows (prompt/completion): builtin:<name>, .jsonl path or hub id; None: "
        "worked solutions from the problems (chain_sum, or a problem file with solutions).",
    )
    non_reasoning: str = Field(
        "builtin:non_reasoning",
        description="Non-reasoning prompt/completion rows: builtin:<name>, .jsonl path or hub id.",
    )
    language: Literal["en", "zh"] = Field("en", description="Target language of the reasoning (language reward).")

    @field_validator("non_reasoning", "cold_start")
    @classmethod
    def _rows_exist(cls, source: str | None) -> str | None:
        problem = source and _local_problem(source)
        if problem:
            raise ValueError(problem)
        return source

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        from reasoning_gym.factory import DATASETS

        if task not in DATASETS:
            hint = "; for your own question/answer file set data.problems.path" if Path(task).suffix else ""
            raise ValueError(f"unknown reasoning-gym dataset '{task}'; choose e.g. chain_sum, basic_arithmetic{hint}")
        return task

    @model_validator(mode="after")
    def _one_problem_source(self) -> DataConfig:
        defaults = DataConfig.model_fields
        changed = [
            name
            for name in ("task", "task_config")
            if getattr(self, name) != defaults[name].get_default(call_default_factory=True)
        ]
        if self.problems is not None and changed:
            raise ValueError(f"{changed[0]} and problems are two problem sources; keep one")
        return self

    @model_validator(mode="after")
    def _task_config_known(self) -> DataConfig:
        import dataclasses

        from reasoning_gym.factory import DATASETS

        known = {f.name for f in dataclasses.fields(DATASETS[self.task][1])} - {"seed", "size"}
        unknown = sorted(set(self.task_config) - known)
        if unknown:
            raise ValueError(
                f"task_config: '{unknown[0]}' is not a {self.task} option; valid: {', '.join(sorted(known))}"
            )
        return self

    @model_validator(mode="after")
    def _cold_start_available(self) -> DataConfig:
        if self.cold_start is not None:
            return self
        if self.problems is not None and not self.problems.has_solutions:
            raise ValueError(
                "cold_start: give cold-start rows, or a solution column (problems.solution) or an answer_format "
                "that carries the worked solution (gsm8k, boxed)"
            )
        if self.problems is None and self.task != "chain_sum":
            raise ValueError(
                f"cold_start: give cold-start rows for task '{self.task}' (worked solutions are "
                "generated for chain_sum only)"
            )
        return self


class SamplingConfig(Strict):
    num_samples: int = Field(4, ge=1, description="k samples per prompt (pass@1 averages them; cons@k votes).")
    temperature: float = Field(0.6, gt=0, description="Sampling temperature (R1 evaluation: 0.6).")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling (R1 evaluation: 0.95).")
    max_new_tokens: int = Field(48, ge=1, description="Generation budget per sample.")
    batch_size: int = Field(256, ge=1, description="Prompts per generate call.")
    guards: SamplingGuardConfig = Field(
        default_factory=SamplingGuardConfig, description="How the answer verifier's calls are contained."
    )


class EvalConfig(SamplingConfig):
    max_prompts: int | None = Field(None, ge=1, description="Evaluate only the first N held-out prompts (None: all).")


class SftStage(Strict):
    trl: dict[str, Any] = Field(default_factory=dict, description="TRL SFTConfig fields (checked against TRL).")
    checkpoint_every: int = Field(
        50,
        ge=0,
        description="Optimizer steps between trainer checkpoints (model, optimizer, scheduler, RNG, data position) in "
        "the stage's work area; the last two are kept. A stage killed mid-training resumes from its last complete "
        "checkpoint on the next run of the recipe. A multiple of trl.logging_steps; 0: no checkpoints.",
    )
    compile_layers: bool = Field(
        False,
        description="torch.compile each decoder layer (fused norm, rotary and SwiGLU kernels; one compile serves all "
        "layers). On an H200, with the SFT stages' trainer: 2.0x stock TRL's tokens/s with activation checkpointing "
        "off and 1.7x with it on (README).",
    )
    activation_memory_budget: float = Field(
        1.0,
        gt=0,
        le=1,
        description="With compile_layers and activation checkpointing off: the share of each decoder layer's "
        "activations kept for the backward pass (torch.compile's partitioner recomputes the cheapest of the rest; "
        "0 would be full checkpointing, 1 keeps them all). On an H200, 0.5 ran at 1.81x stock TRL's tokens/s in "
        "15.2 GiB, against 2.0x in 32.5 GiB for 1 (README).",
    )
    guards: SftGuardConfig = Field(
        default_factory=SftGuardConfig, description="The guard that stops the stage at an exploding gradient norm."
    )

    @model_validator(mode="after")
    def _one_compiler(self) -> SftStage:
        for knob in ("use_liger_kernel", "torch_compile"):
            if self.compile_layers and self.trl.get(knob):
                raise ValueError(
                    f"compile_layers and trl.{knob} cannot be combined (both replace the layer kernels); keep one"
                )
        return self

    @model_validator(mode="after")
    def _budget_needs_compiled_layers(self) -> SftStage:
        if self.activation_memory_budget == 1:
            return self
        if not self.compile_layers:
            raise ValueError("activation_memory_budget needs compile_layers: true (the compiler does the recomputing)")
        if self.trl.get("activation_checkpointing") or self.trl.get("gradient_checkpointing"):
            raise ValueError(
                "activation_memory_budget and trl.activation_checkpointing cannot be combined (checkpointing "
                "recomputes every layer already); keep one"
            )
        return self


class SupervisedMergeStage(SftStage):
    start_from: Literal["base", "cold_start_sft", "reasoning_rl"] = Field(
        "base", description="Checkpoint the merge SFT starts from (R1: the BASE model, not the RL policy)."
    )
    non_reasoning_ratio: float = Field(
        0.25, ge=0, lt=1, description="Share of non-reasoning rows in the merged set (R1: ~200k of ~800k)."
    )


class GeneralReward(Strict):
    model: str | None = Field(
        None,
        description="Reward model (hub id or local folder) scored through TRL; None: the rule-based proxy.",
    )
    weight: float = Field(1.0, ge=0, description="Weight of the general reward once it is switched on.")
    last_steps: int = Field(
        140, ge=0, description="Apply the general reward only in the last N steps (R1: last 400 of 1,700)."
    )


class AlarmConfig(Strict):
    check_every: int = Field(50, ge=0, description="Steps between held-out checks on the validation split (0: off).")
    check_sampling: EvalConfig = Field(
        default_factory=lambda: EvalConfig(num_samples=2),
        description="How each check samples (R1's evaluation settings, 2 samples per prompt); the stage's own "
        "setting, so that changing `evaluation` re-evaluates but retrains nothing.",
    )
    heldout_drop: float = Field(
        0.05,
        ge=0,
        description="Alarm when the check falls this far below its first value while the training reward rises.",
    )
    max_zero_std_fraction: float = Field(
        0.8, ge=0, le=1, description="Alarm when frac_reward_zero_std stays above this for `window` logs."
    )
    window: int = Field(5, ge=1, description="Logged points averaged for the trend and zero-variance alarms.")


class RlStage(Strict):
    rewards: dict[str, float] = Field(
        default_factory=lambda: {"accuracy": 1.0, "format": 1.0, "language_consistency": 1.0},
        description="Rule rewards and their weights: accuracy, format, language_consistency.",
    )
    trl: dict[str, Any] = Field(default_factory=dict, description="TRL GRPOConfig fields (checked against TRL).")
    checkpoint_every: int = Field(
        50,
        ge=0,
        description="Optimizer steps between trainer checkpoints (model, optimizer, scheduler, RNG, data position) in "
        "the stage's work area; the last two are kept. A stage killed mid-training resumes from its last complete "
        "checkpoint on the next run of the recipe. A multiple of trl.logging_steps; 0: no checkpoints.",
    )
    alarms: AlarmConfig = Field(default_factory=AlarmConfig, description="Reward-hacking alarms.")
    guards: GuardConfig = Field(
        default_factory=GuardConfig, description="Reward isolation, and the guards that stop a run going nowhere."
    )
    rollout: Literal["static_cache", "hf_generate"] = Field(
        "static_cache",
        description="How completions are sampled when vLLM is off: static_cache (static KV cache, the decode step as "
        "one CUDA graph on a GPU, HF generate's sampling; 6-9x stock TRL's GRPO step on an H200, the same reward "
        "curves within seed noise) or "
        "hf_generate (TRL's stock path).",
    )

    @field_validator("rewards")
    @classmethod
    def _known_rewards(cls, rewards: dict[str, float]) -> dict[str, float]:
        for name in rewards:
            if name not in REWARD_NAMES:
                raise ValueError(f"unknown reward '{name}'; choose from {', '.join(REWARD_NAMES)}")
        return rewards


class FinalRlStage(RlStage):
    general_reward: GeneralReward = Field(default_factory=GeneralReward, description="Helpfulness/preference reward.")
    general_prompt_ratio: float = Field(0.1, ge=0, lt=1, description="Share of non-reasoning prompts in final RL.")


class RejectionSamplingStage(SamplingConfig):
    temperature: float = Field(1.0, gt=0, description="Sampling temperature for candidates.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling for candidates.")
    num_prompts: int | None = Field(None, ge=1, description="Prompts of the RL pool to sample (None: all).")
    min_language_consistency: float = Field(0.95, ge=0, le=1, description="Drop reasoning mixing languages below this.")
    max_paragraph_chars: int = Field(2000, ge=1, description="Drop reasoning with a paragraph longer than this.")
    drop_code_blocks: bool = Field(True, description="Drop reasoning that contains ``` code blocks.")


class LaunchConfig(Strict):
    num_processes: int = Field(
        1,
        ge=1,
        description="Processes of each training stage (one per GPU); 1: plain `python -m models.run_stage`, more: "
        "under `accelerate launch` (evaluate and rejection_sampling always run as one process).",
    )
    accelerate_config: str | None = Field(
        None,
        description="accelerate config YAML (infra/accelerate/ddp.yaml, zero3.yaml, fsdp.yaml; a relative path is "
        "taken from the project root); None: plain DDP. Used only when num_processes > 1.",
    )
    gpu_hour_usd: float = Field(
        2.0, ge=0, description="Price of one GPU-hour for the cost estimate (R1's Table 7: H800 at $2/GPU-hour)."
    )
    stage_deployment: str | None = Field(
        None,
        description="Prefect deployment `<flow>/<deployment>` that runs each training stage on its own worker, e.g. "
        "`r1-stage-spec/h800` (the GPU pool, infra/prefect.yaml); the pipeline waits for that flow run and reads the "
        "stage's stamped output from the shared store (S3, or a folder both machines see). None: a process on the "
        "pipeline's own machine.",
    )
    gpu_class: str = Field(
        "h800x8",
        description="GPU class of the nodes the training stages run on: their Prefect tasks carry the tag "
        "`gpu:<class>`, which a tag concurrency limit (infra/workpools) turns into GPU slots that pipelines queue for.",
    )

    @staticmethod
    def resolve(source: str) -> Path:
        """An accelerate config path as an absolute path (a relative one is taken from the project root)."""
        path = Path(source).expanduser()
        return path if path.is_absolute() else PROJECT_ROOT / path

    @field_validator("stage_deployment")
    @classmethod
    def _deployment_name(cls, name: str | None) -> str | None:
        if name is not None and not re.fullmatch(r"[^/\s]+/[^/\s]+", name):
            raise ValueError(f"'{name}': write it as <flow name>/<deployment name>, e.g. r1-stage-spec/h800")
        return name

    @field_validator("gpu_class")
    @classmethod
    def _tag_safe(cls, name: str) -> str:
        if not re.fullmatch(r"[\w.-]+", name):
            raise ValueError(f"'{name}': use letters, digits, '.', '_' or '-' (it becomes the Prefect tag gpu:<class>)")
        return name

    @field_validator("accelerate_config")
    @classmethod
    def _config_exists(cls, source: str | None) -> str | None:
        if source is not None and not cls.resolve(source).is_file():
            raise ValueError(
                f"no file at '{cls.resolve(source)}'; give an accelerate config YAML such as infra/accelerate/ddp.yaml"
            )
        return source


class Recipe(Strict):
    name: str = Field(
        DEFAULT_NAME,
        description="Pipeline name (MLflow experiment, Prefect run names and the folder of its outputs): letters, "
        "digits, '.', '_' or '-'.",
    )
    seed: int = Field(0, description="Seed of data generation and every stage.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Base model and registry name.")
    data: DataConfig = Field(default_factory=DataConfig, description="Verifiable tasks and splits.")
    evaluation: EvalConfig = Field(default_factory=EvalConfig, description="pass@1 / cons@k on the held-out split.")
    cold_start_sft: SftStage = Field(default_factory=SftStage, description="Stage 1: cold-start SFT.")
    reasoning_rl: RlStage = Field(default_factory=RlStage, description="Stage 2: reasoning-oriented GRPO.")
    rejection_sampling: RejectionSamplingStage = Field(
        default_factory=RejectionSamplingStage, description="Stage 3: sample, verify, filter."
    )
    supervised_merge: SupervisedMergeStage = Field(
        default_factory=SupervisedMergeStage,
        description="Stage 4: SFT of the base on verified + non-reasoning data.",
    )
    final_rl: FinalRlStage = Field(default_factory=FinalRlStage, description="Stage 5: GRPO over all scenarios.")
    stage_timeout_s: int = Field(6 * 3600, ge=1, description="Kill a stage process running longer than this.")
    launch: LaunchConfig = Field(
        default_factory=LaunchConfig,
        description="How the training stages are launched: processes (GPUs) and accelerate config; not in cache keys.",
    )
    storage: StorageConfig = Field(
        default_factory=StorageConfig,
        description="Where stage outputs, resume checkpoints, Prefect results and MLflow artifacts live: the local "
        "state folder or s3://bucket/prefix ($R1_STORAGE_URI overrides it); not in cache keys.",
    )

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        problem = safe_name_problem(name, "the recipe")
        if problem:
            raise ValueError(problem)
        return name

    @model_validator(mode="after")
    def _registered_name(self) -> Recipe:
        """model.registered_name, derived from `name` when the recipe leaves it out, and checked for the registry."""
        name = self.model.registered_name
        if name is None:
            name = DEFAULT_REGISTERED_NAME if self.name == DEFAULT_NAME else self.name
            derived = self.model.model_copy(update={"registered_name": name})
            object.__setattr__(self, "model", derived)  # frozen: set once, while validating
        problem = safe_name_problem(name, "the MLflow registry")
        if problem:
            raise ValueError(f"model.registered_name: {problem}")
        return self

    @model_validator(mode="after")
    def _sources_exist(self) -> Recipe:
        from models.factory import source_problem

        chat = self.data.prompt_style == "chat"
        for where, source, role in (
            ("model.base", self.model.base, "model"),
            ("final_rl.general_reward.model", self.final_rl.general_reward.model, "reward"),
        ):
            remote_code = self.model.trust_remote_code and role == "model"
            problem = source and source_problem(source, role, chat and role == "model", remote_code)
            if problem:
                raise ValueError(f"{where}: {problem}")
        return self

    @model_validator(mode="before")
    @classmethod
    def _coerce_trl_knobs(cls, data: Any) -> Any:
        from models.trl_knobs import coerce_recipe_knobs

        return coerce_recipe_knobs(data)

    @model_validator(mode="after")
    def _trl_knobs(self) -> Recipe:
        from models.trl_knobs import check_knobs

        check_knobs(self)
        return self
