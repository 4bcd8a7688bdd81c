from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import linear_policy
from rlsec.attacks import ATTACKS
from rlsec.attacks.parameters import (
    PARAMETER_ATTACKS,
    BitFlipParameters,
    GradientParameters,
    NoiseParameters,
    ParameterAttack,
    make_parameter_attack,
    probe_observations,
    tamper_directory,
)
from rlsec.core import Surface, ThreatModel
from rlsec.errors import (
    AttackNotApplicable,
    BudgetViolation,
    ConfigError,
    InvalidBudget,
    PolicyLoadError,
    UnknownAttack,
)
from rlsec.evaluate.parameters import act_with_fallback
from rlsec.policies import TorchPolicy, from_torch, load_policy, zoo_path
from rlsec.policies.network import PolicyNetwork


def mlp(
    dim: int, hidden: int, n_actions: int, seed: int, *, continuous: bool, value: bool
) -> TorchPolicy:
    """A random MLP with a declarative network; a critic head when ``value``."""
    torch.manual_seed(seed)
    spec: dict[str, Any] = {
        "input": {"type": "float", "dim": dim},
        "policy": [
            {"type": "linear", "in": dim, "out": hidden},
            {"type": "tanh"},
            {"type": "linear", "in": hidden, "out": n_actions},
        ],
        "output": "action" if continuous else "logits",
    }
    if value:
        spec["value"] = [{"type": "linear", "in": dim, "out": 1}]
    net = PolicyNetwork(spec, action_dim=n_actions)
    with torch.no_grad():
        net.policy[0].bias.zero_()  # a tensor of zero std: it cannot move in std units
    act: gym.Space[Any] = (
        gym.spaces.Box(-1, 1, (n_actions,), np.float32)
        if continuous
        else gym.spaces.Discrete(n_actions)
    )
    return TorchPolicy.from_network(gym.spaces.Box(-3, 3, (dim,), np.float32), act, net)


def weights(policy: TorchPolicy) -> dict[str, np.ndarray]:
    """A copy of every stored tensor, float32."""
    assert policy.network is not None
    return {k: v.detach().numpy().copy() for k, v in policy.network.state_dict().items()}


def bits(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32).view(np.uint32)


def hamming(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> int:
    return sum(int(np.unpackbits((bits(a[k]) ^ bits(b[k])).view(np.uint8)).sum()) for k in a)


def same_bits(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(bits(a[k]), bits(b[k])) for k in a)


def probe_for(policy: TorchPolicy, seed: int, n: int = 8) -> np.ndarray:
    dim = int(np.prod(policy.observation_space.shape or (1,)))
    return np.random.default_rng(seed).uniform(-3, 3, size=(n, dim)).astype(np.float32)


# -- invariants ----------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    attack_id=st.sampled_from(["noise-params-v1", "pgd-params-v1"]),
    eps=st.floats(0.0, 2.0),
    unit=st.sampled_from(["std", "raw"]),
    norm=st.sampled_from(["linf", "l2"]),
    dim=st.integers(1, 4),
    hidden=st.integers(1, 6),
    continuous=st.booleans(),
    tensors=st.sampled_from(["actor", "all"]),
    seed=st.integers(0, 2**16),
)
def test_ball_attacks_keep_every_tensor_in_its_ball_and_the_original_intact(
    attack_id: str,
    eps: float,
    unit: str,
    norm: str,
    dim: int,
    hidden: int,
    continuous: bool,
    tensors: str,
    seed: int,
) -> None:
    policy = mlp(dim, hidden, 2, seed, continuous=continuous, value=True)
    before, digest = weights(policy), policy.info.sha256
    extra = {"steps": 3} if attack_id == "pgd-params-v1" else {}
    attack = make_parameter_attack(attack_id, eps, unit=unit, norm=norm, tensors=tensors, **extra)
    probe = probe_for(policy, seed)
    tampered = attack.tamper(policy, rng=np.random.default_rng(seed), probe=probe)
    after = weights(tampered)
    assert same_bits(weights(policy), before), "the original was modified"
    assert policy.info.sha256 == digest
    assert tampered is not policy and tampered.network is not policy.network
    for name, w in before.items():
        w64, d = w.astype(np.float64), after[name].astype(np.float64) - w.astype(np.float64)
        if tensors == "actor" and not name.startswith("policy."):
            assert np.array_equal(bits(after[name]), bits(w)), name
            continue
        s = float(w64.std()) if unit == "std" else 1.0
        if s == 0.0:
            assert not d.any(), name
        elif norm == "linf":
            assert np.abs(d).max() <= eps * s, (name, np.abs(d).max(), eps * s)
        else:
            assert np.linalg.norm(d / s) <= eps * (1 + 1e-6) + 1e-12, name
    again = attack.tamper(policy, rng=np.random.default_rng(seed), probe=probe)
    assert same_bits(weights(again), after), "not deterministic for a seed"


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(0, 40),
    mode=st.sampled_from(["random", "targeted"]),
    dim=st.integers(1, 4),
    hidden=st.integers(1, 6),
    continuous=st.booleans(),
    tensors=st.sampled_from(["actor", "all"]),
    seed=st.integers(0, 2**16),
)
def test_bit_flips_change_exactly_k_bits_and_leave_the_original_intact(
    k: int, mode: str, dim: int, hidden: int, continuous: bool, tensors: str, seed: int
) -> None:
    policy = mlp(dim, hidden, 2, seed, continuous=continuous, value=True)
    before = weights(policy)
    attack = make_parameter_attack("bitflip-params-v1", k, mode=mode, tensors=tensors, candidates=2)
    probe = probe_for(policy, seed)
    tampered = attack.tamper(policy, rng=np.random.default_rng(seed), probe=probe)
    after = weights(tampered)
    assert same_bits(weights(policy), before), "the original was modified"
    assert hamming(before, after) == k
    assert len(set(attack.flips)) == len(attack.flips) == k
    touched = {name for name, _, _ in attack.flips}
    if tensors == "actor" or mode == "targeted":
        assert all(name.startswith("policy.") for name in touched)
    again = attack.tamper(policy, rng=np.random.default_rng(seed), probe=probe)
    assert same_bits(weights(again), after), "not deterministic for a seed"


# -- exact behaviour -----------------------------------------------------------------------
@pytest.mark.parametrize("eps", [0.1, 0.2, 0.3, 0.5])
def test_pgd_reaches_the_worst_corner_of_a_linear_policy(eps: float) -> None:
    """logits = W·s + b with W = [[1, -2, 0.5], [0, 0, 0]], b = 0, one probe state s: the
    cross-entropy gradient has a constant sign, so PGD ends at the corner W0 - ε·sign(s),
    W1 + ε·sign(s), b = (-ε, +ε), which lowers the margin z0 - z1 by 2ε(‖s‖_1 + 1)."""
    policy = linear_policy(np.array([1.0, -2.0, 0.5]))
    s = np.array([[0.3, -0.2, 0.1]], np.float32)
    margin = 0.75
    attack = make_parameter_attack("pgd-params-v1", eps, unit="raw")
    tampered = attack.tamper(policy, rng=np.random.default_rng(0), probe=s)
    before, after = weights(policy), weights(tampered)
    w, b = "policy.0.weight", "policy.0.bias"
    sign = np.sign(s[0])
    np.testing.assert_allclose(after[w][0], before[w][0] - eps * sign, atol=1e-6)
    np.testing.assert_allclose(after[w][1], before[w][1] + eps * sign, atol=1e-6)
    np.testing.assert_allclose(after[b], [-eps, eps], atol=1e-6)
    logits = tampered.torch_module()(torch.from_numpy(s)).detach().numpy()[0]
    expected = margin - 2 * eps * (np.abs(s).sum() + 1)
    assert logits[0] - logits[1] == pytest.approx(expected, abs=1e-5)
    assert int(tampered.act(s)[0]) == (1 if expected < 0 else 0)


def test_a_zero_budget_changes_nothing() -> None:
    policy = linear_policy(np.array([1.0, -2.0, 0.5]))
    for attack in (
        make_parameter_attack("noise-params-v1", 0.0),
        make_parameter_attack("pgd-params-v1", 0.0, unit="raw"),
        make_parameter_attack("bitflip-params-v1", 0, mode="random"),
    ):
        tampered = attack.tamper(policy, rng=np.random.default_rng(0), probe=probe_for(policy, 0))
        assert same_bits(weights(tampered), weights(policy))
        assert tampered.info.sha256 == policy.info.sha256  # the digest of the weights


def test_flipping_every_bit_inverts_every_weight() -> None:
    policy = linear_policy(np.array([1.0, -2.0, 0.5]))
    before = weights(policy)
    n_bits = 32 * sum(w.size for w in before.values())
    attack = make_parameter_attack("bitflip-params-v1", n_bits, mode="random")
    after = weights(attack.tamper(policy, rng=np.random.default_rng(0)))
    for name, w in before.items():
        assert np.array_equal(bits(after[name]), ~bits(w))
    with pytest.raises(InvalidBudget, match="hold 256 bits"):
        make_parameter_attack("bitflip-params-v1", n_bits + 1, mode="random").tamper(
            policy, rng=np.random.default_rng(0)
        )


def test_tensors_of_zero_std_cannot_move_in_std_units() -> None:
    policy = linear_policy(np.array([1.0, -2.0, 0.5]))  # biases are all zero
    tampered = make_parameter_attack("noise-params-v1", 1.0).tamper(
        policy, rng=np.random.default_rng(0)
    )
    assert np.array_equal(weights(tampered)["policy.0.bias"], np.zeros(2, np.float32))
    assert not np.array_equal(
        weights(tampered)["policy.0.weight"], weights(policy)["policy.0.weight"]
    )


# -- damage on a zoo policy ----------------------------------------------------------------
def test_targeted_bit_flips_do_more_damage_than_random_ones_on_cartpole_ppo() -> None:
    policy = load_policy("zoo:cartpole-ppo")
    probe = probe_observations(policy, n=128, seed=0)
    held_out = probe_observations(policy, n=128, seed=1)  # damage measured where it did not look
    clean = policy.act(held_out)

    def change_rate(attack: ParameterAttack, seed: int) -> float:
        tampered = attack.tamper(policy, rng=np.random.default_rng(seed), probe=probe)
        return float((act_with_fallback(tampered, held_out)[0] != clean).mean())

    targeted = change_rate(make_parameter_attack("bitflip-params-v1", 2, mode="targeted"), 0)
    random = [
        change_rate(make_parameter_attack("bitflip-params-v1", 2, mode="random"), s)
        for s in range(10)
    ]
    assert targeted > 0.3
    assert targeted > float(np.mean(random)) + 0.2, (targeted, random)


# -- tampered policy directories -----------------------------------------------------------
def test_tampering_the_weights_file_alone_is_refused_at_load(tmp_path: Path) -> None:
    src = zoo_path("cartpole-ppo")
    attack = make_parameter_attack("noise-params-v1", 0.1)
    dst = tamper_directory(src, tmp_path / "tampered", attack, rng=np.random.default_rng(0))
    assert (dst / "spec.json").read_bytes() == (src / "spec.json").read_bytes()
    assert (dst / "weights.safetensors").read_bytes() != (src / "weights.safetensors").read_bytes()
    with pytest.raises(PolicyLoadError, match="SHA-256"):
        load_policy(dst)
    with pytest.raises(FileExistsError):
        tamper_directory(src, dst, attack, rng=np.random.default_rng(0))
    tamper_directory(src, dst, attack, rng=np.random.default_rng(0), rehash=True, overwrite=True)
    load_policy(dst)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tampered"]  # no temporaries left


def test_rewriting_the_spec_digest_too_makes_the_tampered_copy_load(tmp_path: Path) -> None:
    src = zoo_path("cartpole-ppo")
    clean = load_policy("zoo:cartpole-ppo")
    attack = make_parameter_attack("noise-params-v1", 0.1)
    dst = tamper_directory(
        src, tmp_path / "tampered", attack, rng=np.random.default_rng(0), rehash=True
    )
    loaded = load_policy(dst)
    expected = attack.tamper(clean, rng=np.random.default_rng(0))
    assert same_bits(weights(loaded), weights(expected))
    assert not same_bits(weights(loaded), weights(clean))
    # Only the weights' digest changed in the spec; the policy's own digest (of the spec)
    # differs, which only a signature or a pinned digest would notice.
    old = json.loads((src / "spec.json").read_text())
    new = json.loads((dst / "spec.json").read_text())
    assert new["weights"]["sha256"] != old["weights"]["sha256"]
    new["weights"]["sha256"] = old["weights"]["sha256"]
    assert new == old
    assert loaded.info.sha256 != clean.info.sha256


# -- errors --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("attack_id", "budget", "params", "error", "message"),
    [
        ("bitflip-params-v1", -1, {}, InvalidBudget, ">= 0"),
        ("bitflip-params-v1", 1.5, {}, InvalidBudget, "whole number of bits"),
        ("bitflip-params-v1", float("nan"), {}, InvalidBudget, "finite"),
        ("noise-params-v1", -0.1, {}, InvalidBudget, ">= 0"),
        ("pgd-params-v1", float("inf"), {}, InvalidBudget, "finite"),
        ("pgd-params-v1", 0.1, {"steps": 0}, ConfigError, "steps"),
        ("noise-params-v1", 0.1, {"norm": "l0"}, ConfigError, "norms"),
        ("noise-params-v1", 0.1, {"unit": "probability"}, ConfigError, "unit"),
        ("bitflip-params-v1", 1, {"unit": "std"}, ConfigError, "unit"),
        ("bitflip-params-v1", 1, {"mode": "smart"}, ConfigError, "mode"),
        ("noise-params-v1", 0.1, {"tensors": "critic"}, ConfigError, "tensors"),
        ("noise-params-v2", 0.1, {}, UnknownAttack, "did you mean noise-params-v1"),
        ("noise-params-v1", 0.1, {"phase": "runtime"}, ConfigError, "phase"),
        ("pgd-params-v1", 0.1, {"objective": "mse"}, ConfigError, "objective"),
        ("bitflip-params-v1", 1, {"candidates": 0}, ConfigError, "candidates"),
    ],
)
def test_bad_budgets_and_settings_fail_clearly(
    attack_id: str, budget: float, params: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        make_parameter_attack(attack_id, budget, **params)


def test_targeted_bit_search_needs_a_white_box_threat_model() -> None:
    tm = ThreatModel(Surface.PARAMETERS, 1, norm="l0", knowledge="black-box")
    with pytest.raises(ConfigError, match="white-box"):
        BitFlipParameters(tm, mode="targeted")
    BitFlipParameters(tm, mode="random")
    with pytest.raises(ConfigError, match="parameters surface"):
        NoiseParameters(ThreatModel(Surface.OBSERVATION, 0.1))


def test_a_policy_without_a_declarative_network_is_not_applicable() -> None:
    net = torch.nn.Linear(2, 2)
    value = torch.nn.Linear(2, 1)
    policy = from_torch(net, gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(2), value=value)
    assert policy.network is None
    with pytest.raises(AttackNotApplicable, match="declarative network"):
        make_parameter_attack("noise-params-v1", 0.1).tamper(policy, rng=np.random.default_rng(0))


def test_gradient_attacks_need_a_probe_or_an_environment() -> None:
    policy = linear_policy(np.array([1.0, 2.0]))
    with pytest.raises(ConfigError, match="probe"):
        make_parameter_attack("pgd-params-v1", 0.1).tamper(policy, rng=np.random.default_rng(0))


class _NaNCore(NoiseParameters):
    def _tamper(self, policy: Any, weights: Any, probe: Any, rng: Any, progress: Any) -> Any:
        return {n: torch.full_like(w, float("nan")) for n, w in weights.items()}


class _OneBitTooMany(BitFlipParameters):
    def _tamper(self, policy: Any, weights: Any, probe: Any, rng: Any, progress: Any) -> Any:
        self.k += 1
        try:
            return super()._tamper(policy, weights, probe, rng, progress)
        finally:
            self.k -= 1


def test_a_core_that_leaves_its_budget_raises_budget_violation() -> None:
    policy = linear_policy(np.array([1.0, 2.0]))
    with pytest.raises(BudgetViolation, match="not finite"):
        _NaNCore(ThreatModel(Surface.PARAMETERS, 0.1, unit="std")).tamper(
            policy, rng=np.random.default_rng(0)
        )
    tm = ThreatModel(Surface.PARAMETERS, 3, norm="l0", knowledge="black-box")
    with pytest.raises(BudgetViolation, match="exactly k=3"):
        _OneBitTooMany(tm, mode="random").tamper(policy, rng=np.random.default_rng(0))


# -- the contract --------------------------------------------------------------------------
def test_registry_and_description() -> None:
    assert set(PARAMETER_ATTACKS) == {"noise-params-v1", "pgd-params-v1", "bitflip-params-v1"}
    assert not set(PARAMETER_ATTACKS) & set(ATTACKS)  # not in the inference-time suite
    assert PARAMETER_ATTACKS["pgd-params-v1"] is GradientParameters
    attack = make_parameter_attack("bitflip-params-v1", 4, mode="random", phase="training")
    d = attack.describe()
    assert d["surface"] == "parameters"
    assert d["atlas"] == ["AML.T0018.000"]
    assert d["threat_model"]["phase"] == "training"
    assert d["threat_model"]["knowledge"] == "black-box"
    assert d["params"]["mode"] == "random"
    assert attack.label == "bitflip-params-v1 (random)"


def test_start_tampers_once_and_keeps_the_result() -> None:
    policy = linear_policy(np.array([1.0, 2.0]))
    attack = make_parameter_attack("noise-params-v1", 0.5)
    attack.start(policy, num_envs=1, rng=np.random.default_rng(3))
    assert attack.tampered is not None
    provenance = attack.tampered.info.provenance["tampered"]
    assert provenance["parent_sha256"] == policy.info.sha256
    assert provenance["attack"]["id"] == "noise-params-v1"
    assert attack.tampered.info.clean_return is None
    expected = attack.tamper(policy, rng=np.random.default_rng(3))
    assert same_bits(weights(attack.tampered), weights(expected))
