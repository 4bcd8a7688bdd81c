"""Every error rlsec raises on purpose.

One root, :class:`RLSecError`, so callers can catch everything of ours in one place; each
family also subclasses the matching built-in, so ``except ValueError`` keeps working::

    RLSecError
    ├── ConfigError (ValueError)             a setting or argument is not what was expected
    │   ├── InvalidBudget                    ε < 0, NaN, a probability outside [0, 1], ...
    │   ├── UnknownAttack (KeyError)         an attack id that is not registered
    │   ├── UnknownEnv (KeyError)            an environment id Gymnasium does not know
    │   ├── UnsafeEnvId                      an environment id whose ``module:`` part would
    │   │                                    import code from outside gymnasium and rlsec
    │   └── ModelError                       a finite model, PRISM file or temporal-logic
    │       │                                property is malformed (says where)
    │       └── ModelTooLarge                a model, PRISM file or property exceeds a stated
    │                                        limit (length, nesting, step bound, states,
    │                                        transitions); nothing was handed to Storm
    ├── SpaceMismatch (ValueError)           policy and environment spaces disagree
    ├── AttackNotApplicable (ValueError)     the attack cannot run on this policy
    ├── PolicyLoadError (ValueError)         a policy file or archive cannot be loaded
    │   └── UnsafeArtifact                   the artifact tries something unsafe (pickle, path
    │                                        traversal, oversize member); nothing was run
    ├── BudgetViolation (RuntimeError)       a perturbation left its threat model's budget
    ├── IntegrityViolation (RuntimeError)    an integrity check stopped training (the
    │                                        findings say why)
    ├── CheckAborted (RuntimeError)          a Storm query ran out of its time or memory
    │                                        budget, or Storm crashed; no result was produced
    ├── MissingDependency (ImportError)      an optional extra is not installed (the message
    │                                        says how to install it)
    ├── VerificationError (ValueError)       a signature, digest, Merkle proof or audit log
    │                                        does not verify (says which and why)
    ├── AccessDenied (PermissionError)       a registry operation was refused to this
    │                                        principal (the refusal itself was audited)
    └── GateRefused (ValueError)             a promotion's gate is not met (says what is
        │                                    missing); nothing moved
        └── ApprovalPending                  an admin action needs more admins' approval:
                                             it was recorded as a proposal, not done

Messages say what was expected and what was received.

Example:
    >>> from rlsec.errors import InvalidBudget, RLSecError
    >>> issubclass(InvalidBudget, ValueError) and issubclass(InvalidBudget, RLSecError)
    True
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "ApprovalPending",
    "AttackNotApplicable",
    "BudgetViolation",
    "CheckAborted",
    "ConfigError",
    "GateRefused",
    "IntegrityViolation",
    "InvalidBudget",
    "MissingDependency",
    "ModelError",
    "ModelTooLarge",
    "PolicyLoadError",
    "RLSecError",
    "SpaceMismatch",
    "UnknownAttack",
    "UnknownEnv",
    "UnsafeArtifact",
    "UnsafeEnvId",
    "VerificationError",
]


class RLSecError(Exception):
    """Root of every error rlsec raises on purpose."""


class ConfigError(RLSecError, ValueError):
    """A setting or argument is not what was expected."""


class InvalidBudget(ConfigError):
    """An attack budget is out of its domain (negative, not finite, probability > 1...)."""


class UnknownAttack(ConfigError, KeyError):
    """An attack id that is not registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnknownEnv(ConfigError, KeyError):
    """An environment id that Gymnasium does not know."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnsafeEnvId(ConfigError):
    """An environment id of the form ``module:EnvId`` whose module is outside gymnasium and
    rlsec: Gymnasium would import it (running its code) to find the environment, so it is
    refused unless the caller opts out of the sandbox (``--unsafe-no-sandbox``)."""


class ModelError(ConfigError):
    """A finite model, a PRISM file or a temporal-logic property is malformed; the message
    says where (line and column, or the offending label)."""


class ModelTooLarge(ModelError):
    """A model, a PRISM file or a property exceeds one of the stated limits of
    :class:`rlsec.verify.budget.Budget` (length, nesting depth, step bound, states,
    transitions); the message names the limit, the value found and how to raise it. Nothing
    was handed to Storm (or, for a PRISM file's state count, nothing was built)."""


class SpaceMismatch(RLSecError, ValueError):
    """The policy's observation or action space does not match the environment's."""


class AttackNotApplicable(RLSecError, ValueError):
    """The attack needs something this policy does not offer (gradients, a critic, ...)."""


class PolicyLoadError(RLSecError, ValueError):
    """A policy directory or archive cannot be loaded."""


class UnsafeArtifact(PolicyLoadError):
    """The artifact contains something rlsec refuses to load; nothing in it was executed."""


class BudgetViolation(RLSecError, RuntimeError):
    """A perturbation left the ε-ball or the space of its threat model (an attack bug)."""


class IntegrityViolation(RLSecError, RuntimeError):
    """A training-integrity check found the loop compromised (or could not run) and stopped
    training; the final policy was not written."""


class CheckAborted(RLSecError, RuntimeError):
    """A model-checking query did not finish: it ran out of its time or memory budget, or
    Storm crashed (a native fault in the model checker, contained in its worker process).
    ``reason`` is ``"time"``, ``"memory"`` or ``"crash"``; no result was produced."""

    def __init__(self, message: str, reason: str = "crash") -> None:
        super().__init__(message)
        self.reason = reason


class MissingDependency(RLSecError, ImportError):
    """An optional extra is not installed; the message says which and how to install it
    (e.g. ``pip install 'rlsec[storm]'`` for the Storm model checker)."""


class VerificationError(RLSecError, ValueError):
    """A signature, digest, Merkle proof or audit log does not verify; the message says
    which check failed and on what. Where the registry recorded the failure, ``finding`` is
    the :class:`rlsec.core.Finding` it recorded."""

    finding: object | None = None


class AccessDenied(RLSecError, PermissionError):
    """The registry refused an operation to this token or principal; the refusal is in the
    audit log."""


class GateRefused(RLSecError, ValueError):
    """A promotion's gate is not met (evidence missing or below threshold, approvals
    short); the version did not move."""


class ApprovalPending(GateRefused):
    """An admin action that needs k admins (the registry's admin quorum) was recorded as a
    proposal; ``proposal`` is its number, for the other admins to approve."""

    def __init__(self, message: str, proposal: int) -> None:
        super().__init__(message)
        self.proposal = proposal
