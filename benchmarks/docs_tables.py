"""The tables of ``docs/recipe.md``, written from the committed benchmark JSON (never by hand).

    python benchmarks/docs_tables.py          # rewrite the tables between their markers
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_diagnosis import markdown_table as diagnosis_table  # noqa: E402
from bench_diagnosis import rules_table  # noqa: E402
from bench_real import markdown_table as real_table, split_table as real_split_table  # noqa: E402
from bench_real_head import markdown_table as real_head_table  # noqa: E402
from bench_operating_points import markdown_table as operating_points_table  # noqa: E402
from bench_recipe import markdown_table as recipe_table  # noqa: E402
from bench_visibility import markdown_table as visibility_table, visible_table  # noqa: E402

DOC = HERE.parent / "docs" / "recipe.md"
# The visibility table's rows, in order: the synthetic set's U-Net, then the real photos' two paths.
VISIBILITY = ("visibility_default_prepared-scaled_val.json", "visibility_magnetic_tile_working_scale_val.json",
              "visibility_magnetic_tile_squash_val.json")


def learning_curve_table(result: dict) -> str:
    lines = ["| path | budget | samples seen | train s | val Dice | val AUROC | false alarms at 95% caught |",
             "|---|---|---|---|---|---|---|"]
    for p in result["points"]:
        lines.append(f"| {p['path']} | {p['multiple']:g}x | {p['samples_seen']:,} | {p['train_seconds']:.0f} | "
                     f"{p['val_dice']:.3f} | {p['val_auroc']:.3f} | {100 * p['val_false_alarms_at_95']:.0f}% |")
    return "\n".join(lines)


def classes_table(result: dict) -> str:
    runs = result["runs"]
    classes = sorted({c for r in runs.values() for c in r if c != "free"})
    first = next(iter(runs.values()))
    lines = ["| run | " + " | ".join(f"{c} ({100 * first[c]['defect_pixel_share']:.1f}% of the defect pixels, "
                                      f"{first[c]['photos']} photo{'s' * (first[c]['photos'] > 1)})" for c in classes) + " |",
             "|---|" + "---|" * len(classes)]
    for name, r in runs.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[c]['pooled_dice']:.2f}" for c in classes) + " |")
    return "\n".join(lines)


def tables() -> dict[str, str]:
    """Marker name -> the table it must hold (only for the JSON files committed)."""
    def load(name):
        return json.loads((HERE / "results" / name).read_text(encoding="utf-8"))
    found = {"recipe-small": recipe_table(load("recipe_small.json")),
             "recipe-default": recipe_table(load("recipe_default.json")),
             "learning-curve": learning_curve_table(load("learning_curve.json"))}
    optional = {"diagnosis-magnetic": ("diagnosis_magnetic_tile.json", diagnosis_table),
                "diagnosis-magnetic-classes": ("diagnosis_magnetic_tile_by_class.json", classes_table),
                "diagnosis-default": ("diagnosis_default.json", diagnosis_table),
                "decision-default": ("diagnosis_default.json", rules_table),
                "real-magnetic": ("real_magnetic_tile.json", real_table),
                "real-magnetic-splits": ("real_magnetic_tile.json", real_split_table),
                "real-magnetic-extent": ("real_magnetic_tile_extent.json", real_table),
                "real-magnetic-head": ("real_head_magnetic_tile.json", real_head_table),
                "operating-points": ("operating_points.json", operating_points_table)}
    for marker, (name, table) in optional.items():
        if (HERE / "results" / name).is_file():
            found[marker] = table(load(name))
    visibility = [load(name) for name in VISIBILITY if (HERE / "results" / name).is_file()]
    if visibility:
        found["visibility"] = visibility_table(visibility)
        if "visible" in visibility[0]:
            found["visible-defects"] = visible_table(visibility[0])
    return found


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
