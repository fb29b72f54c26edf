"""Trajectory viewer: ``python -m fireharness.view [PATHS...] [--port N] [--host H] [--export DIR]``.

PATHS: output folders (with trajs/ and results/), trajs/*.jsonl, results/*.json, FireAct's released
trajectory json, loop experiment folders (with manifest.json); default: the current folder. Serves on
127.0.0.1 (``--host`` to change) and reads only under PATHS; ``--export DIR`` writes a folder that opens
from disk instead.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .catalog import Catalog, ViewInputError


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m fireharness.view", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("paths", nargs="*", default=["."], help="output folders, trajectory or results files, FireAct "
                                                           "trajectory json, loop experiment folders")
    p.add_argument("--port", type=int, default=8765, help="port to serve on (0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--export", type=Path, metavar="DIR", help="write a static copy to DIR (opens from disk) and exit")
    args = p.parse_args(argv)
    if not 0 <= args.port < 65536:
        p.error(f"--port {args.port}: pick a port in 0-65535")
    return p, args


def main(argv=None) -> int:
    parser, args = parse_args(argv)
    try:
        if args.export is not None:
            from .export import check_export_dir

            check_export_dir(args.export)
        catalog = Catalog(args.paths)
    except ViewInputError as e:
        parser.error(str(e))
    for run in catalog.runs_payload()["runs"]:  # scores and rows now, so that no first page waits for them
        catalog.rows_json(run["id"])
    n_runs = len(catalog.runs)
    n_eps = sum(len(r.rows) for r in catalog.runs.values())
    for path, why in catalog.skipped:
        print(f"view: skipped {path}: {why}", file=sys.stderr)
    if args.export is not None:
        from .export import export

        done = export(catalog, args.export)
        print(f"exported {done['runs']} runs, {done['episodes']} episodes, {done['comparisons']} comparisons: "
              f"open {(args.export / 'index.html').resolve().as_uri()}")
        return 0
    from .server import make_server

    try:
        server = make_server(catalog, args.host, args.port)
    except OSError as e:
        parser.error(f"--port {args.port}: cannot listen on {args.host}:{args.port} ({e.strerror}); pick another port")
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"{n_runs} runs, {n_eps} episodes from {', '.join(map(str, args.paths))}", flush=True)
    print(f"viewer: http://{shown}:{port}/  (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
