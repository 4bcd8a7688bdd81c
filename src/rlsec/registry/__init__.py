"""The governed policy registry: versions, signed artifacts, access control, audit log.

Start with :class:`Registry` (``Registry(home).init()`` once, then every operation takes the
caller's token). The layers below it are importable for tools and tests:
:mod:`~rlsec.registry.signing` (model-signing format manifests), :mod:`~rlsec.registry.audit`
(the Merkle log), :mod:`~rlsec.registry.merkle` (RFC 6962), :mod:`~rlsec.registry.gates`,
:mod:`~rlsec.registry.access`, :mod:`~rlsec.registry.db`.
"""

from __future__ import annotations

from rlsec.registry.store import STAGES, Registry, VersionInfo

__all__ = ["STAGES", "Registry", "VersionInfo"]
