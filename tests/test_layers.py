"""Layers import only downward: core (fireharness/) <- plug-ins (tasks/ tools/ methods/ models/) <- runs
(generation.py, finetune/) <- experiments (the loop, the Ray executor) <- views (leaderboard.py, the viewer)
<- the demo script. Read from the source (imports inside functions too), so a lazy upward import is caught."""
import ast
from pathlib import Path

from fireharness.paths import ROOT

PACKAGES = {"fireharness": 0, "tasks": 1, "tools": 1, "methods": 1, "models": 1, "generation": 2, "finetune": 2,
            "fireharness.loop": 3, "experiments": 3, "fireharness.view": 4, "leaderboard": 4, "experiments.demo": 5}
# generation.py's command line hands a run to the Ray executor when asked (`--executor ray`): the entry point
# composes the layers; the Run it builds knows nothing of Ray.
ALLOWED = {("generation", "experiments.ray_executor")}


def layer(module: str):
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in PACKAGES:
            return PACKAGES[".".join(parts[:n])]
    return None


def upward_imports(root: Path = ROOT):
    files = [p for d in ("fireharness", "tasks", "tools", "methods", "models", "finetune", "experiments")
             for p in (root / d).rglob("*.py")] + [root / "generation.py", root / "leaderboard.py"]
    assert len(files) > 50
    for path in files:
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        own = layer(module)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                if (layer(name) or 0) > own and (module, name) not in ALLOWED:
                    yield f"{path.relative_to(root)}:{node.lineno} imports {name}"


def test_layers_import_only_downward():
    assert list(upward_imports()) == []


def test_the_check_sees_an_upward_import(tmp_path):
    """The scan itself: core reaching up into the task registry (the leak records.py had) is reported."""
    (tmp_path / "fireharness").mkdir()
    (tmp_path / "fireharness" / "records.py").write_text("def f():\n    from tasks import TASKS\n")
    for d in ("tasks", "tools", "methods", "models", "finetune", "experiments"):
        (tmp_path / d).mkdir()
        for i in range(10):
            (tmp_path / d / f"m{i}.py").write_text("import fireharness.records\n")
    (tmp_path / "generation.py").write_text("")
    (tmp_path / "leaderboard.py").write_text("")
    assert list(upward_imports(tmp_path)) == ["fireharness/records.py:2 imports tasks"]
