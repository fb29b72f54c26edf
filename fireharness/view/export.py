"""``--export DIR``: the viewer as a folder of static files that opens from disk (file://) with no server.

Browsers refuse ``fetch`` on file:// pages, so each payload the server would answer is written as a
small script, ``data/<key>.js``, that hands its JSON to the app (``FH.put(key, payload)``); the app
loads them with <script> tags. Episodes go in chunks of ``CHUNK`` per file, comparisons for every
pair of runs on the same task and split.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from tqdm import tqdm

from fireharness.view.sources import LeaderboardInputError

from .catalog import Catalog, ViewInputError, to_json
from .server import STATIC_DIR

CHUNK = 100
MARKER = "mode.js"


def check_export_dir(out: Path) -> None:
    """Before any work: DIR must be new, empty, or an earlier export (which is then replaced)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise ViewInputError(f"--export {out}: exists and is not an earlier export; pass a new or empty folder")
    if not out.resolve().parent.is_dir():
        raise ViewInputError(f"--export {out}: folder {out.parent} does not exist; create it or pick another path")


def script(key: str, payload) -> str:
    # "<" escaped so that no payload can close a tag; U+2028/9 for older JavaScript parsers.
    body = to_json(payload).decode("utf-8").replace("<", "\\u003c").replace("\u2028", "\\u2028") \
        .replace("\u2029", "\\u2029")
    return f"FH.put({to_json(key).decode()}, {body});\n"


def export(catalog: Catalog, out: Path) -> dict:
    check_export_dir(out)
    data = out / "data"
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
    for name in ("index.html", "app.js", "style.css"):
        shutil.copyfile(STATIC_DIR / name, out / name)
    (out / MARKER).write_text('window.FH_MODE = "static";\n', encoding="utf-8")

    def put(key: str, payload) -> None:
        (data / f"{key.replace('/', '_')}.js").write_text(script(key, payload), encoding="utf-8")

    runs = catalog.runs_payload()
    put("runs", runs)
    put("leaderboard", catalog.leaderboard_payload())
    png = catalog.plot_png()
    if png:
        (out / "plot.png").write_bytes(png)
    n_episodes = 0
    for run in tqdm(runs["runs"], desc="export runs", unit="run"):
        rid = run["id"]
        rows = catalog.rows_payload(rid)
        put(f"rows/{rid}", rows)
        for start in range(0, rows["total"], CHUNK):
            put(f"episodes/{rid}/{start // CHUNK}", catalog.episodes_chunk(rid, start, start + CHUNK))
        n_episodes += rows["total"]
    pairs = 0
    for a, b in catalog.comparable_pairs():
        try:
            put(f"compare/{a}/{b}", catalog.compare(a, b))
            pairs += 1
        except LeaderboardInputError:
            continue
    for exp in runs["experiments"]:
        put(f"experiment/{exp['id']}", catalog.experiment(exp["id"]))
    return {"runs": len(runs["runs"]), "episodes": n_episodes, "comparisons": pairs}
