"""The high-level calls behind ``rlsec verify`` and ``rlsec certify``; both return the JSON
documents those commands write (see docs/results.md), each carrying the policy's digest so
promotion gates can bind the evidence to a version.

Example:
    >>> doc = verify(policy="zoo:frozenlake-ppo", env_id="FrozenLake-v1",
    ...              prop='P=? [F<=100 "goal"]')
    >>> doc["states"], round(doc["result"], 4), doc["policy"]["source"]
    (16, 0.7281, 'zoo:frozenlake-ppo')
"""

from __future__ import annotations

import re
import stat
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from rlsec import _inputs
from rlsec.envs import check_env_id, check_policy_env, make, make_vec
from rlsec.envs import unsafe_no_sandbox as _no_sandbox
from rlsec.errors import ConfigError, ModelError
from rlsec.policies.native import checked_std
from rlsec.stats import (
    CALIBRATION_EPISODES,
    CALIBRATION_SEED,
    STD_TOLERANCE,
    RunningMoments,
    env_seed,
)
from rlsec.verify._worker import request, require_storm
from rlsec.verify.budget import Budget, check_text
from rlsec.verify.counterexample import counterexample, render_grid
from rlsec.verify.model import Model
from rlsec.verify.policy import induced_chain
from rlsec.verify.storm import _LABEL, _property_text, check, parse_property

__all__ = ["certify", "verify"]

CERTIFY_METHODS = ("crown", "ibp", "smoothing")
_OPTIMUM = re.compile(r'\s*(P|R(\{"[^"]*"\})?)(max|min)')


def _policy_doc(policy: Any) -> dict[str, Any]:
    info = getattr(policy, "info", None)
    return {
        "source": getattr(info, "source", None),
        "sha256": getattr(info, "sha256", None),
    }


def _read_prism(path: Path, budget: Budget) -> str:
    """The text of a PRISM file: a regular file within the size limit, UTF-8, bounded."""
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError(f"PRISM file {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"PRISM file {path} is not a regular file")
    with path.open("rb") as f:
        data = f.read(budget.max_prism_bytes + 1)
    if len(data) > budget.max_prism_bytes:
        raise budget.refuse(
            f"the size of PRISM file {path} in bytes",
            f"more than {len(data) - 1}",
            "max_prism_bytes",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelError(f"PRISM file {path} is not UTF-8 text (byte {exc.start})") from None
    if "\x00" in text:
        raise ModelError(f"PRISM file {path} holds a NUL character")
    check_text(text, f"PRISM file {path}", budget, prism=True)
    return text


def _check_prism(path: Path, prop: str, budget: Budget) -> dict[str, Any]:
    text = _read_prism(path, budget)
    _property_text(prop, budget)
    reply, _ = request(
        {"op": "prism", "text": text, "name": str(path), "prop": prop, "limits": budget.limits()},
        {},
        budget,
        what=f"checking {prop[:80]!r} on {path}",
        max_reply=1 << 20,
    )
    result = reply["result"]
    return {
        "property": prop,
        "result": float(result) if isinstance(result, str) else result,
        "states": int(reply["states"]),
        "transitions": int(reply["transitions"]),
        "model": {"prism": str(path), "type": reply["type"]},
        "attack": None,
        "seconds": {k: float(v) for k, v in reply["seconds"].items()},
        "counterexample": None,
        "policy": None,
    }


def verify(
    *,
    prop: str,
    policy: Any = None,
    env_id: str | None = None,
    prism: str | Path | None = None,
    attack_radius: float | None = None,
    stochastic: bool = False,
    all_states: bool = False,
    counterexample_label: str | None = None,
    strategy_out: str | Path | None = None,
    method: str = "crown",
    unsafe_no_sandbox: bool = False,
    budget: Budget | None = None,
) -> dict[str, Any]:
    """Check ``prop`` on a policy in a finite environment (or on a PRISM model as written).

    Args:
        prop: a PCTL property (Storm syntax), e.g. ``P=? [F "unsafe"]``. Under attack the
            model is an MDP, so the property must say whose optimum it asks for:
            ``Pmax=? [F "unsafe"]`` (the attacker maximises) or ``Pmin=? [F "goal"]``.
        policy: ``zoo:NAME``, a policy directory, a loaded policy, or ``None`` (then ``prism``).
        env_id: a finite environment (toy-text or rlsec's own).
        prism: a PRISM file, checked as written (no policy).
        attack_radius: a bounded observation attacker (see :mod:`rlsec.verify.attack`).
        stochastic: keep a logits policy's action probabilities.
        all_states: include the value of every state.
        counterexample_label: draw the most probable path into this label (default: the
            property's only label, when a bounded property is violated).
        strategy_out: write the attacker's optimal strategy there (JSON).
        method: ``crown`` or ``ibp``: how feature-vector attack choices are bounded.
        unsafe_no_sandbox: let ``env_id`` name a module outside gymnasium and rlsec to
            import (see :func:`rlsec.envs.unsafe_no_sandbox`); recorded in the document.
        budget: the limits of each Storm query (:class:`~rlsec.verify.budget.Budget`;
            by default :meth:`Budget.from_env`).

    Raises:
        MissingDependency: Storm is not installed (``pip install 'rlsec[storm]'``), before
            anything else is done.
        ConfigError: neither or both of ``env_id`` and ``prism``; a policy with ``prism``;
            an attack radius out of bounds (:mod:`rlsec._inputs`).
        UnknownEnv, UnsafeEnvId: see :func:`rlsec.envs.check_env_id`.
        ModelError: a bad property, label, PRISM file or model.
        ModelTooLarge: the property, PRISM file or model exceeds a limit of the budget.
        CheckAborted: a query ran past its time or memory budget, or Storm crashed.
    """
    require_storm()
    b = Budget.from_env() if budget is None else budget
    if attack_radius is not None:
        attack_radius = _inputs.budget("attack_radius", attack_radius)
    if (env_id is None) == (prism is None):
        raise ConfigError("give exactly one of env_id (a finite environment) or prism (a file)")
    if prism is not None:
        if policy is not None or attack_radius is not None:
            raise ConfigError(
                "a PRISM model is checked as written: --policy and --attack-radius apply to "
                "finite environments (--env)"
            )
        return _check_prism(Path(prism), prop, b)
    from rlsec.policies import load_policy

    assert env_id is not None
    with _no_sandbox(unsafe_no_sandbox):
        check_env_id(env_id)
        model = Model.from_env(env_id)
    pol = load_policy(policy) if isinstance(policy, str) else policy
    if pol is None:
        raise ConfigError("verifying a finite environment needs a policy (--policy)")
    parse_property(prop, model.labels, budget=b)
    doc: dict[str, Any] = {
        "policy": _policy_doc(pol),
        "model": {"env_id": env_id},
        "unsafe_no_sandbox": bool(unsafe_no_sandbox),
    }
    t0 = time.perf_counter()
    if attack_radius is None:
        chain = induced_chain(model, pol, stochastic=stochastic)
        query = time.perf_counter() - t0
        res = check(chain, prop, budget=b)
        doc["attack"] = None
        label = counterexample_label
        names = _LABEL.findall(prop)
        if label is None and res.result is False and len(set(names)) == 1:
            label = names[0]
        if label is not None:
            reach = check(chain, f'P=? [F "{label}"]', budget=b)
            ce = counterexample(chain, label, reach.values)
            if model.cells is not None:
                from rlsec.verify.counterexample import most_probable_path

                ce["picture"] = render_grid(
                    model, values=reach.values, path=most_probable_path(chain, label)[0]
                )
            doc["counterexample"] = ce
        else:
            doc["counterexample"] = None
    else:
        from rlsec.verify.attack import attacked_model, worst_case

        if not _OPTIMUM.match(prop):
            raise ModelError(
                f"under attack the model is an MDP: say Pmax=? (the attacker maximises) or "
                f"Pmin=? (it minimises), got {prop!r}"
            )
        attacked = attacked_model(model, pol, attack_radius, stochastic=stochastic, method=method)
        query = time.perf_counter() - t0
        strategy = None
        if strategy_out is None:  # bounded properties have no memoryless strategy to save
            res = check(attacked.mdp, prop, budget=b)
        else:
            res, strategy = worst_case(
                attacked, prop, env_id=env_id, policy_sha256=doc["policy"]["sha256"], budget=b
            )
        if attacked.kind != "index":
            unit = "raw (linf)"
        elif model.cells is not None:
            unit = "states (Manhattan)"
        else:
            unit = "states (index distance)"
        doc["attack"] = {
            "surface": "observation",
            "radius": float(attack_radius),
            "unit": unit,
            "choices": attacked.method,
            "mdp_choices": int(attacked.mdp.matrix.shape[0]),
        }
        if strategy_out is not None:
            assert strategy is not None
            strategy.save(strategy_out)
            doc["attack"]["strategy"] = str(strategy_out)
        doc["counterexample"] = None
    doc.update(res.to_dict(all_states=all_states))
    doc["seconds"] = {"query": query, **res.seconds}
    return doc


def _rollout_states(policy: Any, env_id: str, n: int, seed: int) -> np.ndarray:
    env = make(env_id)
    rows: list[np.ndarray] = []
    ep = 0
    try:
        while len(rows) < n:
            obs, _ = env.reset(seed=seed + ep)
            done = False
            while not done and len(rows) < n:
                rows.append(np.asarray(obs, dtype=np.float32))
                obs, _, term, trunc, _ = env.step(policy.act(np.asarray([obs]))[0])
                done = term or trunc
            ep += 1
    finally:
        env.close()
    return np.stack(rows)


def _calibration_std(policy: Any, env_id: str) -> tuple[np.ndarray, int]:
    """Per-feature std of the observations of the first episode of each of
    :data:`CALIBRATION_EPISODES` vector-env rows, and how many observations that was."""
    venv = make_vec(env_id, CALIBRATION_EPISODES)
    try:
        obs, _ = venv.reset(seed=env_seed(CALIBRATION_SEED))
        active = np.ones(CALIBRATION_EPISODES, dtype=bool)
        moments = RunningMoments(int(np.prod(policy.observation_space.shape)))
        while active.any():
            moments.update(np.asarray(obs, dtype=np.float64)[active].reshape(int(active.sum()), -1))
            obs, _, term, trunc, _ = venv.step(policy.act(np.asarray(obs)))
            active &= ~(np.asarray(term) | np.asarray(trunc))
    finally:
        venv.close()
    return moments.std, moments.n


def _std_scale(policy: Any, env_id: str, findings: list[dict[str, Any]]) -> tuple[np.ndarray, str]:
    """The per-feature std that ``std`` units mean: the policy's recorded clean observation
    std when it agrees, within :data:`rlsec.stats.STD_TOLERANCE` on every feature, with the
    std over the campaign's calibration rollout; else the rollout's std, and the disagreement
    is a finding (:func:`rlsec.policies.native.checked_std`). A recorded std of 1e-30 would
    otherwise turn every raw radius into an enormous certified one."""
    measured, n = _calibration_std(policy, env_id)
    source = (
        f"the calibration rollout ({CALIBRATION_EPISODES} clean episodes, seed "
        f"{CALIBRATION_SEED}, {n} observations)"
    )
    stats = getattr(getattr(policy, "info", None), "observation_stats", None)
    if stats is None:
        return measured, source
    scale, problem = checked_std(
        stats,
        policy.observation_space,
        measured,
        source,
        instead="radii in std units use the measured std instead",
        findings=findings,
    )
    if problem is None:
        return scale, (
            f"policy spec (clean observation std), within a factor of {STD_TOLERANCE:g} "
            f"of {source} on every feature"
        )
    return measured, f"{source}; the policy spec's std was not used: {problem}"


def certify(
    *,
    policy: Any,
    env_id: str,
    states: int = 1000,
    method: str = "crown",
    eps: list[float] | None = None,
    eps_unit: str = "std",
    sigma: float = 0.25,
    samples: int = 1000,
    seed: int = 0,
    unsafe_no_sandbox: bool = False,
) -> dict[str, Any]:
    """Per-state certified radii of a policy on states visited by its clean rollouts.

    ``crown``/``ibp``: the largest linf radius at which the action provably does not change;
    ``smoothing``: the smoothed policy's L2 radius (Cohen et al.) with noise ``sigma``
    (``samples`` Monte Carlo copies per state, confidence 0.999), and the action it certifies.
    Radii and ``eps`` are in ``eps_unit`` (``std``: the policy's clean observation std per
    feature; ``raw``). ``unsafe_no_sandbox`` lets ``env_id`` name a module outside gymnasium
    and rlsec to import (recorded in the document).

    Raises:
        ConfigError: a bad method, unit or count, a budget out of bounds (:mod:`rlsec.
            _inputs`), observations that are not feature vectors.
        UnknownEnv, UnsafeEnvId, SpaceMismatch: the environment does not exist, may not be
            imported, or does not fit the policy.
    """
    from rlsec.policies import load_policy
    from rlsec.verify.bounds import certified_radius

    if method not in CERTIFY_METHODS:
        raise ConfigError(f"method must be one of {CERTIFY_METHODS}, got {method!r}")
    if eps_unit not in ("raw", "std"):
        raise ConfigError(f"eps_unit must be 'raw' or 'std', got {eps_unit!r}")
    states = _inputs.count("states", states, limit=_inputs.MAX_STATES)
    samples = _inputs.count("samples", samples, limit=_inputs.MAX_SAMPLES)
    sigma = _inputs.budget("sigma", sigma, positive=True)
    seed = _inputs.seed(seed)
    levels = _inputs.budgets("eps", eps if eps is not None else [0.01, 0.02, 0.05, 0.1, 0.2])
    if not levels:
        raise ConfigError("give at least one ε (eps)")
    with _no_sandbox(unsafe_no_sandbox):
        check_env_id(env_id)
        pol = load_policy(policy) if isinstance(policy, str) else policy
        space = pol.observation_space
        if not isinstance(space, gym.spaces.Box):
            raise ConfigError(f"certification needs feature-vector (Box) observations, got {space}")
        check_policy_env(pol, env_id)
        obs = _rollout_states(pol, env_id, states, seed)
        findings: list[dict[str, Any]] = []
        scale, scale_source = (
            _std_scale(pol, env_id, findings) if eps_unit == "std" else (None, "raw")
        )
        _inputs.raw_budgets("eps (doubled: the largest radius searched)", [2 * max(levels)], scale)
        _inputs.raw_budgets("sigma", [sigma], scale)
    t0 = time.perf_counter()
    if method == "smoothing":
        from rlsec.verify.smoothing import SmoothedPolicy

        smooth = SmoothedPolicy(pol, sigma, n=samples, scale=scale, seed=seed)
        cert = smooth.certify(obs)
        actions, radius = cert.actions, cert.radius
        norm = "l2"
    else:
        radius = certified_radius(
            pol,
            obs,
            method=method,  # type: ignore[arg-type]
            eps_max=max(levels) * 2 or 1.0,
            tol=1e-3,
            scale=scale,
        )
        actions = pol.act(obs)
        norm = "linf"
    seconds = time.perf_counter() - t0
    return {
        "method": method,
        "eps_unit": eps_unit,
        "scale_source": scale_source,
        "findings": findings,
        "norm": norm,
        "policy": _policy_doc(pol),
        "env_id": env_id,
        "unsafe_no_sandbox": bool(unsafe_no_sandbox),
        "sigma": sigma if method == "smoothing" else None,
        "states": [
            {
                "observation": o.tolist(),
                "action": a.tolist() if isinstance(a, np.ndarray) else int(a),
                "radius": float(r),
            }
            for o, a, r in zip(obs, actions, radius, strict=True)
        ],
        "certified_fraction": {f"{e:g}": float(np.mean(radius >= e)) for e in levels},
        "seconds": seconds,
    }
