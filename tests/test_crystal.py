"""The physics-structured decoder (:mod:`latenttune.model.crystal`) and the physical model variant."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from latenttune.model.crystal import (
    NORMALS,
    PhysicalLayout,
    _GROUP,
    _GROUP_PERM,
    _TWIN_PERM,
    describe_parameters,
    parameter_loss,
    parameters_from_descriptor,
    physical_targets,
    render_physical,
    rotation_matrices,
)
from latenttune.model.losses import twin
from latenttune.metrics import real_space_error
from latenttune.model import LatentAutoencoder, ModelConfig, load_checkpoint, save_checkpoint
from sim.descriptor import DislocationLine, SampleDescriptor
from sim.geometry import centred_coords
from sim.phase import DEFAULT_G, dislocation_displacement, visible_burgers_vector
from sim.shapes import random_faceted_crystal

n = 16
layout = PhysicalLayout(n)


def _sample(seed: int, with_line: bool = True):
    rng = np.random.default_rng(seed)
    crystal = random_faceted_crystal(rng, n, radius=(0.25, 0.3))
    lines = ()
    phase = np.zeros((n, n, n))
    if with_line:
        G = np.asarray(DEFAULT_G)
        b = visible_burgers_vector(rng, G)
        t = rng.standard_normal(3)
        t /= np.linalg.norm(t)
        p = rng.uniform(-1.5, 1.5, 3)
        nu = float(rng.uniform(0.25, 0.45))
        lines = (DislocationLine(point=tuple(p), direction=tuple(t), burgers=tuple(b), G=tuple(G), poisson_ratio=nu),)
        phase = 2 * np.pi * np.tensordot(G, dislocation_displacement(centred_coords(n), p, t, b, nu), axes=1)
    density = crystal.render(n) * np.exp(1j * phase)
    return SampleDescriptor(shape=crystal, dislocations=lines), density.astype(np.complex64)


def _render(u: np.ndarray) -> np.ndarray:
    amplitude, phase = render_physical(torch.tensor(u[None], dtype=torch.float32), layout)
    return torch.polar(amplitude, phase)[0].numpy()


def test_rotation_matrices_match_scipy_and_are_smooth_at_zero():
    omega = torch.tensor([[0.0, 0.0, 0.0], [0.3, -0.2, 0.5], [1e-9, 0.0, 0.0]], dtype=torch.float64)
    R = rotation_matrices(omega).numpy()
    for w, r in zip(omega.numpy(), R):
        np.testing.assert_allclose(r, Rotation.from_rotvec(w).as_matrix(), atol=1e-12)
    omega.requires_grad_(True)
    rotation_matrices(omega).sum().backward()
    assert torch.isfinite(omega.grad).all()


def test_cubic_group_relabels_the_planes():
    assert _GROUP.shape == (24, 3, 3) and NORMALS.shape == (26, 3)
    for g, perm in zip(_GROUP, _GROUP_PERM):
        np.testing.assert_allclose(NORMALS[perm], NORMALS @ g.T, atol=1e-12)
    np.testing.assert_allclose(NORMALS[_TWIN_PERM], -NORMALS, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_parameters_draw_a_simulated_crystal_and_its_dislocation(seed):
    descriptor, density = _sample(seed)
    u = parameters_from_descriptor(descriptor, layout)
    assert np.all(np.abs(u) <= 1)
    drawn = _render(u)
    assert real_space_error(density, drawn).error < 0.03
    # the drawn support is the crystal's, to the partial-volume rule
    assert np.abs(np.abs(drawn) - descriptor.shape.render(n)).mean() < 0.01


def test_without_the_dislocation_the_error_is_large():
    """The dislocation parameters matter: the same crystal with winding 0 misses the vortex."""
    descriptor, density = _sample(5)
    u = parameters_from_descriptor(descriptor, layout)
    u[layout.slice("dislocation")][6] = 0.0
    assert real_space_error(density, _render(u)).error > 0.2


def test_parameter_loss_is_zero_for_every_equivalent_and_the_twin():
    descriptor, _ = _sample(3)
    targets = {k: torch.from_numpy(v)[None] for k, v in physical_targets(descriptor, (0, 0, 0), layout).items()}
    u = parameters_from_descriptor(descriptor, layout)
    loss = parameter_loss(torch.tensor(u[None], dtype=torch.float32), targets, layout)
    assert loss[0, 0] < 1e-4 and loss[0, 1] > 0.05
    # the same crystal described with another cubic relabelling: still zero
    g = _GROUP[7]
    R = Rotation.from_rotvec(u[:3] * np.pi / 4).as_matrix() @ g
    relabelled = u.copy()
    relabelled[:3] = Rotation.from_matrix(R).as_rotvec() / (np.pi / 4)
    relabelled[layout.slice("facets")] = u[layout.slice("facets")][_GROUP_PERM[7]]
    if np.all(np.abs(relabelled[:3]) <= 1):
        np.testing.assert_allclose(_render(relabelled), _render(u), atol=1e-4)
        loss = parameter_loss(torch.tensor(relabelled[None], dtype=torch.float32), targets, layout)
        assert loss[0, 0] < 1e-4
    # the twin's parameters: zero in the twin column
    twinned = u.copy()
    twinned[layout.slice("facets")] = u[layout.slice("facets")][_TWIN_PERM]
    dis = twinned[layout.slice("dislocation")]
    dis[3:6] = layout.line_point_units(-layout.line_point(u[layout.slice("dislocation")][3:6]))
    dis[6] = -dis[6]
    twinned[layout.slice("dislocation")] = dis
    twinned[layout.slice("dislocation")][7:10] = u[layout.slice("dislocation")][7:10]
    loss = parameter_loss(torch.tensor(twinned[None], dtype=torch.float32), targets, layout)
    assert loss[0, 1] < 1e-4
    twin_drawn = twin(torch.from_numpy(_render(u))[None])[0].resolve_conj().numpy()
    assert real_space_error(twin_drawn, _render(twinned)).error < 0.03


def test_targets_follow_the_centring_roll():
    descriptor, _ = _sample(4, with_line=False)
    a = physical_targets(descriptor, (0, 0, 0), layout)
    b = physical_targets(descriptor, (1, 0, 0), layout)
    assert a["winding_valid"] == 1 and a["line_valid"] == 0 and a["winding"] == 0
    shifted = parameters_from_descriptor(descriptor, layout, shift=(1, 0, 0))
    drawn, moved = _render(parameters_from_descriptor(descriptor, layout)), _render(shifted)
    np.testing.assert_allclose(np.roll(drawn, (1, 0, 0), axis=(0, 1, 2)), moved, atol=1e-4)
    assert not np.allclose(a["facets"], b["facets"])


def test_describe_parameters_reads_physical_units():
    descriptor, _ = _sample(0)
    u = parameters_from_descriptor(descriptor, layout)
    described = describe_parameters(u, layout)
    assert described["facet_distances"].shape == (26,)
    assert described["dislocation"]["winding"] in (-1.0, 1.0)
    with pytest.raises(ValueError, match="physical parameters"):
        describe_parameters(np.zeros(3), layout)


def _physical_config(**kw) -> ModelConfig:
    base = dict(n=n, latent_dim=2, encoder_channels=(4, 8), decoder_channels=(8, 4), hidden=16, physical=True,
                encoder_stem="two-scale")
    base.update(kw)
    return ModelConfig(**base)


def test_physical_model_starts_as_the_rendered_crystal():
    torch.manual_seed(0)
    model = LatentAutoencoder(_physical_config()).eval()
    assert model.latent_dim == layout.size + 2
    descriptor, _ = _sample(1)
    u = parameters_from_descriptor(descriptor, layout)
    z = np.concatenate([u, [0.3, -0.5]])
    with torch.no_grad():
        decoded = model.decode(z)[0].numpy()
    np.testing.assert_allclose(decoded, _render(u), atol=1e-5)
    intensity = torch.rand(3, 2 * n, 2 * n, 2 * n)
    with torch.no_grad():
        zs = model.encode(intensity)
    assert zs.shape == (3, model.latent_dim) and bool((zs.abs() < 1).all())


def test_physical_checkpoint_round_trip_and_old_configs(tmp_path):
    model = LatentAutoencoder(_physical_config())
    save_checkpoint(tmp_path / "m.pt", model)
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded["config"] == model.config and loaded["config"].physical
    old = ModelConfig.from_dict({"n": n, "latent_dim": 3, "encoder_channels": [4, 8], "decoder_channels": [8, 4], "hidden": 16})
    assert not old.physical and old.encoder_stem == "full" and old.total_latent_dim == 3


@pytest.mark.parametrize("kwargs, message", [
    ({"encoder_stem": "half"}, "encoder_stem"),
    ({"physical": "yes"}, "physical"),
    ({"encoder_channels": (4, 8, 8, 8, 8)}, "encoder's input grid"),
])
def test_physical_config_errors(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        _physical_config(**kwargs)


def test_rendering_under_inference_mode_first_does_not_break_autograd_later():
    # the coordinate grid is cached: a first render under inference_mode (tracking) must not leave
    # inference tensors behind for a later differentiable render (training, the representation floor)
    from latenttune.model.crystal import _GRIDS

    layout = PhysicalLayout(11)  # a grid size no other test uses, so the cache starts empty
    _GRIDS.pop(11, None)
    with torch.inference_mode():
        render_physical(torch.zeros(1, layout.size), layout)
    u = torch.zeros(1, layout.size, requires_grad=True)
    amplitude, phase = render_physical(u, layout)
    (amplitude.sum() + phase.sum()).backward()
    assert u.grad is not None and torch.isfinite(u.grad).all()


def test_misorientation_ignores_the_cubic_symmetry_and_measures_angles():
    from latenttune.model.crystal import misorientation_degrees, orientation_matrix

    R = Rotation.from_rotvec([0.3, -0.2, 0.5]).as_matrix()
    for g in _GROUP:
        assert misorientation_degrees(R, R @ g) == pytest.approx(0.0, abs=1e-6)
    tilt = Rotation.from_rotvec(np.radians(10.0) * np.array([0.0, 0.0, 1.0])).as_matrix()
    assert misorientation_degrees(R, R @ tilt) == pytest.approx(10.0, abs=1e-6)
    u = np.array([0.2, -0.1, 0.4])
    np.testing.assert_allclose(orientation_matrix(u), Rotation.from_rotvec(u * np.pi / 4).as_matrix(), atol=1e-6)
    with pytest.raises(ValueError, match="`R_a`"):
        misorientation_degrees(np.eye(2), R)
