"""The run spec: every section of a config file, validated by pydantic v2.

Unknown keys are errors; every union is discriminated on `type`. Keras shorthands
(`optimizer: adam`, `loss: categorical_crossentropy`, `metrics: [accuracy]`) are expanded
to `{type: ...}` by the loader before validation.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from .base import Spec
from .data import DataSpec, Source  # noqa: F401  (re-exported)
from .layers import LayerSpec, PosInt
from .limits import MAX_SEED


# -- loss, optimizer, schedule, metrics --------------------------------------------------------
class _Loss(Spec):
    pass


class CategoricalCrossentropy(_Loss):
    type: Literal["categorical_crossentropy"] = Field(description="Cross-entropy over classes.")
    from_logits: bool = Field(False, description="Model outputs are logits, not probabilities.")
    label_smoothing: float = Field(0.0, ge=0, le=1, description="Label smoothing.")


class SparseCategoricalCrossentropy(_Loss):
    type: Literal["sparse_categorical_crossentropy"] = Field(
        description="Cross-entropy with integer labels."
    )
    from_logits: bool = Field(False, description="Model outputs are logits.")


class BinaryCrossentropy(_Loss):
    type: Literal["binary_crossentropy"] = Field(description="Binary cross-entropy.")
    from_logits: bool = Field(False, description="Model outputs are logits.")
    label_smoothing: float = Field(0.0, ge=0, le=1, description="Label smoothing.")


class MeanSquaredError(_Loss):
    type: Literal["mean_squared_error"] = Field(description="Mean squared error.")


class MeanAbsoluteError(_Loss):
    type: Literal["mean_absolute_error"] = Field(description="Mean absolute error.")


class Huber(_Loss):
    type: Literal["huber"] = Field(description="Huber loss.")
    delta: float = Field(1.0, gt=0, description="Where the loss turns linear.")


class KLDivergence(_Loss):
    type: Literal["kl_divergence"] = Field(
        description="KL divergence of predicted from true distributions."
    )


LossSpec = Annotated[
    Union[
        CategoricalCrossentropy,
        SparseCategoricalCrossentropy,
        BinaryCrossentropy,
        MeanSquaredError,
        MeanAbsoluteError,
        Huber,
        KLDivergence,
    ],
    Field(discriminator="type"),
]
LOSS_ALIASES = {
    "mse": "mean_squared_error",
    "mae": "mean_absolute_error",
    "kld": "kl_divergence",
    "crossentropy": "categorical_crossentropy",
}


class _Warmup(Spec):
    warmup_steps: Annotated[int, Field(ge=0)] = Field(
        0, description="Linear warmup from 0 over this many steps."
    )


class ConstantSchedule(_Warmup):
    type: Literal["constant"] = Field(description="Constant learning rate.")


class StepSchedule(_Warmup):
    type: Literal["step"] = Field(description="Multiply by gamma every step_size epochs.")
    step_size: PosInt = Field(description="Epochs between decays.")
    gamma: float = Field(0.1, gt=0, description="Decay factor.")


class ExponentialSchedule(_Warmup):
    type: Literal["exponential"] = Field(description="lr * decay_rate^(step / decay_steps).")
    decay_steps: PosInt = Field(description="Steps per decay_rate factor.")
    decay_rate: float = Field(gt=0, description="Decay factor.")
    staircase: bool = Field(False, description="Decay in whole steps.")


class CosineSchedule(_Warmup):
    type: Literal["cosine"] = Field(description="Cosine decay after a linear warmup.")
    decay_steps: PosInt | None = Field(
        None, description="Steps of the cosine; default: all training steps after warmup."
    )
    alpha: float = Field(0.0, ge=0, le=1, description="Final lr as a fraction of the initial one.")


class ReduceOnPlateauSchedule(_Warmup):
    type: Literal["reduce_on_plateau"] = Field(description="Cut the lr when a metric stalls.")
    monitor: str = Field("val_loss", description="Metric watched at each epoch end.")
    factor: float = Field(0.1, gt=0, lt=1, description="Multiply lr by this on a plateau.")
    patience: Annotated[int, Field(ge=0)] = Field(
        10, description="Epochs without progress before a cut."
    )
    min_delta: float = Field(1e-4, ge=0, description="Smallest change counted as progress.")
    mode: Literal["auto", "min", "max"] = Field(
        "auto", description="Whether lower or higher is better; auto infers from the name."
    )
    cooldown: Annotated[int, Field(ge=0)] = Field(0, description="Epochs to wait after a cut.")
    min_lr: float = Field(0.0, ge=0, description="Lower bound of the lr.")


ScheduleSpec = Annotated[
    Union[
        ConstantSchedule, StepSchedule, ExponentialSchedule, CosineSchedule, ReduceOnPlateauSchedule
    ],
    Field(discriminator="type"),
]


class _Optimizer(Spec):
    learning_rate: float = Field(1e-3, gt=0, description="Learning rate.")
    weight_decay: float = Field(
        0.0, ge=0, description="Weight decay (L2 in the gradient; decoupled for adamw)."
    )
    clipnorm: float | None = Field(None, gt=0, description="Clip the global gradient norm.")
    clipvalue: float | None = Field(None, gt=0, description="Clip each gradient value.")
    schedule: ScheduleSpec | None = Field(None, description="Learning-rate schedule.")


class SGDSpec(_Optimizer):
    type: Literal["sgd"] = Field(description="Stochastic gradient descent.")
    learning_rate: float = Field(0.01, gt=0, description="Learning rate.")
    momentum: float = Field(0.0, ge=0, lt=1, description="Momentum.")
    nesterov: bool = Field(False, description="Nesterov momentum.")


class AdamSpec(_Optimizer):
    type: Literal["adam"] = Field(description="Adam.")
    beta_1: float = Field(0.9, ge=0, lt=1, description="Decay of the first moment.")
    beta_2: float = Field(0.999, ge=0, lt=1, description="Decay of the second moment.")
    epsilon: float = Field(1e-7, gt=0, description="Added to the denominator.")
    amsgrad: bool = Field(False, description="AMSGrad variant.")


class AdamWSpec(AdamSpec):
    type: Literal["adamw"] = Field(description="Adam with decoupled weight decay.")  # type: ignore
    weight_decay: float = Field(0.004, ge=0, description="Decoupled weight decay.")


class RMSpropSpec(_Optimizer):
    type: Literal["rmsprop"] = Field(description="RMSprop.")
    rho: float = Field(0.9, ge=0, lt=1, description="Decay of the squared-gradient average.")
    momentum: float = Field(0.0, ge=0, lt=1, description="Momentum.")
    epsilon: float = Field(1e-7, gt=0, description="Added to the denominator.")
    centered: bool = Field(False, description="Normalise by the gradient's variance.")


class AdagradSpec(_Optimizer):
    type: Literal["adagrad"] = Field(description="Adagrad.")
    initial_accumulator_value: float = Field(0.1, ge=0, description="Starting accumulator.")
    epsilon: float = Field(1e-7, gt=0, description="Added to the denominator.")


OptimizerSpec = Annotated[
    Union[SGDSpec, AdamSpec, AdamWSpec, RMSpropSpec, AdagradSpec], Field(discriminator="type")
]


class _Metric(Spec):
    pass


class AccuracySpec(_Metric):
    type: Literal["accuracy"] = Field(description="Fraction of correct predictions.")


class TopKAccuracySpec(_Metric):
    type: Literal["top_k_accuracy"] = Field(description="True class among the k best.")
    k: PosInt = Field(5, description="k.")


class PrecisionSpec(_Metric):
    type: Literal["precision"] = Field(description="Macro-averaged precision.")


class RecallSpec(_Metric):
    type: Literal["recall"] = Field(description="Macro-averaged recall.")


class F1Spec(_Metric):
    type: Literal["f1"] = Field(description="Macro-averaged F1 score.")


class MSESpec(_Metric):
    type: Literal["mse"] = Field(description="Mean squared error.")


class MAESpec(_Metric):
    type: Literal["mae"] = Field(description="Mean absolute error.")


class PerplexitySpec(_Metric):
    type: Literal["perplexity"] = Field(
        description="exp(mean cross-entropy): a language model's perplexity (KerasHub)."
    )


MetricSpec = Annotated[
    Union[
        AccuracySpec,
        TopKAccuracySpec,
        PrecisionSpec,
        RecallSpec,
        F1Spec,
        MSESpec,
        MAESpec,
        PerplexitySpec,
    ],
    Field(discriminator="type"),
]
METRIC_ALIASES = {
    "acc": "accuracy",
    "top_k_categorical_accuracy": "top_k_accuracy",
    "sparse_top_k_categorical_accuracy": "top_k_accuracy",
    "f1_score": "f1",
    "mean_squared_error": "mse",
    "mean_absolute_error": "mae",
}


# -- training, callbacks, checkpoints, logging -------------------------------------------------
class DistributedSpec(Spec):
    optimizer_sharding: bool = Field(
        False,
        description="ZeRO stage 1: each process keeps and updates 1/N of the optimizer state "
        "(reduce-scatter the gradients, all-gather the parameters). Checkpoints are the same.",
    )
    check_every_steps: Annotated[int, Field(ge=0)] = Field(
        0,
        description="Compare a checksum of the weights and optimizer state across processes "
        "every N steps and stop with an error if they differ (0: never; a debugging aid).",
    )
    timeout_seconds: PosInt = Field(
        300, description="How long a collective waits for a process that does not answer."
    )


class TrainSpec(Spec):
    epochs: PosInt = Field(10, description="Passes over the training data.")
    batch_size: PosInt = Field(32, description="Samples per optimizer step (before accumulation).")
    shuffle: bool = Field(True, description="Reshuffle the training data each epoch.")
    gradient_accumulation_steps: PosInt = Field(
        1, description="Micro-batches summed per optimizer step."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where to train; auto picks cuda when available."
    )
    log_every_steps: PosInt = Field(
        10, description="Steps between logged losses (device values are read only then)."
    )
    steps_per_epoch: PosInt | None = Field(
        None,
        description="Optimizer steps per epoch (Keras's fit argument); default: one pass "
        "over the training data. Fewer steps take the start of each epoch's shuffled order "
        "(quick checks, smoke tests).",
    )
    sync_batch_norm: bool = Field(
        False,
        description="With several processes, BatchNormalization normalises with the statistics "
        "of the whole global batch (as one process would); default: each process's own slice.",
    )
    distributed: DistributedSpec = Field(
        default_factory=DistributedSpec,
        description="Data-parallel settings (dltrain train --nproc N, or torchrun).",
    )
    precision: Literal["fp32", "bf16-mixed", "fp16-mixed"] = Field(
        "fp32",
        description="Arithmetic of the step. bf16-mixed: matrix products, convolutions and "
        "oneDNN's LSTM in bfloat16; losses, softmax, reductions, normalisation statistics, the "
        "weights and the optimizer in float32 (Keras's mixed_bfloat16, Lightning's "
        "'bf16-mixed'). fp16-mixed: the same in float16 with dynamic loss scaling (for GPUs "
        "without bfloat16; slow on CPU). Checkpoints stay float32.",
    )


class EarlyStoppingSpec(Spec):
    type: Literal["early_stopping"] = Field(description="Stop when a metric stops improving.")
    monitor: str = Field("val_loss", description="Metric to watch.")
    patience: Annotated[int, Field(ge=0)] = Field(
        5, description="Epochs without progress before stopping."
    )
    min_delta: float = Field(0.0, ge=0, description="Smallest change counted as progress.")
    mode: Literal["auto", "min", "max"] = Field(
        "auto", description="Lower or higher is better; auto infers from the name."
    )
    restore_best_weights: bool = Field(
        False, description="Restore the best epoch's weights at the end."
    )


CallbackSpec = Annotated[Union[EarlyStoppingSpec], Field(discriminator="type")]


class CheckpointSpec(Spec):
    every_epochs: Annotated[int, Field(ge=0)] = Field(
        1, description="Save every N epochs (0: never by epoch)."
    )
    every_steps: Annotated[int, Field(ge=0)] = Field(
        0, description="Save every N optimizer steps (0: never by step)."
    )
    keep_last: PosInt = Field(3, description="Checkpoints kept (the best is always kept).")
    save_best: bool = Field(True, description="Keep the checkpoint best on `monitor`.")
    monitor: str = Field("val_loss", description="Metric deciding the best checkpoint.")
    mode: Literal["auto", "min", "max"] = Field("auto", description="Lower or higher is better.")


class LoggingSpec(Spec):
    tensorboard: bool = Field(True, description="Write TensorBoard event files.")
    histograms: bool = Field(True, description="Weight and gradient histograms each epoch.")
    images: bool = Field(True, description="Sample grid and confusion matrix for image data.")


class BlockSpec(Spec):
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Parameters and their defaults; layers refer to them as '${name}'.",
    )
    layers: list[dict[str, Any]] = Field(
        min_length=1,
        description="The block's layers; inputs: [block_input] reads what the block reads.",
    )
    description: str | None = Field(None, description="What the block is.")
    scoped: bool = Field(
        True,
        description="Prefix the names of the block's layers with the instance's name "
        "(block/layer), so the block can be used many times. false: the layers keep the "
        "names the block gives them (Keras applications' names), prefixed only when the "
        "instance has a `name:`.",
    )


class LoadWeightsSpec(Spec):
    path: str = Field(
        description="Where the weights come from, relative to the config file: a run "
        "directory (its best checkpoint, else the newest), a checkpoint, an exported bundle "
        "a .safetensors file with weights named <layer>.<weight>, or a Keras weights file "
        "(Keras 3 .weights.h5 or .keras, Keras 2 .h5) matched by layer name."
    )
    layers: list[str] | None = Field(
        None, description="Layers to load; default every layer whose name is in the file."
    )
    skip_mismatch: bool = Field(
        False, description="Skip layers whose weight shapes differ instead of failing (Keras)."
    )
    strict: bool = Field(
        False,
        description="Every layer with weights must load and every entry of the file must be "
        "used (as torch's load_state_dict(strict=True)); otherwise both are reported.",
    )


class ModelSpec(Spec):
    input_shape: list[PosInt] = Field(
        min_length=1,
        description="Shape of one sample, channels-last as in Keras (e.g. [28, 28, 1]).",
    )
    input_dtype: Literal["float32", "int64"] = Field(
        "float32", description="int64 for token ids (Embedding)."
    )
    blocks: dict[str, BlockSpec] = Field(
        default_factory=dict,
        description="Reusable blocks; use one with {type: Block, use: NAME, repeat: N}.",
    )
    layers: list[LayerSpec] = Field(min_length=1, description="The layers, in order.")
    load_weights: LoadWeightsSpec | None = Field(
        None,
        description="Start from trained weights matched by layer name (transfer learning; "
        "freeze layers with trainable: false). Resuming a run ignores it.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> ModelSpec:
        seen: set[str] = set()
        for layer in self.layers:
            if layer.name is not None:
                if layer.name in seen or layer.name == "input":
                    raise ValueError(
                        f"layer name '{layer.name}' is used twice (or is the reserved name "
                        "'input'); a block used twice needs a `name:` on each use (a prefix)"
                    )
                seen.add(layer.name)
        return self


class GanSpec(Spec):
    discriminator: ModelSpec = Field(
        description="The discriminator: the generator's output shape in, one logit out "
        "(a last Dense(1) without activation, or with sigmoid)."
    )
    discriminator_optimizer: OptimizerSpec | None = Field(
        None, description="The discriminator's optimizer; default a copy of `optimizer`."
    )
    label_smoothing: float = Field(
        0.0,
        ge=0,
        lt=0.5,
        description="One-sided label smoothing: real images count as "
        "1 - label_smoothing for the discriminator.",
    )
    samples: PosInt = Field(
        16, description="Images generated from fixed noise into TensorBoard each epoch."
    )


class RunSpec(Spec):
    extends: str | list[str] | None = Field(
        None, description="Base config(s) this one edits: mappings merge, lists are replaced."
    )
    name: str = Field("run", description="Run name; the run directory is runs/<name>.")
    seed: int = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description="Seed of every random choice (init, shuffling, dropout); 0 to 2**64 - 1.",
    )
    task: Literal["classification", "regression", "gan"] = Field(
        "classification",
        description="What is learnt: classes, values, or (gan) a generator of data like "
        "data.train's, trained against the discriminator in `gan`.",
    )
    data: DataSpec = Field(description="Where the data comes from and how it is prepared.")
    model: ModelSpec = Field(description="The network.")
    loss: LossSpec = Field(description="Loss (Keras name or {type: ..., args}).")
    optimizer: OptimizerSpec = Field(description="Optimizer (Keras name or {type: ..., args}).")
    metrics: list[MetricSpec] = Field(default_factory=list, description="Metrics to report.")
    train: TrainSpec = Field(default_factory=TrainSpec, description="Training loop settings.")
    callbacks: list[CallbackSpec] = Field(default_factory=list, description="Callbacks.")
    checkpoint: CheckpointSpec = Field(
        default_factory=CheckpointSpec, description="When to save checkpoints and which to keep."
    )
    logging: LoggingSpec = Field(default_factory=LoggingSpec, description="What to log.")
    gan: GanSpec | None = Field(
        None,
        description="task: gan: the discriminator and how it trains; `model` is the "
        "generator (noise in), `optimizer` its optimizer.",
    )
