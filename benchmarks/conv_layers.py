r"""Timing of the small CNN's 3x3 convolutions against matrix products, in XLA and PyTorch.

  .venv/bin/python benchmarks/conv_layers.py [--repeats=3] [--steps=20] [--output=FILE.json]

Times each 3x3 convolution of the Fashion-MNIST small CNN at batch 128 (stride 1,
SAME padding, NHWC in XLA, NCHW in PyTorch). Four timings per layer:
  forward      the convolution alone.
  input grad   the gradient with respect to the input, for a given output gradient.
  weight grad  the gradient with respect to the kernel.
  torch        PyTorch's convolution forward and backward (both gradients).
Then, for comparison, one float32 matrix product of each shape that a patch-matrix
(im2col) convolution of that layer would use, in XLA, NumPy and PyTorch. Each
entry is the fastest of --repeats means over --steps calls, in milliseconds, and
the matrix products also as GFLOP/s. Every JAX function is jitted and
compiled before timing.

XLA runs with the binaries' CPU settings: the script restarts itself under tcmalloc
when it is installed (`semhash_jax.platform.restart_with_tcmalloc`), and convolutions
run in Eigen instead of YNNPACK (`semhash_jax.platform.configure_xla_cpu`). To time
XLA's default, YNNPACK, run with
XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+individual_convolution, and to keep
glibc's malloc, with SEMHASH_JAX_MALLOC=default.

PyTorch is optional (bench-only); install it as benchmarks/train_step.py describes and
put its site-packages on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import sys
import time

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from semhash_jax import platform as semhash_platform  # noqa: E402

try:
    import torch
except ImportError:
    torch = None

# (batch, height, width, input channels, output channels) of the small CNN's convolutions.
LAYERS = ((128, 28, 28, 1, 32), (128, 14, 14, 32, 64), (128, 7, 7, 64, 128))
DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def conv(x, kernel):
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=DIMENSIONS)


def best_milliseconds(fn, args, steps: int, repeats: int, block) -> float:
    block(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            out = fn(*args)
        block(out)
        best = min(best, (time.perf_counter() - start) / steps)
    return best * 1e3


def time_layer(shape, steps, repeats, rng) -> dict:
    batch, height, width, channels, features = shape
    x = jnp.asarray(rng.standard_normal((batch, height, width, channels)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((3, 3, channels, features)) * 0.1, jnp.float32)
    grad = jnp.asarray(rng.standard_normal((batch, height, width, features)), jnp.float32)

    def input_grad(x, kernel, grad):
        return jax.vjp(conv, x, kernel)[1](grad)[0]

    def weight_grad(x, kernel, grad):
        return jax.vjp(conv, x, kernel)[1](grad)[1]

    block = jax.block_until_ready
    row = {
        "layer": f"{channels}->{features} at {height}x{width}",
        "forward_ms": best_milliseconds(jax.jit(conv), (x, kernel), steps, repeats, block),
        "input_grad_ms": best_milliseconds(
            jax.jit(input_grad), (x, kernel, grad), steps, repeats, block
        ),
        "weight_grad_ms": best_milliseconds(
            jax.jit(weight_grad), (x, kernel, grad), steps, repeats, block
        ),
        "gflop_per_pass": 2 * batch * height * width * 9 * channels * features / 1e9,
    }
    if torch is not None:
        x_t = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2), requires_grad=True)
        kernel_t = torch.tensor(np.asarray(kernel).transpose(3, 2, 0, 1), requires_grad=True)
        grad_t = torch.tensor(np.asarray(grad).transpose(0, 3, 1, 2))

        def torch_step():
            torch.nn.functional.conv2d(x_t, kernel_t, padding=1).backward(grad_t)

        row["torch_forward_backward_ms"] = best_milliseconds(
            torch_step, (), steps, repeats, lambda _: None
        )
    return row


def time_matmuls(shapes, steps, repeats, rng) -> list[dict]:
    rows = []
    for m, k, n in shapes:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        gflop = 2 * m * k * n / 1e9
        row = {"shape": f"[{m},{k}] @ [{k},{n}]"}
        row["xla_ms"] = best_milliseconds(
            jax.jit(jnp.matmul),
            (jnp.asarray(a), jnp.asarray(b)),
            steps,
            repeats,
            jax.block_until_ready,
        )
        row["numpy_ms"] = best_milliseconds(np.matmul, (a, b), steps, repeats, lambda _: None)
        if torch is not None:
            row["torch_ms"] = best_milliseconds(
                torch.matmul, (torch.tensor(a), torch.tensor(b)), steps, repeats, lambda _: None
            )
        for side in ("xla", "numpy", "torch"):
            if f"{side}_ms" in row:
                row[f"{side}_gflops"] = gflop / row[f"{side}_ms"] * 1e3
        rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="Calls per timed repeat.")
    parser.add_argument(
        "--repeats", type=int, default=3, help="Timed repeats, of which the fastest counts."
    )
    parser.add_argument("--output", help="Also write the results to this JSON file.")
    args = parser.parse_args()
    # The binaries' CPU settings: tcmalloc (a restart), and the XLA flag unless your
    # own XLA_FLAGS set YNNPACK fusion types.
    semhash_platform.restart_with_tcmalloc()
    semhash_platform.configure_xla_cpu()
    if torch is not None:
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    rng = np.random.default_rng(0)
    print(f"Timing {len(LAYERS)} convolutions and their matrix products on {platform.machine()}.")
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')}")
    layers = [time_layer(shape, args.steps, args.repeats, rng) for shape in LAYERS]
    # The im2col weight gradient of each layer: patches^T [9C, B*H*W] @ output grad.
    matmul_shapes = [(9 * c, b * h * w, o) for b, h, w, c, o in LAYERS] + [(2048, 2048, 2048)]
    matmuls = time_matmuls(matmul_shapes, args.steps, args.repeats, rng)

    print(
        "| layer | GFLOP | forward ms | input grad ms | weight grad ms | JAX total ms "
        "| PyTorch fwd+bwd ms |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in layers:
        total = row["forward_ms"] + row["input_grad_ms"] + row["weight_grad_ms"]
        torch_ms = row.get("torch_forward_backward_ms")
        print(
            f"| {row['layer']} | {row['gflop_per_pass']:.2f} | {row['forward_ms']:.1f} "
            f"| {row['input_grad_ms']:.1f} | {row['weight_grad_ms']:.1f} | {total:.1f} "
            f"| {'n/a' if torch_ms is None else f'{torch_ms:.1f}'} |"
        )
    print()
    print("| matrix product | XLA GFLOP/s | NumPy GFLOP/s | PyTorch GFLOP/s |")
    print("| --- | ---: | ---: | ---: |")
    for row in matmuls:
        cells = [
            f"{row[f'{s}_gflops']:.0f}" if f"{s}_gflops" in row else "n/a"
            for s in ("xla", "numpy", "torch")
        ]
        print(f"| {row['shape']} | " + " | ".join(cells) + " |")
    if args.output:
        record = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": platform.machine(),
            "cpus": len(os.sched_getaffinity(0)),
            "jax": jax.__version__,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "torch": None if torch is None else torch.__version__,
            "layers": layers,
            "matmuls": matmuls,
        }
        with open(args.output, "w") as f:
            json.dump(record, f, indent=1)
        print(f"Wrote {args.output}.")


if __name__ == "__main__":
    main()
