"""The model zoo: every block compiles, parameter counts equal the ones Keras prints for the
same architectures, `block_input` wires residual shortcuts, zoo blocks train, and misspelt
names get suggestions."""

import pytest

from dltrain.engine.model import compile_model
from dltrain.run.train import train_run
from dltrain.spec import load_model
from dltrain.spec.errors import SpecError
from dltrain.spec.loader import zoo_blocks
from tests.cli.helpers import dltrain_here

# (block, input shape, params) -> (total, trainable) as keras.applications / the TensorFlow
# tutorials print them
KERAS = {
    "lenet5": ([32, 32, 1], {}, 61_706, 61_706),
    "vgg16": ([224, 224, 3], {}, 138_357_544, 138_357_544),
    "vgg16_features": ([224, 224, 3], {}, 14_714_688, 14_714_688),
    "resnet50": ([224, 224, 3], {}, 25_636_712, 25_583_592),
    "resnet50_features": ([224, 224, 3], {}, 23_587_712, 23_534_592),
    "mobilenet": ([224, 224, 3], {}, 4_253_864, 4_231_976),
    "mobilenet_features": ([224, 224, 3], {}, 3_228_864, 3_206_976),
    "dcgan_generator": ([100], {}, 2_330_944, 2_305_472),
    "dcgan_discriminator": ([28, 28, 1], {}, 212_865, 212_865),
}
SMALL = {  # the rest: they compile with these inputs
    "vgg_stage": [16, 16, 3],
    "resnet_identity": [8, 8, 256],
    "resnet_projection": [8, 8, 64],
    "mobilenet_dw": [8, 8, 32],
    "mobilenet_dw_down": [8, 8, 64],
    "char_lstm": [12],
    "mini_gpt": [12],
    "text_classifier": [12],
}


def model_of(tmp_path, name, shape, params=None):
    args = "".join(f", {k}: {v}" for k, v in (params or {}).items())
    dtype = "\n  input_dtype: int64" if name in ("char_lstm", "mini_gpt", "text_classifier") else ""
    p = tmp_path / f"{name}.yaml"
    p.write_text(
        f"model:\n  input_shape: {shape}{dtype}\n  layers:\n"
        f"    - {{type: Block, use: zoo:{name}{args}}}\n"
    )
    return load_model(str(p))


def test_every_zoo_block_is_checked_here():
    assert {n.removeprefix("zoo:") for n in zoo_blocks()} == set(KERAS) | set(SMALL)
    assert all(b.get("description") for b in zoo_blocks().values())


@pytest.mark.parametrize("name", sorted(KERAS))
def test_parameter_counts_match_keras(tmp_path, name):
    shape, params, total, trainable = KERAS[name]
    model = compile_model(model_of(tmp_path, name, shape, params), device="meta")
    t, frozen = model.param_counts()
    assert (t + frozen, t) == (total, trainable)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_blocks_compile(tmp_path, name):
    compile_model(model_of(tmp_path, name, SMALL[name]), device="meta")


def test_block_input_feeds_the_identity_shortcut(tmp_path):
    spec = model_of(tmp_path, "resnet_identity", [8, 8, 256])
    add = next(layer for layer in spec.layers if layer.type == "Add")
    assert add.inputs == ["input", "resnet_block_3_bn"]  # Keras's names: unscoped, ${id}_...
    p = tmp_path / "two.yaml"
    p.write_text(
        "model:\n  input_shape: [8, 8, 64]\n"
        "  blocks:\n"
        "    res:\n"
        "      layers:\n"
        "        - {type: Dense, units: 64, name: main}\n"
        "        - {type: Add, inputs: [main, block_input]}\n"
        "  layers:\n"
        "    - {type: Conv2D, filters: 64, kernel_size: 1}\n"
        "    - {type: Block, use: res}\n"
        "    - {type: Block, use: res, name: second}\n"
    )
    layers = load_model(str(p)).layers
    adds = [la.inputs for la in layers if la.type == "Add"]
    assert adds[0] == ["res_1/main", "res_1/input"]  # scoped per instance
    assert layers[0].name == "res_1/input"  # named only because a block reads it
    assert adds[1] == ["second/main", layers[2].name]  # the first block's Add


def test_keras_named_blocks_used_twice_need_their_own_ids(tmp_path):
    p = tmp_path / "twice.yaml"
    p.write_text(
        "model:\n  input_shape: [8, 8, 256]\n  layers:\n"
        "    - {type: Block, use: zoo:resnet_identity, id: a}\n"
        "    - {type: Block, use: zoo:resnet_identity, id: b}\n"
    )
    names = [la.name for la in load_model(str(p)).layers]
    assert names[0] == "a_1_conv" and names[-1] == "b_out"
    p.write_text(p.read_text().replace("id: b", "id: a"))
    with pytest.raises(SpecError, match="'a_1_conv' is used twice"):
        load_model(str(p))


def test_misspelt_zoo_name_is_suggested(tmp_path):
    with pytest.raises(SpecError, match="did you mean 'zoo:resnet50'"):
        model_of(tmp_path, "resnet5", [224, 224, 3])


def test_zoo_blocks_train(tmp_path):
    cfg = tmp_path / "lenet.yaml"
    cfg.write_text(
        "data: {train: {type: synthetic, samples: 64, features: 1024, classes: 10}}\n"
        "model:\n  input_shape: [32, 32, 1]\n  layers:\n"
        "    - {type: Block, use: zoo:lenet5, activation: relu}\n"
        "loss: sparse_categorical_crossentropy\noptimizer: adam\n"
        "train: {epochs: 1, batch_size: 16}\nlogging: {tensorboard: false}\n"
    )
    run = train_run(str(cfg), [], str(tmp_path / "run"), log=lambda m: None)
    assert (run / "metrics.jsonl").exists()


def test_zoo_command_lists_the_blocks():
    res = dltrain_here("zoo")
    assert res.returncode == 0 and "zoo:resnet50" in res.stdout
