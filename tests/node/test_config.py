"""Settings: defaults, file, environment, and errors that name the field and what is allowed."""

import pytest

from bitswarm.node.config import ConfigError, Settings, load_settings, set_value
from bitswarm.home import resolve_home


def test_defaults_without_a_file(tmp_path):
    s = load_settings(tmp_path / "missing.toml")
    assert s == Settings.model_construct(**Settings().model_dump())
    assert s.api_host == "127.0.0.1"


def test_file_then_environment_precedence(tmp_path, monkeypatch):
    f = tmp_path / "config.toml"
    f.write_text('api_port = 9001\nlog_level = "debug"\n')
    s = load_settings(f)
    assert (s.api_port, s.log_level) == (9001, "debug")
    monkeypatch.setenv("BITSWARM_API_PORT", "9002")
    assert load_settings(f).api_port == 9002


@pytest.mark.parametrize(
    "text, field, allowed",
    [
        ("api_port = 70000", "api_port", "less than or equal to 65535"),
        ('log_level = "loud"', "log_level", "'debug', 'info', 'warning' or 'error'"),
        ('rpc_url = "ftp://x"', "rpc_url", "http://"),
        ("threads = 0", "threads", "greater than or equal to 1"),
    ],
)
def test_invalid_value_names_field_and_allowed(tmp_path, text, field, allowed):
    f = tmp_path / "config.toml"
    f.write_text(text + "\n")
    with pytest.raises(ConfigError) as e:
        load_settings(f)
    assert f"'{field}'" in str(e.value) and allowed in str(e.value)
    assert f"BITSWARM_{field.upper()}" in str(e.value)


def test_invalid_environment_value(tmp_path, monkeypatch):
    monkeypatch.setenv("BITSWARM_API_PORT", "not-a-port")
    with pytest.raises(ConfigError, match="'api_port'.*valid integer"):
        load_settings(None)


def test_unknown_key_lists_allowed(tmp_path):
    f = tmp_path / "config.toml"
    f.write_text("colour = 'blue'\n")
    with pytest.raises(ConfigError, match="unknown setting 'colour'; allowed settings: rpc_url"):
        load_settings(f)


def test_broken_toml(tmp_path):
    f = tmp_path / "config.toml"
    f.write_text("api_port = = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(f)


def test_set_value_validates_before_writing(tmp_path):
    f = tmp_path / "config.toml"
    set_value(f, "api_port", "8123")
    assert load_settings(f).api_port == 8123
    before = f.read_text()
    with pytest.raises(ConfigError, match="api_port"):
        set_value(f, "api_port", "-1")
    with pytest.raises(ConfigError, match="unknown setting"):
        set_value(f, "nope", "1")
    assert f.read_text() == before


def test_home_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("BITSWARM_HOME", str(tmp_path / "h"))
    assert resolve_home() == tmp_path / "h"
    assert resolve_home(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("BITSWARM_HOME")
    assert resolve_home().name == ".bitswarm"


def test_rpc_endpoint_from_bitswarm_rpc(tmp_path, monkeypatch):
    cfg = tmp_path / "config.toml"
    cfg.write_text('rpc_url = "http://file:1"\n')
    assert load_settings(cfg).rpc_url == "http://file:1"
    monkeypatch.setenv("BITSWARM_RPC", "http://chain.example:8545")
    assert load_settings(cfg).rpc_url == "http://chain.example:8545"  # the environment beats the file
    monkeypatch.setenv("BITSWARM_RPC", "ftp://nope")
    with pytest.raises(ConfigError, match="rpc_url"):
        load_settings(cfg)
