"""What a simulated sample is made of: its shape and its dislocation lines (ground truth).

A :class:`SampleDescriptor` names the physical ingredients of one simulated density, so that
a learned model can be taught to recognise them (crystal orientation and facet distances,
dislocation lines and their winding) and a benchmark can report them. It describes; it does
not render: the density itself comes from the scenario or training-pair generator that made
the descriptor.

Coordinates are the centred voxel coordinates of :func:`sim.geometry.centred_coords` (0 at index
``n // 2``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from sim.shapes import FacetedCrystal, Superellipsoid

__all__ = ["DislocationLine", "SampleDescriptor"]


@dataclass(frozen=True)
class DislocationLine:
    """A straight dislocation line and the Bragg reflection that sees it.

    Attributes
    ----------
    point : (3,) floats
        A point on the line (voxels, centred coordinates).
    direction : (3,) floats
        Unit line direction ``t``.
    burgers : (3,) floats
        Burgers vector ``b`` (voxels).
    G : (3,) floats
        Reciprocal-lattice vector of the reflection (1/voxel).
    poisson_ratio : float
        Poisson ratio of the isotropic Volterra field.
    """

    point: tuple[float, float, float]
    direction: tuple[float, float, float]
    burgers: tuple[float, float, float]
    G: tuple[float, float, float]
    poisson_ratio: float = 0.3

    def __post_init__(self) -> None:
        for name in ("point", "direction", "burgers", "G"):
            a = np.asarray(getattr(self, name), dtype=np.float64)
            if a.shape != (3,) or not np.all(np.isfinite(a)):
                raise ValueError(f"`{name}` must be a finite 3-vector, got {getattr(self, name)!r}")
            object.__setattr__(self, name, tuple(float(x) for x in a))
        t = np.asarray(self.direction)
        if np.linalg.norm(t) == 0:
            raise ValueError("`direction` must be non-zero")
        object.__setattr__(self, "direction", tuple(float(x) for x in t / np.linalg.norm(t)))

    @property
    def winding(self) -> float:
        """``G . b``: the Bragg phase winds by ``2 pi G . b`` counter-clockwise about ``direction``."""
        return float(np.dot(self.G, self.burgers))

    def translated(self, shift) -> "DislocationLine":
        """The same line moved by ``shift`` voxels."""
        return DislocationLine(
            point=tuple(np.asarray(self.point) + np.asarray(shift, dtype=np.float64)),
            direction=self.direction,
            burgers=self.burgers,
            G=self.G,
            poisson_ratio=self.poisson_ratio,
        )


Shape = Union[FacetedCrystal, Superellipsoid]


@dataclass(frozen=True)
class SampleDescriptor:
    """Ground-truth ingredients of one simulated density.

    Attributes
    ----------
    shape : FacetedCrystal or Superellipsoid or None
        The support's shape (None when the sample has no analytic shape, e.g. a decoded latent).
    dislocations : tuple of DislocationLine
        Dislocation lines whose Volterra phase the density carries (empty when none).
    """

    shape: Shape | None = None
    dislocations: tuple[DislocationLine, ...] = ()

    def __post_init__(self) -> None:
        if self.shape is not None and not isinstance(self.shape, (FacetedCrystal, Superellipsoid)):
            raise TypeError(f"`shape` must be a FacetedCrystal, a Superellipsoid or None, got {type(self.shape).__name__}")
        lines = tuple(self.dislocations)
        if any(not isinstance(line, DislocationLine) for line in lines):
            raise TypeError("`dislocations` must hold DislocationLine objects")
        object.__setattr__(self, "dislocations", lines)
