"""Training policies, vanilla or robust, with Stable-Baselines3 as the learner.

:func:`train_policy` trains PPO, DQN or SAC on a Gymnasium environment and writes a native
policy directory, a training log and a summary. A defense makes the policy resist observation
attacks:

* ``adv``: adversarial training (Pattanaik et al. 2018; Kos & Song 2017): on a fraction of its
  steps the agent observes the state perturbed by an inference-time attack (PGD by default)
  computed against its current networks.
* ``sa-reg``: the state-adversarial regulariser of SA-PPO / SA-DQN / SA-DDPG (Zhang et al.
  2020) added to the learner's loss on every update (:mod:`rlsec.defenses.regularisers`).
* ``atla``: alternating training of the agent and a learned optimal adversary (Zhang et al.
  2021): the SA-RL adversary is trained against the current agent, then the agent against the
  current adversary, in phases.

The budget ε is in raw observation units (or per-feature ``scale``) and ramps up from 0 over
the first ``eps_ramp`` fraction of training. The learner is SB3's own algorithm: rlsec adds
its parts through hooks, a vector-env wrapper and the logger, never by copying the algorithm.

Example:
    >>> TrainConfig(algo="ppo", env_id="CartPole-v1", defense="sa-reg", eps=0.1).validated().kappa
    0.03
"""

from __future__ import annotations

import io
import json
import os
import platform
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from rlsec import _files, _inputs
from rlsec.attacks import make_attack
from rlsec.attacks.observation import LearnedObservation, ObservationAttack
from rlsec.attacks.rollout import rollout
from rlsec.core import Surface, ThreatModel
from rlsec.defenses._sb3 import AddedLoss, AttackedVecEnv, JsonlWriter, live_policy
from rlsec.defenses.clean_return import (
    CleanReturnCheck,
    check_clean_return,
    undefended_reference,
)
from rlsec.defenses.monitors import IntegrityMonitor, Thresholds
from rlsec.defenses.regularisers import (
    ActionSmoothness,
    Budget,
    KLSmoothness,
    MarginSmoothness,
)
from rlsec.envs import env_spaces, make, make_vec, unsafe_no_sandbox
from rlsec.errors import ConfigError, IntegrityViolation
from rlsec.policies import TorchPolicy, from_sb3, save_policy
from rlsec.stats import mean_ci

__all__ = [
    "ALGOS",
    "DEFENSES",
    "RECIPES",
    "TrainConfig",
    "TrainResult",
    "export_model",
    "shipped_thresholds",
    "train_policy",
]

ALGOS = ("ppo", "dqn", "sac")
DEFENSES = ("none", "adv", "sa-reg", "atla")
SELECTIONS = ("final", "best", "robust")

#: Hyperparameters per (algo, env id): the RL Baselines3 Zoo's tuned settings, with smaller
#: networks where the task allows. Other environments get SB3's defaults. A recipe may ship
#: the clean return its vanilla runs reach (``reference_clean_return``): every run of the
#: recipe is checked against it (:mod:`rlsec.defenses.clean_return`).
RECIPES: dict[tuple[str, str], dict[str, Any]] = {
    ("ppo", "CartPole-v1"): {
        "timesteps": 100_000,
        "n_envs": 8,
        "kwargs": {
            "n_steps": 32,
            "batch_size": 256,
            "gae_lambda": 0.8,
            "gamma": 0.98,
            "n_epochs": 20,
            "ent_coef": 0.0,
            "learning_rate": 1e-3,
            "clip_range": 0.2,
            "policy_kwargs": {"net_arch": [64, 64]},
        },
        "reference_clean_return": {
            "value": 500.0,
            "source": "median of seeds 0-2, benchmarks/robust_training.py",
        },
    },
    ("dqn", "CartPole-v1"): {
        "timesteps": 100_000,
        "n_envs": 1,
        "kwargs": {
            "learning_rate": 2.3e-3,
            "batch_size": 64,
            "buffer_size": 100_000,
            "learning_starts": 1000,
            "gamma": 0.99,
            "target_update_interval": 10,
            "train_freq": 256,
            "gradient_steps": 128,
            "exploration_fraction": 0.16,
            "exploration_final_eps": 0.04,
            "policy_kwargs": {"net_arch": [256, 256]},
        },
        # DQN's greedy return on CartPole swings between ~100 and 500 from one 10k-step
        # stretch to the next (measured on seeds 0-1: 500 at 70k, 87 at 90k), so the
        # exported policy is the checkpoint that validates best, not whichever is last
        "select": "best",
        "reference_clean_return": {
            "value": 500.0,
            "source": "median of seeds 0-2, benchmarks/robust_training.py",
        },
    },
    ("ppo", "Acrobot-v1"): {
        "timesteps": 200_000,
        "n_envs": 16,
        "kwargs": {
            "n_steps": 256,
            "gae_lambda": 0.94,
            "gamma": 0.99,
            "n_epochs": 4,
            "ent_coef": 0.0,
            "policy_kwargs": {"net_arch": [64, 64]},
        },
    },
    ("sac", "Pendulum-v1"): {
        "timesteps": 20_000,
        "n_envs": 1,
        "kwargs": {"learning_rate": 1e-3, "policy_kwargs": {"net_arch": [64, 64]}},
        "reference_clean_return": {
            "value": -145.1,
            "source": "median of seeds 0-2, benchmarks/robust_training.py",
        },
    },
    ("ppo", "FrozenLake-v1"): {
        "timesteps": 100_000,
        "n_envs": 8,
        "kwargs": {
            "n_steps": 256,
            "batch_size": 256,
            "gamma": 0.99,
            "n_epochs": 10,
            "ent_coef": 0.01,
            "learning_rate": 1e-3,
            "policy_kwargs": {"net_arch": [64, 64]},
        },
    },
    # rlsec's own gridworld (features observations); settings of the FrozenLake recipe
    ("ppo", "rlsec/SlipperyPlant-v0"): {
        "timesteps": 100_000,
        "n_envs": 8,
        "kwargs": {
            "n_steps": 256,
            "batch_size": 256,
            "gamma": 0.99,
            "n_epochs": 10,
            "ent_coef": 0.01,
            "learning_rate": 1e-3,
            "policy_kwargs": {"net_arch": [64, 64]},
        },
    },
}
_DEFAULT_STEPS = {"ppo": 100_000, "dqn": 100_000, "sac": 20_000}
_DEFAULT_ENVS = {"ppo": 8, "dqn": 1, "sac": 1}
#: Weight of the SA regulariser per algorithm (the scale of each divergence differs).
_KAPPA = {"ppo": 0.03, "dqn": 0.5, "sac": 1.0}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (recorded with the policy).

    Attributes:
        algo: ``ppo``, ``dqn`` or ``sac``.
        env_id: a Gymnasium environment id.
        defense: ``none``, ``adv``, ``sa-reg`` or ``atla``.
        eps: the defense's budget (linf, raw observation units unless ``scale`` is given).
        steps: agent environment steps (default: the recipe's).
        kappa: weight of the SA regulariser (default per algorithm).
        margin: SA-DQN's hinge constant ``c``: the action gap the regulariser asks for over
            the ε-ball (in Q units; DQN only).
        attack: the attack adversarial training uses (an observation attack id).
        attack_steps: PGD steps of the inner maximisation and of the adversarial attack.
        adv_prob: fraction of steps on which ``adv``/``atla`` perturb what the agent sees.
        eps_ramp: fraction of training over which ε ramps up from 0.
        atla_phases: number of adversary/agent alternations for ``atla``.
        adversary_steps: total steps of ATLA's adversary training (default: ``steps``).
        scale: per-feature unit of ε (default: raw units).
        hyperparameters: overrides of the learner's keyword arguments.
        checkpoint_every: steps between checkpoints (default: a tenth of training).
        eval_episodes: clean episodes evaluated at export.
        select: which policy is exported: ``final`` (the learner at the end) or ``best``
            (of the checkpoints trained at the full budget ε, the one with the highest mean
            clean return over ``select_episodes`` validation episodes, ties to the later;
            the validation episodes' seeds are disjoint from the export evaluation's, so the
            reported clean return is not the score it was selected on); or ``robust``: as
            ``best``, scored by the lower of the clean return and the return under the
            defense's own ``attack`` at ε on the same validation episodes (a defended run
            only: it needs ε > 0). Default: the recipe's, else ``final``.
        select_episodes: validation episodes per checkpoint when ``select`` is ``best``.
        unsafe_no_sandbox: let ``env_id`` name a module outside gymnasium and rlsec to
            import (``module:EnvId``; its code runs unsandboxed, see
            :func:`rlsec.envs.unsafe_no_sandbox`); recorded with the run.
    """

    algo: str
    env_id: str
    defense: str = "none"
    eps: float = 0.0
    steps: int | None = None
    seed: int = 0
    kappa: float | None = None
    margin: float = 1.0
    attack: str = "pgd-obs-v1"
    attack_steps: int = 10
    adv_prob: float = 0.5
    eps_ramp: float = 0.4
    atla_phases: int = 10
    adversary_steps: int | None = None
    n_envs: int | None = None
    scale: tuple[float, ...] | None = None
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    checkpoint_every: int | None = None
    eval_episodes: int = 50
    eval_seed: int = 20261125
    select: str | None = None
    select_episodes: int = 10
    unsafe_no_sandbox: bool = False

    def validated(self) -> TrainConfig:
        """Check every field (and the environment); return the config with defaults filled.

        Raises:
            ConfigError: with what was expected and what was received.
            UnknownEnv: the environment id is not registered.
        """
        if self.algo not in ALGOS:
            raise ConfigError(f"algo must be one of {list(ALGOS)}, got {self.algo!r}")
        if self.defense not in DEFENSES:
            raise ConfigError(f"defense must be one of {list(DEFENSES)}, got {self.defense!r}")
        if not isinstance(self.unsafe_no_sandbox, bool):
            raise ConfigError(f"unsafe_no_sandbox must be a bool, got {self.unsafe_no_sandbox!r}")
        eps = _inputs.budget("eps", self.eps)
        if self.defense != "none" and eps == 0:
            raise ConfigError(f"defense {self.defense!r} needs a budget: pass eps > 0")
        for name in ("steps", "adversary_steps", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None:
                _inputs.count(name, value, limit=_inputs.MAX_STEPS)
        if self.n_envs is not None:
            _inputs.count("n_envs", self.n_envs, limit=_inputs.MAX_NUM_ENVS)
        for name in ("eval_episodes", "select_episodes"):
            _inputs.count(name, getattr(self, name), limit=_inputs.MAX_EPISODES)
        _inputs.seed(self.seed)
        _inputs.seed(self.eval_seed)
        _inputs.seed(self.eval_seed + self.eval_episodes + 1, "eval_seed + eval_episodes + 1")
        if self.select is not None and self.select not in SELECTIONS:
            raise ConfigError(f"select must be one of {list(SELECTIONS)}, got {self.select!r}")
        if self.select == "robust" and self.defense == "none":
            raise ConfigError(
                "select 'robust' validates under the defense's attack at ε: it needs a defense"
            )
        for name in ("attack_steps", "atla_phases"):
            _inputs.count(name, getattr(self, name), limit=_inputs.MAX_STEPS)
        for name in ("adv_prob", "eps_ramp"):
            _inputs.fraction(name, getattr(self, name))
        _inputs.budget("margin", self.margin)
        if self.kappa is not None:
            _inputs.budget("kappa", self.kappa)
        with unsafe_no_sandbox(self.unsafe_no_sandbox):
            obs_space, act_space = env_spaces(self.env_id)
        _check_spaces(self.algo, self.env_id, obs_space, act_space)
        if self.defense != "none" and not isinstance(obs_space, gym.spaces.Box):
            raise ConfigError(
                f"defense {self.defense!r} perturbs continuous observations; "
                f"{self.env_id} observes {obs_space}"
            )
        if self.scale is not None:
            dim = int(np.prod(obs_space.shape or ()))
            sc = np.asarray(self.scale, dtype=float)
            if sc.shape != (dim,) or not np.all(np.isfinite(sc)) or np.any(sc < 0):
                raise ConfigError(f"scale must be {dim} finite numbers >= 0, got {self.scale!r}")
            _inputs.raw_budgets("eps", [eps], sc)
        if self.defense == "adv":
            from rlsec.attacks import attack_class

            cls = attack_class(self.attack)
            if cls.surface is not Surface.OBSERVATION or cls is LearnedObservation:
                raise ConfigError(
                    f"adversarial training uses a gradient or noise observation attack; "
                    f"got {self.attack!r} (use defense 'atla' for the learned adversary)"
                )
        recipe = RECIPES.get((self.algo, self.env_id), {})
        return replace(
            self,
            eps=eps,
            steps=int(self.steps or recipe.get("timesteps", _DEFAULT_STEPS[self.algo])),
            n_envs=int(self.n_envs or recipe.get("n_envs", _DEFAULT_ENVS[self.algo])),
            kappa=_KAPPA[self.algo] if self.kappa is None else float(self.kappa),
            select=self.select or str(recipe.get("select", "final")),
            hyperparameters={**recipe.get("kwargs", {}), **dict(self.hyperparameters)},
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hyperparameters"] = json.loads(json.dumps(dict(self.hyperparameters)))
        d["scale"] = list(self.scale) if self.scale is not None else None
        return d


def _check_spaces(algo: str, env_id: str, obs: gym.Space[Any], act: gym.Space[Any]) -> None:
    if algo == "dqn" and not isinstance(act, gym.spaces.Discrete):
        raise ConfigError(f"dqn needs a Discrete action space; {env_id} has {act}")
    if algo == "sac" and not isinstance(act, gym.spaces.Box):
        raise ConfigError(f"sac needs a Box action space; {env_id} has {act}")
    if not isinstance(obs, (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete)):
        raise ConfigError(f"observations of {env_id} ({obs}) are not supported")


@dataclass
class TrainResult:
    """What a training run produced; ``clean_return_check``: whether the exported policy's
    clean return is within 10% of the undefended reference (also in ``training.json``)."""

    policy_dir: Path
    log: Path
    summary: Path
    clean_return: dict[str, Any]
    seconds: float
    clean_return_check: CleanReturnCheck | None = None


def _check_out(out: Path) -> None:
    _files.check_new_dir(out)


def train_policy(
    config: TrainConfig,
    out: str | os.PathLike[str],
    *,
    progress: Callable[[float, str], None] | None = None,
    wrap_env: Callable[[gym.Env[Any, Any]], gym.Env[Any, Any]] | None = None,
    callbacks: Sequence[Any] = (),
    monitor: IntegrityMonitor | Literal["default", "off"] = "default",
    reference_return: float | None = None,
) -> TrainResult:
    """Train a policy and write ``out/policy`` (native format), ``out/train_log.jsonl``,
    ``out/training.json`` and checkpoints under ``out/checkpoints``.

    ``wrap_env`` wraps every training environment (a training-time attack's
    ``as_wrapper``, or a user's own wrapper); ``callbacks`` are SB3 callbacks run with the
    learner (a replay-buffer poisoner, a monitor). Evaluation at export uses the clean env.

    ``monitor``: the training-integrity monitor (:mod:`rlsec.defenses.monitors`). By default
    its hard checks run, with the calibrated checks' thresholds that ship for the task if
    any, and its findings go to ``out/findings.jsonl``; a finding of high severity stops
    training and raises :class:`~rlsec.errors.IntegrityViolation` (the final policy is not
    written; the last checkpoint and the findings stay).

    The exported policy's clean return is checked against an undefended reference
    (``reference_return`` if given, else the recipe's, else the environment's
    ``reward_threshold``; :mod:`rlsec.defenses.clean_return`): ``training.json`` records the
    verdict under ``clean_return_check`` (status ``kept``, ``lost`` or ``unknown``), and a
    defense that cannot keep the clean return within 10% at its budget says so there.

    Everything is validated before ``out`` is created. Checkpoints are written whole (to a
    temporary directory, then renamed) and ``out/checkpoints/LATEST`` names the newest, so an
    interrupted run (Ctrl-C) leaves its last checkpoint intact; the final policy is written
    only when training completes. With ``select="best"``, ``out/checkpoints/BEST`` names the
    best-validated checkpoint so far, which is kept, and that checkpoint is the one exported.

    Every environment is built inside :func:`rlsec.envs.unsafe_no_sandbox` if, and only if,
    ``config.unsafe_no_sandbox``.

    Raises:
        ConfigError, UnknownEnv, UnsafeEnvId: invalid configuration; nothing was written.
    """
    with unsafe_no_sandbox(config.unsafe_no_sandbox):
        return _train_policy(config, out, progress, wrap_env, callbacks, monitor, reference_return)


def _train_policy(
    config: TrainConfig,
    out: str | os.PathLike[str],
    progress: Callable[[float, str], None] | None,
    wrap_env: Callable[[gym.Env[Any, Any]], gym.Env[Any, Any]] | None,
    callbacks: Sequence[Any],
    monitor: IntegrityMonitor | Literal["default", "off"],
    reference_return: float | None,
) -> TrainResult:
    cfg = config.validated()
    recipe = RECIPES.get((cfg.algo, cfg.env_id), {})
    reference, source = undefended_reference(recipe, cfg.env_id, reference_return)
    out_dir = Path(out)
    _check_out(out_dir)
    assert cfg.steps is not None
    assert cfg.n_envs is not None
    assert cfg.kappa is not None
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "train_log.jsonl"
    watch: IntegrityMonitor | None
    if monitor == "default":
        watch = IntegrityMonitor(
            shipped_thresholds(cfg.algo, cfg.env_id), findings_path=out_dir / "findings.jsonl"
        )
    elif monitor == "off":
        watch = None
    else:
        watch = monitor
    extra = [*callbacks, *([watch] if watch is not None else [])]
    run = _Run(cfg, out_dir, log_path, progress, wrap_env, extra)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small MLPs: one thread is fastest and reproducible
    try:
        run.learn()
        if watch is not None and watch.halted:
            worst = max(watch.findings, key=lambda f: f.severity)
            raise IntegrityViolation(
                f"training stopped at step {run.model.num_timesteps}: {worst.message} "
                f"({len(watch.findings)} findings; the final policy was not written)"
            )
        policy = run.export_final()
    finally:
        torch.set_num_threads(threads)
        run.close()
    assert policy.info.clean_return is not None
    seconds = time.perf_counter() - t0
    if reference_return is None and "reference_clean_return" in recipe and not _as_recipe(cfg):
        source += "; this run's steps or hyperparameters differ from the recipe's"
    check = check_clean_return(
        policy.info.clean_return.get("mean"), reference, source, defense=cfg.defense, eps=cfg.eps
    )
    summary = {
        "config": cfg.to_dict(),
        "seconds": seconds,
        "clean_return": policy.info.clean_return,
        "clean_return_check": check.to_dict(),
        "defense": run.defense_stats(),
        "selection": run.selection(),
        "monitor": _monitor_summary(watch),
        "policy_sha256": policy.info.sha256,
    }
    summary_path = out_dir / "training.json"
    _write_json(summary_path, summary)
    return TrainResult(
        out_dir / "policy", log_path, summary_path, policy.info.clean_return, seconds, check
    )


def _as_recipe(cfg: TrainConfig) -> bool:
    """Whether a (validated) run trains as long and with the same settings as its recipe."""
    recipe = RECIPES.get((cfg.algo, cfg.env_id), {})
    return cfg.steps == recipe.get("timesteps") and dict(cfg.hyperparameters) == dict(
        recipe.get("kwargs", {})
    )


def _monitor_summary(watch: IntegrityMonitor | None) -> dict[str, Any] | None:
    if watch is None:
        return None
    return {
        "findings": len(watch.findings),
        "by_check": {k: sum(f.detector == k for f in watch.findings) for k in watch.first_alarm},
        "first_alarm": dict(watch.first_alarm),
        "thresholds": watch.thresholds.to_dict() if watch.thresholds is not None else None,
        "rollbacks": watch.rollbacks,
    }


def shipped_thresholds(algo: str, env_id: str) -> Thresholds | None:
    """Monitor thresholds calibrated on clean runs of a recipe, if rlsec ships them
    (``scripts/calibrate_monitors.py`` writes them)."""
    from importlib import resources

    name = f"{algo}-{env_id}.json"
    root = resources.files("rlsec.defenses") / "calibration" / name
    if not root.is_file():
        return None
    return Thresholds.from_dict(json.loads(root.read_text()))


def _write_text(path: Path, text: str) -> None:
    """Write a file whole, never through a link (:func:`rlsec._files.write_atomic`)."""
    _files.write_atomic(path, text)


def _point(pointer: Path, name: str) -> None:
    """A one-line pointer file naming a checkpoint."""
    _write_text(pointer, name + "\n")


def _write_json(path: Path, body: Any) -> None:
    _write_text(path, json.dumps(body, indent=2, sort_keys=True, allow_nan=False) + "\n")


class _Run:
    """One training run: the learner, its defense, checkpoints and logging."""

    def __init__(
        self,
        cfg: TrainConfig,
        out: Path,
        log_path: Path,
        progress: Callable[[float, str], None] | None,
        wrap_env: Callable[[gym.Env[Any, Any]], gym.Env[Any, Any]] | None = None,
        callbacks: list[Any] | None = None,
    ) -> None:
        import stable_baselines3 as sb3
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.logger import Logger

        assert cfg.steps is not None
        assert cfg.n_envs is not None
        self.cfg, self.out, self.progress = cfg, out, progress
        self.total = cfg.steps
        self.rng = np.random.default_rng(cfg.seed)
        self.callbacks = callbacks or []
        venv: Any = make_vec_env(
            lambda: make(cfg.env_id), n_envs=cfg.n_envs, seed=cfg.seed, wrapper_class=wrap_env
        )
        self.attacked: AttackedVecEnv | None = None
        self._attack: ObservationAttack | None = None
        self._attack_eps = -1.0
        self.loss: AddedLoss | None = None
        self.adversary: Any = None
        if cfg.defense in ("adv", "atla"):
            self.attacked = AttackedVecEnv(
                venv,
                self._current_attack,
                prob=cfg.adv_prob,
                rng=np.random.default_rng([cfg.seed, 1]),
            )
            venv = self.attacked
        algo = getattr(sb3, cfg.algo.upper())
        self.model = algo(
            "MlpPolicy",
            venv,
            seed=cfg.seed,
            device="cpu",
            verbose=0,
            **dict(cfg.hyperparameters),
        )
        self._writer = JsonlWriter(log_path)
        self.model.set_logger(Logger(folder=None, output_formats=[self._writer]))
        self.view: TorchPolicy | None = None
        self.budget: Budget | None = None
        if cfg.defense != "none":
            self.view = live_policy(self.model)
            space = self.model.observation_space
            assert isinstance(space, gym.spaces.Box)
            self.budget = Budget(
                cfg.eps,
                space,
                total_steps=self.total,
                ramp=cfg.eps_ramp,
                now=lambda: int(self.model.num_timesteps),
                scale=None if cfg.scale is None else np.asarray(cfg.scale),
            )
        if cfg.defense == "sa-reg":
            self._attach_regulariser()
        if cfg.defense == "atla":
            self._build_adversary()
        self.next_checkpoint = cfg.checkpoint_every or max(1, self.total // 10)
        #: ``select="best"``: the best validated snapshot (score, step, policy) and every score
        self.best: tuple[float, int, TorchPolicy] | None = None
        self.scores: list[dict[str, float | int]] = []

    # -- defenses ---------------------------------------------------------------------------
    def _attach_regulariser(self) -> None:
        cfg, model = self.cfg, self.model
        assert self.budget is not None
        assert cfg.kappa is not None
        kw: dict[str, Any] = {
            "kappa": cfg.kappa,
            "steps": cfg.attack_steps,
            "rng": np.random.default_rng([cfg.seed, 2]),
        }
        if cfg.algo == "ppo":
            policy = model.policy
            term: Callable[[torch.Tensor], torch.Tensor] = KLSmoothness(policy, self.budget, **kw)
            capture, optimizer = policy.pi_features_extractor, policy.optimizer
            clip: float | None = float(model.max_grad_norm)
        elif cfg.algo == "dqn":
            term = MarginSmoothness(model.q_net, self.budget, margin=cfg.margin, **kw)
            capture, optimizer = model.q_net, model.policy.optimizer
            clip = float(model.max_grad_norm)
        else:
            actor = model.actor
            term = ActionSmoothness(lambda x: actor(x, deterministic=True), self.budget, **kw)
            capture, optimizer, clip = actor.features_extractor, actor.optimizer, None
        self.loss = AddedLoss(capture, optimizer, term, max_grad_norm=clip)

    def _current_attack(self) -> ObservationAttack | None:
        """The attack adversarial training and ATLA apply now (rebuilt when ε moves)."""
        if self.budget is None or self.view is None:
            return None  # the learner is being built: its first reset is not attacked
        eps = self.budget.current()
        if eps <= 0.0:
            return None
        if self._attack is None or abs(eps - self._attack_eps) > 1e-3 * self.cfg.eps:
            if self.cfg.defense == "atla":
                tm = ThreatModel(Surface.OBSERVATION, eps, knowledge="black-box")
                attack: ObservationAttack = LearnedObservation(
                    tm, adversary=live_policy(self.adversary)
                )
            else:
                built = make_attack(self.cfg.attack, eps, steps=self.cfg.attack_steps)
                assert isinstance(built, ObservationAttack)
                attack = built
            n = self.model.n_envs
            scale = None if self.cfg.scale is None else np.asarray(self.cfg.scale)
            attack.start(
                self.view,
                num_envs=n,
                rng=np.random.default_rng([self.cfg.seed, 3]),
                scale=scale,
                env_id=self.cfg.env_id,
            )
            self._attack, self._attack_eps = attack, eps
        return self._attack

    def _build_adversary(self) -> None:
        from stable_baselines3.common.vec_env import DummyVecEnv

        from rlsec.attacks._ball import Ball
        from rlsec.attacks._learned import AdversaryEnv, SARLConfig, adversary_learner

        cfg = self.cfg
        assert self.view is not None
        space = self.model.observation_space
        scale = np.ones(int(np.prod(space.shape))) if cfg.scale is None else np.asarray(cfg.scale)
        ball = Ball(cfg.eps, "linf", scale, space.low, space.high)
        sarl = SARLConfig(train_seed=cfg.seed)
        view = self.view
        venv = DummyVecEnv(
            [lambda: AdversaryEnv(cfg.env_id, view, ball) for _ in range(sarl.n_envs)]
        )
        self.adversary = adversary_learner(venv, sarl)

    # -- the loop ---------------------------------------------------------------------------
    def learn(self) -> None:
        from stable_baselines3.common.callbacks import BaseCallback

        run = self

        class _Hooks(BaseCallback):
            def _on_step(self) -> bool:
                run._on_step()
                return True

            def _on_rollout_start(self) -> None:
                run._maybe_checkpoint()  # the previous rollout's update is done

            def _on_rollout_end(self) -> None:
                run._record()

        if self.cfg.defense != "atla":
            self.model.learn(total_timesteps=self.total, callback=[_Hooks(), *self.callbacks])
            self._finish_log()
            return
        phases = self.cfg.atla_phases
        adv_total = self.cfg.adversary_steps or self.total
        for phase in range(phases):
            # agent steps are split evenly; SB3 learns whole rollouts, so round up per phase
            agent_target = self.total * (phase + 1) // phases
            adv_target = adv_total * (phase + 1) // phases
            self._report(f"ATLA phase {phase + 1}/{phases}: adversary")
            adv_steps = adv_target - int(self.adversary.num_timesteps)
            if adv_steps > 0:
                self.adversary.learn(total_timesteps=adv_steps, reset_num_timesteps=False)
            self._attack = None  # the adversary changed: rebuild the attack's view
            self._report(f"ATLA phase {phase + 1}/{phases}: agent")
            agent_steps = agent_target - int(self.model.num_timesteps)
            if agent_steps > 0:
                self.model.learn(
                    total_timesteps=agent_steps,
                    callback=[_Hooks(), *self.callbacks],
                    reset_num_timesteps=False,
                )
        self._finish_log()

    def _finish_log(self) -> None:
        """Record what the last update did (SB3 dumps only at the next rollout) and write
        the final checkpoint."""
        self._record()
        self.model.logger.dump(self.model.num_timesteps)
        self.checkpoint()

    def _report(self, what: str) -> None:
        if self.progress is not None:
            self.progress(min(1.0, self.model.num_timesteps / self.total), what)

    def _on_step(self) -> None:
        self._report(f"training {self.cfg.algo} ({self.cfg.defense})")

    def _maybe_checkpoint(self) -> None:
        if self.model.num_timesteps >= self.next_checkpoint:
            every = self.cfg.checkpoint_every or max(1, self.total // 10)
            while self.next_checkpoint <= self.model.num_timesteps:
                self.next_checkpoint += every
            self.checkpoint()

    def _record(self) -> None:
        logger = self.model.logger
        if self.budget is not None:
            logger.record("rlsec/eps", self.budget.current())
        if self.loss is not None:
            mean = self.loss.mean_and_reset()
            if mean is not None:
                logger.record("rlsec/sa_reg", mean)
        if self.attacked is not None and self.attacked.steps:
            logger.record(
                "rlsec/attacked_fraction", self.attacked.attacked_steps / self.attacked.steps
            )

    def defense_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {"defense": self.cfg.defense}
        if self.attacked is not None:
            stats["attacked_steps"] = self.attacked.attacked_steps
            stats["observed_steps"] = self.attacked.steps
        if self.adversary is not None:
            stats["adversary_steps"] = int(self.adversary.num_timesteps)
        return stats

    # -- outputs ----------------------------------------------------------------------------
    def snapshot(self) -> TorchPolicy:
        """The learner's current policy as a native (declarative) policy."""
        buf = io.BytesIO()
        self.model.save(buf)
        return from_sb3(buf.getvalue(), env_id=self.cfg.env_id, source="<training>")

    def checkpoint(self) -> Path:
        """Write the current policy under ``checkpoints/`` and point ``LATEST`` at it; with
        ``select="best"``, validate it too."""
        root = self.out / "checkpoints"
        step = int(self.model.num_timesteps)
        name = f"step-{step:09d}"
        target = root / name
        snap = self.snapshot()
        save_policy(
            snap,
            target,
            env_id=self.cfg.env_id,
            algo=self.cfg.algo,
            provenance=self._provenance(),
            overwrite=True,
        )
        _point(root / "LATEST", name)
        if self.cfg.select != "final" and self._at_full_budget() and self._validate(snap, step):
            _point(root / "BEST", name)
        keep = {f"step-{self.best[1]:09d}"} if self.best is not None else set()
        for old in sorted(root.glob("step-*"))[:-2]:  # keep the newest two, and the best
            if old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)
        return target

    def _at_full_budget(self) -> bool:
        return self.budget is None or self.budget.current() >= self.cfg.eps * (1 - 1e-9)

    def _validate(self, policy: TorchPolicy, step: int) -> bool:
        """Score a checkpoint on clean validation episodes (the same seeds for every
        checkpoint, disjoint from the export evaluation's); keep it if it is the best so far
        (returns whether it is)."""
        n = self.cfg.select_episodes
        venv = make_vec(self.cfg.env_id, num_envs=min(n, 50))
        try:
            stats = rollout(policy, venv, n, seed=self._select_seed())
        finally:
            venv.close()
        score = float(np.mean(stats.returns))
        record: dict[str, float | int] = {"step": step, "mean_return": score}
        if self.cfg.select == "robust":
            attacked = self._validate_attacked(policy, n)
            record["attacked_return"] = attacked
            score = min(score, attacked)
        self.scores.append(record)
        if self.best is None or score >= self.best[0]:
            self.best = (score, step, policy)
            return True
        return False

    def _validate_attacked(self, policy: TorchPolicy, n: int) -> float:
        """Mean return of ``policy`` under the defense's attack at the full ε."""
        attack = make_attack(self.cfg.attack, self.cfg.eps, steps=self.cfg.attack_steps)
        venv = make_vec(self.cfg.env_id, num_envs=min(n, 50))
        try:
            attack.start(
                policy,
                num_envs=venv.num_envs,
                rng=np.random.default_rng([self.cfg.seed, 4]),
                scale=None if self.cfg.scale is None else np.asarray(self.cfg.scale),
                env_id=self.cfg.env_id,
            )
            stats = rollout(policy, venv, n, seed=self._select_seed(), attack=attack)
        finally:
            venv.close()
        return float(np.mean(stats.returns))

    def _select_seed(self) -> int:
        # export resets its envs with seeds eval_seed .. eval_seed + min(eval_episodes, 50) - 1
        return self.cfg.eval_seed + self.cfg.eval_episodes + 1

    def selection(self) -> dict[str, Any]:
        """How the exported policy was chosen (recorded in its provenance and training.json)."""
        out: dict[str, Any] = {"rule": self.cfg.select}
        if self.cfg.select != "final":
            assert self.best is not None
            out.update(
                step=self.best[1],
                episodes=self.cfg.select_episodes,
                seed=self._select_seed(),
                scores=list(self.scores),
            )
        else:
            out["step"] = int(self.model.num_timesteps)
        return out

    def _provenance(self) -> dict[str, Any]:
        import stable_baselines3 as sb3

        from rlsec._version import __version__

        return {
            "trainer": f"rlsec {__version__} train (stable-baselines3 {sb3.__version__})",
            "config": self.cfg.to_dict(),
            "env_id": self.cfg.env_id,
            "gymnasium": gym.__version__,
            "torch": torch.__version__.split("+")[0],
            "python": platform.python_version(),
            "timesteps": int(self.model.num_timesteps),
        }

    def export_final(self) -> TorchPolicy:
        self._report("evaluating")
        policy = self.snapshot() if self.best is None else self.best[2]
        return export_model(
            policy,
            self.cfg.env_id,
            self.out / "policy",
            algo=self.cfg.algo,
            provenance={**self._provenance(), "selection": self.selection()},
            episodes=self.cfg.eval_episodes,
            seed=self.cfg.eval_seed,
        )

    def close(self) -> None:
        if self.loss is not None:
            self.loss.remove()
        self._writer.close()
        self.model.get_env().close()


def export_model(
    policy: TorchPolicy,
    env_id: str,
    directory: str | os.PathLike[str],
    *,
    algo: str,
    provenance: dict[str, Any],
    episodes: int = 100,
    seed: int = 20261125,
    overwrite: bool = False,
) -> TorchPolicy:
    """Evaluate ``policy`` on clean episodes and save it with its clean return and clean
    observation statistics (what ``--eps-unit std`` measures ε in). Returns the saved policy
    as loaded back from disk."""
    from rlsec.policies import load_native

    eval_env = make_vec(env_id, num_envs=min(episodes, 50))
    try:
        stats = rollout(policy, eval_env, episodes, seed=seed, track_observations=True)
    finally:
        eval_env.close()
    mean, ci = mean_ci(stats.returns)
    clean = {
        "mean": mean,
        "ci95": ci,
        "episodes": episodes,
        "seed": seed,
        "mean_length": float(stats.lengths.mean()),
    }
    obs_stats = None
    if stats.obs_moments is not None:
        m = stats.obs_moments
        obs_stats = {
            "mean": m.mean.tolist(),
            "std": m.std.tolist(),
            "observations": m.n,
            "episodes": episodes,
            "seed": seed,
        }
    target = Path(directory)
    save_policy(
        policy,
        target,
        env_id=env_id,
        algo=algo,
        provenance=provenance,
        clean_return=clean,
        observation_stats=obs_stats,
        overwrite=overwrite,
    )
    return load_native(target)
