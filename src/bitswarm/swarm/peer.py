"""One swarm peer and its SAPO round.

Per round: sample tasks, generate a group of completions per task with repro's seeded
sampling (so any rollout is reproducible from its seed), score them with the task's own
verifier, publish them signed, sample a few of the publishers that have published so far (no
barrier; SAMPLE_FANOUT * J of them, see _sample), fetch and verify only theirs, re-score every
external completion locally (a claimed reward is never trusted), keep I local and J external
groups whose advantages are not all zero (at most one per publisher until each has had a turn), run a GRPO update (a verifiable
training run), and record (round, rollout-batch CID, reward, step-hash root) with the
coordinator. The batch (claims.encode_batch: the I local groups) is stored, so whoever holds it
re-scores the claimed reward exactly.

The peer's state (round reached, current policy CID, per-round history) is written atomically
after each round, so a restarted peer resumes from its last completed round.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bitswarm.home import SWARM_REPORTS_LOG
from bitswarm.store import BlobStore
from bitswarm.store.atomic import atomic_write_text
from bitswarm.store.jsonl import append_line
from bitswarm.swarm import claims, grpo
from bitswarm.swarm.adversary import SwarmAdversary
from bitswarm.swarm.coordinator import Coordinator
from bitswarm.swarm.records import RecordFilter, Rollout, RolloutRecord, encode_signed, public_key_hex
from bitswarm.jobs.tasks import TaskMix, TaskRef, score
from bitswarm.swarm.transport import Transport

log = logging.getLogger(__name__)
STATE_FILE = "peer.json"
REPORTED = ("peer", "round", "reward", "local_groups", "external_groups", "external_available", "rollouts_shared",
            "updated", "seconds")
ROLLOUTS_PER_RECORD = 16
# Publishers fetched per round: SAMPLE_FANOUT * J. A fixed number, so a round's gather costs the
# same in a swarm of 5 or of 5,000; twice J so that J informative groups are usually among them
# even when only some publishers' groups carry signal (each publisher offers I groups).
SAMPLE_FANOUT = 2
SAMPLE_DOMAIN = b"bitswarm/swarm-sample/v1\x00"


@dataclass(frozen=True)
class PeerSettings:
    local: int = 4            # I: local rollout groups (tasks) per round
    external: int = 4         # J: external groups taken from the swarm per round
    group_size: int = 4       # completions per task (GRPO's group)
    max_new_tokens: int = 24
    temperature: float = 1.0
    top_p: float = 1.0
    lr: float = 1e-3
    micro_batch: int = 8
    task_seed: int = 0        # reasoning-gym dataset seed shared by the swarm
    backend: str = "repro"    # "repro" (bit-exact kernels) or "native" (torch)
    chat: bool = True         # wrap prompts in the model's chat template when it has one


def _seed_of(*parts) -> int:
    return int.from_bytes(hashlib.sha256(json.dumps(parts).encode()).digest()[:8], "little")


@dataclass
class Group:
    """One task with its completions, rewards (re-scored locally) and advantages."""

    ref: TaskRef
    completions: list[str]
    rewards: list[float]
    source: str  # "local" or the publishing peer's key
    advantages: list[float] = field(default_factory=list)
    # A local group's exact tokens: the rendered prompt's ids and each completion's sampled ids,
    # end of turn included. External groups arrive as text only (None here).
    prompt_ids: list[int] | None = None
    completion_ids: list[list[int]] | None = None

    def __post_init__(self):
        self.advantages = grpo.group_advantages(self.rewards)

    @property
    def informative(self) -> bool:
        return any(a != 0.0 for a in self.advantages)


class SwarmPeer:
    def __init__(
        self,
        name: str,
        store: BlobStore,
        workdir: Path,
        model: str,
        transport: Transport,
        mix: TaskMix,
        key: Ed25519PrivateKey,
        settings: PeerSettings = PeerSettings(),
        coordinator: Coordinator | None = None,
        record_filter: RecordFilter | None = None,
        adversary: SwarmAdversary | None = None,
    ):
        self.name, self.store, self.workdir = name, store, Path(workdir)
        self.transport, self.mix, self.key, self.settings = transport, mix, key, settings
        self.coordinator = coordinator
        self.adversary = adversary
        # An honest peer publishes I groups of group_size per round: nothing more from one key is used.
        self.filter = record_filter or RecordFilter(
            max_group_size=settings.group_size, max_groups_per_peer_round=settings.local)
        self.public_key = public_key_hex(key)
        self.claims_overruled = 0  # external rollouts whose claimed reward our own scoring refuted
        self.fetched = 0  # publisher slots fetched, over all rounds (what gathering has cost)
        self._fetched: dict[tuple[str, int], int] = {}  # (publisher, round) slots fetched -> in round
        self.workdir.mkdir(parents=True, exist_ok=True)
        saved = self._load_state()
        self.model = saved.get("model", model)
        # The AdamW state that goes with self.model (None until the first update): saved with it,
        # so a restarted peer's optimizer continues rather than starting from zero moments.
        self.optimizer_state: str | None = saved.get("optimizer_state")
        self.next_round = saved.get("next_round", 0)
        # Record numbers never repeat, across restarts too: peers treat a reused one as a replay.
        self.seq = saved.get("seq", 0)
        self.history: list[dict] = saved.get("history", [])
        self.rollouts_shared = saved.get("rollouts_shared", 0)
        self.rollouts_used_external = saved.get("rollouts_used_external", 0)

    # -- persistence ----------------------------------------------------------------------------

    def _load_state(self) -> dict:
        path = self.workdir / STATE_FILE
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise RuntimeError(f"peer state {path} is unreadable ({exc}); move it away to start this peer afresh") from None

    def _save_state(self) -> None:
        atomic_write_text(self.workdir / STATE_FILE, json.dumps({
            "model": self.model, "optimizer_state": self.optimizer_state, "next_round": self.next_round,
            "seq": self.seq, "history": self.history,
            "rollouts_shared": self.rollouts_shared, "rollouts_used_external": self.rollouts_used_external,
        }, indent=1))

    # -- the round ------------------------------------------------------------------------------

    def _render(self, tok, ref: TaskRef) -> str:
        """The prompt exactly as the policy sees it (chat template applied), as text: training
        re-tokenizes this text, so it must be the same context generation used."""
        from bitswarm.models.generate import render_prompt

        return render_prompt(tok, self.mix.prompt(ref), self.settings.chat)

    def _generate(self, refs: list[TaskRef], round_: int, model, tok) -> list[Group]:
        from bitswarm.repro import generate as rgen

        s = self.settings
        eos = [t for t in (tok.eos_token_id,) if t is not None]
        groups = []
        for i, ref in enumerate(refs):
            ids = tok(self._render(tok, ref), add_special_tokens=False)["input_ids"]
            rids = [i * s.group_size + g for g in range(s.group_size)]
            outs = rgen.generate(
                model, [ids] * s.group_size, s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
                seed=_seed_of("rollout", self.public_key, round_) % 2**63, request_ids=rids, eos_ids=eos,
            )
            texts = [tok.decode(o, skip_special_tokens=True) for o in outs]
            groups.append(Group(ref, texts, [score(ref, t, self.mix) for t in texts], "local",
                                prompt_ids=list(ids), completion_ids=[list(o) for o in outs]))
        return groups

    def _publish(self, round_: int, groups: list[Group]) -> int:
        rollouts = [
            Rollout(dataset=g.ref.dataset, seed=g.ref.seed, index=g.ref.index, completion=c[:4096],
                    claimed_reward=float(r), group=gi)
            for gi, g in enumerate(groups) for c, r in zip(g.completions, g.rewards)
        ]
        if self.adversary is not None:
            rollouts = self.adversary.published(rollouts)
        for start in range(0, len(rollouts), ROLLOUTS_PER_RECORD):
            rec = RolloutRecord(round=round_, peer=self.public_key, seq=self.seq,
                                rollouts=rollouts[start:start + ROLLOUTS_PER_RECORD])
            self.seq += 1
            try:
                self.transport.publish(round_, encode_signed(rec, self.key))
            except ValueError as exc:  # an over-long record: share less rather than stop the round
                log.warning("%s: not publishing part of round %d: %s", self.name, round_, exc)
        self._save_state()  # the seqs just used are spent, even if this round never finishes
        return len(rollouts)

    def _sample_key(self, round_: int) -> bytes:
        """This peer's secret for ranking publishers in `round_`: a deterministic signature, so
        the same key and round rank the same way on a replay, but nobody else can compute it,
        so no publisher can grind a key that ranks first for a chosen peer and round."""
        return hashlib.sha256(self.key.sign(SAMPLE_DOMAIN + round_.to_bytes(8, "big"))).digest()

    def _sample(self, round_: int) -> list[tuple[str, int]]:
        """The (publisher, round) slots to fetch this round, best-ranked first.

        Candidates are the publishers listed for this round or the one before (no barrier:
        peers that ran after us last round published there), each once at its newest round we
        have not fetched, never ourselves. One entry per key, ranked by a hash of our secret
        and the key alone: what a publisher put up (how much, how good) cannot move it up, so
        a key is fetched with the same chance as any other. The first SAMPLE_FANOUT * J are taken.
        """
        if self.settings.external <= 0:
            return []
        for slot in [k for k, r in self._fetched.items() if r < round_ - 2]:
            del self._fetched[slot]
        newest: dict[str, int] = {}
        for r in (round_, round_ - 1):
            if r < 0:
                continue
            for key in self.transport.publishers(r):
                if key != self.public_key and key not in newest and (key, r) not in self._fetched:
                    newest[key] = r
        secret = self._sample_key(round_)
        ranked = sorted(newest, key=lambda key: hashlib.sha256(secret + key.encode()).digest())
        return [(key, newest[key]) for key in ranked[: SAMPLE_FANOUT * self.settings.external]]

    def _gather(self, round_: int) -> list[Group]:
        """The sampled publishers' groups, verified and re-scored here, in rank order."""
        slots = self._sample(round_)
        blobs: dict[tuple[str, int], list[bytes]] = {}
        for r in sorted({r for _, r in slots}):
            for key, got in self.transport.fetch(r, [k for k, kr in slots if kr == r]).items():
                blobs[(key, r)] = got
        by_group: dict[tuple[str, int], list[Rollout]] = {}
        for slot in slots:
            self._fetched[slot] = round_
            self.fetched += 1
            for blob in blobs.get(slot, []):
                rec = self.filter.accept(blob, round_, slot=slot)
                if rec is None:
                    continue
                for ro in rec.rollouts:
                    by_group.setdefault((rec.peer, ro.group), []).append(ro)
        groups = []
        for (peer, _), ros in by_group.items():
            try:
                ref = TaskRef(ros[0].dataset, ros[0].seed, ros[0].index)
                if any((ro.dataset, ro.seed, ro.index) != (ref.dataset, ref.seed, ref.index) for ro in ros):
                    continue  # one group, one task: a mixed group is malformed
                completions = [ro.completion for ro in ros]
                rewards = [score(ref, c, self.mix) for c in completions]
                # A claim that differs from our own score is a peer lying (or a different scorer).
                self.claims_overruled += sum(1 for ro, rw in zip(ros, rewards) if abs(ro.claimed_reward - rw) > 1e-6)
                groups.append(Group(ref, completions, rewards, peer))
            except ValueError:  # unknown task name, index out of range: not something we can score
                self.filter.dropped["unscorable"] = self.filter.dropped.get("unscorable", 0) + 1
        return groups

    def _pick_external(self, groups: list[Group], round_: int) -> list[Group]:
        """J informative groups, one per publisher per turn in rank order (groups arrive ranked):
        a key that sends more, or only informative, groups gets no more turns than any other."""
        by_source: dict[str, list[Group]] = {}
        for g in groups:
            if g.informative:
                by_source.setdefault(g.source, []).append(g)
        picked: list[Group] = []
        turn = 0
        while len(picked) < self.settings.external and any(len(gs) > turn for gs in by_source.values()):
            picked += [gs[turn] for gs in by_source.values() if len(gs) > turn][: self.settings.external - len(picked)]
            turn += 1
        return picked

    def _rows(self, groups: list[Group], tok) -> list[grpo.Row]:
        """Training rows: a local group trains on the very tokens it sampled (decoding drops the end
        of turn, and re-tokenized text need not give the same ids); an external one on its text."""
        rows = []
        for g in groups:
            prompt = self._render(tok, g.ref)
            for k, (c, a) in enumerate(zip(g.completions, g.advantages)):
                if g.completion_ids is not None and g.completion_ids[k]:
                    rows.append(grpo.Row(prompt, c, a, tuple(g.prompt_ids), tuple(g.completion_ids[k])))
                else:
                    rows.append(grpo.Row(prompt, c, a))
        return rows

    def run_round(self) -> dict:
        s = self.settings
        r = self.next_round
        t0 = time.perf_counter()
        from bitswarm.models.generate import load

        refs = self.mix.sample(s.task_seed, r, self.public_key, s.local)
        model, tok = load(self.store, self.model, s.backend)
        local = self._generate(refs, r, model, tok)
        t_gen = time.perf_counter()
        shared = self._publish(r, local)
        fetched_before = self.fetched
        external = self._gather(r)
        t_comm = time.perf_counter()
        picked_local = [g for g in local if g.informative]
        picked_external = self._pick_external(external, r)
        rows = self._rows(picked_local + picked_external, tok)
        report = {
            "peer": self.name, "round": r, "reward": claims.batch_reward([g.rewards for g in local]),
            "local_groups": len(picked_local), "external_groups": len(picked_external),
            "external_available": len(external), "publishers_fetched": self.fetched - fetched_before,
            "rollouts_shared": shared, "updated": False,
        }
        if rows:
            upd = grpo.update(
                self.store, self.model, rows, self.workdir / "rounds" / f"{r:06d}",
                seq_len=self._seq_len(rows, tok), lr=s.lr, micro_batch=s.micro_batch,
                seed=_seed_of("update", self.public_key, r), backend="native" if s.backend == "native" else "numba",
                optimizer_state=self.optimizer_state,
            )
            self.model, self.optimizer_state = upd.model, upd.optimizer_state
            report.update(updated=True, model=upd.model, optimizer_state=upd.optimizer_state,
                          transcript=upd.transcript, step_root=upd.step_root,
                          run_dir=str(upd.run_dir), dataset=upd.dataset)
            if self.coordinator is not None:
                batch = claims.encode_batch(r, self.public_key, [(g.ref, g.completions) for g in local])
                claimed = self.adversary.claim(report["reward"]) if self.adversary else report["reward"]
                report.update(rollout_cid=self.store.put_bytes(batch, label="swarm-rollouts"), claimed_reward=claimed)
                report["submitted"] = self.coordinator.submit(
                    self.public_key, r, report["rollout_cid"], claimed, upd.step_root
                )
        t_end = time.perf_counter()
        report.update(seconds=round(t_end - t0, 4), generate_seconds=round(t_gen - t0, 4),
                      comm_seconds=round(t_comm - t_gen, 4), train_seconds=round(t_end - t_comm, 4))
        self.rollouts_shared += shared
        self.rollouts_used_external += sum(len(g.completions) for g in picked_external)
        self.history.append(report)
        self.next_round = r + 1
        self._save_state()
        append_line(self.workdir / SWARM_REPORTS_LOG, {k: report[k] for k in REPORTED if k in report} | {"time": time.time()})
        return report

    @staticmethod
    def _seq_len(rows: list[grpo.Row], tok) -> int:
        def n(text: str) -> int:
            return len(tok(text, add_special_tokens=False)["input_ids"])

        def length(row: grpo.Row) -> int:
            if row.completion_ids is not None:
                return len(row.prompt_ids) + len(row.completion_ids)
            return n(row.prompt) + n(row.completion)

        return max(2, max(length(row) for row in rows))
