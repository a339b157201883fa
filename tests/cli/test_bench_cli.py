"""`dltrain bench` reports step times for a config (speed targets live in benchmarks/)."""

import json

from tests.cli.helpers import ROOT, dltrain


def test_bench_json_and_text():
    cfg = ROOT / "configs" / "bench" / "mlp_seed.yaml"
    res = dltrain("bench", str(cfg), "--steps", "5", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["config"] == "bench_mlp_seed" and out["batch_size"] == 32
    parts = out["forward_ms"] + out["backward_ms"] + out["optimizer_ms"]
    assert 0 < out["ms_per_step"] and abs(parts - out["ms_per_step"]) < 0.5 * out["ms_per_step"]
    res = dltrain("bench", str(cfg), "--steps", "3")
    assert res.returncode == 0 and "ms/step (forward" in res.stdout
