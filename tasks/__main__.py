"""``python -m tasks``: every task and split with its size and whether it has answers."""
from tabulate import tabulate

from . import TASKS, get_task


def main() -> None:
    rows = []
    for name in TASKS.names():
        for split in TASKS.get(name).splits:
            t = get_task(name, split)
            rows.append([name, split, len(t), "yes" if t.has_answers else "no"])
    print(tabulate(rows, headers=["task", "split", "questions", "answers"], tablefmt="github"))
    print("\nmmlu also takes one subject as <subject>_<split>, e.g. mmlu abstract_algebra_test.")


if __name__ == "__main__":
    main()
