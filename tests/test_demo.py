"""``make demo``'s job (experiments/demo.py), the README's first command, as a user runs it: one question, one step
of 32 tokens, both rows in one vLLM engine, the paired table and the viewer command; a re-run resumes without an
engine; a bad adapter stops it in one line."""
import os
import subprocess
import sys

from fireharness.paths import ROOT


def demo(out, *extra):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, "-m", "experiments.demo", "--n", "1", "--max_steps", "1", "--max_tokens", "32", "--output_dir", str(out), *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_demo_prints_both_rows_their_pairing_and_the_viewer_command(tmp_path):
    out = tmp_path / "demo"
    first = demo(out)
    assert first.returncode == 0, first.stderr[-2000:]
    for row in ("demo_prompted_react_lenient", "demo_finetuned_react_lenient", "Paired:",
                f"python -m fireharness.view {out}"):
        assert row in first.stdout
    assert "engine ready in" in first.stderr
    assert "Loading safetensors" not in first.stderr  # vLLM's log went to its file, not the terminal
    assert (out / "engine.log").stat().st_size > 0
    for run in ("prompted", "finetuned"):
        assert len((out / "trajs" / f"demo_{run}_react_lenient.jsonl").read_text().splitlines()) == 1

    again = demo(out)  # every answer on disk: no engine, the same table
    assert again.returncode == 0 and "engine ready in" not in again.stderr
    assert again.stdout.split("Paired:")[0].splitlines()[1:] == first.stdout.split("Paired:")[0].splitlines()[1:]

    bad = demo(out, "--adapter", str(tmp_path))
    assert bad.returncode == 2 and "--adapter" in bad.stderr and "no adapter_config.json there" in bad.stderr
