"""`bitswarm spec` and `bitswarm train`: write a training spec, run it bit-exactly."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bitswarm.cli.output import JSON_HELP, UserError, emit_json, err, out, reporting
from bitswarm.cli.state import state

spec_app = typer.Typer(help="Write example job specs.", no_args_is_help=True)
example_app = typer.Typer(help="Print an example spec.", no_args_is_help=True)
spec_app.add_typer(example_app, name="example")

# Random models from `model init` are a few MB; an imported one (SmolLM2: 540 MB) is pretrained.
PRETRAINED_BYTES = 50 * 10**6


@example_app.command("train")
def example_train(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", help="CID of the base model (a model over 50 MB in the store is taken to be pretrained and gets a fine-tuning learning rate)."),
    steps: int = typer.Option(20, "--steps", min=1, help="Optimizer steps."),
    out_file: Path = typer.Option(None, "--out", help="Also write the spec as YAML to this file."),
    as_json: bool = typer.Option(False, "--json", help="Print the spec as one JSON object (itself a valid spec)."),
):
    """A valid training spec on the built-in synthetic arithmetic data."""
    from bitswarm.jobs.spec import SpecError, example_spec

    with reporting(as_json):
        try:
            store = state(ctx).store()
            pretrained = store.has(model) and store.size(model) > PRETRAINED_BYTES
            spec = example_spec(model, steps, pretrained=pretrained)
        except SpecError as e:
            raise UserError(str(e)) from None
        if out_file is not None:
            from bitswarm.store.atomic import atomic_write_text

            atomic_write_text(out_file, spec.to_yaml())
        if as_json:
            emit_json(spec.model_dump(mode="json"))
        else:
            out.print(spec.to_yaml(), end="", highlight=False)
            if out_file is not None:
                err.print(f"[dim]written to {out_file}[/]")


def train(
    ctx: typer.Context,
    spec_file: Path = typer.Option(..., "--spec", help="Training spec (YAML or JSON)."),
    backend: str = typer.Option("repro", "--backend", help="repro (bit-exact numba kernels), reference (the numpy spec; slow), triton (the same bits; on a GPU, or interpreted on the CPU), cuda (triton on a GPU only) or native (plain torch; not verifiable)."),
    out_dir: Path = typer.Option(..., "--out", help="Run directory: checkpoints, steps.jsonl, result.json."),
    threads: int = typer.Option(None, "--threads", min=1, help="Compute threads (never changes repro results)."),
    micro_batch: int = typer.Option(None, "--micro-batch", min=1, help="Sequences per forward/backward pass; must divide the global batch (never changes repro results)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    checkpoint_budget_gb: float = typer.Option(2.0, "--checkpoint-budget-gb", min=0.0, help="Disk the run's checkpoints may take: older ones are deleted beyond it (the newest always stays; replays and disputes re-execute from an earlier one). 0 keeps only the newest; a large value keeps all."),
    adversary: str = typer.Option(None, "--adversary", help="Cheat on purpose, to test verification: NAME[@step=K[,op=I]] with NAME one of bitflip, data, skip, lr, lazy, tracelie (faults), inconsistent, silent, short, long, wrongindex (how it answers a dispute)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Train a model as a spec says; prints the final state hash and the Merkle root of all step hashes."""
    from bitswarm.jobs.datasets import DatasetError
    from bitswarm.jobs.spec import SpecError, load_spec
    from bitswarm.jobs.train_job import JobError, run_training
    from bitswarm.repro.backend import BackendError
    from bitswarm.repro.config import ModelConfigError
    from bitswarm.repro.train import TrainError
    from bitswarm.verify.adversary import AdversaryError

    from bitswarm.models.generate import BACKENDS

    with reporting(as_json):
        if backend not in BACKENDS:
            raise UserError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        st = state(ctx)
        if threads is None:
            threads = st.settings().threads
        try:
            spec = load_spec(spec_file)
            progress = None
            if not as_json:
                progress = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(),
                                    TimeRemainingColumn(), console=err, transient=True)
                progress.start()
                task = progress.add_task("train", total=spec.steps, loss="…")

            def on_step(row):
                if progress is not None:
                    progress.update(task, completed=row["step"], loss=f"{row['loss']:.4f}")

            try:
                result = run_training(st.store(), spec, out_dir, BACKENDS[backend], threads, micro_batch, resume, on_step,
                                      adversary=adversary, checkpoint_budget=round(checkpoint_budget_gb * 10**9))
            finally:
                if progress is not None:
                    progress.stop()
        except (SpecError, JobError, DatasetError, BackendError, ModelConfigError, TrainError, AdversaryError) as e:
            raise UserError(str(e)) from None
        result = {**result, "backend": backend}  # the flag's name; result["kernels"] names the kernels
        if as_json:
            emit_json(result)
        else:
            out.print(f"final state hash  {result['final_state_hash']}\nsteps             {result['steps']}\n"
                      f"step hashes root  {result['step_hashes_root']}")


def from_run(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(..., help="A finished `bitswarm train` run directory."),
    label: str = typer.Option(None, "--label", help="Label of the new model (default: trained-<state hash prefix>)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Make a finished run's trained weights a model you can `generate` from (its CID is printed)."""
    from bitswarm.jobs.train_job import JobError, model_from_run
    from bitswarm.repro.train import TrainError

    with reporting(as_json):
        try:
            made = model_from_run(state(ctx).store(), run_dir, label)
        except (JobError, TrainError) as e:
            raise UserError(str(e)) from None
        if as_json:
            emit_json(made)
        else:
            out.print(made["model"], highlight=False, soft_wrap=True)
            err.print(f"[dim]the weights of step {made['steps']} of {run_dir} on {made['base_model'][:19]}…; "
                      f"try `bitswarm generate --model {made['model']} --prompt ...`[/]")
