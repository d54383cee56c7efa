"""Model and optimizer state: the schedule, the optimizer, and sharded creation."""

import dataclasses

from flax import nnx
import jax
import optax

from semhash_jax import sharding
from semhash_jax.models import hash_nets, pretrained


def make_schedule(config) -> optax.Schedule:
    """Linear warmup to the peak learning rate, then cosine decay to zero."""
    opt = config.optimizer
    warmup = min(opt.warmup_steps, config.num_train_steps)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=opt.learning_rate,
        warmup_steps=warmup,
        decay_steps=config.num_train_steps,
        end_value=0.0,
    )


def make_optimizer(config, schedule: optax.Schedule) -> optax.GradientTransformation:
    opt = config.optimizer
    if opt.name == "adam":
        return optax.adamw(schedule, weight_decay=opt.weight_decay)
    if opt.name == "sgd":
        return optax.chain(
            optax.add_decayed_weights(opt.weight_decay),
            optax.sgd(schedule, momentum=0.9),
        )
    raise ValueError(f"Unknown config.optimizer.name={opt.name!r}. Set it to 'adam' or 'sgd'.")


@dataclasses.dataclass
class TrainState:
    """The nnx graph definition, the state arrays and their shardings."""

    graphdef: nnx.GraphDef
    state: nnx.State
    sharding: nnx.State


def load_pretrained_backbone(train_state: TrainState, config) -> nnx.State:
    """Return the state with the backbone weights of config.model.pretrained, resharded."""
    pure = nnx.to_pure_dict(train_state.state)
    model = pure[0]
    backbone = jax.device_get(model["visual"]["backbone"])
    model["visual"]["backbone"] = pretrained.load_resnet(
        config.model.pretrained, config.model.backbone, backbone
    )
    state = jax.tree.map(lambda x: x, train_state.state)
    nnx.replace_by_pure_dict(state, pure)
    return sharding.put(state, train_state.sharding)


def _builder(config, embedding_dim: int, num_classes: int | None, schedule: optax.Schedule):
    """Return a function of a PRNG key that builds the model and its optimizer."""
    tx = make_optimizer(config, schedule)
    method = config.get("method", "semantic_hash")
    if method != "semantic_hash" and num_classes is None:
        raise ValueError(f"config.method={method!r} needs the number of classes.")

    def build(key):
        model = hash_nets.create_model(
            config.model,
            bits=config.bits,
            in_channels=config.num_channels,
            embedding_dim=embedding_dim,
            rngs=nnx.Rngs(key),
            method=method,
            num_classes=num_classes,
            seed=config.seed,
        )
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        return model, optimizer

    return build


def abstract_train_state(
    config,
    mesh,
    *,
    embedding_dim: int,
    schedule: optax.Schedule,
    num_classes: int | None = None,
) -> TrainState:
    """Return the train state's structure: shapes, dtypes and shardings, no arrays.

    Its `state` contains `jax.ShapeDtypeStruct`s with their shardings, enough to
    lower and compile the train step, e.g. for its memory analysis. `num_classes`,
    the classes trained on, sizes the class tables of the baselines
    (`config.method` other than semantic_hash).
    """
    build = _builder(config, embedding_dim, num_classes, schedule)
    key = jax.random.key(config.seed)
    graphdef, shapes = nnx.split(nnx.eval_shape(lambda: build(key)))
    shardings = sharding.state_sharding(mesh, shapes, min_size=config.get("fsdp_min_size", 1))
    state = jax.tree.map(
        lambda leaf, target: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=target),
        shapes,
        shardings,
    )
    return TrainState(graphdef, state, shardings)


def create_train_state(
    config,
    mesh,
    *,
    embedding_dim: int,
    schedule: optax.Schedule,
    num_classes: int | None = None,
) -> TrainState:
    """Create model and optimizer state directly on the mesh.

    Arrays are replicated over the data axis and, with an fsdp axis in the mesh,
    split over it (`sharding.state_sharding`). The shapes come from
    `nnx.eval_shape`, so nothing is materialised on the host before the jitted
    init writes the arrays with their final sharding.
    """
    build = _builder(config, embedding_dim, num_classes, schedule)
    abstract = abstract_train_state(
        config, mesh, embedding_dim=embedding_dim, schedule=schedule, num_classes=num_classes
    )
    init = jax.jit(lambda k: nnx.split(build(k))[1], out_shardings=abstract.sharding)
    return TrainState(abstract.graphdef, init(jax.random.key(config.seed)), abstract.sharding)
