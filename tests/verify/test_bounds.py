"""Certified bounds: sound against sampling and PGD, tighter than IBP, exact where they can
be, and usable on the zoo policies."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import rlsec.verify._activations as activations_module
import rlsec.verify._network as network_module
import rlsec.verify.bounds as bounds_module
from rlsec.errors import ConfigError, InvalidBudget, SpaceMismatch
from rlsec.policies import TorchPolicy, load_policy
from rlsec.policies.network import Affine, PolicyNetwork
from rlsec.verify.bounds import (
    action_bounds,
    certified_radius,
    certify,
    output_bounds,
    reachable_actions,
)

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
    "elu-0.5": lambda: nn.ELU(alpha=0.5),
    "elu-2": lambda: nn.ELU(alpha=2.0),
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "gelu-tanh": lambda: nn.GELU(approximate="tanh"),
    "hardtanh": lambda: nn.Hardtanh(-0.5, 1.0),
    "relu6": nn.ReLU6,
    "leaky": lambda: nn.LeakyReLU(0.1),
    "leaky-negative": lambda: nn.LeakyReLU(-0.3),
    "leaky-steep": lambda: nn.LeakyReLU(2.0),
    "identity": nn.Identity,
}
BOUND = 3.0  # observation space [-BOUND, BOUND]^d: some boxes are clipped by it


def mlp(rng: np.random.Generator, act: str, sizes: list[int], gain: float = 2.0) -> nn.Sequential:
    """Linear layers of ``sizes`` with ``act`` between them, weights N(0, gain²/fan_in), so
    pre-activations straddle every kink and bend."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        lin = nn.Linear(n_in, n_out)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(rng.normal(0, gain / np.sqrt(n_in), (n_out, n_in))))
            lin.bias.copy_(torch.from_numpy(rng.normal(0, 0.5, n_out)))
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[act]())
    return nn.Sequential(*layers)


def policy_of(net: nn.Module, d: int, n_out: int, output: str = "logits") -> TorchPolicy:
    obs = gym.spaces.Box(-BOUND, BOUND, (d,), np.float32)
    if output == "action":
        act: gym.Space[np.ndarray] = gym.spaces.Box(-1.5, 1.5, (n_out,), np.float32)
    else:
        act = gym.spaces.Discrete(n_out)
    return TorchPolicy(obs, act, net, output)


def box32(policy: TorchPolicy, x0: np.ndarray, radius: np.ndarray) -> tuple[np.ndarray, ...]:
    """The certified box as float32 bounds rounded inward (every float32 point between them
    is inside the real box)."""
    space = policy.observation_space
    assert isinstance(space, gym.spaces.Box)
    x = x0.reshape(len(x0), -1).astype(np.float64)
    lo = np.maximum(x - radius, np.minimum(space.low.reshape(-1), x))
    hi = np.minimum(x + radius, np.maximum(space.high.reshape(-1), x))
    lo32, hi32 = lo.astype(np.float32), hi.astype(np.float32)
    lo32 = np.where(lo32 < lo, np.nextafter(lo32, np.float32(np.inf)), lo32)
    hi32 = np.where(hi32 > hi, np.nextafter(hi32, np.float32(-np.inf)), hi32)
    return lo32, hi32


def box_points(lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """``(B, n + corners, d)`` points of each box: uniform samples and random corners."""
    b, d = lo.shape
    u = rng.uniform(size=(b, n, d)).astype(np.float32)
    corners = rng.integers(0, 2, size=(b, max(8, min(2**d, 64)), d)).astype(np.float32)
    t = np.concatenate([u, corners], axis=1)
    pts: np.ndarray = np.clip(lo[:, None] + t * (hi - lo)[:, None], lo[:, None], hi[:, None])
    return pts.astype(np.float32)


def forward(policy: TorchPolicy, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = policy.torch_module()(torch.from_numpy(x.reshape(-1, x.shape[-1])))
    return out.numpy().reshape(*x.shape[:-1], -1)


def pgd_max(
    fn: Callable[[torch.Tensor], torch.Tensor],
    lo: np.ndarray,
    hi: np.ndarray,
    rng: np.random.Generator,
    steps: int = 40,
) -> np.ndarray:
    """Each row's best point for ``fn`` (per-row values) over its box: sign-gradient ascent
    from a random start with a decaying step, clamped to the box."""
    lo_t, hi_t = torch.from_numpy(lo), torch.from_numpy(hi)
    x = lo_t + (hi_t - lo_t) * torch.from_numpy(rng.uniform(size=lo.shape).astype(np.float32))
    best, best_v = x.clone(), torch.full((len(lo),), -np.inf)
    step = (hi_t - lo_t) / 4
    for _ in range(steps):
        x.requires_grad_(True)
        v = fn(x)
        (g,) = torch.autograd.grad(v.sum(), x)
        with torch.no_grad():
            better = v > best_v
            best[better], best_v = x[better], torch.where(better, v, best_v)
            x = torch.minimum(torch.maximum(x + step * g.sign(), lo_t), hi_t)
        step = step * 0.85
    with torch.no_grad():
        v = fn(x)
        better = v > best_v
        best[better] = x[better]
    out: np.ndarray = best.numpy()
    return out


def assert_inside(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
    """``y (B, k, n)`` within ``[lower, upper] (B, n)`` up to float32 rounding of the
    forward pass."""
    tol = 1e-5 * (1.0 + np.maximum(np.abs(lower), np.abs(upper)))[:, None]
    assert (y >= lower[:, None] - tol).all(), float((lower[:, None] - y).max())
    assert (y <= upper[:, None] + tol).all(), float((y - upper[:, None]).max())


# -- soundness --------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    act=st.sampled_from(sorted(ACTIVATIONS)),
    depth=st.integers(1, 3),
    width=st.integers(2, 7),
    d=st.integers(1, 4),
    n_out=st.integers(1, 3),
    eps=st.floats(0.0, 1.5),
    per_feature=st.booleans(),
    method=st.sampled_from(["crown", "ibp"]),
    seed=st.integers(0, 2**16),
)
def test_sampled_outputs_stay_inside_the_bounds(
    act: str,
    depth: int,
    width: int,
    d: int,
    n_out: int,
    eps: float,
    per_feature: bool,
    method: str,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    policy = policy_of(mlp(rng, act, [d] + [width] * depth + [n_out]), d, n_out)
    x0 = rng.normal(0, 1.5, (6, d)).astype(np.float32)
    budget = eps * rng.uniform(0, 1, d) if per_feature else eps
    lower, upper = output_bounds(policy, x0, budget, method=method)
    assert lower.shape == upper.shape == (6, n_out)
    assert (lower <= upper).all()
    lo, hi = box32(policy, x0, np.broadcast_to(budget, (d,)))
    assert_inside(forward(policy, box_points(lo, hi, rng, 300)), lower, upper)


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_pgd_cannot_push_an_output_past_its_bound(act: str) -> None:
    rng = np.random.default_rng(7)
    d, n_out = 3, 2
    policy = policy_of(mlp(rng, act, [d, 8, 8, n_out]), d, n_out)
    x0 = rng.normal(0, 1.0, (8, d)).astype(np.float32)
    lower, upper = output_bounds(policy, x0, 0.5)
    lo, hi = box32(policy, x0, np.full(d, 0.5))
    module = policy.torch_module()
    for j in range(n_out):
        for sign in (1.0, -1.0):
            x = pgd_max(lambda x, j=j, s=sign: s * module(x)[:, j], lo, hi, rng)
            assert_inside(forward(policy, x[:, None]), lower, upper)


@pytest.mark.parametrize("act", sorted(set(ACTIVATIONS) - {"identity"}))
def test_relaxations_enclose_the_activation_torch_computes(act: str) -> None:
    """Lines and intervals checked in float64 on a dense grid of many intervals: straddling
    the kinks and bends, narrow, degenerate and far out."""
    module = ACTIVATIONS[act]().double()
    spec = network_module._activation("act", ACTIVATIONS[act]())
    assert spec is not None
    rng = np.random.default_rng(12)
    lo = np.concatenate([rng.uniform(-8, 8, 400), [-1e-3, 0.0, -2.0, 5.0, -30.0, 0.7]])
    width = np.concatenate([rng.exponential(2.0, 400), [2e-3, 0.0, 1e-10, 3.0, 60.0, 1e-6]])
    lo_t = torch.from_numpy(lo)[:, None]
    hi_t = lo_t + torch.from_numpy(width)[:, None]
    x = lo_t + (hi_t - lo_t) * torch.linspace(0, 1, 2001, dtype=torch.float64)[None]
    with torch.no_grad():
        y = module(x)
    np.testing.assert_allclose(activations_module._f(spec, x), y, rtol=1e-12, atol=1e-12)
    tol = 1e-12 * (1 + y.abs())
    a_lo, c_lo, a_hi, c_hi = activations_module._relax(spec, lo_t[:, 0], hi_t[:, 0])
    assert (a_lo[:, None] * x + c_lo[:, None] <= y + tol).all()
    assert (a_hi[:, None] * x + c_hi[:, None] >= y - tol).all()
    i_lo, i_hi = activations_module._interval(spec, lo_t, hi_t)
    assert (i_lo <= y + tol).all() and (i_hi >= y - tol).all()
    # the interval is the range: its ends are attained, up to the grid's step (Lipschitz <= 2)
    step = (hi_t - lo_t) / 2000
    assert ((y.min(1, keepdim=True).values - i_lo) <= 1e-8 + 2 * step).all()
    assert ((i_hi - y.max(1, keepdim=True).values) <= 1e-8 + 2 * step).all()


def test_an_activation_reused_in_a_sequential_is_bounded_at_each_use() -> None:
    """nn.Sequential(lin, act, lin, act, lin) with one ``act`` object: named_children() lists
    it once, but the network applies it twice (this made the bounds unsound)."""
    rng = np.random.default_rng(0)
    relu = nn.ReLU()
    lins = [mlp(rng, "relu", [n_in, n_out])[0] for n_in, n_out in [(3, 6), (6, 6), (6, 2)]]
    policy = policy_of(nn.Sequential(lins[0], relu, lins[1], relu, lins[2]), 3, 2)
    x0 = rng.normal(0, 1, (16, 3)).astype(np.float32)
    for method in ("crown", "ibp"):
        lower, upper = output_bounds(policy, x0, 0.7, method=method)
        lo, hi = box32(policy, x0, np.full(3, 0.7))
        assert_inside(forward(policy, box_points(lo, hi, rng, 500)), lower, upper)


def test_declarative_network_with_input_scale_and_affine_layers() -> None:
    spec = {
        "input": {"type": "float", "dim": 3, "scale": 0.5},
        "policy": [
            {"type": "linear", "in": 3, "out": 8},
            {"type": "tanh"},
            {"type": "affine", "scale": [2.0] * 8, "shift": [0.1] * 8},
            {"type": "linear", "in": 8, "out": 2},
            {"type": "tanh"},
            {"type": "affine", "scale": [1.5, 1.0], "shift": [0.0, 0.2]},
        ],
        "output": "action",
    }
    net = PolicyNetwork(spec)
    rng = np.random.default_rng(1)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.from_numpy(rng.normal(0, 1.0, p.shape)))
    obs = gym.spaces.Box(-BOUND, BOUND, (3,), np.float32)
    policy = TorchPolicy.from_network(obs, gym.spaces.Box(-1.0, 1.0, (2,), np.float32), net)
    x0 = rng.normal(0, 1, (10, 3)).astype(np.float32)
    lower, upper = output_bounds(policy, x0, 0.8)
    lo, hi = box32(policy, x0, np.full(3, 0.8))
    pts = box_points(lo, hi, rng, 400)
    assert_inside(forward(policy, pts), lower, upper)
    a_lo, a_hi = action_bounds(policy, x0, 0.8)
    actions = policy.act(pts.reshape(-1, 3)).reshape(10, -1, 2)
    assert_inside(actions, a_lo, a_hi)
    assert (a_lo >= -1).all() and (a_hi <= 1).all()


def test_chunked_batches_give_the_same_bounds_as_one_state_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(2)
    policy = policy_of(mlp(rng, "tanh", [3, 8, 8, 8, 3]), 3, 3)
    x0 = rng.normal(0, 1, (7, 3)).astype(np.float32)
    eps = np.array([0.1, 0.3, 0.0])
    whole = output_bounds(policy, x0, eps)
    monkeypatch.setattr(network_module, "_CHUNK_ELEMENTS", 1)  # one state per chunk
    chunked = output_bounds(policy, x0, eps)
    single = [output_bounds(policy, x0[i : i + 1], eps) for i in range(7)]
    for k in range(2):
        np.testing.assert_allclose(chunked[k], whole[k], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.concatenate([s[k] for s in single]), whole[k], atol=1e-12)


# -- tightness --------------------------------------------------------------------------------


@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid", "leaky", "elu"])
def test_crown_is_tighter_than_ibp(act: str) -> None:
    rng = np.random.default_rng(3)
    d, n_out = 4, 3
    widths_crown, widths_ibp = [], []
    for _ in range(4):
        policy = policy_of(mlp(rng, act, [d, 16, 16, n_out]), d, n_out)
        x0 = rng.normal(0, 1, (32, d)).astype(np.float32)
        lc, uc = output_bounds(policy, x0, 0.2, method="crown")
        li, ui = output_bounds(policy, x0, 0.2, method="ibp")
        assert (uc - lc <= ui - li + 1e-9).all()  # intersected with IBP: never looser
        widths_crown.append((uc - lc).mean())
        widths_ibp.append((ui - li).mean())
    assert np.mean(widths_crown) < 0.8 * np.mean(widths_ibp)


def test_linear_layers_are_merged_and_bounded_exactly() -> None:
    """Linear, Identity, Affine, Linear is one affine map: both methods give its exact range
    (IBP layer by layer would not)."""
    rng = np.random.default_rng(4)
    lin1, lin2 = mlp(rng, "relu", [3, 5])[0], mlp(rng, "relu", [5, 2])[0]
    affine = Affine(rng.uniform(-2.0, 2.0, 5).tolist(), rng.normal(0, 1, 5).tolist())
    policy = policy_of(nn.Sequential(lin1, nn.Identity(), affine, lin2), 3, 2)
    x0 = rng.uniform(-1, 1, (4, 3)).astype(np.float32)
    eps = np.array([0.1, 0.2, 0.3])

    def as64(t: torch.Tensor) -> np.ndarray:
        return t.detach().numpy().astype(np.float64)

    a = as64(lin2.weight) @ np.diag(as64(affine.scale)) @ as64(lin1.weight)
    b = as64(lin2.weight) @ (as64(affine.scale) * as64(lin1.bias) + as64(affine.shift))
    center = x0.astype(np.float64) @ a.T + b + as64(lin2.bias)
    spread = np.abs(a) @ eps
    for method in ("crown", "ibp"):
        lower, upper = output_bounds(policy, x0, eps, method=method)
        np.testing.assert_allclose(lower, center - spread, atol=1e-9)
        np.testing.assert_allclose(upper, center + spread, atol=1e-9)
    layerwise = np.abs(as64(lin2.weight) * as64(affine.scale)) @ np.abs(as64(lin1.weight)) @ eps
    assert (layerwise > spread + 1e-3).any()


def margin_net(t: float = 0.0) -> TorchPolicy:
    """One feature x, logits ``[x - t, 0]`` computed as ``3 relu(x + 10) - relu(2x + 10) - 20
    - t``: both ReLUs active for x > -5, where CROWN is exact, while IBP loses the
    cancellation: its margin shrinks by 5ε instead of ε."""
    hidden, out = nn.Linear(1, 2), nn.Linear(2, 2)
    with torch.no_grad():
        hidden.weight.copy_(torch.tensor([[1.0], [2.0]]))
        hidden.bias.copy_(torch.tensor([10.0, 10.0]))
        out.weight.copy_(torch.tensor([[3.0, -1.0], [0.0, 0.0]]))
        out.bias.copy_(torch.tensor([-20.0 - t, 0.0]))
    return TorchPolicy(
        gym.spaces.Box(-4.0, 4.0, (1,), np.float32),
        gym.spaces.Discrete(2),
        nn.Sequential(hidden, nn.ReLU(), out),
        "logits",
    )


def test_margin_spec_rules_out_more_actions_than_differencing_intervals() -> None:
    rng = np.random.default_rng(5)
    n_margin = n_diff = 0
    for _ in range(4):
        policy = policy_of(mlp(rng, "tanh", [3, 16, 16, 4]), 3, 4)
        x0 = rng.normal(0, 1, (64, 3)).astype(np.float32)
        reach = reachable_actions(policy, x0, 0.1)
        lo, hi = output_bounds(policy, x0, 0.1)
        diff = ~(lo[:, None, :] > hi[:, :, None]).any(axis=2)  # some b above a everywhere
        n_margin += int(reach.sum())
        n_diff += int(diff.sum())
    assert n_margin < n_diff


# -- radii ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("x0", "t"), [(0.5, -1.0), (-0.3, 0.9), (1.0, 0.95), (0.2, 0.2)])
def test_radius_of_a_hand_built_network_is_the_exact_one(x0: float, t: float) -> None:
    policy = margin_net(t)
    obs = np.array([[x0]], dtype=np.float32)
    exact = abs(x0 - t)  # the action flips where x crosses t
    tol = 1e-4
    crown = certified_radius(policy, obs, eps_max=3.0, tol=tol)[0]
    ibp = certified_radius(policy, obs, method="ibp", eps_max=3.0, tol=tol)[0]
    assert exact - 2 * tol <= crown <= exact
    assert exact / 5 - 2 * tol <= ibp <= exact / 5
    scaled = certified_radius(policy, obs, eps_max=3.0, tol=tol, scale=[0.5])[0]
    assert exact / 0.5 - 2 * tol <= scaled <= exact / 0.5 or (exact > 1.5 and scaled == 3.0)


def test_the_observation_space_limits_the_box() -> None:
    """x0 = 3.5, flip at x < 3: inside [-4, 4] only a radius above 0.5 reaches it; with t below
    the space's lower bound nothing does, so the radius is eps_max."""
    obs = np.array([[3.5]], dtype=np.float32)
    policy = margin_net(3.0)
    assert certified_radius(policy, obs, eps_max=8.0, tol=1e-3)[0] == pytest.approx(0.5, abs=2e-3)
    policy = margin_net(-4.5)  # flips at x < -4.5, outside the space
    assert certified_radius(policy, obs, eps_max=8.0, tol=1e-3)[0] == 8.0
    assert certify(policy, obs, 100.0).tolist() == [True]


def check_inside_radius(
    policy: TorchPolicy, x0: np.ndarray, scale: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Certified radii; asserts that no sample, corner or PGD point within them changes the
    action."""
    radius = certified_radius(policy, x0, eps_max=2.0, tol=1e-2, scale=scale)
    clean = policy.act(x0)
    lo, hi = box32(policy, x0, radius[:, None] * scale)
    pts = box_points(lo, hi, rng, 200)
    acts = policy.act(pts.reshape(-1, pts.shape[-1])).reshape(len(x0), -1)
    assert (acts == clean[:, None]).all()
    module = policy.torch_module()
    label = torch.from_numpy(clean)

    def margin(x: torch.Tensor) -> torch.Tensor:  # best other action minus the clean one
        out = module(x)
        own = out.gather(1, label[:, None]).squeeze(1)
        return (out - 1e9 * nn.functional.one_hot(label, out.shape[1])).max(1).values - own

    adv = pgd_max(margin, lo, hi, rng)
    assert (policy.act(adv) == clean).all()
    return radius


@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid", "gelu", "hardtanh"])
def test_no_perturbation_within_the_certified_radius_changes_the_action(act: str) -> None:
    rng = np.random.default_rng(6)
    policy = policy_of(mlp(rng, act, [3, 12, 12, 3]), 3, 3)
    x0 = rng.normal(0, 1, (24, 3)).astype(np.float32)
    radius = check_inside_radius(policy, x0, np.array([1.0, 0.5, 2.0]), rng)
    assert (radius > 0).mean() > 0.5


@pytest.mark.parametrize("name", ["cartpole-ppo", "cartpole-dqn"])
def test_zoo_cartpole_radii_are_sound(name: str) -> None:
    policy = load_policy(f"zoo:{name}")
    stats = policy.info.observation_stats
    assert stats is not None
    rng = np.random.default_rng(8)
    mean, std = np.asarray(stats["mean"]), np.asarray(stats["std"])
    x0 = (mean + std * rng.standard_normal((48, 4))).astype(np.float32)
    radius = check_inside_radius(policy, x0, std, rng)
    assert np.median(radius) > 0.01
    assert certify(policy, x0, 0.0).mean() > 0.9  # eps = 0: only exact ties fail
    ibp = certified_radius(policy, x0, method="ibp", eps_max=2.0, tol=1e-2, scale=std)
    assert (radius >= ibp).all() and radius.mean() > ibp.mean()


def test_continuous_radius_keeps_the_action_within_delta() -> None:
    policy = load_policy("zoo:pendulum-sac")
    rng = np.random.default_rng(9)
    theta = rng.uniform(-np.pi, np.pi, 16)
    x0 = np.stack([np.cos(theta), np.sin(theta), rng.uniform(-4, 4, 16)], 1).astype(np.float32)
    radius = certified_radius(policy, x0, eps_max=1.0, tol=1e-3, delta=0.1)
    assert (radius > 0).all()
    lo, hi = box32(policy, x0, radius[:, None])
    pts = box_points(lo, hi, rng, 200)
    acts = policy.act(pts.reshape(-1, 3)).reshape(16, -1)
    clean = policy.act(x0)
    assert (np.abs(acts - clean) <= 0.1 + 1e-5).all()
    a_lo, a_hi = action_bounds(policy, x0, radius[:, None])
    assert (a_hi - a_lo <= 0.2 + 1e-9).all()
    assert certify(policy, x0, 0.5 * radius[0], delta=0.1)[0]


# -- reachable actions ------------------------------------------------------------------------


@pytest.mark.parametrize("act", ["relu", "tanh", "silu"])
def test_reachable_actions_contain_every_action_sampling_or_pgd_finds(act: str) -> None:
    rng = np.random.default_rng(10)
    n = 4
    policy = policy_of(mlp(rng, act, [3, 12, 12, n]), 3, n)
    x0 = rng.normal(0, 1, (32, 3)).astype(np.float32)
    eps = np.array([0.3, 0.1, 0.2])
    reach = reachable_actions(policy, x0, eps)
    assert reach[np.arange(32), policy.act(x0)].all()
    lo, hi = box32(policy, x0, eps)
    pts = box_points(lo, hi, rng, 300)
    found = policy.act(pts.reshape(-1, 3)).reshape(32, -1)
    module = policy.torch_module()
    for a in range(n):  # PGD towards each action in turn

        def lead(x: torch.Tensor, a: int = a) -> torch.Tensor:
            out = module(x)
            others = torch.cat([out[:, :a], out[:, a + 1 :]], dim=1)
            return out[:, a] - others.max(1).values

        found = np.concatenate([found, policy.act(pgd_max(lead, lo, hi, rng))[:, None]], 1)
    for i in range(32):
        assert reach[i, np.unique(found[i])].all()
    assert 1.0 < reach.sum(1).mean() < n  # neither only the clean action nor everything
    assert (reachable_actions(policy, x0, 0.0).sum(1) == 1).all()
    assert reachable_actions(policy, x0, 50.0).all()  # the whole space
    ibp = reachable_actions(policy, x0, eps, method="ibp")
    assert ibp.sum() > reach.sum()


def test_zoo_policies_reachable_actions() -> None:
    for name, n in [("cartpole-dqn", 2), ("acrobot-ppo", 3)]:
        policy = load_policy(f"zoo:{name}")
        stats = policy.info.observation_stats
        assert stats is not None
        rng = np.random.default_rng(11)
        std = np.asarray(stats["std"])
        x0 = (np.asarray(stats["mean"]) + std * rng.standard_normal((64, len(std)))).astype(
            np.float32
        )
        small = reachable_actions(policy, x0, 0.01 * std)
        assert small.shape == (64, n) and small[np.arange(64), policy.act(x0)].all()
        assert small.sum(1).mean() < 1.5
        large = reachable_actions(policy, x0, 3.0 * std)
        assert large.sum() >= small.sum() and large.sum(1).mean() > small.sum(1).mean()


# -- errors -----------------------------------------------------------------------------------


def test_discrete_observations_are_refused() -> None:
    policy = load_policy("zoo:frozenlake-ppo")
    with pytest.raises(SpaceMismatch, match="Box"):
        output_bounds(policy, np.array([0, 1]), 0.1)


class _OddReLU(nn.ReLU):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -x


@pytest.mark.parametrize(("layer", "name"), [(nn.Softplus(), "Softplus"), (_OddReLU(), "_OddReLU")])
def test_unsupported_layers_are_named(layer: nn.Module, name: str) -> None:
    policy = policy_of(nn.Sequential(nn.Linear(2, 3), layer, nn.Linear(3, 2)), 2, 2)
    with pytest.raises(ConfigError, match=name):
        output_bounds(policy, np.zeros((1, 2), np.float32), 0.1)


def test_bad_arguments_are_refused() -> None:
    policy = margin_net()
    x0 = np.zeros((2, 1), np.float32)
    with pytest.raises(InvalidBudget):
        output_bounds(policy, x0, -0.1)
    with pytest.raises(InvalidBudget):
        output_bounds(policy, x0, float("nan"))
    with pytest.raises(InvalidBudget):
        output_bounds(policy, x0, [0.1, 0.2])
    with pytest.raises(ConfigError, match="method"):
        output_bounds(policy, x0, 0.1, method="lp")
    with pytest.raises(SpaceMismatch):
        output_bounds(policy, np.zeros((2, 2), np.float32), 0.1)
    with pytest.raises(ConfigError, match="delta"):
        certify(policy, x0, 0.1, delta=0.1)
    with pytest.raises(InvalidBudget):
        certified_radius(policy, x0, tol=0.0)
    sac = load_policy("zoo:pendulum-sac")
    with pytest.raises(SpaceMismatch, match="Discrete"):
        reachable_actions(sac, np.zeros((1, 3), np.float32), 0.1)
    with pytest.raises(ConfigError, match="delta"):
        certify(sac, np.zeros((1, 3), np.float32), 0.1)
    with pytest.raises(SpaceMismatch, match="Box"):
        action_bounds(policy, x0, 0.1)


# -- NaN and infinity never yield a certificate ----------------------------------------------


def _two_logits() -> nn.Sequential:
    """Logits (x1 + x2, 0): action 0 is certified at (0.5, 0.5) up to radius 0.5."""
    net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 1.0], [-1.0, -1.0], [0.0, 0.0], [0.0, 0.0]]))
        net[0].bias.zero_()
        net[2].weight.copy_(torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
        net[2].bias.zero_()
    return net


X0 = np.array([[0.5, 0.5]], dtype=np.float32)


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("0.weight", float("nan")),
        ("0.bias", float("nan")),
        ("2.weight", float("nan")),
        ("2.bias", float("inf")),
        ("0.weight", float("-inf")),
    ],
)
def test_a_nan_or_infinite_weight_yields_no_certificate(where: str, value: float) -> None:
    net = _two_logits()
    layer, name = where.split(".")
    with torch.no_grad():
        getattr(net[int(layer)], name).view(-1)[2 if name == "weight" else 1] = value
    policy = policy_of(net, 2, 2)
    for call in (
        lambda: certify(policy, X0, 0.1),
        lambda: certified_radius(policy, X0),
        lambda: reachable_actions(policy, X0, 0.1),
        lambda: output_bounds(policy, X0, 0.1),
    ):
        with pytest.raises(ConfigError, match="NaN or infinite"):
            call()


@pytest.mark.parametrize(
    "layer",
    [nn.LeakyReLU(float("nan")), nn.ELU(alpha=float("nan")), nn.Hardtanh(float("-inf"), 1.0)],
)
def test_a_nan_activation_parameter_is_refused(layer: nn.Module) -> None:
    policy = policy_of(nn.Sequential(nn.Linear(2, 3), layer, nn.Linear(3, 2)), 2, 2)
    with pytest.raises(ConfigError, match="finite"):
        certify(policy, X0, 0.1)


def test_outputs_that_overflow_are_refused_not_certified() -> None:
    net = _two_logits()
    with torch.no_grad():
        net[2].weight.mul_(3e38)  # finite in float32, the forward pass overflows to inf
    with pytest.raises(ConfigError, match="NaN or infinite on 1 observations"):
        certify(policy_of(net, 2, 2), np.array([[2.0, 2.0]], dtype=np.float32), 0.1)


def test_nan_or_infinite_bounds_certify_nothing_and_rule_nothing_out() -> None:
    """Past the refusals above, the comparisons themselves fail closed: a margin bound that is
    NaN or +inf (an overflow) certifies nothing and rules no action out."""
    policy = policy_of(_two_logits(), 2, 2)
    problem = bounds_module._Problem(policy, X0, "crown")
    rows = np.arange(1)
    radius = np.full(2, 0.1)
    assert problem.certified_discrete(rows, radius).all()  # the honest network: certified
    for value in (float("nan"), float("inf")):
        net = problem.net
        biases = (*net.biases[:-1], torch.tensor([value, 0.0], dtype=torch.float64))
        problem.net = network_module._Net(net.weights, biases, net.acts)
        assert not problem.certified_discrete(rows, radius).any()
        problem.net = net
    real = bounds_module._lower
    try:
        for value in (float("nan"), float("inf")):
            bounds_module._lower = lambda net, lo, hi, spec, method, v=value: torch.full(
                (lo.shape[0], spec.shape[-2]), v, dtype=torch.float64
            )
            assert not certify(policy, X0, 0.1).any()
            assert reachable_actions(policy, X0, 0.1).all()
            assert certified_radius(policy, X0).tolist() == [0.0]
            lo, hi = output_bounds(policy, X0, 0.1)
            assert not np.isnan(lo).any() and not np.isnan(hi).any()
    finally:
        bounds_module._lower = real


def test_a_nan_delta_or_clean_action_certifies_no_continuous_action() -> None:
    net = _two_logits()
    policy = policy_of(net, 2, 2, output="action")
    with pytest.raises(InvalidBudget):
        certify(policy, X0, 0.1, delta=float("nan"))
    problem = bounds_module._Problem(policy, X0, "crown")
    problem.clean = np.full_like(problem.clean, np.nan)
    assert not problem.certified_continuous(np.arange(1), np.full(2, 0.1), np.full(2, 1.0)).any()


def test_a_radius_search_that_overflows_is_refused() -> None:
    policy = policy_of(_two_logits(), 2, 2)
    with pytest.raises(InvalidBudget, match="overflows"):
        certified_radius(policy, X0, eps_max=1e308, scale=[1e10, 1e10])
