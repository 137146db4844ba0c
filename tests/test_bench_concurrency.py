"""bench/bench_concurrency.py's client side against a real Hearth API (the tiny GGUF, in this process): the
token counts it checks, its figures and its table. llama-server and the realistic-size model stay in the bench."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench import bench_concurrency as bench
from tests.test_api_server import serve_api


def test_concurrent_clients_stream_max_tokens_and_the_table_reports_them(models_dir: Path, tmp_path: Path):
    with serve_api(models_dir, tmp_path) as served:
        server = SimpleNamespace(url=served.base, exit_note=lambda: "")
        runs = [bench.measure("hearth-p1", server, 3, repeat, 12) for repeat in range(2)]
    for run in runs:
        assert len(run.results) == 3
        # EOS banned: every client gets all 12 tokens
        assert all(r.tokens == 12 and 0 < r.chunks <= 12 and r.text for r in run.results)
        assert all(r.start < r.start + r.ttft < r.end for r in run.results)
        assert run.tok_s > 0 and run.ttft_median_ms > 0
    table = bench.table(runs, [3], ["hearth-p1", "llama-server"])
    row = next(line for line in table.splitlines() if line.startswith("| 3 | hearth-p1 |"))
    low, median, high = (float(x) for x in row.split("|")[3].split(" / "))
    assert low <= median <= high and low == pytest.approx(min(r.tok_s for r in runs), abs=0.06)


def test_a_short_stream_is_refused_as_unequal_work(models_dir: Path, tmp_path: Path, monkeypatch):
    """A client that gets fewer tokens than asked (here: EOS allowed, stop at a newline) fails the run."""
    monkeypatch.setitem(bench.NO_EOS, "hearth", {"ban_eos_token": False, "stop": ["\n", " ", "a", "e", "o"]})
    with serve_api(models_dir, tmp_path) as served:
        server = SimpleNamespace(url=served.base, exit_note=lambda: "")
        with pytest.raises(RuntimeError, match="the two sides would not do the same work"):
            bench.measure("hearth-p1", server, 1, 0, 64)


def test_unknown_system_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench_concurrency.py", "--systems", "hearth-p1,vllm"])
    with pytest.raises(SystemExit) as exit_:
        bench.main()
    assert exit_.value.code == 2 and "unknown: vllm" in capsys.readouterr().err
