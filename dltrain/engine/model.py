"""Compile a ModelSpec into a layer graph on the engine; run it; count and move weights."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..spec import ModelSpec
from ..spec.errors import Issue, SpecError, suggest
from ..spec.names import default_names, legacy_names
from . import layers as _layers  # noqa: F401  (registers every layer type)
from .layers.base import (
    LAYERS,
    BuildContext,
    Layer,
    RunContext,
    Shape,
    ShapeError,
    apply_activation,
    engine_shape,
    keras_shape,
)
from .precision import compute_dtype, full
from .tensor import Tensor

FINAL_PROBABILITY_ACTIVATIONS = ("softmax", "sigmoid")


@dataclass
class Node:
    layer: Layer
    inputs: list[int]  # indices into the value list; 0 is the model input


class Model:
    """A static graph of layers: nodes in file order, each reading earlier values."""

    def __init__(self, spec: ModelSpec, nodes: list[Node], input_shape: Shape) -> None:
        self.spec = spec
        self.nodes = nodes
        self.input_shape = input_shape  # engine layout, per sample
        self.output_shape = nodes[-1].layer.output_shape
        self.final_activation = nodes[-1].layer.activation
        self._plan_inplace()

    def _plan_inplace(self) -> None:
        """Static planning: an activation layer may overwrite its input when that input is
        read by nothing else and its producer's backward never reads its own output."""
        readers = [0] * (len(self.nodes) + 1)
        for node in self.nodes:
            for j in node.inputs:
                readers[j] += 1
        readers[-1] += 1  # the model output is read by the caller
        for node in self.nodes:
            node.layer.inplace = False
            if not node.layer.may_run_inplace or len(node.inputs) != 1:
                continue
            j = node.inputs[0]
            if j > 0 and readers[j] == 1 and self.nodes[j - 1].layer.output_unsaved:
                node.layer.inplace = True

    # -- running ----------------------------------------------------------------------------
    def __call__(self, x: Tensor, run: RunContext | None = None, logits: bool = False) -> Tensor:
        """Forward pass. With logits=True a final softmax/sigmoid is left out."""
        run = run or RunContext()
        if x.ndim == 4 and not x.data.is_contiguous(memory_format=torch.channels_last):
            # layout planning: images live channels-last in memory (NCHW logically); oneDNN's
            # convolutions and pooling run several times faster on it on CPU
            x = Tensor(x.data.contiguous(memory_format=torch.channels_last))
        values: list[Tensor | None] = [x]
        masks: list[torch.Tensor | None] = [None]  # padding masks (mask_zero), per value
        last = len(self.nodes) - 1
        for i, node in enumerate(self.nodes):
            xs = [values[j] for j in node.inputs]
            run.mask = masks[node.inputs[0]]
            run.input_masks = [masks[j] for j in node.inputs]
            if (
                i == last
                and self.final_activation in FINAL_PROBABILITY_ACTIVATIONS
                and (logits or compute_dtype() is not None)
            ):  # under autocast the final softmax/sigmoid runs in float32 (as Keras advises)
                out = full(node.layer.pre_activation(xs, run))  # type: ignore[arg-type]
                values.append(out if logits else self.probabilities(out))
            elif i == last:  # the model's output is float32 under autocast
                values.append(full(node.layer.forward(xs, run)))  # type: ignore[arg-type]
            else:
                values.append(node.layer.forward(xs, run))  # type: ignore[arg-type]
            masks.append(node.layer.output_mask(xs, run.mask))  # type: ignore[arg-type]
        run.mask = run.input_masks = None
        return values[-1]  # type: ignore[return-value]

    def probabilities(self, logits: Tensor) -> Tensor:
        """Apply the final activation that `logits=True` left out."""
        if self.final_activation in FINAL_PROBABILITY_ACTIVATIONS:
            return apply_activation(self.final_activation, logits)
        return logits

    # -- weights ----------------------------------------------------------------------------
    @property
    def layers(self) -> list[Layer]:
        return [n.layer for n in self.nodes]

    def named_parameters(self) -> Iterator[tuple[str, Tensor]]:
        for layer in self.layers:
            for k, p in layer.params.items():
                yield f"{layer.name}.{k}", p

    def parameters(self, trainable_only: bool = False) -> list[Tensor]:
        return [p for _, p in self.named_parameters() if p.requires_grad or not trainable_only]

    def named_buffers(self) -> Iterator[tuple[str, torch.Tensor]]:
        for layer in self.layers:
            for k, b in layer.buffers.items():
                yield f"{layer.name}.{k}", b

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every weight and buffer by name (for safetensors)."""
        out = {k: p.data for k, p in self.named_parameters()}
        out.update(dict(self.named_buffers()))
        return out

    def upgrade_keys(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Tensors saved under dltrain 0.1's default layer names (dense_1, dense_2 where Keras
        says dense, dense_1), renamed; any other set of names is returned as it is."""
        own = self.state_tensors()
        if set(tensors) == set(own):
            return tensors
        rename = dict(zip(legacy_names(self.spec.layers), default_names(self.spec.layers)))

        def new(key: str) -> str:
            layer, dot, rest = key.partition(".")
            return rename.get(layer, layer) + dot + rest

        renamed = {new(k): t for k, t in tensors.items()}
        return renamed if set(renamed) == set(own) else tensors

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], strict: bool = True) -> None:
        tensors = self.upgrade_keys(tensors)
        own = self.state_tensors()
        missing = sorted(set(own) - set(tensors))
        unexpected = sorted(set(tensors) - set(own))
        if strict and (missing or unexpected):
            raise ValueError(
                f"weights do not match the model: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
        for k, t in tensors.items():
            if k in own:
                if own[k].shape != t.shape:
                    raise ValueError(
                        f"weight '{k}' has shape {tuple(t.shape)}, the model "
                        f"needs {tuple(own[k].shape)}"
                    )
                own[k].copy_(t)

    def param_counts(self) -> tuple[int, int]:
        """(trainable, non-trainable); buffers such as BN statistics count as non-trainable,
        as in Keras."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in self.parameters() if not p.requires_grad)
        frozen += sum(b.numel() for _, b in self.named_buffers())
        return trainable, frozen


def compile_model(
    spec: ModelSpec,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Model:
    """Build the layer graph with shapes inferred layer by layer; weights seeded by `seed`.

    Errors name the layer (index, name, type), its place in the file and the shapes."""
    source = spec._source
    ctx = BuildContext(
        torch.Generator(device="cpu").manual_seed(seed),
        dtype,
        "meta" if str(device) == "meta" else "cpu",
    )
    names: dict[str, int] = {"input": 0}
    shapes: list[Shape] = [engine_shape(tuple(spec.input_shape))]
    nodes: list[Node] = []
    issues: list[Issue] = []
    layer_names = default_names(spec.layers)
    for i, lspec in enumerate(spec.layers):
        name = layer_names[i]
        where = source.loc(("layers", i)) if source else None
        label = f"layer {i} '{name}' ({lspec.type})"
        cls = LAYERS[lspec.type]
        if lspec.inputs is None:
            inputs = [len(nodes)]
        else:
            inputs = []
            for j, ref in enumerate(lspec.inputs):
                if ref not in names:
                    later = any(ls.name == ref for ls in spec.layers[i:])
                    hint = (
                        " (it comes later; layers may only read earlier ones)"
                        if later
                        else suggest(ref, names)
                    )
                    issues.append(
                        Issue(
                            source.loc(("layers", i, "inputs", j)) if source else None,
                            f"{label}: inputs names '{ref}', which is not a layer before it{hint}",
                        )
                    )
                inputs.append(names.get(ref, 0))
        if cls.n_inputs == 1 and len(inputs) != 1:
            issues.append(Issue(where, f"{label} takes one input, got {len(inputs)}"))
            continue
        if cls.n_inputs == -1 and not 1 <= len(inputs) <= 3:
            issues.append(Issue(where, f"{label} takes one to three inputs, got {len(inputs)}"))
            continue
        if cls.n_inputs == 0 and len(inputs) < 2:
            issues.append(Issue(where, f"{label} merges two or more inputs; list them in `inputs`"))
            continue
        if not cls.passes_gradient and inputs != [0] and any(nd.layer.params for nd in nodes):
            issues.append(
                Issue(
                    where,
                    f"{label} passes no gradient to its input, so the layers with weights "
                    "before it would not train; put it first (it reads the model's input)",
                )
            )
        layer = cls(lspec, name)
        in_shapes = [shapes[j] for j in inputs]
        layer.input_shapes = in_shapes
        try:
            out = layer.build(in_shapes, ctx)
        except ShapeError as e:
            got = ", ".join(str(keras_shape(s)) for s in in_shapes)
            issues.append(Issue(where, f"{label}: {e} (input shape {got})"))
            break  # later shapes would only repeat the problem
        layer.output_shape = out
        names[name] = len(nodes) + 1
        shapes.append(out)
        nodes.append(Node(layer, inputs))
    if issues:
        raise SpecError(issues)
    model = Model(spec, nodes, shapes[0])
    if str(device) not in ("cpu", "meta"):
        to_device(model, device)
    return model


def to_device(model: Model, device: torch.device | str) -> None:
    for _, p in model.named_parameters():
        p.data = p.data.to(device)
    for layer in model.layers:
        for k, b in layer.buffers.items():
            layer.buffers[k] = b.to(device)
