"""The benchmarks still run: each one's --smoke mode end to end (no timing is asserted, only that it works)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSEARCH_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")  # no user config file
    return env


def _smoke(tmp_path: Path, bench: str, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str], dict]:
    """Run a benchmark's --smoke mode: its output, its lines, and its RESULT summary."""
    result = subprocess.run(
        [sys.executable, f"benchmarks/{bench}.py", "--smoke", *args],
        cwd=REPO, capture_output=True, text=True, env=_clean_env(tmp_path), timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    summary = json.loads(next(line for line in lines if line.startswith("RESULT "))[len("RESULT ") :])
    return result, lines, summary


def test_bench_query_smoke(tmp_path):
    _, lines, summary = _smoke(tmp_path, "bench_query")
    for key in ("p50_ms", "p95_ms", "encode_p50_ms", "hnsw_p50_ms", "catalog_p50_ms", "cold_search_s"):
        assert summary[key] > 0, key
    assert 0.9 <= summary["recall@10"] <= 1.0  # 2,000 vectors: HNSW is all but exact
    assert summary["text_encoder_min_cosine"] >= 0.9999
    assert summary["torch_imported_by_search"] is False
    # Both backends side by side (the default): the servers' index holds the same vectors and answers alike.
    assert set(summary["backends"]) == {"embedded", "servers"}
    servers = summary["backends"]["servers"]
    for key in ("p50_ms", "p95_ms", "hnsw_p50_ms", "catalog_p50_ms", "cold_search_s", "build_vectors_s"):
        assert servers[key] > 0, key
    assert 0.9 <= servers["recall@10"] <= 1.0
    assert "servers_added_p50_ms" in summary and summary["servers_ratio_p50"] > 0
    rows = [line for line in lines if line.startswith("| ") and "bench_query.py --smoke" in line]  # RESULTS.md rows
    # Three tables of RESULTS.md rows (the text query; the filters, date order, facets and timelines; a fresh
    # `serve`), a row each.
    assert [row.split(" | ")[3] for row in rows] == ["embedded", "servers"] * 3
    for name in ("embedded", "servers"):
        figures = summary["backends"][name]
        assert all(figures[f"filtered_{s}_recall@10"] >= 0.9 for s in ("100%", "10%", "1%", "0.1%")), figures
        assert figures["facets_p50_ms"] > 0 and figures["browse_first_p50_ms"] > 0
        assert figures["serve_page_s"] > 0 and figures["serve_first_query_s"] > 0 < figures["serve_second_query_s"]


def test_bench_index_smoke(tmp_path):
    _, lines, summary = _smoke(tmp_path, "bench_index")
    for key in ("a_photos_per_s", "b_photos_per_s", "c_photos_per_s", "b_over_a", "b_over_c", "peak_rss_mb"):
        assert summary[key] > 0, key
    for key in ("cos_mean", "cos_min", "centred_cos_mean", "centred_cos_min", "baseline_other_photos"):
        assert -1.0001 <= summary[key] <= 1.0001, key
    assert summary["cos_min"] <= summary["cos_mean"]
    assert summary["precision"] in ("fp32", "bf16")  # what auto resolves to on a CPU
    assert summary["photos"] == 8 and summary["reference_photos"] == 4
    assert any(line.startswith("| ") and "bench_index.py --smoke" in line for line in lines)  # the RESULTS.md row


def test_bench_index_servers_smoke(tmp_path):
    _, lines, summary = _smoke(tmp_path, "bench_index", "--backend", "servers")
    assert summary["workers"] == [1, 2]
    for name in ("clip_1w", "fake_1w", "fake_2w"):  # the smoke runs the CLIP model in one worker only (start-up)
        run = summary[name]
        assert run["photos_per_s"] > 0 and sum(run["split"]) == 8 and len(run["split"]) == int(name[-2]), name
    assert summary["fake_2w_over_1w"] > 0
    for count in (1, 2):  # every pending row claimed by exactly one claimer (checked inside), split among them
        claims = summary[f"claims_{count}"]
        assert claims["us_per_photo"] > 0 and claims["wall_us_per_photo"] > 0 and sum(claims["split"]) == 500
    assert any(line.startswith("| ") and "bench_index.py --smoke --backend servers" in line for line in lines)


def test_bench_stores_smoke(tmp_path):
    result, lines, summary = _smoke(tmp_path, "bench_stores")
    for key in ("index_per_s", "move_unhinted_per_s", "move_hinted_per_s", "duplicates_per_s", "move_one_per_s",
                "move_batched_per_s", "copy_one_per_s", "copy_batched_per_s"):  # fmt: skip
        assert summary[key] > 0, key
    assert (summary["photos"], summary["duplicates"]) == (1500, 200)
    # The counts behind the rates: every photo moved both ways, every duplicate reused, not embedded.
    assert result.stdout.count("moved=1500,") == 2 and "embedded=0, reused=200," in result.stdout
    assert any(line.startswith("| ") and "bench_stores.py --smoke" in line for line in lines)  # the RESULTS.md row


def test_bench_cutoff_smoke_auto_beats_the_best_flat_cutoff(tmp_path):
    """The cutoff on planted relevant sets (query/cutoff.py): auto keeps the planted photos and little else, in
    every query's own range of scores, where no one flat score can (bench_cutoff.py checks the date order too)."""
    _, lines, summary = _smoke(tmp_path, "bench_cutoff")
    assert summary["precision"] >= 0.9 and summary["recall"] >= 0.8, summary
    assert summary["f1"] > summary["best_flat"][3] + 0.1, summary
    assert any(line.startswith("absent-high") and " 0 " in line for line in lines)  # nothing relevant: none kept
