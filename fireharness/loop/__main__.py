"""``python -m fireharness.loop CONFIG.yaml [--field value ...]`` (see fireharness/loop/__init__.py)."""
import sys

from . import Loop, LoopConfigError, LoopError, parse_config


def main(argv=None) -> int:
    try:
        loop = Loop(parse_config(argv))
        manifest = loop.execute()
    except (LoopConfigError, LoopError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    last = manifest["last_invocation"]
    overhead = f", overhead {last['overhead']:.2f}x the stages' own work" if last["overhead"] else ""
    print(f"loop: {loop.dir}: {len(manifest['stages'])} stages done in {last['wall_s']:.0f} s{overhead}")
    return 0


if __name__ == "__main__":  # vLLM's engine may start worker processes: keep the entry point guarded
    sys.exit(main())
