"""The tables of ``docs/recipe.md``, written from the committed benchmark JSON (never by hand).

    python benchmarks/docs_tables.py          # rewrite the tables between their markers
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_recipe import markdown_table as recipe_table  # noqa: E402

DOC = HERE.parent / "docs" / "recipe.md"


def learning_curve_table(result: dict) -> str:
    lines = ["| path | budget | samples seen | train s | val Dice | val AUROC | false alarms at 95% caught |",
             "|---|---|---|---|---|---|---|"]
    for p in result["points"]:
        lines.append(f"| {p['path']} | {p['multiple']:g}x | {p['samples_seen']:,} | {p['train_seconds']:.0f} | "
                     f"{p['val_dice']:.3f} | {p['val_auroc']:.3f} | {100 * p['val_false_alarms_at_95']:.0f}% |")
    return "\n".join(lines)


def tables() -> dict[str, str]:
    """Marker name -> the table it must hold."""
    def load(name):
        return json.loads((HERE / "results" / name).read_text(encoding="utf-8"))
    return {"recipe-small": recipe_table(load("recipe_small.json")),
            "recipe-default": recipe_table(load("recipe_default.json")),
            "learning-curve": learning_curve_table(load("learning_curve.json"))}


def block(text: str, name: str) -> str:
    """The text between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def main() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name, table in tables().items():
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        before, rest = text.split(start, 1)
        text = f"{before}{start}\n{table}\n{end}{rest.split(end, 1)[1]}"
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote the tables of {DOC.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
