"""Shards of a run for job arrays (Slurm, SkyPilot, several servers), and merging them back.

``generation.py ... --shard i/N`` runs the i-th of N deterministic shares of a run's questions (each
with all its samples: pass@k and majority votes need a question's samples together) and writes
``trajs/<run>.shard-i-of-N.jsonl``. Its episodes keep the run's own name, so the leaderboard reads
the shards of one run as one run. Merging:

    python -m fireharness.shards merge trajs/RUN.shard-*-of-4.jsonl        # -> trajs/RUN.jsonl

A torn last line is dropped, the first complete record per (index, sample) is kept, nothing is
duplicated, and the output is written atomically (a temporary file renamed over it). An existing
output is read first, so merging again, with or without new shards, never loses or repeats a record:
merged twice, the same file. Re-running the unsharded command afterwards writes ``results/RUN.json``
from the merged file without running anything.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from fireharness.records import episode_key, read_episodes

SHARD_FILE = re.compile(r"^(?P<run>.+)\.shard-(?P<i>\d+)-of-(?P<n>\d+)$")


class ShardError(ValueError):
    """A shard spec or a set of shard files that cannot be used; the message names it and the fix."""


def parse_shard(spec: str) -> tuple:
    """'i/N' -> (i, N), with 0 <= i < N (a job array's task id and count)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
    if not m:
        raise ShardError(f"--shard {spec!r}: give i/N, the i-th of N shares, 0 <= i < N (e.g. "
                         f"$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or i >= n:
        raise ShardError(f"--shard {spec}: shard {i} of {n} does not exist; give i/N with 0 <= i < N")
    return i, n


def shard_share(items: list, i: int, n: int) -> list:
    """The i-th of n shares: every n-th item from the i-th, so that each shard gets as many questions
    from every part of the (shuffled or ordered) list as the others, and all n shares cover it once."""
    return items[i::n]


def shard_suffix(i: int, n: int) -> str:
    return f".shard-{i}-of-{n}"


def merge_files(inputs: list, output: Path) -> dict:
    """Combine trajectory files into ``output``; returns counts. Every episode must belong to one run."""
    output = Path(output)
    sources = ([output] if output.exists() else []) + [Path(p) for p in inputs if Path(p).resolve() != output.resolve()]
    kept: dict = {}
    runs, lines, duplicates = set(), [], 0
    for path in sources:
        for ep in read_episodes(path):  # a torn (half-written) line is skipped there
            runs.add(ep.run)
            if len(runs) > 1:
                raise ShardError(f"{path} holds episodes of run {ep.run!r}, others are of {sorted(runs - {ep.run})}: "
                                 f"merge the shards of one run at a time")
            key = episode_key(ep)
            if key in kept:
                duplicates += 1
                continue
            kept[key] = ep
            lines.append(ep)

    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for ep in lines:
                f.write(json.dumps(ep.to_dict(), ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"episodes": len(lines), "duplicates_dropped": duplicates, "files": [str(p) for p in sources]}


def default_output(inputs: list) -> Path:
    """trajs/RUN.shard-i-of-N.jsonl ... -> trajs/RUN.jsonl (all inputs must be shards of one RUN)."""
    stems = set()
    for p in map(Path, inputs):
        m = SHARD_FILE.match(p.name[:-len(".jsonl")] if p.name.endswith(".jsonl") else p.name)
        if not m:
            raise ShardError(f"{p} is not named RUN.shard-i-of-N.jsonl; name the merged file with -o")
        stems.add((p.parent, m.group("run")))
    if len(stems) != 1:
        raise ShardError(f"the inputs are shards of {len(stems)} runs ({', '.join(sorted(s for _, s in stems))}); "
                         f"merge one run at a time or name the merged file with -o")
    (folder, run), = stems
    return folder / f"{run}.jsonl"


def missing_shards(inputs: list) -> list:
    """Shard numbers of N absent from the inputs (a job array's failed tasks), e.g. ['2/4']."""
    seen, counts = set(), set()
    for p in map(Path, inputs):
        m = SHARD_FILE.match(p.name[:-len(".jsonl")])
        if m:
            seen.add(int(m.group("i")))
            counts.add(int(m.group("n")))
    return [f"{i}/{n}" for n in sorted(counts) for i in range(n) if i not in seen]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fireharness.shards", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    merge = sub.add_parser("merge", help="combine shard trajectory files into one, idempotently")
    merge.add_argument("inputs", nargs="+", help="trajs/RUN.shard-i-of-N.jsonl files")
    merge.add_argument("-o", "--output", help="merged file (default: trajs/RUN.jsonl beside the shards)")
    args = parser.parse_args(argv)
    try:
        missing = [p for p in args.inputs if not Path(p).is_file()]
        if missing:
            raise ShardError(f"{', '.join(missing)}: no such file; pass the shards' trajs/RUN.shard-i-of-N.jsonl")
        output = Path(args.output) if args.output else default_output(args.inputs)
        absent = missing_shards(args.inputs)
        counts = merge_files(args.inputs, output)
    except ShardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{output}: {counts['episodes']} episodes from {len(counts['files'])} files "
          f"({counts['duplicates_dropped']} repeated records dropped)")
    if absent:
        print(f"note: shards {', '.join(absent)} are not among the inputs: the merged run is partial", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
