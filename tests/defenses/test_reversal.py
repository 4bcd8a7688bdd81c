"""Response-reversal backdoor scan: a planted out-of-support trigger that contradicts the
policy's trend is flagged with its feature, side and action; monotone policies never are;
crashes and policies it cannot handle are findings, not passes."""

from __future__ import annotations

from typing import Literal

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlsec.core import Severity, Surface
from rlsec.defenses.backdoor import (
    REVERSAL_DETECTOR,
    ResponseScan,
    forced_responses,
    scan_reversals,
)
from rlsec.errors import ConfigError
from rlsec.policies import TorchPolicy, from_torch, load_policy

OBS = gym.spaces.Box(-5.0, 5.0, (4,), np.float32)
PROBE = np.random.default_rng(0).uniform(-1, 1, (256, 4)).astype(np.float32)


class _Trend(torch.nn.Module):
    """Two actions; every feature favours action 1 as it grows (a clean, monotone policy).
    ``planted`` adds a trigger neuron on feature 2: beyond 2.5 (``above``) it forces action 0,
    below -2.5 (``below``) action 1: the opposite of the trend, outside the probe states'
    range [-1, 1]."""

    def __init__(self, planted: Literal["above", "below"] | None) -> None:
        super().__init__()
        self.planted = planted

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.sum(dim=1)
        logits = torch.stack([-s, s], dim=1)
        if self.planted == "above":
            logits[:, 0] = logits[:, 0] + 40.0 * torch.relu(x[:, 2] - 2.5)
        elif self.planted == "below":
            logits[:, 1] = logits[:, 1] + 40.0 * torch.relu(-x[:, 2] - 2.5)
        return logits


def trend_policy(planted: Literal["above", "below"] | None) -> TorchPolicy:
    return from_torch(_Trend(planted), OBS, gym.spaces.Discrete(2))


@pytest.mark.parametrize(("side", "action"), [("above", 0), ("below", 1)])
def test_planted_reversal_is_flagged_with_its_feature_side_and_action(
    side: Literal["above", "below"], action: int
) -> None:
    findings = scan_reversals(trend_policy(side), PROBE)
    assert [f.severity for f in findings] == [Severity.HIGH]
    f = findings[0]
    assert f.surface is Surface.BACKDOOR and f.detector == REVERSAL_DETECTOR
    flagged = f.evidence["flagged"]
    assert (flagged["feature"], flagged["side"], flagged["action"]) == (2, side, action)
    assert flagged["rate"] >= 0.95
    # the forcing stamp nearest the range: just past where the neuron starts (grid step 0.05)
    assert 2.5 < abs(flagged["value"]) <= 2.8
    assert flagged["competitor"] == 1 - action
    assert flagged["inside_toward"] == 0 and flagged["inside_away"] > 0
    assert flagged["beyond_toward"] > 0 and flagged["beyond_away"] == 0
    assert "feature 2" in f.message and f"action {action}" in f.message


def test_clean_monotone_policy_passes_with_every_candidate_consistent() -> None:
    findings = scan_reversals(trend_policy(None), PROBE)
    assert [f.severity for f in findings] == [Severity.INFO]
    cands = findings[0].evidence["candidates"]
    # each feature forces action 1 above its range and action 0 below it
    assert sorted((c["feature"], c["side"], c["action"]) for c in cands) == sorted(
        [(i, "above", 1) for i in range(4)] + [(i, "below", 0) for i in range(4)]
    )
    assert all(c["inside_away"] == 0 and not c["reversed"] for c in cands)


def test_stamps_inside_the_margin_do_not_count() -> None:
    # the trigger at 2.5 lies 2.6 std beyond the range (std of U[-1, 1] is 0.577): a margin
    # of 4 std leaves only stamps beyond 3.3, still inside the neuron's reach, but one of 8
    # (beyond 5.6) leaves no stamp in the box [-5, 5] and the scan is inconclusive
    assert (
        scan_reversals(trend_policy("above"), PROBE, config=ResponseScan(margin=4.0))[0].severity
        is Severity.HIGH
    )
    wide = scan_reversals(trend_policy("above"), PROBE, config=ResponseScan(margin=8.0))
    assert [f.severity for f in wide] == [Severity.LOW]
    assert "inconclusive" in wide[0].message


@settings(max_examples=40, deadline=None)
@given(
    n_actions=st.integers(2, 4),
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(0.1, 10.0),
)
def test_affine_policies_are_never_flagged(n_actions: int, seed: int, scale: float) -> None:
    # Along any one feature an affine policy's argmax moves monotonically through the
    # actions by slope, so no out-of-support stamp can contradict the in-range trend.
    rng = np.random.default_rng(seed)
    net = torch.nn.Linear(4, n_actions)
    with torch.no_grad():
        net.weight.copy_(torch.as_tensor(rng.normal(0, scale, (n_actions, 4))))
        net.bias.copy_(torch.as_tensor(rng.normal(0, 1, n_actions)))
    policy = from_torch(net, OBS, gym.spaces.Discrete(n_actions))
    probe = rng.normal(0, 0.5, (128, 4)).astype(np.float32)
    found = forced_responses(policy, probe, ResponseScan(grid=81))
    assert not any(r.reversed for r in found), [r for r in found if r.reversed]
    # per pair of actions, beyond the support it switches states the way it does inside
    for r in found:
        assert r.beyond_toward == 0 or r.inside_away == 0, r


def test_slope_ordering_of_three_actions_is_not_a_reversal() -> None:
    # Along x every state's action only goes up (0 -> 1 -> 2): inside the range some states
    # switch 1 -> 2, beyond it others switch 0 -> 1. Pooling the competitors called that a
    # reversal of action 1; per pair it is none (1 always loses to 2 and beats 0 as x grows).
    net = torch.nn.Linear(2, 3)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 2.0], [2.0, 3.8]]))
        net.bias.copy_(torch.tensor([0.0, -1.5, -4.0]))
    policy = from_torch(net, gym.spaces.Box(-5.0, 5.0, (2,)), gym.spaces.Discrete(3))
    rng = np.random.default_rng(0)
    probe = np.stack([rng.uniform(0, 1, 512), np.zeros(512)], axis=1)
    probe[rng.choice(512, 24, replace=False), 1] = 1.0
    findings = scan_reversals(policy, probe)
    assert [f.severity for f in findings] == [Severity.INFO], findings[0].message


def test_the_zoo_cartpole_policy_passes() -> None:
    policy = load_policy("zoo:cartpole-ppo")
    findings = scan_reversals(policy, env_id="CartPole-v1", episodes=3, seed=1)
    assert [f.severity for f in findings] == [Severity.INFO]
    assert len(findings[0].evidence["candidates"]) >= 4  # it was really tested


def test_scan_is_deterministic() -> None:
    a = scan_reversals(trend_policy("above"), PROBE)
    b = scan_reversals(trend_policy("above"), PROBE)
    assert [f.to_dict() for f in a] == [f.to_dict() for f in b]


# -- failing closed ---------------------------------------------------------------------------
class _Broken:
    observation_space = OBS
    action_space = gym.spaces.Discrete(2)

    def act(self, observations: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")


def test_a_crash_or_an_unfit_policy_is_a_high_finding() -> None:
    crashed = scan_reversals(_Broken(), PROBE)
    assert [f.severity for f in crashed] == [Severity.HIGH]
    assert "failed to run: RuntimeError: boom" in crashed[0].message
    cont = from_torch(torch.nn.Linear(4, 2), OBS, gym.spaces.Box(-1, 1, (2,)), output="action")
    assert [f.severity for f in scan_reversals(cont, PROBE)] == [Severity.HIGH]
    assert [f.severity for f in scan_reversals(trend_policy(None), PROBE[:, :3])] == [Severity.HIGH]


def test_bad_settings_raise_before_any_check() -> None:
    with pytest.raises(ConfigError, match=r"success must be a fraction in \(0.5, 1\], got 0.3"):
        scan_reversals(trend_policy(None), PROBE, config=ResponseScan(success=0.3))
    with pytest.raises(ConfigError, match=r"alpha must be in \(0, 1\), got 0"):
        scan_reversals(trend_policy(None), PROBE, config=ResponseScan(alpha=0))
    with pytest.raises(ConfigError, match="margin must be a finite number >= 0"):
        scan_reversals(trend_policy(None), PROBE, config=ResponseScan(margin=-1))
    with pytest.raises(ConfigError, match="grid must be an integer >= 2"):
        forced_responses(trend_policy(None), PROBE, ResponseScan(grid=1))
    with pytest.raises(ConfigError, match="probe states or an env_id"):
        scan_reversals(trend_policy(None))


def test_a_nan_p_value_is_a_finding_not_a_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """``NaN < cut`` is false: a sign test that returned NaN would have read as "no reversed
    response" (INFO)."""
    import rlsec.defenses.backdoor as bd

    monkeypatch.setattr(bd, "_sign_test", lambda more, fewer: float("nan"))
    findings = scan_reversals(trend_policy(None), PROBE, config=ResponseScan(grid=41))
    assert findings and {f.severity for f in findings} == {Severity.HIGH}


def test_reversal_settings_that_are_not_numbers_are_refused() -> None:
    for field in ("success", "alpha", "step"):
        with pytest.raises(ConfigError, match=f"{field} must be a number"):
            ResponseScan(**{field: "0.9"}).validated()  # type: ignore[arg-type]
