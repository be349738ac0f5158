"""Simulator of time-varying 3D crystals and their measured coherent diffraction.

numpy/scipy only; never imports ``latenttune`` (docs/conventions.md section 1).

Modules: :mod:`sim.forward` (the one forward model), :mod:`sim.geometry` (grids, rotations),
:mod:`sim.shapes` (anti-aliased supports), :mod:`sim.phase` (random, strain and dislocation
phases), :mod:`sim.scenarios` (time-varying samples ``d(r, t)``), :mod:`sim.atomistic` (FCC crystals
binned to the grid), :mod:`sim.descriptor` (what a sample is made of: shape, dislocation lines),
:mod:`sim.detector` (Poisson counting, beamstop, gaps, saturation) and :mod:`sim.training`
(reproducible training pairs).
"""

from sim.descriptor import DislocationLine, SampleDescriptor
from sim.detector import Detector, Measurement
from sim.forward import crop, diffraction_size, fft_centred, forward, ifft_centred, object_size, pad
from sim.scenarios import SCENARIOS, Scenario, make_scenario
from sim.shapes import FacetedCrystal, Superellipsoid, random_shape
from sim.training import TrainingPair, TrainingPairGenerator

__all__ = [
    "Detector",
    "DislocationLine",
    "FacetedCrystal",
    "Measurement",
    "SCENARIOS",
    "SampleDescriptor",
    "Scenario",
    "Superellipsoid",
    "TrainingPair",
    "TrainingPairGenerator",
    "crop",
    "diffraction_size",
    "fft_centred",
    "forward",
    "ifft_centred",
    "make_scenario",
    "object_size",
    "pad",
    "random_shape",
]
