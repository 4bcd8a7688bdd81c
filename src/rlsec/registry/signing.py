"""Signed manifests in the OpenSSF model-signing format, offline, with elliptic-curve keys.

A version's manifest (the SHA-256 of every file, plus its provenance) is an in-toto
Statement v1 whose predicate is model-signing's ``https://model_signing/signature/v1.0``:

* ``subject``: one descriptor, the model's name and the SHA-256 over the files' raw digests
  in name order (model-signing's root digest);
* ``predicate.resources``: ``{name, algorithm: "sha256", digest}`` per file, in name order;
* ``predicate.serialization``: how the files were hashed (``method: "files"``);
* ``predicate.provenance``: rlsec's provenance statement (who trained it, on what, from which
  parent), signed with the rest. Verifiers of the format ignore fields they do not know.

The Statement is the payload of a DSSE envelope signed with ECDSA (P-256 and SHA-256 by
default; P-384 and P-521 accepted) over DSSE's pre-authentication encoding, inside a Sigstore
bundle v0.3 whose ``verificationMaterial.publicKey.hint`` is the SHA-256 of the signer's
SubjectPublicKeyInfo PEM, as model-signing's own ``elliptic_key`` signer writes it.

Why not the ``model-signing`` package itself: measured (1.1.1, the latest release), its
public API verifies paths on disk and returns nothing, so what is loaded afterwards is a
second read (a check-then-load race); it cannot put provenance into the signed payload
except through private modules; and a fresh install fails to import (an undeclared
pyOpenSSL dependency) while pulling 35 packages. This module writes the same format with
:mod:`cryptography` alone, verifies bytes already in memory, and returns the verified
manifest, so the bytes checked are the bytes used.

Example:
    >>> key = generate_key()
    >>> m = Manifest("demo", {"spec.json": sha256_hex(b"{}")}, {"trainer": "me"})
    >>> bundle = sign(m, key)
    >>> trusted = {key_id(public_pem(key)): public_pem(key)}
    >>> verify(bundle, trusted).files == m.files
    True
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from rlsec.errors import ConfigError, VerificationError

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "Manifest",
    "generate_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "pae",
    "private_pem",
    "public_pem",
    "sha256_hex",
    "sign",
    "verify",
]

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
_CURVES: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}
_MAX_BUNDLE = 16 * 2**20
_HEX64 = re.compile(r"[0-9a-f]{64}")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_name(name: Any) -> str:
    """A file name in a manifest: relative, POSIX, no traversal, no empty parts."""
    if not isinstance(name, str) or not name or len(name) > 255:
        raise VerificationError(f"expected a file name of 1-255 characters, got {name!r:.80}")
    parts = name.split("/")
    if (
        name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise VerificationError(f"file name {name!r} is not a plain relative path")
    return name


@dataclass(frozen=True)
class Manifest:
    """What a signature covers: a model name, ``{file name: SHA-256 hex}`` and provenance."""

    name: str
    files: Mapping[str, str]
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"a manifest needs a non-empty name, got {self.name!r}")
        if not self.files:
            raise ConfigError("a manifest must list at least one file")
        for n, digest in self.files.items():
            try:
                _check_name(n)
            except VerificationError as exc:
                raise ConfigError(str(exc)) from None
            if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
                raise ConfigError(
                    f"digest of {n!r} must be 64 lowercase hex digits, got {digest!r}"
                )

    def root_digest(self) -> str:
        """model-signing's subject digest: SHA-256 over the raw file digests in name order."""
        h = hashlib.sha256()
        for n in sorted(self.files):
            h.update(bytes.fromhex(self.files[n]))
        return h.hexdigest()

    def statement(self) -> dict[str, Any]:
        names = sorted(self.files)
        return {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": self.name, "digest": {"sha256": self.root_digest()}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "serialization": {
                    "method": "files",
                    "hash_type": "sha256",
                    "allow_symlinks": False,
                    "ignore_paths": [],
                },
                "resources": [
                    {"name": n, "algorithm": "sha256", "digest": self.files[n]} for n in names
                ],
                "provenance": dict(self.provenance),
            },
        }


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what the signature is computed over."""
    t = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


def generate_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    """A new private key (P-256 unless another supported curve is given)."""
    key = ec.generate_private_key(curve or ec.SECP256R1())
    _hash_for(key.public_key())
    return key


def private_pem(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    """PKCS #8 PEM, encrypted when ``password`` is given."""
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def public_pem(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM of a key (the private key's public half)."""
    pub = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_id(public: bytes) -> str:
    """A public key's id: SHA-256 of its SubjectPublicKeyInfo PEM (model-signing's hint)."""
    return sha256_hex(public_pem(load_public_key(public)))


def load_private_key(pem: bytes, password: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    """Parse a PEM private key; only elliptic-curve keys on a supported curve are accepted.

    Raises:
        ConfigError: not a PEM key, a wrong password, or not a supported EC key.
    """
    try:
        key = serialization.load_pem_private_key(pem, password)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"expected a PEM elliptic-curve private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"expected an elliptic-curve private key, got {type(key).__name__}")
    _hash_for(key.public_key())
    return key


def load_public_key(pem: bytes) -> ec.EllipticCurvePublicKey:
    """Parse a SubjectPublicKeyInfo PEM public key on a supported curve.

    Raises:
        ConfigError: not a PEM public key, or not a supported EC key.
    """
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"expected a PEM elliptic-curve public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError(f"expected an elliptic-curve public key, got {type(key).__name__}")
    _hash_for(key)
    return key


def _hash_for(key: ec.EllipticCurvePublicKey) -> hashes.HashAlgorithm:
    algo = _CURVES.get(key.curve.name)
    if algo is None:
        raise ConfigError(f"expected a key on one of {sorted(_CURVES)}, got {key.curve.name}")
    return algo()


def sign(manifest: Manifest, key: ec.EllipticCurvePrivateKey) -> bytes:
    """The Sigstore bundle (JSON bytes) signing ``manifest`` with ``key``."""
    payload = json.dumps(manifest.statement(), sort_keys=True, separators=(",", ":")).encode()
    sig = key.sign(pae(PAYLOAD_TYPE, payload), ec.ECDSA(_hash_for(key.public_key())))
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {
            "publicKey": {"hint": key_id(public_pem(key))},
            "tlogEntries": [],
        },
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(sig).decode(), "keyid": ""}],
        },
    }
    return json.dumps(bundle, indent=2, sort_keys=True).encode() + b"\n"


def _get(obj: Any, key: str, kind: type, where: str) -> Any:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kind):
        raise VerificationError(
            f"{where}: expected {key!r} to be a {kind.__name__}, got {value!r:.80}"
        )
    return value


def _b64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError(f"{where} is not valid base64") from None


def _strict_json(data: bytes, where: str) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise VerificationError(f"{where}: key {k!r} appears twice")
            out[k] = v
        return out

    try:
        return json.loads(data, object_pairs_hook=no_duplicates)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise VerificationError(f"{where} is not valid JSON: {exc}") from None


def verify(bundle: bytes, trusted: Mapping[str, bytes]) -> Manifest:
    """Verify a bundle against trusted public keys and return the manifest it signs.

    ``trusted`` maps key id (:func:`key_id`) to public PEM; the bundle must name its key by
    that id, and the key must be in ``trusted``: a valid signature by any other key is
    refused. Fails closed: every malformed, ambiguous or unexpected field raises.

    Raises:
        VerificationError: the bundle does not verify; the message says why.
    """
    if not isinstance(bundle, bytes | bytearray) or len(bundle) > _MAX_BUNDLE:
        raise VerificationError(f"expected a signature bundle of at most {_MAX_BUNDLE} bytes")
    doc = _strict_json(bytes(bundle), "signature bundle")
    if _get(doc, "mediaType", str, "bundle") != BUNDLE_MEDIA_TYPE:
        raise VerificationError(
            f"bundle: expected mediaType {BUNDLE_MEDIA_TYPE!r}, got {doc.get('mediaType')!r}"
        )
    material = _get(doc, "verificationMaterial", dict, "bundle")
    hint = _get(_get(material, "publicKey", dict, "verificationMaterial"), "hint", str, "publicKey")
    if hint not in trusted:
        raise VerificationError(f"signed by key {hint[:16]}..., which is not a trusted key")
    public = load_public_key(trusted[hint])
    if key_id(trusted[hint]) != hint:
        raise VerificationError(f"trusted key registered as {hint[:16]}... has another id")
    env = _get(doc, "dsseEnvelope", dict, "bundle")
    if _get(env, "payloadType", str, "dsseEnvelope") != PAYLOAD_TYPE:
        raise VerificationError(f"envelope: expected payloadType {PAYLOAD_TYPE!r}")
    sigs = _get(env, "signatures", list, "dsseEnvelope")
    if len(sigs) != 1:
        raise VerificationError(f"envelope: expected exactly one signature, got {len(sigs)}")
    payload = _b64(_get(env, "payload", str, "dsseEnvelope"), "envelope payload")
    sig = _b64(_get(sigs[0], "sig", str, "signature"), "signature")
    try:
        public.verify(sig, pae(PAYLOAD_TYPE, payload), ec.ECDSA(_hash_for(public)))
    except InvalidSignature:
        raise VerificationError(
            f"signature does not verify with trusted key {hint[:16]}..."
        ) from None
    return _manifest_of(_strict_json(payload, "signed statement"))


def _manifest_of(st: Any) -> Manifest:
    if _get(st, "_type", str, "statement") != STATEMENT_TYPE:
        raise VerificationError(f"statement: expected _type {STATEMENT_TYPE!r}")
    if _get(st, "predicateType", str, "statement") != PREDICATE_TYPE:
        raise VerificationError(f"statement: expected predicateType {PREDICATE_TYPE!r}")
    subjects = _get(st, "subject", list, "statement")
    if len(subjects) != 1:
        raise VerificationError(f"statement: expected one subject, got {len(subjects)}")
    name = _get(subjects[0], "name", str, "subject")
    root = _get(_get(subjects[0], "digest", dict, "subject"), "sha256", str, "subject digest")
    pred = _get(st, "predicate", dict, "statement")
    ser = _get(pred, "serialization", dict, "predicate")
    if ser.get("method") != "files" or ser.get("hash_type") != "sha256" or ser.get("ignore_paths"):
        raise VerificationError(f"predicate: unsupported serialization {ser!r:.120}")
    files: dict[str, str] = {}
    for r in _get(pred, "resources", list, "predicate"):
        n = _check_name(_get(r, "name", str, "resource"))
        if _get(r, "algorithm", str, "resource") != "sha256":
            raise VerificationError(f"resource {n!r}: expected algorithm sha256")
        digest = _get(r, "digest", str, "resource")
        if not _HEX64.fullmatch(digest):
            raise VerificationError(f"resource {n!r}: digest is not 64 lowercase hex digits")
        if n in files:
            raise VerificationError(f"resource {n!r} is listed twice")
        files[n] = digest
    if not files:
        raise VerificationError("predicate lists no resources")
    provenance = pred.get("provenance", {})
    if not isinstance(provenance, dict):
        raise VerificationError("predicate: provenance must be an object")
    manifest = Manifest(name, files, provenance)
    if manifest.root_digest() != root:
        raise VerificationError("statement: the subject digest does not match its resources")
    return manifest
