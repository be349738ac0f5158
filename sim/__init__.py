"""Simulator of time-varying 3D crystals and their measured coherent diffraction.

numpy/scipy only; never imports ``latenttune`` (DESIGN.md section 1).
"""

from sim.forward import crop, diffraction_size, fft_centred, forward, ifft_centred, object_size, pad

__all__ = ["crop", "diffraction_size", "fft_centred", "forward", "ifft_centred", "object_size", "pad"]
