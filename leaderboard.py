"""Leaderboard: EM/F1 tables with 95% CIs, paired comparisons and plots from results and trajectories.

    python leaderboard.py                                   # every run in results/
    python leaderboard.py data/fireact/trajs results/ --csv lb.csv --latex lb.tex --plot lb.png
    python leaderboard.py data/fireact/trajs --by type
    python leaderboard.py data/fireact/trajs --compare llama-2-7b llama-2-13b

Inputs: ``results/<run>.json`` (with its ``trajs/<run>.jsonl`` when found), ``trajs/<run>.jsonl`` alone,
FireAct's released trajectory json, or folders of them. One row per (model, adapter, task, split,
method, tool). EM and F1 are averaged over the questions *intended* (unfinished count 0, as FireAct
divides by 500 even when fewer finished); "F1 fin." averages over the finished ones only.
"""
from __future__ import annotations

import argparse
import difflib
import math
import sys
from pathlib import Path

import pandas as pd

from fireharness.view.sources import LeaderboardInputError, Run, attach_meta, load_runs
from fireharness.leaderboard_stats import mcnemar_exact, paired_difference
from fireharness.stats import mean_ci, pass_at_k, sample_ks

KEY_COLUMNS = ["model", "adapter", "task", "split", "method", "protocol", "tool"]
NAN = float("nan")
BREAKDOWNS = ("type", "level", "subject")


# --- numbers ---------------------------------------------------------------------------------
def _ci_fields(prefix: str, ci: dict) -> dict:
    return {prefix: ci["mean"], f"{prefix}_lo": ci["lo"], f"{prefix}_hi": ci["hi"]}


def score_questions(q: pd.DataFrame, n_intended: int) -> dict:
    """EM/F1 over the intended questions and over the finished ones, from per-question rows."""
    finished = q[q["finished"].astype(bool)] if len(q) else q
    row = {"n": n_intended, "finished": int(len(finished))}
    row.update(_ci_fields("em", mean_ci(list(q["em"]), n=n_intended)))
    row.update(_ci_fields("f1", mean_ci(list(q["f1"]), n=n_intended)))
    row.update(_ci_fields("em_finished", mean_ci(list(finished["em"]))))
    row.update(_ci_fields("f1_finished", mean_ci(list(finished["f1"]))))
    row["steps"] = float(q["steps"].mean()) if len(q) else NAN
    row["tool_errors"] = int(q["tool_errors"].sum()) if len(q) else 0
    row.update(repeated_sampling_scores(q, n_intended))
    return row


def repeated_sampling_scores(q: pd.DataFrame, n_intended: int) -> dict:
    """pass@k (Chen et al. 2021) and majority-vote EM of a run with several samples per question; questions
    intended but not run count 0, a question with fewer samples than k counts whether one is right."""
    if "samples" not in q or not q["samples"].notna().any():
        return {}
    n, c = q["samples"].fillna(1).astype(int), q["correct"].fillna(q["em"] >= 0.5).astype(int)
    row = {"k": int(n.max())}
    for k in sample_ks(row["k"]):
        row.update(_ci_fields(f"pass@{k}", mean_ci([pass_at_k(a, b, k) if a >= k else float(b > 0)
                                                    for a, b in zip(n, c)], n=n_intended)))
    row.update(_ci_fields("majority_em", mean_ci(list(q["majority_em"].fillna(q["em"])), n=n_intended)))
    return row


def score_summary(s: dict) -> dict:
    """A results json whose trajectories are missing: its own numbers (no CI for 'finished')."""
    n, fin = int(s.get("n_intended") or 0), int(s.get("n_finished") or 0)
    row = {"n": n, "finished": fin}
    for m in ("em", "f1"):
        ci = s.get(m) or {}
        row.update({m: ci.get("mean", NAN), f"{m}_lo": ci.get("lo", NAN), f"{m}_hi": ci.get("hi", NAN)})
        # unfinished questions score 0, so the mean over finished ones is a rescaling
        row.update({f"{m}_finished": row[m] * n / fin if fin else NAN, f"{m}_finished_lo": NAN,
                    f"{m}_finished_hi": NAN})
    row["steps"] = NAN if s.get("mean_steps") is None else s["mean_steps"]
    row["tool_errors"] = NAN if s.get("tool_errors") is None else s["tool_errors"]
    return row


def _keys(run: Run) -> dict:
    return {"model": run.model, "adapter": run.adapter or "", "task": run.task, "split": run.split,
            "method": run.method, "protocol": run.protocol or "", "tool": run.tool or "", "run": run.name}


def leaderboard_frame(runs: list) -> pd.DataFrame:
    """Numbers (fractions, not percent) for every run, sorted by task, split then EM."""
    rows = []
    for run in runs:
        scores = score_questions(run.questions, run.n_intended) if run.questions is not None \
            else score_summary(run.summary)
        rows.append({**_keys(run), **scores})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.sort_values(["task", "split", "em"], ascending=[True, True, False], kind="stable").reset_index(drop=True)


def breakdown_frame(runs: list, by: str) -> pd.DataFrame:
    """One row per run and value of ``by`` (HotpotQA type/level, MMLU subject)."""
    rows = []
    for run in runs:
        if run.questions is not None:
            groups = attach_meta(run, by)
            for value in sorted(groups.unique(), key=str):
                idx = groups.index[groups == value]
                q = run.questions.loc[run.questions.index.intersection(idx)]
                rows.append({**_keys(run), by: value, **score_questions(q, len(idx))})
        elif run.summary and (run.summary.get("breakdown") or {}).get(by):
            for value, b in sorted(run.summary["breakdown"][by].items()):
                rows.append({**_keys(run), by: value, "n": b.get("n"),
                             **{f"{m}{s}": (b.get(m) or {}).get(k, NAN)
                                for m in ("em", "f1") for s, k in (("", "mean"), ("_lo", "lo"), ("_hi", "hi"))}})
        else:
            print(f"leaderboard: warning: {run.name} has neither trajectories nor a {by} breakdown", file=sys.stderr)
    return pd.DataFrame(rows)


# --- presentation ----------------------------------------------------------------------------
def _pct(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _ci(lo, hi) -> str:
    a, b = _pct(lo), _pct(hi)
    return f"[{a}, {b}]" if a and b else ""


def display_frame(df: pd.DataFrame, extra: tuple = ()) -> pd.DataFrame:
    """Percentages with one decimal, CIs as [lo, hi]; the run column only where keys collide."""
    out = pd.DataFrame({"Model": df["model"], "Adapter": df["adapter"], "Task": df["task"],
                        "Split": df["split"], "Method": df["method"], "Protocol": df["protocol"], "Tool": df["tool"]})
    key_cols = KEY_COLUMNS + list(extra)
    if df.duplicated(key_cols).any():
        out["Run"] = df["run"]
    for col in extra:
        out[col.capitalize()] = df[col]
    out["N"] = df["n"].astype("Int64")
    if "finished" in df:
        out["Finished"] = df["finished"].astype("Int64")
    out["EM"] = df["em"].map(_pct)
    out["EM 95% CI"] = [_ci(a, b) for a, b in zip(df["em_lo"], df["em_hi"])]
    out["F1"] = df["f1"].map(_pct)
    out["F1 95% CI"] = [_ci(a, b) for a, b in zip(df["f1_lo"], df["f1_hi"])]
    if "f1_finished" in df:
        out["F1 fin."] = df["f1_finished"].map(_pct)
        out["F1 fin. 95% CI"] = [_ci(a, b) for a, b in zip(df["f1_finished_lo"], df["f1_finished_hi"])]
    if "k" in df and df["k"].notna().any():  # runs with several samples per question
        out["K"] = df["k"].map(lambda x: "" if pd.isna(x) else str(int(x)))
        out["pass@K"] = [_pct(row.get(f"pass@{int(row['k'])}")) if not pd.isna(row["k"]) else ""
                         for row in df.to_dict("records")]
        out["Maj. EM"] = df["majority_em"].map(_pct)
    if "steps" in df:
        out["Steps"] = df["steps"].map(lambda x: "" if pd.isna(x) else f"{x:.2f}")
        out["Tool errors"] = df["tool_errors"].map(lambda x: "" if pd.isna(x) else str(int(x)))
    return out


def markdown(shown: pd.DataFrame, tablefmt: str = "pipe") -> str:
    """Cells stay as formatted ("40.0" would otherwise print as 40); numbers align right."""
    text_cols = {"Model", "Adapter", "Task", "Split", "Method", "Tool", "Run", "Type", "Level", "Subject", "Metric", "test"}
    align = ["left" if c in text_cols else "right" for c in shown.columns]
    return shown.to_markdown(index=False, tablefmt=tablefmt, disable_numparse=True, colalign=align)


def plot_leaderboard(df: pd.DataFrame, path: Path) -> None:
    """Grouped bars of EM and F1 (over intended) with their 95% CIs as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [" ".join(x for x in (r.model, r.adapter) if x) + f"\n{r.task}/{r.split} {r.method} [{r.protocol}]\n"
              f"{r.finished}/{r.n} finished"
              for r in df.itertuples()]
    x = np.arange(len(df))
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(5.0, 1.7 * len(df) + 1.5), 4.2))
    for offset, metric, name in ((-width / 2, "em", "EM"), (width / 2, "f1", "F1")):
        means = 100 * df[metric].to_numpy(dtype=float)
        err = np.vstack([means - 100 * df[f"{metric}_lo"].to_numpy(dtype=float),
                         100 * df[f"{metric}_hi"].to_numpy(dtype=float) - means])
        bars = ax.bar(x + offset, means, width, yerr=np.nan_to_num(err), capsize=4, label=name)
        for bar, m, top in zip(bars, means, means + np.nan_to_num(err[1])):  # above the error bar
            ax.text(bar.get_x() + bar.get_width() / 2, top + 1, f"{m:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("score (%) over questions intended, 95% CI")
    ax.set_ylim(0, min(100, max(10.0, float(np.nanmax(100 * df[["em_hi", "f1_hi"]].to_numpy(dtype=float)))) + 12))
    ax.legend(loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


# --- paired comparison -----------------------------------------------------------------------
def resolve_run(token: str, runs: list) -> Run:
    """A run by file path, exact run name, model label, or a unique case-insensitive substring."""
    if Path(token).exists():
        found = load_runs([token])
        if len(found) != 1:
            raise LeaderboardInputError(f"{token} holds {len(found)} runs ({', '.join(r.name for r in found)}); "
                                        f"pass one run's file or its name")
        return found[0]
    low = token.lower()
    for test in (lambda r: r.name == token, lambda r: r.label.lower() == low,
                 lambda r: low in r.name.lower() or low in r.label.lower()):
        hits = [r for r in runs if test(r)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise LeaderboardInputError(f"{token!r} matches {len(hits)} runs ({', '.join(r.name for r in hits)}); "
                                        f"use a longer part of one name")
    if not runs:
        raise LeaderboardInputError(f"no run {token!r}: pass a results/trajectory file, or PATHs that hold it")
    # Labels are short ("Llama-2-7B LoRA"), names long: suggest from both, case-insensitively.
    choices = ({r.label.lower(): r.label for r in runs} | {r.name.lower(): r.name for r in runs} |
               {r.label.rsplit(" [", 1)[0].lower(): r.label for r in runs})  # the label without its [protocol]
    close = [choices[c] for c in difflib.get_close_matches(low, list(choices), n=3, cutoff=0.4)]
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise LeaderboardInputError(f"no run matches {token!r}.{hint} Runs: "
                                + "; ".join(f"{r.name} ({r.label})" for r in runs))


def paired_em(a: Run, b: Run) -> tuple:
    """(indices, EM of A, EM of B) on the questions both runs hold, finished or not: the pairs compare_runs
    tests (the viewer's 2x2 table counts the same ones). An unfinished episode scores 0, as in the EM column;
    pairing only the questions both finished would drop exactly the ones where one agent gave up, and
    favour the run that gives up more. (FireAct's files hold finished episodes only.)"""
    qa, qb = a.questions, b.questions
    both = sorted(set(qa.index) & set(qb.index))
    return both, qa.loc[both, "em"].to_numpy(), qb.loc[both, "em"].to_numpy()


def compare_runs(a: Run, b: Run) -> tuple:
    """(table, note): B - A on the questions both runs hold (unfinished = 0), EM with McNemar's exact test."""
    for r in (a, b):
        if r.questions is None:
            raise LeaderboardInputError(f"{r.name} has no per-question trajectories (results only); a paired "
                                        f"comparison needs its trajs/<run>.jsonl")
    if (a.task, a.split) != (b.task, b.split):
        raise LeaderboardInputError(f"{a.name} is {a.task}/{a.split} but {b.name} is {b.task}/{b.split}; "
                                    f"a paired comparison needs the same questions")
    qa, qb = a.questions, b.questions
    both, em_a, em_b = paired_em(a, b)
    only_a = int(((em_a >= 0.5) & (em_b < 0.5)).sum())
    only_b = int(((em_a < 0.5) & (em_b >= 0.5)).sum())
    rows = []
    for metric, va, vb in (("EM", em_a, em_b), ("F1", qa.loc[both, "f1"].to_numpy(), qb.loc[both, "f1"].to_numpy())):
        d = paired_difference(va, vb)
        p = mcnemar_exact(only_a, only_b) if metric == "EM" else d["p_normal"]
        rows.append({"Metric": metric, "N paired": d["n"], "A": _pct(d["a"]), "B": _pct(d["b"]),
                     "B - A": _pct(d["diff"]), "95% CI (paired bootstrap)": _ci(d["boot_lo"], d["boot_hi"]),
                     "95% CI (normal)": _ci(d["norm_lo"], d["norm_hi"]),
                     "p": f"{p:.3g}", "test": "McNemar exact" if metric == "EM" else "paired z"})
    both_finished = int((qa.loc[both, "finished"].astype(bool) & qb.loc[both, "finished"].astype(bool)).sum())
    note = (f"A = {a.label} ({a.name}), B = {b.label} ({b.name}); {len(both)} questions in both, {both_finished} "
            f"finished by both, an unfinished one scoring 0 (A finished {int(qa['finished'].sum())}/{a.n_intended}, "
            f"B {int(qb['finished'].sum())}/{b.n_intended}). "
            f"EM discordant pairs: only A right {only_a}, only B right {only_b}.")
    return pd.DataFrame(rows), note


# --- CLI -------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="leaderboard.py", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("paths", nargs="*", help="results/*.json, trajs/*.jsonl, FireAct trajectory json, or folders "
                                            "(default: results/)")
    p.add_argument("--csv", type=Path, metavar="FILE", help="write the numbers (fractions) as CSV")
    p.add_argument("--latex", type=Path, metavar="FILE", help="write the table as a LaTeX booktabs tabular")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="bar chart of EM and F1 with 95%% CIs")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="paired comparison of two runs (names, unique parts of names, or files)")
    p.add_argument("--by", choices=BREAKDOWNS, help="also break the scores down by HotpotQA type/level or MMLU subject")
    args = p.parse_args(argv)
    for opt in ("csv", "latex", "plot"):
        out = getattr(args, opt)
        if out is not None and not out.resolve().parent.is_dir():
            p.error(f"--{opt} {out}: folder {out.parent} does not exist; create it or pick another path")
    if not args.paths and not args.compare:
        args.paths = ["results"]
        if not Path("results").is_dir():
            p.error("no PATH given and there is no results/ folder here; pass results files, trajectory files "
                    "or folders (e.g. data/fireact/trajs)")
    args._parser = p
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        runs = load_runs(args.paths) if args.paths else []
        if args.paths and not runs:
            raise LeaderboardInputError(f"no runs found in {', '.join(args.paths)}; pass results/*.json, "
                                        f"trajs/*.jsonl or FireAct trajectory json")
        if args.compare:  # resolve both before printing anything
            pair = [resolve_run(t, runs) for t in args.compare]
    except LeaderboardInputError as e:
        args._parser.error(str(e))

    if runs:
        df = leaderboard_frame(runs)
        shown = display_frame(df)
        print(markdown(shown))
        if args.csv:
            df.to_csv(args.csv, index=False)
        if args.latex:
            args.latex.write_text(markdown(shown, tablefmt="latex_booktabs") + "\n", encoding="utf-8")
        if args.plot:
            plot_leaderboard(df, args.plot)
        if args.by:
            bd = breakdown_frame(runs, args.by)
            if not bd.empty:
                print(f"\n### By {args.by}\n")
                print(markdown(display_frame(bd, extra=(args.by,))))
                if args.csv:
                    bd.to_csv(args.csv.with_name(f"{args.csv.stem}_by_{args.by}{args.csv.suffix}"), index=False)
    if args.compare:
        try:
            table, note = compare_runs(*pair)
        except LeaderboardInputError as e:
            args._parser.error(str(e))
        if runs:
            print("\n### Paired comparison\n")
        print(note + "\n")
        print(markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
