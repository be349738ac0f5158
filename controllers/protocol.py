"""The interface every latent controller follows (extremum seeking, gradient descent, encoder-only).

A controller proposes a point, is told the cost measured there, and moves on::

    z = controller.suggest()      # np.ndarray, shape (k,), caller's units
    controller.ingest(cost)       # cost measured at that z
    controller.position()         # where it stands now (caller units), without suggesting
    controller.reset(z0)          # start again (optionally from a new point)
    snapshot = controller.to_dict()  # JSON-serialisable; the class's from_dict rebuilds it

``latenttune``'s extremum-seeking strategies drive their controller through these methods only.

The names ``suggest``/``ingest`` are those of Xopt and bluesky-adaptive (docs/conventions.md section 4).
``from_dict`` is a classmethod by convention and is not part of the runtime check.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Controller"]


@runtime_checkable
class Controller(Protocol):
    """Structural type of a cost-driven controller.

    ``isinstance(obj, Controller)`` checks that the five methods exist (not their signatures).
    """

    def suggest(self) -> np.ndarray:
        """Point at which to measure the next cost, shape (k,), within the controller's bounds."""
        ...

    def ingest(self, cost: float) -> None:
        """Advance one step with the finite cost measured at the last suggested point."""
        ...

    def position(self) -> np.ndarray:
        """The controller's current point, shape (k,), caller units (no suggestion is made)."""
        ...

    def reset(self, z0: Any = None) -> None:
        """Restart from ``z0`` (caller units), or from the controller's own start if None."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable snapshot (parameters and state) from which the run can resume exactly."""
        ...
