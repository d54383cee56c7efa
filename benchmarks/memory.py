r"""Train-step memory per device of a config under several meshes, without training.

  .venv/bin/python benchmarks/memory.py --config=configs/imagenet.py --backbone=resnet152 \
      --batch_size=256 --devices=8 --meshes="data=8;fsdp=8;data=2,fsdp=4" [--dtype=bfloat16]

The train step of `semhash_jax.train.make_train_step` is lowered and compiled for
abstract arrays (`train_state.abstract_train_state`), so nothing is allocated. XLA's
compiled memory analysis then gives the bytes per device: arguments (parameters,
optimizer state, the batch shard, class embeddings), outputs and temporaries, and
their total, an upper bound of the peak. On a machine without accelerators,
--devices virtual CPU devices stand in for them. XLA's CPU backend assigns buffers
differently from the TPU and GPU backends, so on CPU the parameter and optimizer
bytes are exact and the temporaries only estimate an accelerator's.
"""

import argparse
import importlib.util
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config",
        default="configs/imagenet.py",
        help="Config file, optionally with variants after a colon: configs/cifar10.py:bits=64.",
    )
    parser.add_argument("--backbone", default=None, help="Override config.model.backbone.")
    parser.add_argument("--batch_size", type=int, default=None, help="Global batch size.")
    parser.add_argument("--dtype", default=None, help="Override config.model.dtype.")
    parser.add_argument(
        "--devices", type=int, default=8, help="Virtual CPU devices when no accelerator."
    )
    parser.add_argument(
        "--meshes",
        default="data=8;fsdp=8",
        help='Meshes to compare, ";"-separated, each as "axis=size,axis=size".',
    )
    parser.add_argument("--num_classes", type=int, default=1000, help="Classes in the loss.")
    parser.add_argument(
        "--embedding_dim", type=int, default=768, help="Text embedding width (BERT-base: 768)."
    )
    return parser.parse_args()


def parse_mesh(text: str) -> tuple[tuple[str, int], ...]:
    """Parse "data=2,fsdp=4" into (("data", 2), ("fsdp", 4))."""
    axes = []
    for item in text.split(","):
        name, separator, size = item.partition("=")
        if not separator or not size.strip().lstrip("-").isdigit():
            raise ValueError(f'invalid mesh {text!r}: write each as "axis=size,axis=size"')
        axes.append((name.strip(), int(size)))
    return tuple(axes)


def load_config(spec: str):
    """Load `path[:variants]` as the binaries do."""
    path, _, variant = spec.partition(":")
    file = ROOT / path
    if not file.is_file():
        raise ValueError(f"config file {path!r} not found (paths are relative to {ROOT})")
    module_spec = importlib.util.spec_from_file_location("benchmark_config", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(variant or None)


def main():
    args = parse_args()
    # Must be set before JAX is imported; ignored when accelerators are present.
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.devices}"
    )
    import jax
    import numpy as np

    from semhash_jax import config_checks, sharding, train, train_state as train_state_lib

    try:
        config = load_config(args.config)
        meshes = [parse_mesh(text) for text in args.meshes.split(";")]
    except ValueError as e:
        raise SystemExit(f"Error: {e}") from None
    config.unlock()
    if args.backbone:
        config.model.backbone = args.backbone
    if args.batch_size:
        config.batch_size = args.batch_size
    if args.dtype:
        config.model.dtype = args.dtype
    config.lock()
    try:
        config_checks.check_config(config, jax.device_count())
    except ValueError as e:
        raise SystemExit(
            f"Error: {e} Here --backbone, --batch_size and --dtype set config.model.backbone, "
            "config.batch_size and config.model.dtype."
        ) from None

    print(
        f"{args.config}: {config.model.backbone} at {config.image_size} px, "
        f"{config.model.dtype}, global batch {config.batch_size}, {config.optimizer.name}, "
        f"{args.num_classes} classes, {args.embedding_dim}-dim class embeddings, "
        f"{jax.device_count()} {jax.devices()[0].platform} devices"
    )
    header = (
        f"{'mesh':<18} {'state MiB':>10} {'arguments':>10} {'outputs':>10} "
        f"{'temporaries':>12} {'total MiB':>10}"
    )
    print(header)
    schedule = train_state_lib.make_schedule(config)
    for text, axes in zip(args.meshes.split(";"), meshes):
        try:
            mesh = sharding.make_mesh(axes)
            sharding.check_batch_size(config.batch_size, mesh)
        except ValueError as e:
            raise SystemExit(f"Error: {e}") from None
        state = train_state_lib.abstract_train_state(
            config, mesh, embedding_dim=args.embedding_dim, schedule=schedule
        )
        step = train.make_train_step(config, state, mesh, args.num_classes, schedule)
        batch_sharding = sharding.batch_sharded(mesh)
        size, channels, batch = config.image_size, config.num_channels, config.batch_size
        batch_spec = {
            "image": jax.ShapeDtypeStruct(
                (batch, size, size, channels), np.float32, sharding=batch_sharding
            ),
            "label": jax.ShapeDtypeStruct((batch,), np.int32, sharding=batch_sharding),
            "id": jax.ShapeDtypeStruct((batch,), np.int32, sharding=batch_sharding),
        }
        replicated = sharding.replicated(mesh)
        embeddings = jax.ShapeDtypeStruct(
            (args.num_classes, args.embedding_dim), np.float32, sharding=replicated
        )
        key_shape = jax.eval_shape(lambda: jax.random.key(0))
        key = jax.ShapeDtypeStruct(key_shape.shape, key_shape.dtype, sharding=replicated)
        compiled = step.lower(state.state, batch_spec, embeddings, key).compile()
        sizes = train.memory_per_device(compiled)
        # Bytes of this device's shards of the parameters and optimizer state.
        state_bytes = sum(
            np.prod(leaf.sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
            for leaf in jax.tree.leaves(state.state)
        )
        mib = 2**20
        print(
            f"{text:<18} {state_bytes / mib:>10.1f} {sizes['arguments'] / mib:>10.1f} "
            f"{sizes['outputs'] / mib:>10.1f} {sizes['temporaries'] / mib:>12.1f} "
            f"{sizes['total'] / mib:>10.1f}"
        )


if __name__ == "__main__":
    main()
