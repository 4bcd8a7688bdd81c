"""What a model-checking query may cost, and the checks on text before Storm reads it.

Storm is a native library: a property nested 2,000 deep overflows its parser's stack and
kills the process (segmentation fault), ``F<=1000000000000`` runs for days, a 1e10-state
PRISM model exhausts memory, and none of its calls can be interrupted from Python. So every
query runs in a separate worker process (:mod:`rlsec.verify._worker`) under a
:class:`Budget`, and what is handed to it is bounded first:

* text: a property at most ``max_property_chars`` long and nested at most
  ``max_property_nesting`` deep, a PRISM file at most ``max_prism_bytes`` (each statement at
  most ``max_statement_chars``) and nested at most ``max_nesting`` deep, counting brackets
  and runs of prefix operators (``!``, ``-``, ``(``) (:func:`check_text`). Properties get
  the tighter limit because Storm's property parser backtracks exponentially on a nested
  property with an error in it (20 deep: 4 s; 12 deep: under 0.01 s); its PRISM parser
  does not, and only overflows its stack (at 2,000 to 3,000);
* step bounds (``F<=k``, ``U[a,b]``, ``C<=k``, ``I=k``, reward bounds): at most
  ``max_steps``, read from Storm's own reading of the property;
* size: at most ``max_states`` states and ``max_transitions`` transitions (or choices)
  before a sparse model is handed over; for a PRISM file, the product of its variables'
  ranges (an upper bound on its reachable states) before it is built;
* the query itself: ``seconds`` of wall-clock time (hand-off, build and check) and
  ``memory_mb`` of memory in the worker; past either it is stopped
  (:class:`~rlsec.errors.CheckAborted`).

Each refusal is a :class:`~rlsec.errors.ModelTooLarge` that names the limit, the value
found and the setting that raises it. Defaults come from the environment variables
``RLSEC_VERIFY_<FIELD>`` (e.g. ``RLSEC_VERIFY_SECONDS=3600``) where set, so the ``rlsec``
commands can be given a larger budget; :meth:`Budget.from_env`.

Example:
    >>> b = Budget(seconds=60, max_steps=1000)
    >>> b.seconds, b.max_states
    (60.0, 10000000)
    >>> check_text('P=? [F ' + '(' * 300 + '"goal"' + ')' * 300 + ']', "the property", b)
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    rlsec.errors.ModelTooLarge: the property nests 301 deep (brackets or prefix operators) at ...
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from typing import Any

from rlsec.errors import ConfigError, ModelTooLarge

__all__ = ["Budget", "check_size", "check_text"]

_ENV = "RLSEC_VERIFY_"
_PREFIX = frozenset("!-([{")
_OPEN = {"(": ")", "[": "]", "{": "}"}
_COMMENT = re.compile(r"//[^\n]*")


@dataclass(frozen=True)
class Budget:
    """The limits of one model-checking query (see the module docstring).

    Attributes:
        seconds: wall-clock time of the query in the worker (hand-off, build, check).
        memory_mb: memory the worker may take beyond what it holds when idle.
        max_states, max_transitions: size of a model handed to Storm (transitions: the
            non-zero entries of the transition matrix; choices of an MDP count too).
        max_steps: largest step or reward bound in a property.
        max_property_chars: length of a property.
        max_prism_bytes: size of a PRISM file.
        max_statement_chars: length of one PRISM statement (text between ``;``).
        max_nesting: depth of bracket nesting and of runs of prefix operators in a PRISM
            file.
        max_property_nesting: the same in a property.
    """

    seconds: float = 600.0
    memory_mb: int = 4096
    max_states: int = 10_000_000
    max_transitions: int = 100_000_000
    max_steps: int = 1_000_000
    max_property_chars: int = 10_000
    max_prism_bytes: int = 10 * 2**20
    max_statement_chars: int = 100_000
    max_nesting: int = 200
    max_property_nesting: int = 12

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "seconds":
                ok = (
                    isinstance(value, (int, float))
                    and not isinstance(value, bool)
                    and math.isfinite(value)
                    and value > 0
                )
                if not ok:
                    raise ConfigError(f"Budget.seconds must be a finite number > 0, got {value!r}")
                object.__setattr__(self, "seconds", float(value))
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"Budget.{f.name} must be an integer >= 1, got {value!r}")

    @classmethod
    def from_env(cls, environ: Any = None) -> Budget:
        """The default budget, with each field overridden by ``RLSEC_VERIFY_<FIELD>`` where
        that variable is set (``RLSEC_VERIFY_SECONDS``, ``RLSEC_VERIFY_MAX_STATES``, ...).

        Raises:
            ConfigError: a variable that is not a positive number (integer where the field
                is one); the message names it.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = _ENV + f.name.upper()
            text = env.get(name)
            if text is None:
                continue
            value: float | int
            try:
                value = float(text) if f.name == "seconds" else int(text, 10)
                cls(**{f.name: value})  # type: ignore[arg-type]  # validates this field alone
            except (ValueError, ConfigError):
                kind = "a finite number" if f.name == "seconds" else "an integer"
                raise ConfigError(f"{name} must be {kind} > 0, got {text!r}") from None
            values[f.name] = value
        return cls(**values)

    def refuse(self, what: str, value: int | str, field: str) -> ModelTooLarge:
        """The error for ``what`` exceeding the limit ``field`` (not raised here)."""
        limit = getattr(self, field)
        return ModelTooLarge(
            f"{what} is {value}; the limit is {limit} (Budget.{field}, {_ENV}{field.upper()})"
        )

    def limits(self) -> dict[str, int]:
        """The integer limits, as sent to the worker."""
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "seconds"
        }


def check_text(text: str, what: str, budget: Budget, *, prism: bool = False) -> None:
    """Refuse a property or a PRISM program (``prism=True``) that is too long, nests
    brackets too deep, or runs prefix operators (``!!!!...``, ``- - -``) too deep: the inputs
    that overflow Storm's recursive parser. ``what`` names the text in the message.

    PRISM comments (``//`` to the end of the line) are not counted; the size of a PRISM file
    in bytes is the caller's to check (:attr:`Budget.max_prism_bytes`) before decoding it.

    Raises:
        ModelTooLarge: with the limit, the value found and where.
    """
    if prism:
        text = _COMMENT.sub(lambda m: " " * len(m.group(0)), text)
        start = 0
        for statement in text.split(";"):
            if len(statement) > budget.max_statement_chars:
                raise budget.refuse(
                    f"the length of the statement of {what} at {_where(text, start)}",
                    len(statement),
                    "max_statement_chars",
                )
            start += len(statement) + 1
    elif len(text) > budget.max_property_chars:
        raise budget.refuse(f"the length of {what}", len(text), "max_property_chars")
    depth = run = deepest = at = 0
    for i, c in enumerate(text):
        if c in _OPEN:
            depth += 1
        elif c in ")]}":
            depth = max(0, depth - 1)
        if c in _PREFIX and not (c == "-" and text[i + 1 : i + 2] == ">"):
            run += 1
        elif not c.isspace():
            run = 0
        if max(depth, run) > deepest:
            deepest, at = max(depth, run), i
    field = "max_nesting" if prism else "max_property_nesting"
    if deepest > getattr(budget, field):
        where = _where(text, at) if prism else f"column {at + 1}"
        raise ModelTooLarge(
            f"{what} nests {deepest} deep (brackets or prefix operators) at {where}; the limit "
            f"is {getattr(budget, field)} (Budget.{field}, {_ENV}{field.upper()})"
        )


def check_size(states: int, transitions: int, budget: Budget) -> None:
    """Refuse a model with more states or transitions than the budget allows.

    Raises:
        ModelTooLarge: naming the limit.
    """
    if states > budget.max_states:
        raise budget.refuse("the model's number of states", states, "max_states")
    if transitions > budget.max_transitions:
        raise budget.refuse("the model's number of transitions", transitions, "max_transitions")


def _where(text: str, i: int) -> str:
    line = text.count("\n", 0, i) + 1
    col = i - (text.rfind("\n", 0, i) + 1) + 1
    return f"line {line}, column {col}"
