"""What a newcomer sees in the first hour (issue 12): amounts, usage errors under --json, flags in
--help, CIDs and addresses that copy whole at 80 columns, unbonding dates, model sizes, the
package metadata, and `ledger deploy` from an account without gas."""

from __future__ import annotations

import decimal
import json
import os
import re
import subprocess
import sys
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from bitswarm.cli.ledger_cmd import credits_to_units
from bitswarm.cli.main import app
from bitswarm.home import Home
from bitswarm.ledger.client import CREDIT, ROLE_SWARM, Ledger
from bitswarm.ledger.errors import LedgerError
from bitswarm.ledger.units import format_units
from bitswarm.node import identity

ROOT = Path(__file__).resolve().parents[2]
PW = "a long enough passphrase"
ADDRESS = "0x" + "aB" * 20
PEER_ID = "12D3KooW" + "Q" * 44
MADDRS = [f"/ip4/127.0.0.1/tcp/40123/p2p/{PEER_ID}", f"/ip6/::1/tcp/40123/p2p/{PEER_ID}"]
runner = CliRunner()


def run(*args: str, env: dict | None = None, code: int = 0):
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result


def run_80(home: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess:
    """`bitswarm ARGS` as its own process in an 80-column terminal (rich reads COLUMNS at start)."""
    env = {**os.environ, "BITSWARM_HOME": str(home), "BITSWARM_PASSPHRASE": PW, "COLUMNS": "80"}
    proc = subprocess.run([sys.executable, "-m", "bitswarm", *args], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    return proc


def one_json(result) -> dict:
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])


# ------------------------------------------------------------------ 1. amounts


@pytest.mark.parametrize("units, text", [
    (400 * CREDIT, "400"), (100 * CREDIT, "100"), (10 * CREDIT, "10"), (41 * CREDIT, "41"), (0, "0"),
    (5 * CREDIT // 2, "2.5"), (1, "0.000000000000000001"), (1_500_000 * CREDIT, "1500000"),
    (10**30 + 1, "1000000000000.000000000000000001"),  # past Decimal's 28 digits
    (-3 * CREDIT // 4, "-0.75"),
])
def test_amounts_keep_every_digit(units, text):
    assert format_units(units) == text


def test_amounts_are_exact_whatever_the_decimal_context():
    # Python's default context keeps 28 digits; vyper raises it to 78 when imported, so a command
    # that compiles a contract first got exact amounts and one that did not (job) got rounded ones.
    with decimal.localcontext(decimal.Context(prec=28)):
        assert credits_to_units("1000000000000.000000000000000001", "--credits") == 10**30 + 1
        assert format_units(10**30 + 1) == "1000000000000.000000000000000001"
    assert credits_to_units("400", "--credits") == 400 * CREDIT


def test_swarm_stake_message_shows_amounts_as_typed():
    """The client's own messages use the same formatter: no 1.5e+06 for a million and a half."""

    class Registered(Ledger):
        def __init__(self):  # no chain: only the message is under test
            pass

        address = ADDRESS

        def swarm_stake(self):
            return 1_500_000 * CREDIT

        def node(self, address=None):
            return {"registered": True, "roles": ROLE_SWARM, "staked": 1_234_567 * CREDIT, "locked": CREDIT // 2}

    with pytest.raises(LedgerError) as caught:
        Registered().swarm_check_stake()
    message = str(caught.value)
    assert "1234566.5 credits of free stake (1234567 staked, 0.5 locked)" in message
    assert "locks 1500000 credits" in message and "--stake 1500000`" in message and "e+" not in message


# ------------------------------------------------------------------ 2. usage errors under --json


@pytest.mark.parametrize("args, wrong", [
    (["swarm", "run", "--peers", "0", "--json"], "'--peers'"),
    (["swarm", "run", "--json", "--peers", "0"], "'--peers'"),
    (["generate", "--json", "--model", "m", "--prompt", "p", "--top-p", "1.5"], "'--top-p'"),
    (["ledger", "status", "--json", "true"], "(true)"),
    (["model", "init", "tiny", "--seed", "x", "--json"], "'--seed'"),
    (["ledger", "status", "--jsn", "--json"], "--jsn"),
])
def test_usage_error_under_json_is_one_json_object(args, wrong):
    error = one_json(run(*args, code=2))
    assert set(error) == {"error"} and wrong in error["error"]
    assert f"`bitswarm {args[0]}" in error["error"]  # and where to read what is allowed
    plain = run(*[a for a in args if a != "--json"], code=2)
    assert plain.stdout == "" and "Usage:" in plain.stderr  # without --json: typer's own message


# ------------------------------------------------------------------ 3. flags in --help


def _walk(cmd, path=()):
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _walk(sub, (*path, name))


def test_help_shows_flags_without_a_value_placeholder():
    for path, _ in _walk(typer.main.get_command(app)):
        text = run(*path, "--help", env={"COLUMNS": "200"}).stdout
        assert "<bool>" not in text, path
        assert re.search(r"--help\s+Show this message", text), path
    assert re.search(r"--json\s+Print one JSON object", run("ledger", "status", "--help").stdout)
    assert re.search(r"--withdraw\s+Withdraw stake", run("node", "unbond", "--help").stdout)
    assert "<str>" in run("node", "unbond", "--help").stdout  # options that take a value keep theirs


# ------------------------------------------------------------------ 4. 80 columns


class _NodeApi(BaseHTTPRequestHandler):
    answers = {
        "/status": {"state": "running", "address": ADDRESS, "peer_id": PEER_ID, "roles": ["solver"], "block": 7,
                    "last_block": 7, "uptime_s": 12.0, "version": "0.1.0", "maddrs": MADDRS},
        "/balances": {"address": ADDRESS, "token": 400 * CREDIT, "stake": 100 * CREDIT, "locked": 0,
                      "unbonding": 0, "eth": 10 * CREDIT},
    }

    def do_GET(self):
        body = json.dumps(self.answers[self.path]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def node_api(bitswarm_home):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NodeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    info = Home(bitswarm_home).node_info_file
    info.parent.mkdir(parents=True, exist_ok=True)
    info.write_text(json.dumps({"api_url": f"http://127.0.0.1:{server.server_address[1]}"}))
    yield bitswarm_home
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_node_status_keeps_addresses_whole_in_80_columns(node_api):
    lines = run_80(node_api, "node", "status").stdout.splitlines()
    for whole in (ADDRESS, PEER_ID, *MADDRS):
        assert any(whole in line for line in lines), (whole, lines)
    assert any("400 credits" in line for line in lines) and any("10 ETH" in line for line in lines)


# ------------------------------------------------------------------ on a devnet: 1, 4, 5, 8


@pytest.fixture(scope="module")
def devnet(tmp_path_factory):
    from tests.ledger.chains import start_devnet  # FAST deadlines: unbonding takes 100 s

    chain = start_devnet(tmp_path_factory.mktemp("devnet"))
    yield chain
    chain.stop()


@pytest.fixture
def newcomer(devnet, bitswarm_home, monkeypatch):
    """A data directory pointed at the devnet, with a new identity that holds nothing yet."""
    bitswarm_home.mkdir(parents=True)
    (bitswarm_home / "config.toml").write_text(f'rpc_url = "{devnet.url}"\n')
    identity.create(bitswarm_home, PW)
    monkeypatch.setenv("BITSWARM_PASSPHRASE", PW)
    return bitswarm_home


@pytest.mark.network
def test_fund_and_register_say_whole_amounts(newcomer):
    assert "10 credits, 100 ETH" in run("ledger", "fund", "--credits", "10", "--eth", "100").stdout
    refused = run("node", "register", "--stake", "400", code=1)
    assert "holds 10 credits, fewer than the 400 to stake" in refused.stderr


@pytest.mark.network
def test_errors_keep_addresses_and_commands_whole_in_80_columns(newcomer):
    address = identity.load(newcomer).address
    stderr = run_80(newcomer, "node", "register", "--stake", "400", code=1).stderr
    assert any(address in line and "`bitswarm ledger fund`" in line for line in stderr.splitlines()), stderr


@pytest.mark.network
def test_unbonding_shows_a_date_and_the_time_left(newcomer):
    run("ledger", "fund", "--credits", "500")
    run("node", "register", "--stake", "100", "--roles", "solver")
    human = run("node", "unbond", "--amount", "30").stdout
    assert "unix time" not in human
    assert re.search(r"from \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} \S+ \(in 1 min [34]\d s\)", human), human
    raw = one_json(run("node", "unbond", "--amount", "20", "--json"))
    assert isinstance(raw["release_time"], int) and raw["unbonding"] == 20 * CREDIT
    assert re.search(r"withdrawable from \d{4}-\d{2}-\d{2} .*\(in ", run("ledger", "status").stdout)
    early = one_json(run("node", "unbond", "--withdraw", "--json", code=1))
    assert re.search(r"50 credits are still unbonding: withdrawable from \d{4}-.*\(in ", early["error"])


@pytest.mark.network
def test_deploy_without_gas_says_who_has_what_and_how_to_fund(newcomer):
    address = identity.load(newcomer).address
    error = one_json(run("ledger", "deploy", "--json", code=1))["error"]
    assert f"{address} holds 0 ETH" in error and "needs about" in error
    assert f"`bitswarm ledger fund {address}`" in error
    human = run("ledger", "deploy", code=1)
    assert "Traceback" not in human.stderr and "holds 0 ETH" in human.stderr and human.stdout == ""


def test_deploy_without_a_chain_says_so(bitswarm_home):
    from tests.ledger.chains import free_port

    bitswarm_home.mkdir(parents=True)
    (bitswarm_home / "config.toml").write_text(f'rpc_url = "http://127.0.0.1:{free_port()}"\n')
    error = one_json(run("ledger", "deploy", "--json", code=1))["error"]
    assert "no EVM JSON-RPC endpoint answers" in error and "bitswarm devnet" in error


# ------------------------------------------------------------------ 6. model sizes


def test_model_init_and_import_report_size_the_same_way(tmp_path):
    init = one_json(run("model", "init", "tiny", "--seed", "2", "--json"))
    assert set(init) == {"cid", "preset", "seed", "size"} and init["preset"] == "tiny" and init["seed"] == 2
    run("store", "get", init["cid"], "--out", str(tmp_path / "tiny"))
    imported = one_json(run("model", "import", str(tmp_path / "tiny"), "--json"))
    assert set(imported) == {"cid", "source", "size"}
    # The same model imported back: same CID, and "size" is its bytes in both
    assert imported["cid"] == init["cid"] and imported["size"] == init["size"]
    assert isinstance(init["size"], int) and init["size"] > 100_000
    ls = one_json(run("store", "ls", "--json"))
    assert {b["cid"]: b["size"] for b in ls["blobs"]}[init["cid"]] == init["size"]


# ------------------------------------------------------------------ 7. package metadata


def test_pyproject_license_gives_setuptools_no_warning():
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a deprecation warning fails the test
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    assert dist.metadata.license_expression == "Apache-2.0"


def test_store_ls_keeps_every_cid_whole_in_80_columns(tmp_path):
    home = tmp_path / "home"
    (tmp_path / "f").write_text("hello")
    cid = one_json(run("--home", str(home), "store", "put", str(tmp_path / "f"), "--label", "a greeting", "--json"))["cid"]
    lines = run_80(home, "store", "ls").stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(cid + " ") and lines[0].endswith("a greeting")


HEAVY = ("torch", "transformers", "numba", "web3", "eth_account", "hivemind", "pydantic_settings")


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["config", "show"], ["identity", "show"]])
def test_light_commands_import_nothing_heavy(tmp_path, args):
    """Start-up time is import time: these commands must not pay for torch, numba or web3."""
    home = tmp_path / "home"
    run("--home", str(home), "identity", "new", "--json", env={"BITSWARM_PASSPHRASE": PW})
    allowed = {"pydantic_settings"} if args == ["config", "show"] else set()  # config show reads the settings
    script = (
        "import sys\n"
        f"sys.argv = ['bitswarm', '--home', {str(home)!r}, *{args!r}]\n"
        "from bitswarm.cli.main import app\n"
        "try:\n"
        "    app()\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    line = [x for x in proc.stdout.splitlines() if x.startswith("HEAVY")][-1]
    assert set(eval(line[6:])) <= allowed, (args, line)
