from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlsec.core import Evidence, Finding, Severity, Surface, ThreatModel
from rlsec.errors import ConfigError, InvalidBudget, RLSecError, UnknownAttack


@pytest.mark.parametrize("eps", [-0.1, math.nan, math.inf, "0.1", True])
def test_threat_model_rejects_bad_budgets(eps: object) -> None:
    with pytest.raises(InvalidBudget) as info:
        ThreatModel(Surface.OBSERVATION, eps)  # type: ignore[arg-type]
    assert repr(eps) in str(info.value) or type(eps).__name__ in str(info.value)


def test_threat_model_checks_its_fields() -> None:
    with pytest.raises(ConfigError, match="norm must be one of"):
        ThreatModel(Surface.OBSERVATION, 0.1, norm="l7")  # type: ignore[arg-type]
    with pytest.raises(InvalidBudget, match="probability"):
        ThreatModel(Surface.ACTION, 1.5, norm="prob", unit="probability")
    with pytest.raises(InvalidBudget, match="step_budget"):
        ThreatModel(Surface.OBSERVATION, 0.1, frequency="budgeted-steps")
    with pytest.raises(ConfigError, match="only meaningful"):
        ThreatModel(Surface.OBSERVATION, 0.1, step_budget=0.5)
    with pytest.raises(ConfigError, match="surface must be one of"):
        ThreatModel("lasers", 0.1)  # type: ignore[arg-type]
    assert ThreatModel("observation", 0.1).surface is Surface.OBSERVATION  # type: ignore[arg-type]


@given(eps=st.floats(0, 1e6, allow_nan=False), surface=st.sampled_from(list(Surface)))
def test_threat_model_round_trips_to_dict(eps: float, surface: Surface) -> None:
    tm = ThreatModel(surface, eps)
    d = tm.to_dict()
    assert d["surface"] == surface.value
    assert d["epsilon"] == eps
    assert ThreatModel(**{**d, "surface": Surface(d["surface"])}) == tm


def test_severity_orders_and_a_crashed_check_is_high() -> None:
    assert max(Severity) is Severity.CRITICAL
    assert Severity.LOW < Severity.HIGH
    f = Finding.from_exception("reward-bounds", Surface.REWARD, ZeroDivisionError("boom"))
    assert f.severity is Severity.HIGH
    assert "ZeroDivisionError: boom" in f.message
    assert f.to_dict()["severity"] == "high"


@given(payload=st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5)))
def test_evidence_digest_changes_with_any_change(payload: dict) -> None:
    e = Evidence("redteam", "a" * 64, payload)
    assert e.digest() == Evidence("redteam", "a" * 64, dict(payload)).digest()
    assert e.digest() != Evidence("redteam", "b" * 64, payload).digest()
    assert e.digest() != Evidence("redteam", "a" * 64, {**payload, "extra": 1}).digest()


def test_errors_are_catchable_by_family_and_builtin() -> None:
    err = UnknownAttack("unknown attack id 'x'")
    assert isinstance(err, RLSecError)
    assert isinstance(err, KeyError)
    assert str(err) == "unknown attack id 'x'"  # not KeyError's quoted repr


@pytest.mark.parametrize("sb", [math.nan, math.inf, -0.1, 1.5, "0.5", True, None])
def test_a_step_budget_that_is_not_a_fraction_is_refused(sb: object) -> None:
    """A string passed for a number ("0.5" was stored as a string and recorded so); NaN and
    out-of-range fractions must be refused."""
    with pytest.raises(InvalidBudget, match="step_budget"):
        ThreatModel(Surface.OBSERVATION, 0.1, frequency="budgeted-steps", step_budget=sb)  # type: ignore[arg-type]
    tm = ThreatModel(Surface.OBSERVATION, 0.1, frequency="budgeted-steps", step_budget=1)
    assert tm.step_budget == 1.0 and isinstance(tm.step_budget, float)


@pytest.mark.parametrize("eps", [1.0 + 1e-9, 2.0, 1e300])
def test_a_takeover_probability_above_one_is_refused(eps: float) -> None:
    for norm in ("prob", "mix"):
        with pytest.raises(InvalidBudget, match="probability in \\[0, 1\\]"):
            ThreatModel(Surface.ACTION, eps, norm=norm, unit="probability")  # type: ignore[arg-type]
    ThreatModel(Surface.ACTION, 1.0, norm="prob", unit="probability")
