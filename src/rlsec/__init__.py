"""rlsec: reinforcement-learning security.

The safe, high-level entry points:

* :func:`redteam`: attack a policy with every applicable inference-time attack.
* :func:`load_policy`: ``zoo:NAME``, a native policy directory, or an SB3 archive (never
  unpickled).
* :func:`make_attack`: one attack with an explicit threat model.
"""

from rlsec._version import __version__
from rlsec.attacks import make_attack
from rlsec.policies import load_policy
from rlsec.redteam import redteam

__all__ = ["__version__", "load_policy", "make_attack", "redteam"]
