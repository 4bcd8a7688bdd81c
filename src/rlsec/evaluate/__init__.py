"""Campaigns: attacks × budgets × seeds over vectorised envs, with confidence intervals."""

from rlsec.attacks.rollout import EpisodeStats, rollout
from rlsec.evaluate.campaign import (
    DEFAULT_ALPHAS,
    DEFAULT_EPSILONS,
    CampaignConfig,
    applicable_attacks,
    run_campaign,
)
from rlsec.stats import RunningMoments, eps50, mean_ci

__all__ = [
    "DEFAULT_ALPHAS",
    "DEFAULT_EPSILONS",
    "CampaignConfig",
    "EpisodeStats",
    "RunningMoments",
    "applicable_attacks",
    "eps50",
    "mean_ci",
    "rollout",
    "run_campaign",
]
