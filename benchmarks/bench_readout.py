"""The physical readout against the simulator's truth: orientation, facets, dislocation line, phase signs.

Run (from the repository root)::

    python benchmarks/bench_readout.py --frames 6 --out benchmarks/results/readout

For each scenario (default ``growth``, ``strain``, ``dislocation``, ``fcc-glide``) one series is
simulated as in ``bench_tracking.py`` (its ``simulate``: Poisson noise at ``--photons``, a beamstop of
``--beamstop`` voxels) and tracked with one method (``--method``, default ``hybrid``) through
``replay_series`` (``bench_tracking.run_method``), which writes each frame's physical readout
(:mod:`latenttune.model.readout`) to the results file. The benchmark reads the readout back and scores
it against the ground truth of each frame, regenerated from the scenario the series was simulated from
(checked frame by frame against the series' stored truth; a mismatch stops the run).

Conventions of the scoring:

* the truth is taken in the frame the model draws in: the truth density rolled by the integer shift that
  brings its amplitude-weighted centroid to index ``n // 2`` (``latenttune.model.losses.centre_shifts``,
  the training convention); the intensity cannot see a translation;
* the twin ``conj(d(-r))`` is resolved per frame by comparing with the truth: ``real_space_error`` of
  the readout's explicit crystal (``render_physical`` of the latent's explicit part, in the laboratory
  frame) against the centred truth says whether the twin fits better, and the twin's readout
  (:func:`latenttune.model.readout.twin_readout`) is scored then;
* orientation error: :func:`latenttune.model.crystal.misorientation_degrees` (the 24 cubic-equivalent
  rotations removed; the twin keeps the orientation), median over frames;
* facet-distance error: the readout's facets relabelled by the cubic rotation ``g`` that brings its
  orientation closest to the truth's, then ``|d_read - d_true| / d_true`` averaged over the facets active
  in the truth (:func:`latenttune.model.readout.facet_activity` of the truth's rotation and support
  distances: the planes that make faces of the truth crystal), mean over frames;
* line-position error (``dislocation``, ``fcc-glide``): the distance (voxels) of the readout's line point
  from the true line, measured perpendicular to the true line, median over all frames and over the frames
  whose true line crosses the crystal (passes within one voxel of a voxel of the truth's support: the
  ``dislocation`` scenario's line starts and ends outside the crystal, where the intensity holds little of
  it); with the fraction of the latter frames whose readout draws a dislocation;
* phase signs (``strain``): the truth's smooth-phase coefficients are the least-squares fit of the same
  9-term basis (``x, y, z, x^2, y^2, z^2, xy, xz, yz``, ``x = r / (n/4)``) to the wrapped phase
  differences between neighbouring voxels inside the truth's support (amplitude >= half its maximum);
  a frame counts as right when every coefficient whose truth magnitude exceeds 0.2 rad has the readout's
  sign (frames with none are left out).

Also reported: the mean learned fraction (the share of the decoded density the learned residual draws)
and the time of :func:`latenttune.model.readout.read_out` per frame. Writes ``OUT.md`` and ``OUT.json``
(``bench_tracking.write_report``); asserts nothing: it reports.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_tracking as bt  # noqa: E402  (the benchmarks folder is not a package)

DEFAULT_SCENARIOS = ("growth", "strain", "dislocation", "fcc-glide")
#: Scenarios whose frames hold one dislocation line (the line-position error is reported for them).
LINE_SCENARIOS = ("dislocation", "fcc-glide")
#: Scenarios whose phase-coefficient signs are scored.
PHASE_SCENARIOS = ("strain",)
#: Truth phase coefficients (rad) whose sign is scored.
SIGNIFICANT_PHASE = 0.2


class TruthMismatch(RuntimeError):
    """The regenerated scenario does not give the series' stored truth."""


@dataclass(frozen=True)
class FrameTruth:
    """One frame's ground truth in the model's frame (centred voxel coordinates, see the module docstring).

    Attributes
    ----------
    rotation : (3, 3) array
        The crystal's cubic axes (body to grid).
    facet_distances : (26,) array
        Support distances (voxels) of the 26 planes, labelled by ``rotation``.
    active_facets : (26,) bool array
        The planes that make faces of the rendered truth crystal.
    line_point, line_direction : (3,) arrays or None
        The dislocation line (None without exactly one line).
    line_inside : bool
        The line crosses the crystal (passes within one voxel of a voxel of the support).
    phase_coefficients : (9,) array
        The 9-term least-squares fit of the truth's phase (radians).
    density : ndarray
        The centred truth density.
    """

    rotation: np.ndarray
    facet_distances: np.ndarray
    active_facets: np.ndarray
    line_point: np.ndarray | None
    line_direction: np.ndarray | None
    line_inside: bool
    phase_coefficients: np.ndarray
    density: np.ndarray


def regenerate(name: str, seed: int, n: int, frames: int) -> Any:
    """The scenario ``latenttune.simulate.simulate_series`` drew for ``seed`` (its first spawned generator)."""
    from sim.scenarios import make_scenario

    scenario_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[0])
    return make_scenario(name, scenario_rng, n=n, num_frames=frames)


def check_regenerated(scenario: Any, series: Any) -> None:
    """Raise :class:`TruthMismatch` unless ``scenario.density(t)`` is the series' stored truth on every frame."""
    if not series.has_truth or len(series) != scenario.num_frames:
        raise TruthMismatch(f"series {series.path} has {len(series)} frames (truth: {series.has_truth}); the "
                            f"regenerated scenario {scenario.num_frames}")
    for t in range(len(series)):
        stored, drawn = series.truth(t), scenario.density(t)
        if stored.shape != drawn.shape or not np.allclose(stored, drawn, rtol=0, atol=1e-6):
            difference = float(np.abs(stored - drawn).max()) if stored.shape == drawn.shape else math.inf
            raise TruthMismatch(f"the regenerated {scenario.name!r} scenario differs from the truth stored in "
                                f"{series.path} at frame {t} (max |difference| {difference:.3g}): the descriptors "
                                "would not describe the tracked frames")


def _support(density: np.ndarray) -> np.ndarray:
    """The truth's support: amplitude at least half its maximum."""
    amplitude = np.abs(density)
    return amplitude >= 0.5 * amplitude.max()


def crosses(density: np.ndarray, point: np.ndarray, direction: np.ndarray) -> bool:
    """Whether the line passes within one voxel of a voxel of ``density``'s support."""
    from sim.geometry import centred_coords

    n = density.shape[0]
    offset = centred_coords(n).reshape(3, -1)[:, _support(density).reshape(-1)] - point[:, None]
    across = offset - direction[:, None] * (direction @ offset)[None]
    return bool(across.shape[1]) and float(np.sqrt((across**2).sum(axis=0)).min()) <= 1.0


def phase_fit(density: np.ndarray) -> np.ndarray:
    """The 9-term smooth-phase coefficients (rad) of ``density``: least squares on wrapped neighbour differences."""
    from sim.geometry import centred_coords

    n = density.shape[0]
    x = centred_coords(n) / (n / 4.0)
    basis = np.stack([x[0], x[1], x[2], x[0] ** 2, x[1] ** 2, x[2] ** 2, x[0] * x[1], x[0] * x[2], x[1] * x[2]])
    support = _support(density)
    rows, values = [], []
    for axis in range(3):
        ahead = np.roll(density, -1, axis=axis)
        pair = support & np.roll(support, -1, axis=axis)
        edge = [slice(None)] * 3
        edge[axis] = -1
        pair[tuple(edge)] = False  # no pair across the wrap
        values.append(np.angle(ahead * np.conj(density))[pair])
        rows.append((np.roll(basis, -1, axis=axis + 1) - basis)[:, pair].T)
    coefficients, *_ = np.linalg.lstsq(np.concatenate(rows), np.concatenate(values), rcond=None)
    return coefficients


def frame_truth(scenario: Any, t: int, stored: np.ndarray, n: int) -> FrameTruth:
    """Frame ``t``'s truth in the model's frame (the density centred as in training)."""
    import torch

    from latenttune.model.crystal import PhysicalLayout, physical_targets
    from latenttune.model.losses import centre_shifts
    from latenttune.model.readout import facet_activity

    layout = PhysicalLayout(n)
    shift = centre_shifts(torch.from_numpy(np.asarray(stored, dtype=np.complex64)[None]))[0]
    descriptor = scenario.descriptor(t)
    targets = physical_targets(descriptor, shift, layout)
    rotation = targets["rotation"].astype(np.float64)
    distances = layout.distances(targets["facets"].astype(np.float64))
    centred = np.roll(stored, shift, axis=(0, 1, 2))
    point = targets["point"].astype(np.float64) if targets["line_valid"] else None
    direction = targets["direction"].astype(np.float64) if targets["line_valid"] else None
    return FrameTruth(
        rotation=rotation, facet_distances=distances, active_facets=facet_activity(rotation, distances, n),
        line_point=point, line_direction=direction,
        line_inside=point is not None and crosses(centred, point, direction),
        phase_coefficients=phase_fit(centred), density=centred,
    )


def explicit_density(latent: np.ndarray, model: Any, view: int) -> np.ndarray:
    """The latent's explicit crystal ``amplitude * exp(i phase)`` in the laboratory frame (``view`` undone)."""
    import torch

    from latenttune.model.crystal import render_physical
    from latenttune.model.symmetry import VIEWS

    layout = model.physical_layout
    with torch.inference_mode():
        amplitude, phase = render_physical(torch.as_tensor(np.asarray(latent)[None, :layout.size], dtype=torch.float32),
                                           layout)
    density = torch.polar(amplitude, phase)[0].numpy()
    return VIEWS[view].undo(density) if view else density


def readout_of_row(results: Any, row: int) -> Any:
    """Row ``row`` of a results file's readout fields as a :class:`~latenttune.model.readout.PhysicalReadout`."""
    from scipy.spatial.transform import Rotation

    from latenttune.model.readout import PhysicalReadout

    degrees = np.asarray(results.readout_orientation_deg[row], dtype=np.float64)
    winding = float(results.readout_dislocation_winding[row])
    return PhysicalReadout(
        orientation_matrix=Rotation.from_rotvec(np.radians(degrees)).as_matrix(), orientation_deg=degrees,
        facet_distances=np.asarray(results.readout_facet_distances[row], dtype=np.float64),
        active_facets=np.asarray(results.readout_active_facets[row]) == 1,
        size_voxels=float(results.readout_size[row]),
        phase_coefficients=np.asarray(results.readout_phase_coefficients[row], dtype=np.float64),
        dislocation_present=bool(results.readout_dislocation_present[row] == 1),
        dislocation_winding=int(winding) if math.isfinite(winding) else 0,
        dislocation_point=np.asarray(results.readout_dislocation_point[row], dtype=np.float64),
        dislocation_direction=np.asarray(results.readout_dislocation_direction[row], dtype=np.float64),
        learned_norm=float(results.readout_learned_norm[row]),
        learned_fraction=float(results.readout_learned_fraction[row]),
    )


def score_frame(readout: Any, truth: FrameTruth, twin: bool) -> dict[str, float]:
    """One frame's errors (see the module docstring); ``twin``: score the readout's twin."""
    from latenttune.model.crystal import _GROUP, _GROUP_PERM, misorientation_degrees
    from latenttune.model.readout import twin_readout

    read = twin_readout(readout) if twin else readout
    R = read.orientation_matrix
    g = int(np.argmax([np.trace(truth.rotation.T @ R @ h) for h in _GROUP]))  # R g closest to the truth
    distances = np.asarray(read.facet_distances)[_GROUP_PERM[g]]
    active = truth.active_facets
    out = {
        "orientation_deg": misorientation_degrees(R, truth.rotation),
        "facet_relative": (float(np.mean(np.abs(distances[active] - truth.facet_distances[active])
                                         / truth.facet_distances[active])) if active.any() else math.nan),
        "line_voxels": math.nan, "line_inside": math.nan, "dislocation_drawn": float(read.dislocation_present),
        "phase_signs_right": math.nan, "phase_signs_compared": 0.0, "twin": float(twin),
    }
    if truth.line_point is not None:
        out["line_inside"] = float(truth.line_inside)
        offset = np.asarray(read.dislocation_point) - truth.line_point
        out["line_voxels"] = float(np.linalg.norm(offset - np.dot(offset, truth.line_direction) * truth.line_direction))
    significant = np.abs(truth.phase_coefficients) > SIGNIFICANT_PHASE
    if significant.any():
        agree = np.sign(read.phase_coefficients[significant]) == np.sign(truth.phase_coefficients[significant])
        out["phase_signs_right"] = float(agree.all())
        out["phase_signs_compared"] = float(significant.sum())
        out["phase_coefficient_signs_right"] = float(agree.mean())
    return out


def score_run(results_path: Path, series_path: Path, scenario: Any, model: Any) -> dict[str, Any]:
    """Score every row of a results file against the regenerated truth; per-frame figures and the timing."""
    from latenttune.io import open_series, read_results
    from latenttune.metrics import real_space_error
    from latenttune.model.readout import read_out
    from latenttune.model.views import viewed

    results = read_results(results_path)
    if not results.has_readout:
        raise RuntimeError(f"{results_path} holds no readout: the model has no explicit crystal parameters")
    n = model.config.n
    frames: list[dict[str, float]] = []
    seconds = []
    with open_series(series_path) as series:
        check_regenerated(scenario, series)
        for row in range(results.num_frames):
            t = int(results.index[row])
            truth = frame_truth(scenario, t, series.truth(t), n)
            view = int(json.loads(str(results.strategy_state[row])).get("view", 0))
            latent = np.asarray(results.latent[row], dtype=np.float64)
            explicit = explicit_density(latent, model, view)
            twin = bool(np.any(explicit)) and real_space_error(truth.density, explicit).twin  # zero: nothing drawn
            figures = score_frame(readout_of_row(results, row), truth, twin)
            figures["learned_fraction"] = float(results.readout_learned_fraction[row])
            figures["E_r"] = float(results.E_r_output[row] if results.has_physics else results.E_r[row])
            frames.append({"frame": float(t), **figures})
            density = results.density_at(row, output=False)
            started = time.perf_counter()
            read_out(latent, viewed(model, view), density)
            seconds.append(time.perf_counter() - started)
    return {"frames": frames, "readout_ms": float(np.median(seconds) * 1e3)}


def _column(frames: list[dict[str, float]], key: str) -> np.ndarray:
    return np.array([f.get(key, math.nan) for f in frames], dtype=float)


def summarise(scenario: str, scored: dict[str, Any]) -> dict[str, Any]:
    """One table row of a scenario's scored frames."""
    frames = scored["frames"]
    inside = _column(frames, "line_inside") == 1

    def stat(key: str, how: Any, where: np.ndarray | None = None) -> float:
        values = _column(frames, key)
        keep = np.isfinite(values) & (True if where is None else where)
        return float(how(values[keep])) if keep.any() else math.nan

    lines = scenario in LINE_SCENARIOS
    return {
        "scenario": scenario, "frames": len(frames),
        "orientation_deg_median": stat("orientation_deg", np.median),
        "facet_relative_mean": stat("facet_relative", np.mean),
        "line_voxels_median": stat("line_voxels", np.median) if lines else math.nan,
        "line_inside_frames": int(inside.sum()),
        "line_voxels_inside_median": stat("line_voxels", np.median, inside) if lines else math.nan,
        "dislocation_drawn": stat("dislocation_drawn", np.mean, inside) if lines else math.nan,
        "phase_signs_right": stat("phase_signs_right", np.mean) if scenario in PHASE_SCENARIOS else math.nan,
        "twin_frames": stat("twin", np.mean),
        "learned_fraction_mean": stat("learned_fraction", np.mean),
        "E_r_mean": stat("E_r", np.mean),
        "readout_ms": scored["readout_ms"],
    }


def _cell(value: float, text: str) -> str:
    return "-" if not math.isfinite(value) else text.format(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table."""
    lines = ["| scenario | frames | orientation error (deg, median) | facet distance error (mean, relative) | "
             "line position error (voxels, median) | frames with the line in the crystal | line position error "
             "there (voxels, median) | dislocation drawn there | phase signs right | twin frames | "
             "learned fraction (mean) | E_r (mean) | readout ms / frame |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lined = math.isfinite(r["line_voxels_median"])
        lines.append(
            f"| {r['scenario']} | {r['frames']} | {_cell(r['orientation_deg_median'], '{:.1f}')} | "
            f"{_cell(r['facet_relative_mean'], '{:.1%}')} | {_cell(r['line_voxels_median'], '{:.2f}')} | "
            f"{r['line_inside_frames'] if lined else '-'} | {_cell(r['line_voxels_inside_median'], '{:.2f}')} | "
            f"{_cell(r['dislocation_drawn'], '{:.0%}')} | {_cell(r['phase_signs_right'], '{:.0%}')} | "
            f"{_cell(r['twin_frames'], '{:.0%}')} | {_cell(r['learned_fraction_mean'], '{:.2f}')} | "
            f"{_cell(r['E_r_mean'], '{:.3f}')} | {_cell(r['readout_ms'], '{:.1f}')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="default", help="'default' or a checkpoint path (explicit crystal "
                                                           "parameters required)")
    parser.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--method", default="hybrid", choices=bt.METHODS, help="how the frames are tracked")
    parser.add_argument("--frames", type=int, default=6, help="frames per scenario")
    parser.add_argument("--steps", type=int, default=None,
                        help="cost evaluations per frame (hybrid, es, gradient; default: each strategy's own)")
    parser.add_argument("--photons", type=float, default=1e8, help="expected total photons per frame")
    parser.add_argument("--beamstop", type=float, default=1.5, help="beamstop radius in voxels")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed")
    bt.add_views_option(parser, 1, "symmetric views of the first frame the tracker chooses the model's view from")
    parser.add_argument("--torch-threads", type=int, default=min(2, os.cpu_count() or 1),
                        help="torch intra-op threads (1 is faster while another job loads the CPU)")
    parser.add_argument("--out", default="benchmarks/results/readout", help="output stem (.md/.json)")
    args = parser.parse_args(argv)

    import torch

    from latenttune.model import load_model

    if args.torch_threads < 1:
        parser.error("--torch-threads must be >= 1")
    if args.frames < 1:
        parser.error("--frames must be >= 1")
    torch.set_num_threads(args.torch_threads)
    loaded = load_model(args.model)
    if loaded.model.physical_layout is None:
        parser.error(f"--model {args.model}: the model has no explicit crystal parameters, so no readout")
    scenarios = [s for s in args.scenarios.split(",") if s]
    n = loaded.model.config.n
    rows, per_frame = [], {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        for name in scenarios:
            series = bt.simulate(name, tmpdir, loaded, args.frames, args.photons, args.beamstop, args.seed)
            scenario = regenerate(name, args.seed, n, args.frames)
            out = tmpdir / f"{name}-{args.method}.h5"
            bt.run_method(args.method, series, loaded, out, args.steps, {}, args.views)
            scored = score_run(out, series, scenario, loaded.model)
            rows.append(summarise(name, scored))
            per_frame[name] = scored["frames"]
            print(markdown_table(rows[-1:]).splitlines()[-1], flush=True)
    effort = "the encoder alone" if args.method == "one-shot" else bt.steps_text(args.steps)
    header = (f"Model {loaded.path.name} (weights checksum {loaded.checksum[:12]}), method {args.method} "
              f"({effort}), {args.frames} frames per scenario, first-frame view chosen among "
              f"{args.views}, {args.photons:g} photons, beamstop {args.beamstop} voxels, seed {args.seed}. Truth in "
              "the model's frame (centroid-centred), twin resolved per frame against the truth; orientation error "
              "with the cubic symmetry removed; facet error over the truth's faces; phase signs of the truth "
              f"coefficients above {SIGNIFICANT_PHASE} rad. Machine: {bt.machine()}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads. Total {time.perf_counter() - started:.0f} s.\n"
              f"Command: python {' '.join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])}\n")
    bt.write_report(Path(args.out), header, markdown_table(rows), {"rows": rows, "per_frame": per_frame})
    return 0


if __name__ == "__main__":
    sys.exit(main())
