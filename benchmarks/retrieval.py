"""Retrieval quality and speed on HotpotQA distractor-dev: recall@1/@5 of the supporting-fact titles for
BM25, dense and hybrid (RRF) over the 13,386 shipped Wikipedia paragraphs, query latency p50/p99, and the
index build time (BM25, then the embeddings). Also the dense search alone (no query encoding): FAISS flat
inner product vs numpy. Writes benchmarks/results/retrieval.json.

    .venv/bin/python benchmarks/retrieval.py                 # all 682 questions, a fresh index in a temp dir
    .venv/bin/python benchmarks/retrieval.py --questions 100 --index-dir /tmp/idx   # reuse an index

recall@k = the share of a question's gold titles (2 for HotpotQA) among the top k passages' titles,
averaged over questions (at most 0.5 at k=1; the shipped records lack some gold paragraphs, so the
ceiling is reported too); any@k / all@k = the share of questions with at least one /
every gold title in the top k.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from models.cpu import cpu_info  # noqa: E402
from tasks.hotpotqa import read_distractor  # noqa: E402
from tools import retrieval, wiki_index  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "retrieval.json"
K = (1, 5)


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def measure(index: retrieval.RetrievalIndex, records: list, retriever: str) -> dict:
    for r in records[:5]:  # warm-up: connections, the encoder's first call
        index.search(r["question"], max(K), retriever)
    hits_at = {k: [] for k in K}
    all_at = {k: [] for k in K}
    any_at = {k: [] for k in K}
    latency = []
    for r in records:
        gold = {t for t, _ in r["supporting_facts"]}
        t0 = time.perf_counter()
        hits = index.search(r["question"], max(K), retriever)
        latency.append(time.perf_counter() - t0)
        titles = [h.title for h in hits]
        for k in K:
            found = gold & set(titles[:k])
            hits_at[k].append(len(found) / len(gold))
            all_at[k].append(float(found == gold))
            any_at[k].append(float(bool(found)))
    out = {f"recall@{k}": statistics.mean(hits_at[k]) for k in K}
    out.update({f"all@{k}": statistics.mean(all_at[k]) for k in K})
    out.update({f"any@{k}": statistics.mean(any_at[k]) for k in K})
    out.update(latency_p50_ms=1000 * percentile(latency, 50), latency_p99_ms=1000 * percentile(latency, 99))
    return out


def vector_search_only(index: retrieval.RetrievalIndex, records: list) -> dict:
    """Search the vectors alone (queries encoded beforehand): FAISS IndexFlatIP vs numpy matmul."""
    import numpy as np

    index.load_dense()
    queries = index._embedder.encode([r["question"] for r in records])
    matrix = index._faiss.index.reconstruct_n(0, index._faiss.ntotal)  # the flat index's own vectors
    out = {}
    for name, search in (("faiss", lambda q: index._faiss.search(q[None, :], 5)),
                         ("numpy", lambda q: np.argpartition(-(matrix @ q), 5)[:5])):
        search(queries[0])
        times = []
        for q in queries:
            t0 = time.perf_counter()
            search(q)
            times.append(time.perf_counter() - t0)
        out[name] = {"p50_ms": 1000 * percentile(times, 50), "p99_ms": 1000 * percentile(times, 99)}
    return out


def gold_ceiling(index: retrieval.RetrievalIndex, records: list) -> dict:
    titles = {t for (t,) in index._con().execute("SELECT title FROM chunks")}
    gold = [{t for t, _ in r["supporting_facts"]} for r in records]
    return {"gold_titles_in_corpus": sum(len(g & titles) for g in gold) / sum(len(g) for g in gold),
            "questions_with_all_gold_in_corpus": sum(g <= titles for g in gold) / len(gold)}


def measure_only(directory: Path, records: list, args) -> int:
    load_start = os.getloadavg()
    index = retrieval.RetrievalIndex(directory)
    results = {r: measure(index, records, r) for r in args.retrievers}
    summary = {"what": "recall of HotpotQA distractor-dev supporting-fact titles among retrieved passages",
               "index": str(directory), "questions": len(records), "passages": int(index.meta["n_chunks"]),
               "ceiling": gold_ceiling(index, records), "retrievers": results,
               "vector_search_only": vector_search_only(index, records) if "dense" in args.retrievers else None,
               "cpu": cpu_info(), "cores": os.cpu_count(), "loadavg_start": load_start,
               "loadavg_end": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M")}
    index.close()
    print(json.dumps(summary, indent=2))
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--questions", type=int, default=None, help="first N distractor-dev questions (default all 682)")
    p.add_argument("--index-dir", default=None, help="build into / reuse this directory (default: a fresh temp dir)")
    p.add_argument("--retrievers", nargs="+", choices=retrieval.RETRIEVERS, default=list(retrieval.RETRIEVERS))
    p.add_argument("--measure-only", metavar="DIR", default=None,
                   help="query an index built before (e.g. one restricted to a subset); no build times")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    records = read_distractor("dev")[: args.questions]
    load_start = os.getloadavg()
    if args.measure_only:
        return measure_only(Path(args.measure_only), records, args)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()  # BM25 alone, always from scratch
        bm25_build = retrieval.build(wiki_index.SHIPPED_CORPUS, Path(tmp) / "bm25", dense=False)
        t_bm25 = time.perf_counter() - t0
        directory = Path(args.index_dir or Path(tmp) / "full")
        t0 = time.perf_counter()  # the embeddings this index still lacks (all of them in a fresh directory)
        dense_build = retrieval.build(wiki_index.SHIPPED_CORPUS, directory, dense=True)
        t_dense = time.perf_counter() - t0
        index = retrieval.RetrievalIndex(directory)
        ceiling = gold_ceiling(index, records)
        results = {r: measure(index, records, r) for r in args.retrievers}
        vectors = vector_search_only(index, records)
        index.close()
    summary = {
        "what": "recall of HotpotQA distractor-dev supporting-fact titles among retrieved passages",
        "questions": len(records), "passages": int(dense_build["n_chunks"]),
        "build_s": {"bm25": round(t_bm25, 2), "embeddings": round(t_dense, 2),
                    "chunks_embedded": int(dense_build["chunks_embedded"]), "chunks_read": int(bm25_build["chunks_added"]),
                    "embedded_per_s": round(int(dense_build["chunks_embedded"]) / t_dense, 2)},
        "ceiling": ceiling,
        "retrievers": results, "vector_search_only": vectors,
        "embedder": dense_build.get("embedder") or "sentence-transformers/all-MiniLM-L6-v2",
        "cpu": cpu_info(), "cores": os.cpu_count(), "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
        "note": "shared machine: other jobs ran on the same 2 cores during the measurement",
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    rows = [[r, f"{m['recall@1']:.3f}", f"{m['recall@5']:.3f}", f"{m['all@5']:.3f}", f"{m['latency_p50_ms']:.1f}",
             f"{m['latency_p99_ms']:.1f}"] for r, m in results.items()]
    print(tabulate(rows, headers=["retriever", "recall@1", "recall@5", "all@5", "p50 ms", "p99 ms"], tablefmt="github"))
    print(f"gold titles in the corpus at all: {ceiling['gold_titles_in_corpus']:.3f} (questions with every gold "
          f"paragraph: {ceiling['questions_with_all_gold_in_corpus']:.3f})")
    print(f"build: BM25 {t_bm25:.1f} s, embeddings {t_dense:.1f} s for {dense_build['chunks_embedded']} of "
          f"{summary['passages']} passages; "
          f"vector search alone: {json.dumps(vectors)}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
