"""``python -m tasks [PATH...]``: every task and split with its size and whether it has answers; PATHs are
task YAMLs or folders of them (tasks/yaml_task.py), listed with the built-in tasks."""
import sys

from tabulate import tabulate

from . import TASKS, DataFileError, get_task


def main(argv=None) -> int:
    from .yaml_task import register_path

    try:
        for path in (sys.argv[1:] if argv is None else argv):
            register_path(path)
    except DataFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = []
    for name in TASKS.names():
        for split in TASKS.get(name).splits:
            try:
                t = get_task(name, split)
            except DataFileError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            source = getattr(t, "yaml_path", "") or "built-in"
            rows.append([name, split, len(t), "yes" if t.has_answers else "no", source])
    print(tabulate(rows, headers=["task", "split", "questions", "answers", "defined in"], tablefmt="github"))
    print("\nmmlu also takes one subject as <subject>_<split>, e.g. mmlu abstract_algebra_test.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
