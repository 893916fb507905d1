"""Swarm state is keyed by what defines the swarm: `swarm run` and `swarm join` resume the same
swarm and start a different one fresh, and say which they did."""

from __future__ import annotations

import re

import pytest
import typer

from bitswarm.cli.main import app

from ..swarm.support import JOIN, TINY_ROUND, cli_json, invoke, memory_join, model_in_home  # noqa: F401 (fixture)

RUN = ["swarm", "run", "--peers", "2", "--rounds", "1", *TINY_ROUND, "--json"]


@pytest.fixture
def tiny_in_home() -> str:
    return model_in_home()


def test_a_different_model_or_peer_count_is_a_new_swarm(tiny_in_home):
    first = cli_json([*RUN, "--model", tiny_in_home])
    assert first["state"]["resumed"] is False and first["state"]["changed"] == []

    fewer = cli_json([*RUN, "--model", tiny_in_home, "--peers", "1"])
    assert fewer["state"]["resumed"] is False and fewer["state"]["changed"] == ["peers"]
    assert [p["name"] for p in fewer["peers"]] == ["peer-0"]  # not the two peers of the first swarm
    assert fewer["peers"][0]["rounds"] == [0] and fewer["state"]["dir"] != first["state"]["dir"]

    other = model_in_home(seed=1)
    res = invoke([*RUN, "--model", other, "--peers", "1", "--rounds", "2"])
    assert res.exit_code == 0, res.output
    assert "new swarm" in res.stderr and "differs from the last one in model" in res.stderr
    moved = cli_json([*RUN, "--model", other, "--peers", "1", "--rounds", "2"])
    assert moved["state"]["resumed"] is True  # the swarm just made, not the first one
    assert {p["model"] for p in moved["peers"]}.isdisjoint({p["model"] for p in first["peers"]})


def test_the_same_swarm_resumes_and_says_so(tiny_in_home):
    first = cli_json([*RUN, "--model", tiny_in_home])
    res = invoke([*RUN, "--model", tiny_in_home, "--rounds", "2"])
    assert res.exit_code == 0, res.output
    assert re.search(rf"resuming swarm {first['state']['swarm']} at round 1", res.stderr)
    again = cli_json([*RUN, "--model", tiny_in_home, "--rounds", "2"])
    assert again["state"] == {**first["state"], "resumed": True, "from_round": 2}
    assert [p["rounds"] for p in again["peers"]] == [[0, 1], [0, 1]]
    res = invoke([*RUN, "--model", tiny_in_home, "--rounds", "2"])
    assert "already reached round 2: nothing to run" in res.stderr


def test_a_workdir_holding_another_swarm_is_refused(tiny_in_home, tmp_path):
    work = ["--workdir", str(tmp_path / "mine")]
    cli_json([*RUN, "--model", tiny_in_home, *work])
    err = cli_json([*RUN, "--model", tiny_in_home, *work, "--lr", "0.5"], ok=False)["error"]
    assert "holds another swarm (it differs in lr)" in err and "without --workdir" in err
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "peer-0").mkdir()
    err = cli_json([*RUN, "--model", tiny_in_home, "--workdir", str(tmp_path / "old")], ok=False)["error"]
    assert "no swarm.json" in err


def test_join_keeps_one_state_folder_per_swarm(tiny_in_home, memory_join, monkeypatch):
    monkeypatch.setenv("BITSWARM_PASSPHRASE", "join test phrase")
    assert invoke(["identity", "new", "--json"]).exit_code == 0
    first = cli_json([*JOIN, "--model", tiny_in_home, "--json"])
    assert first["rounds"] == [0] and first["state"]["resumed"] is False
    assert first["external_groups_used"] == 1  # it did train on the host's record
    other = cli_json([*JOIN, "--model", tiny_in_home, "--group-size", "3", "--json"])
    assert other["state"]["changed"] == ["group_size"] and other["rounds"] == [0]
    back = cli_json([*JOIN, "--model", tiny_in_home, "--rounds", "2", "--json"])
    assert back["state"]["resumed"] is True and back["state"]["dir"] == first["state"]["dir"]
    assert back["rounds"] == [1]


def _option_names(cmd) -> set[str]:
    return {o for p in cmd.params for o in p.opts} | {"--help"}


@pytest.mark.parametrize("name", ["run", "join", "warm-start"])
def test_swarm_help_names_only_options_that_exist(name):
    """`swarm join --help` once told the user to rerun "over the same --workdir", which join lacks."""
    cmd = typer.main.get_command(app).commands["swarm"].commands[name]
    texts = [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]
    own = re.sub(r"`[^`]*`", "", " ".join(texts))  # `bitswarm node register --stake N` is another command's
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", own))
    assert named <= _option_names(cmd), f"swarm {name} --help names {named - _option_names(cmd)}"
