"""Preemption notices: stop training at a step where every process saves a checkpoint.

Cloud schedulers announce a preemption (spot VMs, TPU maintenance, Kubernetes
evictions, `kill`) with SIGTERM some seconds before they stop a job. The trainer
calls `PreemptionWatch.reached(step)` after every step. When it returns True,
the trainer saves the state of that step and exits with `EXIT_CODE`, and the
same command resumes from there.

With several processes, JAX's preemption sync service (started by
`jax.distributed.initialize`) receives the signal and picks one step at which
all processes stop, so that every process writes its part of the same checkpoint.
A single process handles SIGTERM itself.
"""

import signal
import threading

from absl import logging
import jax
from jax.experimental import multihost_utils

# The exit status of a process ended by SIGTERM (128 + 15). Launchers that
# restart preempted jobs look for it.
EXIT_CODE = 143


class Preempted(Exception):
    """Training stopped at `step` on a preemption notice, after saving that step."""

    def __init__(self, step: int):
        super().__init__(
            f"Preemption notice (SIGTERM): saved the checkpoint of step {step} and "
            "stopped. Run the same command again to resume from it."
        )
        self.step = step


class PreemptionWatch:
    """Preemption notices, read by the training loop after each step."""

    def __init__(self):
        self._notice = threading.Event()
        self._previous_handler = None
        if jax.process_count() > 1:
            return
        if threading.current_thread() is not threading.main_thread():
            # NOTE: Python installs signal handlers only in the main thread. Training
            # started from another thread keeps the default SIGTERM action (exit
            # without a final save); checkpoints already on disk are kept.
            logging.warning("Not in the main thread: SIGTERM will not trigger a final save.")
            return
        self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame):
        del frame
        logging.warning("Received signal %d: saving a checkpoint after this step.", signum)
        self._notice.set()

    def reached(self, step: int) -> bool:
        """Return True when training must save the checkpoint of `step` and stop.

        Every process must call this after every step, from the first step of the
        run on.
        """
        if jax.process_count() > 1:
            reached = multihost_utils.reached_preemption_sync_point(step)
            if reached:
                logging.warning("Preemption notice: all processes save step %d and stop.", step)
            return reached
        return self._notice.is_set()

    def close(self):
        """Restore the SIGTERM handler that was installed before."""
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None
