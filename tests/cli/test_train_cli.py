"""The main job through the real CLI: train, evaluate --json, predict; accuracy targets."""

import json

import numpy as np
import pytest

from tests.cli.helpers import ROOT, dltrain


@pytest.mark.parametrize(
    "name,target",
    [pytest.param("digits_mlp", 0.975, marks=pytest.mark.slow), ("digits_cnn", 0.985)],
)
def test_digits_reach_their_accuracy(tmp_path, name, target):
    cfg = ROOT / "configs" / f"{name}.yaml"
    res = dltrain("train", str(cfg), "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "epoch 1/" in res.stdout
    res = dltrain("evaluate", f"runs/{name}", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    metrics = json.loads(res.stdout)
    assert metrics["accuracy"] >= target, metrics
    run = tmp_path / "runs" / name
    assert (run / "config.yaml").exists() and (run / "metrics.jsonl").exists()
    assert any((run / "tensorboard").iterdir())
    # predict on raw inputs: the probabilities rows sum to one, labels come out as text
    from sklearn.datasets import load_digits

    d = load_digits()
    np.savez(tmp_path / "x.npz", x=d.images[:20])
    res = dltrain("predict", f"runs/{name}", "--input", "x.npz", "--output", "p.npy", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    p = np.load(tmp_path / "p.npy")
    assert p.shape == (20, 10) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert (p.argmax(1) == d.target[:20]).mean() >= 0.9
    res = dltrain("predict", f"runs/{name}", "-i", "x.npz", "-o", "p.csv", cwd=tmp_path)
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0].startswith("label,p_0") and len(rows) == 21


def test_evaluate_human_report(tmp_path):
    cfg = ROOT / "configs" / "iris.yaml"
    assert dltrain("train", str(cfg), "-q", "--set", "train.epochs=5", cwd=tmp_path).returncode == 0
    res = dltrain("evaluate", "runs/iris", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "per class" in res.stdout and "confusion matrix" in res.stdout
    assert "setosa" in res.stdout


def test_existing_run_needs_resume(tmp_path):
    cfg = ROOT / "configs" / "iris.yaml"
    assert dltrain("train", str(cfg), "-q", "--set", "train.epochs=1", cwd=tmp_path).returncode == 0
    res = dltrain("train", str(cfg), "-q", "--set", "train.epochs=1", cwd=tmp_path)
    assert res.returncode == 2 and "pass --resume" in res.stderr


def test_resume_with_changed_config_lists_changes(tmp_path):
    cfg = ROOT / "configs" / "iris.yaml"
    assert dltrain("train", str(cfg), "-q", "--set", "train.epochs=2", cwd=tmp_path).returncode == 0
    res = dltrain(
        "train",
        str(cfg),
        "-q",
        "--resume",
        "--set",
        "train.epochs=3",
        "--set",
        "optimizer.learning_rate=0.1",
        cwd=tmp_path,
    )
    assert res.returncode == 2
    assert "optimizer.learning_rate: 0.01 -> 0.1" in res.stderr
    assert "train.epochs: 2 -> 3" in res.stderr
    res = dltrain(
        "train",
        str(cfg),
        "-q",
        "--resume",
        "--set",
        "train.epochs=3",
        "--allow-config-change",
        "train.epochs",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    lines = (tmp_path / "runs/iris/metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]


def test_cuda_requested_without_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("has CUDA")
    res = dltrain(
        "train", str(ROOT / "configs/iris.yaml"), "-q", "--set", "train.device=cuda", cwd=tmp_path
    )
    assert res.returncode == 2 and "no CUDA device" in res.stderr
