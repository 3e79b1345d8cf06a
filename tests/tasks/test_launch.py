"""tasks/launch.py: the command a stage runs under (plain python, or accelerate launch for several processes), the
environment every stage process gets, and the accelerate configs shipped in infra/accelerate/. Nothing is started."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from models.config import PROJECT_ROOT, LaunchConfig
from models.recipe import RecipeError, load_recipe
from models.records import Artifact
from models.stage_io import stage_spec
from models.stages import STAGES
from tasks.launch import NO_NVLINK_MULTICAST_ENV, _env, stage_command

SPEC = Path("/tmp/r1-x/spec.json")
RUN_STAGE = ["-m", "models.run_stage", str(SPEC)]
ACCELERATE = [sys.executable, "-m", "models.run_stage", "--exec", "-m", "accelerate.commands.launch"]
INFRA = PROJECT_ROOT / "infra" / "accelerate"
CONFIGS = ("ddp.yaml", "zero3.yaml", "fsdp.yaml")


@pytest.mark.parametrize(
    ("launch", "expected"),
    [
        (LaunchConfig(), [sys.executable, *RUN_STAGE]),
        (LaunchConfig(accelerate_config="infra/accelerate/ddp.yaml"), [sys.executable, *RUN_STAGE]),
        (
            LaunchConfig(num_processes=2),
            [
                *ACCELERATE,
                *("--num_processes", "2", "--multi_gpu", "--num_machines", "1"),
                *("--mixed_precision", "no", "--dynamo_backend", "no"),
                *RUN_STAGE,
            ],
        ),
        (
            LaunchConfig(num_processes=8, accelerate_config="infra/accelerate/zero3.yaml"),
            [*ACCELERATE, "--num_processes", "8", "--config_file", str(INFRA / "zero3.yaml"), *RUN_STAGE],
        ),
        (
            LaunchConfig(num_processes=2, accelerate_config=str(INFRA / "fsdp.yaml")),
            [*ACCELERATE, "--num_processes", "2", "--config_file", str(INFRA / "fsdp.yaml"), *RUN_STAGE],
        ),
    ],
    ids=["one-process", "one-process-config-ignored", "two-processes-ddp", "zero3-relative", "fsdp-absolute"],
)
def test_stage_command(launch, expected):
    assert stage_command(SPEC, launch) == expected


@pytest.mark.parametrize(
    ("stage", "processes"),
    [
        ("cold_start_sft", 4),
        ("reasoning_rl", 4),
        ("supervised_merge", 4),
        ("final_rl", 4),
        ("rejection_sampling", 1),
        ("evaluate", 1),
    ],
)
def test_only_training_stages_use_the_launch_config(stage, processes):
    recipe = load_recipe(None, ["launch.num_processes=4", "launch.accelerate_config=infra/accelerate/ddp.yaml"])
    model = Artifact(uri="/state/m", fingerprint="f", stage="base_model", kind="model")
    general = Artifact(uri="/state/g.jsonl", fingerprint="g", stage="non_reasoning_data", kind="dataset")
    inputs = {"model": model, "data": general, "general": general}
    spec = stage_spec(stage, recipe, {k: v for k, v in inputs.items() if k in STAGES[stage].inputs}, output="/o")
    assert spec.launch.num_processes == processes
    command = stage_command(SPEC, spec.launch)
    assert ("accelerate.commands.launch" in command) == (processes > 1)


def test_every_stage_process_has_nvlink_multicast_off():
    env = _env()
    assert NO_NVLINK_MULTICAST_ENV == {
        "NCCL_NVLS_ENABLE": "0",
        "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
        "NVSHMEM_DISABLE_NVLS": "1",
    }
    assert all(env[name] == value for name, value in NO_NVLINK_MULTICAST_ENV.items())
    assert str(PROJECT_ROOT) in env["PYTHONPATH"].split(":")


def test_launch_section_is_not_in_cache_keys():
    model = {"model": Artifact(uri="/state/m", fingerprint="f", stage="cold_start_sft", kind="model")}
    one = load_recipe(None)
    eight = load_recipe(None, ["launch.num_processes=8", "launch.accelerate_config=infra/accelerate/zero3.yaml"])
    assert stage_spec("reasoning_rl", one, model).key() == stage_spec("reasoning_rl", eight, model).key()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("launch.accelerate_config=infra/accelerate/nope.yaml", "launch.accelerate_config: no file at"),
        ("launch.num_processes=0", "launch.num_processes:"),
        ("launch.gpu_hour_usd=-1", "launch.gpu_hour_usd:"),
        ("launch.nodes=2", "launch.nodes: unknown key"),
    ],
)
def test_bad_launch_section_fails_in_one_line(override, expected):
    with pytest.raises(RecipeError) as caught:
        load_recipe(None, [override])
    assert str(caught.value).startswith(expected)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", CONFIGS)
def test_infra_accelerate_configs_are_sized_for_one_8_gpu_node(name):
    path = INFRA / name
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert f"accelerate_config: infra/accelerate/{name}" in "\n".join(header)
    config = yaml.safe_load(path.read_text())
    assert (config["num_processes"], config["num_machines"], config["machine_rank"]) == (8, 1, 0)
    assert config["mixed_precision"] == "bf16"
    assert LaunchConfig(num_processes=8, accelerate_config=f"infra/accelerate/{name}").accelerate_config == (
        f"infra/accelerate/{name}"
    )


def test_infra_accelerate_configs_load_in_accelerate():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    kinds = {name: load_config_from_file(str(INFRA / name)) for name in CONFIGS}
    assert kinds["ddp.yaml"].distributed_type == DistributedType.MULTI_GPU
    assert kinds["zero3.yaml"].distributed_type == DistributedType.DEEPSPEED
    assert kinds["zero3.yaml"].deepspeed_config["zero_stage"] == 3
    assert kinds["zero3.yaml"].deepspeed_config["offload_param_device"] == "none"
    assert kinds["fsdp.yaml"].distributed_type == DistributedType.FSDP
    assert kinds["fsdp.yaml"].fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert kinds["fsdp.yaml"].fsdp_config["fsdp_reshard_after_forward"] is True  # FULL_SHARD


def test_a_stage_process_dies_with_its_launcher(tmp_path):
    """kill -9 of the flow (the launcher) takes its stage process with it: none runs on and publishes alone."""
    import subprocess
    import sys
    import time

    import psutil

    launcher = (
        "import subprocess, sys; from models.lifetime import die_with_parent;"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], preexec_fn=die_with_parent,"
        " start_new_session=True); print(p.pid, flush=True); p.wait()"
    )
    parent = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True, env=_env())
    child = psutil.Process(int(parent.stdout.readline()))
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while child.is_running() and child.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
