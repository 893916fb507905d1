"""`bitswarm verify`: check recorded work by re-executing it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bitswarm.cli.output import JSON_HELP, UserError, emit_json, err, out, reporting, stages
from bitswarm.cli.state import state

app = typer.Typer(help="Check recorded work by re-executing it.", no_args_is_help=True)


@app.command("replay")
def replay_cmd(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(..., help="A training run directory written by `bitswarm train`."),
    start: int = typer.Option(None, "--from", min=1, help="First step to check (default 1)."),
    stop: int = typer.Option(None, "--to", min=1, help="Last step to check (default: the last logged step)."),
    sample: int = typer.Option(None, "--sample", min=1, help="Check K random steps, each from its nearest earlier checkpoint."),
    seed: int = typer.Option(None, "--seed", help="Seed of --sample's choice (default: random)."),
    threads: int = typer.Option(None, "--threads", min=1, help="Compute threads (never changes the result)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Re-execute steps from stored checkpoints and compare every state hash with the run's log."""
    from bitswarm.jobs.train_job import JobError, load_run_spec, prepare
    from bitswarm.repro.backend import set_threads
    from bitswarm.verify.replay import ReplayError, replay

    with reporting(as_json):
        if sample is not None and (start is not None or stop is not None):
            raise UserError("use either --from/--to or --sample, not both")
        st = state(ctx)
        try:
            spec = load_run_spec(run_dir)
            set_threads(threads if threads is not None else st.settings().threads)
            prepared = prepare(st.store(), spec, "numba")
            with Progress(TextColumn("replaying step {task.fields[step]}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=err, transient=True, disable=as_json) as progress:
                total = sample or ((stop or spec.steps) - (start or 1) + 1)
                task = progress.add_task("replay", total=max(total, 1), step="…")
                result = replay(run_dir, prepared, start, stop, sample, seed,
                                on_step=lambda s: progress.update(task, advance=1, step=s))
        except (JobError, ReplayError) as e:
            raise UserError(str(e)) from None
        if as_json:
            emit_json(result.as_dict())
        elif result.ok:
            out.print(f"[green]ok[/]: {result.steps_checked} step(s) reproduce the logged state hashes")
        else:
            out.print(f"[bold red]mismatch[/] at step {result.first_mismatch_step} "
                      f"(after {result.steps_checked} checked step(s))")
        if not result.ok:
            raise typer.Exit(1)


def trace(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(..., help="A training run directory written by `bitswarm train`."),
    step: int = typer.Option(..., "--step", min=1, help="The step to trace (the one that produces state STEP)."),
    out_file: Path = typer.Option(None, "--out", help="Also write every op record, one JSON object per line."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Per-op trace of one training step: each op's input and output hashes and their Merkle root."""
    import json

    from bitswarm.jobs.train_job import JobError, load_run_spec, prepare
    from bitswarm.repro.backend import set_threads
    from bitswarm.verify.replay import ReplayError
    from bitswarm.verify.trace import trace_step

    with reporting(as_json):
        st = state(ctx)
        try:
            spec = load_run_spec(run_dir)
            set_threads(st.settings().threads)
            with stages(enabled=not as_json) as stage:
                stage(f"tracing step {step}")
                result = trace_step(run_dir, prepare(st.store(), spec, "numba"), step)
        except (JobError, ReplayError) as e:
            raise UserError(str(e)) from None
        records = result.pop("records")
        result.pop("captured")
        if out_file is not None:
            from bitswarm.store.atomic import atomic_write_text

            atomic_write_text(out_file, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
        if as_json:
            emit_json(result)
        else:
            out.print(f"step {step}: {result['ops']} ops, root {result['root']}; "
                      f"state {'matches' if result['matches_log'] else 'DOES NOT match'} the log")



@app.command("transcript")
def transcript_cmd(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(..., help="A finished training run directory."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Store a run's spec, checkpoints and transcript (format v1); prints its CID and Merkle root."""
    from bitswarm.verify.transcript import TranscriptError, build

    with reporting(as_json):
        if not (run_dir / "spec.json").is_file():
            raise UserError(f"{run_dir} holds no training run (spec.json is missing)")
        try:
            with stages(enabled=not as_json) as stage:
                stage("storing checkpoints and transcript")
                cid, t = build(state(ctx).store(), run_dir)
        except TranscriptError as e:
            raise UserError(str(e)) from None
        result = {"cid": cid, "root": t["root"], "steps": len(t["state_hashes"]), "checkpoints": len(t["checkpoints"])}
        if as_json:
            emit_json(result)
        else:
            out.print(f"transcript {cid}\nroot       {t['root']}\nsteps      {result['steps']}")


def _print_outcome(result: dict) -> None:
    """One line a person reads: where the two parted, who won and why."""
    unit = next(u for u in ("step", "token", "batch") if f"first_divergent_{u}" in result)
    if result["agree"]:
        out.print(f"[green]agree[/]: both commit to the same result (every {unit})")
        return
    where = result[f"first_divergent_{unit}"]
    if result["referee"] in ("op", "step"):
        out.print(f"first divergent {unit} {where}, op {result['op']} (#{result['op_index']}); winner "
                  f"[bold]{result['winner']}[/] after {result['rounds']} rounds (bound {result['round_bound']}); "
                  f"the referee recomputed the {result['referee']} in {result['referee_seconds']}s")
    else:  # the loser failed the protocol itself
        loser = "B" if result["winner"] == "A" else "A"
        why = {"deadline": "stopped answering", "proof": "gave an answer its own commitment does not prove",
               "trace length": "committed a trace of the wrong length"}.get(result["referee"], result["referee"])
        out.print(f"winner [bold]{result['winner']}[/] after {result['rounds']} rounds: {loser} {why}"
                  + (f" (at {unit} {where})" if where is not None else ""))


def _record_game(st, run_a: Path, run_b: Path):
    """A callable playing the dispute over two inference or eval records, or None for training runs."""
    from bitswarm.jobs.spec import parse_spec
    from bitswarm.jobs.train_job import prepare
    from bitswarm.models.generate import load
    from bitswarm.verify import evaluation, inference

    if (run_a / inference.FILE).exists() or (run_b / inference.FILE).exists():
        cid = inference.load(run_a)["model"]
        return lambda: inference.dispute(run_a, run_b, lambda: load(st.store(), cid)[0])
    if (run_a / evaluation.FILE).exists() or (run_b / evaluation.FILE).exists():
        spec = parse_spec(evaluation.load(run_a)["spec"])
        return lambda: evaluation.dispute(run_a, run_b, lambda: prepare(st.store(), spec, "numba"))
    return None


def dispute(
    ctx: typer.Context,
    run_a: Path = typer.Argument(..., help="Party A's run directory."),
    run_b: Path = typer.Argument(..., help="Party B's run directory (same spec)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Play the dispute game between two runs of one spec (or two inference records of one job):
    bisection over steps (tokens), then over ops, then a referee."""
    from bitswarm.jobs.train_job import JobError, load_run_spec, prepare
    from bitswarm.repro.backend import set_threads
    from bitswarm.jobs.spec import SpecError
    from bitswarm.verify.dispute import dispute as play
    from bitswarm.verify.game import GameError
    from bitswarm.verify.replay import ReplayError

    with reporting(as_json):
        st = state(ctx)
        try:
            game = _record_game(st, run_a, run_b)
        except (GameError, SpecError) as e:
            raise UserError(str(e)) from None
        if game is not None:  # two inference or eval records: the same game over their leaves
            try:
                with stages(enabled=not as_json) as stage:
                    stage("playing the dispute game")
                    result = game()
            except (GameError, JobError) as e:
                raise UserError(str(e)) from None
            if as_json:
                emit_json(result)
            else:
                _print_outcome(result)
            return
        try:
            spec_a, spec_b = load_run_spec(run_a), load_run_spec(run_b)
            if spec_a != spec_b:
                raise UserError("the two runs are of different specs; a dispute compares two runs of one spec")
            set_threads(st.settings().threads)
            store = st.store()
            with stages(enabled=not as_json) as stage:
                stage("playing the dispute game")
                result = play(run_a, run_b, lambda: prepare(store, spec_a, "numba"))
        except (JobError, ReplayError, GameError) as e:
            raise UserError(str(e)) from None
        if as_json:
            emit_json(result)
        else:
            _print_outcome(result)


def infer(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", help="CID of a stored model, or a label from `store ls`."),
    prompt: str = typer.Option(..., "--prompt", help="The prompt text (the model's chat template is applied)."),
    out_dir: Path = typer.Option(..., "--out", help="Directory for the inference record (inference.json)."),
    max_new_tokens: int = typer.Option(16, "--max-new-tokens", min=1, max=4096, help="Tokens to generate and commit, all of them (so a job's size is known before it runs); the text ends at the first end-of-turn."),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0 = greedy."),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0, help="Nucleus sampling mass, in (0, 1]."),
    seed: int = typer.Option(0, "--seed", min=0, help="Sampling seed."),
    request_id: int = typer.Option(0, "--request-id", min=0, max=2**32 - 1, help="Request id (selects the random stream)."),
    adversary: str = typer.Option(None, "--adversary", help="Cheat on purpose: bitflip@step=K[,op=I] or token@step=K (K = generated token, 1-based)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Verifiable generation: tokens plus a chained commitment per token, for `bitswarm dispute`."""
    from bitswarm.models.generate import encode_prompt, load, resolve_model
    from bitswarm.verify import inference
    from bitswarm.verify.adversary import Adversary, AdversaryError

    with reporting(as_json):
        if not 0 < top_p <= 1:
            raise UserError("--top-p must be in (0, 1]")
        try:
            adv = Adversary.parse(adversary) if adversary else None
        except AdversaryError as e:
            raise UserError(str(e)) from None
        st = state(ctx)
        model = resolve_model(st.store(), model)
        m, tok = load(st.store(), model)
        job = {"model": model, "prompt_ids": encode_prompt(tok, prompt, chat=True), "seed": seed, "request_id": request_id,
               "temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens}
        try:
            with stages(enabled=not as_json) as stage:
                stage("generating")
                res = inference.run(m, job, out_dir, adv)
        except inference.InferenceError as e:
            raise UserError(str(e)) from None
        res["text"] = inference.text_of(tok, res["tokens"])
        if as_json:
            emit_json(res)
        else:
            out.print(res["text"])
            err.print(f"[dim]root {res['root']}[/]")


def evaluate(
    ctx: typer.Context,
    spec_file: Path = typer.Option(..., "--spec", help="A training spec: its model is scored on its data."),
    out_dir: Path = typer.Option(..., "--out", help="Directory for the eval record (eval.json)."),
    batches: int = typer.Option(None, "--batches", min=1, max=100_000, help="Batches to score (default: the spec's steps)."),
    adversary: str = typer.Option(None, "--adversary", help="Cheat on purpose: bitflip@step=K[,op=I] (K = batch, 1-based)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Verifiable evaluation: the model's mean loss on the spec's data, a chained commitment per
    batch (the score inside the last one), for `bitswarm dispute`."""
    from bitswarm.jobs.datasets import DatasetError
    from bitswarm.jobs.spec import SpecError, load_spec
    from bitswarm.jobs.train_job import JobError, prepare
    from bitswarm.verify import evaluation
    from bitswarm.verify.adversary import Adversary, AdversaryError

    with reporting(as_json):
        try:
            adv = Adversary.parse(adversary) if adversary else None
            spec = load_spec(spec_file)
            n = batches or spec.steps
            with stages(enabled=not as_json) as stage:
                stage("scoring")
                res = evaluation.run(prepare(state(ctx).store(), spec), spec.model_dump(mode="json"), n, out_dir, adv)
        except (AdversaryError, SpecError, JobError, DatasetError, evaluation.EvalError) as e:
            raise UserError(str(e)) from None
        if as_json:
            emit_json(res)
        else:
            out.print(f"score {res['score']:.6f} (mean loss over {res['batches']} batches)")
            err.print(f"[dim]root {res['root']}[/]")
