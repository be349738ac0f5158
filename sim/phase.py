"""Phase fields on the object grid: smooth random phases, strain and dislocations.

All phases are float32 radians on the ``n^3`` grid and are zero outside the
support (voxels where the occupancy is 0). They are *not* wrapped: only
``exp(i*phi)`` is physical (see :func:`complex_density`).

Units and the reflection
------------------------
Lengths are in voxels. In Bragg CDI the phase is ``phi(r) = 2*pi * G . u(r)``
for a displacement field ``u`` and the measured reciprocal-lattice vector
``G`` (here in 1/voxel, without the ``2*pi``). We scale a gold (111)
reflection to the grid by taking one voxel as 1 angstrom: ``d_111 = 2.35``
voxels (:data:`AU111_D_SPACING`), ``|G| = 1/2.35`` per voxel, and the default
reflection :data:`DEFAULT_G` points along array axis 0. The shortest Burgers
vector of fcc gold, ``a/2 <110>``, then has length ``d_111 * sqrt(3/2) = 2.88``
voxels (:data:`AU_BURGERS_LENGTH`) and ``G . b`` is 0 or +-1 (+-1: the
dislocation is visible and the phase winds by ``+-2*pi`` around its line).
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np
import scipy.fft as sfft

from sim.geometry import centred_coords

__all__ = [
    "AU111_D_SPACING",
    "AU_BURGERS_LENGTH",
    "DEFAULT_G",
    "gaussian_random_field",
    "seeded_gaussian_random_field",
    "scale_to_range",
    "random_phase",
    "random_displacement",
    "strain_phase",
    "screw_dislocation_displacement",
    "edge_dislocation_displacement",
    "dislocation_displacement",
    "dislocation_phase",
    "visible_burgers_vector",
    "complex_density",
    "fix_global_phase",
]

logger = logging.getLogger(__name__)

#: Au (111) interplanar spacing scaled to the grid (1 voxel = 1 angstrom), voxels.
AU111_D_SPACING: float = 2.35
#: Length of the fcc a/2<110> Burgers vector on the same scale, voxels.
AU_BURGERS_LENGTH: float = AU111_D_SPACING * (1.5**0.5)
#: Default reciprocal-lattice vector (1/voxel, no 2*pi): Au(111) along array axis 0.
DEFAULT_G: tuple[float, float, float] = (1.0 / AU111_D_SPACING, 0.0, 0.0)


# ---------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"`rng` must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def _check_n(n: int) -> int:
    if isinstance(n, bool) or int(n) != n or n < 2:
        raise ValueError(f"`n` must be an integer >= 2, got {n!r}")
    return int(n)


def _corr3(corr_length) -> tuple[float, float, float]:
    c = np.broadcast_to(np.asarray(corr_length, dtype=np.float64), (3,))
    if not np.all(np.isfinite(c)) or np.any(c <= 0):
        raise ValueError(f"`corr_length` must be positive (a number or 3 numbers, voxels), got {corr_length!r}")
    return tuple(float(x) for x in c)


def _vec3(v, name: str, nonzero: bool = False) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise ValueError(f"`{name}` must be a finite 3-vector, got {v!r}")
    if nonzero and np.linalg.norm(a) == 0:
        raise ValueError(f"`{name}` must be non-zero")
    return a


def _support_bool(support: np.ndarray) -> np.ndarray:
    s = np.asarray(support)
    if s.ndim != 3 or not (s.shape[0] == s.shape[1] == s.shape[2]):
        raise ValueError(f"`support` must be a cubic 3-D array (n, n, n), got shape {s.shape}")
    return s > 0


# ---------------------------------------------------------------------------
# Gaussian random fields and smooth random phases
# ---------------------------------------------------------------------------


def _filtered_noise(white: np.ndarray, corr: tuple[float, float, float]) -> np.ndarray:
    n = white.shape[0]
    spec = sfft.rfftn(white, workers=-1)
    f_full = sfft.fftfreq(n)
    f_half = sfft.rfftfreq(n)
    # Transfer function of a Gaussian kernel of standard deviation l (voxels).
    g0 = np.exp(-0.5 * (2 * np.pi * f_full * corr[0]) ** 2)
    g1 = np.exp(-0.5 * (2 * np.pi * f_full * corr[1]) ** 2)
    g2 = np.exp(-0.5 * (2 * np.pi * f_half * corr[2]) ** 2)
    spec *= g0[:, None, None] * g1[None, :, None] * g2[None, None, :]
    field = sfft.irfftn(spec, s=white.shape, workers=-1)
    field -= field.mean()
    rms = np.sqrt(np.mean(field * field))
    if rms > 0:
        field /= rms
    return field.astype(np.float32)


def gaussian_random_field(rng: np.random.Generator, n: int, corr_length) -> np.ndarray:
    """Zero-mean, unit-RMS Gaussian random field with Gaussian correlations.

    White noise is filtered in Fourier space by the transfer function of an
    anisotropic Gaussian kernel with standard deviation ``corr_length[k]``
    voxels along array axis ``k``. The field is periodic on the ``n^3`` box.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the white noise.
    n : int
        Grid size.
    corr_length : float or (3,) floats
        Kernel standard deviation per axis (voxels), > 0.

    Returns
    -------
    ndarray
        ``(n, n, n)`` float32, mean 0 and RMS 1 over the box.
    """
    rng = _check_rng(rng)
    n = _check_n(n)
    corr = _corr3(corr_length)
    return _filtered_noise(rng.standard_normal((n, n, n)), corr)


@lru_cache(maxsize=64)
def _seeded_grf(seed: int, n: int, corr: tuple[float, float, float], components: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.stack([_filtered_noise(rng.standard_normal((n, n, n)), corr) for _ in range(components)])
    out.setflags(write=False)
    return out


def seeded_gaussian_random_field(seed: int, n: int, corr_length, components: int = 1) -> np.ndarray:
    """:func:`gaussian_random_field` from an integer seed, cached (read-only result).

    Used by the time-varying scenarios, which store a seed instead of an array
    so that their parameters stay small and JSON-serialisable.

    Returns
    -------
    ndarray
        Read-only ``(components, n, n, n)`` float32; independent components.
    """
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}")
    if int(components) != components or components < 1:
        raise ValueError(f"`components` must be a positive integer, got {components!r}")
    return _seeded_grf(int(seed), _check_n(n), _corr3(corr_length), int(components))


def scale_to_range(
    field: np.ndarray,
    support: np.ndarray,
    peak_to_peak: float | None = None,
    rms: float | None = None,
) -> np.ndarray:
    """Centre and scale ``field`` inside ``support``; zero outside.

    Exactly one of ``peak_to_peak`` or ``rms`` must be given. With
    ``peak_to_peak = p`` the result spans ``[-p/2, p/2]`` inside the support;
    with ``rms`` it has zero mean and that RMS inside the support.

    Returns
    -------
    ndarray
        float32 array like ``field``.
    """
    f = np.asarray(field, dtype=np.float64)
    inside = _support_bool(support)
    if f.shape != inside.shape:
        raise ValueError(f"`field` must have the shape of `support` {inside.shape}, got {f.shape}")
    if (peak_to_peak is None) == (rms is None):
        raise ValueError("exactly one of `peak_to_peak` or `rms` must be given")
    out = np.zeros(f.shape, dtype=np.float32)
    if not inside.any():
        return out
    vals = f[inside]
    if peak_to_peak is not None:
        if not np.isfinite(peak_to_peak) or peak_to_peak < 0:
            raise ValueError(f"`peak_to_peak` must be finite and >= 0, got {peak_to_peak!r}")
        lo, hi = vals.min(), vals.max()
        span = hi - lo
        scaled = (vals - 0.5 * (lo + hi)) * (peak_to_peak / span if span > 0 else 0.0)
    else:
        if not np.isfinite(rms) or rms < 0:
            raise ValueError(f"`rms` must be finite and >= 0, got {rms!r}")
        c = vals - vals.mean()
        sd = np.sqrt(np.mean(c * c))
        scaled = c * (rms / sd if sd > 0 else 0.0)
    out[inside] = scaled
    return out


def random_phase(
    rng: np.random.Generator,
    support: np.ndarray,
    corr_length,
    peak_to_peak: float | None = None,
    rms: float | None = None,
) -> np.ndarray:
    """Smooth random phase (radians, float32) inside ``support``, zero outside.

    A :func:`gaussian_random_field` scaled by :func:`scale_to_range`.
    """
    inside = _support_bool(support)
    field = gaussian_random_field(rng, inside.shape[0], corr_length)
    return scale_to_range(field, inside, peak_to_peak=peak_to_peak, rms=rms)


# ---------------------------------------------------------------------------
# Strain
# ---------------------------------------------------------------------------


def random_displacement(rng: np.random.Generator, n: int, corr_length, amplitude: float) -> np.ndarray:
    """Smooth random displacement field ``u`` (voxels), ``(3, n, n, n)`` float32.

    Each component is an independent :func:`gaussian_random_field` with RMS
    ``amplitude`` voxels.
    """
    rng = _check_rng(rng)
    if not np.isfinite(amplitude) or amplitude < 0:
        raise ValueError(f"`amplitude` must be finite and >= 0, got {amplitude!r}")
    n = _check_n(n)
    corr = _corr3(corr_length)
    return np.stack([_filtered_noise(rng.standard_normal((n, n, n)), corr) for _ in range(3)]) * np.float32(
        amplitude
    )


def strain_phase(displacement: np.ndarray, G=DEFAULT_G, support: np.ndarray | None = None) -> np.ndarray:
    """Bragg phase ``phi = 2*pi * G . u`` (float32 radians).

    Parameters
    ----------
    displacement : ndarray, shape (3, ...)
        Displacement ``u`` in voxels; component ``k`` along array axis ``k``.
    G : (3,) floats
        Reciprocal-lattice vector in 1/voxel (no ``2*pi``).
    support : ndarray, optional
        Occupancy; the phase is set to zero where it is 0.
    """
    u = np.asarray(displacement)
    if u.ndim < 1 or u.shape[0] != 3:
        raise ValueError(f"`displacement` must have shape (3, ...), got {u.shape}")
    g = _vec3(G, "G")
    phi = (2 * np.pi) * np.tensordot(g, u.astype(np.float64), axes=1)
    if support is not None:
        inside = _support_bool(support)
        if inside.shape != phi.shape:
            raise ValueError(f"`support` must have shape {phi.shape}, got {inside.shape}")
        phi = np.where(inside, phi, 0.0)
    return phi.astype(np.float32)


def _line_frame(line_direction, edge_direction=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = _vec3(line_direction, "line_direction", nonzero=True)
    t = t / np.linalg.norm(t)
    if edge_direction is None or np.linalg.norm(edge_direction - np.dot(edge_direction, t) * t) < 1e-12:
        # Any unit vector perpendicular to t.
        helper = np.eye(3)[int(np.argmin(np.abs(t)))]
        e1 = helper - np.dot(helper, t) * t
    else:
        e1 = edge_direction - np.dot(edge_direction, t) * t
    e1 = e1 / np.linalg.norm(e1)
    e2 = np.cross(t, e1)
    return t, e1, e2


def _check_coords(coords) -> np.ndarray:
    c = np.asarray(coords, dtype=np.float64)
    if c.ndim < 1 or c.shape[0] != 3:
        raise ValueError(f"`coords` must have shape (3, ...), got {c.shape}")
    return c


def dislocation_displacement(
    coords: np.ndarray,
    line_point,
    line_direction,
    burgers,
    poisson_ratio: float = 0.3,
    core_radius: float = 0.5,
) -> np.ndarray:
    """Displacement (voxels) of a straight mixed dislocation in an infinite isotropic body.

    The Burgers vector is split into a screw part ``b_s = (b . t) t`` and an
    edge part ``b_e = b - b_s``. In the local frame ``e1 = b_e/|b_e|`` (glide
    direction), ``e2 = t x e1`` (glide-plane normal), with ``x, y`` the
    coordinates of ``r - line_point`` along ``e1, e2`` and
    ``theta = atan2(y, x)``, the classical Volterra solutions (Hirth & Lothe,
    *Theory of Dislocations*, ch. 3) are::

        screw:  u_t = b_s / (2 pi) * theta
        edge:   u_x = b_e / (2 pi) * [theta + x y / (2 (1 - nu) r^2)]
                u_y = -b_e / (2 pi) * [(1 - 2 nu) / (4 (1 - nu)) ln r^2
                                       + (x^2 - y^2) / (4 (1 - nu) r^2)]

    Only the ``theta`` terms are multi-valued, so ``u`` jumps by ``b`` across
    the cut ``theta = +-pi`` (the half-plane ``y = 0, x < 0``) and ``G . u``
    winds by ``G . b`` around the line. The single-valued terms use
    ``r^2 + core_radius^2`` so that the core stays finite.

    Parameters
    ----------
    coords : ndarray, shape (3, ...)
        Points (voxels), e.g. :func:`sim.geometry.centred_coords`.
    line_point : (3,) floats
        A point on the dislocation line (voxels).
    line_direction : (3,) floats
        Line direction ``t`` (normalised here).
    burgers : (3,) floats
        Burgers vector ``b`` (voxels).
    poisson_ratio : float
        ``nu`` in ``[0, 0.5)`` (gold: 0.44; 0.3 is a generic default).
    core_radius : float
        Regularisation radius of the core, voxels (> 0).

    Returns
    -------
    ndarray
        float64 displacement of shape ``coords.shape``.
    """
    c = _check_coords(coords)
    p = _vec3(line_point, "line_point")
    b = _vec3(burgers, "burgers")
    nu = float(poisson_ratio)
    if not 0.0 <= nu < 0.5:
        raise ValueError(f"`poisson_ratio` must be in [0, 0.5), got {poisson_ratio!r}")
    if not np.isfinite(core_radius) or core_radius <= 0:
        raise ValueError(f"`core_radius` must be > 0, got {core_radius!r}")
    t0 = _vec3(line_direction, "line_direction", nonzero=True)
    t0 = t0 / np.linalg.norm(t0)
    b_s = float(np.dot(b, t0))
    b_e_vec = b - b_s * t0
    b_e = float(np.linalg.norm(b_e_vec))
    t, e1, e2 = _line_frame(t0, b_e_vec if b_e > 1e-12 else None)
    shape = (3,) + (1,) * (c.ndim - 1)
    rel = c - p.reshape(shape)
    x = np.tensordot(e1, rel, axes=1)
    y = np.tensordot(e2, rel, axes=1)
    theta = np.arctan2(y, x)
    u = (b_s / (2 * np.pi)) * theta * t.reshape(shape)
    if b_e > 1e-12:
        r2 = x * x + y * y + core_radius**2
        ux = (b_e / (2 * np.pi)) * (theta + x * y / (2 * (1 - nu) * r2))
        uy = -(b_e / (2 * np.pi)) * (
            (1 - 2 * nu) / (4 * (1 - nu)) * np.log(r2) + (x * x - y * y) / (4 * (1 - nu) * r2)
        )
        u = u + ux * e1.reshape(shape) + uy * e2.reshape(shape)
    return u


def screw_dislocation_displacement(coords: np.ndarray, line_point, line_direction, burgers_length: float) -> np.ndarray:
    """Displacement of a pure screw dislocation, ``u = b/(2 pi) * theta * t`` (voxels).

    ``burgers_length`` is the signed length of ``b`` along ``t``.
    """
    if not np.isfinite(burgers_length):
        raise ValueError(f"`burgers_length` must be finite, got {burgers_length!r}")
    t = _vec3(line_direction, "line_direction", nonzero=True)
    t = t / np.linalg.norm(t)
    return dislocation_displacement(coords, line_point, t, burgers_length * t)


def edge_dislocation_displacement(
    coords: np.ndarray, line_point, line_direction, burgers, poisson_ratio: float = 0.3, core_radius: float = 0.5
) -> np.ndarray:
    """Displacement of a pure edge dislocation (``burgers`` perpendicular to the line), voxels."""
    t = _vec3(line_direction, "line_direction", nonzero=True)
    b = _vec3(burgers, "burgers", nonzero=True)
    if abs(np.dot(t, b)) > 1e-6 * np.linalg.norm(t) * np.linalg.norm(b):
        raise ValueError("`burgers` must be perpendicular to `line_direction` for an edge dislocation")
    return dislocation_displacement(coords, line_point, t, b, poisson_ratio, core_radius)


def dislocation_phase(
    support: np.ndarray,
    line_point,
    line_direction,
    burgers,
    G=DEFAULT_G,
    poisson_ratio: float = 0.3,
    core_radius: float = 0.5,
) -> np.ndarray:
    """Bragg phase ``2 pi G . u`` (float32) of a dislocation, zero outside ``support``.

    Coordinates are the centred voxel coordinates of the support's grid; see
    :func:`dislocation_displacement` for the other parameters. The phase winds
    by ``2 pi G . b`` around the line.
    """
    inside = _support_bool(support)
    u = dislocation_displacement(
        centred_coords(inside.shape[0]), line_point, line_direction, burgers, poisson_ratio, core_radius
    )
    return strain_phase(u, G, inside)


def visible_burgers_vector(
    rng: np.random.Generator, G=DEFAULT_G, length: float = AU_BURGERS_LENGTH
) -> np.ndarray:
    """Random Burgers vector of the given length with ``G . b = +-1`` (a visible dislocation).

    ``b = s (d G_hat + w)`` with ``d = 1/|G|``, ``w`` a random vector
    perpendicular to ``G`` of length ``sqrt(length^2 - d^2)`` and ``s = +-1``.
    For the Au defaults this is an a/2<110> vector seen by a {111} reflection.
    """
    rng = _check_rng(rng)
    g = _vec3(G, "G", nonzero=True)
    d = 1.0 / np.linalg.norm(g)
    if not np.isfinite(length) or length < d:
        raise ValueError(f"`length` must be >= 1/|G| = {d:.3f} voxels, got {length!r}")
    gh = g * d
    _, e1, e2 = _line_frame(gh)
    a = rng.uniform(0, 2 * np.pi)
    w = np.sqrt(length**2 - d**2) * (np.cos(a) * e1 + np.sin(a) * e2)
    s = 1.0 if rng.random() < 0.5 else -1.0
    return s * (d * gh + w)


# ---------------------------------------------------------------------------
# Complex density
# ---------------------------------------------------------------------------


def complex_density(amplitude: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """``amplitude * exp(i * phase)`` as complex64."""
    a = np.asarray(amplitude, dtype=np.float32)
    p = np.asarray(phase, dtype=np.float32)
    if a.shape != p.shape:
        raise ValueError(f"`phase` must have the shape of `amplitude` {a.shape}, got {p.shape}")
    out = np.empty(a.shape, dtype=np.complex64)
    out.real = a * np.cos(p)
    out.imag = a * np.sin(p)
    return out


def fix_global_phase(d: np.ndarray) -> np.ndarray:
    """Remove the (invisible) global phase: rotate ``d`` so that ``sum(d)`` is real and >= 0.

    The intensity does not change; series of densities become directly
    comparable and smooth in time. Returns complex64.
    """
    d = np.asarray(d)
    s = complex(d.sum(dtype=np.complex128))
    if abs(s) == 0:
        return d.astype(np.complex64)
    return (d * np.complex64(np.conj(s) / abs(s))).astype(np.complex64)
