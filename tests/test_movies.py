"""Movies: rendering, latent paths, the movie writer, traversal and tracking movies, the CLI."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from latenttune.movies.paths import axes_path, line_path, lissajous_path
from latenttune.movies.render import (
    DensityView,
    RenderSettings,
    figure_rgb,
    isosurface,
    new_figure,
    render_density,
    view_extent,
)
from latenttune.movies.writer import MovieWriter, write_movie

# ---- helpers ----------------------------------------------------------------------------------


def _sphere(n: int = 16, radius: float = 4.0, ramp: float = 0.3) -> np.ndarray:
    """A sphere of amplitude 1 (soft edge) with the phase ramp ``ramp * x`` (centred coordinates)."""
    x = np.arange(n) - n // 2
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    r = np.sqrt(X**2 + Y**2 + Z**2)
    return (np.clip(radius + 0.5 - r, 0, 1) * np.exp(1j * ramp * X)).astype(np.complex64)


def _read(path: Path) -> np.ndarray:
    """All frames of a movie, (T, H, W, 3) uint8."""
    if path.suffix == ".mp4":
        return np.stack(list(iio.imiter(path, plugin="FFMPEG")))
    return iio.imread(path, index=None)[..., :3]


def _changed(a: np.ndarray, b: np.ndarray, tol: int = 30) -> np.ndarray:
    return np.abs(a.astype(int) - b.astype(int)).max(axis=-1) > tol


def _pixel_box(ax, height: int) -> tuple[slice, slice]:
    """Rows and columns of the image that ``ax`` covers."""
    box = ax.get_window_extent()
    return slice(int(height - box.y1), int(height - box.y0)), slice(int(box.x0), int(box.x1))


def _frames(width: int, height: int, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    frames = []
    for t in range(count):
        frame = np.full((height, width, 3), 250, dtype=np.uint8)
        frame[10:30, 5 + 8 * t : 25 + 8 * t] = rng.integers(0, 255, 3)  # a moving block
        frames.append(frame)
    return frames


# ---- rendering --------------------------------------------------------------------------------


def test_isosurface_lies_on_the_sphere_and_carries_its_phase():
    d = _sphere(16, radius=4.0, ramp=0.3)
    surface = isosurface(d, 0.5)
    assert not surface.empty and surface.faces.shape[1] == 3
    r = np.linalg.norm(surface.vertices, axis=1)  # centred coordinates: the sphere is at the origin
    assert abs(r.mean() - 4.0) < 0.3 and r.max() - r.min() < 1.0
    centroids = surface.vertices[surface.faces].mean(axis=1)
    expected = np.angle(np.exp(1j * 0.3 * centroids[:, 0]))
    error = np.angle(np.exp(1j * (surface.phase - expected)))
    # trilinear interpolation weights the voxels by amplitude: within half a voxel of the ramp (0.15 rad)
    assert np.abs(error).max() < 0.15 and abs(error.mean()) < 0.05
    assert isosurface(d, 1.5).empty  # nothing reaches the level
    assert view_extent([d, 0.5 * d], 0.5, margin=3.0) == 4.0 + 3.0  # |d| >= 0.5 out to r = 4 voxels
    assert view_extent([np.zeros_like(d)], 0.5) is None
    with pytest.raises(ValueError, match="`level`"):
        isosurface(d, 0.0)
    with pytest.raises(ValueError, match="3-D"):
        isosurface(d[0], 0.5)


def test_a_frame_shows_the_object_in_the_isosurface_panel():
    size = (320, 180)
    fig = new_figure(size, 100)
    fig.subplots_adjust(left=0.02, right=0.97, bottom=0.08, top=0.9)
    view = DensityView(fig, fig.add_gridspec(1, 1)[0, 0], (16, 16, 16), 1.0, RenderSettings())
    view.update(np.zeros((16, 16, 16), np.complex64))
    empty = figure_rgb(fig, size)
    view.update(_sphere())
    full = figure_rgb(fig, size)
    assert full.shape == (180, 320, 3) and full.dtype == np.uint8
    changed = _changed(full, empty)
    rows, cols = _pixel_box(view.iso.ax, size[1])
    inside = np.zeros_like(changed)
    inside[rows, cols] = True
    for ax in (view.slices.amplitude_image.axes, view.slices.phase_image.axes):
        r, c = _pixel_box(ax, size[1])
        inside[r, c] = True
    assert changed[rows, cols].sum() > 300  # the sphere is drawn in the isosurface panel ...
    assert not (changed & ~inside).any()  # ... and nothing changes outside the panels
    ys, xs = np.nonzero(changed[rows, cols])
    h, w = changed[rows, cols].shape
    assert abs(ys.mean() / h - 0.5) < 0.2 and abs(xs.mean() / w - 0.5) < 0.2  # near the box centre


def test_render_density_has_the_requested_size_and_rejects_bad_input():
    image = render_density(_sphere(), size=(200, 120), dpi=80)
    assert image.shape == (120, 200, 3)
    with pytest.raises(ValueError, match="`size`"):
        render_density(_sphere(), size=(8, 120))
    with pytest.raises(ValueError, match="zero everywhere"):
        render_density(np.zeros((8, 8, 8)))
    with pytest.raises(ValueError, match="`iso_fraction`"):
        RenderSettings(iso_fraction=1.5)
    with pytest.raises(ValueError, match="`phase_cmap`"):
        RenderSettings(phase_cmap="nosuchmap")


# ---- paths ------------------------------------------------------------------------------------


def test_line_path_runs_evenly_from_start_to_end():
    z = line_path([0.0, -1.0, 0.5], [1.0, 1.0, 0.5], 5)
    assert z.shape == (5, 3)
    np.testing.assert_allclose(z[0], [0, -1, 0.5])
    np.testing.assert_allclose(z[-1], [1, 1, 0.5])
    np.testing.assert_allclose(np.diff(z, axis=0), np.tile([0.25, 0.5, 0.0], (4, 1)))
    with pytest.raises(ValueError, match="`end`"):
        line_path([0, 0], [1, 1, 1], 5)
    with pytest.raises(ValueError, match="`frames`"):
        line_path([0, 0], [1, 1], 1)


def test_axes_path_sweeps_one_axis_at_a_time_inside_the_box():
    lower, upper = np.array([-1.0, 0.0, -0.5]), np.array([1.0, 2.0, 0.5])
    z = axes_path(lower, upper, 31)
    assert z.shape == (31, 3)
    assert (z >= lower - 1e-12).all() and (z <= upper + 1e-12).all()
    centre = (lower + upper) / 2
    moving = np.abs(z - centre) > 1e-12
    assert (moving.sum(axis=1) <= 1).all()  # never two axes off-centre at once
    segments = [np.flatnonzero(moving[:, i]) for i in range(3)]
    assert segments[0].max() < segments[1].min() and segments[1].max() < segments[2].min()
    for i in range(3):  # each axis reaches (nearly) both faces of the box
        assert z[:, i].max() > upper[i] - 0.05 * (upper[i] - lower[i])
        assert z[:, i].min() < lower[i] + 0.05 * (upper[i] - lower[i])
    assert np.ptp(axes_path(lower, upper, 6)[:2, 0]) > 1.9  # two frames per axis still sweep it
    with pytest.raises(ValueError, match="`frames`"):
        axes_path(lower, upper, 5)
    with pytest.raises(ValueError, match="`lower` < `upper`"):
        axes_path(upper, lower, 12)


def test_lissajous_path_is_smooth_closed_reproducible_and_inside_the_box():
    lower, upper = -0.5 * np.ones(4), np.array([0.5, 0.5, 0.5, 1.0])
    z = lissajous_path(lower, upper, 60, np.random.default_rng(3), max_cycles=2)
    assert z.shape == (60, 4)
    assert (z >= lower).all() and (z <= upper).all()
    steps = np.linalg.norm(np.diff(np.vstack([z, z[:1]]), axis=0), axis=1)  # includes last -> first
    assert steps.max() < 0.25 and steps[-1] < 1.5 * np.median(steps)  # smooth, and loops without a jump
    np.testing.assert_array_equal(z, lissajous_path(lower, upper, 60, np.random.default_rng(3), max_cycles=2))
    assert not np.allclose(z, lissajous_path(lower, upper, 60, np.random.default_rng(4), max_cycles=2))
    with pytest.raises(TypeError, match="`rng`"):
        lissajous_path(lower, upper, 60, 3)


# ---- writer -----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_movie_writer_streams_frames_to_a_readable_file(tmp_path, suffix):
    frames = _frames(96, 64, 5)
    path = write_movie(frames, tmp_path / f"m{suffix}", (96, 64), fps=10)
    movie = _read(path)
    assert movie.shape == (5, 64, 96, 3)
    tol = 2 if suffix == ".gif" else 40  # GIF: exact palette colours; MP4: lossy
    for got, want in zip(movie, frames):
        assert np.abs(got.astype(int) - want.astype(int)).mean() < tol / 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"m{suffix}"]  # no temporary left
    if suffix == ".gif":
        with Image.open(path) as im:
            assert im.info["duration"] == 100 and im.info["loop"] == 0


def test_movie_writer_is_atomic_and_checks_its_arguments(tmp_path):
    out = tmp_path / "m.gif"
    out.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="overwrite"):
        MovieWriter(out, (96, 64))
    with pytest.raises(RuntimeError, match="boom"):
        with MovieWriter(out, (96, 64), overwrite=True) as movie:
            movie.append(_frames(96, 64, 1)[0])
            raise RuntimeError("boom")
    assert out.read_bytes() == b"old"  # an interrupted movie leaves the old file alone ...
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gif"]  # ... and no temporary
    with pytest.raises(ValueError, match="suffix"):
        MovieWriter(tmp_path / "m.avi", (96, 64))
    with pytest.raises(ValueError, match="even"):
        MovieWriter(tmp_path / "m.mp4", (97, 64))
    with pytest.raises(ValueError, match="`fps`"):
        MovieWriter(tmp_path / "n.gif", (96, 64), fps=0)
    with MovieWriter(tmp_path / "n.gif", (96, 64)) as movie:
        with pytest.raises(ValueError, match=r"\(64, 96, 3\)"):
            movie.append(np.zeros((96, 64, 3), np.uint8))
        movie.append(_frames(96, 64, 1)[0])


# ---- traversal and tracking movies ------------------------------------------------------------


def test_traverse_movie_has_the_requested_frames_and_size(tmp_path, lively_model):
    from latenttune.movies.traverse import write_traverse_movie

    box = (-0.9 * np.ones(4), 0.9 * np.ones(4))
    latents = lissajous_path(*box, 6, np.random.default_rng(0))
    calls = []
    path = write_traverse_movie(lively_model, latents, tmp_path / "t.gif", fps=5, size=(240, 136), box=box,
                                callback=lambda done, total: calls.append((done, total)))
    movie = _read(path)
    assert movie.shape == (6, 136, 240, 3)
    assert calls == [(i, 6) for i in range(1, 7)]
    for a, b in zip(movie[:-1], movie[1:]):
        assert _changed(a, b).sum() > 200  # the density and the bars move from frame to frame
    left = movie[:, :, : 240 // 2]  # the density panels: not blank
    assert ((left.astype(int).sum(axis=-1) < 600).sum(axis=(1, 2)) > 500).all()
    with pytest.raises(ValueError, match="`latents`"):
        write_traverse_movie(lively_model, latents[:, :3], tmp_path / "u.gif")
    assert not (tmp_path / "u.gif").exists()


@pytest.fixture
def tracked_run(tmp_path, lively_model):
    """A 4-frame simulated series (n = 8, with truth) replayed one-shot: (results path, series path)."""
    from latenttune.model import LoadedModel
    from latenttune.tracking.replay import replay_series
    from latenttune.simulate import simulate_series
    from latenttune.tracking import make_strategy

    series = simulate_series("growth", tmp_path / "s.cxi", num_frames=4, n=8, seed=1)
    loaded = LoadedModel(model=lively_model, path=Path("lively.pt"), checksum="lively")
    results, _ = replay_series(series, loaded, make_strategy("one-shot", 4), tmp_path / "r.h5")
    return results, series


def test_tracking_movie_shows_every_frame_and_finds_its_series(tmp_path, tracked_run):
    from latenttune.movies.tracking_movie import write_tracking_movie

    results, series = tracked_run
    path = write_tracking_movie(results, tmp_path / "t.mp4", size=(320, 180), fps=4)
    movie = _read(path)
    assert movie.shape == (4, 180, 320, 3)
    for a, b in zip(movie[:-1], movie[1:]):
        assert _changed(a, b).sum() > 100
    moved = series.rename(tmp_path / "moved.cxi")
    with pytest.raises(FileNotFoundError, match="--series"):
        write_tracking_movie(results, tmp_path / "u.gif", size=(320, 180))
    path = write_tracking_movie(results, tmp_path / "u.gif", series=moved, size=(320, 180))
    assert _read(path).shape == (4, 180, 320, 3)


def test_tracking_movie_without_truth_draws_the_amplitude_error(tmp_path, tracked_run, lively_model):
    from latenttune.io import open_series
    from latenttune.model import LoadedModel
    from latenttune.movies.tracking_movie import write_tracking_movie
    from latenttune.tracking.replay import replay_series
    from latenttune.tracking import make_strategy

    _, series = tracked_run
    with open_series(series) as s:  # the same patterns as cohere-style amplitudes: no truth
        np.save(tmp_path / "amplitudes.npy", np.sqrt(np.stack([frame.intensity for frame in s])))
    loaded = LoadedModel(model=lively_model, path=Path("lively.pt"), checksum="lively")
    results, _ = replay_series(tmp_path / "amplitudes.npy", loaded, make_strategy("one-shot", 4), tmp_path / "n.h5")
    movie = _read(write_tracking_movie(results, tmp_path / "n.gif", size=(320, 180)))
    assert movie.shape == (4, 180, 320, 3)
    assert _changed(movie[0], movie[-1]).sum() > 100


# ---- command line -----------------------------------------------------------------------------


def test_cli_traverse_track_and_bad_arguments(tmp_path, lively_model, tracked_run, capsys):
    from latenttune.cli import main
    from latenttune.model import save_checkpoint

    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, lively_model)
    out = tmp_path / "trav.gif"
    assert main(["movie", "traverse", "--model", str(ckpt), "--path", "axes", "--box", "full", "--frames", "8",
                 "--size", "160x96", "--fps", "5", "--out", str(out)]) == 0
    assert "wrote 8 frames" in capsys.readouterr().out
    assert _read(out).shape == (8, 96, 160, 3)
    results, series = tracked_run
    line = tmp_path / "line.gif"
    assert main(["movie", "traverse", "--model", str(ckpt), "--path", "line", "--box", "full", "--frames", "3",
                 "--start", f"{series}@0", "--end", "0.5,-0.5,0.5,-0.5", "--size", "160x96",
                 "--out", str(line)]) == 0
    assert _read(line).shape == (3, 96, 160, 3)
    track = tmp_path / "track.gif"
    assert main(["movie", "track", str(results), "--size", "200x112", "--out", str(track)]) == 0
    assert _read(track).shape == (4, 112, 200, 3)
    bad = [
        (["--path", "line", "--frames", "4"], "needs both `--start` and `--end`"),
        (["--path", "line", "--start", "1,2", "--end", "0,0,0,0"], "k = 4"),
        (["--path", "line", "--start", f"{series}@9", "--end", "0,0,0,0"], "out of range"),
        (["--path", "axes", "--frames", "4"], "at least 2k = 8"),
        (["--size", "161x96", "--out", str(tmp_path / "x.mp4")], "even"),
        (["--out", str(tmp_path / "x.avi")], "suffix"),
        (["--out", str(out)], "overwrite"),
        (["--size", "12x9"], "at least 16x16"),
    ]
    for extra, message in bad:
        argv = ["movie", "traverse", "--model", str(ckpt), "--box", "full", "--out", str(tmp_path / "y.gif"), *extra]
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2, extra
        assert message in capsys.readouterr().err, extra
