"""The ablation benchmark runs end to end on tiny settings and reports every method beside physics-only."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from latenttune.model import LatentAutoencoder, ModelConfig, save_checkpoint

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture()
def bench_ablation(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_ablation

    yield bench_ablation
    for name in ("bench_ablation", "bench_tracking", "out_of_family"):
        sys.modules.pop(name, None)


def test_the_ablation_runs_end_to_end_on_a_tiny_model(tmp_path, bench_ablation):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = LatentAutoencoder(ModelConfig(n=16, latent_dim=2, encoder_channels=(4, 8), decoder_channels=(8, 4),
                                              hidden=16, physical=True)).eval()
    save_checkpoint(tmp_path / "tiny.pt", model)
    out = tmp_path / "ablation"
    code = bench_ablation.main(["--model", str(tmp_path / "tiny.pt"), "--regimes", "1e6,oof", "--frames", "2",
                                "--seeds", "5", "--scenarios", "growth", "--out", str(out)])
    assert code == 0
    report = json.loads(out.with_suffix(".json").read_text())
    rows = {(r["regime"], r["method"]): r for r in report["rows"]}
    assert set(rows) == {(regime, method) for regime in ("1e6", "oof") for method in bench_ablation.METHODS}
    for (regime, method), row in rows.items():
        assert row["frames"] == 2 and 0 <= row["E_r_mean"] <= 2 and row["ms_per_frame"] > 0, (regime, method)
    assert rows[("1e6", "physics-only")]["ratio_to_physics_only"] == pytest.approx(1.0)
    # the hybrids report their decoded latent beside the output; physics-only has none
    assert 0 <= rows[("oof", "hybrid")]["E_r_decoded_mean"] <= 2
    assert math.isnan(rows[("oof", "physics-only")]["E_r_decoded_mean"])
    assert "| 1e6 | hybrid |" in out.with_suffix(".md").read_text() and out.with_suffix(".png").stat().st_size > 0


def test_the_ablation_names_an_unknown_regime(bench_ablation, capsys):
    with pytest.raises(SystemExit):
        bench_ablation.main(["--regimes", "1e9"])
    assert "--regimes: unknown regime '1e9'" in capsys.readouterr().err
