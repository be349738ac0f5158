"""ParaView export: the .vti file reads back with the same arrays, grid and origin.

The file is read back with a minimal reader of VTK's XML image data (raw appended binary, UInt64
block headers) written here for the test only, so the test does not depend on the writer's library.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from latenttune.io import ResultWriter
from latenttune.movies.vtk_export import export_result_frame, export_vti

_TYPES = {"Float32": "<f4", "Float64": "<f8", "Int32": "<i4", "Int64": "<i8", "UInt8": "u1"}


def read_vti(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """ImageData attributes and point-data arrays (shaped (nx, ny, nz), x fastest in the file)."""
    raw = path.read_bytes()
    marker = raw.index(b"<AppendedData")
    start = raw.index(b"_", marker) + 1  # the binary block starts after the underscore
    header = raw[:marker].decode() + "</VTKFile>"
    root = ET.fromstring(header.replace("<AppendedData", ""))
    assert root.attrib["type"] == "ImageData" and root.attrib["header_type"] == "UInt64"
    assert root.attrib["byte_order"] == "LittleEndian"
    image = root.find("ImageData")
    x0, x1, y0, y1, z0, z1 = (int(v) for v in image.attrib["WholeExtent"].split())
    shape = (x1 - x0 + 1, y1 - y0 + 1, z1 - z0 + 1)
    arrays = {}
    for array in image.find("Piece").find("PointData").findall("DataArray"):
        assert array.attrib["format"] == "appended" and array.attrib["NumberOfComponents"] == "1"
        offset = start + int(array.attrib["offset"])
        nbytes = int(np.frombuffer(raw, "<u8", 1, offset)[0])
        dtype = np.dtype(_TYPES[array.attrib["type"]])
        values = np.frombuffer(raw, dtype, nbytes // dtype.itemsize, offset + 8)
        arrays[array.attrib["Name"]] = values.reshape(shape, order="F")
    return dict(image.attrib), arrays


def _density(shape=(6, 8, 10), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 1, shape) * np.exp(1j * rng.uniform(-np.pi, np.pi, shape))).astype(np.complex64)


def test_vti_reads_back_with_the_same_arrays_grid_and_origin(tmp_path):
    d = _density()
    out = export_vti(d, tmp_path / "d.vti", spacing=(1.0, 2.0, 0.5))
    attrs, arrays = read_vti(out)
    assert sorted(arrays) == ["amplitude", "phase"]
    np.testing.assert_array_equal(arrays["amplitude"], np.abs(d).astype(np.float32))
    np.testing.assert_array_equal(arrays["phase"], np.angle(d).astype(np.float32))
    assert arrays["amplitude"].shape == (6, 8, 10)  # array axes 0, 1, 2 = x, y, z
    np.testing.assert_allclose([float(v) for v in attrs["Spacing"].split()], [1.0, 2.0, 0.5])
    # the centre voxel (index n//2 on each axis) sits at the origin
    np.testing.assert_allclose([float(v) for v in attrs["Origin"].split()], [-3.0, -8.0, -2.5])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.vti"]  # no temporary left


def test_export_refuses_bad_arguments_and_keeps_existing_files(tmp_path):
    out = tmp_path / "d.vti"
    out.write_text("old")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_vti(_density(), out)
    assert out.read_text() == "old"
    export_vti(_density(), out, overwrite=True)
    assert read_vti(out)[1]["amplitude"].shape == (6, 8, 10)
    with pytest.raises(ValueError, match=r"\.vti"):
        export_vti(_density(), tmp_path / "d.vtk")
    with pytest.raises(ValueError, match="3-D"):
        export_vti(np.zeros((4, 4)), tmp_path / "e.vti")
    with pytest.raises(ValueError, match="finite"):
        export_vti(np.full((4, 4, 4), np.nan), tmp_path / "e.vti")
    with pytest.raises(ValueError, match="`spacing`"):
        export_vti(_density(), tmp_path / "e.vti", spacing=-1.0)


@pytest.fixture
def results_file(tmp_path) -> tuple[Path, list[np.ndarray]]:
    """Results of series frames 2, 3, 4 (a leading frame had no row), n = 8."""
    path = tmp_path / "r.h5"
    densities = [_density((8, 8, 8), seed) for seed in range(3)]
    with ResultWriter(path, n=8, k=2, attrs={"model_checksum": "x"}) as writer:
        for row, d in enumerate(densities):
            writer.append(np.zeros(2), 0.1, d, time=float(row), steps=1, index=row + 2)
    return path, densities


def test_export_result_frame_picks_the_series_frame(results_file, tmp_path):
    path, densities = results_file
    out, shown = export_result_frame(path, 3, tmp_path / "f3.vti")
    assert shown == "decoded"  # no hybrid fields in this file
    np.testing.assert_array_equal(read_vti(out)[1]["phase"], np.angle(densities[1]).astype(np.float32))
    last, _ = export_result_frame(path, -1, tmp_path / "last.vti")
    np.testing.assert_array_equal(read_vti(last)[1]["amplitude"], np.abs(densities[2]).astype(np.float32))
    with pytest.raises(ValueError, match=r"frames 2 \.\. 4"):
        export_result_frame(path, 0, tmp_path / "f0.vti")


def test_cli_export(results_file, tmp_path, capsys):
    from latenttune.cli import main

    path, densities = results_file
    out = tmp_path / "frame4.vti"
    assert main(["export", str(path), "--frame", "4", "--out", str(out), "--spacing", "2"]) == 0
    assert "frame 4" in capsys.readouterr().out
    attrs, arrays = read_vti(out)
    np.testing.assert_array_equal(arrays["amplitude"], np.abs(densities[2]).astype(np.float32))
    assert attrs["Spacing"].split() == ["2.0", "2.0", "2.0"]
    with pytest.raises(SystemExit) as exc:
        main(["export", str(path), "--frame", "9", "--out", str(tmp_path / "x.vti")])
    assert exc.value.code == 2 and "not in the results" in capsys.readouterr().err
