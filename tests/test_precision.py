"""Precision per device: `auto` asks the hardware (mocked here), the choice is cached per machine, and the
params name a wrong value."""

from __future__ import annotations

import json

import pytest
import torch

from lowshot import precision as prec
from lowshot.params import ParamsError, parse_params


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def fake_cpu(monkeypatch, flags: set[str], speedup: float) -> list[int]:
    calls = []
    monkeypatch.setattr(prec, "cpu_flags", lambda: set(flags))

    def measure(*args, **kw):
        calls.append(1)
        return speedup

    monkeypatch.setattr(prec, "bf16_matmul_speedup", measure)
    return calls


def test_auto_is_fp32_on_a_cpu_without_native_bf16_and_measures_nothing(monkeypatch):
    calls = fake_cpu(monkeypatch, {"avx2", "avx512f", "avx512bw"}, 9.9)
    p = prec.resolve_precision("auto", torch.device("cpu"))
    assert not p.bf16 and p.dtype == torch.float32
    assert "no avx512_bf16 or amx_bf16" in p.describe() and not calls


def test_auto_is_bf16_where_the_flag_and_the_measurement_agree(monkeypatch, cache_home):
    calls = fake_cpu(monkeypatch, {"avx512f", "avx512_bf16"}, 2.4)
    p = prec.resolve_precision("auto", torch.device("cpu"))
    assert p.bf16 and p.dtype == torch.bfloat16
    assert p.describe().startswith("precision bf16 (cpu: avx512_bf16, bf16 matmul 2.4x fp32)")
    # Measured once per machine and torch version; the next stage reads the cache.
    assert prec.resolve_precision("auto", torch.device("cpu")).bf16 and len(calls) == 1
    entries = json.loads((cache_home / "lowshot" / "hardware.json").read_text())["entries"]
    assert list(entries.values()) == [2.4]


def test_a_cpu_that_reports_the_flag_but_runs_bf16_slowly_is_caught(monkeypatch):
    fake_cpu(monkeypatch, {"amx_bf16", "amx_tile"}, 0.03)
    p = prec.resolve_precision("auto", torch.device("cpu"))
    assert not p.bf16 and "too slow" in p.reason


def test_explicit_choices_are_obeyed_and_autocast_follows(monkeypatch):
    calls = fake_cpu(monkeypatch, set(), 1.0)
    bf16 = prec.resolve_precision("bf16", "cpu")
    fp32 = prec.resolve_precision("fp32", "cpu", channels_last="on")
    assert bf16.bf16 and not fp32.bf16 and fp32.channels_last and not calls
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.rand(1, 3, 8, 8)
    with bf16.autocast("cpu"):
        assert conv(x).dtype == torch.bfloat16
    with fp32.autocast("cpu"):
        assert conv(x).dtype == torch.float32
    with bf16.autocast("cpu", enabled=False):
        assert conv(x).dtype == torch.float32
    assert fp32.inputs(x).is_contiguous(memory_format=torch.channels_last)
    assert fp32.prepare(conv).weight.is_contiguous(memory_format=torch.channels_last)


def test_cuda_auto_follows_the_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Test GPU")
    p = prec.resolve_precision("auto", torch.device("cuda"))
    assert p.bf16 and "Test GPU supports bf16" in p.reason
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert not prec.resolve_precision("auto", torch.device("cuda")).bf16
    with pytest.raises(ValueError, match="does not support it"):
        prec.resolve_precision("bf16", torch.device("cuda"))


def test_channels_last_auto_keeps_the_measured_winner(monkeypatch, tmp_path):
    fake_cpu(monkeypatch, set(), 1.0)
    monkeypatch.setattr(prec, "channels_last_speedup", lambda bf16: 0.9)
    assert not prec.resolve_precision("fp32", "cpu", "auto").channels_last
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "other-machine"))  # a new cache: measured again
    monkeypatch.setattr(prec, "channels_last_speedup", lambda bf16: 1.4)
    p = prec.resolve_precision("fp32", "cpu", "auto")
    assert p.channels_last and "1.40x in channels_last" in p.describe()


def test_the_real_measurements_run_and_are_positive_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    assert prec.bf16_matmul_speedup(n=64, reps=1) > 0
    assert prec.channels_last_speedup(bf16=False, reps=1) > 0
    assert torch.equal(torch.rand(3), expected)  # a stage's draws do not depend on whether the cache was warm


def test_params_name_a_wrong_precision():
    with pytest.raises(ParamsError, match=r"precision: input should be 'auto', 'fp32' or 'bf16', got 'fp16'"):
        parse_params({"precision": "fp16"})
    with pytest.raises(ParamsError, match=r"channels_last: input should be 'auto', 'on' or 'off'"):
        parse_params({"channels_last": "yes"})
    # YAML 1.1 (and `dvc exp run -S`, which rewrites params.yaml unquoted) reads on/off as booleans.
    assert parse_params({"channels_last": False}).channels_last == "off"
    assert parse_params({"channels_last": True}).channels_last == "on"
    with pytest.raises(ParamsError, match=r"warn_hours must be > 0"):
        parse_params({"warn_hours": 0})
    with pytest.raises(ParamsError, match=r"train.bf16 is not a known key"):
        parse_params({"train": {"bf16": True}})
