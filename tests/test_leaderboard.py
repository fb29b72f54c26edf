"""leaderboard.py over FireAct's released trajectories and over this project's own run files."""
import json
import math
import os

import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import leaderboard  # noqa: E402
from fireharness.leaderboard_stats import mcnemar_exact, paired_difference  # noqa: E402
from fireharness.paths import DATA_DIR  # noqa: E402
from fireharness.records import Episode, Step, append_episode  # noqa: E402

FIREACT_TRAJS = DATA_DIR / "fireact" / "trajs"


def parse_markdown(text: str) -> list:
    """Rows of the first pipe table in ``text`` as dicts (header -> cell)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        if set(line) <= set("|-: "):
            break  # the next table's separator: the first table ended
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells == header:
            break
        rows.append(dict(zip(header, cells)))
    return rows


def run_cli(capsys, *argv) -> str:
    assert leaderboard.main([str(a) for a in argv]) == 0
    return capsys.readouterr().out


def episode(run, index, em, f1, finished=True, model="smollm2-135m", task="hotpotqa", split="dev", **kw):
    steps = [Step(thought="t", action="search[x]", action_type="search", argument="x", observation="o",
                  tool="wikipedia", tool_error=kw.pop("tool_error", None)),
             Step(thought="t", action="finish[y]", action_type="finish", argument="y")]
    return Episode(task=task, split=split, index=index, question=f"q{index}", gold="y", prediction="y",
                   em=em, f1=f1, reward=em, finished=finished, steps=steps if finished else steps[:1],
                   method="react", format="chat", model=model, adapter=kw.pop("adapter", None),
                   tool="wikipedia/offline", run=run, **kw)


def write_run(root, name, episodes, n_intended=None, with_results=True):
    (root / "trajs").mkdir(parents=True, exist_ok=True)
    traj = root / "trajs" / f"{name}.jsonl"
    for ep in episodes:
        append_episode(traj, ep)
    if with_results:
        (root / "results").mkdir(exist_ok=True)
        n = n_intended or len(episodes)
        first = episodes[0]
        results = {"run": name, "task": first.task, "split": first.split, "method": first.method,
                   "tool": first.tool, "model": first.model, "adapter": first.adapter, "format": first.format,
                   "n_intended": n, "n_episodes": len(episodes), "n_finished": sum(e.finished for e in episodes),
                   "em": {"mean": sum(e.em or 0 for e in episodes) / n, "lo": 0.0, "hi": 1.0, "n": n},
                   "f1": {"mean": sum(e.f1 or 0 for e in episodes) / n, "lo": 0.0, "hi": 1.0, "n": n},
                   "mean_steps": 2.0, "tool_errors": 0, "trajectories": f"trajs/{name}.jsonl"}
        (root / "results" / f"{name}.json").write_text(json.dumps(results))
    return traj


def test_fireact_released_numbers_reproduce(capsys, tmp_path):
    out = run_cli(capsys, FIREACT_TRAJS, "--csv", tmp_path / "lb.csv", "--latex", tmp_path / "lb.tex",
                  "--plot", tmp_path / "lb.png")
    rows = {(r["Model"], r["Adapter"]): r for r in parse_markdown(out)}
    expected = {  # FireAct paper / README: EM and F1 over the 500 asked, F1 over those finished
        ("Llama-2-7B", "LoRA"): ("500", "26.2", "38.0", "38.0"),
        ("Llama-2-13B", "LoRA"): ("499", "34.4", "47.9", "48.0"),
        ("GPT-3.5-Turbo-0613", "fine-tuned"): ("465", "40.0", "54.2", "58.3"),
    }
    assert set(rows) == set(expected)
    for key, (finished, em, f1, f1_fin) in expected.items():
        row = rows[key]
        assert (row["N"], row["Finished"], row["EM"], row["F1"], row["F1 fin."]) == ("500", finished, em, f1, f1_fin)
        assert row["Task"] == "hotpotqa" and row["Split"] == "dev" and row["Method"] == "react"
        lo, hi = (float(x) for x in row["EM 95% CI"].strip("[]").split(","))
        assert lo < float(em) < hi and hi - lo < 10  # Wilson interval at n=500
    # The 7B model asks an unknown "reflect" tool 26 times; FireAct records that as an exception.
    assert rows[("Llama-2-7B", "LoRA")]["Tool errors"] == "26"

    df = pd.read_csv(tmp_path / "lb.csv")
    assert sorted(df["em"].round(3)) == [0.262, 0.344, 0.4] and set(df["n"]) == {500}
    tex = (tmp_path / "lb.tex").read_text()
    assert "\\toprule" in tex and "Llama-2-13B" in tex and "EM 95\\% CI" in tex
    import matplotlib.image

    img = matplotlib.image.imread(tmp_path / "lb.png")
    assert img.shape[0] > 300 and img.shape[1] > 600
    assert img[..., :3].std() > 0.1  # drawn bars, not a blank canvas


def test_own_runs_sit_in_the_same_table(capsys, tmp_path):
    # 4 questions intended, one never written (the run was cut), one unfinished.
    write_run(tmp_path, "smol-react", [episode("smol-react", 0, 1.0, 1.0), episode("smol-react", 5, 0.0, 0.5),
                                       episode("smol-react", 9, 0.0, 0.0, finished=False)], n_intended=4)
    # A results file whose trajectories are gone still gives a row from its own numbers.
    write_run(tmp_path, "lost-trajs", [episode("lost-trajs", 0, 1.0, 1.0, model="/models/qwen-0.5b",
                                               adapter="/ckpt/lora-a")], n_intended=2)
    (tmp_path / "trajs" / "lost-trajs.jsonl").unlink()
    out = run_cli(capsys, FIREACT_TRAJS, tmp_path)  # results/ and trajs/ both read: one row per run
    rows = parse_markdown(out)
    assert len(rows) == 5
    ours = next(r for r in rows if r["Model"] == "smollm2-135m")
    assert (ours["N"], ours["Finished"], ours["EM"], ours["F1"], ours["F1 fin."]) == ("4", "2", "25.0", "37.5", "75.0")
    assert ours["Tool"] == "wikipedia/offline" and ours["Steps"] == "1.67"
    lost = next(r for r in rows if r["Model"] == "qwen-0.5b")
    assert (lost["Adapter"], lost["N"], lost["Finished"], lost["EM"], lost["F1 fin."]) == ("lora-a", "2", "1", "50.0", "100.0")
    assert any(r["Model"] == "Llama-2-7B" for r in rows)

    # A run without --evaluate has no em/f1 in its results or episodes: blanks, not zeros.
    noeval = tmp_path / "noeval"
    write_run(noeval, "unscored", [episode("unscored", i, None, None) for i in range(2)])
    summary = json.loads((noeval / "results" / "unscored.json").read_text())
    for key in ("em", "f1"):
        summary.pop(key)
    (noeval / "results" / "unscored.json").write_text(json.dumps(summary))
    row = parse_markdown(run_cli(capsys, noeval / "results"))[0]
    assert (row["N"], row["Finished"], row["EM"], row["F1"]) == ("2", "2", "", "")

    # The trajectories alone (no results file beside them) count the questions they hold.
    alone = tmp_path / "alone"
    alone.mkdir()
    traj = write_run(alone, "bare", [episode("bare", i, float(i % 2), 0.5) for i in range(6)], with_results=False)
    row = parse_markdown(run_cli(capsys, traj))[0]
    assert (row["N"], row["EM"], row["F1"]) == ("6", "50.0", "50.0")


def test_compare_fireact_runs(capsys):
    out = run_cli(capsys, FIREACT_TRAJS, "--compare", "llama-2-7b", "llama-2-13b")
    assert "499 questions in both, 499 finished by both" in out
    tables = out.split("### Paired comparison")[1]
    rows = {r["Metric"]: r for r in parse_markdown(tables)}
    assert rows["EM"]["N paired"] == "499" and rows["EM"]["test"] == "McNemar exact"
    assert float(rows["EM"]["B - A"]) == pytest.approx(8.2, abs=0.05)
    lo, hi = (float(x) for x in rows["EM"]["95% CI (paired bootstrap)"].strip("[]").split(","))
    assert 0 < lo < 8.2 < hi
    assert float(rows["EM"]["p"]) < 1e-3
    # Run by file path; the same bootstrap seed gives the same table twice.
    files = sorted(FIREACT_TRAJS.glob("*llama-2-7b*")) + sorted(FIREACT_TRAJS.glob("*llama-2-13b*"))
    again = run_cli(capsys, "--compare", *files)
    assert rows["EM"]["95% CI (paired bootstrap)"] in again


def test_paired_statistics_on_known_cases():
    # b=1 only-A-right, c=9 only-B-right: p = 2 * (C(10,0) + C(10,1)) / 2^10
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    a = [1, 0, 0, 1, 0, 1, 0, 0] * 10
    b = [1, 1, 0, 1, 1, 1, 0, 1] * 10
    d = paired_difference(a, b)
    assert d["diff"] == pytest.approx(0.375) and d["boot_lo"] < 0.375 < d["boot_hi"]
    assert d["norm_lo"] == pytest.approx(0.375 - 1.959963984540054 * math.sqrt(0.375 * 0.625 / 79))
    assert paired_difference(a, a)["diff"] == 0 and paired_difference(a, a)["p_normal"] == 1.0


def test_bootstrap_of_big_runs_in_bounded_memory():
    """Two 10,000-question runs: the 10,000 resamples are drawn in blocks (one draw held 800 MB of indices),
    the same resamples as one draw of the same generator."""
    import tracemalloc

    import numpy as np

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 2, 10_000), rng.integers(0, 2, 10_000)
    tracemalloc.start()
    d = paired_difference(a, b)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 200e6, f"{peak / 1e6:.0f} MB"
    small = paired_difference(a[:500], b[:500])  # two blocks of draws against one draw: the same resamples
    draws = np.random.default_rng(233).integers(0, 500, size=(10_000, 500))
    boots = (b[:500] - a[:500])[draws].mean(axis=1)
    assert (small["boot_lo"], small["boot_hi"]) == tuple(np.percentile(boots, [2.5, 97.5]))
    assert d["boot_lo"] < d["diff"] < d["boot_hi"]


def test_compare_own_runs_pairs_every_common_question_unfinished_as_wrong(capsys, tmp_path):
    """The paired test scores what the EM column scores: B right where A gave up counts for B, and a
    question only one run holds (a run still being written) is left out."""
    write_run(tmp_path, "a", [episode("a", i, 0.0, 0.0) for i in range(6)] + [episode("a", 6, 0, 0, finished=False)]
              + [episode("a", 7, 1.0, 1.0)])
    write_run(tmp_path, "b", [episode("b", i, 1.0, 1.0) for i in range(5)] + [episode("b", 5, 0.0, 0.0)]
              + [episode("b", 6, 1.0, 1.0)])
    out = run_cli(capsys, "--compare", tmp_path / "results" / "a.json", tmp_path / "trajs" / "b.jsonl")
    rows = {r["Metric"]: r for r in parse_markdown(out)}
    assert rows["EM"]["N paired"] == "7" and rows["EM"]["B - A"] == "85.7"
    assert rows["EM"]["p"] == f"{2 / 64:.3g}"  # 0 vs 6 discordant pairs
    assert "7 questions in both, 6 finished by both" in out
    # Two runs of the same (model, adapter, task, split, method, tool) are told apart by name.
    table = parse_markdown(run_cli(capsys, tmp_path))
    assert sorted(r["Run"] for r in table) == ["a", "b"]


def test_breakdowns(capsys, tmp_path):
    out = run_cli(capsys, FIREACT_TRAJS, "--by", "type")
    rows = parse_markdown(out.split("### By type")[1])
    gpt = {r["Type"]: r for r in rows if r["Model"].startswith("GPT")}
    assert set(gpt) == {"bridge", "comparison"}
    # denominators are the questions asked of each type, finished or not
    assert int(gpt["bridge"]["N"]) + int(gpt["comparison"]["N"]) == 500
    assert int(gpt["bridge"]["Finished"]) + int(gpt["comparison"]["Finished"]) == 465
    assert float(gpt["comparison"]["EM"]) > float(gpt["bridge"]["EM"])

    # MMLU subjects come from the task's records when the episodes carry no meta.
    write_run(tmp_path, "mmlu-run", [episode("mmlu-run", i, 1.0, 1.0, task="mmlu", split="test") for i in range(3)],
              with_results=False)
    rows = parse_markdown(run_cli(capsys, tmp_path / "trajs", "--by", "subject").split("### By subject")[1])
    from tasks import get_task

    task = get_task("mmlu", "test")
    assert {r["Subject"] for r in rows} == {task.meta(i)["subject"] for i in range(3)}


@pytest.mark.parametrize("argv, words", [
    (["/no/such/dir"], ["/no/such/dir", "no such file"]),
    ([str(FIREACT_TRAJS), "--compare", "llama-2-7b", "llama-9"], ["llama-9", "Did you mean"]),
    ([str(FIREACT_TRAJS), "--compare", "llama", "gpt"], ["matches 2 runs"]),
    ([str(FIREACT_TRAJS), "--plot", "/no/such/dir/x.png"], ["--plot", "does not exist"]),
])
def test_bad_input_is_one_clear_error(capsys, argv, words):
    with pytest.raises(SystemExit) as exc:
        leaderboard.main(argv)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # the error comes before any table
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("leaderboard.py: error:") and all(w in last for w in words)


def test_unknown_json_is_rejected_by_name(capsys, tmp_path):
    bad = tmp_path / "notes.json"
    bad.write_text(json.dumps({"hello": "world"}))
    with pytest.raises(SystemExit):
        leaderboard.main([str(bad)])
    assert "notes.json is neither a results file" in capsys.readouterr().err
