"""The part head on real photos: fitted after the fact on the runs ``bench_real.py`` trained, and
compared with the region rule on the same runs, the same splits and the same decision search.

The head (:mod:`scratch_utils.decision`) is what ``train --decision head`` fits at the end of a run:
a small network on the frozen segmentation network's features and mask over every training photo,
good ones included. So fitting it on a finished run measures the same thing without training the
segmentation network again. The run folders are only read: the head and its predictions stay in
memory, and the operating point each rule gets is chosen on validation, then read on test once.

    python benchmarks/bench_real_head.py [benchmarks/results/real_magnetic_tile_extent.json]

Writes ``benchmarks/results/real_head_<folder>.json`` and prints the table of ``docs/recipe.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


from scratch_utils.dataset import Prepared  # noqa: E402
from scratch_utils.decision import choose_operating_point, false_alarms_at, head_points_at_defect  # noqa: E402
from scratch_utils.evaluation import predict_split, scores, sweep  # noqa: E402
from scratch_utils.files import atomic_write_json  # noqa: E402
from scratch_utils.runs import load_run_config, load_run_model  # noqa: E402
from scratch_utils.train import fit_part_head  # noqa: E402
from bench_real import cell as mean_and_range  # noqa: E402

HERE = Path(__file__).resolve().parent
RULES = ("regions", "head")
KEPT = ("auroc", "located_detection_rate", "false_alarm_rate", "good_parts", "defective_parts")


def rule_rows(val, test) -> dict:
    """Per rule: its validation-chosen point, and the scores it gives on validation and on test."""
    found = {}
    for rule in RULES:
        point = choose_operating_point(val, rule=rule)
        found[rule] = {"decision": point.describe()}
        for split, predictions in (("val", val), ("test", test)):
            scored = scores(predictions, point)
            # None where no decision of the rule gets there ("not reached"), not 100%.
            found[rule][split] = {**{key: scored[key] for key in KEPT},
                                  "false_alarms_at_95": false_alarms_at(predictions, rule, unreached=None),
                                  "false_alarms_at_95_any": false_alarms_at(predictions, rule, located=False,
                                                                            unreached=None)}
            if rule == "head":
                # The most any threshold of the head can locate: calling every part, the share of
                # defective ones whose mask (or, with none, most probable pixel) is at the defect.
                pointing = head_points_at_defect(predictions, point.mask_threshold)[predictions.is_defective]
                found[rule][split]["locatable"] = float(pointing.mean())
    return found


def reached(rate: float | None) -> str:
    return "not reached" if rate is None else f"{rate:.0%}"


def head_row(row: dict) -> dict:
    """One run of ``bench_real.py``: a part head fitted on its training photos, and both rules
    decided from one pass of the model over the validation and test photos (nothing written)."""
    run = Path(row["run"])
    started = time.perf_counter()
    model, prepared = load_run_model(run), Prepared.of(load_run_config(run)["prepared"])
    head = fit_part_head(model, prepared, seed=row["seed"])
    with_head = {split: sweep(predict_split(model, prepared, split, head)) for split in ("val", "test")}
    rules = rule_rows(with_head["val"], with_head["test"])
    out = {key: row[key] for key in ("masks", "path", "seed", "split_seed", "run", "geometry") if key in row}
    out.update(rules=rules, seconds=round(time.perf_counter() - started, 1))
    print(f"{row['masks']:10s} {row['path']:16s} seed {row['seed']}: " + "; ".join(
        f"{rule} val AUROC {r['val']['auroc']:.3f}, false alarms at 95% caught {reached(r['val']['false_alarms_at_95_any'])} "
        f"(located {reached(r['val']['false_alarms_at_95'])})" for rule, r in rules.items()), flush=True)
    return out


def markdown_table(result: dict) -> str:
    """One row per mask version, path and rule: means over seeds with their range."""
    def cell(values, percent=True):
        reached = [v for v in values if v is not None]
        if len(reached) == len(values):
            return mean_and_range(values, percent)
        return "not reached" + (f" ({len(reached)} of {len(values)} seeds: {cell(reached)})" if reached else "")

    lines = ["| masks | path | decision | seeds | AUROC (val / test) | false alarms at 95% caught, any call (val / test) | "
             "false alarms at 95% caught where the defect is (val / test) | test: caught where the defect is / "
             "false alarms (val-chosen decision) | the most a head call can locate (val / test) |", "|" + "---|" * 9]
    groups: dict = {}
    for row in result["runs"]:
        groups.setdefault((row["masks"], row["path"]), []).append(row)
    for (masks, path), rows in groups.items():
        for rule in RULES:
            val = [r["rules"][rule]["val"] for r in rows]
            test = [r["rules"][rule]["test"] for r in rows]
            lines.append(
                f"| {masks} | {path} | {'part head' if rule == 'head' else 'region rule'} | {len(rows)} | "
                f"{cell([v['auroc'] for v in val], False)} / {cell([t['auroc'] for t in test], False)} | "
                f"{cell([v['false_alarms_at_95_any'] for v in val])} / {cell([t['false_alarms_at_95_any'] for t in test])} | "
                f"{cell([v['false_alarms_at_95'] for v in val])} / {cell([t['false_alarms_at_95'] for t in test])} | "
                f"{cell([t['located_detection_rate'] for t in test])} / {cell([t['false_alarm_rate'] for t in test])} | "
                + (f"{cell([v['locatable'] for v in val])} / {cell([t['locatable'] for t in test])} |"
                   if rule == "head" else "- |"))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="?", default=HERE / "results" / "real_magnetic_tile_extent.json",
                        help="a JSON that bench_real.py wrote (its runs must still be on this machine)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    source = json.loads(args.runs.read_text())
    present = [r for r in source["runs"] if (Path(r["run"]) / "model.keras").is_file()]
    if not present:
        raise SystemExit(f"{args.runs}: none of its runs is on this machine (run bench_real.py first)")
    rows = [head_row(row) for row in present]
    result = {"benchmark": "part head on real photos", "folder": source["folder"], "from": args.runs.name,
              "scored_on": "the folder's own validation split (choice) and test split (read once)",
              "cpu": source.get("cpu"), "runs": rows}
    out = args.out / f"real_head_{source['folder']}.json"
    atomic_write_json(out, result)
    print(markdown_table(result))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
