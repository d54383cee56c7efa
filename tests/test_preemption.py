"""Preemption and crashes: a run stopped by SIGTERM, then killed during a save,
then resumed, ends with the same parameters as a run that was never stopped.

All runs are the main binary on a real Fashion-MNIST slice, as a user starts it.
"""

import os
import signal
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from semhash_jax import checkpointing
from tests.test_end_to_end import CONFIG, ROOT
from tests.test_multihost import _flatten

STEPS = 16
ARGS = (
    f"--config.num_train_steps={STEPS}",
    "--config.checkpoint_every_steps=4",
    "--config.log_every_steps=4",
)


def start_main(workdir, data_dir):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "semhash_jax.main",
            f"--config={CONFIG}",
            f"--workdir={workdir}",
            f"--config.data_dir={data_dir}",
            *ARGS,
        ],
        cwd=ROOT,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def signal_on_line(process, marker: str, signum) -> str:
    """Send `signum` once stderr shows `marker`; return all stderr after the process ends."""
    lines = []
    sent = False
    for line in process.stderr:
        lines.append(line)
        if not sent and marker in line:
            process.send_signal(signum)
            sent = True
    process.wait(timeout=600)
    assert sent, f"{marker!r} never appeared:\n{''.join(lines)[-4000:]}"
    return "".join(lines)


def run_to_end(workdir, data_dir):
    process = start_main(workdir, data_dir)
    stdout, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr[-4000:]
    return stdout, stderr


def final_params(workdir):
    state = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(STEPS) / "state")
    return dict(_flatten(state))


def saved_steps(workdir):
    return checkpointing.Checkpointer(workdir, fingerprint=None).all_steps()


@pytest.mark.slow
def test_sigterm_then_kill_then_resume_matches_straight_run(zero_shot_data_dir, tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    run_to_end(straight, zero_shot_data_dir)

    # 1. SIGTERM (a preemption notice) during step 5 or later: the trainer saves
    #    the step it is at and exits with 143.
    first = start_main(stopped, zero_shot_data_dir)
    stderr = signal_on_line(first, "Saving checkpoint of step 4", signal.SIGTERM)
    assert first.returncode == 143, stderr[-4000:]
    assert "Run the same command again to resume" in first.stdout.read()
    preempted_step = max(saved_steps(stopped))
    assert 4 < preempted_step < STEPS

    # 2. SIGKILL right as the save of step 12 starts (Orbax writes it in the
    #    background, so the kill usually lands mid-save): the previous
    #    checkpoint stays usable.
    second = start_main(stopped, zero_shot_data_dir)
    stderr = signal_on_line(second, "Saving checkpoint of step 12", signal.SIGKILL)
    assert f"Resuming from step {preempted_step}" in stderr
    assert second.returncode == -signal.SIGKILL
    # Step 8's save runs in the background too: on a busy machine the kill can
    # land before it completes, and then the preempted step is the latest.
    assert max(saved_steps(stopped)) in (preempted_step, 8, 12)

    # 3. The same command again finishes the run.
    _, stderr = run_to_end(stopped, zero_shot_data_dir)
    assert "Resuming from step" in stderr

    expected, actual = final_params(straight), final_params(stopped)
    assert expected.keys() == actual.keys()
    for path, value in expected.items():
        np.testing.assert_array_equal(actual[path], value, err_msg=path)
