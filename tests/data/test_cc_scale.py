"""The Conceptual Captions scale benchmark (benchmarks/cc_scale.py) at a tiny size, and the hard-distractor
neighbour table's IVF path against brute force (the exact limit lowered, so a few thousand rows take it)."""

import os

import faiss
import numpy as np
import torch

from egg.zoo.discriminative_captioner.data import hard_distractors

from ..paths import ROOT, load_script

BENCHMARK = os.path.join(ROOT, "benchmarks", "cc_scale.py")


def load_benchmark():
    return load_script("benchmarks", "cc_scale.py")


def clustered(cc_scale, n, dim):
    """``[n, dim]`` normalised fp32 rows of the benchmark's clustered embeddings."""
    return cc_scale.ClusteredEmbeddings(n, dim, centres=100)(torch.arange(n)).numpy()


def exact_neighbours(features, queries, k):
    _, found = faiss.knn(features[queries], features, k + 1, metric=faiss.METRIC_INNER_PRODUCT)  # [Q, k + 1]
    return found


def test_benchmark_reports_every_figure(tmp_path, capsys):
    cc_scale = load_benchmark()
    figures = cc_scale.main(["--rows", "40000", "--fraction", "0.5", "--dim", "32", "--centres", "100",
                             "--exact_limit", "5000", "--recall_queries", "1000", "--lists_factors", "4",
                             "--probes", "4,16", "--batches", "20", "--output_dir", str(tmp_path)])  # fmt: skip
    printed = capsys.readouterr().out
    n = 20_000
    assert figures["rows"] == n
    assert figures["write_rows_per_second"] > 0 and figures["write_mb_per_second"] > 0
    assert figures["cache_bytes"] >= n * 32 * 2  # fp16 shards, plus ids and records
    for name in ("loader", "hard_loader"):
        measured = figures[name]
        assert measured["cold"] > 0 and measured["warm"] > 0 and measured["batches"] == 20
        assert measured["end"]["VmHWM"] >= measured["end"]["VmRSS"] > 0
    assert figures["neighbours"]["seconds"] >= figures["neighbours"]["index_seconds"] > 0
    assert figures["neighbours"]["table_bytes"] >= n * 10 * 8
    assert figures["table_recall"] >= 0.9  # clustered rows: the IVF table finds nearly all exact neighbours
    (_, few, _, _, fewer_found), (_, more, _, _, found) = figures["sweep"]
    assert (few, more) == (4, 16) and found >= max(fewer_found, 0.9)  # more lists searched, more neighbours found
    for line in ("cache write:", "cache size on disk:", "training loader (plain", "training loader (with 10 hard",
                 "its memory:", "neighbour table (k 10, IVF index)", "neighbour table recall@10:", "IVF lists 565",
                 "scaled:"):  # fmt: skip
        assert line in printed
    assert os.listdir(tmp_path) == []  # the cache is removed without --keep
    assert hard_distractors.EXACT_LIMIT == 200_000  # lowered for the benchmark only


def test_ivf_neighbours_agree_with_brute_force(monkeypatch):
    cc_scale = load_benchmark()
    features = clustered(cc_scale, 20_000, 32)
    monkeypatch.setattr(hard_distractors, "EXACT_LIMIT", 5_000)
    assert isinstance(hard_distractors._index(features), faiss.IndexIVFScalarQuantizer)
    neighbours = hard_distractors.nearest_neighbours(features, 10)  # [N, 10]
    queries = np.random.default_rng(0).choice(len(features), 500, replace=False)
    exact = cc_scale.others(exact_neighbours(features, queries, 10), queries, 10)
    assert cc_scale.recall([set(row.tolist()) for row in neighbours[queries]], exact, 10) >= 0.9
    assert not (neighbours[queries] == queries[:, None]).any()  # never a row's own neighbour


def test_exact_up_to_the_limit(monkeypatch):
    cc_scale = load_benchmark()
    features = clustered(cc_scale, 5_000, 32)
    monkeypatch.setattr(hard_distractors, "EXACT_LIMIT", 5_000)
    assert isinstance(hard_distractors._index(features), faiss.IndexFlatIP)
    neighbours = hard_distractors.nearest_neighbours(features, 10)
    queries = np.arange(0, 5_000, 10)
    exact = cc_scale.others(exact_neighbours(features, queries, 10), queries, 10)
    assert cc_scale.recall([set(row.tolist()) for row in neighbours[queries]], exact, 10) >= 0.99
