"""The `bitswarm` command: --help everywhere, --json shapes, exit codes and error messages."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from bitswarm import __version__
from bitswarm.cli.main import app

runner = CliRunner()
PW = "a long enough passphrase"
ROOT = Path(__file__).resolve().parents[2]


def run(*args, ok=True, env=None):
    result = runner.invoke(app, list(args), env=env)
    if ok:
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def run_json(*args, ok=True, env=None):
    result = run(*args, ok=ok, env=env)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0]), result


def _walk(cmd, path=()):
    yield path, cmd
    if hasattr(cmd, "commands"):
        for name, sub in cmd.commands.items():
            yield from _walk(sub, (*path, name))


ALL_COMMANDS = list(_walk(typer.main.get_command(app)))


def test_entry_point_version_and_help():
    exe = Path(sys.executable).parent / "bitswarm"
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"bitswarm {__version__}"
    out = subprocess.run([sys.executable, "-m", "bitswarm", "--help"], capture_output=True, text=True, check=True)
    assert "store" in out.stdout and "generate" in out.stdout


@pytest.mark.parametrize("path", [p for p, _ in ALL_COMMANDS], ids=lambda p: " ".join(p) or "bitswarm")
def test_every_command_has_help(path):
    result = run(*path, "--help")
    assert "Usage:" in result.stdout


def test_every_leaf_command_takes_json():
    for path, cmd in ALL_COMMANDS:
        if not hasattr(cmd, "commands") and path != ("config", "set"):
            assert any("--json" in p.opts for p in cmd.params), path


def test_store_cycle(tmp_path):
    src = tmp_path / "data"
    src.mkdir()
    (src / "x.txt").write_text("payload")
    put, _ = run_json("store", "put", str(src), "--label", "data", "--json")
    assert put["kind"] == "dir" and put["cid"].startswith("sha256:")
    ls, _ = run_json("store", "ls", "--json")
    assert ls == {"blobs": [{"cid": put["cid"], "size": put["size"], "kind": "dir", "label": "data"}]}
    got, _ = run_json("store", "get", put["cid"], "--out", str(tmp_path / "back"), "--json")
    assert got["kind"] == "dir" and (tmp_path / "back" / "x.txt").read_text() == "payload"
    ver, _ = run_json("store", "verify", "--json")
    assert ver == {"ok": True, "checked": 1, "corrupt": []}
    human = run("store", "ls")
    assert "data" in human.stdout and put["cid"][:20] in human.stdout


def test_store_errors_are_clear(tmp_path, bitswarm_home):
    missing = "sha256:" + "ab" * 32
    err, result = run_json("store", "get", missing, "--out", str(tmp_path / "o"), "--json", ok=False)
    assert result.exit_code == 1 and "no blob" in err["error"]
    result = run("store", "get", "nonsense", "--out", str(tmp_path / "o"), ok=False)
    assert result.exit_code == 1 and "not a CID" in result.stderr and "Traceback" not in result.stderr
    result = run("store", "put", str(tmp_path / "nope"), ok=False)
    assert result.exit_code == 1 and "no such file" in result.stderr


def test_corrupt_blob_fails_get_and_verify(tmp_path, bitswarm_home):
    f = tmp_path / "f"
    f.write_bytes(b"precious" * 100)
    put, _ = run_json("store", "put", str(f), "--json")
    blob = next((bitswarm_home / "store" / "blobs").glob("*/*"))
    blob.write_bytes(b"tampered" + blob.read_bytes()[8:])
    ver, result = run_json("store", "verify", "--json", ok=False)
    assert result.exit_code == 1 and ver == {"ok": False, "checked": 1, "corrupt": [put["cid"]]}
    result = run("store", "get", put["cid"], "--out", str(tmp_path / "o"), ok=False)
    assert result.exit_code == 1 and "corrupt" in result.stderr and not (tmp_path / "o").exists()


def test_model_init_and_generate_json(bitswarm_home):
    init, _ = run_json("model", "init", "tiny", "--seed", "3", "--json")
    assert init == {"cid": init["cid"], "preset": "tiny", "seed": 3, "size": init["size"]}
    gen, _ = run_json("generate", "--model", init["cid"], "--prompt", "hi", "--max-new-tokens", "4", "--json")
    assert set(gen) == {"model", "prompt", "text", "new_tokens", "seconds", "tokens_per_second"}
    assert gen["model"] == init["cid"] and 1 <= gen["new_tokens"] <= 4
    by_label, _ = run_json("generate", "--model", "tiny-seed3", "--prompt", "hi", "--max-new-tokens", "4", "--json")
    assert by_label["text"] == gen["text"]


def test_model_errors(bitswarm_home):
    err, result = run_json("model", "import", "not-a-model", "--json", ok=False)
    assert result.exit_code == 1 and "unknown model 'not-a-model'" in err["error"]
    result = run("generate", "--model", "nothing-by-that-name", "--prompt", "x", ok=False)
    assert result.exit_code == 1 and "neither a CID nor a label" in result.stderr
    result = run("model", "init", "tiny", "--seed", "-1", ok=False)
    assert result.exit_code == 2


def test_identity_cycle_and_wrong_passphrase(bitswarm_home):
    env = {"BITSWARM_PASSPHRASE": PW}
    new, _ = run_json("identity", "new", "--json", env=env)
    assert set(new) == {"address", "peer_id"}
    shown, _ = run_json("identity", "show", "--json")
    assert shown == new
    signed, result = run_json("identity", "sign", "hello", "--json", env=env)
    assert signed["address"] == new["address"] and signed["signature"].startswith("0x")
    for stream in (result.stdout, result.stderr):
        assert "private" not in stream.lower()
    err, result = run_json("identity", "sign", "hello", "--json", env={"BITSWARM_PASSPHRASE": "wrong passphrase"}, ok=False)
    assert result.exit_code == 1 and err["error"].startswith("wrong passphrase")
    err, result = run_json("identity", "new", "--json", env=env, ok=False)
    assert "already exists" in err["error"]


def test_identity_private_key_never_printed(bitswarm_home):
    from bitswarm.node import identity

    env = {"BITSWARM_PASSPHRASE": PW}
    outputs = [run("identity", "new", env=env), run("identity", "show"), run("identity", "sign", "m", env=env)]
    key = identity.unlock(bitswarm_home, PW).key.hex().removeprefix("0x")
    peer = (bitswarm_home / "keys" / "peer.key").read_bytes()[4:36].hex()
    for r in outputs:
        assert key not in r.stdout + r.stderr and peer not in r.stdout + r.stderr


def test_identity_without_passphrase_source(bitswarm_home):
    result = run("identity", "new", ok=False)
    assert result.exit_code == 1 and "BITSWARM_PASSPHRASE" in result.stderr
    result = run("identity", "show", ok=False)
    assert "bitswarm identity new" in result.stderr


def test_config_show_set_and_invalid(bitswarm_home, tmp_path):
    shown, _ = run_json("config", "show", "--json")
    assert shown["home"] == str(bitswarm_home) and shown["settings"]["api_host"] == "127.0.0.1"
    run("config", "set", "api_port", "8123")
    shown, _ = run_json("config", "show", "--json")
    assert shown["settings"]["api_port"] == 8123
    result = run("config", "set", "api_port", "99999", ok=False)
    assert result.exit_code == 1 and "'api_port'" in result.stderr and "65535" in result.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('log_level = "loud"\n')
    err, result = run_json("--config", str(bad), "config", "show", "--json", ok=False)
    assert "'log_level'" in err["error"] and "'debug'" in err["error"]
    err, _ = run_json("--config", str(tmp_path / "absent.toml"), "config", "show", "--json", ok=False)
    assert "does not exist" in err["error"]
    err, _ = run_json("config", "show", "--json", env={"BITSWARM_THREADS": "0"}, ok=False)
    assert "'threads'" in err["error"]


def test_home_option_moves_everything(tmp_path):
    other = tmp_path / "elsewhere"
    run_json("--home", str(other), "model", "init", "tiny", "--json")
    assert (other / "store" / "blobs").is_dir()


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    cmds = re.findall(r"`(bitswarm [^`]+)`", text)
    cmds += [line.split("bitswarm ", 1)[1] and "bitswarm " + line.split("bitswarm ", 1)[1]
             for line in text.splitlines() if re.match(r"^(\S+=\S+ )*bitswarm ", line)]
    return sorted(set(cmds))


@pytest.mark.parametrize("line", _readme_commands())
def test_readme_commands_exist_with_their_options(line):
    words = line.split("#")[0].split()[1:]
    while words and words[0] in ("--home", "--config"):  # top-level options before the command
        words = words[2:]
    cmd = typer.main.get_command(app)
    path = []
    while words and hasattr(cmd, "commands") and words[0] in cmd.commands:
        cmd = cmd.commands[words[0]]
        path.append(words.pop(0))
    options = {o for p in cmd.params for o in p.opts}
    if hasattr(cmd, "commands"):
        options |= {"--help"}
    for w in words:
        if w.startswith("--"):
            assert w.split("=")[0] in options, f"README: `{line}` uses {w}, which `bitswarm {' '.join(path)}` lacks"


def test_makefile_targets_named_in_readme_exist():
    makefile = (ROOT / "Makefile").read_text()
    readme = (ROOT / "README.md").read_text()
    targets = set(re.findall(r"`make ([a-z-]+)`", readme)) | set(re.findall(r"^make ([a-z-]+)", readme, re.M))
    assert {"demo", "test"} <= targets
    for target in targets:
        assert re.search(rf"^{target}:", makefile, re.M), target
