"""Issue 15, item 4: live feedback of a Bluesky run.

Frames are numbered from 0 in the live figure and its file names, as in replay; the slices carry
colour bars; a model with many latent components plots the first few and says so; a run can write
one line per frame. A real RunEngine run of the tiny model (n = 8, k = 4) and, for the 56-component
case, a tracker fed the documents of such a run.
"""

from __future__ import annotations

import numpy as np
import pytest
from bluesky import RunEngine

from latenttune.bluesky import LatentTracker, SimulatedCDIDetector, track_sample
from latenttune.bluesky.live import MAX_COMPONENTS, FrameLines, LiveFeedback
from latenttune.tracking.replay import replay_series
from latenttune.tracking import make_strategy
from sim import Detector, make_scenario

K, FRAMES, STEPS = 4, 5, 3


def _run(model, *callbacks, tracker: LatentTracker | None = None) -> list[tuple[str, dict]]:
    scenario = make_scenario("growth", np.random.default_rng(0), n=8, num_frames=FRAMES)
    detector = SimulatedCDIDetector(scenario, Detector(photons=1e6, beamstop_radius=1.5), np.random.default_rng(1))
    RE = RunEngine({}, call_returns_result=True)
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    for callback in callbacks:
        RE.subscribe(callback)
    tracker = LatentTracker(K, 8) if tracker is None else tracker
    result = RE(track_sample(detector, tracker, model, make_strategy("hybrid", K, steps_per_frame=STEPS), num=FRAMES))
    assert result.exit_status == "success"
    return docs


def test_a_run_prints_one_line_per_frame_from_frame_0(lively_model):
    tracker = LatentTracker(K, 8)
    lines: list[str] = []
    docs = _run(lively_model, FrameLines(tracker, lines.append), tracker=tracker)
    events = [d for n, d in docs if n == "event"]
    assert len(lines) == FRAMES == len(events)
    for t, (line, event) in enumerate(zip(lines, events)):
        assert line.startswith(f"frame {t:4d}  cost {event['data']['tracker_cost']:.5f}  steps {event['data']['tracker_es_steps']:4d}")
        assert line.endswith("  ok") and "shows " in line
        assert f"LLK {event['data']['tracker_llk']:.2f}" in line
    with pytest.raises(TypeError, match="`write` must be callable"):
        FrameLines(tracker, "print")
    # a frame whose output stayed above the stagnation threshold says so after its LLK
    data = {**events[0]["data"], "tracker_llk": 4.04, "tracker_stagnated": 1}
    FrameLines(tracker, lines.append).event({**events[0], "data": data})
    assert "LLK 4.04 (stagnated: less certain)" in lines[-1]


def test_live_figure_counts_frames_from_0_with_colour_bars(lively_model, tmp_path):
    tracker = LatentTracker(K, 8)
    live = LiveFeedback(tracker, out_dir=tmp_path, every=2)
    _run(lively_model, live, tracker=tracker)
    llk_plot, free_plot, cost_plot, *component_plots, slices = live.callbacks
    assert cost_plot.x_data == list(range(FRAMES)) and cost_plot.ax.get_xlabel() == "frame"
    # named quantities, not data keys: the frame's LLK (and free LLK) and the cost
    assert llk_plot.ax.get_ylabel() == "Poisson LLK" and cost_plot.ax.get_ylabel() == "cost (0 = perfect fit)"
    assert llk_plot.y == "tracker_llk" and free_plot.y == "tracker_llk_free" and llk_plot.x_data == list(range(FRAMES))
    legend = [t.get_text() for t in llk_plot.ax.get_legend().get_texts()]
    assert legend == ["LLK of the shown density", "free LLK (held-out voxels)"]
    assert not any("tracker_" in ax.get_ylabel() for ax in live.figure.axes)
    assert all(p.x_data == list(range(FRAMES)) for p in component_plots) and len(component_plots) == K
    ticks = cost_plot.ax.get_xticks()
    assert np.allclose(ticks, np.round(ticks))  # integer frame ticks
    assert slices.colorbars is not None
    labels = [c.ax.get_ylabel() for c in slices.colorbars]
    assert labels == ["amplitude", "phase (rad)"]
    assert f"amplitude, frame {FRAMES - 1}, cost" in slices.ax_amplitude.get_title()  # the last frame: 4, not 5
    assert [p.name for p in slices.saved] == ["slices_00001.png", "slices_00003.png", "slices_final.png"]
    assert live.saved and live.saved[0].stat().st_size > 0


def test_a_56_component_model_plots_the_first_components_and_says_so(lively_model):
    docs = _run(lively_model)
    tracker = LatentTracker(56, 8)
    live = LiveFeedback(tracker)
    assert live.components == tuple(range(MAX_COMPONENTS))
    title = live.figure.axes[2].get_title()
    assert title == f"latent components 0-{MAX_COMPONENTS - 1} ({MAX_COMPONENTS} of 56 shown)"
    learned = LiveFeedback(tracker, components=range(48, 56))
    assert learned.figure.axes[2].get_title() == "latent components 48-55 (8 of 56 shown)"
    for name, doc in docs:  # the k = 4 run's documents, with the latent padded to 56 components
        if name == "event":
            doc = {**doc, "data": {**doc["data"], "tracker_latent": np.arange(56.0)}}
        learned(name, doc)
    plots = learned.callbacks[3:-1]
    assert len(plots) == 8 and plots[0].y_data == [48.0] * FRAMES and plots[-1].y_data == [55.0] * FRAMES
    for bad in ([], [56], [1, 1]):
        with pytest.raises(ValueError, match="`components`"):
            LiveFeedback(tracker, components=bad)


def test_a_stored_run_replays_with_the_frame_numbers_the_live_lines_printed(lively_model, tmp_path):
    from latenttune.bluesky import MsgpackStorage, open_run
    from latenttune.model import load_model, save_checkpoint

    save_checkpoint(tmp_path / "m.pt", lively_model)
    loaded = load_model(tmp_path / "m.pt")
    tracker = LatentTracker(K, 8)
    lines: list[str] = []
    storage = MsgpackStorage(tmp_path / "runs")
    _run(loaded, FrameLines(tracker, lines.append), storage, tracker=tracker)
    with open_run(storage.paths[0]) as series:
        _, result = replay_series(series, loaded, make_strategy("hybrid", K, steps_per_frame=STEPS), tmp_path / "r.h5")
    assert [r.index for r in result.records] == [int(line.split()[1]) for line in lines] == list(range(FRAMES))


def test_a_model_with_crystal_parameters_shows_named_quantities_and_the_frames_llk():
    """Issue 30: the live view names what it plots (crystal size and orientation read out of the latent,
    the frame's LLK and free LLK), not raw data keys or latent components z0-z7."""
    import torch

    from latenttune.model import LatentAutoencoder, ModelConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LatentAutoencoder(ModelConfig(n=8, latent_dim=2, encoder_channels=(4, 8), decoder_channels=(8, 4),
                                              hidden=16, physical=True)).eval()
    tracker = LatentTracker.for_model(model)
    live = LiveFeedback(tracker)
    assert live.named
    scenario = make_scenario("growth", np.random.default_rng(0), n=8, num_frames=2)
    detector = SimulatedCDIDetector(scenario, Detector(photons=1e6, beamstop_radius=1.5), np.random.default_rng(1))
    RE = RunEngine({})
    RE.subscribe(live)
    RE(track_sample(detector, tracker, model, make_strategy("hybrid", model.latent_dim, steps_per_frame=2), num=2))
    labels = [ax.get_ylabel() for ax in live.figure.axes if ax.get_ylabel()]
    assert "crystal size: equivalent radius (voxels)" in labels and "orientation: rotation vector (deg)" in labels
    assert "Poisson LLK" in labels and not any(label.startswith("tracker_") for label in labels)
    size_plot = next(c for c in live.callbacks if getattr(c, "y", "") == "tracker_readout_size")
    assert len(size_plot.y_data) == 2 and np.isfinite(size_plot.y_data).all()
    llk_plot = next(c for c in live.callbacks if getattr(c, "y", "") == "tracker_llk")
    assert len(llk_plot.y_data) == 2 and np.isfinite(llk_plot.y_data).all()
    texts = [t.get_text() for ax in live.figure.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert not any(t.startswith("z") and t[1:].isdigit() for t in texts) and {"x", "y", "z"} <= set(texts)
