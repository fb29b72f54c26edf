"""Debug a tool by hand, or build the offline Wikipedia index.

    python -m tools wikipedia search "Scott Derrickson" lookup director --offline
    python -m tools google search "Canadian rock band Vices and Virtues" --offline
    python -m tools build-index --corpus enwiki-abstracts/ --index-dir /data/wiki-index
    python -m tools build-index --corpus my_docs/ --name mydocs      # any documents: BM25 + dense
    python -m tools retrieve search "how are chunks made" --index mydocs --retriever hybrid

ACTION ARGUMENT pairs run in one session, so a ``lookup`` sees the page of the ``search`` before it.
The observation goes to stdout, its source and latency to stderr; a tool error exits 1.
"""
from __future__ import annotations

import argparse
import sys

from . import TOOLS, InvalidAction, ToolConfig, ToolSetupError, get_tool
from fireharness.registry import UnknownNameError


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["build-index"]:
        if any(a == "--name" or a.startswith("--name=") for a in argv):  # any documents, for the retrieve tool
            from .retrieval import build_index_main as build_documents_index
            return build_documents_index(argv[1:])
        from .wikipedia import build_index_main
        return build_index_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m tools", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tool", help=f"one of: {', '.join(TOOLS.names())}")
    parser.add_argument("actions", nargs="+", metavar="ACTION ARGUMENT", help="e.g. search 'Scott Derrickson'")
    parser.add_argument("--offline", action="store_true", help="offline index / cache replay, no network")
    parser.add_argument("--search-fallback", choices=["wikipedia"], default=None,
                        help="google offline: answer a cache miss from the offline Wikipedia index")
    parser.add_argument("--cache-path", default=None, help="google: writable search.json")
    parser.add_argument("--extra-cache", action="append", default=[], help="google: FireAct search.json to merge")
    parser.add_argument("--index-dir", default=None, help="wikipedia: offline index directory")
    parser.add_argument("--corpus", default=None, help="wikipedia: HotpotQA-format corpus to index")
    parser.add_argument("--index", default=None, help="retrieve: a build-index --name (default: the shipped paragraphs)")
    parser.add_argument("--retriever", choices=["bm25", "dense", "hybrid"], default=None,
                        help="retrieve: ranking (default hybrid); wikipedia: how a miss finds similar titles")
    parser.add_argument("--top-k", type=int, default=3, help="retrieve: passages per search")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP request")
    parser.add_argument("--retries", type=int, default=4, help="retries after the first attempt")
    args = parser.parse_args(argv)
    if len(args.actions) % 2:
        parser.error("actions come in pairs: ACTION ARGUMENT [ACTION ARGUMENT ...]")
    config = ToolConfig(offline=args.offline, search_fallback=args.search_fallback, cache_path=args.cache_path,
                        extra_caches=args.extra_cache, index_dir=args.index_dir, corpus=args.corpus,
                        index=args.index, retriever=args.retriever, top_k=args.top_k,
                        timeout_s=args.timeout, retries=args.retries)
    try:
        tool = get_tool(args.tool, config)
        tool.check()
    except (UnknownNameError, ToolSetupError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    status = 0
    try:
        session = tool.session()
        pairs = list(zip(args.actions[::2], args.actions[1::2]))
        for verb, argument in pairs:
            try:
                obs = session.act(verb, argument)
            except InvalidAction as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            if len(pairs) > 1:
                print(f"{verb}[{argument}]")
            if obs.error:
                print(f"tool error: {obs.error}", file=sys.stderr)
                status = 1
            else:
                print(obs.text)
            print(f"[source={obs.source}, {obs.latency_s * 1000:.1f} ms]", file=sys.stderr)
    finally:
        tool.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
