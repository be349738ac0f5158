"""Do the values look like photon counts or like amplitudes? :func:`quantity_warning`.

Photon-counting detectors record whole numbers. The square root of whole numbers is mostly not
whole, but its square is. So values that are not whole numbers while their squares are look like
amplitudes (``sqrt`` of counts) read as intensities, and whole numbers above 1 read as amplitudes
look like counts. Data that are neither (normalised or background-subtracted intensities) say
nothing, and no warning is given.
"""

from __future__ import annotations

import numpy as np

__all__ = ["looks_like", "quantity_warning"]

_SAMPLE = 200_000


def looks_like(values: np.ndarray) -> str | None:
    """``"counts"``, ``"amplitudes"`` or None (cannot tell) for an array of measured values."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size < 100:
        return None
    if v.size > _SAMPLE:
        v = v[:: v.size // _SAMPLE + 1]
    whole = np.abs(v - np.round(v)) <= 1e-6 * np.maximum(v, 1.0)
    squares = v * v
    whole_squares = np.abs(squares - np.round(squares)) <= 1e-3 * np.maximum(squares, 1.0)
    if whole.mean() > 0.99 and (v > 1).mean() > 0.05:
        return "counts"
    if whole.mean() < 0.5 and whole_squares.mean() > 0.99:
        return "amplitudes"
    return None


def quantity_warning(values: np.ndarray, amplitude: bool, option: str = "--amplitude") -> str | None:
    """One line when the values look like the other quantity than the one they are read as, else None.

    Parameters
    ----------
    values : ndarray
        A measured volume, as stored.
    amplitude : bool
        Whether they are read as amplitudes (``option`` given).
    option : str
        The option that says so, named in the line.
    """
    kind = looks_like(values)
    if kind == "amplitudes" and not amplitude:
        return (f"the values look like amplitudes (sqrt of counts: not whole numbers, their squares are); if they are, "
                f"pass {option}")
    if kind == "counts" and amplitude:
        return f"the values look like photon counts (whole numbers), not amplitudes; if they are counts, drop {option}"
    return None
