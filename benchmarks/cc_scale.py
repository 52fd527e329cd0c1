"""Conceptual Captions scale, by simulation: a feature cache of 3.3M random (clustered) 512-d fp16 embeddings,
written by ``build_cache`` with a fake encoder, and what training on it costs:

- the cache's write throughput (rows/s, MB/s of shards) and its size on disk;
- the training loader's batches per second (``training_loader`` over an ``EncodedSplit`` whose sender and
  receiver inputs are ``CachedRows`` of the memory-mapped cache), and ``hard_distractor_loader``'s; each in a
  fresh process, first with the shards evicted from the page cache (posix_fadvise), then the same batches again;
- that training process's resident memory (RssAnon, RssFile, VmHWM of /proc/self/status) beside the cache's size:
  it must not read the cache into memory;
- the hard-distractor neighbour table (``cached_neighbours``, an IVF index beyond ``EXACT_LIMIT`` rows): its build
  time and peak resident memory in a fresh process, and its recall@10 against exact search (``faiss.knn``) for
  ``--recall_queries`` sampled rows, each queried against the whole table;
- recall@10 and search time of the IVF index at other (lists, probes), on the same queries.

With ``--fraction f`` it builds ``f * --rows`` rows and prints what it measured at that size; where scaling means
something it adds the figure scaled to ``--rows``, marked "scaled": sizes linearly, a process's own memory (RssAnon)
linearly above its size after the imports, the neighbour table's time as n^1.5 (lists grow as sqrt(n), so both
adding the rows and searching them cost n sqrt(n)).  Rates and recall are not scaled: they are the fraction's.
Mapped pages of the cache (RssFile) are not scaled: they grow with the rows read, up to the cache's size.

The embeddings (``ClusteredEmbeddings``) are a stand-in for CLIP's: micro-clusters of ROWS_PER_MICRO rows (a photo's
near-duplicates) around ``--centres`` topics.  Recall on them says how the index treats clustered data, not what
it will be on Conceptual Captions' own embeddings.  Linux only (/proc/self/status).

    python benchmarks/cc_scale.py [--rows 3300000] [--fraction 1.0] [--dim 512] [--k 10] [--output_dir DIR] [--keep]
    nice -n 10 python benchmarks/cc_scale.py --fraction 0.25 --lists_factors 2,4 --probes 4,8,16,32  # ~30 min
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

import faiss
import numpy as np
import torch

from egg.zoo.discriminative_captioner.data import hard_distractors
from egg.zoo.discriminative_captioner.data.base import EncodedSplit, training_loader
from egg.zoo.discriminative_captioner.data.feature_cache import CachedRows, CacheKey, FeatureCache
from egg.zoo.discriminative_captioner.data.feature_cache_build import build_cache
from egg.zoo.discriminative_captioner.data.hard_distractors import cached_neighbours, hard_distractor_loader
from egg.zoo.discriminative_captioner.data.splits import ImageSplit

ROWS_PER_MICRO = 50  # rows per micro-cluster
MICRO_SPREAD = 1.0  # a micro-cluster's distance from its topic, relative to the topics' norm
NOISE = 1.2  # a row's median distance from its micro-cluster (log-normal: some rows are near-duplicates)
BUILD_BATCH = 1024
MB = 1e6


class Numbered(Sequence):
    """``"0", "1", ..., str(n - 1)``, made when read: a split's ids (and stand-in references, of which only the
    count is read) without n strings in memory, so that a process's resident size is the cache's doing."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [str(i) for i in range(*index.indices(self.n))]
        if not -self.n <= index < self.n:
            raise IndexError(index)
        return str(index % self.n)


def fake_split(n):
    """A split of n "images", image i being the integer i (which the fake encoder turns into features)."""
    return ImageSplit("train", range(n), Numbered(n), Numbered(n))


class ClusteredEmbeddings:
    """A fake frozen encoder for ``build_cache``: ``encoder(indices [b]) -> [b, D]`` (the cache's "transform" is
    ``torch.tensor``, an image being its index), L2-normalised points near their micro-cluster, itself near one of
    ``centres`` random topics.  Every batch draws its noise from a generator seeded by its first index, so a
    resumed build writes the same bytes.  ``seconds``: the time spent making embeddings (not writing them)."""

    def __init__(self, n, dim, centres, seed=0):
        rng = np.random.default_rng(seed)
        topics = rng.standard_normal((centres, dim), dtype=np.float32) / np.sqrt(dim)  # [C, D], norms ~1
        n_micro = max(1, n // ROWS_PER_MICRO)
        spread = rng.standard_normal((n_micro, dim), dtype=np.float32) / np.sqrt(dim)  # [M, D]
        self.micro = topics[rng.integers(0, centres, n_micro)] + MICRO_SPREAD * spread  # [M, D]
        self.micro_of = rng.integers(0, n_micro, n)  # [n]
        self.noise = (NOISE * np.exp(0.5 * rng.standard_normal(n))).astype(np.float32)  # [n]
        self.dim, self.seed, self.seconds = dim, seed, 0.0

    def __call__(self, indices):
        started = time.perf_counter()
        indices = indices.numpy()  # [b]
        rng = np.random.default_rng((self.seed, int(indices[0])))
        noise = rng.standard_normal((len(indices), self.dim), dtype=np.float32) / np.sqrt(self.dim)  # [b, D]
        features = self.micro[self.micro_of[indices]] + self.noise[indices, None] * noise  # [b, D]
        features /= np.linalg.norm(features, axis=1, keepdims=True)
        self.seconds += time.perf_counter() - started
        return torch.from_numpy(features)


def memory():
    """This process's resident memory in bytes: ``VmRSS``, ``VmHWM`` (its peak), ``RssAnon`` (its own pages) and
    ``RssFile`` (pages of mapped files, such as the cache's shards, which the kernel can drop at will)."""
    figures = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                figures[name] = int(value.split()[0]) * 1024
    return figures


def evict_page_cache(directory):
    """Drops the cache's files from the page cache (written back first), so the next reads come from the disk,
    as in a job's first epoch on a fresh machine.  Pages another process has mapped stay."""
    for name in os.listdir(directory):
        fd = os.open(os.path.join(directory, name), os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cache_bytes(directory, prefix=""):
    """The size of a cache directory's files whose names start with ``prefix``, the neighbour table left out."""
    return sum(os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory)
               if name.startswith(prefix) and not name.startswith("neighbours-"))  # fmt: skip


def write_cache(directory, n, dim, centres):
    """Builds the cache through ``build_cache``; returns ``(seconds, seconds spent making the embeddings)``."""
    split = fake_split(n)
    encoder = ClusteredEmbeddings(n, dim, centres)
    key = CacheKey.of(split, f"clustered random embeddings ({centres} topics)", "image index")
    started = time.perf_counter()
    build_cache(directory, split, encoder, torch.tensor, key, batch_size=BUILD_BATCH, rebuild=True,
                desc="writing the cache")  # fmt: skip
    return time.perf_counter() - started, encoder.seconds


def batches_per_second(loader, batches):
    """``(batches per second over ``batches`` batches, seconds to the first batch)``: the first batch, which
    includes drawing the epoch's order of every row, is timed apart."""
    started = time.perf_counter()
    iterator = iter(loader)
    next(iterator)
    first = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches / (time.perf_counter() - started), first


def measure_loader(directory, batch_size, batches, hard_k):
    """In a fresh process: opens the cache as training does and iterates ``batches`` batches twice (from the disk,
    then from the page cache), with each target's ``hard_k`` neighbours if ``hard_k``."""
    evict_page_cache(directory)
    imported = memory()
    cache = FeatureCache(directory)
    rows = CachedRows(cache, np.arange(len(cache)))
    dataset = EncodedSplit(fake_split(len(cache)), rows, rows)  # one cache read for the captioner and the retriever
    if hard_k:
        loader = hard_distractor_loader(dataset, hard_k, batch_size, seed=0)
    else:
        loader = training_loader(dataset, batch_size, seed=0)
    opened = memory()
    batches = min(batches, len(loader) - 1)
    cold, first = batches_per_second(loader, batches)
    warm, _ = batches_per_second(loader, batches)  # the same batches again
    return {"batches": batches, "cold": cold, "warm": warm, "first_batch_seconds": first, "imported": imported,
            "opened": opened, "end": memory()}  # fmt: skip


def measure_neighbours(directory, k, exact_limit):
    """In a fresh process: ``cached_neighbours`` of the whole cache (saved beside it), timed, with its index's build
    (``_index``) timed apart; the process's memory after its imports and at its peak."""
    hard_distractors.EXACT_LIMIT = exact_limit
    build_index, timings = hard_distractors._index, {}

    def timed_index(features, **options):
        started = time.perf_counter()
        index = build_index(features, **options)
        timings["index_seconds"] = time.perf_counter() - started
        return index

    hard_distractors._index = timed_index
    imported = memory()
    cache = FeatureCache(directory)
    started = time.perf_counter()
    cached_neighbours(CachedRows(cache, np.arange(len(cache))), k)
    seconds = time.perf_counter() - started
    table = [name for name in os.listdir(directory) if name.startswith("neighbours-")][0]
    return {"seconds": seconds, **timings, "imported": imported, "end": memory(),
            "table_bytes": os.path.getsize(os.path.join(directory, table))}  # fmt: skip


def in_fresh_process(args, measure):
    """Runs this script's ``--measure`` in a new Python process; returns what it measured."""
    command = [sys.executable, os.path.abspath(__file__), "--measure", measure, "--cache", args.cache, "--k",
               str(args.k), "--batch_size", str(args.batch_size), "--batches", str(args.batches), "--exact_limit",
               str(args.exact_limit)]  # fmt: skip
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def read_features(cache, chunk=100_000):
    """The whole cache as one normalised fp32 array ``[n, D]``, filled a chunk at a time (one copy in memory)."""
    features = np.empty((len(cache), cache.dim), dtype=np.float32)
    for start in range(0, len(cache), chunk):
        features[start : start + chunk] = cache[start : start + chunk].numpy()
    features /= np.linalg.norm(features, axis=1, keepdims=True).clip(min=1e-12)
    return features


def others(found, queries, k):
    """Each query's first k results that are not itself (``[Q, k + 1]`` results -> list of Q sets)."""
    return [set([int(c) for c in row if c != query and c >= 0][:k]) for row, query in zip(found, queries)]


def recall(found, exact, k):
    """Mean fraction of each query's k exact neighbours that were found."""
    return float(np.mean([len(f & e) / k for f, e in zip(found, exact)]))


def sweep(features, queries, exact, k, lists_factors, probes):
    """Recall@k and time of the IVF index at each (lists, probes): ``[(lists, probes, index seconds, search
    seconds of the queries, recall)]``."""
    results = []
    n = len(features)
    for factor in lists_factors:
        lists = int(factor * np.sqrt(n))
        started = time.perf_counter()
        index = hard_distractors._index(features, lists=lists)
        index_seconds = time.perf_counter() - started
        for probe in probes:
            index.nprobe = probe
            started = time.perf_counter()
            _, found = index.search(features[queries], k + 1)  # [Q, k + 1]
            seconds = time.perf_counter() - started
            results.append((lists, probe, index_seconds, seconds, recall(others(found, queries, k), exact, k)))
        del index
    return results


def gb(value):
    return f"{value / 1e9:.2f} GB"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = parser.add_argument_group("the simulated cache")
    data.add_argument("--rows", type=int, default=3_300_000, help="rows at full size (default 3,300,000)")
    data.add_argument("--fraction", type=float, default=1.0,
                      help="build this fraction of --rows and scale the figures where that means something "
                           "(default 1.0)")  # fmt: skip
    data.add_argument("--dim", type=int, default=512, help="embedding width (default 512)")
    data.add_argument("--centres", type=int, default=3000, help="topic centres of the embeddings (default 3000)")
    loader = parser.add_argument_group("the training loader")
    loader.add_argument("--batch_size", type=int, default=100, help="default 100, the paper's")
    loader.add_argument("--batches", type=int, default=200, help="batches timed per pass (default 200)")
    neighbours = parser.add_argument_group("the hard-distractor neighbour table")
    neighbours.add_argument("--k", type=int, default=10, help="neighbours per row, and the k of recall@k (default 10)")
    neighbours.add_argument("--recall_queries", type=int, default=50_000,
                            help="rows whose neighbours are checked against exact search (default 50,000)")  # fmt: skip
    neighbours.add_argument("--lists_factors", default="1,2,4",
                            help="IVF lists to try, times sqrt(rows) (default 1,2,4; empty: none)")  # fmt: skip
    neighbours.add_argument("--probes", default="4,8,16,32,64", help="lists searched per query to try "
                            "(default 4,8,16,32,64)")  # fmt: skip
    neighbours.add_argument("--exact_limit", type=int, default=hard_distractors.EXACT_LIMIT,
                            help="rows up to which the table is exact (default the project's "
                            f"{hard_distractors.EXACT_LIMIT:,}); lower it to try the IVF path on few rows")  # fmt: skip
    output = parser.add_argument_group("output")
    output.add_argument("--output_dir", default=None, help="where the cache is written (default a temporary "
                        "directory); removed at the end unless --keep")  # fmt: skip
    output.add_argument("--keep", action="store_true", help="keep the cache")
    parser.add_argument("--measure", choices=["loader", "hard_loader", "neighbours"], help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    """Runs the benchmark, prints its figures and returns them (measured at the built size, none scaled)."""
    args = parse_args(argv)
    if args.measure:  # one measurement, in the fresh process the parent started
        if args.measure == "neighbours":
            figures = measure_neighbours(args.cache, args.k, args.exact_limit)
        else:
            hard_k = args.k if args.measure == "hard_loader" else 0
            figures = measure_loader(args.cache, args.batch_size, args.batches, hard_k)
        print(json.dumps(figures))
        return figures
    n = int(round(args.rows * args.fraction))
    output_dir = args.output_dir or tempfile.mkdtemp(prefix="discritune-cc-scale-")
    args.cache = os.path.join(output_dir, "cc-scale-cache")
    expected = n * (args.dim * 2 + args.k * 8) + 8 * n  # shards, neighbour table, ids
    free = shutil.disk_usage(output_dir).free
    if free < 1.5 * expected:
        sys.exit(f"{output_dir} has {gb(free)} free; {n:,} rows need about {gb(expected)}: pass a smaller --fraction")
    try:
        return run(args, n)
    finally:
        if not args.keep:
            shutil.rmtree(args.cache, ignore_errors=True)
            if os.path.exists(args.cache + ".lock"):
                os.remove(args.cache + ".lock")
            if args.output_dir is None:
                shutil.rmtree(output_dir, ignore_errors=True)


def run(args, n):
    """The benchmark on ``n`` rows in ``args.cache``."""
    f = n / args.rows
    scaled = f < 1

    def linear(value, base=0):  # a size or memory measured at n rows, at --rows
        return base + (value - base) / f

    print(f"rows: {n:,}{f' (--fraction {args.fraction} of {args.rows:,})' if scaled else ''}, "
          f"{args.dim}-d fp16, {args.centres} topics; {torch.get_num_threads()} torch threads, "
          f"{faiss.omp_get_max_threads()} faiss threads, load average {os.getloadavg()[1]:.1f} over 5 min; cache in "
          f"{args.cache}")  # fmt: skip
    if scaled:
        print(f"every figure is measured at {n:,} rows; 'scaled' ones are those scaled to {args.rows:,}")
    figures = {"rows": n}

    seconds, generating = write_cache(args.cache, n, args.dim, args.centres)
    shards, total = cache_bytes(args.cache, "features-"), cache_bytes(args.cache)
    figures.update(write_seconds=seconds, write_rows_per_second=n / seconds, write_mb_per_second=shards / MB / seconds,
                   cache_bytes=total)  # fmt: skip
    print(f"cache write: {n / seconds:,.0f} rows/s, {shards / MB / seconds:.0f} MB/s of shards ({seconds:.1f} s, "
          f"{generating:.1f} s of it making the embeddings)"
          + (f"; scaled: {seconds / f:.0f} s" if scaled else ""))  # fmt: skip
    print(f"cache size on disk: {total / MB:,.1f} MB ({total / n:.0f} bytes per row)"
          + (f"; scaled: {gb(linear(total))}" if scaled else ""))  # fmt: skip

    loaders = {"loader": in_fresh_process(args, "loader")}
    neighbours = in_fresh_process(args, "neighbours")
    loaders["hard_loader"] = in_fresh_process(args, "hard_loader")
    for name, measured in loaders.items():
        what = f"with {args.k} hard distractors" if name == "hard_loader" else "plain"
        figures[name] = measured
        print(f"training loader ({what}, batch {args.batch_size}, {measured['batches']} batches): "
              f"{measured['cold']:.1f} batches/s from the disk (page cache evicted), {measured['warm']:.1f} batches/s "
              f"warm; first batch (the epoch's order) {measured['first_batch_seconds']:.2f} s")  # fmt: skip
        imported, opened, end = measured["imported"], measured["opened"], measured["end"]
        anon = f"{gb(imported['RssAnon'])} after imports, {gb(opened['RssAnon'])} with the cache and loader open, "
        anon += f"{gb(end['RssAnon'])} after the batches" + (
            f" (scaled: {gb(linear(end['RssAnon'], imported['RssAnon']))})" if scaled else "")  # fmt: skip
        print(f"  its memory: RssAnon (its own) {anon}; RssFile (mapped pages, which the kernel may reclaim) "
              f"{gb(imported['RssFile'])} after imports, {gb(end['RssFile'])} after the batches (libraries, and the "
              f"cache's pages read, with read-around; at most the cache's size); peak VmHWM {gb(end['VmHWM'])}; "
              f"the cache: {gb(total)}" + (f" (scaled: {gb(linear(total))})" if scaled else ""))  # fmt: skip

    figures["neighbours"] = neighbours
    peak, mapped = neighbours["end"]["VmHWM"], neighbours["end"]["RssFile"]
    base = neighbours["imported"]["RssAnon"]
    # the cache stays mapped to the end, so the peak less the mapped pages at the end is about the anonymous peak
    neighbours["anon_peak"] = peak - mapped
    print(f"neighbour table (k {args.k}, {'IVF' if n > args.exact_limit else 'exact'} index): "
          f"{neighbours['seconds']:.0f} s, of which {neighbours['index_seconds']:.0f} s building the index; peak "
          f"VmHWM {gb(peak)}, less {gb(mapped)} of mapped pages (libraries and the whole cache, read): about "
          f"{gb(peak - mapped)} of its own ({gb(base)} after imports); table {neighbours['table_bytes'] / MB:.0f} MB"
          + (f"; scaled: {neighbours['seconds'] / f ** 1.5 / 60:.0f} min, {gb(linear(peak - mapped, base))} of its "
             f"own plus the cache's {gb(linear(total))} mapped, table {gb(linear(neighbours['table_bytes']))}"
             if scaled else ""))  # fmt: skip

    cache = FeatureCache(args.cache)
    features = read_features(cache)  # [n, D]
    queries = np.sort(np.random.default_rng(1).choice(n, min(n, args.recall_queries), replace=False))  # [Q]
    started = time.perf_counter()
    _, found = faiss.knn(features[queries], features, args.k + 1, metric=faiss.METRIC_INNER_PRODUCT)  # [Q, k + 1]
    exact_seconds = time.perf_counter() - started
    exact = others(found, queries, args.k)
    table = cached_neighbours(CachedRows(cache, np.arange(n)), args.k)  # the one the child saved
    figures["table_recall"] = recall([set(row.tolist()) for row in table[queries]], exact, args.k)
    print(f"neighbour table recall@{args.k}: {figures['table_recall']:.4f} against exact search, {len(queries):,} "
          f"sampled rows queried against all {n:,} (exact search of them {exact_seconds:.0f} s)")  # fmt: skip

    factors = [float(x) for x in args.lists_factors.split(",") if x]
    probes = [int(x) for x in args.probes.split(",") if x]
    limit, hard_distractors.EXACT_LIMIT = hard_distractors.EXACT_LIMIT, args.exact_limit
    try:
        figures["sweep"] = sweep(features, queries, exact, args.k, factors, probes) if n > args.exact_limit else []
    finally:
        hard_distractors.EXACT_LIMIT = limit  # main() may run inside another program (the tests)
    for lists, probe, index_seconds, seconds, found_recall in figures["sweep"]:
        table_minutes = (index_seconds + seconds / len(queries) * n) / 60  # the index, then every row queried
        print(f"IVF lists {lists} ({lists / np.sqrt(n):.1f} sqrt(n)), probes {probe}: recall@{args.k} "
              f"{found_recall:.4f}; index {index_seconds:.0f} s, search {seconds / len(queries) * 1e3:.2f} ms/query "
              f"(a whole table: {table_minutes:.1f} min"
              + (f", scaled: {table_minutes / f ** 1.5:.0f} min" if scaled else "") + ")")  # fmt: skip
    print(f"load average at the end: {os.getloadavg()[1]:.1f} over 5 min, on {os.cpu_count()} cores (a load above "
          f"the cores means other work shared them: times are longer than on an idle machine)")  # fmt: skip
    return figures


if __name__ == "__main__":
    main()
