"""`bitswarm store gc` and `store rm`: every kind of pin keeps its blob, the figures are right,
--dry-run changes nothing, and a pinned or unknown blob is refused with a reason."""

import json

from typer.testing import CliRunner

from bitswarm.cli.main import app
from bitswarm.node.state import NodeState

runner = CliRunner()


def run(*args, ok=True):
    result = runner.invoke(app, list(args))
    if ok:
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    else:
        assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
    return result


def run_json(*args, ok=True):
    result = run(*args, "--json", ok=ok)
    return json.loads(result.stdout.strip().splitlines()[-1]), result


def put(tmp_path, text, label=None):
    f = tmp_path / f"in-{len(list(tmp_path.iterdir()))}"
    f.write_text(text)
    return run_json("store", "put", str(f), *(["--label", label] if label else []))[0]


def cids(blobs):
    return sorted(b["cid"] for b in blobs)


def _pinned_home(home, tmp_path):
    """One blob held by each kind of pin, and two that nothing holds."""
    b = {name: put(tmp_path, name) for name in
         ("imported", "job", "swarm", "run", "served", "checkpoint", "loose 1", "loose 2")}
    b["labelled"] = put(tmp_path, "labelled", label="my-dataset")
    transcript = json.dumps({"checkpoints": {"0": b["checkpoint"]["cid"]}})
    b["transcript"] = put(tmp_path, transcript, label="transcript first")
    (home / "store" / "imports.json").write_text(json.dumps({"smollm2|gguf": b["imported"]["cid"]}))
    (home / "jobs" / "3-solver").mkdir(parents=True)
    (home / "jobs" / "3-solver" / "spec.json").write_text(json.dumps({"model": b["job"]["cid"]}))
    (home / "swarm" / "run-abc" / "p0").mkdir(parents=True)
    (home / "swarm" / "run-abc" / "p0" / "peer.yaml").write_text(f"model: {b['swarm']['cid']}\n")
    (home / "runs" / "first").mkdir(parents=True)
    (home / "runs" / "first" / "notes.toml").write_text(f'dataset = "0x{b["run"]["cid"][7:]}"\n')
    node = NodeState(home / "node.db")
    node.add_blob(b["served"]["cid"], "job input", 3)
    node.close()
    return b


def test_gc_removes_unpinned_blobs_and_keeps_each_kind_of_pin(bitswarm_home, tmp_path):
    b = _pinned_home(bitswarm_home, tmp_path)
    loose = [b["loose 1"], b["loose 2"]]
    res, _ = run_json("store", "gc", "--grace", "0")
    assert res["dry_run"] is False
    assert cids(res["blobs"]) == cids(loose)
    assert res["removed"] == 2 and res["freed_bytes"] == sum(x["size"] for x in loose)
    assert res["kept"] == len(b) - 2 and res["kept_bytes"] == sum(x["size"] for x in b.values()) - res["freed_bytes"]
    assert {k: v["blobs"] for k, v in res["kept_by"].items()} == {
        "labels": 2, "blobs": 1, "imports.json": 1, "jobs/": 1, "swarm/": 1, "runs/": 1, "node.db": 1}
    ls, _ = run_json("store", "ls")
    assert cids(ls["blobs"]) == cids(x for k, x in b.items() if not k.startswith("loose"))
    again, _ = run_json("store", "gc", "--grace", "0")
    assert again["removed"] == 0 and again["freed_bytes"] == 0


def test_gc_dry_run_lists_and_removes_nothing(bitswarm_home, tmp_path):
    b = _pinned_home(bitswarm_home, tmp_path)
    before, _ = run_json("store", "ls")
    dry, _ = run_json("store", "gc", "--grace", "0", "--dry-run")
    assert dry["dry_run"] is True and cids(dry["blobs"]) == cids([b["loose 1"], b["loose 2"]])
    assert run_json("store", "ls")[0] == before
    human = run("store", "gc", "--grace", "0", "--dry-run")
    assert b["loose 1"]["cid"] in human.stdout and "would remove 2 blob(s)" in human.stdout
    real, _ = run_json("store", "gc", "--grace", "0")
    assert (real["removed"], real["freed_bytes"]) == (dry["removed"], dry["freed_bytes"])


def test_gc_keeps_recent_blobs_by_default(tmp_path):
    blob = put(tmp_path, "just written")
    res, _ = run_json("store", "gc")
    assert res["removed"] == 0 and res["kept_by"] == {"recent": {"blobs": 1, "bytes": blob["size"]}}
    human = run("store", "gc")
    assert "written in the last 15 min" in human.stderr


def test_gc_removes_nothing_when_the_node_database_is_unreadable(bitswarm_home, tmp_path):
    blob = put(tmp_path, "maybe served")
    (bitswarm_home / "node.db").write_bytes(b"not a database" * 100)
    err, result = run_json("store", "gc", "--grace", "0", ok=False)
    assert "node's database" in err["error"] and "nothing was removed" in err["error"]
    assert cids(run_json("store", "ls")[0]["blobs"]) == [blob["cid"]]


def test_rm_refuses_a_pinned_blob_without_force_and_says_why(bitswarm_home, tmp_path):
    b = _pinned_home(bitswarm_home, tmp_path)
    err, _ = run_json("store", "rm", b["job"]["cid"], b["loose 1"]["cid"], ok=False)
    assert f"{b['job']['cid']} is pinned" in err["error"] and "jobs/3-solver/spec.json" in err["error"]
    assert "--force" in err["error"]
    assert len(run_json("store", "ls")[0]["blobs"]) == len(b)  # not even the loose one went
    err, _ = run_json("store", "rm", b["checkpoint"]["cid"], ok=False)
    assert "transcript first" in err["error"]
    res, _ = run_json("store", "rm", b["job"]["cid"], "--force")
    assert res["removed"] == 1 and res["freed_bytes"] == b["job"]["size"]


def test_rm_removes_a_blob_with_its_label(bitswarm_home, tmp_path):
    b = _pinned_home(bitswarm_home, tmp_path)
    res, _ = run_json("store", "rm", b["labelled"]["cid"], b["loose 1"]["cid"])
    assert res["removed"] == 2 and res["freed_bytes"] == b["labelled"]["size"] + b["loose 1"]["size"]
    assert {x["label"] for x in res["blobs"]} == {"my-dataset", None}
    assert not (bitswarm_home / "store" / "labels" / b["labelled"]["cid"][7:]).exists()
    left = cids(run_json("store", "ls")[0]["blobs"])
    assert b["labelled"]["cid"] not in left and b["loose 1"]["cid"] not in left
    human = run("store", "rm", b["loose 2"]["cid"])
    assert "removed 1 blob(s), freed" in human.stdout


def test_rm_of_an_unknown_or_malformed_cid_is_an_error(tmp_path):
    kept = put(tmp_path, "kept")
    unknown = "sha256:" + "2" * 64
    err, _ = run_json("store", "rm", kept["cid"], unknown, ok=False)
    assert f"no blob {unknown}" in err["error"] and "nothing was removed" in err["error"]
    err, _ = run_json("store", "rm", "sha256:nope", ok=False)
    assert "not a CID" in err["error"]
    assert cids(run_json("store", "ls")[0]["blobs"]) == [kept["cid"]]
