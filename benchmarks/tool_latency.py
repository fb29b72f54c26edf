"""Offline Wikipedia tool latency: search (hit, miss, typo) and lookup p50/p99, over the shipped
13,386 HotpotQA paragraphs and over a synthetic corpus (default 1 M paragraphs), each built into a
temporary index (build time reported). Writes benchmarks/results/tool_latency.json.

    .venv/bin/python benchmarks/tool_latency.py                    # shipped + 1 M synthetic
    .venv/bin/python benchmarks/tool_latency.py --paragraphs 100000 --queries 500
Targets: search p50 < 5 ms on the shipped corpus, < 50 ms at 1 M paragraphs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools import ToolConfig, get_tool  # noqa: E402
from tools import wiki_index  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "tool_latency.json"


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def typo(rng, title):
    i = rng.randrange(len(title))
    return title[:i] + title[i + 1:] if len(title) > 4 else title + "x"


def measure(index_dir: Path, n_queries: int, seed: int = 0) -> dict:
    tool = get_tool("wikipedia", ToolConfig(offline=True, index_dir=str(index_dir)))
    tool.check()
    con = sqlite3.connect(tool.index_path)
    n = con.execute("SELECT max(id) FROM pages").fetchone()[0]
    rng = random.Random(seed)
    rows = [con.execute("SELECT title, body FROM pages WHERE id = ?", (rng.randint(1, n),)).fetchone()
            for _ in range(n_queries)]
    con.close()
    rows = [r for r in rows if r]
    timings = {"search_hit": [], "search_miss": [], "search_typo": [], "lookup": []}
    s = tool.session()
    s.act("search", rows[0][0])  # open the connection outside the timings
    for title, body in rows:
        words = body.split()
        miss = " ".join(rng.sample(words, min(3, len(words))))  # a phrase, as agents often search
        for kind, query in (("search_hit", title), ("search_miss", miss), ("search_typo", typo(rng, title))):
            if kind != "search_hit":
                s.act("search", title)  # reset the page so lookups below read a known page
            t0 = time.perf_counter()
            s.act("search", query)
            timings[kind].append(time.perf_counter() - t0)
        s.act("search", title)
        t0 = time.perf_counter()
        s.act("lookup", rng.choice(words).strip(".,\"'()"))
        timings["lookup"].append(time.perf_counter() - t0)
    tool.close()
    return {k: {"n": len(v), "p50_ms": 1000 * statistics.median(v), "p99_ms": 1000 * percentile(v, 99),
                "mean_ms": 1000 * statistics.fmean(v)} for k, v in timings.items()}


def synthetic_corpus(path: Path, n: int, seed: int = 0) -> None:
    """HotpotQA-format paragraphs with a Zipf-like vocabulary, so term frequencies look like text."""
    rng = random.Random(seed)
    syll = ["ka", "lo", "mi", "ra", "den", "tor", "vi", "sa", "nu", "bel", "gar", "il", "on", "es", "ut", "pra"]
    vocab = list({"".join(rng.choice(syll) for _ in range(rng.randint(2, 4))) for _ in range(60000)})
    cum_weights = list(__import__("itertools").accumulate(1 / (i + 1) for i in range(len(vocab))))
    names = vocab[2000:]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            title = f"{rng.choice(names).title()} {rng.choice(names).title()}"
            if i % 3 == 0:
                title += f" ({rng.choice(vocab[:300])})"  # disambiguated titles, like "Ed Wood (film)"
            sentences = []
            for _ in range(rng.randint(2, 6)):
                words = rng.choices(vocab, cum_weights=cum_weights, k=rng.randint(8, 24))
                sentences.append(" ".join(words).capitalize() + ".")
            sentences[0] = f"{title} is {sentences[0][0].lower()}{sentences[0][1:]}"
            f.write(json.dumps({"title": title, "sentences": sentences}) + "\n")


def machine() -> dict:
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": platform.processor() or
            platform.machine(), "cores": os.cpu_count(), "sqlite": sqlite3.sqlite_version,
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paragraphs", type=int, default=1_000_000, help="synthetic corpus size (0: skip)")
    parser.add_argument("--queries", type=int, default=1000, help="queries per kind")
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--workdir", help="keep the corpora and indexes here and reuse them (default: a temp dir)")
    args = parser.parse_args()
    report = {"machine": machine(), "corpora": {}}
    with tempfile.TemporaryDirectory(prefix="tool-latency-") as tmp:
        tmp = Path(args.workdir or tmp)
        t0 = time.perf_counter()
        meta = wiki_index.build(wiki_index.SHIPPED_CORPUS, tmp / "shipped" / wiki_index.INDEX_FILE)
        report["corpora"]["shipped"] = {"paragraphs": int(meta["n_pages"]), "build_s": time.perf_counter() - t0,
                                        "index_mb": (tmp / "shipped" / wiki_index.INDEX_FILE).stat().st_size / 2**20,
                                        "latency": measure(tmp / "shipped", args.queries)}
        if args.paragraphs:
            corpus = tmp / f"synthetic_{args.paragraphs}.jsonl"
            t0 = time.perf_counter()
            if not corpus.exists():
                synthetic_corpus(corpus, args.paragraphs)
            gen_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            index = tmp / f"synthetic_{args.paragraphs}" / wiki_index.INDEX_FILE
            meta = (wiki_index.ensure if args.workdir else wiki_index.build)([corpus], index, progress=True)
            build_s = time.perf_counter() - t0
            report["corpora"][f"synthetic_{args.paragraphs}"] = {
                "paragraphs": int(meta["n_pages"]), "generate_s": gen_s, "build_s": build_s,
                "index_mb": index.stat().st_size / 2**20, "latency": measure(index.parent, args.queries)}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    rows = []
    for name, c in report["corpora"].items():
        for kind, lat in c["latency"].items():
            rows.append([name, f"{c['paragraphs']:,}", f"{c['build_s']:.1f}", kind, f"{lat['p50_ms']:.2f}",
                         f"{lat['p99_ms']:.2f}"])
    print(tabulate(rows, headers=["corpus", "pages", "build s", "action", "p50 ms", "p99 ms"]))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
