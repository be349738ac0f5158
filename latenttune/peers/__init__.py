"""Adapters to the phase-retrieval tools that peers would use instead of latenttune.

They exist for side-by-side benchmarks (``benchmarks/bench_vs_cohere.py``): each adapter takes a
measured pattern in the project's conventions (docs/conventions.md section 2) and returns a density on the
object grid in the project's conventions, so that ``E_r`` and ``E_q`` are computed identically for
every method.

* :mod:`latenttune.peers.cohere` -- cohere-core (APS), ER/HIO with shrink-wrap
  (:class:`~latenttune.peers.cohere.CohereRecipe`, :func:`~latenttune.peers.cohere.reconstruct`).

The peer packages are optional (``pip install 'latenttune[bench]'``) and imported only when an
adapter is called.
"""

from latenttune.peers.cohere import CohereRecipe, cohere_version, reconstruct

__all__ = ["CohereRecipe", "cohere_version", "reconstruct"]
