"""The ``rlsec`` command. Thin: parses arguments, calls the library, prints the outcome."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from rlsec import _cli_registry, _files, _inputs
from rlsec._version import __version__
from rlsec.errors import (
    AccessDenied,
    GateRefused,
    IntegrityViolation,
    RLSecError,
    VerificationError,
)

__all__ = ["app", "main"]

# soft_wrap: a message is never broken mid-path; the terminal folds long lines itself
console = Console(stderr=True, soft_wrap=True)


class _Commands(TyperGroup):
    """Every ``rlsec`` command runs inside :meth:`invoke`, which turns rlsec's errors into a
    message on stderr and an exit code: 2 bad input, 3 an integrity stop, 4 access denied, 5
    a verification failure, 6 a gate not met; 1 an operating-system error (a full disk) or
    ``rlsec verify``'s property does not hold; 130 interrupted. Usage errors exit 2 (click).
    Anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            console.print("interrupted: nothing was written")
            raise typer.Exit(130) from None
        except (RLSecError, OSError) as exc:
            code, label = _exit_code(exc)
            console.print(f"[bold red]{label}:[/bold red] {escape(str(exc))}", highlight=False)
            raise typer.Exit(code) from None


def _exit_code(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, IntegrityViolation):  # not bad input: the run was stopped on purpose
        return 3, "integrity"
    if isinstance(exc, AccessDenied):
        return 4, "denied"
    if isinstance(exc, VerificationError):
        return 5, "does not verify"
    if isinstance(exc, GateRefused):
        return 6, "gate not met"
    if isinstance(exc, RLSecError):
        return 2, "error"
    return 1, "error"  # OSError, e.g. the disk filled up while the report was written


app = typer.Typer(
    name="rlsec",
    cls=_Commands,
    help="Reinforcement-learning security: red-team, harden, verify, guard and govern policies.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped output keeps full-width tables instead of rich's 80-column default.
out_console = Console(width=None if sys.stdout.isatty() else 160)


Unsafe = Annotated[
    bool,
    typer.Option(
        "--unsafe-no-sandbox",
        help="Let --env name a module outside gymnasium and rlsec to import (module:EnvId): "
        "its code runs in this process, unsandboxed. Recorded in the results.",
    ),
]


def _floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    if len(text) > 100_000:
        raise typer.BadParameter(
            f"expected at most 100000 characters of numbers, got {len(text)}", param_hint=what
        )
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"expected comma-separated numbers such as 0.05,0.1, got {text!r}", param_hint=what
        ) from None
    if not values:
        raise typer.BadParameter(f"expected at least one number, got {text!r}", param_hint=what)
    return values


@app.command("redteam")
def _redteam(
    policy: Annotated[
        str,
        typer.Option(
            help="zoo:NAME, a native policy directory, or a Stable-Baselines3 .zip archive."
        ),
    ] = "zoo:cartpole-ppo",
    env: Annotated[
        str | None,
        typer.Option(
            help="Gymnasium environment id (required for SB3 archives; defaults to the policy's)."
        ),
    ] = None,
    attacks: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated attack ids (see `rlsec attacks`); default: all that apply."
        ),
    ] = None,
    eps: Annotated[
        str | None, typer.Option(help="Comma-separated observation budgets ε, in --eps-unit.")
    ] = None,
    eps_unit: Annotated[
        str | None,
        typer.Option(
            help="raw (observation units) or std (per-feature clean standard deviations); "
            "default std, raw with --strategy."
        ),
    ] = None,
    alpha: Annotated[
        str | None, typer.Option(help="Comma-separated action-attack budgets α (probabilities).")
    ] = None,
    episodes: Annotated[int, typer.Option(help="Episodes per attack, budget and seed.")] = 20,
    seed: Annotated[int, typer.Option(help="Base seed: the run is deterministic given it.")] = 0,
    seeds: Annotated[int, typer.Option(help="Number of seeds (seed, seed+1, ...).")] = 1,
    num_envs: Annotated[int, typer.Option(help="Environments stepped in one batch.")] = 64,
    out: Annotated[Path, typer.Option(help="Directory for results.json and report.html.")] = Path(
        "rlsec-redteam"
    ),
    threads: Annotated[
        int, typer.Option(help="torch threads (1 is fastest for small policies).")
    ] = 1,
    defense: Annotated[
        str | None,
        typer.Option(
            help="Attack the policy wrapped in an inference-time defense, e.g. "
            "smoothing:sigma=0.2,n=100 (sigma in --eps-unit unless unit=raw|std is given)."
        ),
    ] = None,
    strategy: Annotated[
        Path | None,
        typer.Option(
            help="Also replay this verified attacker's optimal strategy (`rlsec verify "
            "--attack-radius R --strategy FILE`) as strategy-obs-v1; ε defaults to its "
            "radius, in raw units."
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace results.json and report.html in an --out that is not empty "
            "(without it, such an --out is refused).",
        ),
    ] = False,
    unsafe_no_sandbox: Unsafe = False,
) -> None:
    """Attack a policy with every inference-time attack at several budgets; report the damage."""
    import torch

    from rlsec.evaluate import DEFAULT_ALPHAS, DEFAULT_EPSILONS
    from rlsec.redteam import redteam as run
    from rlsec.report import eps50_table, results_table
    from rlsec.verify.attack import Strategy

    eps_values = _floats(eps, "--eps")
    alpha_values = _floats(alpha, "--alpha")
    attack_params: dict[str, dict[str, object]] = {}
    if strategy is not None:
        replay = Strategy.load(strategy)  # a clear error before anything runs
        attack_params["strategy-obs-v1"] = {"strategy": str(strategy)}
        if eps_unit not in (None, "raw"):
            raise typer.BadParameter(
                f"a strategy's radius is in raw units; got --eps-unit {eps_unit}",
                param_hint="--eps-unit",
            )
        eps_unit = "raw"
        if eps_values is None:
            eps_values = [replay.radius]
    eps_unit = eps_unit or "std"
    if eps_unit not in ("raw", "std"):
        raise typer.BadParameter(f"expected raw or std, got {eps_unit!r}", param_hint="--eps-unit")
    seed_list = _inputs.seed_range(seed, seeds)
    torch.set_num_threads(_inputs.count("threads", threads, limit=_inputs.MAX_THREADS))
    attack_ids = [a.strip() for a in attacks.split(",") if a.strip()] if attacks else None
    if strategy is not None and attack_ids is not None and "strategy-obs-v1" not in attack_ids:
        attack_ids.append("strategy-obs-v1")
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("preparing", total=1.0)

        def progress(label: str, index: int, total: int, fraction: float) -> None:
            bar.update(
                task,
                description=f"[{index + 1}/{total}] {label}",
                completed=(index + min(fraction, 1.0)) / total,
            )

        results = run(
            policy,
            env_id=env,
            attacks=attack_ids,
            epsilons=eps_values if eps_values is not None else DEFAULT_EPSILONS,
            eps_unit=eps_unit,  # type: ignore[arg-type]
            alphas=alpha_values if alpha_values is not None else DEFAULT_ALPHAS,
            episodes=episodes,
            seeds=seed_list,
            num_envs=num_envs,
            defense=defense,
            attack_params=attack_params,
            out=out,
            force=force,
            unsafe_no_sandbox=unsafe_no_sandbox,
            progress=progress,
        )
    out_console.print(results_table(results))
    out_console.print(eps50_table(results))
    for s in results["skipped"]:
        out_console.print(f"[dim]skipped {s['attack']}: {s['reason']}[/dim]")
    _print_findings(results.get("findings", []))
    out_console.print(
        f"wrote {out / 'results.json'} and {out / 'report.html'} ({results['seconds']:.0f} s)"
    )


def _print_findings(findings: list[dict[str, Any]]) -> None:
    """Each finding of a run on one line: what a reader must not miss in the JSON."""
    for f in findings:
        out_console.print(
            f"[bold yellow]finding[/bold yellow] {escape(str(f['severity']))} "
            f"{escape(str(f['detector']))}: {escape(str(f['message']))}",
            highlight=False,
            soft_wrap=True,
        )


@app.command("train")
def _train(
    algo: Annotated[str, typer.Option(help="ppo, dqn or sac.")],
    env: Annotated[str, typer.Option(help="Gymnasium environment id.")],
    out: Annotated[Path, typer.Option(help="New directory for the policy, log and checkpoints.")],
    defense: Annotated[
        str, typer.Option(help="none, adv (adversarial training), sa-reg or atla.")
    ] = "none",
    eps: Annotated[
        float, typer.Option(help="Budget of the defense (linf, raw observation units).")
    ] = 0.0,
    steps: Annotated[
        int | None, typer.Option(help="Environment steps (default: the recipe's).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed: the run is reproducible given it.")] = 0,
    kappa: Annotated[
        float | None, typer.Option(help="Weight of the sa-reg regulariser (default per algo).")
    ] = None,
    attack: Annotated[
        str, typer.Option(help="Attack used by --defense adv (an observation attack id).")
    ] = "pgd-obs-v1",
    select: Annotated[
        str | None,
        typer.Option(
            help="Exported policy: final, best (the checkpoint at full ε that validates best "
            "on clean episodes) or robust (best on min(clean, under the defense's attack)). "
            "Default: the recipe's (best for DQN on CartPole)."
        ),
    ] = None,
    monitor: Annotated[
        bool,
        typer.Option(
            help="Run the training-integrity monitors (findings.jsonl; stop on a high finding)."
        ),
    ] = True,
    monitor_thresholds: Annotated[
        Path | None,
        typer.Option(help="Thresholds JSON for the calibrated checks (default: shipped ones)."),
    ] = None,
    unsafe_no_sandbox: Unsafe = False,
    reference_return: Annotated[
        float | None,
        typer.Option(
            help="Undefended clean return to check the exported policy against (within 10%); "
            "default: the recipe's, else the env's reward_threshold."
        ),
    ] = None,
) -> None:
    """Train a policy, vanilla or with a robust-training defense, into a native policy dir."""
    from rlsec.defenses import TrainConfig, train_policy

    config = TrainConfig(
        algo=algo,
        env_id=env,
        defense=defense,
        eps=eps,
        steps=steps,
        seed=seed,
        kappa=kappa,
        attack=attack,
        select=select,
        unsafe_no_sandbox=unsafe_no_sandbox,
    )
    watch: Any = "default" if monitor else "off"
    if monitor and monitor_thresholds is not None:
        from rlsec.defenses.monitors import IntegrityMonitor, Thresholds

        watch = IntegrityMonitor(
            Thresholds.load(monitor_thresholds), findings_path=out / "findings.jsonl"
        )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("preparing", total=1.0)

            def progress(fraction: float, what: str) -> None:
                bar.update(task, description=what, completed=fraction)

            result = train_policy(
                config, out, progress=progress, monitor=watch, reference_return=reference_return
            )
    except KeyboardInterrupt:
        latest = out / "checkpoints" / "LATEST"
        where = (
            f"the last checkpoint is {out / 'checkpoints' / latest.read_text().strip()}"
            if latest.is_file()
            else "no checkpoint was written yet"
        )
        console.print(f"interrupted: {where}")
        sys.exit(130)
    cr = result.clean_return
    chosen = json.loads(result.summary.read_text())["selection"]
    if chosen["rule"] != "final":
        out_console.print(
            f"selected the checkpoint at step {chosen['step']} ({chosen['rule']} validation)"
        )
    out_console.print(
        f"clean return {cr['mean']:.2f} (95% CI {cr['ci95'][0]:.2f} to {cr['ci95'][1]:.2f}, "
        f"{cr['episodes']} episodes) after {result.seconds:.0f} s"
    )
    check = result.clean_return_check
    if check is not None:
        from rich.markup import escape

        lead = "[bold red]warning:[/bold red] " if check.status == "lost" else ""
        out_console.print(lead + escape(check.message))
    findings = out / "findings.jsonl"
    count = len(findings.read_text().splitlines()) if findings.is_file() else 0
    out_console.print(f"integrity findings: {count}" + (f" (see {findings})" if count else ""))
    out_console.print(f"wrote {result.policy_dir}, {result.log} and {result.summary}")


def _params(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r:.80}", param_hint="--param")
        if len(item) > 100_000:
            raise typer.BadParameter(
                f"expected at most 100000 characters, got {len(item)}", param_hint="--param"
            )
        try:
            out[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            out[key.strip()] = text  # a bare string
        except RecursionError:
            raise typer.BadParameter(
                f"{key.strip()}: the JSON value is nested too deeply", param_hint="--param"
            ) from None
    return out


@app.command("poison")
def _poison(
    attack: Annotated[str, typer.Option(help="Training-time attack id (see `rlsec attacks`).")],
    algo: Annotated[str, typer.Option(help="ppo, dqn or sac.")],
    env: Annotated[str, typer.Option(help="Gymnasium environment id.")],
    out: Annotated[Path, typer.Option(help="New directory for policies, results and report.")],
    eps: Annotated[float, typer.Option(help="The attack's budget ε (its unit: see the attack).")],
    budget: Annotated[
        float | None, typer.Option(help="Fraction of training steps the attack may touch.")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(help="The attack's own parameters, KEY=VALUE (JSON values), repeatable."),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Training steps (default: the recipe's).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of both trainings and the evaluation.")] = 0,
    episodes: Annotated[int, typer.Option(help="Evaluation episodes per policy.")] = 50,
    reference: Annotated[
        str | None,
        typer.Option(help="A clean policy to compare with (default: train one, same seed)."),
    ] = None,
    unsafe_no_sandbox: Unsafe = False,
) -> None:
    """Train under a training-time attack; compare with clean training; write results."""
    from rlsec.poison import poison as run
    from rlsec.report import results_table

    params = _params(param)
    if budget is not None:
        params["step_budget"] = budget
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("preparing", total=1.0)

        def progress(label: str, fraction: float) -> None:
            bar.update(task, description=label, completed=min(fraction, 1.0))

        results = run(
            attack,
            eps,
            algo=algo,
            env_id=env,
            out=out,
            params=params,
            steps=steps,
            seed=seed,
            episodes=episodes,
            reference=reference,
            unsafe_no_sandbox=unsafe_no_sandbox,
            progress=progress,
        )
    out_console.print(results_table(results))
    row = results["results"][0]
    for key in ("success", "budget_used", "integrity"):
        if key in row:
            out_console.print(f"{key}: {row[key]}")
    out_console.print(f"wrote {out / 'results.json'} and {out / 'report.html'}")


@app.command("verify")
def _verify(
    prop: Annotated[
        str, typer.Option("--property", help="PCTL property, e.g. 'P=? [F \"unsafe\"]'.")
    ],
    policy: Annotated[
        str | None, typer.Option(help="zoo:NAME or a policy directory (with --env).")
    ] = None,
    env: Annotated[str | None, typer.Option(help="A finite Gymnasium environment id.")] = None,
    prism: Annotated[Path | None, typer.Option(help="A PRISM file, checked as written.")] = None,
    attack_radius: Annotated[
        float | None,
        typer.Option(
            help="Observation attacker's budget: states (index observations) or raw linf "
            "(feature vectors). Needs Pmax/Pmin."
        ),
    ] = None,
    stochastic: Annotated[
        bool, typer.Option(help="Keep the policy's action probabilities (logits policies).")
    ] = False,
    all_states: Annotated[bool, typer.Option(help="Print and save every state's value.")] = False,
    counterexample: Annotated[
        str | None, typer.Option(help="Draw the most probable path into this label.")
    ] = None,
    strategy: Annotated[
        Path | None, typer.Option(help="Write the attacker's optimal strategy (JSON) here.")
    ] = None,
    method: Annotated[str, typer.Option(help="crown or ibp (feature-vector attacks).")] = "crown",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result here.")] = None,
    unsafe_no_sandbox: Unsafe = False,
) -> None:
    """Model-check a policy in a finite environment with Storm (or a PRISM model as written)."""
    from rlsec.verify.run import verify

    doc = verify(
        prop=prop,
        policy=policy,
        env_id=env,
        prism=prism,
        attack_radius=attack_radius,
        stochastic=stochastic,
        all_states=all_states,
        counterexample_label=counterexample,
        strategy_out=strategy,
        method=method,
        unsafe_no_sandbox=unsafe_no_sandbox,
    )
    secs = doc["seconds"]
    out_console.print(f"{doc['property']}: [bold]{doc['result']}[/bold]", highlight=False)
    out_console.print(
        f"{doc['states']} states, {doc['transitions']} transitions; "
        + ", ".join(f"{k} {v:.3f} s" for k, v in secs.items()),
        highlight=False,
    )
    if doc.get("attack"):
        a = doc["attack"]
        out_console.print(
            f"under attack: radius {a['radius']:g} ({a['unit']}), {a['mdp_choices']} attacker "
            f"choices ({a['choices']})",
            highlight=False,
        )
    if all_states and "values" in doc:
        out_console.print(
            " ".join(f"{v:.4g}" if not isinstance(v, bool) else str(v) for v in doc["values"]),
            highlight=False,
        )
    ce = doc.get("counterexample")
    if ce:
        out_console.print(
            f"most probable path into {ce['label']!r} (probability {ce['path_probability']:.3g}): "
            + " -> ".join(step["name"] for step in ce["path"]),
            highlight=False,
        )
        if "picture" in ce:
            out_console.print(escape(ce["picture"]), highlight=False)
    if json_out is not None:
        _files.write_atomic(json_out, json.dumps(doc, indent=1, default=str) + "\n")
        out_console.print(f"wrote {json_out}")
    if doc["result"] is False:
        raise typer.Exit(1)


@app.command("certify")
def _certify(
    policy: Annotated[str, typer.Option(help="zoo:NAME or a policy directory.")],
    env: Annotated[str, typer.Option(help="Gymnasium environment id (states from rollouts).")],
    json_out: Annotated[Path, typer.Option("--json", help="Write the certificates here.")],
    states: Annotated[int, typer.Option(help="States visited by clean rollouts.")] = 1000,
    method: Annotated[str, typer.Option(help="crown, ibp or smoothing.")] = "crown",
    eps: Annotated[
        str | None, typer.Option(help="Comma-separated ε at which to report certified shares.")
    ] = None,
    eps_unit: Annotated[str, typer.Option(help="std or raw.")] = "std",
    sigma: Annotated[float, typer.Option(help="Smoothing noise (in --eps-unit).")] = 0.25,
    samples: Annotated[int, typer.Option(help="Smoothing Monte Carlo copies per state.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the rollouts and the noise.")] = 0,
    unsafe_no_sandbox: Unsafe = False,
) -> None:
    """Certify a policy's per-state robustness: certified radii and certified shares per ε."""
    from rlsec.verify.run import certify

    doc = certify(
        policy=policy,
        env_id=env,
        states=states,
        method=method,
        eps=_floats(eps, "--eps"),
        eps_unit=eps_unit,
        sigma=sigma,
        samples=samples,
        seed=seed,
        unsafe_no_sandbox=unsafe_no_sandbox,
    )
    radii = np.asarray([s["radius"] for s in doc["states"]])
    table = Table(title=f"{doc['method']} certificates ({doc['norm']}, ε in {doc['eps_unit']})")
    table.add_column("ε")
    table.add_column("certified share")
    for e, frac in doc["certified_fraction"].items():
        table.add_row(e, f"{frac:.3f}")
    out_console.print(table)
    out_console.print(
        f"{len(radii)} states: median radius {np.median(radii):.4g}, {doc['seconds']:.2f} s",
        highlight=False,
    )
    _print_findings(doc["findings"])
    _files.write_atomic(json_out, json.dumps(doc) + "\n")
    out_console.print(f"wrote {json_out}")


@app.command("shield")
def _shield(
    env: Annotated[str, typer.Option(help="A finite Gymnasium environment id.")],
    out: Annotated[Path, typer.Option(help="Write the safe-action sets (JSON) here.")],
    label: Annotated[str, typer.Option(help="The label to keep away from.")] = "unsafe",
    delta: Annotated[
        float, typer.Option(help="Largest allowed probability of ever reaching the label.")
    ] = 0.0,
    unsafe_no_sandbox: Unsafe = False,
) -> None:
    """Compute per-state safe action sets for a runtime shield by model checking the env."""
    from rlsec.envs import unsafe_no_sandbox as no_sandbox
    from rlsec.verify.model import Model
    from rlsec.verify.shield import safe_actions

    delta = _inputs.fraction("--delta", delta)
    with no_sandbox(unsafe_no_sandbox):
        model = Model.from_env(env)
    shield = safe_actions(model, label, delta)
    shield.save(out)
    n_s, n_a = shield.allowed.shape
    out_console.print(
        f"{int(shield.allowed.sum())} of {n_s * n_a} state-actions allowed at delta {delta:g}; "
        f"{len(shield.unshieldable)} states where no action meets it; wrote {out}",
        highlight=False,
    )


@app.command("attacks")
def _attacks() -> None:
    """List the attacks rlsec can run, with their surface, knowledge and reference."""
    from rlsec.attacks import ATTACKS
    from rlsec.poison import training_attacks

    table = Table("id", "surface", "run with", "norms", "knowledge", "MITRE ATLAS", "reference")
    groups = (("rlsec redteam", ATTACKS), ("rlsec poison", training_attacks()))
    for command, registry in groups:
        for attack_id, cls in registry.items():
            needs = " ".join(f"--{k} FILE" for k in getattr(cls, "requires", ()))
            table.add_row(
                attack_id,
                cls.surface.value,
                f"{command} {needs}".strip(),
                ",".join(cls.norms),
                cls.knowledge,
                " ".join(cls.atlas),
                cls.reference,
            )
    out_console.print(table)


@app.command("zoo")
def _zoo() -> None:
    """List the reference policies shipped with rlsec and their clean returns."""
    from rlsec.policies import load_policy, zoo_names

    table = Table("policy", "env", "algo", "clean return", "sha256")
    for name in zoo_names():
        p = load_policy(f"zoo:{name}")
        cr: dict[str, Any] = p.info.clean_return or {}
        table.add_row(
            f"zoo:{name}",
            str(p.info.env_id),
            str(p.info.algo),
            f"{cr.get('mean', float('nan')):.2f}",
            p.info.sha256[:16],
        )
    out_console.print(table)


@app.command("version")
def _version() -> None:
    """Print the rlsec version."""
    out_console.print(__version__)


_cli_registry.register(app)


def main() -> None:
    """Entry point: run the ``rlsec`` command line and exit with its code (see
    :class:`_Commands`); usage errors are shown as click shows them, exit code 2."""
    try:
        code = app(prog_name="rlsec", standalone_mode=False)
    except typer.Abort:
        console.print("aborted")
        sys.exit(130)
    except Exception as exc:
        # Usage errors of the (vendored) click under typer: show them as click would.
        show = getattr(exc, "show", None)
        usage = getattr(exc, "exit_code", None)
        if callable(show) and isinstance(usage, int):
            show()
            sys.exit(usage)
        raise
    if isinstance(code, int) and code:  # typer.Exit comes back as a value here
        sys.exit(code)
