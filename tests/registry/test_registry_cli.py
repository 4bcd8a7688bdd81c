"""The registry's commands end to end, as an operator runs them (RLSEC_TOKEN identity, exit
codes: 4 denied, 5 does not verify, 6 gate not met)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from rlsec.cli import main
from rlsec.policies import zoo_path

ZOO = zoo_path("cartpole-ppo")


class Cli:
    def __init__(
        self, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ):
        self.home, self.mp, self.capsys = home, monkeypatch, capsys
        monkeypatch.setenv("RLSEC_HOME", str(home))
        monkeypatch.delenv("RLSEC_DB", raising=False)
        monkeypatch.setenv("COLUMNS", "200")

    def __call__(self, *args: str, token: str | None = None, code: int = 0) -> str:
        if token is None:
            self.mp.delenv("RLSEC_TOKEN", raising=False)
        else:
            self.mp.setenv("RLSEC_TOKEN", token)
        self.mp.setattr(sys, "argv", ["rlsec", *args])
        got = 0
        try:
            main()
        except SystemExit as exc:
            got = int(exc.code or 0)
        captured = self.capsys.readouterr()
        text = captured.out + captured.err
        assert got == code, f"rlsec {' '.join(args)} exited {got}, expected {code}:\n{text}"
        return text


def _token(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("rlsec_"))


def test_an_operator_session_from_init_to_rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(tmp_path / "home", monkeypatch, capsys)
    admin = _token(cli("admin", "init", "--name", "alice"))
    cli("admin", "init", code=2)  # once only
    tokens = {}
    for name, roles in (
        ("tom", "trainer"),
        ("rita", "reviewer"),
        ("rob", "reviewer"),
        ("eve", "evaluator"),
        ("dana", "deployer"),
        ("ann", "auditor"),
    ):
        cli("admin", "principal", "create", name, "--roles", roles, token=admin)
        tokens[name] = _token(cli("admin", "token", "create", name, token=admin))
    key = tmp_path / "tom.pem"
    cli("keys", "generate", "--out", str(key))
    assert key.stat().st_mode & 0o077 == 0
    cli("keys", "generate", "--out", str(key), code=2)  # never overwrites a key
    cli("keys", "register", str(key) + ".pub", token=tokens["tom"])
    eve_key = tmp_path / "eve.pem"
    cli("keys", "generate", "--out", str(eve_key))
    cli("keys", "register", str(eve_key) + ".pub", token=tokens["eve"])
    for _ in range(2):
        pushed = cli(
            "registry",
            "push",
            str(ZOO),
            "--name",
            "cartpole",
            "--key",
            str(key),
            token=tokens["tom"],
        )
    assert "pushed cartpole@2 (candidate)" in pushed
    cli(
        "registry",
        "push",
        str(ZOO),
        "--name",
        "cartpole",
        "--key",
        str(key),
        token=tokens["rita"],
        code=4,
    )
    listing = cli("registry", "list", token=tokens["rita"])
    assert "cartpole@1" in listing and "cartpole@2" in listing
    shown = json.loads(cli("registry", "show", "cartpole@1", token=tokens["rita"]))
    assert shown["provenance"]["pushed_by"] == "tom"
    cli("registry", "verify", "cartpole@1", token=tokens["rita"])
    cli("registry", "pull", "cartpole@1", "--out", str(tmp_path / "pulled"), token=tokens["rita"])
    assert (tmp_path / "pulled" / "spec.json").read_bytes() == (ZOO / "spec.json").read_bytes()

    gates = tmp_path / "gates.json"
    gates.write_text(
        json.dumps({"staging": {"approvals": 1}, "production": {"approvals": 2, "redteam": {}}})
    )
    cli("admin", "gates", str(gates), token=admin)
    for ref in ("cartpole@1", "cartpole@2"):
        cli("registry", "promote", ref, "--stage", "staging", token=tokens["dana"], code=6)
        cli("registry", "approve", ref, "--stage", "staging", token=tokens["tom"], code=4)
        cli("registry", "approve", ref, "--stage", "staging", token=tokens["rita"])
        cli("registry", "promote", ref, "--stage", "staging", token=tokens["dana"])
        evidence = tmp_path / "results.json"
        evidence.write_text(
            json.dumps({"kind": "redteam", "policy": {"sha256": shown["files"]["spec.json"]}})
        )
        # the pusher's own evidence never counts toward its gate
        cli("registry", "attach", ref, str(evidence), "--key", str(key), token=tokens["tom"])
        for reviewer in ("rita", "rob"):
            cli("registry", "approve", ref, "--stage", "production", token=tokens[reviewer])
        refused = cli(
            "registry", "promote", ref, "--stage", "production", token=tokens["dana"], code=6
        )
        assert "the pusher's own evidence never does" in refused
        cli("registry", "attach", ref, str(evidence), "--key", str(eve_key), token=tokens["eve"])
        assert "now in production" in cli(
            "registry", "promote", ref, "--stage", "production", token=tokens["dana"]
        )
    out = cli(
        "registry", "rollback", "cartpole", "--reason", "canary regressed", token=tokens["dana"]
    )
    assert "cartpole@1 is in production" in out
    cli("registry", "quarantine", "cartpole@2", "--reason", "trigger found", token=tokens["dana"])
    cli(
        "registry", "pull", "cartpole@2", "--out", str(tmp_path / "q"), token=tokens["rita"], code=4
    )

    head = tmp_path / "head.json"
    cli("audit", "head", "--out", str(head), token=tokens["ann"])
    assert "audit log verifies" in cli("audit", "verify", "--head", str(head), token=tokens["ann"])
    cli("audit", "verify", token=tokens["tom"], code=4)
    proof = json.loads(cli("audit", "proof", "--entry", "3", token=tokens["ann"]))
    assert proof["index"] == 3 and proof["proof"]
    consistency = json.loads(cli("audit", "proof", "--from", "5", token=tokens["ann"]))
    assert consistency["old"]["size"] == 5
    events = tmp_path / "events.jsonl"
    cli("audit", "export", "--out", str(events), token=tokens["ann"])
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    assert {e["class_uid"] for e in lines} == {6003}
    denied = [e for e in lines if e["status_id"] == 2]
    assert denied and all(e["severity_id"] == 3 and e["status_detail"] for e in denied)
    assert [e["metadata"]["sequence"] for e in lines] == list(range(len(lines)))

    # an edited row is found, named, and exits 5
    db = sqlite3.connect(tmp_path / "home" / "registry.db")
    db.execute("UPDATE audit_entries SET actor = 'mallory' WHERE seq = 7")
    db.commit()
    db.close()
    bad = cli("audit", "verify", token=tokens["ann"], code=5)
    assert "entry 7" in bad


def test_exit_codes_from_a_real_process(tmp_path: Path) -> None:
    env = {**os.environ, "RLSEC_HOME": str(tmp_path / "home"), "RLSEC_TOKEN": "rlsec_bad"}
    env.pop("RLSEC_DB", None)
    run = subprocess.run(
        [sys.executable, "-m", "rlsec", "admin", "init"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0
    denied = subprocess.run(
        [sys.executable, "-m", "rlsec", "registry", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert denied.returncode == 4
    assert "expected a token of the form" in denied.stdout + denied.stderr


def test_offline_sign_and_verify_of_a_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    cli = Cli(tmp_path / "home", monkeypatch, capsys)
    model = tmp_path / "cartpole"
    shutil.copytree(ZOO, model)
    key = tmp_path / "k.pem"
    cli("keys", "generate", "--out", str(key))
    sig = tmp_path / "cartpole.sig"
    cli("keys", "sign", str(model), "--key", str(key), "--out", str(model / "x.sig"), code=2)
    cli("keys", "sign", str(model), "--key", str(key), "--out", str(sig))
    ok = cli("keys", "verify", str(model), "--signature", str(sig), "--public", f"{key}.pub")
    assert "2 files match" in ok
    other = tmp_path / "other.pem"
    cli("keys", "generate", "--out", str(other))
    cli("keys", "verify", str(model), "--signature", str(sig), "--public", f"{other}.pub", code=5)
    weights = model / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    bad = cli(
        "keys", "verify", str(model), "--signature", str(sig), "--public", f"{key}.pub", code=5
    )
    assert "weights.safetensors" in bad


def _admin(cli: Cli) -> str:
    return _token(cli("admin", "init", "--name", "alice"))


def test_audit_export_never_writes_through_a_link_at_its_old_temporary_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(tmp_path / "home", monkeypatch, capsys)
    admin = _admin(cli)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / ".events.jsonl.tmp").symlink_to(victim)  # the fixed name it used to write
    (tmp_path / "events.jsonl").symlink_to(victim)  # and the output itself
    cli("audit", "export", "--out", str(tmp_path / "events.jsonl"), token=admin)
    assert victim.read_text() == "keep"
    assert not (tmp_path / "events.jsonl").is_symlink()
    assert json.loads((tmp_path / "events.jsonl").read_text().splitlines()[0])["class_uid"]


def test_keys_generate_refuses_a_dangling_link_at_the_public_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(tmp_path / "home", monkeypatch, capsys)
    (tmp_path / "k.pem.pub").symlink_to(tmp_path / "written-elsewhere")
    out = cli("keys", "generate", "--out", str(tmp_path / "k.pem"), code=2)
    assert "k.pem.pub exists; refusing to overwrite a key" in out
    assert not (tmp_path / "written-elsewhere").exists()
    assert not (tmp_path / "k.pem").exists()  # no half-made pair
    (tmp_path / "k2.pem").symlink_to(tmp_path / "private-elsewhere")
    cli("keys", "generate", "--out", str(tmp_path / "k2.pem"), code=2)
    assert not (tmp_path / "private-elsewhere").exists()


def test_keys_sign_and_audit_head_replace_a_link_instead_of_following_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(tmp_path / "home", monkeypatch, capsys)
    admin = _admin(cli)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    for name in ("sig", "head.json"):
        (tmp_path / name).symlink_to(victim)
    cli("keys", "generate", "--out", str(tmp_path / "k.pem"))
    cli("keys", "sign", str(ZOO), "--key", str(tmp_path / "k.pem"), "--out", str(tmp_path / "sig"))
    cli("audit", "head", "--out", str(tmp_path / "head.json"), token=admin)
    assert victim.read_text() == "keep"
    assert json.loads((tmp_path / "head.json").read_text())["size"] >= 1


@pytest.mark.parametrize(
    "command",
    [
        ("admin", "gates", "{f}"),
        ("keys", "register", "{f}"),
        ("registry", "attach", "c@1", "{f}", "--key", "unused.pem"),
        ("audit", "verify", "--head", "{f}"),
        ("registry", "push", str(ZOO), "--name", "c", "--key", "{f}"),
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_registry_commands_refuse_a_fifo_without_blocking(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: tuple[str, ...],
) -> None:
    import threading

    cli = Cli(tmp_path / "home", monkeypatch, capsys)
    admin = _admin(cli)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    args = [a.format(f=fifo) for a in command]
    box: dict[str, str] = {}
    t = threading.Thread(target=lambda: box.update(out=cli(*args, token=admin, code=2)))
    t.start()
    t.join(30)
    if t.is_alive():  # unblock the reader so the suite can go on, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        t.join(5)
        pytest.fail(f"rlsec {' '.join(args)} blocked on a FIFO")
    assert "is a FIFO; expected a regular file" in " ".join(box["out"].split())


def test_a_signature_nested_too_deeply_for_the_json_parser_does_not_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(tmp_path / "home", monkeypatch, capsys)
    cli("keys", "generate", "--out", str(tmp_path / "k.pem"))
    (tmp_path / "sig").write_text("[" * 100_000)
    out = cli(
        "keys", "verify", str(ZOO), "--signature", str(tmp_path / "sig"), "--public",
        str(tmp_path / "k.pem.pub"), code=5,
    )  # fmt: skip
    assert "is not valid JSON" in out
