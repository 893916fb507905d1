"""A scripted assistant for the server's tests: it proposes what a test tells it and writes down every call
(the browser test plays with a trained assistant through the real SDK)."""

from __future__ import annotations

from dataclasses import dataclass


from bitswarm.assist.game import Action


@dataclass(frozen=True)
class FakeReceipt:
    cid: str
    size: int
    tx_hash: str | None


class Puppet:
    """Proposes the actions queued in `proposals` (one per act; None when empty) and logs every call.
    A proposal that is an Exception is raised instead, as a buggy assistant would."""

    def __init__(self, *proposals):
        self.proposals = list(proposals)
        self.calls: list[tuple] = []

    def begin_episode(self, env_state: dict) -> None:
        self.calls.append(("begin_episode", env_state))

    def observe(self, obs: dict, human_action: Action) -> None:
        self.calls.append(("observe", human_action))

    def act(self, obs: dict):
        self.calls.append(("act", obs["step"]))
        proposal = self.proposals.pop(0) if self.proposals else None
        if isinstance(proposal, Exception):
            raise proposal
        return proposal

    def end_episode(self, outcome: dict) -> str:
        self.calls.append(("end_episode", outcome))
        return "/tmp/episode.json"

    def share(self) -> FakeReceipt:
        self.calls.append(("share",))
        return FakeReceipt("sha256:" + "ab" * 32, 1234, None)

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]
