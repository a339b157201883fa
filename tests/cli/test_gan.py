"""GAN training: one step against a torch.autograd reference of the DCGAN recipe, samples
in TensorBoard, bit-exact resume after a kill, generate/predict/export of the generator,
and the config rules."""

import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from dltrain.engine import checkpoint as ck
from dltrain.engine.model import compile_model
from dltrain.export import export_checkpoint
from dltrain.run.train import train_run
from dltrain.spec import load
from tests.cli.helpers import ROOT, dltrain, dltrain_here

TINY = """\
name: tiny_gan
task: gan
seed: 3
data: {{train: {{type: npz, path: real.npz}}}}
model:
  input_shape: [3]
  layers:
    - {{type: Dense, units: 5, activation: tanh}}
    - {{type: Dense, units: 6}}
gan:
  discriminator:
    input_shape: [6]
    layers:
      - {{type: Dense, units: 4, activation: relu}}
      - {{type: Dense, units: 1{d_act}}}
  label_smoothing: 0.1
loss: binary_crossentropy
optimizer: {{type: sgd, learning_rate: 0.1}}
train: {{epochs: 1, batch_size: 8, shuffle: false}}
logging: {{tensorboard: false}}
"""


def _reference_step(spec, real):
    """One D step then one G step in torch.autograd with the same initial weights."""
    g = compile_model(spec.model, seed=spec.seed)
    d = compile_model(spec.gan.discriminator, seed=spec.seed + 1)
    gw = [p.data.clone().requires_grad_() for _, p in g.named_parameters()]
    dw = [p.data.clone().requires_grad_() for _, p in d.named_parameters()]
    z = torch.randn((len(real), 3), generator=torch.Generator().manual_seed(spec.seed + 41))
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def G(z):
        return torch.tanh(z @ gw[0].T + gw[1]) @ gw[2].T + gw[3]

    def D(x):
        return torch.relu(x @ dw[0].T + dw[1]) @ dw[2].T + dw[3]

    fake = G(z)
    d_loss = bce(D(real), torch.full((len(real), 1), 0.9)) + bce(
        D(fake.detach()), torch.zeros(len(real), 1)
    )
    grads = torch.autograd.grad(d_loss, dw)
    with torch.no_grad():
        for p, gr in zip(dw, grads):
            p -= 0.1 * gr
    g_loss = bce(D(fake), torch.ones(len(real), 1))
    grads = torch.autograd.grad(g_loss, gw)
    with torch.no_grad():
        for p, gr in zip(gw, grads):
            p -= 0.1 * gr
    return [p.detach() for p in gw], [p.detach() for p in dw]


@pytest.mark.parametrize("d_act", ["", ", activation: sigmoid"])
def test_one_step_matches_autograd(tmp_path, d_act):
    real = np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32)
    np.savez(tmp_path / "real.npz", x=real, y=np.zeros(8, np.int64))
    (tmp_path / "c.yaml").write_text(TINY.format(d_act=d_act))
    spec = load(str(tmp_path / "c.yaml"))
    run = train_run(str(tmp_path / "c.yaml"), [], str(tmp_path / "run"), log=lambda m: None)
    last = ck.resolve(run)
    g_ours = ck.read_tensors(last / "model.safetensors")
    d_ours = ck.read_tensors(last / "discriminator.safetensors")
    g_ref, d_ref = _reference_step(spec, torch.from_numpy(real))
    names = ["dense.kernel", "dense.bias", "dense_1.kernel", "dense_1.bias"]
    for name, want in zip(names, g_ref):
        torch.testing.assert_close(g_ours[name], want, rtol=1e-5, atol=1e-6)
    for name, want in zip(names, d_ref):
        torch.testing.assert_close(d_ours[name], want, rtol=1e-5, atol=1e-6)


CFG = ROOT / "configs" / "dcgan_digits.yaml"
OVER = [
    "--set",
    "train.epochs=2",
    "--set",
    "checkpoint.every_steps=7",
    "--set",
    "train.log_every_steps=5",
]


def _final(run):
    last = run / "checkpoints" / ck.list_checkpoints(run / "checkpoints")[-1]
    names = (
        "model.safetensors",
        "optimizer.safetensors",
        "discriminator.safetensors",
        "discriminator_optimizer.safetensors",
        "trainer.safetensors",
    )
    return {f: (last / f).read_bytes() for f in names}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run = tmp_path_factory.mktemp("gan") / "ref"
    res = dltrain(
        "train", str(CFG), "-q", "--run-dir", str(run), *OVER, env={"DLTRAIN_THREADS": "1"}
    )
    assert res.returncode == 0, res.stderr
    return run


def test_samples_reach_tensorboard(reference):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(reference / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    assert len(acc.Images("samples/generated")) == 2
    tags = acc.Tags()["scalars"]
    assert {"epoch/d_loss", "epoch/g_loss", "epoch/d_real", "epoch/d_fake"} <= set(tags)


def test_kill_during_a_save_then_resume_is_bit_exact(tmp_path, reference):
    run = tmp_path / "killed"
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        DLTRAIN_THREADS="1",
        DLTRAIN_TEST_FAULT="rename:kill",
        DLTRAIN_TEST_FAULT_SKIP="2",
    )
    cmd = [
        sys.executable,
        "-m",
        "dltrain",
        "train",
        str(CFG),
        "-q",
        "--run-dir",
        str(run),
        "--resume",
        *OVER,
    ]
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == -9
    env.pop("DLTRAIN_TEST_FAULT")
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert _final(run) == _final(reference)


def test_generate_predict_and_export_use_the_generator(tmp_path, reference):
    res = dltrain("generate", str(reference), "-o", str(tmp_path / "s.npy"), "-n", "5")
    assert res.returncode == 0, res.stderr
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (5, 8, 8, 1) and np.abs(samples).max() <= 1.0
    assert dltrain("generate", str(reference), "-o", str(tmp_path / "s.png")).returncode == 0
    z = np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    res = dltrain(
        "predict", str(reference), "-i", str(tmp_path / "z.npy"), "-o", str(tmp_path / "p.npy")
    )
    assert res.returncode == 0, res.stderr
    ours = np.load(tmp_path / "p.npy")
    export_checkpoint(str(reference), "onnx", str(tmp_path / "g.onnx"))
    theirs = ort.InferenceSession(str(tmp_path / "g.onnx")).run(None, {"input": z})[0]
    np.testing.assert_allclose(theirs, ours, atol=1e-5)
    res = dltrain("evaluate", str(reference))
    assert res.returncode == 2 and "a GAN has no labels" in res.stderr


@pytest.mark.parametrize(
    "change,message",
    [
        ("loss=mse", "task: gan trains with loss: binary_crossentropy"),
        ("data.validation_split=0.1", "no validation data"),
        ("gan.discriminator.input_shape=[7, 8, 1]", "the generator makes [8, 8, 1] samples"),
        ("task=classification", "task: gan and a `gan` section"),
    ],
)
def test_config_rules(tmp_path, change, message):
    res = dltrain_here("validate", str(CFG), "--set", change)
    if res.returncode == 0:  # validate checks the spec; shapes are checked by train
        res = dltrain("train", str(CFG), "-q", "--set", change, "--run-dir", str(tmp_path))
    assert res.returncode == 2 and message in res.stderr, res.stderr
