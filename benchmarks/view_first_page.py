"""Trajectory viewer on a 10,000-episode run: time to the first page and the server's memory.

The run is generated from the repository's real episodes (trajs/*.jsonl cycled and re-numbered, so
questions, steps and observations have real sizes), written to a temporary output folder. Each
repeat starts ``python -m fireharness.view`` afresh and, in headless Chromium (Playwright), opens the
run's page; measured:

- ``server_ready_s``: process start -> the URL printed (imports, reading and indexing the 10,000 episodes)
- ``first_page_s``: navigation to the run's page -> its first rows drawn (summary, filter counts, list)
- ``episode_s``: a click on a row -> that episode's steps drawn
- ``rss_mb`` / ``peak_rss_mb``: the server's resident memory after the page (VmRSS / VmHWM)

    .venv/bin/python benchmarks/view_first_page.py                  # 10,000 episodes, 3 repeats
    .venv/bin/python benchmarks/view_first_page.py --episodes 50000 --repeats 1
Goal: the first page under a second. Writes benchmarks/results/view_first_page.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from models.cpu import cpu_info  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "view_first_page.json"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def generate(out: Path, n: int) -> Path:
    lines = [line for f in sorted((ROOT / "trajs").glob("*.jsonl")) for line in f.read_text().splitlines() if line]
    (out / "trajs").mkdir(parents=True)
    path = out / "trajs" / f"bench_{n}.jsonl"
    with open(path, "w") as f:
        for i in range(n):
            d = json.loads(lines[i % len(lines)])
            d.update(index=i, run=f"bench_{n}", task="hotpotqa", split="distractor-dev")
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    return path


def proc_status(pid: int) -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def one(out: Path, page) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "fireharness.view", str(out), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = next(line.split()[1] for line in proc.stdout if line.startswith("viewer: "))
        ready = time.perf_counter() - t0
        t1 = time.perf_counter()
        page.goto(f"{url}#/run/0")
        page.locator("#episodes .vrow").first.wait_for()
        first_page = time.perf_counter() - t1
        shown = page.locator("#shown-count").inner_text()
        t2 = time.perf_counter()
        page.locator("#episodes .vrow").nth(3).click()
        page.locator(".step").first.wait_for()
        episode = time.perf_counter() - t2
        mem = proc_status(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {"server_ready_s": ready, "first_page_s": first_page, "episode_s": episode, "shown": shown,
            "rss_mb": mem.get("VmRSS"), "peak_rss_mb": mem.get("VmHWM")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--episodes", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chromium", default="/usr/bin/chromium")
    args = p.parse_args(argv)
    if args.episodes < 1 or args.repeats < 1:
        p.error("--episodes and --repeats must be at least 1")
    if not os.path.exists(args.chromium):
        p.error(f"--chromium {args.chromium}: not found; `make browser` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        path = generate(out, args.episodes)
        size_mb = path.stat().st_size / 2**20
        runs = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            for r in range(args.repeats):
                context = browser.new_context(viewport={"width": 1400, "height": 900})
                runs.append(one(out, context.new_page()))
                context.close()
                print(f"repeat {r + 1}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                     for k, v in runs[-1].items()), flush=True)
            browser.close()
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0] if isinstance(runs[0][k], float)}
    result = {"episodes": args.episodes, "jsonl_mb": round(size_mb, 1), "repeats": runs, "median": median,
              "machine": {"cpu": cpu_info(), "cores": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version(), "load_avg_at_end": os.getloadavg()}}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{args.episodes} episodes ({size_mb:.0f} MB JSONL), median of {args.repeats}: server ready "
          f"{median['server_ready_s']:.2f} s, first page {median['first_page_s']:.3f} s, episode "
          f"{median['episode_s']:.3f} s, server RSS {median['rss_mb']:.0f} MB (peak {median['peak_rss_mb']:.0f})")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
