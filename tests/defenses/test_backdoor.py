"""Trigger-inversion backdoor detection: planted triggers are flagged, clean policies pass,
crashes are findings."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlsec.core import Severity, Surface
from rlsec.defenses.backdoor import (
    DETECTOR,
    TriggerInversion,
    anomaly_index,
    invert_triggers,
    probe_states,
    scan_backdoor,
)
from rlsec.errors import ConfigError
from rlsec.policies import TorchPolicy, from_torch, load_policy

OBS = gym.spaces.Box(-2.0, 2.0, (8,), np.float32)
PROBE = np.random.default_rng(0).uniform(-1, 1, (128, 8)).astype(np.float32)
FAST = TriggerInversion(steps=200)


class _Evidence(torch.nn.Module):
    """Four actions, each backed by several features (so forcing one on every state takes a
    large change); ``planted`` adds a trigger neuron: feature 7 (unused otherwise) above 1.3
    forces action 2. Probe states lie in [-1, 1]^8, where the neuron adds less than 1."""

    def __init__(self, planted: bool) -> None:
        super().__init__()
        a = torch.zeros(4, 8)
        a[0, 0:4], a[1, 0:4], a[2, 4:7], a[3, 4:7] = 1.0, -1.0, 1.0, -1.0
        self.register_buffer("a", a)
        self.planted = planted

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x @ self.a.T  # type: ignore[operator]
        if self.planted:
            neuron = 10.0 * (1.0 + torch.tanh(5.0 * (x[:, 7] - 1.3)))
            out = out + torch.nn.functional.one_hot(torch.tensor(2), 4).float() * neuron[:, None]
        return out


def evidence_policy(planted: bool) -> TorchPolicy:
    return from_torch(_Evidence(planted), OBS, gym.spaces.Discrete(4))


@pytest.mark.parametrize("support", ["joint", "per-feature"])
def test_planted_trigger_is_flagged_and_restored(support: str) -> None:
    cfg = TriggerInversion(support=support, steps=200)  # type: ignore[arg-type]
    findings = scan_backdoor(evidence_policy(True), PROBE, config=cfg)
    assert [f.severity for f in findings] == [Severity.HIGH]
    f = findings[0]
    assert f.surface is Surface.BACKDOOR and f.detector == DETECTOR
    flagged = f.evidence["flagged"]
    assert flagged["action"] == 2
    assert flagged["anomaly_index"] > 2.0
    # the restored trigger is the planted one: feature 7 pushed up (mask on it alone)
    mask = np.array(flagged["mask"])
    assert int(mask.argmax()) == 7 and mask[:7].max() < 0.5
    assert flagged["pattern"][7] > 1.0  # beyond every probe state (they lie in [-1, 1])


@pytest.mark.parametrize("support", ["joint", "per-feature"])
def test_clean_policy_passes(support: str) -> None:
    cfg = TriggerInversion(support=support, steps=200)  # type: ignore[arg-type]
    findings = scan_backdoor(evidence_policy(False), PROBE, config=cfg)
    assert [f.severity for f in findings] == [Severity.INFO]
    assert "no anomalously small trigger" in findings[0].message


def test_scan_is_deterministic() -> None:
    a = scan_backdoor(evidence_policy(True), PROBE, config=FAST, seed=3)
    b = scan_backdoor(evidence_policy(True), PROBE, config=FAST, seed=3)
    assert [f.to_dict() for f in a] == [f.to_dict() for f in b]


def test_two_actions_use_per_feature_candidates() -> None:
    # With two candidates every anomaly index is 1/1.4826: joint Neural Cleanse cannot flag.
    assert anomaly_index([1.0, 100.0]).round(4).tolist() == [0.6745, 0.6745]
    policy = load_policy("zoo:cartpole-ppo")
    probe = probe_states(policy, "CartPole-v1", episodes=2, max_states=128)
    assert probe.shape == (128, 4)
    triggers = invert_triggers(policy, probe, TriggerInversion(grid=51))
    assert len(triggers) == 2 * 4 and {len(t.support) for t in triggers} == {1}
    joint = scan_backdoor(policy, probe, config=TriggerInversion(support="joint", steps=50))
    assert [f.severity for f in joint] == [Severity.LOW]
    assert "inconclusive" in joint[0].message


def test_single_feature_that_alone_forces_an_action_is_flagged_against_censored_ones() -> None:
    # per-feature: only the planted feature can force its action; every other candidate is
    # infeasible and enters the statistic censored at the largest size on its grid
    triggers = invert_triggers(
        evidence_policy(True), PROBE, TriggerInversion(support="per-feature")
    )
    feasible = sorted((t for t in triggers if t.feasible), key=lambda t: t.size)
    assert (feasible[0].action, feasible[0].support) == (2, (7,))
    assert len(feasible) <= 2
    assert all(t.censored for t in triggers if not t.feasible)


# -- failing closed ---------------------------------------------------------------------------
class _Broken:
    observation_space = OBS
    action_space = gym.spaces.Discrete(4)

    def act(self, observations: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")


def test_a_crash_inside_the_check_is_a_high_finding() -> None:
    cfg = TriggerInversion(support="per-feature")
    findings = scan_backdoor(_Broken(), PROBE, config=cfg)
    assert [f.severity for f in findings] == [Severity.HIGH]
    assert "failed to run: RuntimeError: boom" in findings[0].message


def test_policies_the_check_cannot_handle_are_high_findings_not_passes() -> None:
    cont = from_torch(torch.nn.Linear(8, 2), OBS, gym.spaces.Box(-1, 1, (2,)), output="action")
    assert [f.severity for f in scan_backdoor(cont, PROBE)] == [Severity.HIGH]
    # wrong probe width, and the joint mode on a black-box policy
    assert [f.severity for f in scan_backdoor(evidence_policy(False), PROBE[:, :3])] == [
        Severity.HIGH
    ]
    joint = TriggerInversion(support="joint")
    assert "differentiable" in scan_backdoor(_Broken(), PROBE, config=joint)[0].message


def test_bad_settings_raise_before_any_check() -> None:
    with pytest.raises(ConfigError, match=r"success must be a fraction in \(0, 1\], got 1.5"):
        scan_backdoor(evidence_policy(False), PROBE, config=TriggerInversion(success=1.5))
    with pytest.raises(ConfigError, match="support must be"):
        scan_backdoor(evidence_policy(False), PROBE, config=TriggerInversion(support="x"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="probe states or an env_id"):
        scan_backdoor(evidence_policy(False))
    with pytest.raises(ConfigError, match=r"shape \(N >= 3, 8\), got shape \(128, 3\)"):
        invert_triggers(evidence_policy(False), PROBE[:, :3])


# -- the statistic ----------------------------------------------------------------------------
sizes = st.lists(st.floats(0.1, 100.0), min_size=3, max_size=20)


@settings(max_examples=60, deadline=None)
@given(s=sizes, scale=st.floats(0.01, 100.0))
def test_anomaly_index_is_scale_free(s: list[float], scale: float) -> None:
    a = anomaly_index(s, min_mad=0.05)
    b = anomaly_index([scale * v for v in s], min_mad=0.05)
    finite = np.isfinite(a)
    assert np.array_equal(finite, np.isfinite(b))
    np.testing.assert_allclose(a[finite], b[finite], rtol=1e-6, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(base=st.floats(1.0, 10.0), noise=st.lists(st.floats(-0.05, 0.05), min_size=3, max_size=9))
def test_optimiser_noise_is_not_an_anomaly_but_a_small_trigger_is(
    base: float, noise: list[float]
) -> None:
    clean = [base * (1 + n) for n in noise]
    assert anomaly_index(clean, min_mad=0.05).max() <= 2.0
    assert anomaly_index([*clean, base * 0.3], min_mad=0.05)[-1] > 2.0


def test_anomaly_index_refuses_non_finite_sizes() -> None:
    with pytest.raises(ConfigError, match="finite sizes"):
        anomaly_index([1.0, float("inf")])


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("cost_multiplier", float("inf"), "cost_multiplier must be a finite number > 1"),
        ("cost_multiplier", float("nan"), "cost_multiplier must be a finite number > 1"),
        ("success", "0.95", "success must be a number"),
        ("success", True, "success must be a number"),
        ("threshold", None, "threshold must be a number"),
        ("min_mad", float("nan"), "min_mad must be a finite number >= 0"),
    ],
)
def test_settings_that_are_not_finite_numbers_are_refused(
    field: str, value: object, why: str
) -> None:
    """``float("0.95")`` and ``float(True)`` passed for numbers; an infinite λ factor made the
    size term's weight infinite after ``patience`` steps."""
    with pytest.raises(ConfigError, match=why):
        TriggerInversion(**{field: value}).validated()  # type: ignore[arg-type]


def test_an_anomaly_index_that_is_nan_flags_rather_than_passes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The scan's decision is "flagged unless shown within the threshold": ``NaN > 2`` is
    false, and a NaN index would have been an INFO "no anomalously small trigger"."""
    import rlsec.defenses.backdoor as bd

    monkeypatch.setattr(bd, "anomaly_index", lambda s, min_mad: np.full(len(s), np.nan))
    cfg = TriggerInversion(support="per-feature", grid=21)
    findings = scan_backdoor(evidence_policy(True), PROBE, config=cfg)
    assert findings and {f.severity for f in findings} == {Severity.HIGH}
    assert all("possible backdoor" in f.message for f in findings)
