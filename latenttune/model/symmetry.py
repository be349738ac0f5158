"""The 48 symmetric views of a cubic grid: signed permutations of its axes (the cubic group ``O_h``).

A view ``g`` (a rotation by multiples of 90 degrees, alone or times the inversion ``r -> -r``) maps a
density to another density and its diffraction pattern to the pattern of that density; see
:mod:`latenttune.model.views` for how the trackers use them. This module needs neither torch nor a
model, so the command line can offer ``--views`` without loading them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from latenttune.validation import is_integer

__all__ = ["GridView", "VIEWS", "VIEW_COUNTS", "check_view_index", "check_views"]

VIEW_COUNTS = (1, 24, 48)
"""How many symmetric views a one-shot prediction may try: the identity alone, the 24 rotations, or
all 48 (rotations and rotations times the inversion)."""


@dataclass(frozen=True)
class GridView:
    """A signed permutation of the last three (grid) axes.

    ``apply(a)`` first reorders the axes (``axes[j]`` of the input becomes axis ``j``), then reflects
    the axes ``j`` with ``flips[j]`` about the grid centre (index ``i -> -i mod size``).

    Attributes
    ----------
    axes : tuple of int
        A permutation of ``(0, 1, 2)``.
    flips : tuple of bool
        Which output axes are reflected.
    """

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    @property
    def is_identity(self) -> bool:
        """True for the identity view."""
        return self.axes == (0, 1, 2) and not any(self.flips)

    @property
    def is_rotation(self) -> bool:
        """True for a proper rotation (determinant +1); the other 24 include the inversion."""
        sign = np.linalg.det(np.eye(3)[list(self.axes)]) * (-1) ** sum(self.flips)
        return bool(sign > 0)

    def apply(self, a: Any) -> Any:
        """The view of ``a`` (numpy array or tensor, grid on the last three axes)."""
        lead = a.ndim - 3
        order = tuple(range(lead)) + tuple(lead + j for j in self.axes)
        a = np.transpose(a, order) if isinstance(a, np.ndarray) else a.permute(order)
        return _reflect(a, [lead + j for j in range(3) if self.flips[j]])

    def undo(self, a: Any) -> Any:
        """The inverse of :meth:`apply`."""
        lead = a.ndim - 3
        a = _reflect(a, [lead + j for j in range(3) if self.flips[j]])
        inverse = tuple(int(i) for i in np.argsort(self.axes))
        order = tuple(range(lead)) + tuple(lead + j for j in inverse)
        return np.transpose(a, order) if isinstance(a, np.ndarray) else a.permute(order)


def _reflect(a: Any, dims: list[int]) -> Any:
    """Reflect ``a`` about the grid centre (index ``i -> -i mod size``) along ``dims``."""
    if not dims:
        return a
    if isinstance(a, np.ndarray):
        return np.roll(np.flip(a, axis=dims), 1, axis=dims)
    import torch  # a tensor: torch is loaded already

    return torch.roll(torch.flip(a, dims=dims), shifts=[1] * len(dims), dims=dims)


def _all_views() -> tuple[GridView, ...]:
    views = [GridView(tuple(axes), tuple(bool(f) for f in flips))  # type: ignore[arg-type]
             for axes in itertools.permutations(range(3)) for flips in itertools.product((0, 1), repeat=3)]
    # identity first, then the other 23 rotations, then the 24 improper views (stable otherwise)
    return tuple(sorted(views, key=lambda v: (not v.is_identity, not v.is_rotation)))


VIEWS: tuple[GridView, ...] = _all_views()
"""The 48 views; ``VIEWS[0]`` is the identity and ``VIEWS[:24]`` are the proper rotations."""



def check_views(views: Any) -> int:
    """Check a number of views (``1``, ``24`` or ``48``) and return it as an int.

    Raises
    ------
    ValueError
        Any other value.
    """
    if not is_integer(views) or int(views) not in VIEW_COUNTS:
        raise ValueError(f"`views` must be one of {VIEW_COUNTS}, got {views!r}")
    return int(views)


def check_view_index(index: Any) -> int:
    """Check an index into :data:`VIEWS` and return it as an int.

    Raises
    ------
    ValueError
        ``index`` is not an integer from 0 to 47.
    """
    if not is_integer(index) or not 0 <= int(index) < len(VIEWS):
        raise ValueError(f"`view` must be an integer index of the {len(VIEWS)} views (0 = identity), got {index!r}")
    return int(index)
