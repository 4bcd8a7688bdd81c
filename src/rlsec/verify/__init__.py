"""Verification: model checking of policy-induced models with Storm, and certification.

* :mod:`rlsec.verify.model`: finite models (sparse MDPs with labels and observations).
* :mod:`rlsec.verify.policy`: the policy queried on every state in batches; induced chains.
* :mod:`rlsec.verify.storm`: PCTL model checking with stormpy, in a worker process.
* :mod:`rlsec.verify.budget`: the time, memory and size limits of each Storm query.
* :mod:`rlsec.verify.counterexample`: most probable violating paths, grid pictures.
* :mod:`rlsec.verify.attack`: the policy under a bounded observation attacker, as an MDP.
* :mod:`rlsec.verify.shield`: safe action sets for shields.
* :mod:`rlsec.verify.bounds`: certification by bound propagation (IBP, CROWN).
* :mod:`rlsec.verify.smoothing`: randomized smoothing of policies with Monte Carlo
  certificates.
"""

from rlsec.verify.bounds import (
    action_bounds,
    certified_radius,
    output_bounds,
    reachable_actions,
)
from rlsec.verify.budget import Budget
from rlsec.verify.counterexample import counterexample, most_probable_path, render_grid
from rlsec.verify.model import Chain, Model
from rlsec.verify.policy import action_probabilities, induced_chain
from rlsec.verify.shield import SafeActions, safe_actions
from rlsec.verify.smoothing import SmoothedPolicy
from rlsec.verify.storm import CheckResult, GroupedModel, check, parse_property

__all__ = [
    "Budget",
    "Chain",
    "CheckResult",
    "GroupedModel",
    "Model",
    "SafeActions",
    "SmoothedPolicy",
    "action_bounds",
    "action_probabilities",
    "certified_radius",
    "check",
    "counterexample",
    "induced_chain",
    "most_probable_path",
    "output_bounds",
    "parse_property",
    "reachable_actions",
    "render_grid",
    "safe_actions",
]
