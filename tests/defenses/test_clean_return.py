"""The clean-return check: a defense that loses the clean task at its budget says so."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlsec.defenses import TrainConfig, train_policy
from rlsec.defenses.clean_return import (
    CLEAN_TOLERANCE,
    check_clean_return,
    undefended_reference,
)
from rlsec.defenses.training import RECIPES
from rlsec.errors import ConfigError

PPO_TINY = {"n_steps": 64, "batch_size": 64, "n_epochs": 2}


def test_defense_that_loses_the_clean_return_is_reported_lost() -> None:
    # the case: sa-reg at ε = 0.2 raw on CartPole PPO exported 123-140, vanilla 500
    check = check_clean_return(131.6, 500.0, "recipe", defense="sa-reg", eps=0.2)
    assert check.status == "lost"
    assert check.threshold == 450.0
    assert "the defense sa-reg at ε = 0.2 (raw) did not keep the clean return" in check.message
    assert "131.6" in check.message and "500.0" in check.message


@pytest.mark.parametrize(
    ("clean", "reference", "status"),
    [
        (450.0, 500.0, "kept"),  # exactly 10% below: kept
        (449.9, 500.0, "lost"),
        (500.0, 500.0, "kept"),
        (-159.0, -145.0, "kept"),  # costs: at least -145 - 14.5 = -159.5
        (-160.0, -145.0, "lost"),
        (0.0, 0.0, "kept"),
        (-0.1, 0.0, "lost"),
    ],
)
def test_clean_return_is_kept_only_within_ten_percent_of_the_reference(
    clean: float, reference: float, status: str
) -> None:
    assert check_clean_return(clean, reference, "r", defense="adv", eps=0.1).status == status


@pytest.mark.parametrize("clean", [math.nan, math.inf, -math.inf, "500", None, True])
def test_non_finite_clean_return_is_lost_not_compared(clean: object) -> None:
    check = check_clean_return(clean, 500.0, "r", defense="sa-reg", eps=0.05)
    assert check.status == "lost"
    assert check.clean is None
    assert "not a finite number" in check.message


def test_no_reference_is_unknown_and_says_so_never_kept() -> None:
    check = check_clean_return(12.0, None, "none known", defense="sa-reg", eps=0.05)
    assert check.status == "unknown"
    assert "not checked" in check.message and "none known" in check.message


@pytest.mark.parametrize("reference", [math.nan, math.inf])
def test_non_finite_reference_is_refused(reference: float) -> None:
    with pytest.raises(ConfigError, match="finite"):
        check_clean_return(500.0, reference, "r", defense="none", eps=0.0)


@given(
    reference=st.floats(-1e6, 1e6, allow_nan=False),
    clean=st.floats(-1e6, 1e6, allow_nan=False),
)
def test_kept_exactly_when_within_tolerance_and_monotone(reference: float, clean: float) -> None:
    check = check_clean_return(clean, reference, "r", defense="adv", eps=0.1)
    assert (check.status == "kept") == (clean >= reference - CLEAN_TOLERANCE * abs(reference))
    if check.status == "kept":  # a higher clean return is never worse
        higher = check_clean_return(clean + 1.0, reference, "r", defense="adv", eps=0.1)
        assert higher.status == "kept"


def test_reference_comes_from_the_caller_then_the_recipe_then_the_reward_threshold() -> None:
    recipe = RECIPES[("ppo", "CartPole-v1")]
    assert undefended_reference(recipe, "CartPole-v1", 321.0) == (321.0, "given by the caller")
    value, source = undefended_reference(recipe, "CartPole-v1")
    assert value == 500.0 and "recipe's vanilla runs" in source
    value, source = undefended_reference({}, "CartPole-v1")
    assert value == 475.0 and "reward_threshold" in source
    value, source = undefended_reference({}, "Pendulum-v1")  # no threshold registered
    assert value is None and "none known" in source


@pytest.mark.parametrize("bad", [math.nan, math.inf, "500", True])
def test_non_finite_reference_return_is_refused_before_anything_is_written(
    tmp_path: Path, bad: Any
) -> None:
    cfg = TrainConfig(algo="ppo", env_id="CartPole-v1", steps=64)
    with pytest.raises(ConfigError, match="reference_return must be a finite number"):
        train_policy(cfg, tmp_path / "out", reference_return=bad)
    assert not (tmp_path / "out").exists()


def test_a_run_below_the_recipe_reference_says_so_in_training_json(tmp_path: Path) -> None:
    # 128 steps of sa-reg: far below the recipe's 500, and trained unlike the recipe
    cfg = TrainConfig(
        algo="ppo",
        env_id="CartPole-v1",
        defense="sa-reg",
        eps=0.2,
        steps=128,
        n_envs=2,
        hyperparameters=PPO_TINY,
        eval_episodes=2,
    )
    result = train_policy(cfg, tmp_path / "run", monitor="off")
    summary = json.loads(result.summary.read_text())
    check = summary["clean_return_check"]
    assert check["status"] == "lost"
    assert check["reference"] == 500.0
    assert check["clean"] == summary["clean_return"]["mean"] < 450.0
    assert "the defense sa-reg at ε = 0.2 (raw) did not keep the clean return" in check["message"]
    assert "differ from the recipe's" in check["source"]
    assert result.clean_return_check is not None
    assert result.clean_return_check.to_dict() == check
