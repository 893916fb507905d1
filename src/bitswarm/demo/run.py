"""`bitswarm demo`: the whole network on one machine, from an empty folder to a settled summary.

What runs, each part a real process on loopback:
  * a devnet chain (`bitswarm devnet --fast`);
  * nodes (`bitswarm node run`): a poster that also serves the dashboard, an honest solver, a
    verifier that re-executes every step, a referee, and later a solver that cheats on purpose
    (`--adversary bitflip@step=3,op=40`);
  * jobs posted on chain by the poster: train, infer and eval on a tiny model, which the honest
    solver claims (its `max_steps` keeps it off the longer job), and then a longer train job that
    only the cheat may take: the verifier challenges it, the bisection pins the one op, the referee
    rules, and the cheat's stake is slashed;
  * a swarm (`bitswarm swarm run`): peers warm-started on a counting task share rollouts for a few
    rounds, logging each round in the poster's home, where the dashboard reads the reward curves;
  * assistant episodes (`bitswarm assist simulate --share`, `assist train`, `assist simulate
    --model`): simulated humans build, share their episodes, an assistant is trained from them and
    measured on goals it never saw.
Everything the person sees comes from the chain and the nodes' own APIs and logs, not from here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bitswarm.demo.network import BIN, Chain, NetworkError, NodeProc, cli_json, env, make_node, start_chain, wait_for
from bitswarm.errors import BitswarmError
from bitswarm.ledger.client import CREDIT, JOB_STATUS

MARKER = "demo.json"  # what makes a folder a demo's, so a rerun may clear it
CHEAT = "bitflip@step=3,op=40"
BOUNTY, WINDOW = 50, 12  # credits; seconds of challenge window
HONEST_MAX_STEPS = 12  # the honest solver takes jobs up to this many leaves (the eval job has 12); the cheat's has more
CHEAT_STEPS = 16
TIMEOUT = 600  # seconds for the whole run before it gives up


class DemoError(BitswarmError):
    """The demo could not finish: says which part failed and where its log is."""


@dataclass
class Track:
    """One line of the live display: a part of the network and where it stands."""
    label: str
    state: str = "waiting"  # waiting, running, done, failed
    detail: str = ""


@dataclass
class Demo:
    root: Path
    on_update: Callable[["Demo"], None] | None = None
    swarm_rounds: int = 8
    assist_episodes: int = 120
    assist_steps: int = 600
    started: float = field(default_factory=time.monotonic)
    tracks: dict[str, Track] = field(default_factory=dict)
    feed: list[str] = field(default_factory=list)  # the story so far, one line per thing that happened
    chain: Chain | None = None
    nodes: dict[str, NodeProc] = field(default_factory=dict)
    jobs: dict[str, int] = field(default_factory=dict)  # name -> job id on chain
    _procs: list[subprocess.Popen] = field(default_factory=list)
    _assist: dict = field(default_factory=dict)
    _swarm: dict = field(default_factory=dict)
    _told: set = field(default_factory=set)
    _boot: list = field(default_factory=list)
    _cheat_staked: int = 0

    def __post_init__(self) -> None:
        for key, label in [("chain", "chain"), ("nodes", "nodes"), ("train", "train job"), ("infer", "infer job"),
                           ("eval", "eval job"), ("cheat", "cheating solver"), ("swarm", "swarm"),
                           ("assist", "assistant")]:
            self.tracks[key] = Track(label)

    # -- what the display reads ----------------------------------------------------------------

    def say(self, line: str) -> None:
        self.feed.append(f"{time.monotonic() - self.started:6.1f}s  {line}")
        self._changed()

    def set(self, key: str, state: str, detail: str = "") -> None:
        t = self.tracks[key]
        if (t.state, t.detail) != (state, detail):
            t.state, t.detail = state, detail
            self._changed()

    def _changed(self) -> None:
        if self.on_update is not None:
            self.on_update(self)

    @property
    def dashboard_url(self) -> str | None:
        poster = self.nodes.get("poster")
        try:
            return poster.info()["api_url"] + "/" if poster else None
        except (OSError, ValueError, KeyError):
            return None

    # -- the run --------------------------------------------------------------------------------

    def run(self) -> dict:
        """Start everything, play every part to its end and return the summary (processes keep
        running until close())."""
        self._prepare()
        self.set("chain", "running", "starting the devnet")
        self.chain = start_chain(self.root / "chain")
        self.set("chain", "done", self.chain.url)
        self.say(f"devnet up at {self.chain.url}")
        self._start_nodes()
        model = self._tiny_model()
        self._start_swarm(model)
        self._start_assist()
        before = self._balances()
        for name, kind in [("train", "train"), ("infer", "infer"), ("eval", "eval")]:
            self.jobs[name] = self._submit(f"{name}.yaml", kind)
            self.set(name, "running", f"job {self.jobs[name]} posted")
            self.say(f"poster posted {'an' if kind[0] in 'aeiou' else 'a'} {kind} job (#{self.jobs[name]}), bounty {BOUNTY} credits")
        wait_for("the solver to claim the honest jobs", lambda: all(
            self._status(self.jobs[n]) not in ("open",) for n in ("train", "infer", "eval")),
            timeout=180, every=0.5, tick=self._poll)
        self._start_cheat()
        self.jobs["cheat"] = self._submit("cheat.yaml", "train")
        self.set("cheat", "running", f"job {self.jobs['cheat']} posted ({CHEAT_STEPS} steps)")
        self.say(f"poster posted a {CHEAT_STEPS}-step train job (#{self.jobs['cheat']}) that only the cheat may take")
        wait_for("every part to finish", self._finished, timeout=TIMEOUT, every=0.5, tick=self._poll)
        return self._summary(before)

    def close(self) -> None:
        """Stop every process this demo started, newest first, the chain last."""
        for p in self._procs:
            if p.poll() is None:
                p.terminate()
        for p in self._procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        for node in reversed(list(self.nodes.values())):
            try:
                node.stop()
            except NetworkError:
                pass
        if self.chain is not None:
            self.chain.stop()

    # -- parts ----------------------------------------------------------------------------------

    def _prepare(self) -> None:
        if self.root.exists() and any(self.root.iterdir()):
            if not (self.root / MARKER).exists():
                raise DemoError(f"{self.root} holds files that are not a demo's; choose an empty folder with --dir")
            shutil.rmtree(self.root)  # a previous demo: the demo always starts from nothing
        self.root.mkdir(parents=True)
        (self.root / MARKER).write_text(json.dumps({"started": time.time()}))

    def _start_nodes(self) -> None:
        self.set("nodes", "running", "creating identities, funding and staking")
        poster = self.nodes["poster"] = make_node(self.root, "poster", self.chain, "")
        poster.start()
        boot = ["--bootstrap", poster.bootstrap_addr()]
        self.say(f"poster node up; dashboard at {self.dashboard_url}")
        plan = [("solver", "solver", 0.25, f"max_steps = {HONEST_MAX_STEPS}\n"),
                # It re-executes every step, so it cannot miss the one the cheat faults.
                ("verifier", "verifier", 1.0, ""), ("referee", "referee", 0.25, "")]
        for name, roles, rate, config in plan:
            self.nodes[name] = make_node(self.root, name, self.chain, roles, args=boot, sample_rate=rate, config=config)
            self.nodes[name].start(wait=False)
        for name, *_ in plan:
            self.nodes[name].wait_up(tick=self._poll)
            self.say(f"{name} node up ({self.nodes[name].address[:10]}…), staked 200 credits")
        self.set("nodes", "done", "poster, solver, verifier, referee")
        self._boot = boot

    def _start_cheat(self) -> None:
        self.set("cheat", "running", "joining")
        cheat = self.nodes["cheat"] = make_node(self.root, "cheat", self.chain, "solver",
                                                args=[*self._boot, "--adversary", CHEAT])
        self._cheat_staked = cheat.ledger().node()["staked"]
        cheat.start(wait=False)
        cheat.wait_up(tick=self._poll)
        self.say(f"a cheating solver joined ({cheat.address[:10]}…): it will flip one bit at step 3, op 40")

    def _tiny_model(self) -> str:
        from bitswarm.jobs.spec import example_spec
        from bitswarm.models.importer import init_model
        from bitswarm.store import BlobStore

        poster = self.nodes["poster"]
        model = init_model(BlobStore(poster.home / "store"), "tiny", 0)
        spec = example_spec(model, steps=6).model_copy(update={"seq_len": 16, "global_batch": 2, "checkpoint_every": 2})
        (self.root / "train.yaml").write_text(spec.to_yaml())
        cheat = spec.model_copy(update={"steps": CHEAT_STEPS})
        (self.root / "cheat.yaml").write_text(cheat.to_yaml())
        (self.root / "infer.yaml").write_text(f"model: {model}\nprompt: Add two and three.\nmax_new_tokens: 6\n")
        (self.root / "eval.yaml").write_text(f"model: {model}\ntasks: tiny\nitems: 3\nmax_new_tokens: 4\nseed: 1\n")
        return model

    def _submit(self, spec: str, kind: str) -> int:
        res = cli_json(self.nodes["poster"].home, "job", "submit", str(self.root / spec), "--bounty", str(BOUNTY),
                       "--window", str(WINDOW), "--kind", kind)
        return res["job_id"]

    def _background(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "w")
        proc = subprocess.Popen([*BIN, "--home", str(self.nodes["poster"].home), *args], stdout=subprocess.PIPE,
                                stderr=log, text=True, env=env(), start_new_session=True)
        self._procs.append(proc)
        return proc

    def _start_swarm(self, model: str) -> None:
        """Warm-start the tiny model on counting (so some rollouts score), then run the swarm in the
        background: the poster's home gets its round logs."""
        def go() -> None:
            try:
                self.set("swarm", "running", "warm-starting the policy")
                warm = self._background("swarm-warm", ["swarm", "warm-start", "--model", model, "--tasks", "tiny_count",
                                                       "--steps", "25", "--json"])
                out, _ = warm.communicate()
                if warm.returncode != 0:
                    raise DemoError(f"swarm warm-start failed; see {self.root / 'swarm-warm.log'}")
                policy = json.loads(out)["cid"]
                self.set("swarm", "running", f"round 0 of {self.swarm_rounds}")
                self.say(f"swarm of 4 peers starts from a warm-started policy, {self.swarm_rounds} rounds")
                run = self._background("swarm", ["swarm", "run", "--model", policy, "--peers", "4", "--rounds",
                                                  str(self.swarm_rounds), "--tasks", "tiny_count", "--json"])
                out, _ = run.communicate()
                if run.returncode != 0:
                    raise DemoError(f"the swarm failed; see {self.root / 'swarm.log'}")
                self._swarm["summary"] = json.loads(out)
            except (DemoError, ValueError, KeyError) as e:
                self._swarm["error"] = str(e)
            finally:
                self._swarm["done"] = True

        threading.Thread(target=go, name="demo-swarm", daemon=True).start()

    def _start_assist(self) -> None:
        def step(name: str, args: list[str]) -> dict:
            proc = self._background(name, [*args, "--json"])
            out, _ = proc.communicate()
            if proc.returncode != 0:
                raise DemoError(f"`bitswarm {' '.join(args)}` failed; see {self.root / (name + '.log')}")
            return json.loads(out)

        def go() -> None:
            try:
                self.set("assist", "running", f"simulated humans build {self.assist_episodes} goals")
                played = step("assist-play", ["assist", "simulate", "--episodes", str(self.assist_episodes), "--share"])
                self._assist["episodes"] = len(played.get("shared", []))
                self.say(f"simulated humans shared {self._assist['episodes']} episodes")
                self.set("assist", "running", f"training an assistant on {self._assist['episodes']} episodes")
                trained = step("assist-train", ["assist", "train", "--steps", str(self.assist_steps)])
                self._assist["model"] = trained["model"]
                self.say(f"assistant trained on the shared episodes: {trained['model'][:19]}…")
                self.set("assist", "running", "measuring it on 30 new goals")
                self._assist["eval"] = step("assist-eval", ["assist", "simulate", "--episodes", "30", "--seed", "1000",
                                                            "--model", trained["model"]])
            except (DemoError, ValueError, KeyError) as e:
                self._assist["error"] = str(e)
            finally:
                self._assist["done"] = True

        threading.Thread(target=go, name="demo-assist", daemon=True).start()

    # -- watching -------------------------------------------------------------------------------

    def _status(self, job_id: int) -> str:
        return JOB_STATUS[self.nodes["poster"].ledger().job(job_id)["status"]]

    def _poll(self) -> None:
        """Bring the tracks up to date from the chain, the poster's API and the background parts."""
        for name, job_id in list(self.jobs.items()):
            try:
                status = self._status(job_id)
            except (OSError, ValueError, KeyError):
                continue
            if name == "cheat":
                self._poll_cheat(job_id, status)
            elif status == "done":
                self._once(name, f"job #{job_id} ({name}) verified and settled: the solver was paid {BOUNTY} credits")
                self.set(name, "done", f"job {job_id} settled, solver paid")
            elif status == "failed":
                self.set(name, "failed", f"job {job_id} failed")
            else:
                self.set(name, "running", f"job {job_id}: {status}")
        self._poll_background()

    def _poll_cheat(self, job_id: int, status: str) -> None:
        rounds = self._dispute_rounds(job_id)
        if status == "disputed":
            self._once("challenged", f"the verifier re-executed job #{job_id}, got other bits, and challenged it")
            self.set("cheat", "running", f"job {job_id} challenged: bisection round {rounds}")
        elif status == "failed":
            self._once("slashed", f"dispute settled after {rounds} bisection rounds: the cheat lost and was slashed")
            self.set("cheat", "done", f"job {job_id}: cheat lost after {rounds} rounds, slashed")
        elif status == "done":
            self.set("cheat", "failed", f"job {job_id} settled: the cheat was NOT caught")
        else:
            self.set("cheat", "running", f"job {job_id}: {status}")

    def _once(self, key: str, line: str) -> None:
        if key not in self._told:
            self._told.add(key)
            self.say(line)

    def _dispute_rounds(self, job_id: int) -> int:
        try:
            events = self.nodes["poster"].api(f"/events?limit=500&job_id={job_id}")
        except (OSError, ValueError, KeyError):
            return 0
        return sum(1 for e in events if e["name"] == "DisputeQuery")

    def _poll_background(self) -> None:
        if self._swarm.get("done"):
            if "error" in self._swarm:
                self.set("swarm", "failed", self._swarm["error"])
            else:
                s = self._swarm["summary"]
                first, last = _round_means(s)
                self._once("swarm", f"swarm finished {self.swarm_rounds} rounds: mean reward {first:.2f} → {last:.2f}")
                self.set("swarm", "done", f"{self.swarm_rounds} rounds, mean reward {first:.2f} → {last:.2f}")
        elif self.tracks["swarm"].state == "running":
            done = _swarm_rounds_logged(self.nodes["poster"].home)
            if done:
                self.set("swarm", "running", f"round {done} of {self.swarm_rounds}")
        if self._assist.get("done"):
            if "error" in self._assist:
                self.set("assist", "failed", self._assist["error"])
            else:
                ev = self._assist["eval"]
                alone, helped = ev["human_actions_alone"], ev["human_actions_with_assistant"]
                self._once("assist", f"with the assistant, humans needed {helped:.1f} actions per goal instead of {alone:.1f}")
                self.set("assist", "done", f"human actions {alone:.1f} → {helped:.1f} per goal")

    def _finished(self) -> bool:
        return all(t.state in ("done", "failed") for t in self.tracks.values())

    # -- the end --------------------------------------------------------------------------------

    def _balances(self) -> dict[str, int]:
        out = {}
        for name, node in self.nodes.items():
            out[name] = node.ledger().token_balance()
        return out

    def _summary(self, before: dict[str, int]) -> dict:
        poster = self.nodes["poster"]
        lg = poster.ledger()
        jobs = []
        for name, job_id in self.jobs.items():
            job = lg.job(job_id)
            jobs.append({"job": job_id, "name": name, "status": JOB_STATUS[job["status"]], "solver": job["solver"],
                         "bounty": BOUNTY})
        after = self._balances()
        payouts = {name: (after[name] - before.get(name, after[name])) / CREDIT for name in after}
        cheat_id = self.jobs["cheat"]
        dispute = lg.dispute(cheat_id)
        cheat = self.nodes["cheat"]
        lost = self._cheat_staked - cheat.ledger().node()["staked"]  # measured on chain, not assumed
        slashed = (self._status(cheat_id) == "failed" and lost > 0
                   and dispute["winner"].lower() == self.nodes["verifier"].address.lower())
        swarm = self._swarm.get("summary") or {}
        first, last = _round_means(swarm) if swarm else (0.0, 0.0)
        ev = self._assist.get("eval") or {}
        return {
            "job_settled": all(j["status"] == "done" for j in jobs if j["name"] != "cheat"),
            "cheater_slashed": slashed,
            "dispute_rounds": self._dispute_rounds(cheat_id),
            "swarm_rounds": min((len(p["rewards"]) for p in swarm.get("peers", [])), default=0),
            "assist_episodes": self._assist.get("episodes", 0),
            "seconds": round(time.monotonic() - self.started, 1),
            "jobs": jobs,
            "payouts": payouts,
            "slashed_credits": lost / CREDIT,
            "cheat_address": cheat.address,
            "swarm_reward": {"first_round": first, "last_round": last},
            "assist": {"human_actions_alone": ev.get("human_actions_alone"),
                       "human_actions_with_assistant": ev.get("human_actions_with_assistant"),
                       "assistant_share_of_goal_blocks": ev.get("assistant_share_of_goal_blocks"),
                       "model": self._assist.get("model")},
            "dashboard_url": self.dashboard_url,
            "failures": {k: t.detail for k, t in self.tracks.items() if t.state == "failed"},
        }


def _round_means(summary: dict) -> tuple[float, float]:
    rewards = [p["rewards"] for p in summary.get("peers", []) if p.get("rewards")]
    if not rewards:
        return 0.0, 0.0
    return (sum(r[0] for r in rewards) / len(rewards), sum(r[-1] for r in rewards) / len(rewards))


def _swarm_rounds_logged(home: Path) -> int:
    from bitswarm.store.jsonl import read_lines
    from bitswarm.home import SWARM_REPORTS_LOG

    rounds = [r.get("round", -1) for f in (home / "swarm").glob(f"run-*/*/{SWARM_REPORTS_LOG}") for r in read_lines(f)]
    return max(rounds, default=-1) + 1
