"""--model takes a CID or a label everywhere; a wrong one is reported before anything heavy loads;
an inference's text ends where the model's turn ends."""

import json
import subprocess
import sys

from typer.testing import CliRunner

from bitswarm.cli.main import app

runner = CliRunner()


def _json(*args, code=0):
    r = runner.invoke(app, list(args))
    assert r.exit_code == code, (r.stdout, r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_infer_takes_a_label_as_generate_does(bitswarm_home, tmp_path):
    init = _json("model", "init", "tiny", "--seed", "5", "--json")
    by_label = _json("infer", "--model", "tiny-seed5", "--prompt", "hi", "--out", str(tmp_path / "a"),
                     "--max-new-tokens", "3", "--json")
    by_cid = _json("infer", "--model", init["cid"], "--prompt", "hi", "--out", str(tmp_path / "b"),
                   "--max-new-tokens", "3", "--json")
    assert by_label["root"] == by_cid["root"] and len(by_label["tokens"]) == 3
    record = json.loads((tmp_path / "a" / "inference.json").read_text())
    assert record["model"] == init["cid"]  # the record names the CID, never the label
    err = _json("infer", "--model", "no-such-label", "--prompt", "hi", "--out", str(tmp_path / "c"), "--json", code=1)
    assert "neither a CID nor a label" in err["error"]


def test_the_text_of_an_inference_ends_at_the_end_of_turn(store):
    from bitswarm.models.generate import load_tokenizer
    from bitswarm.verify.inference import text_of

    cid = _json("model", "init", "tiny", "--seed", "6", "--json")["cid"]
    tok = load_tokenizer(store, cid)
    words = tok("hello there", add_special_tokens=False)["input_ids"]
    after = tok("system", add_special_tokens=False)["input_ids"]
    assert tok.eos_token_id is not None
    assert text_of(tok, words + [tok.eos_token_id] + after) == tok.decode(words)
    assert text_of(tok, words) == tok.decode(words)


def test_an_unknown_model_is_reported_before_the_kernels_load(tmp_path):
    script = (
        "import sys\n"
        "from bitswarm.store import BlobStore\n"
        "from bitswarm.models import ModelError\n"
        "from bitswarm.models.generate import load\n"
        f"store = BlobStore({str(tmp_path)!r})\n"
        "try:\n"
        "    load(store, 'sha256:' + '0' * 64)\n"
        "except ModelError as e:\n"
        "    print(e)\n"
        "print(sorted(m for m in ('transformers', 'numba', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert "no model sha256:000" in out and out.strip().endswith("[]")


def test_repro_generation_never_imports_torch(tmp_path):
    """torch computes nothing on the repro path; importing it cost a second of every `generate`."""
    from bitswarm.models.importer import init_model
    from bitswarm.store import BlobStore

    cid = init_model(BlobStore(tmp_path), "tiny", 0)
    script = (
        "import sys\n"
        "from bitswarm.store import BlobStore\n"
        "from bitswarm.models.generate import generate\n"
        f"print(generate(BlobStore({str(tmp_path)!r}), {cid!r}, 'hi', 2).new_tokens, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split()[-1] == "False", out
