"""cohere-core as a comparator: ER/HIO with shrink-wrap on one measured pattern.

:func:`reconstruct` runs cohere-core's own phasing class (``cohere_core.controller.phasing.Rec``,
numpy backend, CPU) in-process on one pattern in the project's conventions and returns the density
on the object grid in the project's conventions. :class:`CohereRecipe` holds the settings; its
default is cohere's documented recipe (ER/HIO blocks, Gaussian shrink-wrap at threshold 0.1 and
sigma 1.0 every iteration from iteration 10, twin removal at iteration 2, a centred initial support
of half the box per axis) repeated to about 1,000 iterations.

Conventions (read in the cohere-core 4.5.4 source and checked numerically)
--------------------------------------------------------------------------
* **Data.** cohere reads amplitudes ``A = sqrt(I)`` with ``q = 0`` at the centre (``.npy`` or
  ``.tif``) and ``fftshift``-s them to the corner. We write ``sqrt(intensity)`` to a temporary
  ``.npy`` file; cohere's ``Rec`` has no in-memory data path.
* **Direction of the transform.** cohere goes to reciprocal space with an *inverse* FFT
  (``scipy.fft.ifftn(x, norm="forward")``) and back with the forward one. Since
  ``|ifftn(x)| = |fftn(conj(x))| / N^3``, an image ``x`` that cohere fits to ``A`` is the complex
  conjugate of a density that fits ``A`` under our ``fftn`` forward model (docs/conventions.md section 2; the
  ``ifftshift`` there only multiplies the FFT by ``(-1)^k`` for even ``N`` and leaves amplitudes
  unchanged). So the result is ``conj(cohere image)``, and a warm start is handed to cohere as
  ``conj(pad(initial))``. Checked: with exact data, ER iterations started from ``conj(pad(d))``
  stay on ``d`` (cohere's error and ``E_r``, twin search off, at rounding level), while started
  from ``pad(d)`` itself they leave it (``tests/test_cohere_peer.py``). (The conjugate alone is not the twin
  ``conj(d(-r))``: without it the result is a different, wrong object, not a twin the ``E_r``
  search would forgive.)
* **Real-space placement.** cohere's image is not ``ifftshift``-ed: the object lies near the box
  centre (the initial support is centred) but is free to translate, and may wrap around the
  periodic box. The result is rolled by whole voxels so that the circular centroid of ``|x|`` (a
  centroid that is correct across the wrap) sits at index ``N // 2``, then the central ``n^3`` is
  taken as :func:`latenttune.physics.crop` does (object index ``n // 2`` = box index ``N // 2``).
  Global phase and scale are left as cohere gives them (amplitude maximum 1); every comparison
  removes them.
* **Mask.** cohere's ``Rec`` has no voxel mask: its modulus constraint replaces every amplitude by
  the data (its time-series class marks missing *frames* with -1, not voxels). With
  ``mask_mode="free"`` (default) a minimal subclass overrides only ``modulus`` so that masked
  voxels keep their current amplitude and phase (unconstrained, as in PyNX) and its error is
  computed over the measured voxels. ``mask_mode="zero"`` runs cohere's plain ``Rec`` with masked
  voxels given as zero counts (a zero-amplitude constraint there): what one gets by handing cohere
  the masked data as they are. Even a small beamstop then makes the reconstruction much worse
  than ``"free"`` does (``tests/test_cohere_peer.py``; ``benchmarks/bench_vs_cohere.py --cohere-mask zero``).
* **Scale of the start.** cohere scales its random start by ``sum|x|^2 * max(A)``, orders of
  magnitude above the data; its modulus step corrects every *measured* amplitude at once, but with
  free masked voxels the excess stays in the unmeasured ``q = 0`` region, never decays, and
  shrink-wrap then grows the support to most of the box (the reconstruction fails).
  So every start (cold or warm) is scaled so that its Fourier amplitudes over the measured voxels
  have the norm of the data.
* **Randomness.** cohere draws its random start after reseeding numpy's *global* generator from the
  clock. Here the cold start is drawn from ``rng`` with cohere's distribution
  (``U[0, 1) + i U[0, 1)`` inside the initial support) and replaces cohere's, and numpy's global
  state is restored afterwards, so results are reproducible and the caller's global state is
  untouched.
* **Warm start.** ``initial`` (our convention, ``n^3``) is padded, conjugated and scaled; the
  support starts as cohere's own shrink-wrap of it (same threshold and sigma as the recipe). The
  twin-removal step is left out, as cohere itself does when it continues a reconstruction.

cohere prints progress to stdout; it is captured and logged at DEBUG level.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.fft as sfft

from latenttune.physics import circular_centre_shifts, crop, pad
from latenttune.versions import installed_version
from latenttune.validation import check_choice, check_int, check_number, is_integer

__all__ = [
    "CohereRecipe",
    "reconstruct",
    "count_iterations",
    "to_object_grid",
    "from_object_grid",
    "cohere_version",
    "INSTALL_HINT",
]

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'latenttune[bench]'"
"""How to install the optional cohere-core dependency."""

_ALGORITHMS = ("ER", "HIO", "SF", "RAAR")
_MASK_MODES = ("free", "zero")
_PRECISIONS = {"double": (np.float64, np.complex128), "single": (np.float32, np.complex64)}
_SIMPLE = r"(\d+)\*([A-Za-z]+)((?:\.[A-Za-z]+\d+)*)"
_GROUP = r"(\d+)\*\(([^()]*)\)"
_TINY = 1e-9  # cohere's own threshold on |F| in its modulus step


# --------------------------------------------------------------------------- the recipe


def _parse_simple(term: str) -> int:
    match = re.fullmatch(_SIMPLE, term)
    if match is None:
        raise ValueError(f"`algorithm_sequence` term {term!r} is not of the form 'COUNT*ALGORITHM'")
    count, name = int(match.group(1)), match.group(2)
    if name not in _ALGORITHMS:
        raise ValueError(f"`algorithm_sequence` algorithm {name!r} must be one of {list(_ALGORITHMS)}")
    if count < 1:
        raise ValueError(f"`algorithm_sequence` term {term!r} must repeat at least once")
    return count


def count_iterations(sequence: str) -> int:
    """Number of iterations of a cohere ``algorithm_sequence`` string, validating its grammar.

    Parameters
    ----------
    sequence : str
        Terms joined by ``+``: ``COUNT*ALG`` or a repeated group ``COUNT*(COUNT*ALG+...)``, e.g.
        ``"5*(20*ER+180*HIO)+20*ER"`` (1,020 iterations). ``ALG`` is one of ER, HIO, SF, RAAR.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        When the string does not follow that grammar.
    """
    s = sequence.replace(" ", "")
    if not s:
        raise ValueError("`algorithm_sequence` must not be empty")
    total, position = 0, 0
    for match in re.finditer(_GROUP + r"|[^+()]+", s):
        if match.start() != position:
            raise ValueError(f"`algorithm_sequence` {sequence!r} is malformed near character {position}")
        if match.group(1) is not None:
            total += int(match.group(1)) * sum(_parse_simple(t) for t in match.group(2).split("+"))
        else:
            total += _parse_simple(match.group(0))
        position = match.end()
        if position < len(s):
            if s[position] != "+":
                raise ValueError(f"`algorithm_sequence` {sequence!r} is malformed near character {position}")
            position += 1
    if position != len(s) or s.endswith("+"):
        raise ValueError(f"`algorithm_sequence` {sequence!r} is malformed at its end")
    return total


def _check_trigger(trigger: Any) -> tuple[int, ...]:
    values = tuple(trigger) if isinstance(trigger, (tuple, list)) else (trigger,)
    if not 1 <= len(values) <= 3 or not all(is_integer(v) for v in values):
        raise ValueError(f"`shrink_wrap_trigger` must be 1 to 3 integers (start[, step[, stop]]), got {trigger!r}")
    if len(values) >= 2 and values[1] < 1:
        raise ValueError(f"`shrink_wrap_trigger` step must be >= 1, got {trigger!r}")
    return tuple(int(v) for v in values)


@dataclass(frozen=True)
class CohereRecipe:
    """Settings of one cohere reconstruction (cohere's configuration keys in brackets).

    Parameters
    ----------
    algorithm_sequence : str
        [``algorithm_sequence``] e.g. ``"5*(20*ER+180*HIO)+20*ER"`` (1,020 iterations, default).
    hio_beta : float
        [``hio_beta``] HIO feedback, in (0, 1]; cohere's default 0.9.
    shrink_wrap_trigger : tuple of int or None
        [``shrink_wrap_trigger``] ``(start, step[, stop])`` iterations; default ``(10, 1)``
        (every iteration from 10). None disables shrink-wrap.
    shrink_wrap_threshold : float
        [``shrink_wrap_threshold``] support = Gaussian-blurred ``|x|`` above this fraction of its
        maximum, in (0, 1); default 0.1.
    shrink_wrap_sigma : float
        [``shrink_wrap_gauss_sigma``] Gaussian sigma in voxels, > 0; default 1.0.
    twin_trigger : int or None
        [``twin_trigger``] iteration at which cohere zeroes half the box per axis to break the twin
        symmetry (cold starts only); default 2. None disables it.
    initial_support_area : float
        [``initial_support_area``] side of the centred initial support as a fraction of the box,
        in (0, 1]; default 0.5 (the object grid ``n = N / 2``).
    mask_mode : {"free", "zero"}
        Masked voxels unconstrained (default) or constrained to zero amplitude (plain cohere); see
        the module notes.
    precision : {"double", "single"}
        complex128 (cohere's default: its random start is complex128) or complex64.
    fft_workers : int
        Threads for scipy.fft inside cohere (``scipy.fft.set_workers``); default 1 (cohere's).
    """

    algorithm_sequence: str = "5*(20*ER+180*HIO)+20*ER"
    hio_beta: float = 0.9
    shrink_wrap_trigger: tuple[int, ...] | None = (10, 1)
    shrink_wrap_threshold: float = 0.1
    shrink_wrap_sigma: float = 1.0
    twin_trigger: int | None = 2
    initial_support_area: float = 0.5
    mask_mode: str = "free"
    precision: str = "double"
    fft_workers: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.algorithm_sequence, str):
            raise TypeError(f"`algorithm_sequence` must be a str, got {type(self.algorithm_sequence).__name__}")
        iterations = count_iterations(self.algorithm_sequence)
        check_number("hio_beta", float(self.hio_beta), low=0, high=1, open_low=True)
        if self.shrink_wrap_trigger is not None:
            object.__setattr__(self, "shrink_wrap_trigger", _check_trigger(self.shrink_wrap_trigger))
        check_number("shrink_wrap_threshold", float(self.shrink_wrap_threshold), low=0, high=1, open_low=True,
                     open_high=True)
        check_number("shrink_wrap_sigma", float(self.shrink_wrap_sigma), low=0, open_low=True)
        check_int("twin_trigger", self.twin_trigger, low=0, high=iterations - 1, allow_none=True)
        check_number("initial_support_area", float(self.initial_support_area), low=0, high=1, open_low=True)
        check_choice("mask_mode", self.mask_mode, _MASK_MODES)
        check_choice("precision", self.precision, list(_PRECISIONS))
        check_int("fft_workers", self.fft_workers, low=1)

    @classmethod
    def standard(cls, iterations: int = 1000, **overrides: Any) -> CohereRecipe:
        """cohere's usual ER/HIO recipe, ``B*(20*ER+180*HIO)+20*ER``, sized to about ``iterations``.

        ``B = max(1, round((iterations - 20) / 200))`` blocks, so the count is ``200 B + 20``
        (1,020 for the default 1,000; 220 for 200).

        Parameters
        ----------
        iterations : int
            Wanted number of iterations, >= 1.
        **overrides
            Other :class:`CohereRecipe` fields.
        """
        check_int("iterations", iterations, low=1)
        blocks = max(1, round((int(iterations) - 20) / 200))
        return cls(algorithm_sequence=f"{blocks}*(20*ER+180*HIO)+20*ER", **overrides)

    @property
    def iterations(self) -> int:
        """Number of iterations of :attr:`algorithm_sequence`."""
        return count_iterations(self.algorithm_sequence)

    def cohere_params(self, *, warm: bool) -> dict[str, Any]:
        """The configuration dictionary cohere's ``Rec`` takes (a fresh one: cohere mutates it).

        Parameters
        ----------
        warm : bool
            A warm start: the twin-removal step is left out.
        """
        params: dict[str, Any] = {
            "algorithm_sequence": self.algorithm_sequence,
            "hio_beta": float(self.hio_beta),
            "initial_support_area": [float(self.initial_support_area)] * 3,
        }
        if self.shrink_wrap_trigger is not None:
            params.update({
                "shrink_wrap_trigger": list(self.shrink_wrap_trigger),
                "shrink_wrap_type": "GAUSS",
                "shrink_wrap_threshold": float(self.shrink_wrap_threshold),
                "shrink_wrap_gauss_sigma": float(self.shrink_wrap_sigma),
            })
        if self.twin_trigger is not None and not warm:
            params.update({"twin_trigger": [int(self.twin_trigger)], "twin_halves": [0, 0]})
        return params

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-friendly dictionary."""
        out = asdict(self)
        if out["shrink_wrap_trigger"] is not None:
            out["shrink_wrap_trigger"] = list(out["shrink_wrap_trigger"])
        return out


# --------------------------------------------------------------------------- cohere access


def cohere_version() -> str | None:
    """The installed cohere-core version, or None when it is not installed."""
    return installed_version("cohere-core")


def _load_cohere() -> tuple[Any, Any]:
    """Import cohere's phasing and device-utility modules (lazily: cohere is optional)."""
    try:
        phasing = importlib.import_module("cohere_core.controller.phasing")
        dvc_utils = importlib.import_module("cohere_core.utilities.dvc_utils")
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"the cohere comparator needs cohere-core (import name cohere_core), which is not installed "
            f"({exc}); {INSTALL_HINT}"
        ) from exc
    return phasing, dvc_utils


@functools.lru_cache(maxsize=None)
def _free_mask_rec(rec_class: type) -> type:
    """cohere's ``Rec`` whose modulus step leaves masked voxels unconstrained."""

    class FreeMaskRec(rec_class):  # type: ignore[misc, valid-type]
        """``Rec`` with a voxel mask: ``measured`` (corner layout, True = measured) must be set."""

        measured: np.ndarray | None = None

        def modulus(self) -> None:
            amplitude = np.abs(self.rs_amplitudes)
            safe = np.where(amplitude > _TINY, amplitude, 1.0)
            ratio = np.where(amplitude > _TINY, self.iter_data / safe, 0.0)
            ratio = np.where(self.measured, ratio, 1.0)
            residual = np.where(self.measured, amplitude - self.iter_data, 0.0)
            self.errs.append(float(np.sum(residual * residual) / np.sum(self.iter_data * self.iter_data)))
            self.rs_amplitudes *= ratio

    return FreeMaskRec


@contextlib.contextmanager
def _cohere_context(workers: int) -> Iterator[io.StringIO]:
    """Capture cohere's prints, keep numpy's global RNG state and set the scipy.fft threads."""
    state = np.random.get_state()
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), sfft.set_workers(int(workers)):
            yield buffer
    finally:
        np.random.set_state(state)
        if buffer.getvalue():
            log.debug("cohere output:\n%s", buffer.getvalue().rstrip())


# --------------------------------------------------------------------------- validation


def _check_intensity(intensity: Any) -> np.ndarray:
    try:
        a = np.asarray(intensity)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"`intensity` must be array-like, got {type(intensity).__name__}") from exc
    if a.dtype.kind not in "biuf":
        raise TypeError(f"`intensity` must be a real numeric array, got dtype {a.dtype}")
    if a.ndim != 3 or not a.shape[0] == a.shape[1] == a.shape[2] or a.shape[0] < 4 or a.shape[0] % 2:
        raise ValueError(f"`intensity` must be a cubic 3-D array (N, N, N) with N even and >= 4, got shape {a.shape}")
    return a.astype(np.float64, copy=False)


def _check_mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean array, True = measured (the complement of the mask)."""
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = np.asarray(mask)
    if m.dtype.kind not in "biu":
        raise TypeError(f"`mask` must be a boolean (or integer, nonzero = not measured) array, got dtype {m.dtype}")
    if m.shape != shape:
        raise ValueError(f"`mask` must have the shape of `intensity` {shape}, got {m.shape}")
    return m == 0


def _check_measured_values(intensity: np.ndarray, measured: np.ndarray) -> np.ndarray:
    values = intensity[measured]
    if values.size == 0:
        raise ValueError("`mask` must leave at least one voxel measured")
    if not np.all(np.isfinite(values)):
        raise ValueError("`intensity` must be finite in the measured voxels")
    if np.any(values < 0):
        raise ValueError("`intensity` must be >= 0 in the measured voxels")
    if not values.sum() > 0:
        raise ValueError("`intensity` must have some counts (sum > 0) in the measured voxels")
    return np.where(measured, intensity, 0.0)


def _check_initial(initial: Any, n: int) -> np.ndarray:
    try:
        a = np.asarray(initial)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"`initial` must be array-like, got {type(initial).__name__}") from exc
    if a.dtype.kind not in "biufc":
        raise TypeError(f"`initial` must be a numeric array, got dtype {a.dtype}")
    if a.shape != (n, n, n):
        raise ValueError(f"`initial` must be a density on the object grid ({n}, {n}, {n}), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("`initial` must be finite")
    if not np.any(a):
        raise ValueError("`initial` must not be zero everywhere")
    return a.astype(np.complex128)


def _check_rng(rng: Any) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or is_integer(rng):
        return np.random.default_rng(rng)
    raise TypeError(f"`rng` must be a numpy Generator, an int seed or None, got {type(rng).__name__}")


# --------------------------------------------------------------------------- the conversion steps


def _scaled_to_data(image: np.ndarray, data: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """``image`` scaled so that ``|ifftn(image)|`` (cohere's transform) has the data's norm where measured."""
    model = np.abs(sfft.ifftn(image, norm="forward"))[measured]
    norm = float(np.linalg.norm(model))
    if norm == 0.0:
        raise ValueError("`initial` has no Fourier amplitude on the measured voxels")
    return image * (float(np.linalg.norm(data[measured])) / norm)


def _centroid_roll(x: np.ndarray) -> np.ndarray:
    """Roll ``x`` by whole voxels so the circular centroid of ``|x|`` sits at index ``N // 2``."""
    return np.roll(x, circular_centre_shifts(x), axis=(0, 1, 2))


def to_object_grid(image: np.ndarray, n: int) -> np.ndarray:
    """cohere's image ``(N, N, N)`` to our density ``(n, n, n)`` complex64: conjugate, centre, crop."""
    return np.ascontiguousarray(crop(_centroid_roll(np.conj(image)), n)).astype(np.complex64)


def from_object_grid(density: np.ndarray, N: int) -> np.ndarray:
    """Our density ``(n, n, n)`` to a cohere image ``(N, N, N)``: pad to the centre, conjugate."""
    return np.conj(pad(np.asarray(density, dtype=np.complex128), N))


def _random_start(support: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """cohere's random start ``U[0,1) + i U[0,1)`` inside the support, drawn from ``rng``."""
    shape = support.shape
    return (rng.random(shape) + 1j * rng.random(shape)) * (np.asarray(support) > 0)


# --------------------------------------------------------------------------- the entry point


def reconstruct(
    intensity: np.ndarray,
    mask: np.ndarray | None = None,
    recipe: CohereRecipe | None = None,
    *,
    initial: np.ndarray | None = None,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Phase one measured pattern with cohere-core; return the density in our convention.

    Parameters
    ----------
    intensity : ndarray, shape (N, N, N)
        Measured intensity (counts), ``q = 0`` at index ``N // 2`` (docs/conventions.md section 2).
    mask : ndarray of bool, shape (N, N, N), optional
        True (or nonzero) = voxel NOT measured; those voxels are left unconstrained
        (``recipe.mask_mode="free"``) or constrained to zero (``"zero"``). Their values in
        ``intensity`` are ignored.
    recipe : CohereRecipe, optional
        Reconstruction settings; default ``CohereRecipe()`` (about 1,000 ER/HIO iterations).
    initial : ndarray, shape (N/2, N/2, N/2), optional
        A warm start in our convention, e.g. the previous frame's result. None = cohere's random
        start (drawn from ``rng``).
    rng : numpy.random.Generator or int or None
        Source of the random start.

    Returns
    -------
    ndarray, shape (N/2, N/2, N/2), complex64
        ``conj`` of cohere's final image, centred and cropped to the object grid (module notes).
        Global phase and scale are cohere's (maximum amplitude about 1).

    Raises
    ------
    ModuleNotFoundError
        cohere-core is not installed (``pip install 'latenttune[bench]'``).
    TypeError, ValueError
        Bad arguments (the message names the argument).
    RuntimeError
        cohere failed (e.g. the reconstruction turned NaN).
    """
    if recipe is None:
        recipe = CohereRecipe()
    if not isinstance(recipe, CohereRecipe):
        raise TypeError(f"`recipe` must be a CohereRecipe, got {type(recipe).__name__}")
    values = _check_intensity(intensity)
    measured = _check_mask(mask, values.shape)
    values = _check_measured_values(values, measured)
    N = values.shape[0]
    n = N // 2
    start_density = None if initial is None else _check_initial(initial, n)
    generator = _check_rng(rng)
    phasing, dvc_utils = _load_cohere()
    real_dtype, complex_dtype = _PRECISIONS[recipe.precision]
    # cohere moves q = 0 to the corner with fftshift; the mask follows the same way
    measured_corner = np.fft.fftshift(measured)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="latenttune-cohere-") as tmp, _cohere_context(recipe.fft_workers):
        data_file = os.path.join(tmp, "data.npy")
        np.save(data_file, np.sqrt(values).astype(real_dtype))
        rec_class = phasing.Rec if recipe.mask_mode == "zero" else _free_mask_rec(phasing.Rec)
        worker = rec_class(recipe.cohere_params(warm=start_density is not None), data_file, "np", debug=True)
        if worker.init_dev(-1) < 0 or worker.init_iter_loop() < 0:
            raise RuntimeError("cohere could not initialise the reconstruction")
        worker.measured = measured_corner
        if start_density is None:
            image = _random_start(worker.support, generator)
        else:
            image = from_object_grid(start_density, N)
            worker.support = dvc_utils.shrink_wrap(image, recipe.shrink_wrap_threshold, recipe.shrink_wrap_sigma)
        worker.ds_image = _scaled_to_data(image, np.asarray(worker.data), measured_corner).astype(complex_dtype)
        if worker.iterate() < 0:
            raise RuntimeError("cohere's iterations failed")
    result = to_object_grid(np.asarray(worker.get_image()), n)
    if not np.all(np.isfinite(result)):
        raise RuntimeError("cohere's reconstruction is not finite")
    log.info("cohere: %d iterations (%s start), final error %.4g, %.2f s", recipe.iterations,
             "cold" if start_density is None else "warm", worker.errs[-1] if worker.errs else float("nan"),
             time.perf_counter() - started)
    return result
