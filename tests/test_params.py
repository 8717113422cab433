"""params.yaml is validated before any work, with messages that name the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lowshot.params import Params, ParamsError, load_params, parse_params

REPO = Path(__file__).resolve().parents[1]


def _leaf_keys(d: dict, prefix: str = "") -> set[str]:
    keys = set()
    for k, v in d.items():
        if isinstance(v, dict):
            keys |= _leaf_keys(v, f"{prefix}{k}.")
        else:
            keys.add(f"{prefix}{k}")
    return keys


def test_shipped_params_yaml_is_valid_and_lists_every_key():
    """DVC tracks only the keys written in params.yaml: every schema key must be there, explicitly."""
    shipped = yaml.safe_load((REPO / "params.yaml").read_text())
    load_params(REPO / "params.yaml")
    assert _leaf_keys(Params().model_dump(mode="json")) == _leaf_keys(shipped)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"scrape": {"rate_limit": {"requests": -1}}}, "scrape.rate_limit.requests must be > 0, got -1"),
        ({"scrape": {"ratelimit": 3}}, "scrape.ratelimit is not a known key"),
        ({"preprocess": {"size": "big"}}, "preprocess.size"),
        ({"preprocess": {"mode": "stretch"}}, "preprocess.mode"),
        ({"device": "tpu"}, "device must be auto, cpu, cuda or cuda:N"),
        ({"scrape": {"base_url": "ftp://x"}}, "scrape.base_url must be an http(s) URL"),
        ({"fetch": {"photos": {"source": "x", "sha256": "abc"}}}, "fetch.photos.sha256 must be 64 hex"),
        ({"nonsense": {}}, "nonsense is not a known key"),
    ],
)
def test_bad_params_name_the_key(data, message):
    with pytest.raises(ParamsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_params(data)


def test_every_bad_key_is_reported_at_once():
    with pytest.raises(ParamsError) as e:
        parse_params({"seed": -3, "scrape": {"workers": 0}})
    assert "seed must be >= 0" in str(e.value) and "scrape.workers must be >= 1" in str(e.value)


def test_load_params_errors(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("scrape: [1, 2")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("- a list")
    with pytest.raises(ParamsError, match="mapping"):
        load_params(bad)


def test_cli_reports_bad_params_before_any_work(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from stages.cli import app

    (tmp_path / "params.yaml").write_text("scrape:\n  rate_limit:\n    requests: -1\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["scrape"])
    assert result.exit_code == 2
    assert "scrape.rate_limit.requests must be > 0, got -1" in result.output
    assert not (tmp_path / "data").exists()
