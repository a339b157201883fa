"""The limits every config, checkpoint and input is held to, in one place.

A small file must never mean unbounded work: a config is read only up to its size limit,
YAML nesting and aliases are bounded before anything is built, the values a document
expands to (aliases repeat what they point at) are counted as they are built, `repeat:`
and blocks cannot multiply layers past a bound, and a model's memory is estimated on the
meta device before any weight is allocated (`dltrain.engine.checks`). README's "What
dltrain promises" lists them.
"""

from __future__ import annotations

MAX_CONFIG_BYTES = 1 << 20  # a config file (and each file it extends)
MAX_YAML_DEPTH = 64  # nested mappings and lists
MAX_YAML_ALIASES = 1000  # uses of *anchor in one file
MAX_YAML_VALUES = 100_000  # values one file expands to, aliases expanded
MAX_REPEAT = 2_000  # `repeat:` of one layer or block
MAX_LAYERS = 2_000  # layers of a model after blocks and repeats expand (ResNet50: 177)
MAX_SEED = 2**64 - 1  # what torch.manual_seed and numpy take
MEMORY_FRACTION = 0.9  # of the machine's memory a model may need for one training step
