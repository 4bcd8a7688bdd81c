#!/usr/bin/env python
"""Hand-written mutants of the registry's security checks, each run against the tests that
should catch it: a check whose mutant survives has no test that fails when it is weakened.

Each mutant replaces one exact piece of a check (a condition made always false, a
comparison dropped, a lookup changed) in a detached worktree of HEAD (never in this
checkout), runs its tests on SQLite, and reports KILLED (a test failed), SURVIVED, or
NO-TESTS (the selection matched nothing: a bug here). A pattern that no longer matches the
source is reported, so the list is kept in step with the code.

Usage: python scripts/mutate_registry.py [INDEX ...]
"""

# ruff: noqa: E501 (the mutants are exact source text)
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: (file, exact text of the check, its mutant, test files)
MUTANTS = [
    (
        "src/rlsec/registry/state.py",
        "        if want != digest(row):\n            raise TamperedState(",
        "        if False:\n            raise TamperedState(",
        "tests/registry/test_state.py",
    ),
    (
        "src/rlsec/registry/state.py",
        '            if row["audit_seq"] != seq:',
        "            if False:",
        "tests/registry/test_state.py",
    ),
    (
        "src/rlsec/registry/state.py",
        '        if want is None:\n            raise TamperedState(\n                f"{name} points at',
        '        if want is None:\n            return\n            raise TamperedState(\n                f"{name} points at',
        "tests/registry/test_state.py",
    ),
    (
        "src/rlsec/registry/promotion.py",
        "            if who is None or e.attached_by == row.pushed_by:",
        "            if who is None:",
        "tests/registry/test_trust.py",
    ),
    (
        "src/rlsec/registry/promotion.py",
        "            if not parse_roles(who.roles) & rule.evidence_from:",
        "            if False:",
        "tests/registry/test_trust.py",
    ),
    (
        "src/rlsec/registry/promotion.py",
        "            if e.epoch != row.epoch:\n                continue",
        "            if False:\n                continue",
        "tests/registry/test_trust.py",
    ),
    (
        "src/rlsec/registry/promotion.py",
        "            elif not who.created_at < row.pushed_at:",
        "            elif False:",
        "tests/registry/test_trust.py",
    ),
    (
        "src/rlsec/registry/promotion.py",
        '            elif who.disabled_at is not None:\n                why = "disabled"',
        '            elif False:\n                why = "disabled"',
        "tests/registry/test_trust.py",
    ),
    (
        "src/rlsec/registry/promotion.py",
        '            elif "admin" in roles and a.reviewer_id in acted:',
        "            elif False:",
        "tests/registry/test_trust.py",
    ),
    (
        "src/rlsec/registry/promotion.py",
        "                if missing:\n                    passed.append",
        "                if False:\n                    passed.append",
        "tests/registry/test_trust.py",
    ),
    (
        "src/rlsec/registry/promotion.py",
        "            if who.disabled_at is not None:\n                notes.append",
        "            if False:\n                notes.append",
        "tests/registry/test_trust.py",
    ),
    (
        "src/rlsec/registry/promotion.py",
        "                or krow.revoked_at is not None\n",
        "",
        "tests/registry/test_trust.py",
    ),
    (
        "src/rlsec/registry/promotion.py",
        "            if hashlib.sha256(body).hexdigest() != e.sha256:",
        "            if False:",
        "tests/registry/test_state.py tests/registry/test_trust.py",
    ),
    (
        "src/rlsec/registry/promotion.py",
        "            self._verified_files(s, target)",
        "            pass",
        "tests/registry/test_trust.py",
    ),
    (
        "src/rlsec/registry/promotion.py",
        "            self._verified_files(s, row)  # a version",
        "            pass  # a version",
        "tests/registry/test_trust.py",
    ),
    (
        "src/rlsec/registry/promotion.py",
        '    if manifest.name != f"evidence:{ref}":',
        "    if False:",
        "tests/registry/test_trust.py",
    ),
    (
        "src/rlsec/registry/gates.py",
        "    return f if math.isfinite(f) else None",
        "    return f",
        "tests/registry/test_trust.py",
    ),
    (
        "src/rlsec/registry/gates.py",
        "            if isinstance(r, bool):\n                if r is False:",
        "            if True:\n                if r is False:",
        "tests/registry/test_trust.py",
    ),
    (
        "src/rlsec/registry/gates.py",
        '            if unit is not None and d.get("eps_unit") != unit:',
        "            if False:",
        "tests/registry/test_trust.py",
    ),
    (
        "src/rlsec/registry/_base.py",
        "        if row.expires_at is not None and not row.expires_at > audit.now():",
        "        if False:",
        "tests/registry/test_trust.py",
    ),
    (
        "src/rlsec/registry/_base.py",
        "select(TokenRow.id).where(TokenRow.secret_sha256 == hash_secret(secret))",
        "select(TokenRow.id).where(TokenRow.id == tid)",
        "tests/registry/test_trust.py",
    ),
    (
        "src/rlsec/registry/_base.py",
        "            if len(times) >= self.limit:",
        "            if False:",
        "tests/registry/test_trust.py",
    ),
    (
        "src/rlsec/registry/_base.py",
        "            self._refuse(who[0], operation, target, exc)",
        "            pass",
        "tests/registry/test_hostile.py tests/registry/test_state.py",
    ),
    (
        "src/rlsec/registry/versions.py",
        "        manifest = signing.verify(bytes(row.bundle), {krow.key_id: krow.public_pem.encode()})",
        "        manifest = signing.verify(bytes(row.bundle), {k.key_id: k.public_pem.encode() for k in s.query(KeyRow).filter(KeyRow.principal_id == row.pushed_by)})",
        "tests/registry/test_trust.py",
    ),
    (
        "src/rlsec/registry/versions.py",
        "        if krow.revoked_at is not None:\n            raise VerificationError(",
        "        if False:\n            raise VerificationError(",
        "tests/registry/test_hostile.py",
    ),
    (
        "src/rlsec/registry/signing.py",
        "    if manifest.root_digest() != root:",
        "    if False:",
        "tests/registry/test_trust.py",
    ),
    (
        "src/rlsec/registry/audit.py",
        "    if stored is None or bytes(stored.root) != witness.root:",
        "    if stored is None:",
        "tests/registry/test_audit.py tests/registry/test_merkle.py",
    ),
    (
        "src/rlsec/registry/access.py",
        '_POLICY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")',
        '_POLICY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")',
        "tests/registry/test_trust.py",
    ),
    (
        "src/rlsec/registry/principals.py",
        "            if self._has_principals(s):",
        "            if False:",
        "tests/registry/test_registry.py tests/registry/test_trust.py",
    ),
]

#: mutants that survive for a stated reason
EXPLAINED = {
    12: "the evidence body's stored-digest check is backed by the attacher's signature over "
    "the same bytes: with the digest check gone, a rewritten body still fails the signature "
    "(test_an_evidence_body_replaced_with_the_log_key_is_still_refused accepts either)",
}

#: index -> pytest -k selection of the tests that should catch it
KEYS = {
    2: "inserted",
    3: "pushers_own",
    4: "role_the_gate",
    5: "released_version",
    6: "created_after",
    7: "disabled_later",
    8: "admin_who_acted",
    9: "rollback_skips",
    10: "disabled_or_its_key",
    11: "disabled_or_its_key",
    12: "log_key",
    13: "rollback_re_verifies",
    14: "promotion_re_verifies",
    15: "another_version",
    16: "non_finite or finite_number",
    17: "verdict",
    18: "eps_unit",
    19: "expired",
    20: "same_work or expired",
    21: "flood",
    22: "refused",
    23: "differs_from_the_recorded",
    24: "revoked",
    25: "subject_digest",
    26: "saved_head",
    27: "separator",
    28: "init",
}


def main() -> int:
    only = {int(i) for i in sys.argv[1:]}
    survived = 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(work), "HEAD"],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        env = {**os.environ, "PYTHONPATH": str(work / "src")}
        try:
            for i, (path, old, new, tests) in enumerate(MUTANTS):
                if only and i not in only:
                    continue
                f = work / path
                text = f.read_text()
                if text.count(old) != 1:
                    print(f"{i}: PATTERN {'AMBIGUOUS' if old in text else 'MISSING'} {path}")
                    survived += 1
                    continue
                f.write_text(text.replace(old, new))
                try:
                    select = f"not postgresql and ({KEYS.get(i, 'test')})"
                    r = subprocess.run(
                        [
                            sys.executable,
                            "-m",
                            "pytest",
                            "-q",
                            "-x",
                            "-p",
                            "no:cacheprovider",
                            *tests.split(),
                            "-k",
                            select,
                        ],
                        cwd=work,
                        env=env,
                        capture_output=True,
                        text=True,
                        check=False,
                    )
                finally:
                    f.write_text(text)
                status = {0: "SURVIVED", 1: "KILLED", 5: "NO-TESTS"}.get(r.returncode, "ERROR")
                if status == "SURVIVED" and i in EXPLAINED:
                    status = f"EXPLAINED ({EXPLAINED[i]})"
                survived += status in ("SURVIVED", "NO-TESTS", "ERROR")
                failed = [ln for ln in r.stdout.splitlines() if ln.startswith("FAILED")][:1]
                print(f"{i}: {status} {path}: {old.strip()[:60]!r} {' '.join(failed)}", flush=True)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(work)], cwd=REPO, check=False
            )
    print(f"{survived} of {len(only) or len(MUTANTS)} mutants survived unexplained")
    return 0


if __name__ == "__main__":
    sys.exit(main())
