"""Two JAX processes on loopback train exactly like one process with the same devices.

Each process gets 2 virtual CPU devices and the processes talk over gloo on
127.0.0.1; the reference is one process with 4 devices. Both run the main binary
as a user would, on a real Fashion-MNIST slice. The two-process run is stopped
by SIGTERM to one process mid-run and resumed.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.test_end_to_end import CONFIG, ROOT

STEPS = 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_main(workdir, data_dir, devices: int, *extra, log_name="main"):
    """Start the main binary; its stdout and stderr go to files next to the workdir."""
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    )
    stdout = open(workdir.parent / f"{log_name}.out", "w")
    stderr = open(workdir.parent / f"{log_name}.err", "w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "semhash_jax.main",
            f"--config={CONFIG}",
            f"--workdir={workdir}",
            f"--config.data_dir={data_dir}",
            f"--config.num_train_steps={STEPS}",
            "--config.checkpoint_every_steps=3",
            "--config.log_every_steps=3",
            # SGD: Adam's first steps turn float32 rounding of near-zero gradients
            # into full-size steps of either sign.
            "--config.optimizer.name=sgd",
            *extra,
        ],
        cwd=ROOT,
        env=env,
        stdout=stdout,
        stderr=stderr,
        text=True,
    )
    process.log_files = (stdout.name, stderr.name)
    return process


def finish(processes, timeout=900):
    """Wait for all processes; return [(returncode, stdout, stderr)]."""
    outputs = []
    try:
        for process in processes:
            process.wait(timeout=timeout)
            stdout, stderr = (open(name).read() for name in process.log_files)
            outputs.append((process.returncode, stdout, stderr))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return outputs


def wait_for_log(process, marker: str, timeout=900):
    """Wait until the process's stderr contains `marker`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if marker in open(process.log_files[1]).read():
            return
        time.sleep(0.2)
    raise AssertionError(f"{marker!r} never appeared:\n{open(process.log_files[1]).read()[-4000:]}")


def start_pair(workdir, data_dir, address, log_name):
    return [
        start_main(
            workdir,
            data_dir,
            2,
            f"--coordinator_address={address}",
            "--num_processes=2",
            f"--process_id={index}",
            log_name=f"{log_name}{index}",
        )
        for index in range(2)
    ]


def read_state(workdir, step):
    """Restore a saved state onto this test process's first device, whatever wrote it."""
    path = workdir / "checkpoints" / str(step) / "state"
    checkpointer = ocp.StandardCheckpointer()
    metadata = checkpointer.metadata(path)
    tree = getattr(metadata, "item_metadata", metadata)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), tree
    )
    return checkpointer.restore(path, target)


@pytest.mark.slow
def test_two_processes_match_one_process(zero_shot_data_dir, tmp_path):
    two, one = tmp_path / "two_processes", tmp_path / "one_process"

    # SIGTERM to process 1 only, after the checkpoint of step 3: JAX's preemption
    # sync makes both processes save the same later step and exit with 143.
    first = start_pair(two, zero_shot_data_dir, f"127.0.0.1:{free_port()}", "first")
    wait_for_log(first[1], "Saving checkpoint of step 3")
    first[1].send_signal(signal.SIGTERM)
    for index, (returncode, stdout, stderr) in enumerate(finish(first)):
        assert returncode == 143, f"process {index}:\n{stderr[-4000:]}"
        assert "Run the same command again to resume" in stdout
    saved = sorted(
        int(path.name) for path in (two / "checkpoints").iterdir() if path.name.isdigit()
    )
    assert 3 < saved[-1] < STEPS, saved

    second = start_pair(two, zero_shot_data_dir, f"127.0.0.1:{free_port()}", "second")
    outputs = finish(second)
    for index, (returncode, _, stderr) in enumerate(outputs):
        assert returncode == 0, f"process {index}:\n{stderr[-4000:]}"
        assert f"Resuming from step {saved[-1]}" in stderr
    ((single_code, _, single_err),) = finish([start_main(one, zero_shot_data_dir, 4)])
    assert single_code == 0, single_err[-4000:]

    assert "process 1 of 2" in outputs[1][2]
    # Only process 0 prints results and writes summaries.
    assert "Results written" in outputs[0][1]
    assert "Results written" not in outputs[1][1]
    # Event file names end in ".<host>.<pid>.<count>.v2".
    writers = {int(path.name.split(".")[-3]) for path in two.glob("events.out.tfevents.*")}
    assert writers == {first[0].pid, second[0].pid}
    # Every process saves its own data iterator position.
    data_dir = two / "checkpoints" / str(STEPS) / "data"
    data_files = sorted(path.name for path in data_dir.glob("process_*.json"))
    assert data_files == ["process_0-of-2.json", "process_1-of-2.json"]

    expected, actual = read_state(one, STEPS), read_state(two, STEPS)
    flat_expected = dict(_flatten(expected))
    flat_actual = dict(_flatten(actual))
    assert flat_expected.keys() == flat_actual.keys()
    # Equal up to float32 rounding: gloo sums gradients across the processes in
    # another order than one process sums them across its devices.
    for path, value in flat_expected.items():
        np.testing.assert_allclose(flat_actual[path], value, rtol=1e-4, atol=1e-5, err_msg=path)
    # The tolerance is far below what training changes: steps 7..8 move the
    # parameters by much more.
    earlier = dict(_flatten(read_state(one, 6)))
    moved = max(
        float(np.max(np.abs(value - earlier[path]))) for path, value in flat_expected.items()
    )
    assert moved > 100 * 1e-5

    results_one = json.loads((one / "eval" / "results.json").read_text())
    results_two = json.loads((two / "eval" / "results.json").read_text())
    assert results_two["protocol"] == results_one["protocol"]
    for name, value in results_one["metrics"].items():
        assert results_two["metrics"][name] == pytest.approx(value, abs=1e-3), name


def _flatten(tree, prefix=""):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _flatten(value, f"{prefix}/{key}")
    else:
        yield prefix, np.asarray(tree)
