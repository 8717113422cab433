"""params.yaml is validated before any work, with messages that name the bad key."""

from __future__ import annotations

import re
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
        ({"train": {"arch": "wgan"}}, "train.arch: input should be 'lightweight', 'stylegan2', 'dcgan', 'wgan-gp'"),
        ({"train": {"arch": "dcgan", "resolution": 256}}, "train.resolution must be 32, 64 or 128 for train.arch dcgan"),
        ({"train": {"arch": "resnet-wgan-gp", "resolution": 256}}, "train.resolution must be 32, 64 or 128 for"),
        ({"train": {"lr_g": 0}}, "train.lr_g must be > 0"),
        ({"train": {"lr_d": -1e-4}}, "train.lr_d must be > 0"),
        ({"train": {"betas": [0.5, 1.0]}}, "train.betas must be two numbers in [0, 1), got [0.5, 1.0]"),
        ({"train": {"betas": [-0.1, 0.9]}}, "train.betas must be two numbers in [0, 1)"),
        ({"train": {"betas": [0.5]}}, "train.betas.1 is required"),
        ({"train": {"critic_steps": 0}}, "train.critic_steps must be >= 1, got 0"),
        ({"train": {"gp_weight": -10}}, "train.gp_weight must be >= 0"),
    ],
)
def test_bad_params_name_the_key(data, message):
    with pytest.raises(ParamsError, match=re.escape(message)):
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


def test_optimiser_keys_default_to_null_and_take_explicit_values():
    train = parse_params({}).train
    assert (train.lr_g, train.lr_d, train.betas, train.critic_steps) == (None, None, None, None)
    train = parse_params({"train": {"arch": "wgan-gp", "resolution": 64, "lr_g": 3e-4, "betas": [0, 0.99],
                                    "critic_steps": 3}}).train
    assert (train.lr_g, train.betas, train.critic_steps) == (3e-4, (0.0, 0.99), 3)
