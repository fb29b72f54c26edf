"""The CPU dtype is measured once per machine and read back from the cache after (models/cpu.py)."""
import json

import fireharness.paths
from models import cpu
from models.base import default_dtype


def test_dtype_probe_is_measured_once_per_machine_and_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(fireharness.paths, "CACHE_DIR", tmp_path)
    cpu.fastest_dtype.cache_clear()
    info = cpu.cpu_info()
    assert info["model"] and set(info["flags"]) == set(cpu.FLAGS)
    chosen = cpu.fastest_dtype()
    seconds = chosen["probe_s"]
    assert seconds["float32"] > 0 and seconds["bfloat16"] > 0
    assert chosen["dtype"] == ("bfloat16" if seconds["bfloat16"] * cpu.MARGIN < seconds["float32"] else "float32")
    assert default_dtype() == chosen["dtype"]
    # A second process reads the file instead of measuring: an edited entry is what it gets.
    path = tmp_path / "cpu_probe.json"
    known = json.loads(path.read_text())
    (key,) = known
    assert json.loads(key)[0] == info
    flipped = {"float32": "bfloat16", "bfloat16": "float32"}[chosen["dtype"]]
    path.write_text(json.dumps({key: {**known[key], "dtype": flipped}}))
    cpu.fastest_dtype.cache_clear()
    try:
        assert default_dtype() == flipped
    finally:
        cpu.fastest_dtype.cache_clear()
