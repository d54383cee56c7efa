r"""Throughput of the jitted training step, beside the same model in PyTorch.

  .venv/bin/python benchmarks/train_step.py [--configs=small_cnn,resnet18,resnet50] \
      [--steps=N] [--repeats=R] [--output=train_step.json] [--no_torch] [--no_torch_compile] \
      [--no_torch_glibc] [--backbone_parts]

Benchmark configs, each built from its file in configs/ with the batch size changed:
  small_cnn  configs/fashion_mnist.py: small CNN, 28x28x1, batch 128, 10 classes.
  resnet18   configs/cifar10.py: ResNet-18 with the 3x3 stem, 32x32x3, batch 64, 10 classes.
  resnet50   configs/imagenet.py: ResNet-50 with the 7x7 stem, 224x224x3, batch 32,
             1,000 classes, SGD with momentum (that config's optimizer).
The JAX side is the project's own step: `make_mesh`, `make_schedule`,
`create_train_state` and `make_train_step`, fed one fixed random batch made global with
`sharding.global_batch` and 384-dim class embeddings. Its compile time is tracing,
lowering and XLA compilation (`lower(...).compile()`), and its FLOP count per step is
XLA's `cost_analysis()`. Then 2 warm-up steps run before the timed steps.

The PyTorch side (when `import torch` works) is the same network written here in
plain eager PyTorch: backbone, Linear(K) + tanh, the semantic MLP (384 -> 512 -> K,
tanh), softmax cross-entropy over scaled inner products plus the quantization term, and
the config's optimizer (AdamW, or SGD with momentum for resnet50). Both sides do the
config's on-device augmentation (random flips and edge-padded shifts). The resnet50
config has none, because its inception crop runs on the host, and neither side times
the host. PyTorch uses one thread per CPU core that the process may use, as XLA's CPU
thread pool does (a profile on 2 cores shows 2 XLA Eigen threads). The parameter counts and batch-norm statistics of both sides
must match, or the benchmark stops. With --no_torch_compile unset, a torch.compile'd
forward and backward (optimizer eager) is an extra row.

Each repeat times --steps steps of every side in turn (JAX, PyTorch eager, PyTorch
compiled), so that load from other processes spreads over all sides. Images/s is the
median over repeats. On an accelerator the JAX row also reports model FLOP utilisation:
XLA FLOPs per step per device / step time / peak FLOP/s of one device (`PEAK_TFLOPS`
or --peak_tflops).

With --backbone_parts, the backbone alone is timed as well, on both sides: its
forward pass in training mode, and forward plus backward (the gradient of the
features' inner product with a fixed random matrix, with respect to the backbone's
parameters). The backward pass is the difference of the two. This shows which part
of the network the step's time goes to, without the loss, optimizer and augmentation.

XLA runs with the binaries' CPU settings. The script restarts itself under tcmalloc
when it is installed (`semhash_jax.platform.restart_with_tcmalloc`), and PyTorch in
the same process shares it. A user of plain PyTorch gets glibc's malloc, so the
PyTorch eager step is also timed in a child process with SEMHASH_JAX_MALLOC=default
(column "glibc malloc"; --no_torch_glibc skips it). The minor page faults of each side
per step are in the JSON and the summary lines. Convolutions run in Eigen instead of
YNNPACK (`semhash_jax.platform.configure_xla_cpu`); the JSON output records XLA_FLAGS
and the malloc. To time XLA's default convolutions, run with
XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+individual_convolution; to time
glibc's malloc on both sides, with SEMHASH_JAX_MALLOC=default.

PyTorch must stay out of .venv, whose tests run without it. Install the CPU build in
its own venv and put that venv's site-packages on PYTHONPATH:

  python3.11 -m venv /work/torch-venv && /work/torch-venv/bin/pip install torch==2.13.0
  PYTHONPATH=/work/torch-venv/lib/python3.11/site-packages .venv/bin/python benchmarks/train_step.py

The package mirror of the benchmark machine served the CPU build (2.13.0+cpu) to that
command. From PyPI, add --index-url https://download.pytorch.org/whl/cpu to get it.
That venv adds torch, sympy, mpmath, networkx and jinja2. The packages it shares with
.venv (typing_extensions, filelock, fsspec, MarkupSafe) have the same versions, except
setuptools and pip, which nothing here imports.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

try:
    import torch
    from torch import nn
    import torch.nn.functional as F
except ImportError:
    torch = None

# Lets the PyTorch classes below be defined when torch is missing; they are then unused.
TorchModule = nn.Module if torch is not None else object

EMBEDDING_DIM = 384
WARMUP_STEPS = 2
# Seconds of idle time between sides, so that thread pools that spin after their
# last task (OpenMP in PyTorch, Eigen in XLA) are asleep when the next side starts.
SETTLE_SECONDS = 0.2


@dataclasses.dataclass(frozen=True)
class Benchmark:
    config_module: str
    batch_size: int
    num_classes: int
    default_steps: int


BENCHMARKS = {
    "small_cnn": Benchmark("fashion_mnist", batch_size=128, num_classes=10, default_steps=20),
    "resnet18": Benchmark("cifar10", batch_size=64, num_classes=10, default_steps=5),
    "resnet50": Benchmark("imagenet", batch_size=32, num_classes=1000, default_steps=2),
}

# Dense peak TFLOP/s of one jax device: (bf16 matrix units, fp32 without tensor cores).
# Sources: Cloud TPU v5e, v5p and v6e pages (bf16 per chip); NVIDIA A100 and H100 SXM
# datasheets (H200 has the H100 SXM's compute). TPUs publish no fp32 peak.
# NOTE: TPU v4's 275 was not checked against a published page; pass --peak_tflops to be sure.
PEAK_TFLOPS = {
    "TPU v4": (275.0, None),
    "TPU v5 lite": (197.0, None),
    "TPU v5e": (197.0, None),
    "TPU v5p": (459.0, None),
    "TPU v5": (459.0, None),
    "TPU v6 lite": (918.0, None),
    "TPU v6e": (918.0, None),
    "H200": (989.4, 66.9),
    "H100": (989.4, 66.9),
    "A100": (312.0, 19.5),
}


def load_config(benchmark: Benchmark):
    """Return the config of `configs/<module>.py` with the benchmark's batch size."""
    module = importlib.import_module(f"configs.{benchmark.config_module}")
    config = module.get_config()
    config.unlock()
    config.batch_size = benchmark.batch_size
    config.lock()
    return config


def make_host_batch(config, num_classes: int, seed: int = 0) -> dict:
    """Make one random NHWC batch in the input pipeline's layout and dtypes."""
    rng = np.random.default_rng(seed)
    size, channels, batch = config.image_size, config.num_channels, config.batch_size
    return {
        "image": rng.standard_normal((batch, size, size, channels), dtype=np.float32),
        "label": rng.integers(0, num_classes, batch).astype(np.int32),
        "id": np.arange(batch, dtype=np.int64),
    }


def peak_tflops(device_kind: str) -> tuple[float | None, float | None]:
    for name, peaks in PEAK_TFLOPS.items():
        if name.lower() in device_kind.lower():
            return peaks
    return None, None


# --- JAX side -------------------------------------------------------------------------


class JaxStep:
    """The project's jitted train step on one fixed batch; `run` times `steps` calls."""

    def __init__(self, config, num_classes: int, host_batch: dict, embeddings: np.ndarray):
        import jax
        from flax import nnx

        from semhash_jax import sharding, train, train_state as train_state_lib

        self._jax = jax
        mesh = sharding.make_mesh()
        sharding.check_batch_size(config.batch_size, mesh)
        schedule = train_state_lib.make_schedule(config)
        train_state = train_state_lib.create_train_state(
            config, mesh, embedding_dim=EMBEDDING_DIM, schedule=schedule
        )
        model, _ = nnx.merge(train_state.graphdef, train_state.state)
        self.param_count = _leaf_sizes(nnx.state(model, nnx.Param))
        self.batch_stat_count = _leaf_sizes(nnx.state(model, nnx.BatchStat))

        self.step = train.make_train_step(config, train_state, mesh, num_classes, schedule)
        self.batch = sharding.global_batch(host_batch, mesh)
        replicated = sharding.replicated(mesh)
        self.embeddings = jax.device_put(embeddings, replicated)
        self.key = jax.device_put(jax.random.key(0), replicated)
        self.state = train_state.state

        start = time.perf_counter()
        compiled = self.step.lower(self.state, self.batch, self.embeddings, self.key).compile()
        # The timed steps call this executable, so the step is compiled once.
        self.step = compiled
        self.compile_seconds = time.perf_counter() - start
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        # FLOPs of the program of one device (the whole step when there is one device).
        self.flops_per_device = float(cost["flops"]) if cost and "flops" in cost else None
        self.run(WARMUP_STEPS)

    def run(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            self.state, metrics = self.step(self.state, self.batch, self.embeddings, self.key)
        self._jax.block_until_ready((self.state, metrics))
        return time.perf_counter() - start


def _leaf_sizes(tree) -> int:
    import jax

    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(tree)))


class JaxBackbone:
    """The config's backbone alone, jitted: forward, and forward plus backward.

    Forward runs in training mode (batch statistics from the batch). Forward plus
    backward is the gradient, with respect to the parameters, of the inner product
    of the features with a fixed random matrix, so that both sides differentiate the
    same scalar. Separates the backbone's backward pass from the rest of the step.
    """

    def __init__(self, config, host_batch: dict):
        import jax
        import jax.numpy as jnp
        from flax import nnx

        from semhash_jax.models import backbones

        self._jax = jax
        model_config = config.model
        backbone = backbones.create_backbone(
            model_config.backbone,
            config.num_channels,
            rngs=nnx.Rngs(config.seed),
            stem=model_config.stem,
            dtype=model_config.get("dtype", "float32"),
        )
        graphdef, state = nnx.split(backbone)
        # The fixed matrix that the features are multiplied with. PyTorch takes the same one.
        self.feature_weights = np.random.default_rng(2).standard_normal(
            (config.batch_size, backbone.feature_dim), dtype=np.float32
        )

        def objective(state, images, weights):
            model = nnx.merge(graphdef, state)
            features = model(images).astype(jnp.float32)
            return jnp.vdot(features, weights)

        self.images = jnp.asarray(host_batch["image"])
        self.weights = jnp.asarray(self.feature_weights)
        self.state = state
        self.forward = jax.jit(objective)
        self.forward_backward = jax.jit(jax.grad(objective))
        for function in (self.forward, self.forward_backward):
            jax.block_until_ready(function(self.state, self.images, self.weights))

    def run(self, part: str, steps: int) -> float:
        function = self.forward if part == "forward" else self.forward_backward
        start = time.perf_counter()
        for _ in range(steps):
            result = function(self.state, self.images, self.weights)
        self._jax.block_until_ready(result)
        return time.perf_counter() - start


# --- PyTorch side: the architectures of semhash_jax/models, in NCHW ---------------------


def _batch_norm(channels: int, zero_scale: bool = False):
    # Flax's BatchNorm momentum 0.9 weighs the old running average; PyTorch's 0.1 the new batch.
    norm = nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)
    if zero_scale:
        nn.init.zeros_(norm.weight)
    return norm


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1):
    return nn.Conv2d(
        in_channels, out_channels, kernel, stride=stride, padding=(kernel - 1) // 2, bias=False
    )


class TorchSmallCNN(TorchModule):
    def __init__(self, in_channels: int, widths=(32, 64, 128), dense: int = 256):
        super().__init__()
        layers = []
        channels = in_channels
        for width in widths:
            # ceil_mode matches Flax's 2x2 "SAME" max pool on odd sizes (7 -> 4).
            layers += [
                _conv(channels, width, 3),
                _batch_norm(width),
                nn.ReLU(),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        self.dense = nn.Linear(channels, dense)
        self.feature_dim = dense

    def forward(self, x):
        x = self.features(x).mean(dim=(2, 3))
        return F.relu(self.dense(x))


class TorchShortcut(TorchModule):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv = _conv(in_channels, out_channels, 1, stride)
        self.norm = _batch_norm(out_channels)

    def forward(self, x):
        return self.norm(self.conv(x))


def _torch_shortcut(in_channels: int, out_channels: int, stride: int):
    if stride == 1 and in_channels == out_channels:
        return None
    return TorchShortcut(in_channels, out_channels, stride)


class TorchBasicBlock(TorchModule):
    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int):
        super().__init__()
        self.conv1 = _conv(in_channels, width, 3, stride)
        self.norm1 = _batch_norm(width)
        self.conv2 = _conv(width, width, 3)
        self.norm2 = _batch_norm(width, zero_scale=True)
        self.shortcut = _torch_shortcut(in_channels, width, stride)

    def forward(self, x):
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.relu(y + (self.shortcut(x) if self.shortcut is not None else x))


class TorchBottleneck(TorchModule):
    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int):
        super().__init__()
        out = width * self.expansion
        self.conv1 = _conv(in_channels, width, 1)
        self.norm1 = _batch_norm(width)
        self.conv2 = _conv(width, width, 3, stride)
        self.norm2 = _batch_norm(width)
        self.conv3 = _conv(width, out, 1)
        self.norm3 = _batch_norm(out, zero_scale=True)
        self.shortcut = _torch_shortcut(in_channels, out, stride)

    def forward(self, x):
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        y = self.norm3(self.conv3(y))
        return F.relu(y + (self.shortcut(x) if self.shortcut is not None else x))


class TorchResNet(TorchModule):
    """ResNet v1.5 with the "imagenet" (7x7/2 conv, 3x3/2 max pool) or "cifar" stem."""

    def __init__(self, block, stage_sizes, in_channels: int, stem: str):
        super().__init__()
        if stem == "imagenet":
            self.stem = nn.Sequential(
                _conv(in_channels, 64, 7, 2),
                _batch_norm(64),
                nn.ReLU(),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        else:
            self.stem = nn.Sequential(_conv(in_channels, 64, 3), _batch_norm(64), nn.ReLU())
        blocks = []
        channels = 64
        for stage, count in enumerate(stage_sizes):
            width = 64 * 2**stage
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(block(channels, width, stride))
                channels = width * block.expansion
        self.blocks = nn.Sequential(*blocks)
        self.feature_dim = channels

    def forward(self, x):
        return self.blocks(self.stem(x)).mean(dim=(2, 3))


class TorchSemanticHash(TorchModule):
    """Backbone, Linear(K) and tanh for images; MLP and tanh for class embeddings."""

    def __init__(self, backbone, bits: int, hidden=(512,)):
        super().__init__()
        self.backbone = backbone
        self.hash_layer = nn.Linear(backbone.feature_dim, bits)
        widths = (EMBEDDING_DIM,) + tuple(hidden)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.output = nn.Linear(widths[-1], bits)

    def forward(self, images, class_embeddings):
        codes = torch.tanh(self.hash_layer(self.backbone(images)))
        x = class_embeddings
        for layer in self.hidden:
            x = F.relu(layer(x))
        return codes, torch.tanh(self.output(x))


def create_torch_model(config):
    model_config = config.model
    if model_config.backbone == "small_cnn":
        backbone = TorchSmallCNN(config.num_channels)
    elif model_config.backbone == "resnet18":
        backbone = TorchResNet(
            TorchBasicBlock, (2, 2, 2, 2), config.num_channels, model_config.stem
        )
    elif model_config.backbone == "resnet50":
        backbone = TorchResNet(
            TorchBottleneck, (3, 4, 6, 3), config.num_channels, model_config.stem
        )
    else:
        raise ValueError(
            f"No PyTorch version of backbone {model_config.backbone!r}; "
            "choose small_cnn, resnet18 or resnet50."
        )
    return TorchSemanticHash(backbone, config.bits, tuple(model_config.semantic_hidden))


def torch_augment(images, generator, *, flip: bool, max_shift: int):
    """Random horizontal flips and edge-padded shifts of NCHW images, as `train.augment`."""
    batch, _, height, width = images.shape
    if flip:
        flipped = torch.rand(batch, 1, 1, 1, generator=generator) < 0.5
        images = torch.where(flipped, images.flip(3), images)
    if max_shift > 0:
        padded = F.pad(images, (max_shift,) * 4, mode="replicate")
        offsets = torch.randint(0, 2 * max_shift + 1, (batch, 2), generator=generator)
        rows = offsets[:, 0:1] + torch.arange(height)
        cols = offsets[:, 1:2] + torch.arange(width)
        # Advanced indexing puts the [B, H, W] index dims first, then channels.
        cropped = padded[torch.arange(batch)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
        images = cropped.permute(0, 3, 1, 2)
    return images


def torch_semantic_hash_loss(codes, prototypes, labels, loss_config):
    """`losses.semantic_hash_loss` for softmax_ce over inner products."""
    if loss_config.alignment != "softmax_ce" or loss_config.similarity != "inner_product":
        raise ValueError(
            f"The PyTorch loss supports softmax_ce with inner_product only, not "
            f"{loss_config.alignment} with {loss_config.similarity}."
        )
    sim = codes @ prototypes.T / codes.shape[-1]
    has_label = labels.sum(-1) > 0
    targets = labels / labels.sum(-1, keepdim=True).clamp_min(1e-12)
    per_row = -(targets * F.log_softmax(loss_config.scale * sim, dim=-1)).sum(-1)
    alignment = torch.where(has_label, per_row, 0.0).sum() / has_label.sum().clamp_min(1)
    quantization = ((codes.abs() - 1.0) ** 2).mean()
    if loss_config.quantize_prototypes:
        quantization = quantization + ((prototypes.abs() - 1.0) ** 2).mean()
    return alignment + loss_config.quantization_weight * quantization


class TorchStep:
    """A plain PyTorch training step on the same batch; `run` times `steps` steps."""

    def __init__(self, config, num_classes, host_batch, embeddings, *, compile_model: bool):
        torch.manual_seed(config.seed)
        self.config = config
        self.model = create_torch_model(config).train()
        self.param_count = sum(p.numel() for p in self.model.parameters())
        self.batch_stat_count = sum(
            b.numel() for name, b in self.model.named_buffers() if "running_" in name
        )

        optimizer = config.optimizer
        learning_rate = optimizer.learning_rate
        if optimizer.name == "adam":
            self.optimizer = torch.optim.AdamW(
                self.model.parameters(), lr=learning_rate, weight_decay=optimizer.weight_decay
            )
        else:
            self.optimizer = torch.optim.SGD(
                self.model.parameters(),
                lr=learning_rate,
                momentum=0.9,
                weight_decay=optimizer.weight_decay,
            )

        self.images = torch.from_numpy(host_batch["image"]).permute(0, 3, 1, 2).contiguous()
        labels = torch.from_numpy(host_batch["label"]).long()
        self.labels = F.one_hot(labels, num_classes).float()
        self.embeddings = torch.from_numpy(embeddings)
        self.generator = torch.Generator().manual_seed(0)

        self.forward_loss = self._forward_loss
        self.compile_seconds = None
        if compile_model:
            self.forward_loss = torch.compile(self._forward_loss)
        start = time.perf_counter()
        self.run(1)
        if compile_model:
            self.compile_seconds = time.perf_counter() - start
        self.run(WARMUP_STEPS)

    def _forward_loss(self, images):
        codes, prototypes = self.model(images, self.embeddings)
        return torch_semantic_hash_loss(codes, prototypes, self.labels, self.config.loss)

    def run(self, steps: int) -> float:
        config = self.config
        start = time.perf_counter()
        for _ in range(steps):
            images = torch_augment(
                self.images,
                self.generator,
                flip=config.augment_flip,
                max_shift=config.augment_max_shift,
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.forward_loss(images)
            loss.backward()
            # The JAX step reports the global gradient norm; compute it here too.
            torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.grad) for p in self.model.parameters()])
            )
            self.optimizer.step()
        return time.perf_counter() - start


class TorchBackbone:
    """`JaxBackbone` in eager PyTorch: the same backbone, scalar and parameters."""

    def __init__(self, config, host_batch: dict, feature_weights: np.ndarray):
        torch.manual_seed(config.seed)
        self.backbone = create_torch_model(config).backbone.train()
        self.images = torch.from_numpy(host_batch["image"]).permute(0, 3, 1, 2).contiguous()
        self.weights = torch.from_numpy(feature_weights)
        for part in ("forward", "forward_backward"):
            self.run(part, 1)

    def run(self, part: str, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            if part == "forward":
                with torch.no_grad():
                    (self.backbone(self.images) * self.weights).sum()
            else:
                self.backbone.zero_grad(set_to_none=True)
                (self.backbone(self.images) * self.weights).sum().backward()
        return time.perf_counter() - start


# --- Measurement and report -------------------------------------------------------------


def median_images_per_second(seconds: list[float], images_per_repeat: int) -> float:
    return images_per_repeat / statistics.median(seconds)


def benchmark_config(name: str, args) -> dict:
    import jax

    benchmark = BENCHMARKS[name]
    config = load_config(benchmark)
    steps = args.steps or benchmark.default_steps
    host_batch = make_host_batch(config, benchmark.num_classes)
    embeddings = np.random.default_rng(1).standard_normal(
        (benchmark.num_classes, EMBEDDING_DIM), dtype=np.float32
    )
    result = {
        "config": f"configs/{benchmark.config_module}.py",
        "backbone": config.model.backbone,
        "stem": config.model.stem if config.model.backbone != "small_cnn" else None,
        "image_shape": [config.image_size, config.image_size, config.num_channels],
        "batch_size": config.batch_size,
        "num_classes": benchmark.num_classes,
        "bits": config.bits,
        "optimizer": config.optimizer.name,
        "augment_flip": config.augment_flip,
        "augment_max_shift": config.augment_max_shift,
        "steps_per_repeat": steps,
        "repeats": args.repeats,
        "load_average_before": os.getloadavg(),
    }

    sides = {}
    if not args.torch_only:
        print(f"[{name}] compiling the JAX step", flush=True)
        jax_step = sides["jax"] = JaxStep(config, benchmark.num_classes, host_batch, embeddings)
        result["jax_compile_seconds"] = jax_step.compile_seconds
        result["param_count"] = jax_step.param_count
        result["batch_stat_count"] = jax_step.batch_stat_count
        result["xla_flops_per_step_per_device"] = jax_step.flops_per_device

    if torch is not None and not args.no_torch:
        print(f"[{name}] building the PyTorch step", flush=True)
        sides["torch_eager"] = TorchStep(
            config, benchmark.num_classes, host_batch, embeddings, compile_model=False
        )
        counts = (sides["torch_eager"].param_count, sides["torch_eager"].batch_stat_count)
        result["torch_param_count"], result["torch_batch_stat_count"] = counts
        if "jax" in sides and counts != (jax_step.param_count, jax_step.batch_stat_count):
            raise RuntimeError(
                f"{name}: PyTorch has {counts[0]} parameters and {counts[1]} batch-norm "
                f"statistics, JAX {jax_step.param_count} and {jax_step.batch_stat_count}. "
                "The two architectures differ; fix the PyTorch model in this file."
            )
        if not args.no_torch_compile:
            print(f"[{name}] compiling the PyTorch step with torch.compile", flush=True)
            sides["torch_compile"] = TorchStep(
                config, benchmark.num_classes, host_batch, embeddings, compile_model=True
            )
            result["torch_compile_seconds"] = sides["torch_compile"].compile_seconds

    seconds = {side: [] for side in sides}
    faults = {side: [] for side in sides}
    for repeat in range(args.repeats):
        for side, step in sides.items():
            time.sleep(SETTLE_SECONDS)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            seconds[side].append(step.run(steps))
            faults[side].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        print(
            f"[{name}] repeat {repeat + 1}/{args.repeats}: "
            + ", ".join(f"{side} {times[-1]:.2f} s" for side, times in seconds.items()),
            flush=True,
        )
    result["load_average_after"] = os.getloadavg()

    images = steps * config.batch_size
    for side, times in seconds.items():
        result[f"{side}_seconds_per_repeat"] = times
        result[f"{side}_images_per_second"] = median_images_per_second(times, images)
        # Minor page faults of the process while this side ran, per step.
        result[f"{side}_page_faults_per_step"] = statistics.median(faults[side]) / steps
    if args.torch_only:
        return result
    if torch is not None and not args.no_torch and not args.no_torch_glibc and preloaded_malloc():
        result.update(torch_with_glibc_malloc(name, steps, args))
    jax_rate = result["jax_images_per_second"]
    for side in ("torch_eager", "torch_eager_glibc", "torch_compile"):
        if f"{side}_images_per_second" in result:
            result[f"jax_over_{side}"] = jax_rate / result[f"{side}_images_per_second"]

    if args.backbone_parts:
        result["backbone_parts"] = time_backbone_parts(name, config, host_batch, steps, args)

    step_seconds = statistics.median(seconds["jax"]) / steps
    flops = jax_step.flops_per_device
    if flops:
        result["jax_achieved_tflops_per_device"] = flops / step_seconds / 1e12
    device = jax.devices()[0]
    if device.platform != "cpu" and flops:
        bf16_peak, fp32_peak = peak_tflops(device.device_kind)
        if args.peak_tflops:
            bf16_peak, fp32_peak = args.peak_tflops, None
        if bf16_peak:
            result["peak_tflops_per_device"] = bf16_peak
            result["mfu"] = result["jax_achieved_tflops_per_device"] / bf16_peak
        if fp32_peak:
            result["peak_fp32_tflops_per_device"] = fp32_peak
            result["mfu_vs_fp32_peak"] = result["jax_achieved_tflops_per_device"] / fp32_peak
    return result


def preloaded_malloc() -> str:
    """Return the malloc library this process was restarted with, or ""."""
    from semhash_jax import host_allocator

    return os.environ.get(host_allocator.RESTARTED_VARIABLE, "")


def torch_with_glibc_malloc(name: str, steps: int, args) -> dict:
    """Time the PyTorch eager step in a child process under the C library's malloc.

    This process runs under tcmalloc, as the binaries do, and PyTorch shares it.
    A user who runs plain PyTorch gets glibc's malloc, so this is the other
    comparison. The child runs this script with --torch_only.
    """
    from semhash_jax import host_allocator

    print(f"[{name}] timing PyTorch eager in a child process with glibc's malloc", flush=True)
    environment = dict(os.environ)
    for variable in (
        "LD_PRELOAD",
        host_allocator.RESTARTED_VARIABLE,
        *host_allocator.TCMALLOC_DEFAULTS,
    ):
        environment.pop(variable, None)
    environment[host_allocator.ENV_VARIABLE] = "default"
    with tempfile.TemporaryDirectory() as folder:
        output = os.path.join(folder, "torch.json")
        command = [
            sys.executable,
            os.path.abspath(__file__),
            f"--configs={name}",
            "--torch_only",
            "--no_torch_compile",
            f"--steps={steps}",
            f"--repeats={args.repeats}",
            f"--output={output}",
        ]
        subprocess.run(command, env=environment, check=True)
        with open(output) as file:
            child = json.load(file)
    result = child["results"][name]
    return {
        "torch_eager_glibc_images_per_second": result["torch_eager_images_per_second"],
        "torch_eager_glibc_seconds_per_repeat": result["torch_eager_seconds_per_repeat"],
        "torch_eager_glibc_page_faults_per_step": result["torch_eager_page_faults_per_step"],
        "torch_eager_glibc_malloc": child["machine"]["malloc"],
    }


def time_backbone_parts(name: str, config, host_batch: dict, steps: int, args) -> dict:
    """Time the backbone's forward, and forward plus backward, on each side (median ms per call)."""
    print(f"[{name}] timing the backbone alone", flush=True)
    sides = {"jax": JaxBackbone(config, host_batch)}
    if torch is not None and not args.no_torch:
        sides["torch"] = TorchBackbone(config, host_batch, sides["jax"].feature_weights)
    milliseconds = {}
    for part in ("forward", "forward_backward"):
        times = {side: [] for side in sides}
        for _ in range(args.repeats):
            for side, timer in sides.items():
                time.sleep(SETTLE_SECONDS)
                times[side].append(timer.run(part, steps))
        for side, values in times.items():
            milliseconds[f"{side}_{part}_ms"] = statistics.median(values) / steps * 1e3
    for side in sides:
        milliseconds[f"{side}_backward_ms"] = (
            milliseconds[f"{side}_forward_backward_ms"] - milliseconds[f"{side}_forward_ms"]
        )
    if "torch" in sides:
        # Speed ratios as in the step table (above 1: JAX is faster), so time over time.
        for part in ("forward", "backward"):
            milliseconds[f"jax_speed_over_torch_{part}"] = (
                milliseconds[f"torch_{part}_ms"] / milliseconds[f"jax_{part}_ms"]
            )
    return milliseconds


def machine_info() -> dict:
    import flax
    import jax
    import jaxlib

    cpu_model = platform.processor()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    device = jax.devices()[0]
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "usable_cpu_cores": len(os.sched_getaffinity(0)),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "numpy": np.__version__,
        "jax_platform": device.platform,
        "jax_device_kind": device.device_kind,
        "jax_device_count": jax.device_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "malloc": preloaded_malloc() or "the C library's",
    }
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["torch_mkldnn"] = torch.backends.mkldnn.is_available()
    return info


def _cell(values: dict, key: str, digits: int = 1) -> str:
    """Return values[key] with thousands separators, or "" when it is missing."""
    value = values.get(key)
    return "" if value is None else f"{value:,.{digits}f}"


def format_table(results: dict) -> str:
    lines = [
        "| config | batch | JAX img/s | PyTorch eager img/s | JAX / eager | "
        "PyTorch eager, glibc malloc img/s | JAX / eager with glibc | "
        "torch.compile img/s | JAX / compiled | JAX compile s | params | XLA GFLOP/step |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, result in results.items():
        flops = result.get("xla_flops_per_step_per_device")
        lines.append(
            f"| {name} | {result['batch_size']} | {_cell(result, 'jax_images_per_second')} | "
            f"{_cell(result, 'torch_eager_images_per_second')} | "
            f"{_cell(result, 'jax_over_torch_eager', 2)} | "
            f"{_cell(result, 'torch_eager_glibc_images_per_second')} | "
            f"{_cell(result, 'jax_over_torch_eager_glibc', 2)} | "
            f"{_cell(result, 'torch_compile_images_per_second')} | "
            f"{_cell(result, 'jax_over_torch_compile', 2)} | "
            f"{_cell(result, 'jax_compile_seconds')} | "
            f"{_cell(result, 'param_count', 0)} | "
            f"{'' if flops is None else f'{flops / 1e9:,.1f}'} |"
        )
    return "\n".join(lines)


def format_backbone_table(results: dict) -> str:
    """Return the table of the backbone alone: ms per call, the backward pass by difference."""
    lines = [
        "| config | batch | JAX forward ms | PyTorch forward ms | JAX backward ms | "
        "PyTorch backward ms | JAX speed / PyTorch, forward | JAX speed / PyTorch, backward |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, result in results.items():
        parts = result.get("backbone_parts")
        if not parts:
            continue
        cells = [
            _cell(parts, "jax_forward_ms"),
            _cell(parts, "torch_forward_ms"),
            _cell(parts, "jax_backward_ms"),
            _cell(parts, "torch_backward_ms"),
            _cell(parts, "jax_speed_over_torch_forward", 2),
            _cell(parts, "jax_speed_over_torch_backward", 2),
        ]
        lines.append(f"| {name} | {result['batch_size']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--configs",
        default=",".join(BENCHMARKS),
        help=f"Comma-separated benchmark configs, from: {', '.join(BENCHMARKS)}.",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        help="Timed steps per repeat and side. 0 uses each config's default "
        + ", ".join(f"{name}={b.default_steps}" for name, b in BENCHMARKS.items())
        + ".",
    )
    parser.add_argument("--repeats", type=int, default=3, help="Timed repeats per side.")
    parser.add_argument("--output", default="", help="JSON file for all numbers and machine info.")
    parser.add_argument("--no_torch", action="store_true", help="Time the JAX step only.")
    parser.add_argument(
        "--no_torch_compile", action="store_true", help="Skip the torch.compile row."
    )
    parser.add_argument(
        "--no_torch_glibc",
        action="store_true",
        help="Skip the PyTorch eager step in a child process with glibc's malloc.",
    )
    parser.add_argument(
        "--torch_only",
        action="store_true",
        help="Time the PyTorch steps alone (the child process of the glibc comparison).",
    )
    parser.add_argument(
        "--backbone_parts",
        action="store_true",
        help="Also time the backbone alone, forward and forward plus backward, on each side.",
    )
    parser.add_argument(
        "--peak_tflops",
        type=float,
        default=0.0,
        help="Peak TFLOP/s of one accelerator device for the model FLOP utilisation; "
        "0 looks up the device kind in PEAK_TFLOPS.",
    )

    args = parser.parse_args()
    args.configs = [name.strip() for name in args.configs.split(",") if name.strip()]
    unknown = sorted(set(args.configs) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown --configs {unknown}; choose from {', '.join(BENCHMARKS)}.")
    if args.steps < 0 or args.repeats < 1:
        parser.error("--steps must be >= 0 and --repeats >= 1.")
    if args.torch_only and (args.no_torch or args.backbone_parts):
        parser.error("--torch_only times PyTorch alone: drop --no_torch and --backbone_parts.")
    return args


def main():
    args = parse_args()
    # The binaries' CPU settings, before JAX starts: tcmalloc (this restarts the script
    # when it is installed) and the XLA flag, recorded as malloc and xla_flags below.
    from semhash_jax import platform as semhash_platform

    semhash_platform.restart_with_tcmalloc()
    semhash_platform.configure_xla_cpu()
    if torch is not None:
        # One thread per usable core, as XLA's CPU thread pool.
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    elif not args.no_torch:
        print("PyTorch is not importable: timing the JAX step only (see the docstring).")
    info = machine_info()
    info["load_average_start"] = os.getloadavg()
    print(json.dumps(info, indent=2), flush=True)

    results = {name: benchmark_config(name, args) for name in args.configs}
    info["load_average_end"] = os.getloadavg()

    print(format_table(results))
    if args.backbone_parts:
        print(format_backbone_table(results))
    for name, result in results.items():
        print(
            f"{name}: load average {result['load_average_before']} before, "
            f"{result['load_average_after']} after; page faults per step: "
            + ", ".join(
                f"{key[: -len('_page_faults_per_step')]} {value:,.0f}"
                for key, value in result.items()
                if key.endswith("_page_faults_per_step")
            )
            + (f"; model FLOP utilisation {result['mfu']:.1%}" if "mfu" in result else "")
        )
    if args.output:
        with open(args.output, "w") as output:
            json.dump({"machine": info, "results": results}, output, indent=2)
        print(f"Wrote {args.output}.")


if __name__ == "__main__":
    main()
