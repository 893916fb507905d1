"""`bitswarm generate`: answer a prompt with a stored model."""

from __future__ import annotations

import typer

from bitswarm.cli.output import JSON_HELP, emit_json, err, out, reporting
from bitswarm.cli.state import state


def generate(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", help="CID of a stored model, or a label from `store ls`."),
    prompt: str = typer.Option(..., "--prompt", help="The prompt text."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1, max=4096, help="Most tokens to generate."),
    raw: bool = typer.Option(False, "--raw", help="Feed the prompt as is, without the model's chat template."),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0 = greedy; otherwise sample with top-p."),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0, help="Nucleus sampling mass, in (0, 1]."),
    seed: int = typer.Option(0, "--seed", min=0, help="Sampling seed: (seed, request id, token index) fix every token."),
    backend: str = typer.Option("repro", "--backend", help="repro (bit-exact numba kernels), reference (numpy spec; slow), triton (the same bits; a GPU, or interpreted), cuda (triton on a GPU) or native (torch; not bit-exact)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Generate a completion for a prompt: the same tokens on every device for the same seed."""
    with reporting(as_json):
        st = state(ctx)
        settings = st.settings()
        store = st.store()
        from bitswarm.models.generate import generate as run
        from bitswarm.models.generate import resolve_model

        cid = resolve_model(store, model)
        from bitswarm.repro.backend import set_threads

        set_threads(settings.threads)

        streaming = not as_json
        if streaming:
            err.print(f"[dim]loading {cid[:19]}…[/]")

        def show(piece: str) -> None:
            if streaming:
                out.print(piece, end="", highlight=False, markup=False)

        result = run(store, cid, prompt, max_new_tokens, chat=not raw, on_token=show, temperature=temperature,
                     top_p=top_p, seed=seed, backend=backend)
        if as_json:
            emit_json(result.as_dict())
        else:
            out.print()
            err.print(
                f"[dim]{result.new_tokens} tokens in {result.seconds:.1f}s "
                f"({result.as_dict()['tokens_per_second']} tokens/s)[/]"
            )
