"""Where model checkpoints are: the shipped default model and :func:`model_path` (torch-free).

Kept apart from :mod:`latenttune.model.checkpoint` (which imports torch) so that the command line
can check its inputs and outputs (:mod:`latenttune.outputs`) before torch is loaded: a wrong
``--out`` or a FIFO is answered in well under a second.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEFAULT_MODEL_PATH", "model_path"]

#: The model shipped in the package (``--model default``).
DEFAULT_MODEL_PATH = Path(__file__).resolve().parents[1] / "data" / "default_model.pt"


def model_path(name_or_path: str | os.PathLike[str]) -> Path:
    """The checkpoint file ``"default"`` (the model shipped in the package) or a path names."""
    return DEFAULT_MODEL_PATH if str(name_or_path) == "default" else Path(name_or_path)
