"""The trajectory viewer in a real headless Chromium (Debian's package, driven by Playwright), against
the server started as users start it and against a static export opened from file://, on the
repository's real trajectory files (and a planted one carrying markup).

Playwright rather than selenium: its expect() waits for a condition (a live update, a page on a loaded
machine) instead of sleeping, it collects the page's script errors, and it needs no chromedriver matched
to the browser's version (Debian's chromium alone)."""
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fireharness.view.sources import load_runs  # noqa: E402
from fireharness.leaderboard_stats import mcnemar_exact  # noqa: E402
from fireharness.paths import DATA_DIR, ROOT  # noqa: E402
from fireharness.records import read_episodes  # noqa: E402

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PROMPTED, TUNED = "mini_prompted_react_hotpotqa", "mini_lora_multitask_multimethod_hotpotqa"
FIREACT_7B = "hotpotqa_dev_0_500_llama_models_lora_llama-2-7b-d_1000_0.7_2023-09-19-00-49-36.json"
SCRIPT = "<script>window.__pwned = 1</script>"
ONERROR = '<img src=x onerror="window.__pwned = 2">'
TIMEOUT_MS = 30_000  # a shared, loaded machine: pages that take a second idle may take ten
playwright.expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """An output folder holding two real runs, FireAct's released 7B trajectories, a planted run with
    markup in every string, and two ways of pointing outside it (a symlink, a results file's path)."""
    base = tmp_path_factory.mktemp("view")
    out = base / "out"
    for sub in ("trajs", "results", "fireact"):
        (out / sub).mkdir(parents=True)
    for run in (PROMPTED, TUNED):
        shutil.copy(ROOT / "trajs" / f"{run}.jsonl", out / "trajs")
        summary = json.loads((ROOT / "results" / f"{run}.json").read_text())
        (out / "results" / f"{run}.json").write_text(json.dumps(summary))
    shutil.copy(DATA_DIR / "fireact" / "trajs" / FIREACT_7B, out / "fireact")

    first = json.loads((ROOT / "trajs" / f"{PROMPTED}.jsonl").read_text().splitlines()[1])
    planted = []
    for i in range(3):
        d = json.loads(json.dumps(first))
        d.update(index=1000 + i, run="planted", question=f"{SCRIPT} question {i}", prediction=ONERROR,
                 gold="<b>gold</b>")
        d["steps"][0]["observation"] = f"{ONERROR} observed"
        d["steps"][0]["thought"] = "<iframe src=javascript:window.__pwned=3></iframe>"
        planted.append(json.dumps(d))
    (out / "trajs" / "planted.jsonl").write_text("\n".join(planted) + "\n")

    # a loop experiment: the committed self-training experiment's manifest, and a round's run with two samples
    # per question
    exp = out / "loop_exp"
    (exp / "trajs").mkdir(parents=True)
    (exp / "manifest.json").write_text((ROOT / "results" / "self_training" / "manifest.json").read_text())
    lines = (ROOT / "trajs" / f"{TUNED}.jsonl").read_text().splitlines()[:10]
    (exp / "trajs" / "round1_sample.jsonl").write_text("".join(
        json.dumps(dict(json.loads(line), run="round1_sample", index=k // 2, sample=k % 2)) + "\n"
        for k, line in enumerate(lines)))

    outside = base / "outside"
    outside.mkdir()
    secret = dict(first, run="secret_outside", question="SECRET-OUTSIDE question")
    (outside / "secret.jsonl").write_text(json.dumps(secret) + "\n")
    (outside / "secret2.jsonl").write_text(json.dumps(dict(secret, run="secret2")) + "\n")
    os.symlink(outside / "secret.jsonl", out / "trajs" / "leak.jsonl")
    leak = dict(json.loads((out / "results" / f"{PROMPTED}.json").read_text()), run="secret2",
                trajectories="../../outside/secret2.jsonl")
    (out / "results" / "secret2.json").write_text(json.dumps(leak))
    return out


def start_viewer(*args):
    proc = subprocess.Popen([sys.executable, "-m", "fireharness.view", *map(str, args), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("viewer: "):
            return proc, line.split()[1]
    proc.wait(timeout=30)
    pytest.fail(f"the viewer did not start: {proc.stderr.read()}")


@pytest.fixture(scope="module")
def viewer(roots):
    proc, url = start_viewer(roots)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    context.close()


def get_json(url):
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.loads(r.read())


def run_ids(url) -> dict:
    return {r["name"]: r["id"] for r in get_json(url + "api/runs")["runs"]}


def expected_counts(path) -> dict:
    eps = list(read_episodes(path))
    right = [e for e in eps if e.em >= 0.5]
    return {"all": len(eps), "right": len(right), "wrong": sum(e.finished and e.em < 0.5 for e in eps),
            "unfinished": sum(not e.finished for e in eps), "tool_error": sum(e.n_tool_errors > 0 for e in eps),
            "repaired": sum(any(s.repaired for s in e.steps) for e in eps),
            "invalid": sum(any(not s.action_type for s in e.steps) for e in eps),
            "error": sum(bool(e.error) for e in eps)}


def chip_counts(page) -> dict:
    chips = page.locator("button.chip")
    playwright.expect(chips.first).to_be_visible()
    return {c.get_attribute("data-filter"): int(c.locator(".count").inner_text()) for c in chips.all()}


def test_filter_counts_search_and_episode_rows(viewer, roots, page):
    rid = run_ids(viewer)[PROMPTED]
    path = roots / "trajs" / f"{PROMPTED}.jsonl"
    page.goto(f"{viewer}#/run/{rid}")
    want = expected_counts(path)
    assert chip_counts(page) == want
    assert want["right"] and want["wrong"] and want["unfinished"] and want["repaired"]  # the test can fail

    page.click("button.chip[data-filter=wrong]")
    playwright.expect(page.locator("#shown-count")).to_have_text(f"{want['wrong']} of {want['all']} episodes")
    eps = list(read_episodes(path))
    word = "film"
    n_word = sum(word in e.question.lower() or word in (e.prediction or "").lower() for e in eps
                 if e.finished and e.em < 0.5)
    page.fill("#search", word)
    playwright.expect(page.locator("#shown-count")).to_have_text(f"{n_word} of {want['all']} episodes")
    # the chips now count within the search
    assert chip_counts(page)["all"] == sum(word in e.question.lower() or word in (e.prediction or "").lower()
                                           for e in eps)
    page.fill("#search", "")
    page.click("button.chip[data-filter=all]")
    page.select_option("select[data-meta=type]", "comparison")
    n_cmp = sum(e.meta.get("type") == "comparison" for e in eps)
    playwright.expect(page.locator("#shown-count")).to_have_text(f"{n_cmp} of {want['all']} episodes")
    # the virtual list holds only the rows in view, not all of them
    assert 0 < page.locator("#episodes .vrow").count() < want["all"]
    assert not page.errors


def test_episode_steps(viewer, roots, page):
    rid = run_ids(viewer)[PROMPTED]
    rows = get_json(f"{viewer}api/rows/{rid}")["rows"]
    pos = next(i for i, r in enumerate(rows) if r["steps"] >= 3)
    ep = next(e for e in read_episodes(roots / "trajs" / f"{PROMPTED}.jsonl") if e.index == rows[pos]["index"])
    page.goto(f"{viewer}#/run/{rid}")
    page.locator(f"#episodes .vrow[data-index='{ep.index}']").click()
    playwright.expect(page.locator(".step")).to_have_count(len(ep.steps))
    assert page.locator("h1").inner_text() == f"Question {ep.index}"
    first = page.locator(".step").first
    assert ep.steps[0].action in first.inner_text()
    assert ep.steps[0].observation.strip()[:60] in first.locator(".obs").inner_text()
    first.locator("summary").click()  # the raw model text on demand
    assert first.locator("pre.raw").inner_text().strip()[:40] == ep.steps[0].raw.strip()[:40]
    assert not page.errors


def test_compare_cells_match_the_leaderboard(viewer, roots, page):
    import leaderboard

    ids = run_ids(viewer)
    runs = {r.name: r for r in load_runs([roots / "results"])}
    both, em_a, em_b = leaderboard.paired_em(runs[PROMPTED], runs[TUNED])
    want = {"rr": int(((em_a >= .5) & (em_b >= .5)).sum()), "rw": int(((em_a >= .5) & (em_b < .5)).sum()),
            "wr": int(((em_a < .5) & (em_b >= .5)).sum()), "ww": int(((em_a < .5) & (em_b < .5)).sum())}
    table, _ = leaderboard.compare_runs(runs[PROMPTED], runs[TUNED])
    page.goto(f"{viewer}#/compare?a={ids[PROMPTED]}&b={ids[TUNED]}")
    playwright.expect(page.locator("#cells")).to_be_visible()
    got = {c: int(page.locator(f"#cells td[data-cell={c}]").inner_text()) for c in want}
    assert got == want and sum(got.values()) == len(both) and want["wr"] > 0
    p = page.locator("#mcnemar b").inner_text()
    assert float(p) == pytest.approx(mcnemar_exact(want["rw"], want["wr"]), rel=1e-2)
    assert table.iloc[0]["p"] == f"{mcnemar_exact(want['rw'], want['wr']):.3g}"

    page.click("#cells td[data-cell=wr] a")  # only B (tuned) right
    playwright.expect(page.locator("#cell-list tbody tr")).to_have_count(want["wr"])
    index = int(page.locator("#cell-list tbody tr").first.locator("td").first.inner_text())
    page.locator("#cell-list tbody tr").first.locator("td a").first.click()
    playwright.expect(page.locator("#pair-a .step").first).to_be_visible()
    a_steps = next(e for e in read_episodes(roots / "trajs" / f"{PROMPTED}.jsonl") if e.index == index).steps
    b_steps = next(e for e in read_episodes(roots / "trajs" / f"{TUNED}.jsonl") if e.index == index).steps
    assert page.locator("#pair-a .step").count() == len(a_steps)
    assert page.locator("#pair-b .step").count() == len(b_steps)
    assert not page.errors


def test_runs_table_fits_a_laptop_screen(viewer, page):
    """At 1280 px the runs table needs no sideways scroll (it did: one column per CI, nothing wrapped), and each
    run's EM shows its 95% CI under it."""
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(viewer)
    row = page.locator("table.runs tr", has_text=PROMPTED)
    playwright.expect(row).to_have_count(1)
    run = next(r for r in get_json(viewer + "api/runs")["runs"] if r["name"] == PROMPTED)
    em = row.locator("td.num").nth(2)  # N, Finished, EM
    playwright.expect(em.locator(".ci")).to_have_text(f"[{100 * run['em_lo']:.1f}, {100 * run['em_hi']:.1f}]")
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    assert not page.errors


def test_compare_opens_on_the_only_two_runs(roots, page, tmp_path):
    """The demo's case: a viewer of two runs of one task opens Compare on them, with nothing to pick, the
    prompted run as A and the one through an adapter as B, whichever is listed first."""
    # The tuned run as the demo records it (the base model, the released adapter per request), listed first
    # as in the demo's folder, where "finetuned" sorts before "prompted".
    tuned = tmp_path / f"{TUNED}.jsonl"
    tuned.write_text("".join(json.dumps(dict(json.loads(line), model="smollm2-135m",
                                             adapter="smollm2-135m-fireact-multitask-lora")) + "\n"
                             for line in (roots / "trajs" / f"{TUNED}.jsonl").read_text().splitlines()))
    proc, url = start_viewer(tuned, roots / "trajs" / f"{PROMPTED}.jsonl")
    try:
        ids = run_ids(url)
        page.goto(url + "#/compare")
        playwright.expect(page.locator("#cells td[data-cell=wr]")).to_be_visible()
        picked = (page.locator("select[name=a]").input_value(), page.locator("select[name=b]").input_value())
        assert picked == (str(ids[PROMPTED]), str(ids[TUNED]))  # the prompted baseline is A, the tuned run B
        assert "a=" in page.url and "b=" in page.url  # the address names the pair, to share or reload
        assert not page.errors
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_markup_in_trajectories_shows_as_text(viewer, page):
    rid = run_ids(viewer)["planted"]
    page.goto(f"{viewer}#/run/{rid}")
    row = page.locator("#episodes .vrow").first
    playwright.expect(row).to_contain_text(SCRIPT)
    assert ONERROR in row.inner_text()
    row.click()
    playwright.expect(page.locator(".step").first).to_be_visible()
    text = page.locator("#app").inner_text()
    assert SCRIPT in text and f"{ONERROR} observed" in text and "<iframe src=javascript:" in text
    assert page.locator("#app img, #app script, #app iframe").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert not page.errors


def raw_get(url, path) -> int:
    """A request with the path sent as written (a browser or urllib would normalise the dots)."""
    host, port = url.split("//")[1].strip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", path)
    status = conn.getresponse().status
    conn.close()
    return status


def test_reads_only_under_its_roots(viewer, roots, page):
    runs = get_json(viewer + "api/runs")
    names = {r["name"] for r in runs["runs"]}
    assert "secret_outside" not in names  # the symlink out of the root was not followed
    secret2 = [r for r in runs["runs"] if r["name"] == "secret2"]
    assert secret2 and not secret2[0]["has_episodes"]  # its results file shows; the file it points at does not
    assert any("leak.jsonl" in s["path"] for s in runs["skipped"])
    for r in runs["runs"]:
        if r["has_episodes"]:
            assert "SECRET-OUTSIDE" not in json.dumps(get_json(f"{viewer}api/rows/{r['id']}"))
    for path in ("/../outside/secret.jsonl", "/api/../../outside/secret.jsonl", "/%2e%2e/outside/secret.jsonl",
                 "/trajs/leak.jsonl", "/api/file?path=/etc/passwd", "/api/episode/0/x", "/api/rows/-1"):
        assert raw_get(viewer, path) in (400, 404), path
    page.goto(f"{viewer}#/run/999")
    playwright.expect(page.locator("p.error")).to_contain_text("no run")


def test_bad_paths_stop_before_serving(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, needle in (([tmp_path / "nope"], "no such file or folder"), ([empty], "holds no runs")):
        proc = subprocess.run([sys.executable, "-m", "fireharness.view", *map(str, args), "--port", "0"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stdout == ""
        last = proc.stderr.strip().splitlines()[-1]
        assert needle in last and str(args[0]) in last


def test_a_run_being_written_shows_new_episodes(viewer, roots, page):
    rid = run_ids(viewer)["planted"]
    page.goto(f"{viewer}#/run/{rid}")
    playwright.expect(page.locator("#shown-count")).to_have_text("3 of 3 episodes")
    path = roots / "trajs" / "planted.jsonl"
    d = json.loads(path.read_text().splitlines()[0])
    with open(path, "a") as f:  # the way generation.py appends, the last line first written in two parts
        line = json.dumps(dict(d, index=2000, question="appended while open")) + "\n"
        f.write(line[:50])
        f.flush()
        time.sleep(2.5)
        f.write(line[50:])
    playwright.expect(page.locator("#shown-count")).to_have_text("4 of 4 episodes")
    page.fill("#search", "appended while open")
    playwright.expect(page.locator("#shown-count")).to_have_text("1 of 4 episodes")


def test_static_export_opens_from_file_url(roots, tmp_path, page):
    out = tmp_path / "export"
    proc = subprocess.run([sys.executable, "-m", "fireharness.view", str(roots), "--export", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "file://" in proc.stdout
    url = (out / "index.html").as_uri()
    page.goto(url)
    # the two runs, FireAct's, the planted one, the loop's round, and secret2's results file (its
    # trajectories are outside)
    playwright.expect(page.locator("table.runs tbody tr")).to_have_count(6)
    names = page.locator("table.runs tbody").inner_text()
    assert PROMPTED in names and "secret_outside" not in names
    page.locator("table.runs a", has_text=PROMPTED).click()
    assert chip_counts(page) == expected_counts(roots / "trajs" / f"{PROMPTED}.jsonl")
    page.locator("#episodes .vrow").nth(2).click()
    playwright.expect(page.locator(".step").first).to_be_visible()
    # FireAct's released trajectories, read through finetune.readers
    page.goto(url + "#/")
    page.locator("table.runs a", has_text="llama-2-7b").click()
    assert chip_counts(page)["all"] == 500
    page.locator("#episodes .vrow").first.click()
    playwright.expect(page.locator(".step").first).to_be_visible()
    # compare and the planted markup, from disk
    page.goto(url + "#/")
    a = page.locator("table.runs tr", has_text=PROMPTED).get_attribute("data-run")
    b = page.locator("table.runs tr", has_text=TUNED).get_attribute("data-run")
    page.goto(f"{url}#/compare?a={a}&b={b}")
    playwright.expect(page.locator("#cells td[data-cell=wr]")).to_be_visible()
    page.goto(url + "#/")
    page.locator("table.runs a", has_text="planted").click()
    playwright.expect(page.locator("#episodes .vrow").first).to_contain_text(SCRIPT)
    assert page.evaluate("window.__pwned") is None
    assert not page.errors


def test_loop_experiment_rounds_and_samples(viewer, page):
    page.goto(viewer + "#/")
    page.locator("a", has_text="loop_exp").click()
    playwright.expect(page.locator("h1")).to_have_text("Loop experiment loop_exp")
    assert page.locator("table.runs tbody tr").count() == 1
    # The manifest as the loop writes it: a row per stage in plan order with its status and seconds, a row per
    # invocation with its CPU; the config and the whole manifest folded away (their nested tables were 5,000 px
    # wide: the page must fit a laptop's 1280 px).
    manifest = json.loads((ROOT / "results" / "self_training" / "manifest.json").read_text())
    rows = page.locator("table.stages tbody tr")
    assert rows.locator("td.name").all_inner_texts() == list(manifest["stages"])
    for name in ("baseline_io", "r1_sample"):
        stage = manifest["stages"][name]
        cells = rows.filter(has=page.locator("td.name", has_text=name)).locator("td").all_inner_texts()
        # A running stage's seconds move every 30 s (the experiment may be running in this checkout): done ones do not.
        assert cells[:3] == [name, stage["kind"], stage["status"]]
        assert stage["status"] != "done" or cells[3] == f"{stage['work_seconds']:.0f}"
    invocations = page.locator("table.invocations tbody tr")
    assert invocations.count() == len(manifest["invocations"])
    assert "AMD EPYC (family 25 model 1; avx2)" in invocations.first.inner_text()
    for row, invocation in zip(invocations.all(), manifest["invocations"]):  # "-": before the loop measured pauses
        paused = invocation.get("paused_s")
        assert row.locator("td").nth(3).inner_text() == ("-" if paused is None else f"{paused:.0f}")
    playwright.expect(page.locator("details.config table.kv").first).to_be_hidden()
    page.set_viewport_size({"width": 1280, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    page.locator("table.runs a", has_text="round1_sample").click()
    playwright.expect(page.locator(".vhead")).to_contain_text("Sample")
    assert chip_counts(page)["all"] == 10
    page.fill("#question-index", "3")  # the samples of one question
    playwright.expect(page.locator("#shown-count")).to_have_text("2 of 10 episodes")
    assert sorted(page.locator("#episodes .vrow span:nth-child(2)").all_inner_texts()) == ["0", "1"]
    assert not page.errors
