"""``rlsec admin``, ``rlsec keys``, ``rlsec registry`` and ``rlsec audit``: thin commands over
:class:`rlsec.registry.Registry`. The caller's identity is ``RLSEC_TOKEN``."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from rlsec._files import open_atomic, read_regular, write_atomic
from rlsec.errors import ConfigError

admin_app = typer.Typer(help="Set up the registry: the first admin, principals, tokens, gates.")
principal_app = typer.Typer(help="People and services, and their roles.")
token_app = typer.Typer(help="API tokens (shown once, stored as hashes).")
keys_app = typer.Typer(help="Signing keys: generate one, register its public half, revoke it.")
registry_app = typer.Typer(help="Versions: push, list, show, pull, evidence, approvals, stages.")
audit_app = typer.Typer(help="The tamper-evident audit log: verify it, prove entries, export.")
admin_app.add_typer(principal_app, name="principal")
admin_app.add_typer(token_app, name="token")

out = Console(highlight=False, soft_wrap=True)

Ref = Annotated[str, typer.Argument(help="A version: name@3, name@production, or name.")]
Reason = Annotated[str, typer.Option(help="Why (recorded in the audit log).")]


def _registry() -> Any:
    from rlsec.registry import Registry

    return Registry()


def _token() -> str | None:
    return os.environ.get("RLSEC_TOKEN")


#: Caps on the files these commands read (keys, gate policies, evidence, saved heads,
#: signatures); a FIFO, device or link is refused before reading (rlsec._files).
_MAX_SMALL = 1 * 2**20
_MAX_EVIDENCE = 64 * 2**20


def _read(path: Path, what: str, max_bytes: int = _MAX_SMALL) -> bytes:
    return read_regular(path, max_bytes=max_bytes, what=what)


def _json(path: Path, what: str) -> Any:
    try:
        return json.loads(_read(path, what))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from None


def _read_key(path: Path) -> Any:
    from rlsec.registry import signing

    password = os.environ.get("RLSEC_KEY_PASSWORD")
    pem = _read(path, "signing key")
    return signing.load_private_key(pem, password.encode() if password else None)


# -- admin -------------------------------------------------------------------------------------
@admin_app.command("init")
def _init(
    name: Annotated[str, typer.Option(help="Name of the first admin.")] = "admin",
) -> None:
    """Create the registry (schema, audit-log key) and its first admin; prints the admin's
    token once."""
    reg = _registry()
    token = reg.init(name)
    out.print(f"registry: {reg.url}")
    out.print(f"audit log key: {reg.log_key_path} (public: {reg.log_public_path})")
    out.print(f"admin {name}'s token (shown once, store it now):")
    print(token)


@admin_app.command("quorum")
def _quorum(k: Annotated[int, typer.Argument(help="Admins needed (1-16).")]) -> None:
    """Set how many admins must approve privileged grants, gates and the quorum itself."""
    _registry().set_admin_quorum(_token(), k)
    out.print(f"admin quorum set to {k}")


@admin_app.command("proposals")
def _proposals() -> None:
    """Admin actions waiting for the quorum, as JSON."""
    print(json.dumps(_registry().proposals(_token()), indent=2))


@admin_app.command("approve")
def _approve_admin(proposal: Annotated[int, typer.Argument(help="Proposal number.")]) -> None:
    """Approve an admin proposal; the one whose approval completes the quorum carries it out
    (and is shown a token it creates)."""
    result = _registry().approve_admin(_token(), proposal)
    out.print(f"approved proposal {proposal}" + ("; done" if result is not None else ""))
    if isinstance(result, str):
        print(result)


@admin_app.command("upgrade")
def _upgrade() -> None:
    """After upgrading rlsec: migrate the schema and bind rows made before rows were bound
    to the audit log, in one audited entry (needs the log's key, like init)."""
    reg = _registry()
    n = reg.upgrade()
    out.print(f"registry at {reg.url} is up to date; {n} rows bound to the audit log")


@principal_app.command("create")
def _principal_create(
    name: Annotated[str, typer.Argument(help="Principal name.")],
    roles: Annotated[
        str, typer.Option(help="Comma-separated: viewer, trainer, reviewer, deployer, ...")
    ],
    kind: Annotated[str, typer.Option(help="person or service.")] = "person",
) -> None:
    """Create a principal (admin)."""
    _registry().create_principal(_token(), name, roles, kind)
    out.print(f"created {kind} {name} with roles {roles}")


@principal_app.command("disable")
def _principal_disable(
    name: Annotated[str, typer.Argument(help="Principal name.")], reason: Reason
) -> None:
    """Disable a principal: its tokens stop working (admin)."""
    _registry().disable_principal(_token(), name, reason)
    out.print(f"disabled {name}")


@token_app.command("create")
def _token_create(
    principal: Annotated[str, typer.Argument(help="Whose token.")],
    label: Annotated[str, typer.Option(help="What it is for.")] = "",
    expires_days: Annotated[
        float | None, typer.Option(help="Lifetime in days (default: until revoked).")
    ] = None,
) -> None:
    """Create a token for a principal (admin); printed once."""
    print(_registry().create_token(_token(), principal, label=label, expires_in_days=expires_days))


@token_app.command("revoke")
def _token_revoke(token_id: Annotated[str, typer.Argument(help="The 16 hex digits.")]) -> None:
    """Revoke a token (admin)."""
    _registry().revoke_token(_token(), token_id)
    out.print(f"revoked token {token_id}")


@admin_app.command("gates")
def _gates(path: Annotated[Path, typer.Argument(help="Gate policy JSON.")]) -> None:
    """Set the promotion gates (admin); see rlsec.registry.gates for the format."""
    doc = _json(path, "gate policy")
    _registry().set_gates(_token(), doc)
    out.print(f"gates set from {path}")


# -- keys --------------------------------------------------------------------------------------
@keys_app.command("generate")
def _keys_generate(
    key: Annotated[Path, typer.Option("--out", help="Private key file to create (0600).")],
) -> None:
    """Generate an EC P-256 signing key: the private PEM at --out (encrypted with
    RLSEC_KEY_PASSWORD if set) and the public one beside it (.pub). Neither file may exist
    (a link, even a dangling one, counts): keys are never overwritten."""
    from rlsec.registry import signing

    pub = key.with_name(key.name + ".pub")
    for path in (key, pub):
        if os.path.lexists(path):
            raise ConfigError(f"{path} exists; refusing to overwrite a key")
    k = signing.generate_key()
    password = os.environ.get("RLSEC_KEY_PASSWORD")
    private = signing.private_pem(k, password.encode() if password else None)
    write_atomic(key, private, mode=0o600, exclusive=True)
    try:
        write_atomic(pub, signing.public_pem(k), exclusive=True)
    except BaseException:
        with contextlib.suppress(OSError):
            key.unlink()  # created above, exclusively: no half-made pair stays
        raise
    out.print(f"wrote {key} and {pub}; key id {signing.key_id(signing.public_pem(k))}")


@keys_app.command("register")
def _keys_register(
    public: Annotated[Path, typer.Argument(help="Public key PEM.")],
    principal: Annotated[
        str | None, typer.Option(help="Whose key (default: yours; others' need admin).")
    ] = None,
) -> None:
    """Trust a public key for signing versions."""
    pem = _read(public, "public key")
    kid = _registry().register_key(_token(), pem, principal=principal)
    out.print(f"registered key {kid}")


@keys_app.command("revoke")
def _keys_revoke(key_id: Annotated[str, typer.Argument(help="Key id.")], reason: Reason) -> None:
    """Revoke a key: versions it signed no longer load."""
    _registry().revoke_key(_token(), key_id, reason)
    out.print(f"revoked key {key_id}")


def _dir_files(directory: Path) -> dict[str, bytes]:
    if not directory.is_dir() or directory.is_symlink():
        raise ConfigError(f"expected a directory, got {directory}")
    files = {}
    for f in sorted(directory.iterdir()):
        if f.is_symlink() or not f.is_file():
            raise ConfigError(f"{f}: only regular files can be signed (no links, no folders)")
        files[f.name] = read_regular(f, max_bytes=4 * 2**30, what="file to sign")
    if not files:
        raise ConfigError(f"{directory} is empty")
    return files


@keys_app.command("sign")
def _keys_sign(
    directory: Annotated[Path, typer.Argument(help="A model directory (e.g. a policy dir).")],
    key: Annotated[Path, typer.Option(help="Private signing key (PEM).")],
    signature: Annotated[Path, typer.Option("--out", help="Signature bundle to write.")],
) -> None:
    """Sign every file of a directory offline, in the OpenSSF model-signing format (verifiable
    by rlsec keys verify and by model-signing's own verifier)."""
    import hashlib

    from rlsec.registry import signing

    if signature.resolve().parent == directory.resolve():
        raise ConfigError("write the signature outside the directory it signs")
    files = _dir_files(directory)
    manifest = signing.Manifest(
        directory.resolve().name, {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}
    )
    write_atomic(signature, signing.sign(manifest, _read_key(key)))
    out.print(f"signed {len(files)} files of {directory} into {signature}")


@keys_app.command("verify")
def _keys_verify(
    directory: Annotated[Path, typer.Argument(help="The signed directory.")],
    signature: Annotated[Path, typer.Option(help="Its signature bundle.")],
    public: Annotated[Path, typer.Option(help="The signer's public key (PEM).")],
) -> None:
    """Verify a directory against a signature bundle and a public key (exit 5 if not)."""
    import hashlib

    from rlsec.errors import VerificationError
    from rlsec.registry import signing

    pem = _read(public, "public key")
    manifest = signing.verify(
        _read(signature, "signature bundle", 64 * 2**20), {signing.key_id(pem): pem}
    )
    files = {n: hashlib.sha256(b).hexdigest() for n, b in _dir_files(directory).items()}
    if files != dict(manifest.files):
        changed = sorted(set(files) ^ set(manifest.files)) or sorted(
            n for n in files if files[n] != manifest.files[n]
        )
        raise VerificationError(f"{directory} does not match its signed manifest: {changed}")
    out.print(
        f"{directory}: {len(files)} files match the signature by {signing.key_id(pem)[:16]}..."
    )


# -- registry ----------------------------------------------------------------------------------
@registry_app.command("push")
def _push(
    path: Annotated[
        str, typer.Argument(help="A native policy directory, an SB3 .zip, or zoo:NAME.")
    ],
    name: Annotated[str, typer.Option(help="Policy name.")],
    key: Annotated[Path, typer.Option(help="Your private signing key (PEM).")],
    env: Annotated[str | None, typer.Option(help="Environment id.")] = None,
    parent: Annotated[str | None, typer.Option(help="The version this one derives from.")] = None,
    dataset: Annotated[
        list[str] | None, typer.Option(help="NAME=SHA256 of a dataset used (repeatable).")
    ] = None,
) -> None:
    """Push a new, signed version (trainer)."""
    datasets = {}
    for item in dataset or []:
        label, sep, digest = item.partition("=")
        if not sep:
            raise ConfigError(f"--dataset must be NAME=SHA256, got {item!r}")
        datasets[label] = digest
    v = _registry().push(
        _token(), path, name=name, key=_read_key(key), env_id=env, parent=parent, datasets=datasets
    )
    out.print(f"pushed {v.ref} ({v.stage}), manifest {v.manifest_sha256[:16]}...")


@registry_app.command("list")
def _list(name: Annotated[str | None, typer.Option(help="Only this policy.")] = None) -> None:
    """List versions."""
    table = Table("version", "stage", "env", "pushed by", "pushed at", "signer")
    for v in _registry().versions(_token(), name):
        table.add_row(
            v.ref, v.stage, v.env_id or "", v.pushed_by, v.pushed_at, v.signer_key_id[:16]
        )
    out.print(table)


@registry_app.command("show")
def _show(ref: Ref) -> None:
    """A version as JSON: files, signed provenance, evidence, approvals, history."""
    print(json.dumps(_registry().show(_token(), ref), indent=2, sort_keys=True))


@registry_app.command("pull")
def _pull(
    ref: Ref, to: Annotated[Path, typer.Option("--out", help="New directory to write.")]
) -> None:
    """Write a version, verified, as a policy directory."""
    v = _registry().pull(_token(), ref, to)
    out.print(f"pulled {v.ref} to {to} (signature and digests verified)")


@registry_app.command("verify")
def _verify(ref: Ref) -> None:
    """Check a version's signature and every file's digest (exit 5 if anything is off)."""
    v = _registry().verify_version(_token(), ref)
    out.print(f"{v.ref}: signature by {v.signer_key_id[:16]}... and file digests verify")


@registry_app.command("attach")
def _attach(
    ref: Ref,
    evidence: Annotated[Path, typer.Argument(help="results.json of rlsec redteam or verify.")],
    key: Annotated[Path, typer.Option(help="Your private signing key (PEM): you sign it.")],
) -> None:
    """Attach red-team or verification results to a version, signed by you (gates count
    evidence from evaluators and reviewers other than the version's pusher)."""
    body = _read(evidence, "evidence", _MAX_EVIDENCE)
    digest = _registry().attach(_token(), ref, body, key=_read_key(key))
    out.print(f"attached {evidence} to {ref} (sha256 {digest[:16]}...)")


@registry_app.command("approve")
def _approve(
    ref: Ref,
    stage: Annotated[str, typer.Option(help="staging or production.")],
    comment: Annotated[str, typer.Option(help="Review note.")] = "",
) -> None:
    """Approve a version for a stage (reviewer; not the version's pusher)."""
    _registry().approve(_token(), ref, stage, comment)
    out.print(f"approved {ref} for {stage}")


@registry_app.command("promote")
def _promote(
    ref: Ref,
    stage: Annotated[str, typer.Option(help="staging or production.")],
    reason: Annotated[str, typer.Option(help="Why (recorded).")] = "",
) -> None:
    """Promote a version if its gate is met (deployer; exit 6 and the reasons if not)."""
    v = _registry().promote(_token(), ref, stage, reason)
    out.print(f"{v.ref} is now in {v.stage}")


@registry_app.command("rollback")
def _rollback(name: Annotated[str, typer.Argument(help="Policy name.")], reason: Reason) -> None:
    """Put the previous known-good production version back (deployer)."""
    v = _registry().rollback(_token(), name, reason)
    out.print(f"rolled back: {v.ref} is in production")


@registry_app.command("quarantine")
def _quarantine(ref: Ref, reason: Reason) -> None:
    """Block a version from being served (deployer)."""
    v = _registry().quarantine(_token(), ref, reason)
    out.print(f"{v.ref} is quarantined")


@registry_app.command("release")
def _release(ref: Ref, reason: Reason) -> None:
    """Lift a quarantine; the version goes back to candidate (admin)."""
    v = _registry().release(_token(), ref, reason)
    out.print(f"{v.ref} is a candidate again")


@registry_app.command("delete")
def _delete(ref: Ref, reason: Reason) -> None:
    """Delete a version's files; its record and history stay (admin)."""
    v = _registry().delete(_token(), ref, reason)
    out.print(f"{v.ref} deleted; its record remains")


# -- audit -------------------------------------------------------------------------------------
@audit_app.command("verify")
def _audit_verify(
    head: Annotated[
        Path | None, typer.Option(help="A tree head saved earlier (rlsec audit head --out).")
    ] = None,
) -> None:
    """Recompute the whole log; exit 5 naming the first bad entry if anything was changed."""
    from rlsec.registry.audit import SignedHead

    witness = None
    if head is not None:
        try:
            witness = SignedHead.from_dict(_json(head, "saved head"))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"{head} is not a saved tree head: {exc!r:.200}") from None
    r = _registry().audit_verify(_token(), witness=witness)
    size = r.head.size if r.head else 0
    root = r.head.root.hex() if r.head else ""
    out.print(
        f"audit log verifies: {r.entries} entries, {r.heads} signed heads, {r.nodes} nodes; "
        f"size {size}, root {root}" + (f"; consistent with {head}" if head else "")
    )


@audit_app.command("head")
def _audit_head(
    to: Annotated[Path | None, typer.Option("--out", help="Save it here (for --head).")] = None,
) -> None:
    """The newest signed tree head, to keep outside the registry."""
    h = _registry().audit_head(_token())
    if h is None:
        raise ConfigError("the audit log is empty")
    text = json.dumps(h.to_dict(), indent=2, sort_keys=True)
    if to is not None:
        write_atomic(to, text + "\n")
        out.print(f"wrote the head at size {h.size} to {to}")
    else:
        print(text)


@audit_app.command("proof")
def _audit_proof(
    entry: Annotated[int | None, typer.Option(help="Inclusion proof of this entry.")] = None,
    size: Annotated[int | None, typer.Option(help="In the tree of this size.")] = None,
    old: Annotated[
        int | None, typer.Option("--from", help="Consistency proof from this tree size.")
    ] = None,
    new: Annotated[int | None, typer.Option("--to", help="To this size (default newest).")] = None,
) -> None:
    """RFC 6962 proofs as JSON: --entry N [--size S], or --from OLD [--to NEW]."""
    reg = _registry()
    if (entry is None) == (old is None):
        raise ConfigError("give --entry N for an inclusion proof or --from OLD for consistency")
    if entry is not None:
        doc = reg.audit_inclusion(_token(), entry, size)
    else:
        assert old is not None
        doc = reg.audit_consistency(_token(), old, new)
    print(json.dumps(doc, indent=2, sort_keys=True))


@audit_app.command("export")
def _audit_export(
    to: Annotated[Path, typer.Option("--out", help="OCSF JSON lines file to write.")],
    start: Annotated[int, typer.Option(help="First entry.")] = 0,
) -> None:
    """Write entries as OCSF API Activity events (JSON lines) for a SIEM."""
    from rlsec.registry.audit import ocsf_event

    entries = _registry().audit_entries(_token(), start)
    with open_atomic(to) as f:  # an unpredictable temporary, never a planted link
        for e in entries:
            f.write((json.dumps(ocsf_event(e), sort_keys=True) + "\n").encode())
    out.print(f"wrote {len(entries)} events to {to}")


def register(app: typer.Typer) -> None:
    app.add_typer(admin_app, name="admin")
    app.add_typer(keys_app, name="keys")
    app.add_typer(registry_app, name="registry")
    app.add_typer(audit_app, name="audit")
