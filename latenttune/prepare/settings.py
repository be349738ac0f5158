"""How ``latenttune prepare`` puts measured volumes on the model's grid: :class:`PrepareSettings`."""

from __future__ import annotations

from dataclasses import dataclass

from latenttune.validation import check_choice, check_int, check_number

__all__ = ["PrepareSettings", "CENTRES", "DEFAULT_OVERSAMPLING"]

#: Oversampling of the default model's training data by
#: :func:`latenttune.prepare.window.estimate_oversampling` (the median over pairs of the default
#: recipe; ``tests/test_prepare.py`` measures it).
DEFAULT_OVERSAMPLING = 4.5

CENTRES = ("series", "frame")
"""Where a series' window is centred: on the peak of the summed frames, or on each frame's own."""


@dataclass(frozen=True)
class PrepareSettings:
    """How :func:`prepare_series` puts measured volumes on the model's grid.

    Attributes
    ----------
    binning : tuple of 3 ints or None
        Voxels summed per output voxel along each axis; None chooses it (:func:`choose_binning`).
    oversampling : float
        The oversampling automatic binning aims at (default: the model's training data).
    min_oversampling : float
        Below this the object does not fit in the model's ``n^3`` object box (``N = 2n``): an error.
    edge_margin : float
        The peak must have at least ``edge_margin * N`` measured output voxels on each side.
    centre : {"series", "frame"}
        One window for the whole series, around the peak of the summed frames (the sample's
        changes, a moving peak included, stay visible), or each frame centred on its own peak.
    hot_factor : float or None
        A voxel brighter than ``hot_factor * (median of its measured neighbours + 1)`` (26 at most)
        is a hot pixel; None finds none.
    gap_min_counts : float or None
        A run of planes or lines with no counts is a detector gap when the nearest planes or lines
        on both sides (within ``max_gap_width``) hold at least this many counts; None finds none.
    max_gap_width : int
        Widest gap found, in voxels.
    """

    binning: tuple[int, int, int] | None = None
    oversampling: float = DEFAULT_OVERSAMPLING
    min_oversampling: float = 2.0
    edge_margin: float = 0.25
    centre: str = "series"
    hot_factor: float | None = 100.0
    gap_min_counts: float | None = 20.0
    max_gap_width: int = 8

    def __post_init__(self) -> None:
        if self.binning is not None:
            b = tuple(self.binning) if isinstance(self.binning, (tuple, list)) else ()
            if len(b) != 3:
                raise ValueError(f"`binning` must be None or three integers >= 1, got {self.binning!r}")
            object.__setattr__(self, "binning", tuple(check_int("binning", v, low=1) for v in b))
        object.__setattr__(self, "oversampling", check_number("oversampling", self.oversampling, low=0, open_low=True))
        object.__setattr__(self, "min_oversampling",
                           check_number("min_oversampling", self.min_oversampling, low=0, open_low=True))
        if self.oversampling < self.min_oversampling:
            raise ValueError(f"`oversampling` ({self.oversampling}) must be >= `min_oversampling` "
                             f"({self.min_oversampling})")
        check_number("edge_margin", self.edge_margin, low=0, high=0.5, open_high=True)
        check_choice("centre", self.centre, CENTRES)
        object.__setattr__(self, "hot_factor",
                           check_number("hot_factor", self.hot_factor, low=0, open_low=True, allow_none=True))
        object.__setattr__(self, "gap_min_counts",
                           check_number("gap_min_counts", self.gap_min_counts, low=0, open_low=True, allow_none=True))
        check_int("max_gap_width", self.max_gap_width, low=1)
