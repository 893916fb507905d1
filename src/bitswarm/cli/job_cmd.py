"""`bitswarm job`: submit a job to the market, follow it, fetch its verified result.

Every command talks to this data directory's running node (`bitswarm node run`) through its HTTP
API: the node holds the key, posts the job, serves its inputs to solvers and fetches results
from peers. The job document goes into the local store first, so the node can serve it.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import typer

from bitswarm.cli.ledger_cmd import credits_to_units, node_api_url
from bitswarm.cli.output import JSON_HELP, UserError, emit_json, err, out, reporting
from bitswarm.cli.state import State, state
from bitswarm.ledger.units import format_units

AMOUNT_KEYS = ("bounty", "solver_paid", "fee_refund", "amount")  # token units in payout events

app = typer.Typer(help="Jobs on the market: submit one, follow it, fetch its verified result.", no_args_is_help=True)


def api(st: State, method: str, path: str, body: dict | None = None, timeout: float = 150) -> dict:
    """One request to the local node's API (with its token); errors become one clear line."""
    url = node_api_url(st) + path
    headers = {"Content-Type": "application/json"}
    if method != "GET":
        try:
            headers["Authorization"] = "Bearer " + st.paths.api_token_file.read_text().strip()
        except OSError:
            raise UserError(f"no API token at {st.paths.api_token_file}: is `bitswarm node run` running with "
                            "this data directory?") from None
    req = urllib.request.Request(url, method=method, headers=headers,
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            msg = json.loads(e.read()).get("error") or e.reason
        except ValueError:
            msg = e.reason
        raise UserError(f"the node refused {method} {path}: {msg}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        raise UserError(f"no node answers at {node_api_url(st)} ({getattr(e, 'reason', e)}); start one with "
                        "`bitswarm node run`") from None


def _wait_request(st: State, created: dict, what: str, timeout: float) -> dict:
    """Follow a queued API request until the node finishes it."""
    deadline = time.monotonic() + timeout
    r = created
    while r.get("state") == "pending":
        if time.monotonic() > deadline:
            raise UserError(f"the node has not finished {what} after {timeout:.0f} s (request {r['request_id']}); "
                            "it is still queued")
        time.sleep(0.5)
        got = api(st, "GET", f"/requests/{r['request_id']}")
        r = {**got, "request_id": r["request_id"]}
    if r.get("state") == "failed":
        raise UserError(f"{what} failed: {(r.get('result') or {}).get('error', 'no reason given')}")
    return r.get("result") or {}


@app.command()
def submit(
    ctx: typer.Context,
    spec_file: Path = typer.Argument(..., help="The job's spec (YAML or JSON; `bitswarm spec init` writes a training spec)."),
    bounty: str = typer.Option(..., "--bounty", help="Credits paid to the solver once the result is final."),
    kind: str = typer.Option("train", "--kind", help="train (a training spec), infer (model, prompt, max_new_tokens, "
                             "temperature, top_p, seed) or eval (model, tasks, items, seed, max_new_tokens, ...)."),
    stake: str = typer.Option(None, "--stake", help="Credits the solver must lock (default: the market's minimum).",
                              show_default=False),
    window: int = typer.Option(600, "--window", min=1, max=30 * 86400, help="Challenge window in seconds."),
    verify_fee: str = typer.Option("0", "--verify-fee", help="Credits of the bounty reserved for verifiers who "
                                   "attest to re-executing the result."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Store the spec and its inputs, announce them to peers, post the job; prints its id."""
    from bitswarm.jobs import market
    from bitswarm.jobs.spec import load_spec

    with reporting(as_json):
        st = state(ctx)
        store = st.store()
        if kind == "train":
            spec = load_spec(spec_file).model_dump(mode="json")
        else:
            spec = _read_spec(spec_file)
        doc = market.make_doc(store, kind, spec)
        cid = market.store_doc(store, doc)
        body = {"spec_cid": cid, "kind": kind, "bounty": credits_to_units(bounty, "--bounty"),
                "stake": credits_to_units(stake, "--stake") if stake is not None else 0, "window": window,
                "verify_fee": credits_to_units(verify_fee, "--verify-fee")}
        created = api(st, "POST", "/jobs?wait=120", body)
        result = _wait_request(st, created, "posting the job", 120)
        res = {"job_id": result["job_id"], "spec_cid": cid, **{k: v for k, v in result.items() if k != "job_id"}}
        if as_json:
            emit_json(res)
        else:
            out.print(f"job {res['job_id']} posted: {kind}, {format_units(body['bounty'])} credits")
            err.print(f"[dim]spec {cid}; follow it with `bitswarm job status {res['job_id']}`[/]")


def _read_spec(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"no spec file at {path}") from None
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"{path} is not a readable YAML or JSON spec: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of fields (see `bitswarm job submit --help`)")
    return data


def _status(st: State, job_id: int) -> dict:
    job = api(st, "GET", f"/jobs/{job_id}")
    dispute = api(st, "GET", f"/jobs/{job_id}/dispute")
    return {"job": job, "dispute": dispute}


@app.command()
def status(ctx: typer.Context, job_id: int = typer.Argument(..., min=1), as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """State, solver, result CID and root, dispute progress and payouts of one job."""
    with reporting(as_json):
        st = state(ctx)
        got = _status(st, job_id)
        job = got["job"].get("job", got["job"])
        events = got["job"].get("events", [])
        pays = [{"event": e["name"], **e["args"]} for e in events
                if e["name"] in ("JobFinalized", "DisputeSettled", "VerifierPaid", "JobCancelled")]
        res = {"job_id": job_id, "status": job.get("status"), "kind": job.get("kind"), "solver": job.get("solver"),
               "result_cid": job.get("result_cid"), "result_root": job.get("result_root"),
               "challenger": job.get("challenger"), "winner": job.get("winner"), "local": job.get("local"),
               "dispute": got["dispute"].get("path", got["dispute"]), "payouts": pays}
        if as_json:
            emit_json(res)
            return
        out.print(f"job {job_id}: {res['status']} ({res['kind']})")
        for k in ("solver", "result_cid", "result_root", "challenger", "winner", "local"):
            if res[k]:
                out.print(f"  {k:<12} {res[k]}")
        for p in pays:
            shown = {k: f"{format_units(v)} credits" if k in AMOUNT_KEYS else v for k, v in p.items()}
            out.print(f"  {p['event']}: " + ", ".join(f"{k}={v}" for k, v in shown.items() if k not in ("event", "job_id")))


@app.command("list")
def list_jobs(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """Every job this node has seen, newest first."""
    with reporting(as_json):
        got = api(state(ctx), "GET", "/jobs")
        rows = got.get("jobs", got) if isinstance(got, dict) else got
        if as_json:
            emit_json({"jobs": rows})
            return
        for j in rows:
            out.print(f"{j['job_id']:>5}  {j.get('kind') or '?':<6} {j.get('status') or '?':<10} "
                      f"{j.get('role') or '-':<9} {j.get('local') or ''}")


@app.command()
def result(
    ctx: typer.Context,
    job_id: int = typer.Argument(..., min=1),
    out_dir: Path = typer.Option(..., "--out", help="Directory for the result: a train job's transcript.json and "
                                 "trained state (final/), an infer job's inference.json, an eval job's task_eval.json."),
    unverified: bool = typer.Option(False, "--unverified", help="Fetch it even before the job is final."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Fetch a job's result from peers (hash-checked) into a directory."""
    from bitswarm.verify import transcript as transcripts

    with reporting(as_json):
        st = state(ctx)
        job = _status(st, job_id)["job"]
        job = job.get("job", job)
        if not job.get("result_cid"):
            raise UserError(f"job {job_id} has no result yet (it is {job.get('status')})")
        if job.get("status") != "done" and not unverified:
            raise UserError(f"job {job_id} is {job.get('status')}, not final; wait for it, or pass --unverified")
        cid = job["result_cid"]
        _wait_request(st, api(st, "POST", f"/blobs/{cid}/fetch?wait=120", {}), f"fetching {cid}", 600)
        store = st.store()
        out_dir = out_dir.expanduser().absolute()
        out_dir.mkdir(parents=True, exist_ok=True)
        res = {"job_id": job_id, "kind": job.get("kind"), "result_cid": cid, "out": str(out_dir),
               "status": job.get("status")}
        if job.get("kind") == "train":
            t = transcripts.load(store, cid)
            final = str(max(int(s) for s in t["checkpoints"]))
            ck = t["checkpoints"][final]
            _wait_request(st, api(st, "POST", f"/blobs/{ck}/fetch?wait=120", {}), f"fetching {ck}", 1200)
            (out_dir / "transcript.json").write_bytes(store.read_bytes(cid))
            target = out_dir / "final"
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(store.checkout(ck), target)
            res.update(final_step=int(final), final_state_hash=t["state_hashes"][-1], checkpoint_cid=ck)
            line = f"job {job_id}: trained state after step {final} in {target}"
        else:  # the record under the name `bitswarm dispute` reads it by
            name = {"infer": "inference.json", "eval": "task_eval.json"}[job["kind"]]
            (out_dir / name).write_bytes(store.read_bytes(cid))
            res["record"] = str(out_dir / name)
            line = f"job {job_id}: {job['kind']} record in {out_dir / name}"
        if as_json:
            emit_json(res)
        else:
            out.print(line)
