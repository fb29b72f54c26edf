"""Where the repository's data lives and where derived artefacts are cached."""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Shipped benchmark data (copied from FireAct, ReAct and HotpotQA, see data/README.md).
DATA_DIR = Path(os.environ.get("FIREHARNESS_DATA", ROOT / "data"))
# Derived, rebuildable artefacts: the offline Wikipedia index, the dequantized embedded model.
CACHE_DIR = Path(os.environ.get("FIREHARNESS_CACHE", Path.home() / ".cache" / "fireharness"))
PROMPTS_DIR = ROOT / "methods" / "prompts"


def cache_dir(*parts: str) -> Path:
    path = CACHE_DIR.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
