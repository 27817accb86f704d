"""scripts/benchmark.py and scripts/matmul_floor.py run and report every variant (no timing is
asserted: timings belong to the benchmark's report, not to tests)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import benchmark

from rnnkit.models.kernels import cpp_loop


@pytest.mark.slow
def test_a_quick_synthetic_run_reports_every_variant_against_the_tutorial(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["--cells", "rnn", "--bidirectional", "both", "--batches", "2", "--infer-batches", "1"]
    args += ["--batch-size", "4", "--eval-batch-size", "8", "--max-length", "20", "--no-keras", "--packed"]
    assert benchmark.main([*args, "--frozen-embedding", "--batch-costs", "--json", str(out)]) == 0

    report = json.loads(out.read_text())
    variants = [(r["direction"], r["variant"]) for r in report["results"]]
    expected = ["tutorial", "tutorial+runtime", "rnnkit native", "rnnkit float32"]
    if benchmark.amp_dtype(torch.device("cpu")) is not None:  # bfloat16, only where the CPU has it
        expected += ["rnnkit", "rnnkit, embedding frozen"]
    expected.append("tutorial packed")
    assert variants == [(d, v) for d in ("uni", "bi") for v in expected]
    for row in report["results"]:
        assert row["train_tokens_per_s"] > 0 and row["infer_docs_per_s"] > 0
        if row["variant"] == "tutorial":
            assert row["train_speedup"] == row["infer_speedup"] == 1.0
    assert report["environment"]["cpu_cores"] >= 1 and report["environment"]["torch"] == torch.__version__
    assert "| rnn | bi | rnnkit float32 |" in capsys.readouterr().out
    if benchmark.amp_dtype(torch.device("cpu")) is not None:  # the per-batch split of the rnnkit rows
        costs = report["batch_costs"]
        assert [(c["cell"], c["direction"]) for c in costs] == [("rnn", "uni"), ("rnn", "bi")]
        assert all(len(c["batches"]) == 2 and c["tokens_per_s"] != 0 for c in costs)


def test_gpu_utilisation_is_the_mean_of_the_samples_taken_while_training(monkeypatch):
    readings = iter([40.0, 60.0, 80.0])
    monkeypatch.setattr(torch.cuda, "utilization", lambda device: next(readings, 80.0))
    with benchmark.GpuUtilisation(torch.device("cuda"), interval=0.001) as utilisation:
        deadline = time.monotonic() + 10
        while len(utilisation.samples) < 3 and time.monotonic() < deadline:
            time.sleep(0.001)
    assert utilisation.samples[:3] == [40.0, 60.0, 80.0]
    assert utilisation.mean == pytest.approx(sum(utilisation.samples) / len(utilisation.samples))


def test_without_nvml_gpu_utilisation_reports_nothing(monkeypatch):
    def no_nvml(device):
        raise ModuleNotFoundError("pynvml")

    monkeypatch.setattr(torch.cuda, "utilization", no_nvml)
    with benchmark.GpuUtilisation(torch.device("cuda"), interval=0.001) as utilisation:
        pass
    assert utilisation.mean is None


def test_the_matmul_floor_reports_a_token_limit_per_cell_direction_and_dtype(capsys):
    import matmul_floor

    args = ["--steps", "3", "--batch", "2", "--input", "4", "--hidden", "4", "--repeats", "1"]
    assert matmul_floor.main(args) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()[4:]]
    keys = [tuple(cell.strip() for cell in row[:3]) for row in rows]
    assert keys == [
        (c, d, t) for c in ("lstm", "gru", "rnn") for d in ("uni", "bi") for t in ("float32", "bfloat16")
    ]
    assert all(float(row[6].replace(",", "")) > 0 for row in rows)


def test_the_floor_counts_both_directions_and_every_gate_block():
    import matmul_floor

    lstm, gru = matmul_floor.Layer("lstm", False, 10, 2, 4, 4), matmul_floor.Layer("gru", True, 10, 2, 4, 4)
    assert lstm.flops == 2 * 20 * 3 * 8 * 16 and gru.flops == 2 * 20 * 3 * 8 * 12 * 2
    floor = matmul_floor.measure(gru, torch.float32, repeats=1)
    assert floor.tokens_per_s == pytest.approx(gru.tokens / (floor.per_step_s + floor.all_step_s))


def test_the_exact_update_cost_script_reports_the_pass_beside_memory_and_each_deferral(capsys):
    import exact_update_cost

    if cpp_loop.extension() is None:
        pytest.skip("the exact pass is a compiled kernel")
    args = [
        "--vocab",
        "300",
        "--dim",
        "8",
        "--steps",
        "4,6",
        "--every",
        "1,2",
        "--rounds",
        "1",
        "--repeats",
        "1",
    ]
    exact_update_cost.main(args)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:2]] == ["exact", "in-place"]
    assert [line.split(" tokens")[0] for line in lines[2:]] == ["64 x 4", "64 x 6"]
    assert all("K=1:" in line and "K=2:" in line for line in lines[2:])


def test_the_deferred_pass_moves_only_the_batchs_rows_between_full_passes():
    from exact_update_cost import EveryKthPass

    embedding = torch.nn.Embedding(10, 3, sparse=True)
    optimizer = EveryKthPass(embedding.parameters(), lazy=False, lr=0.1)
    optimizer.k = 2
    every_row, batch = list(range(10)), [2, 5]
    # steps 1 and 3 move the batch's rows only, step 2 (a full pass) every row with a moment
    for step, (ids, moving) in enumerate([(every_row, every_row), (batch, every_row), (batch, batch)], 1):
        before = embedding.weight.detach().clone()
        optimizer.zero_grad()
        embedding(torch.tensor(ids)).sum().backward()
        optimizer.step()
        assert (embedding.weight != before).any(dim=1).nonzero().flatten().tolist() == moving, step
