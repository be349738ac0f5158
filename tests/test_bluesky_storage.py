"""Run storage (msgpack default, tiled extra) and replaying a stored run through ``latenttune replay``.

A 10-frame run of the tiny model is stored; reading it back gives the live events' arrays, and the
replay CLI with the live strategy settings reproduces the costs recorded live.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from bluesky import RunEngine

from latenttune.bluesky import (
    LatentTracker,
    MsgpackStorage,
    RunSeries,
    SimulatedCDIDetector,
    SimulationOptions,
    open_run,
    read_documents,
    track_sample,
)
from latenttune.frame_policy import checked_frame
from latenttune.bluesky.live import LiveFeedback
from latenttune.cli import main
from latenttune.io import SeriesFormatError, open_series, read_results
from latenttune.model import load_model, save_checkpoint
from latenttune.tracking import make_strategy
from sim import Detector, make_scenario

K, N, STEPS, FRAMES = 4, 16, 5, 10


def _detector(**options) -> SimulatedCDIDetector:
    scenario = make_scenario("growth", np.random.default_rng(0), n=8, num_frames=FRAMES)
    return SimulatedCDIDetector(scenario, Detector(photons=1e6, beamstop_radius=1.5), np.random.default_rng(1),
                                options=SimulationOptions(**options))


def _run(loaded, *callbacks, **options) -> tuple[str, list[tuple[str, dict]]]:
    RE = RunEngine({}, call_returns_result=True)
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    for callback in callbacks:
        RE.subscribe(callback)
    result = RE(track_sample(_detector(**options), LatentTracker.for_model(loaded), loaded,
                             make_strategy("es", K, steps_per_frame=STEPS), num=FRAMES))
    assert result.exit_status == "success"
    return result.run_start_uids[0], docs


def _events(docs) -> list[dict]:
    return [d for n, d in docs if n == "event" and "tracker_cost" in d["data"]]


def _replay_costs(series: str, out: Path, *extra: str) -> np.ndarray:
    code = main(["replay", series, *extra, "--model", str(out.parent / "model.pt"), "--strategy", "es",
                 "--steps-per-frame", str(STEPS),
                 "--out", str(out), "--no-figure"])
    assert code == 0
    return np.asarray(read_results(out).cost)


@pytest.fixture
def loaded(tmp_path, lively_model):
    path = tmp_path / "model.pt"
    save_checkpoint(path, lively_model)
    return load_model(path)


# -- msgpack ----------------------------------------------------------------------------------------


def test_msgpack_run_round_trips_and_replays_to_the_live_costs(tmp_path, loaded, capsys):
    storage = MsgpackStorage(tmp_path / "runs")
    live = LiveFeedback(LatentTracker.for_model(loaded), x="cdi_sample_time", out_dir=tmp_path / "figures", every=4)
    uid, docs = _run(loaded, storage, live)
    path = tmp_path / "runs" / f"{uid}.msgpack"
    assert storage.paths == [path]
    stored = list(read_documents(path))
    assert [n for n, _ in stored] == ["start", "descriptor"] + ["event_page"] * FRAMES + ["stop"]
    events = _events(docs)
    for (_, page), event in zip(stored[2:-1], events):
        np.testing.assert_array_equal(page["data"]["cdi_pattern"][0], event["data"]["cdi_pattern"])
        assert page["data"]["cdi_pattern"][0].dtype == np.float32

    with open_series(path) as series:  # .msgpack dispatches to the run series
        assert isinstance(series, RunSeries) and len(series) == FRAMES and series.N == N
        assert series.uid == uid and series.metadata["exit_status"] == "success" and not series.has_truth
        np.testing.assert_array_equal(series.times, np.arange(FRAMES, dtype=float))
        live_costs = np.array([e["data"]["tracker_cost"] for e in events])
        np.testing.assert_array_equal(series.recorded["cost"], live_costs)
        assert series.recorded["latent"].shape == (FRAMES, K)
        frame = series[6]
        expected = checked_frame(events[6]["data"]["cdi_pattern"], events[6]["data"]["cdi_mask"], N)
        np.testing.assert_array_equal(frame.intensity, expected.intensity)
        np.testing.assert_array_equal(frame.mask, expected.mask)

    costs = _replay_costs(str(path), tmp_path / "replay.h5")
    np.testing.assert_array_equal(costs, live_costs.astype(np.float32))
    assert "wrote 10 frames" in capsys.readouterr().out

    # the live figures were saved, headless
    assert live.saved == [tmp_path / "figures" / f"live_{uid[:8]}.png"] and live.saved[0].stat().st_size > 0
    assert [p.name for p in live.slices.saved] == ["slices_00003.png", "slices_00007.png", "slices_final.png"]  # frames from 0


def test_a_cut_short_msgpack_run_keeps_its_complete_frames(tmp_path, loaded, caplog):
    storage = MsgpackStorage(tmp_path / "runs")
    _run(loaded, storage)
    data = storage.paths[0].read_bytes()
    cut = tmp_path / "cut.msgpack"
    cut.write_bytes(data[: int(len(data) * 0.55)])
    with caplog.at_level(logging.WARNING, logger="latenttune.bluesky.run_series"):
        with open_run(cut) as series:
            assert 3 <= len(series) < FRAMES
            assert series.stop == {} and series[len(series) - 1].intensity.shape == (N, N, N)
    assert any("no stop document" in r.getMessage() for r in caplog.records)


def test_stored_runs_are_checked(tmp_path):
    import msgpack

    other = tmp_path / "other.msgpack"
    other.write_bytes(msgpack.packb(["start", {"uid": "x", "time": 0.0}]))
    with pytest.raises(SeriesFormatError, match="not a track_sample run"):
        open_series(other)
    junk = tmp_path / "junk.msgpack"
    junk.write_bytes(msgpack.packb({"a": 1}))
    with pytest.raises(SeriesFormatError, match=r"\(name, document\) pairs"):
        open_run(junk)
    with pytest.raises(ValueError, match="`uid` is required"):
        open_run(tmp_path)
    with pytest.raises(FileNotFoundError):
        open_run(tmp_path / "missing.msgpack")


# -- tiled -------------------------------------------------------------------------------------------


def test_tiled_catalog_round_trips_a_run_and_replays_it(tmp_path, loaded):
    pytest.importorskip("tiled")
    import h5py

    from latenttune.bluesky import TiledStorage

    storage = TiledStorage.embedded(tmp_path / "catalog", batch_size=4)
    try:
        uid, docs = _run(loaded, storage)
        node = storage.client[uid]["primary"]
        assert node["cdi_pattern"].shape == (FRAMES, N, N, N)
        assert storage.client[uid].metadata["stop"]["exit_status"] == "success"
    finally:
        storage.close()
    assert storage.uids == [uid]
    files = sorted((tmp_path / "catalog" / "data").glob(f"{uid}_primary_*.h5"))
    assert len(files) == 1
    with h5py.File(files[0], "r") as f:
        assert f["entry/cdi_pattern"].shape == (FRAMES, N, N, N) and f["entry/cdi_pattern"].dtype == np.float32
        assert f["entry/tracker_latent"].shape == (FRAMES, K)

    events = _events(docs)
    live_costs = np.array([e["data"]["tracker_cost"] for e in events])
    with open_run(tmp_path / "catalog", uid) as series:  # a fresh, read-only client
        assert len(series) == FRAMES and series.N == N and series.metadata["format"] == "bluesky-tiled"
        np.testing.assert_array_equal(series.recorded["cost"], live_costs)
        np.testing.assert_array_equal(series.recorded["latent"],
                                      np.stack([e["data"]["tracker_latent"] for e in events]))
        frame = series[3]
        np.testing.assert_array_equal(frame.intensity, checked_frame(events[3]["data"]["cdi_pattern"],
                                                                     events[3]["data"]["cdi_mask"], N).intensity)
    with pytest.raises(SeriesFormatError, match="no run with uid"):
        open_run(tmp_path / "catalog", "not-a-run")

    costs = _replay_costs(str(tmp_path / "catalog"), tmp_path / "replay.h5", "--uid", uid)
    np.testing.assert_array_equal(costs, live_costs.astype(np.float32))
