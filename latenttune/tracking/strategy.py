"""The one seam between the tracker and a tracking method: :class:`Strategy`.

The tracker (:class:`latenttune.tracking.tracker.FrameTracker`) knows nothing of a method but
this interface. Per good frame it builds the frame's latent cost, asks the model's encoders when the
strategy :attr:`~Strategy.needs_encoder`, lets the strategy evaluate latents
(:meth:`~Strategy.run_frame`), keeps the best one, and hands its decoded density to
:meth:`~Strategy.refine`, where a strategy with a second stage (the hybrid's physics stage) works on
the voxels. Everything a caller needs to know about a strategy it says itself:
:meth:`~Strategy.describe` feeds the results file, the resume check and the Bluesky start document;
:meth:`~Strategy.clone` makes a fresh strategy with the same (or changed) settings, so that a plan
never changes the object it was given.

The concrete strategies and :func:`~latenttune.tracking.strategies.make_strategy` are in
:mod:`latenttune.tracking.strategies`.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from latenttune.limits import MAX_STEPS_PER_FRAME
from latenttune.validation import check_int

if TYPE_CHECKING:
    from latenttune.model.latent_cost import LatentCost
    from latenttune.tracking.physics_stage import PhysicsOutcome
    from latenttune.tracking.readback import ReadbackOutcome

__all__ = ["Strategy", "StrategyDescription", "check_strategy"]


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists, dataclasses as dicts and numpy scalars as Python numbers (JSON-ready)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True)
class StrategyDescription:
    """What a strategy is, in plain values (JSON-ready).

    Attributes
    ----------
    kind : str
        ``"hybrid"``, ``"es"``, ``"one-shot"`` or ``"gradient"``.
    name : str
        The kind with its mode when that is not the default (``"es-absolute"``, ``"hybrid-residual"``, ...).
    k : int
        Latent dimension it works on.
    steps_per_frame : int
        Cost evaluations (or gradient steps) per frame it spends itself, the encoders' not counted.
    uses_network_gradient : bool
        True only for the gradient comparator.
    settings : dict
        Every setting that changes its results, in the order a difference is reported (the resume
        check compares them; ``physics`` holds the physics stage's settings or None).
    options : dict
        The keyword arguments that rebuild it (:meth:`Strategy.clone`).
    """

    kind: str
    name: str
    k: int
    steps_per_frame: int
    uses_network_gradient: bool
    settings: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for metadata)."""
        return {"kind": self.kind, "name": self.name, "k": self.k, "steps_per_frame": self.steps_per_frame,
                "uses_network_gradient": self.uses_network_gradient, "settings": self.settings,
                "options": self.options}

    def line(self) -> str:
        """One line for logs and ``repr``: the name and its options."""
        options = ", ".join(f"{key}={json.dumps(value)}" for key, value in self.options.items() if key != "physics")
        return f"{self.name}(k={self.k}{', ' + options if options else ''})"


class Strategy(abc.ABC):
    """How the tracker improves the latent on one frame (abstract base of every tracking method).

    Subclasses set :attr:`kind`, :attr:`uses_network_gradient` and :attr:`has_physics_stage`, implement :meth:`run_frame`,
    :meth:`options` and the state methods, and may override :meth:`refine` (a second stage on the
    voxels) and :meth:`settings`.

    Attributes
    ----------
    k : int
        Latent dimension.
    steps_per_frame : int
        Cost evaluations per frame the strategy spends itself.
    """

    kind: ClassVar[str] = ""
    uses_network_gradient: ClassVar[bool] = False
    has_physics_stage: ClassVar[bool] = False
    """Whether :meth:`refine` runs a physics stage (its outputs then go to the results file)."""
    min_steps: ClassVar[int] = 1
    """The fewest ``steps_per_frame`` the strategy accepts."""

    def __init__(self, k: int, steps_per_frame: int) -> None:
        self.k = check_int("k", k, low=1)
        self.steps_per_frame = check_int("steps_per_frame", steps_per_frame, low=self.min_steps,
                                         high=MAX_STEPS_PER_FRAME)

    # -- what the tracker calls -----------------------------------------------------------------

    @property
    def name(self) -> str:
        """The kind, with the mode when it is not the strategy's default."""
        return self.kind

    @property
    def needs_encoder(self) -> bool:
        """Whether :meth:`run_frame` needs the encoder's prediction of every frame (not only the first)."""
        return True

    @abc.abstractmethod
    def run_frame(self, cost: LatentCost, encoded: np.ndarray | None, first: bool) -> tuple[np.ndarray, np.ndarray]:
        """Evaluate latents on one frame.

        Parameters
        ----------
        cost : LatentCost
            The frame's cost (cost values only, unless :attr:`uses_network_gradient`).
        encoded : ndarray, shape (k,), or None
            The encoders' chosen prediction of the frame (None when not asked for).
        first : bool
            True on the run's first good frame (start from ``encoded``).

        Returns
        -------
        (latents (S, k), costs (S,))
            Every latent evaluated, in order, and its cost; the tracker keeps the lowest.
        """

    def refine(self, decoded: np.ndarray, intensity: np.ndarray, mask: np.ndarray, index: int,
               alternatives: list[np.ndarray], device: Any = "cpu") -> PhysicsOutcome | None:
        """A second stage on the frame's voxels after the latent is chosen (none by default).

        Parameters
        ----------
        decoded : ndarray, shape (n, n, n), complex64
            The chosen latent's decoded density.
        intensity, mask : ndarray
            The frame's checked counts and mask.
        index : int
            The frame's index.
        alternatives : list of ndarray
            Other candidate densities of the frame (the encoders' decoded predictions that did not
            guide it, the chosen encoder's first).
        device : torch.device or str
            The model's device (where a second stage computes).
        """
        return None

    def settle(self, model: Any, output: np.ndarray, latent: np.ndarray) -> ReadbackOutcome | None:
        """After the second stage: the frame's final latent read back from its output (none by default).

        Parameters
        ----------
        model : LatentAutoencoder
            The model in the tracker's view.
        output : ndarray, shape (n, n, n), complex64
            The frame's reconstruction (the second stage's output, or the decoded latent).
        latent : ndarray, shape (k,)
            The frame's latent so far.
        """
        return None

    @property
    def previous_output(self) -> np.ndarray | None:
        """The second stage's last output (its warm start for the next frame), or None."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state, enough to continue exactly (the second stage's output aside)."""
        return {}

    def load_state_dict(self, state: dict[str, Any], previous_output: np.ndarray | None = None) -> None:
        """Restore :meth:`state_dict` (and, for a strategy with a second stage, its last output)."""
        return None

    @property
    def cost_slots(self) -> int:
        """How many measured-cost evaluations per frame a results row keeps (``step_costs``'s width)."""
        return self.steps_per_frame

    # -- what it is -----------------------------------------------------------------------------

    @abc.abstractmethod
    def options(self) -> dict[str, Any]:
        """The keyword arguments (besides ``k``) that rebuild this strategy with the same settings."""

    def settings(self) -> dict[str, Any]:
        """Every setting that changes the results, most specific first (the resume check's order)."""
        return {"strategy": self.kind}

    def describe(self) -> StrategyDescription:
        """The strategy in plain values (:class:`StrategyDescription`)."""
        return StrategyDescription(kind=self.kind, name=self.name, k=self.k, steps_per_frame=self.steps_per_frame,
                                   uses_network_gradient=self.uses_network_gradient,
                                   settings=_plain(self.settings()), options=_plain(self.options()))

    def clone(self, **changes: Any) -> Strategy:
        """A fresh strategy (no state) with this one's settings, ``changes`` applied (e.g. ``steps_per_frame``)."""
        options = {**copy.deepcopy(self.options()), **changes}
        return type(self)(self.k, **options)

    def __repr__(self) -> str:
        return self.describe().line()


def check_strategy(strategy: Any, k: int) -> Strategy:
    """``strategy`` if it is a :class:`Strategy` working on ``k`` latent components.

    Raises
    ------
    TypeError
        Not a strategy (e.g. a name: build one with :func:`latenttune.tracking.make_strategy`).
    ValueError
        A strategy for another latent dimension.
    """
    if not isinstance(strategy, Strategy):
        raise TypeError("`strategy` must be a tracking strategy (latenttune.tracking.make_strategy), got "
                        f"{type(strategy).__name__}")
    if strategy.k != k:
        raise ValueError(f"`strategy` works on k = {strategy.k} latent components but the model has k = {k}")
    return strategy
