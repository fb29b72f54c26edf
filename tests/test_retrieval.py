"""Bring your own corpus and questions, on real files (tests/data/rag: Python docstrings and HotpotQA's
Wikipedia paragraphs, see its LICENSE.md): the index built and rebuilt, queried by BM25, dense and hybrid,
served as the retrieve tool in a generation.py run of a YAML task with the rag method (real embedded
model on the hf backend), converted to RAFT rows; bad YAML, an empty corpus folder and an unreadable file
each stop with one line."""
import json
import shutil
import sys

import pytest

import generation
from fireharness.paths import ROOT
from fireharness.records import read_episodes
from finetune import convert
from tasks import DataFileError, get_task
from tasks.metrics import score_similarity
from tools import ToolConfig, ToolSetupError, get_tool
from tools import __main__ as tools_cli
from tools import retrieval
from tools.documents import chunk_words, document_files, passages
from tools.wiki_index import CorpusError

DATA = ROOT / "tests" / "data" / "rag"
CORPUS = DATA / "corpus"
TASK = DATA / "task.yaml"


@pytest.fixture(scope="session")
def rag_index(tmp_path_factory):
    """The test corpus built once (BM25 + vectors of the packaged all-MiniLM-L6-v2)."""
    directory = tmp_path_factory.mktemp("rag-index") / "rag-test-docs"
    summary = retrieval.build([CORPUS], directory, progress=False)
    return directory, summary


def test_documents_are_read_with_their_titles_and_chunked_with_overlap():
    files = document_files([CORPUS])
    assert {f.suffix for f in files} == {".md", ".txt", ".html", ".jsonl"}
    chunks = [(f.name, p) for f, p in passages(files)]
    titles = [p.title for _, p in chunks]
    assert "heapq - Heap queue algorithm" in titles  # a Markdown file's first heading
    assert "Front Row (software)" in titles and "Elko Regional Airport" in titles  # HTML <title>, jsonl records
    json_doc = [p for name, p in chunks if name == "json.txt"]
    assert [p.title for p in json_doc] == ["json", "json (2)"]  # a long text: two chunks, the title kept
    assert " ".join(json_doc[1].text.split()[:8]) in json_doc[0].text  # neighbours overlap
    html = next(p for _, p in chunks if p.title == "Front Row (software)")
    assert html.text.startswith("Front Row is a discontinued") and "Apple's" in html.text  # markup, h1 dropped
    words = [str(i) for i in range(450)]
    cut = chunk_words(words, 200, 40)
    assert len(cut) == 3 and cut[1].split()[0] == "160" and cut[-1].split()[-1] == "449"


def test_bm25_dense_and_hybrid_find_the_gold_paragraphs(rag_index):
    directory, summary = rag_index
    assert int(summary["n_files"]) == 23 and int(summary["n_chunks"]) > 60
    index = retrieval.RetrievalIndex(directory)
    try:
        for retriever in retrieval.RETRIEVERS:
            hits = index.search("a discontinued media center application for the Macintosh", 5, retriever)
            assert len(hits) == 5 and hits[0].title == "Front Row (software)", retriever
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert index.search("priority queue implementation in the Python standard library", 1, "dense")[0].title \
            .startswith("heapq")
        assert index.search("zzzz qqqq", 3, "bm25") == []
    finally:
        index.close()


def test_a_rebuild_reads_only_changed_files(tmp_path):
    corpus = tmp_path / "docs"
    shutil.copytree(CORPUS / "python", corpus)
    (corpus / "notes.txt").write_text("The harness was first run on a Tuesday.")
    directory = tmp_path / "index"
    first = retrieval.build([corpus], directory, progress=False)
    assert first["files_read"] == "3" and int(first["chunks_embedded"]) == int(first["n_chunks"])
    again = retrieval.build([corpus], directory, progress=False)
    assert again["files_read"] == "0" and again["chunks_embedded"] == "0"
    (corpus / "notes.txt").write_text("The harness was first run on a Wednesday, in the rain.")
    (corpus / "json.txt").unlink()
    changed = retrieval.build([corpus], directory, progress=False)
    assert (changed["files_read"], changed["files_removed"], changed["chunks_embedded"]) == ("1", "1", "1")
    index = retrieval.RetrievalIndex(directory)
    try:
        assert "Wednesday" in index.search("which day was the harness first run", 1, "hybrid")[0].text
        assert not [h for h in index.search("JSON encoder decoder", 5, "bm25") if h.title.startswith("json")]
    finally:
        index.close()


def test_bad_corpora_stop_with_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert tools_cli.main(["build-index", "--corpus", str(empty), "--name", str(tmp_path / "i")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds no" in err and str(empty) in err
    broken = tmp_path / "broken.txt"
    broken.write_bytes(b"caf\xe9 \xff\xfe not utf-8")
    assert tools_cli.main(["build-index", "--corpus", str(broken), "--name", str(tmp_path / "i")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "broken.txt" in err and "not UTF-8" in err
    with pytest.raises(CorpusError, match="no such file"):
        document_files([tmp_path / "missing"])
    assert not (tmp_path / "i" / "index.sqlite").exists()  # nothing was written


def test_retrieve_tool_and_the_wikipedia_tool_dense_mode(rag_index):
    directory, _ = rag_index
    tool = get_tool("retrieve", ToolConfig(index=str(directory), retriever="hybrid", top_k=2))
    tool.check()
    obs = tool.session().act("search", "Which airport is in Elko, Nevada?")
    assert obs.text.startswith("[1] Elko Regional Airport: ") and " [2] " in obs.text
    assert obs.source == "retrieve:rag-test-docs/hybrid" and obs.error is None
    tool.close()
    with pytest.raises(ToolSetupError, match="--retriever 'sparse'"):
        get_tool("retrieve", ToolConfig(index=str(directory), retriever="sparse")).check()
    with pytest.raises(ToolSetupError, match="no index at"):
        get_tool("retrieve", ToolConfig(index=str(directory.parent / "never-built"), retriever="bm25")).check()
    # The Wikipedia tool over the same paragraphs (a jsonl corpus): a miss lists dense neighbours.
    wiki = get_tool("wikipedia", ToolConfig(offline=True, corpus=str(CORPUS / "wikipedia" / "paragraphs.jsonl"),
                                            retriever="dense", index_dir=str(directory.parent / "wiki")))
    wiki.check()
    obs = wiki.session().act("search", "the airfield of Elko in Nevada")
    assert obs.text.startswith("Could not find") and "Elko Regional Airport" in obs.text
    wiki.close()


def test_yaml_task_rag_run_on_the_embedded_model_then_raft_rows(rag_index, model_dir, tmp_path):
    directory, _ = rag_index
    task = get_task(str(TASK), "dev")
    assert task.name == "rag-test-docs" and len(task) == 7 and task.has_answers
    assert task.meta(0) == {"id": "5a7166395542994082a3e814", "kind": "bridge"} and task.gold(0) == "Kansas Song"
    assert task.prompts == {("io", None): "io_hotpotqa", ("react", None): "react_hotpotqa_google"}
    args = ["--task", str(TASK), "--task_split", "dev", "--task_end_index", "3", "--evaluate", "--method", "rag",
            "--tool", "retrieve", "--index", str(directory), "--retriever", "hybrid", "--top_k", "2",
            "--backend", "hf", "--modelpath", model_dir, "--max_tokens", "24", "--output_dir", str(tmp_path)]
    assert generation.main(args) == 0
    run_file = next((tmp_path / "trajs").glob("rag-test-docs_dev_*.jsonl"))
    episodes = list(read_episodes(run_file))
    assert len(episodes) == 3
    for ep in episodes:
        search = ep.steps[0]
        assert (search.action_type, search.argument, search.tool) == ("search", ep.question, "retrieve")
        assert search.source == "retrieve:rag-test-docs/hybrid" and search.observation.startswith("[1] ")
        assert ep.steps[-1].action_type == "finish" and ep.similarity is not None and -1 <= ep.similarity <= 1
        assert ep.meta["kind"] in ("python", "bridge")
    apple = next(ep for ep in episodes if "Apple Remote" in ep.question)
    assert apple.steps[0].observation.startswith("[1] Apple Remote: ")  # the first hop of a two-hop question
    result = json.loads(next((tmp_path / "results").glob("rag-test-docs_dev_*.json")).read_text())
    assert result["task"] == "rag-test-docs" and 0 <= result["similarity"]["mean"] <= 1
    # The episodes' retrieved passages -> RAFT rows (gold = a passage holding the gold answer).
    out = tmp_path / "raft.json"
    assert convert.main([str(run_file), "-f", "raft", "--raft_docs", "2", "--raft_p_gold", "1", "-o", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert rows and all(set(r) == {"instruction", "input", "output"} for r in rows)
    assert all("Lawrence, Kansas" not in r["instruction"] for r in rows)  # its gold paragraph is not in the corpus
    assert all("Apple Remote was originally" not in r["instruction"] for r in rows)  # the answer was not retrieved
    heapq_row = next(r for r in rows if "heap queue algorithm?" in r["instruction"])
    assert "<DOCUMENT>heapq - Heap queue algorithm: " in heapq_row["instruction"]
    assert "heapq - Heap queue algorithm says ##begin_quote##" in heapq_row["output"]
    assert heapq_row["output"].endswith("<ANSWER>: heapq")


def test_raft_rows_from_hotpotqa_records_hold_gold_and_distractors(tmp_path):
    records = [json.loads(line) for line in (DATA / "questions.jsonl").read_text().splitlines()]
    out = tmp_path / "raft.json"
    src = ROOT / "data" / "hotpotqa_distractor" / "dev.jsonl.gz"
    assert convert.main([str(src), "-f", "raft", "--raft_docs", "4", "--raft_p_gold", "0.5", "-o", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 682 - 78  # 78 records came without any of their supporting paragraphs: skipped
    second = rows[1]  # the Apple Remote question: its supporting sentences quoted, 4 documents shown
    assert second["instruction"].count("<DOCUMENT>") == 4 and second["instruction"].endswith(records[2]["query"])
    assert _quoted_titles(second["output"]) == {"Apple Remote", "Front Row (software)"}
    assert second["output"].endswith("<ANSWER>: keyboard function keys")
    shares = [all(f"<DOCUMENT>{t}:" in r["instruction"] for t in _quoted_titles(r["output"])) for r in rows]
    assert 0.4 < sum(shares) / len(shares) < 0.6  # about p_gold of the rows show every gold document
    with pytest.raises(SystemExit):
        convert.main([str(src), "-f", "raft", "--raft_p_gold", "1.5"])


def _quoted_titles(output: str) -> set:
    return {part.split(" says ")[0].strip(". ") for part in output.split("##end_quote##")[:-1]}


def test_similarity_metric():
    same, close, far = (score_similarity(p, "keyboard function keys")["similarity"] for p in
                        ("keyboard function keys", "the function keys of the keyboard", "Nelson Rockefeller"))
    assert 0.99 < same <= 1.0 and close > 0.7 > far
    assert score_similarity("", "keyboard function keys")["similarity"] == 0.0


@pytest.fixture
def task_registry():
    """Put the task registry back afterwards: the bad tasks below register as any --task YAML does."""
    from tasks import TASKS
    from tasks import yaml_task

    TASKS.names()
    entries, loaded = dict(TASKS._entries), dict(yaml_task._LOADED)
    yield
    TASKS._entries.clear()
    TASKS._entries.update(entries)
    yaml_task._LOADED.clear()
    yaml_task._LOADED.update(loaded)


def test_bad_task_yaml_stops_with_one_line(tmp_path, capsys, task_registry):
    cases = {
        "syntax.yaml": ("task: x\nsplits: {dev: q.jsonl\n", "not valid YAML (line"),
        "field.yaml": ("task: x\nsplits: {dev: q.jsonl}\nquestoin_field: query\n", "'questoin_field'"),
        "file.yaml": ("task: x\nsplits: {dev: nowhere.jsonl}\n", "splits.dev: no such file"),
        "metric.yaml": ("task: x\nsplits: {dev: q.jsonl}\nmetric: bleu\n", "metric: unknown metric 'bleu'"),
        "record.yaml": ("task: x\nsplits: {dev: q.jsonl}\nquestion_field: query\nanswer_field: gold\n",
                        "has no field 'gold' (the YAML's answer_field)"),
    }
    shutil.copy(DATA / "questions.jsonl", tmp_path / "q.jsonl")
    for name, (text, expected) in cases.items():
        (tmp_path / name).write_text(text)
        assert generation.main(["--task", str(tmp_path / name), "--task_split", "dev", "--output_dir",
                                str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and expected in err, (name, err)
        assert name in err or "q.jsonl" in err
    assert not (tmp_path / "out").exists()  # stopped before anything was written
    (tmp_path / "no_tasks").mkdir()
    with pytest.raises(DataFileError, match="holds no .yaml"):
        get_task(str(tmp_path / "no_tasks"), "dev")


def test_python_m_tasks_lists_yaml_tasks(capsys):
    from tasks.__main__ import main

    assert main([str(TASK)]) == 0
    out = capsys.readouterr().out
    assert "rag-test-docs" in out and "hotpotqa-yaml" in out and "task.yaml" in out
    assert sys.modules["tasks.yaml_task"]
