"""Issue 15, item 4: the tracking summary figure (:mod:`latenttune.plots`).

Reconstructions registered to the truth, labelled amplitude and phase rows, amplitude and phase
colour bars, integer frame ticks, and image columns that line up. Synthetic results: the
reconstruction is the truth moved, twinned and given a global phase, which the figure must undo.
"""

from __future__ import annotations

import numpy as np

from latenttune.io import Results
from latenttune.plots import central_slices, summary_figure, tracking_summary
from sim.shapes import random_shape

T, n = 5, 16


def _truth() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = random_shape(rng, n, family="faceted").render(n).astype(np.complex64)
    phase = np.exp(1j * np.linspace(0, 1.5, n))[:, None, None].astype(np.complex64)
    return [base * phase * (1 + 0.05 * t) for t in range(T)]


def _fields(truth: list[np.ndarray]) -> dict:
    # what a tracker may legitimately return: the twin, shifted by 2 voxels, with a global phase
    moved = [np.roll(np.conj(d[::-1, ::-1, ::-1]), 2, axis=1) * np.exp(1.1j) for d in truth]
    return {"cost": np.linspace(0.2, 0.1, T), "density": np.stack(moved).astype(np.complex64),
            "E_r": np.full(T, 0.01), "index": np.arange(T)}


def _results(truth: list[np.ndarray]) -> Results:
    return Results.from_fields(_fields(truth))


def _image_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]


def _fit_axes(fig) -> list:
    """The panel of the fit to the counts (Poisson LLK, free LLK)."""
    return [ax for ax in fig.axes if ax.get_ylabel().startswith("fit to the counts: Poisson LLK")]


def test_reconstruction_rows_are_registered_to_the_truth():
    truth = _truth()
    fig = summary_figure(_results(truth), truth=truth, frames=[0, 2, 4])
    images = _image_axes(fig)
    columns = {}
    for ax in images:
        columns.setdefault(round(ax.get_position().x0, 3), []).append(ax)
    assert len(columns) == 3 and all(len(c) == 4 for c in columns.values())
    for (x0, column), t in zip(sorted(columns.items()), (0, 2, 4)):
        column.sort(key=lambda ax: -ax.get_position().y0)  # top to bottom: truth amp, phase, recon amp, phase
        truth_amp = np.asarray(column[0].images[0].get_array())
        recon_amp = np.asarray(column[2].images[0].get_array())
        np.testing.assert_allclose(truth_amp, central_slices(truth[t])[0], atol=1e-5)
        assert np.abs(recon_amp - truth_amp).max() < 0.05 * truth_amp.max()  # twin, shift and phase undone
        support = truth_amp > 0.5 * truth_amp.max()
        recon_phase = np.asarray(column[3].images[0].get_array())
        truth_phase = np.asarray(column[1].images[0].get_array())
        assert np.abs(np.angle(np.exp(1j * (recon_phase - truth_phase)))[support]).max() < 0.05


def test_rows_are_labelled_with_colour_bars_integer_frame_ticks_and_aligned_columns(tmp_path):
    truth = _truth()
    fig = summary_figure(_results(truth), truth=truth)
    fig.canvas.draw()
    images = _image_axes(fig)
    labels = [ax.get_ylabel() for ax in images if ax.get_ylabel()]
    assert labels == ["truth\namplitude", "truth\nphase", "decoded, aligned to truth\namplitude",
                      "decoded, aligned to truth\nphase"]
    bars = [ax.get_ylabel() for ax in fig.axes if ax not in images and not ax.lines]
    assert bars.count("amplitude") == 2 and bars.count("phase - its mean (rad)") == 2
    for ax in (ax for ax in fig.axes if ax.lines):  # cost and E_r against frame
        assert ax.get_xlabel() == "frame"
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and np.allclose(ticks, np.round(ticks))
    widths = {round(ax.get_position().width, 4) for ax in images}
    assert len(widths) == 1  # the colour bars have their own column: no image is narrower
    rows = {}
    for ax in images:
        rows.setdefault(round(ax.get_position().y0, 3), []).append(ax)
    assert len(rows) == 4 and len({len(r) for r in rows.values()}) == 1
    path = tracking_summary(_results(truth), tmp_path / "s.png", truth=truth)
    assert path.stat().st_size > 0


def test_without_truth_the_reconstruction_rows_say_what_they_show():
    truth = _truth()
    fields = _fields(truth)
    fields["output_density"] = fields["density"]
    fields["physics_accepted"] = np.array([1, 0, 1, 1, 1], dtype=np.int8)
    fields["llk"] = np.full(T, np.nan)
    fig = summary_figure(Results.from_fields(fields), frames=[0, 1])
    images = _image_axes(fig)
    assert [ax.get_ylabel() for ax in images if ax.get_ylabel()] == ["hybrid\namplitude", "hybrid\nphase"]
    titles = [ax.get_title() for ax in images if ax.get_title()]
    assert titles == ["frame 0: refined", "frame 1: decoded (refinement not kept)"]
    assert "hybrid reconstruction" in fig._suptitle.get_text()
    # real data has no truth: the Poisson LLK panel says whether each frame fits the counts to the noise
    assert not _fit_axes(fig) and any(ax.get_ylabel().startswith("cost: amplitude misfit") for ax in fig.axes)
    fields["llk"] = np.array([1.1, 1.2, 3.5, 1.05, 1.3])
    fields["E_r"] = np.full(T, np.nan)  # as a replay of measured data stores it
    results = Results.from_fields(fields)
    fig = summary_figure(results, frames=[0, 1])
    (panel,) = _fit_axes(fig)
    np.testing.assert_allclose(panel.lines[0].get_ydata(), fields["llk"])
    # frame 2 (LLK 3.5) stayed above the default threshold 1.5: ringed on the curve and named in its title
    (ringed,) = [line for line in panel.lines if line.get_label().startswith("stagnated")]
    np.testing.assert_allclose(ringed.get_ydata(), [3.5])
    assert any(line.get_ydata()[0] == 1.5 for line in panel.lines if line.get_label() == "stagnation threshold")
    titles = [ax.get_title() for ax in _image_axes(summary_figure(results, frames=[1, 2])) if ax.get_title()]
    assert titles == ["frame 1: decoded (refinement not kept)", "frame 2: refined\n(stagnated)"]
    # the threshold is the one the run was tracked with (recorded in the results' settings)
    results = Results.from_fields(fields, attrs={"settings": {"physics": {"restart_llk": 1.25}}})
    (panel,) = _fit_axes(summary_figure(results, frames=[0]))
    (ringed,) = [line for line in panel.lines if line.get_label().startswith("stagnated")]
    np.testing.assert_allclose(ringed.get_ydata(), [3.5, 1.3])


def test_the_slice_plane_and_a_scale_are_named():
    truth = _truth()
    fig = summary_figure(_results(truth), truth=truth, frames=[0, 2])
    assert f"the plane normal to array axis 0 at index {n // 2} of {n}" in fig._suptitle.get_text()
    assert "horizontal: axis 2, vertical: axis 1" in fig._suptitle.get_text()
    scales = [t.get_text() for ax in _image_axes(fig) for t in ax.texts]
    assert scales == ["2 voxels"]  # a quarter of 16 voxels, rounded down to 1, 2 or 5 x 10^k: on the first panel
    # with a voxel size (a run with a measurement geometry) the bar is in nm
    from latenttune.plots import _scale_bar
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    _scale_bar(ax, 32, 6.3)  # a quarter of 32 voxels of 6.3 nm: 50.4 nm -> a 50 nm bar of 7.94 voxels
    assert [t.get_text() for t in ax.texts] == ["50 nm"]
    np.testing.assert_allclose(ax.patches[0].get_width(), 50 / 6.3)


def test_the_phase_is_shown_on_a_range_that_fits_it_with_its_mean_removed():
    # a phase ramp of 1.5 rad across the crystal in the slice's plane: on +-pi it would look flat
    ramp = np.exp(1j * np.linspace(0, 1.5, n))[None, None, :].astype(np.complex64)
    truth = [d * ramp for d in _truth()]
    fig = summary_figure(_results(truth), truth=truth, frames=[0])
    phases = [ax.images[0] for ax in _image_axes(fig) if ax.get_ylabel().endswith("phase")]
    assert len(phases) == 2
    for image in phases:
        low, high = image.get_clim()
        values = np.ma.filled(np.ma.masked_invalid(np.asarray(image.get_array(), dtype=float)), np.nan)
        spread = np.abs(values[np.isfinite(values)])
        assert low == -high and high < np.pi  # not +-pi: the structure shows
        assert np.percentile(spread, 99) <= high + 1e-6 and spread.max() > 0.5 * high  # the range fits the phase
        assert image.get_cmap().name == "RdBu_r"  # diverging: the range does not wrap
        assert abs(np.mean(values[np.isfinite(values)])) < 0.1 * high + 0.05  # the mean phase removed
    bars = [ax for ax in fig.axes if ax.get_ylabel() == "phase - its mean (rad)"]
    assert bars


def test_without_truth_the_fit_panel_stands_alone_with_the_free_llk():
    truth = _truth()
    fields = _fields(truth)
    fields["output_density"] = fields["density"]
    fields["llk"] = np.array([1.1, 1.2, 1.3, 1.05, 1.3])
    fields["llk_free"] = np.array([1.2, 1.25, 1.4, 1.1, 1.35])
    fields["E_r"] = np.full(T, np.nan)
    fig = summary_figure(Results.from_fields(fields), frames=[0, 1])
    curves = [ax for ax in fig.axes if ax.lines and not ax.images]
    assert curves == _fit_axes(fig)  # one panel: no cost or E_q panel repeating the same curve
    labels = [line.get_label() for line in curves[0].lines]
    assert "free LLK (held-out voxels)" in labels and "Poisson LLK of the shown density" in labels
    free = next(line for line in curves[0].lines if line.get_label() == "free LLK (held-out voxels)")
    np.testing.assert_allclose(free.get_ydata(), fields["llk_free"])
