"""Text sources for language models: tokens, vocabulary, windows, held-out ends, errors
(exit 3 for data, 2 for configs), per-step metrics, and `dltrain generate`."""

import json

import numpy as np
import pytest
import torch

from dltrain.data.prepare import split
from dltrain.data.sources import Dataset
from dltrain.data.text import build_vocabulary, decode, encode, tokenize, windows
from dltrain.engine.train.metrics import MetricState
from dltrain.spec.schema import AccuracySpec, PerplexitySpec, TopKAccuracySpec
from tests.cli.helpers import dltrain, dltrain_here

TEXT = "the cat sat on the mat. the dog sat on the log!\n" * 8

CONFIG = """\
name: lm
data:
  train: {{type: text, path: t.txt, level: {level}, vocabulary_size: {vocab}, stride: 3}}
  validation_split: 0.2
model:
  input_shape: [{steps}]
  input_dtype: {dtype}
  layers:
    - {{type: Embedding, input_dim: {emb}, output_dim: 8}}
    - {{type: GRU, units: 16, return_sequences: {seqs}}}
    - {{type: Dense, units: {units}, activation: softmax}}
loss: sparse_categorical_crossentropy
optimizer: {{type: adam, learning_rate: 0.02}}
metrics: [accuracy]
train: {{epochs: 3, batch_size: 16}}
logging: {{tensorboard: false}}
"""
OK = dict(level="char", vocab=20, steps=12, dtype="int64", emb=20, seqs="true", units=20)


def write(tmp_path, text=TEXT, **kw):
    (tmp_path / "t.txt").write_bytes(text.encode() if isinstance(text, str) else text)
    (tmp_path / "c.yaml").write_text(CONFIG.format(**{**OK, **kw}))


def test_vocabulary_follows_text_vectorization_order():
    toks = tokenize(TEXT, "word")
    assert toks[:6] == ["the", "cat", "sat", "on", "the", "mat"] and "." in toks
    vocab = build_vocabulary(toks, 6)
    assert vocab == ["", "[UNK]", "the", "on", "sat", "!"]  # by count, ties by code point
    ids = encode(["the", "zebra", "on"], vocab)
    assert ids.tolist() == [2, 1, 3]
    assert decode([2, 3, 5, 0], vocab, "word") == "the on!"
    assert (
        decode(
            encode(list("abca"), build_vocabulary(list("abca"), 10)),
            build_vocabulary(list("abca"), 10),
            "char",
        )
        == "abca"
    )
    assert tokenize("AbC", "char", lowercase=True) == ["a", "b", "c"]


def test_windows_predict_the_next_token_at_every_step():
    ids = np.arange(10)
    x, y = windows(ids, 4, 3, "t")
    assert x.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6]]
    assert (y == x + 1).all()


def test_split_holds_out_the_end_without_shared_tokens():
    ids = np.arange(200)
    x, y = windows(ids, 10, 3, "t")
    ds = Dataset(x, y, [], "t", overlap=-(-11 // 3) - 1)
    train, val = split(ds, 0.2, 0, "validation")
    assert train.x.max() < val.x.min()  # contiguous, nothing shared, targets included
    assert train.y.max() < val.x.min()
    assert len(val.x) == round(len(x) * 0.2)


def test_per_step_metrics_count_every_token():
    out = torch.randn(3, 5, 4)  # (N, classes, steps)
    y = torch.randint(0, 5, (3, 4))
    ms = MetricState(
        [
            AccuracySpec(type="accuracy"),
            TopKAccuracySpec(type="top_k_accuracy", k=2),
            PerplexitySpec(type="perplexity"),
        ],
        "classification",
        5,
        "cpu",
    )
    ms.update(torch.tensor(1.5), out, y)
    res = ms.results()
    assert res["perplexity"] == pytest.approx(np.exp(1.5))
    assert res["accuracy"] == pytest.approx((out.argmax(1) == y).float().mean().item())
    top2 = out.topk(2, 1).indices
    assert res["top_2_accuracy"] == pytest.approx((top2 == y[:, None]).any(1).float().mean().item())


def test_train_evaluate_generate(tmp_path):
    write(tmp_path)
    res = dltrain("train", "c.yaml", "-q", "--run-dir", "run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    logs = [json.loads(s) for s in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert logs[-1]["loss"] < logs[0]["loss"]
    ev = dltrain("evaluate", "run", "--data", "validation", "--json", cwd=tmp_path)
    assert 0 <= json.loads(ev.stdout)["accuracy"] <= 1
    gen = [
        dltrain("generate", "run", "--prompt", "the ", "-n", "30", "--seed", s, cwd=tmp_path)
        for s in ("1", "1", "2")
    ]
    assert all(g.returncode == 0 for g in gen), gen[0].stderr
    assert gen[0].stdout == gen[1].stdout and gen[0].stdout.startswith("the ")
    assert len(gen[0].stdout.rstrip("\n")) == 34
    assert set(gen[0].stdout) <= set(TEXT)


def test_greedy_generation_takes_the_model_argmax(tmp_path):
    from dltrain.engine import Tensor
    from dltrain.run.generate import generate_text
    from dltrain.run.inference import load_checkpoint
    from dltrain.run.train import train_run

    write(tmp_path)
    run = train_run(str(tmp_path / "c.yaml"), [], str(tmp_path / "run"), log=lambda m: None)
    loaded = load_checkpoint(run)
    vocab = loaded.pre.classes
    ids = encode(list("the c"), vocab).tolist()
    x = torch.tensor([ids + [0] * (12 - len(ids))])
    probs = loaded.model(Tensor(x)).data[0, :, len(ids) - 1]
    probs[:2] = -1
    want = vocab[int(probs.argmax())]
    assert generate_text(str(run), "the c", 1, temperature=0) == "the c" + want


@pytest.mark.parametrize(
    "text,message",
    [
        (b"  \n", "the text is empty"),
        (b"ok line\nbad \xff byte\n", "t.txt:2: not UTF-8"),
        (b"tiny", "fewer than one window"),
    ],
)
def test_bad_text_exits_3(tmp_path, text, message):
    write(tmp_path, text)
    res = dltrain_here("train", "c.yaml", "-q", cwd=tmp_path)
    assert res.returncode == 3 and message in res.stderr, res.stderr
    assert not (tmp_path / "runs").exists()


def test_perplexity_needs_a_cross_entropy_loss(tmp_path):
    write(tmp_path)
    res = dltrain(
        "validate", "c.yaml", "--set", "metrics=[perplexity]", "--set", "loss=mse", cwd=tmp_path
    )
    assert res.returncode == 2 and "perplexity is exp(cross-entropy)" in res.stderr, res.stderr


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(dtype="float32"), "input_dtype to int64"),
        (dict(seqs="false"), "return_sequences: true"),
        (dict(units=10), "the last layer has 10 units"),
        (dict(emb=10), "embeds 10 token ids"),
    ],
)
def test_config_mismatches_exit_2(tmp_path, kw, message):
    write(tmp_path, **kw)
    res = dltrain_here("train", "c.yaml", "-q", cwd=tmp_path)
    assert res.returncode == 2 and message in res.stderr, res.stderr


def test_generate_refuses_a_model_without_text(tmp_path):
    from tests.cli.helpers import ROOT

    res = dltrain(
        "train",
        str(ROOT / "configs/iris.yaml"),
        "-q",
        "--run-dir",
        "run",
        "--set",
        "train.epochs=1",
        cwd=tmp_path,
    )
    assert res.returncode == 0
    res = dltrain("generate", "run", "--prompt", "x", cwd=tmp_path)
    assert res.returncode == 2 and "not trained on a text source" in res.stderr


# -- text folders: a class per subfolder, one sample per .txt file ----------------------------
FOLDER_CONFIG = """\
name: tf
data:
  train: {{type: text_folder, path: docs, vocabulary_size: 30}}
  test_split: 0.25
model:
  input_shape: [{steps}]
  input_dtype: {dtype}
  layers:
    - {{type: Embedding, input_dim: {emb}, output_dim: 8}}
    - {{type: GRU, units: 8}}
    - {{type: Dense, units: 2, activation: softmax}}
loss: sparse_categorical_crossentropy
optimizer: {{type: adam, learning_rate: 0.03}}
metrics: [accuracy]
train: {{epochs: 12, batch_size: 8}}
logging: {{tensorboard: false}}
"""


def write_folder(tmp_path, steps=8, dtype="int64", emb=30, extra=None):
    rng = np.random.default_rng(0)
    for label, words in (("neg", ["bad", "dull", "awful"]), ("pos", ["good", "fine", "great"])):
        (tmp_path / "docs" / label).mkdir(parents=True, exist_ok=True)
        for i in range(24):
            filler = rng.choice(["the", "a", "film", "it", "was", "very"], 4).tolist()
            doc = filler[:2] + [rng.choice(words)] + filler[2:]
            (tmp_path / "docs" / label / f"{i}.txt").write_text(" ".join(doc))
    for rel, data in (extra or {}).items():
        (tmp_path / "docs" / rel).write_bytes(data)
    (tmp_path / "c.yaml").write_text(FOLDER_CONFIG.format(steps=steps, dtype=dtype, emb=emb))


def test_documents_are_cut_or_padded_after():
    from dltrain.data.text import encode_documents

    vocab = build_vocabulary(tokenize("a b c d", "word"), 10)
    ids = encode_documents(["a b c d", "b"], vocab, 3, "word", False)
    assert ids.tolist() == [
        encode(["a", "b", "c"], vocab).tolist(),
        [encode(["b"], vocab)[0], 0, 0],
    ]


def test_text_folder_trains_and_predicts_text(tmp_path):
    write_folder(tmp_path)
    res = dltrain("train", "c.yaml", "-q", "--run-dir", "run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    ev = json.loads(dltrain("evaluate", "run", "--json", cwd=tmp_path).stdout)
    assert ev["accuracy"] >= 0.9
    (tmp_path / "in.txt").write_text("the film was great\n\nit was awful\n  \n")
    res = dltrain("predict", "run", "-i", "in.txt", "-o", "out.csv", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "read 2 samples from in.txt (skipped 2 blank line(s))" in res.stdout
    labels = [row.split(",")[0] for row in (tmp_path / "out.csv").read_text().split()[1:]]
    assert labels == ["pos", "neg"]
    # the same texts on the command line and on standard input
    from typer.testing import CliRunner

    from dltrain.cli import app

    run, t_csv, s_csv = (str(tmp_path / n) for n in ("run", "t.csv", "s.csv"))
    res2 = CliRunner().invoke(
        app, ["predict", run, "--text", "the film was great", "--text", "it was awful", "-o", t_csv]
    )
    assert res2.exit_code == 0, res2.output
    assert (tmp_path / "t.csv").read_text() == (tmp_path / "out.csv").read_text()
    res2 = CliRunner().invoke(
        app, ["predict", run, "-i", "-", "-o", s_csv], input="the film was great\nit was awful\n"
    )
    assert res2.exit_code == 0 and "from standard input" in res2.output, res2.output
    assert (tmp_path / "s.csv").read_text() == (tmp_path / "out.csv").read_text()
    (tmp_path / "many").mkdir()
    (tmp_path / "many" / "a.txt").write_text("good good")
    res = dltrain("predict", "run", "-i", "many", "-o", "m.npy", cwd=tmp_path)
    assert res.returncode == 0 and np.load(tmp_path / "m.npy").shape == (1, 2)
    res = dltrain("predict", "run", "-i", "in.csv", "-o", "x.npy", cwd=tmp_path)
    assert res.returncode == 3 and "this model reads text" in res.stderr
    # evaluate on another folder of the same kind: its classes map onto the run's by name
    from dltrain.errors import DataError
    from dltrain.run.evaluate import evaluate_checkpoint

    (tmp_path / "more" / "pos").mkdir(parents=True)
    (tmp_path / "more" / "pos" / "1.txt").write_text("a great film")
    (tmp_path / "more" / "pos" / "2.txt").write_text("it was good")
    res2 = evaluate_checkpoint(str(tmp_path / "run"), str(tmp_path / "more"))
    assert res2.n == 2 and res2.class_names == ["neg", "pos"]
    assert [c["support"] for c in res2.per_class] == [0, 2]
    (tmp_path / "more" / "meh").mkdir()
    (tmp_path / "more" / "meh" / "1.txt").write_text("so so")
    with pytest.raises(DataError, match="meh are not among the run's classes"):
        evaluate_checkpoint(str(tmp_path / "run"), str(tmp_path / "more"))


@pytest.mark.parametrize(
    "kw,code,message",
    [
        (dict(extra={"pos/bad.txt": b"caf\xe9"}), 3, "bad.txt:1: not UTF-8"),
        (dict(dtype="float32"), 2, "input_dtype to int64"),
        (dict(emb=10), 2, "embeds 10 token ids"),
    ],
)
def test_text_folder_errors(tmp_path, kw, code, message):
    write_folder(tmp_path, **kw)
    res = dltrain_here("train", "c.yaml", "-q", cwd=tmp_path)
    assert res.returncode == code and message in res.stderr, res.stderr
    assert not (tmp_path / "runs").exists()


def test_label_mode_follows_keras_and_must_fit_the_loss(tmp_path):
    """label_mode: categorical gives one-hot rows (for categorical_crossentropy), as Keras's
    text_dataset_from_directory does; a label_mode that does not fit the loss is a config
    error at its line; binary needs two classes."""
    from dltrain.data.sources import load_source
    from dltrain.errors import DataError
    from dltrain.spec import load

    write_folder(tmp_path)
    cfg = (tmp_path / "c.yaml").read_text()
    one_hot = cfg.replace("vocabulary_size: 30}", "vocabulary_size: 30, label_mode: categorical}")
    (tmp_path / "c.yaml").write_text(
        one_hot.replace("loss: sparse_categorical_crossentropy", "loss: categorical_crossentropy")
    )
    spec = load(str(tmp_path / "c.yaml"))
    ds = load_source(spec.data.train, str(tmp_path), "classification", (8,))
    assert ds.y.shape == (48, 2) and ds.y.dtype == np.float32
    assert (ds.y.sum(1) == 1).all()
    res = dltrain("train", "c.yaml", "-q", "--set", "train.epochs=1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    (tmp_path / "c.yaml").write_text(one_hot)
    res = dltrain_here("validate", "c.yaml", cwd=tmp_path)
    assert res.returncode == 2 and "c.yaml:3:" in res.stderr and "label_mode" in res.stderr
    (tmp_path / "docs" / "meh").mkdir()
    (tmp_path / "docs" / "meh" / "a.txt").write_text("so so")
    binary = spec.data.train.model_copy(update={"label_mode": "binary"})
    with pytest.raises(DataError, match="exactly 2 class folders, found 3"):
        load_source(binary, str(tmp_path), "classification", (8,))
