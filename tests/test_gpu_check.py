"""scripts/gpu_check.sh / scripts/bench_gpu.py: the parts that need no GPU (arguments, the refusal
without CUDA, the JSON, the timing and child-process helpers); the whole --cpu-smoke run is slow."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return load("bench_gpu")


def test_arguments(bench):
    args = bench.parse_args([])
    assert args.out == bench.DEFAULT_OUT and not args.cpu_smoke and args.variants.split(",") == list(bench.VARIANTS)
    assert bench.parse_args(["--cpu-smoke"]).out == bench.SMOKE_OUT
    assert list(bench.VARIANTS) == ["fp32", "bf16_res=4", "channels_last", "compile"]
    assert bench.REFERENCE["A100"] == 12.53 and bench.REFERENCE["V100"] == 20.84


@pytest.mark.parametrize("argv", [["--cpu-smoke", "--out", "docs/bench/gpu.json"], ["--variants", "fp16"],
                                  ["--parts", "everything"]])
def test_bad_arguments_exit_2(bench, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(argv)
    assert exc.value.code == 2 and "error: " in capsys.readouterr().err.strip().splitlines()[-1]


def test_refuses_without_cuda_in_one_line(bench, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu.json"
    assert bench.main(["--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no CUDA device") and "--cpu-smoke" in lines[0]
    assert captured.out == "" and not out.exists()


def test_sizes_fit_the_device_budget(bench):
    gpu, smoke = bench.settings(False), bench.settings(True)
    assert gpu["deadline_s"] < 8 * 60 and gpu["stylegan2"]["resolution"] == 256 and gpu["stylegan2"]["batch"] == 32
    assert gpu["stylegan2"]["steps"] % bench.CYCLE == 0 and gpu["inception"]["samples"] == 10_000
    assert smoke["demo"] is None and smoke["stylegan2"]["batch"] == 2 and smoke["stylegan2"]["steps"] == 2


def test_write_json_is_atomic(bench, tmp_path):
    path = tmp_path / "deep" / "gpu.json"
    bench.write_json(path, {"a": 1})
    bench.write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2} and os.listdir(path.parent) == ["gpu.json"]


class FakeMethod:
    def __init__(self):
        self.steps = []

    def train_step(self, batches, step):
        self.steps.append(step)


def test_timed_steps_whole_cycles_and_progress(bench):
    sg2 = sys.modules["bench_stylegan2"]
    method, seen = FakeMethod(), []
    timed = sg2.timed_steps(method, None, torch.device("cpu"), warmup=3, steps=64, cycle=16, budget_s=0.0,
                            progress=seen.append)
    assert method.steps == list(range(3 + 16)) and timed["steps_timed"] == 16 and len(seen) == 16
    assert seen[-1]["steps_timed"] == 16 and timed["s_per_step_mean"] >= 0
    timed = sg2.timed_steps(FakeMethod(), None, torch.device("cpu"), warmup=0, steps=10, cycle=4)
    assert timed["steps_timed"] == 8  # 10 run, the whole cycles kept


def test_run_child_keeps_the_figures_so_far_on_timeout(bench):
    sg2 = sys.modules["bench_stylegan2"]
    code = "import json, time; print(json.dumps({'s_per_kimg': 1.5}), flush=True); time.sleep(30)"
    assert sg2.run_child(["-c", code], timeout=3) == {"s_per_kimg": 1.5, "error": "timed out after 3 s"}
    assert sg2.run_child(["-c", "import sys; print('{\"a\": 1}'); sys.exit('boom')"]) == {"a": 1, "error": "boom"}
    assert sg2.run_child(["-c", "print('x'); print('{\"ok\": 1}')"]) == {"ok": 1}


def test_eager_d_regularizer(bench):
    calls = []

    class Reg:
        needs_fake, every = False, 16

        def __call__(self, D, real, fake, labels):
            calls.append(D)
            return D(real)

    D = torch.nn.Linear(2, 1)
    wrapped = bench.EagerD(Reg(), D)
    assert wrapped.needs_fake is False and wrapped.every == 16
    wrapped(object(), torch.zeros(1, 2), None, None)
    assert calls == [D.forward]


def test_demo_metric_lines_and_summary(bench):
    text = "step 3000 loss/d 0.1\nfid/digits_lenet@2k 65.9\nis/digits_lenet@2k 6.53\ndemo outputs: x\n"
    assert bench.metric_lines(text) == ["fid/digits_lenet@2k 65.9", "is/digits_lenet@2k 6.53"]
    row = {"variant": "fp32", "s_per_kimg": 30.0, "time_vs_fp32": 1.0, "resolution": 256, "batch": 32,
           "steps_timed": 32, "peak_mib": 9000.0, "warmup_s": 3.0}
    result = {"stylegan2": {"reference_s_per_kimg": bench.REFERENCE,
                            "rows": [row, {"variant": "compile", "error": "timed out after 9 s"}]},
              "inception": {"images_per_s": 2500.0, "samples": 10000, "batch": 250},
              "demo": {"wall_s": 61.0, "rc": 0, "timed_out": False, "metric_lines": text.splitlines()[1:3]}}
    table = bench.summary(result)
    assert "30.00 s/kimg (1.00x fp32)" in table and "timed out after 9 s" in table and "12.53" in table
    assert "2500 images/s" in table and "61 s (exit 0)" in table


@pytest.mark.slow
def test_cpu_smoke_runs_every_part(tmp_path):
    """scripts/gpu_check.sh --cpu-smoke: every part at tiny sizes (a few minutes on a loaded 2-core CPU)."""
    out = tmp_path / "smoke.json"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--cpu-smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["complete"] and result["mode"] == "cpu-smoke" and "images_per_s" in result["inception"]
    assert [r["variant"] for r in result["stylegan2"]["rows"]] == ["fp32", "bf16_res=4", "channels_last", "compile"]
    assert all("s_per_kimg" in r for r in result["stylegan2"]["rows"]), result["stylegan2"]["rows"]
    assert result["stylegan2"]["rows"][-1]["graphs_compiled"]["in_timed_steps"] == 0


@pytest.mark.slow
def test_wrapper_refuses_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--out", os.devnull],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_demo_is_killed_at_its_limit(bench, tmp_path):
    """make demo in its own process group: at the limit the whole group goes (make and what it runs)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    genexp = venv / "bin" / "genexp"
    genexp.write_text("#!/bin/sh\necho 'fid/digits_lenet@2k 65.9'\nexec sleep 60\n")
    genexp.chmod(0o755)
    (venv / ".genexp-installed").touch()
    demo = bench.run_demo(3, [f"VENV={venv}"])
    assert demo["timed_out"] and demo["rc"] is None and demo["wall_s"] < 30
    assert demo["metric_lines"] == ["fid/digits_lenet@2k 65.9"]
