"""The measurement geometry of a Bragg CDI scan: :class:`BraggGeometry` and :class:`Diffractometer`.

A rocking scan records, for each angle of one sample circle, a 2D detector frame: a 3D array
whose axes are, in this project's order, **(rocking angle, detector row, detector column)**.
Where each voxel of that array sits in reciprocal space follows from the X-ray energy, the
detector's distance and pixel size, the rocking step, and the diffractometer: which circles carry
the sample and the detector, about which axes they turn and at which angles they stood. The
library that turns angles into q here is `xrayutilities` (:class:`xrayutilities.experiment.QConversion`),
in its own conventions: the laboratory frame has the incident beam along ``beam_direction``
(default +y), z up; a circle is written ``"x+"`` (right-handed about +x), ``"z-"``, ...; angles
list the outermost circle first; the detector's pixel directions are given the same way at all
detector angles 0, where the direct beam hits pixel ``direct_beam``.

Two ways to say it:

* **the simple case** (the flags of ``latenttune prepare``): the energy, distance, pixel size,
  rocking step, the reflection ``hkl`` and the cubic lattice constant. The usual approximation is
  then made: the detector stands perpendicular to the exit beam at the Bragg angle ``2 theta``
  from Bragg's law, in a vertical scattering plane, and the sample rocks about the axis normal to
  that plane (:meth:`Diffractometer.simple`); the Bragg peak of the reference lattice is taken to
  be at the centre of the prepared window. The lattice's mean strain can then not be measured
  (the peak is where the reference lattice puts it by construction).
* **the full case** (a geometry file or a preset plus angles, or a CXI file's ``instrument_1``):
  the circles, their angles at the first frame of the scan, which circle rocks, and the
  direct-beam pixel. The window's centre is then placed in q by the real angles, and its distance
  from the origin, against ``|G|`` of the reference lattice, gives the mean lattice strain.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latenttune.validation import check_int, check_number

__all__ = ["BraggGeometry", "Diffractometer", "PRESETS", "load_geometry", "wavelength_nm"]

#: h c in keV nm: ``lambda [nm] = HC_KEV_NM / E [keV]``.
HC_KEV_NM = 1.239841984

_AXES = {f"{a}{s}" for a in "xyz" for s in "+-"}


def wavelength_nm(energy_kev: float) -> float:
    """X-ray wavelength in nm of a photon energy in keV."""
    return HC_KEV_NM / check_number("energy_kev", energy_kev, low=0, open_low=True)


def _circles(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"`{name}` must be a non-empty list of circles such as ['x+', 'z-'], got {value!r}")
    out = tuple(str(v) for v in value)
    bad = [v for v in out if v not in _AXES]
    if bad:
        raise ValueError(f"`{name}` must name circles as 'x+', 'y-', 'z+', ... (axis and sense), got {bad}")
    return out


def _floats(name: str, value: Any, length: int | None = None) -> tuple[float, ...]:
    try:
        a = np.asarray(value, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a list of numbers, got {value!r}") from None
    if (length is not None and a.size != length) or not np.isfinite(a).all():
        raise ValueError(f"`{name}` must be {length or 'some'} finite number(s), got {value!r}")
    return tuple(float(v) for v in a)


@dataclass(frozen=True)
class Diffractometer:
    """The diffractometer of a scan, in xrayutilities' terms (see the module docstring).

    Attributes
    ----------
    sample_circles, detector_circles : tuple of str
        The circles, outermost first (``"x+"``: right-handed about +x).
    sample_angles_deg, detector_angles_deg : tuple of float
        Their angles at the first frame of the scan (the rocking circle's changes by
        ``rocking_step_deg`` per frame).
    rocking_circle : int
        Index in ``sample_circles`` of the circle that rocks.
    direct_beam : (float, float)
        Detector pixel (row, column) the direct beam hits with every detector angle at 0.
    detector_row_direction, detector_column_direction : str
        Direction in which the row and column indices grow, at detector angles 0.
    beam_direction : (float, float, float)
        Incident beam direction in the laboratory frame.
    """

    sample_circles: tuple[str, ...]
    sample_angles_deg: tuple[float, ...]
    detector_circles: tuple[str, ...]
    detector_angles_deg: tuple[float, ...]
    rocking_circle: int = 0
    direct_beam: tuple[float, float] = (0.0, 0.0)
    detector_row_direction: str = "z-"
    detector_column_direction: str = "x+"
    beam_direction: tuple[float, float, float] = (0.0, 1.0, 0.0)

    def __post_init__(self) -> None:
        sc = _circles("sample_circles", self.sample_circles)
        dc = _circles("detector_circles", self.detector_circles)
        object.__setattr__(self, "sample_circles", sc)
        object.__setattr__(self, "detector_circles", dc)
        object.__setattr__(self, "sample_angles_deg", _floats("sample_angles_deg", self.sample_angles_deg, len(sc)))
        object.__setattr__(self, "detector_angles_deg",
                           _floats("detector_angles_deg", self.detector_angles_deg, len(dc)))
        check_int("rocking_circle", self.rocking_circle, low=0, high=len(sc) - 1)
        object.__setattr__(self, "direct_beam", _floats("direct_beam", self.direct_beam, 2))
        for name in ("detector_row_direction", "detector_column_direction"):
            if getattr(self, name) not in _AXES:
                raise ValueError(f"`{name}` must be one of {sorted(_AXES)}, got {getattr(self, name)!r}")
        beam = _floats("beam_direction", self.beam_direction, 3)
        if not np.linalg.norm(beam) > 0:
            raise ValueError(f"`beam_direction` must be a non-zero vector, got {self.beam_direction!r}")
        object.__setattr__(self, "beam_direction", beam)

    @classmethod
    def simple(cls, two_theta_deg: float, detector_centre: tuple[float, float] = (0.0, 0.0)) -> Diffractometer:
        """The usual approximation: vertical scattering plane, rocking about x (normal to it), detector at 2 theta.

        The sample circle ``"x+"`` stands at ``theta`` and the detector circle ``"x+"`` at ``2 theta``,
        the beam along +y, so the reflection's q points along +z; the detector faces the exit beam
        and ``detector_centre`` is where the exit beam hits it.
        """
        two_theta = check_number("two_theta_deg", two_theta_deg, low=0, high=180, open_low=True, open_high=True)
        return cls(("x+",), (two_theta / 2,), ("x+",), (two_theta,), 0, tuple(detector_centre))

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON, HDF5 attributes)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class BraggGeometry:
    """The geometry of a Bragg CDI scan (see the module docstring).

    Attributes
    ----------
    energy_kev : float
        Photon energy.
    detector_distance_m : float
        Sample to detector distance.
    pixel_size_um : (float, float)
        Detector pixel size along rows and columns (one number: square pixels).
    rocking_step_deg : float
        Rocking-angle step between frames (signed: the sense of the rocking circle).
    reflection : (int, int, int)
        The reflection ``hkl`` measured.
    lattice_constant_nm : float
        Cubic lattice constant of the reference (unstrained) lattice.
    diffractometer : Diffractometer or None
        The full geometry; None: the simple approximation.
    source : str
        Where the geometry came from (flags, a file, a preset, a CXI file).
    """

    energy_kev: float
    detector_distance_m: float
    pixel_size_um: tuple[float, float]
    rocking_step_deg: float
    reflection: tuple[int, int, int]
    lattice_constant_nm: float
    diffractometer: Diffractometer | None = None
    source: str = "flags"

    def __post_init__(self) -> None:
        check_number("energy_kev", self.energy_kev, low=0, open_low=True)
        check_number("detector_distance_m", self.detector_distance_m, low=0, open_low=True)
        pixel = self.pixel_size_um
        pixel = (pixel, pixel) if isinstance(pixel, (int, float)) and not isinstance(pixel, bool) else pixel
        pixel = _floats("pixel_size_um", pixel, 2)
        if min(pixel) <= 0:
            raise ValueError(f"`pixel_size_um` must be positive, got {self.pixel_size_um!r}")
        object.__setattr__(self, "pixel_size_um", pixel)
        step = check_number("rocking_step_deg", self.rocking_step_deg)
        if step == 0 or abs(step) >= 10:
            raise ValueError(f"`rocking_step_deg` must be non-zero and below 10 degrees, got {self.rocking_step_deg!r}")
        object.__setattr__(self, "reflection", parse_reflection(self.reflection))
        check_number("lattice_constant_nm", self.lattice_constant_nm, low=0, open_low=True)
        if self.diffractometer is not None and not isinstance(self.diffractometer, Diffractometer):
            raise TypeError(f"`diffractometer` must be a Diffractometer or None, got {type(self.diffractometer).__name__}")
        if self.two_theta_deg is None:
            raise ValueError(f"reflection {self.reflection} of a lattice constant {self.lattice_constant_nm} nm is "
                             f"out of reach at {self.energy_kev} keV (lambda / 2d > 1)")

    # -- derived quantities ----------------------------------------------------------------------

    @property
    def wavelength_nm(self) -> float:
        """X-ray wavelength."""
        return wavelength_nm(self.energy_kev)

    @property
    def d_spacing_nm(self) -> float:
        """Interplanar spacing of the reflection in the reference lattice, ``a / sqrt(h^2 + k^2 + l^2)``."""
        return self.lattice_constant_nm / math.sqrt(sum(h * h for h in self.reflection))

    @property
    def G_norm(self) -> float:
        """``|G| = 2 pi / d`` of the reference lattice, in 1/nm."""
        return 2 * math.pi / self.d_spacing_nm

    @property
    def two_theta_deg(self) -> float | None:
        """Bragg angle ``2 theta`` of the reference lattice (None: out of reach)."""
        s = self.wavelength_nm / (2 * self.d_spacing_nm)
        return None if s >= 1 else 2 * math.degrees(math.asin(s))

    @property
    def full(self) -> bool:
        """Whether the diffractometer is known (else the simple approximation)."""
        return self.diffractometer is not None

    def setup(self, detector_centre: tuple[float, float] = (0.0, 0.0)) -> Diffractometer:
        """The diffractometer: the given one, or the simple approximation's."""
        if self.diffractometer is not None:
            return self.diffractometer
        assert self.two_theta_deg is not None
        return Diffractometer.simple(self.two_theta_deg, detector_centre)

    def approximation(self) -> str:
        """What the geometry assumes, in one sentence."""
        if self.full:
            return ("full geometry: diffractometer circles and angles as given, q of every voxel from the angles "
                    "(xrayutilities)")
        return (f"simple approximation: detector perpendicular to the exit beam at 2theta = {self.two_theta_deg:.3f} "
                "deg (Bragg's law), vertical scattering plane, rocking about the axis normal to it; the Bragg peak of "
                "the reference lattice at the centre of the prepared window (no absolute strain)")

    def line(self) -> str:
        """One human-readable line."""
        hkl = "".join(str(h) for h in self.reflection)
        return (f"{self.energy_kev:g} keV (lambda {self.wavelength_nm:.5f} nm), detector {self.detector_distance_m:g} m, "
                f"pixel {self.pixel_size_um[0]:g}x{self.pixel_size_um[1]:g} um, rocking step {self.rocking_step_deg:g} "
                f"deg, reflection {hkl} of a = {self.lattice_constant_nm:g} nm (d = {self.d_spacing_nm:.5f} nm, "
                f"|G| = {self.G_norm:.4f} 1/nm, 2theta = {self.two_theta_deg:.3f} deg); {self.approximation()}")

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON, HDF5 attributes); :meth:`from_dict` reads them back."""
        out = {k: getattr(self, k) for k in ("energy_kev", "detector_distance_m", "rocking_step_deg",
                                              "lattice_constant_nm", "source")}
        out["pixel_size_um"] = list(self.pixel_size_um)
        out["reflection"] = list(self.reflection)
        out["diffractometer"] = None if self.diffractometer is None else self.diffractometer.to_dict()
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str | None = None) -> BraggGeometry:
        """A geometry from plain values (a geometry file, an attribute); unknown keys are an error."""
        if not isinstance(values, Mapping):
            raise TypeError(f"a geometry must be a mapping of names to values, got {type(values).__name__}")
        values = dict(values)
        known = {f.name for f in dataclasses.fields(cls)}
        setup_keys = {f.name for f in dataclasses.fields(Diffractometer)}
        unknown = sorted(set(values) - known - setup_keys - {"preset"})
        if unknown:
            raise ValueError(f"unknown geometry keys {unknown}; known: {sorted(known | setup_keys | {'preset'})}")
        setup = values.pop("diffractometer", None)
        preset = values.pop("preset", None)
        flat = {k: values.pop(k) for k in list(values) if k in setup_keys}
        if preset is not None:
            if preset not in PRESETS:
                raise ValueError(f"`preset` must be one of {sorted(PRESETS)}, got {preset!r}")
            setup = {**PRESETS[preset], **(setup or {}), **flat}
        elif flat:
            setup = {**(setup or {}), **flat}
        missing = sorted({"energy_kev", "detector_distance_m", "pixel_size_um", "rocking_step_deg", "reflection",
                          "lattice_constant_nm"} - set(values))
        if missing:
            raise ValueError(f"the geometry lacks {missing}")
        if source is not None:
            values["source"] = source
        diffractometer = None if setup is None else (setup if isinstance(setup, Diffractometer)
                                                     else Diffractometer(**setup))
        return cls(**values, diffractometer=diffractometer)


def parse_reflection(value: Any) -> tuple[int, int, int]:
    """``hkl`` from ``"111"``, ``"1,1,1"``, ``"2 0 0"``, ``"-1 1 1"`` or three integers."""
    if isinstance(value, str):
        text = value.strip()
        parts = text.replace(",", " ").split()
        if len(parts) == 1 and len(text) == 3 and text.isdigit():
            parts = list(text)
        try:
            value = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"`reflection` must be three Miller indices such as 111 or 2,0,0, got {text!r}") from None
    try:
        hkl = tuple(int(v) for v in value)
        exact = all(float(v) == int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"`reflection` must be three Miller indices such as 111 or 2,0,0, got {value!r}") from None
    if len(hkl) != 3 or not exact or hkl == (0, 0, 0):
        raise ValueError(f"`reflection` must be three integer Miller indices, not all 0, got {value!r}")
    return hkl  # type: ignore[return-value]


#: Diffractometers by name: the circle layout (the angles and direct beam still have to be given).
PRESETS: dict[str, dict[str, Any]] = {
    # a vertical scattering plane: the sample rocks about x (normal to it), one detector arm about x
    "vertical": {"sample_circles": ["x+"], "detector_circles": ["x+"], "detector_row_direction": "z-",
                 "detector_column_direction": "x+", "beam_direction": [0, 1, 0]},
    # a horizontal scattering plane: the sample rocks about z, one detector arm about z
    "horizontal": {"sample_circles": ["z-"], "detector_circles": ["z-"], "detector_row_direction": "z-",
                   "detector_column_direction": "x+", "beam_direction": [0, 1, 0]},
    # a six-circle layout: sample mu (about z), eta (about x), detector nu (about z) and delta (about x)
    "six-circle": {"sample_circles": ["z-", "x+"], "rocking_circle": 1, "detector_circles": ["z-", "x+"],
                   "detector_row_direction": "z-",
                   "detector_column_direction": "x+", "beam_direction": [0, 1, 0]},
}


def load_geometry(path: str | os.PathLike[str]) -> BraggGeometry:
    """Read a geometry file: JSON (``.json``) or TOML (``.toml``) with the keys of :class:`BraggGeometry`.

    The diffractometer's keys (:class:`Diffractometer`) may stand at the top level or under
    ``diffractometer``; ``preset = "six-circle"`` fills in the circles of a preset (:data:`PRESETS`).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"geometry file not found: {p}")
    text = p.read_text()
    if p.suffix.lower() == ".toml":
        import tomllib

        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{p}: not valid TOML ({exc})") from None
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}: not valid JSON ({exc}); a geometry file is .json or .toml") from None
    return BraggGeometry.from_dict(values, source=f"geometry file {p.name}")
