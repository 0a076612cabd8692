"""The benchmarks that decide the recipe run end to end in the smoke profile (their numbers
come from the default profile; here only that they run and write what the README reads)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_the_learning_curve_runs_in_the_smoke_profile(tmp_path):
    env = {**os.environ, "SCRATCH_DATA_DIR": str(tmp_path / "data"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_learning_curve.py"), "--profile",
                           "smoke", "--multiples", "1", "2", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "learning_curve.json").read_text())
    assert {(p["path"], p["multiple"]) for p in result["points"]} == {
        (path, m) for path in ("working scale, tiles", "128-px squash") for m in (1, 2)}
    for p in result["points"]:
        assert 0 <= p["val_dice"] <= 1 and 0 <= p["val_false_alarms_at_95"] <= 1
    doubled = {p["path"]: p["samples_seen"] for p in result["points"] if p["multiple"] == 2}
    single = {p["path"]: p["samples_seen"] for p in result["points"] if p["multiple"] == 1}
    assert all(doubled[path] == 2 * single[path] for path in single), "samples seen double with the budget"
    assert (tmp_path / "learning_curve.png").stat().st_size > 10_000


def test_the_operating_points_benchmark_reads_a_run_and_writes_its_table(run, tmp_path):
    """bench_operating_points.py on a trained run folder: a false-alarm rate per target that never falls as
    the target rises, and the table docs/recipe.md shows."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_operating_points import TARGETS, markdown_table, operating_points
    row = operating_points(run)
    def rate(value):   # "not reached" (None) ranks above every rate: no decision of the search gets there
        return 2.0 if value is None else value
    located = [row["located"][f"{t:.2f}"] for t in TARGETS]
    assert all(v is None or 0 <= v <= 1 for v in located) and [rate(v) for v in located] == sorted(map(rate, located))
    assert all(rate(row["any_call"][f"{t:.2f}"]) <= rate(row["located"][f"{t:.2f}"]) for t in TARGETS)
    unreached = {"unet": {"located": dict.fromkeys(row["located"]), "any_call": dict.fromkeys(row["any_call"])}}
    assert markdown_table({"models": unreached}).splitlines()[-1].count("not reached") == len(TARGETS) + 1
    assert row["defective_parts"] > 0 and row["good_parts"] > 0
    assert markdown_table({"models": {"unet": row}}).count("\n") == 2


def test_the_real_photo_head_benchmark_fits_a_head_on_a_finished_run_and_only_reads_it(run):
    """bench_real_head.py on a trained run: both rules chosen on validation and read on test, the run
    folder byte for byte unchanged, and a table row per rule with the seeds' range."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from conftest import tree_digest
    from bench_real_head import RULES, head_row, markdown_table
    run_predictions_kept = {split: (run / "predictions" / f"{split}.npz").is_file() for split in ("val", "test")}
    assert all(run_predictions_kept.values())          # a finished run, as bench_real leaves it
    before = tree_digest(run)
    row = head_row({"run": str(run), "seed": 0, "masks": "published", "path": "working scale"})
    assert tree_digest(run) == before
    for rule in RULES:
        for split in ("val", "test"):
            scored = row["rules"][rule][split]
            assert 0 <= scored["auroc"] <= 1
            if scored["false_alarms_at_95"] is not None:        # located at 95% implies caught at 95%
                assert 0 <= scored["false_alarms_at_95_any"] <= scored["false_alarms_at_95"] <= 1
    assert row["rules"]["head"]["decision"].startswith("part head")
    head_test = row["rules"]["head"]["test"]     # no decision of the head locates more than calling every part
    assert head_test["located_detection_rate"] <= head_test["locatable"] + 1e-9
    other = json.loads(json.dumps(row))
    other["seed"], other["rules"]["head"]["val"]["auroc"] = 1, row["rules"]["head"]["val"]["auroc"] / 2
    lines = markdown_table({"runs": [row, other]}).splitlines()
    assert len(lines) == 4 and [line.split(" | ")[2] for line in lines[2:]] == ["region rule", "part head"]
    assert all(line.split(" | ")[3] == "2" for line in lines[2:]) and "-" in lines[3].split(" | ")[4]
    other["rules"]["head"]["test"]["false_alarms_at_95"], row["rules"]["head"]["test"]["false_alarms_at_95"] = None, 0.25
    head_line = markdown_table({"runs": [row, other]}).splitlines()[3]
    assert "/ not reached (1 of 2 seeds: 25%) |" in head_line


def test_the_real_photo_table_lists_fixed_scales_after_the_named_paths():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_real import geometry, markdown_table, run_name
    scores = {"dice": 0.5, "dice_defective_parts": 0.4, "located_detection_rate": 0.9, "false_alarm_rate": 0.3,
              "false_alarms_at_95_any": 0.4, "false_alarms_at_95": 0.5}
    runs = [{"masks": "published", "path": path, "seed": 0, "geometry": geometry_name, "seconds": 300.0,
             "val": scores, "test": scores}
            for path, geometry_name in (("fixed scale 0.25", "scale 0.25"), ("working scale, zoom 0.3", "scale 0.5"),
                                        ("128-px squash", "128 px square"),
                                        ("128-px letterbox", "128 px square, aspect kept (padded)"),
                                        ("80-px extent", "each photo to 80 px square's pixels, aspect kept"),
                                        ("128-px extent", "each photo to 128 px square's pixels, aspect kept"),
                                        ("working scale", "scale 0.5"))]
    rows = [line for line in markdown_table({"runs": runs}).splitlines()[2:]]
    assert [row.split(" | ")[1] for row in rows] == ["working scale", "128-px squash", "128-px letterbox",
                                                     "128-px extent", "80-px extent",
                                                     "fixed scale 0.25", "working scale, zoom 0.3"]
    assert [run_name(r["path"], 1) for r in runs] == ["scale0.25-s1", "scaled-zoom0.3-s1", "square-s1", "letterbox-s1",
                                                      "extent80-s1", "extent-s1", "scaled-s1"]
    assert geometry({"extent": 80, "scale": None}) == "each photo to 80 px square's pixels, aspect kept"
    assert geometry({"size": 128, "fit": "pad"}) == "128 px square, aspect kept (padded)"
    assert geometry({"size": 128, "fit": "stretch"}) == "128 px square"
    assert geometry({"scale": 0.25}) == "scale 0.25"


def test_the_real_photo_tables_keep_splits_apart():
    """The main table is split 0's; the split table sets each path's val / test Dice per split side by side."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_real import markdown_table, split_table
    def run(path, split, dice):
        scores = {"dice": dice, "dice_defective_parts": 0.4, "located_detection_rate": 0.9, "false_alarm_rate": 0.3,
                  "false_alarms_at_95_any": 0.4, "false_alarms_at_95": 0.5}
        return {"masks": "published", "path": path, "seed": 0, "split_seed": split, "geometry": "scale 0.25",
                "seconds": 300.0, "val": scores, "test": {**scores, "dice": dice + 0.1}}
    runs = [run("working scale", 0, 0.5), run("working scale", 1, 0.6), run("128-px squash", 0, 0.55)]
    main = markdown_table({"runs": runs}).splitlines()[2:]
    assert len(main) == 2 and "| 0.500 | 0.600 |" in main[0]   # val / test Dice; split 1's run is not averaged in
    lines = split_table({"runs": runs}).splitlines()
    assert lines[2] == "| published | working scale | 0.500 / 0.600 | 0.600 / 0.700 |" and len(lines) == 3


def test_the_visibility_benchmark_measures_a_defects_contrast_and_what_a_run_makes_of_the_faint(run, prepared):
    """bench_visibility.py: a stroke 20 levels above noisy grey paint reads about 20 levels, one drawn at the
    paint's own level under 1; on a prepared set and its run, every defective validation part gets a
    contrast and the loosest threshold that locates it, and leaving faint parts out only removes parts."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import numpy as np
    from bench_visibility import FAINT_LEVELS, defect_contrast, part_visibility, run_rows
    from scratch_utils.dataset import Prepared
    from scratch_utils.decision import false_alarms_at
    from scratch_utils.evaluation import run_predictions
    rng = np.random.default_rng(0)
    grey = 100 + rng.normal(0, 2, (60, 80))
    stroke = np.zeros(grey.shape, bool)
    stroke[28:31, 10:70] = True
    visible = defect_contrast(np.where(stroke, grey + 20, grey), stroke)
    assert 18 < visible["levels"] < 22 and visible["cnr"] > 5 and visible["pixels"] == 180
    assert defect_contrast(grey, stroke)["levels"] < 1
    prepared = Prepared.open(prepared)
    stem = next(r["stem"] for r in prepared.split("val") if r["quality"] == "defective")
    assert np.array_equal(np.logical_or.reduce(prepared.truths.defects(stem)), prepared.truths(stem))
    rows = [part_visibility(prepared, r) for r in prepared.split("val") if r["quality"] == "defective"]
    assert rows and all(r["defects"] >= 1 and r["levels"] >= 0 for r in rows)
    found = run_rows(run, "val", {r["stem"]: r for r in rows})
    assert len(found["parts"]) == len(rows) and all(0 <= p["loosest_located_threshold"] <= 1 for p in found["parts"])
    counts = [found["faint_parts_left_out"][str(b)]["defective_parts"] for b in (0, *FAINT_LEVELS)]
    assert counts[0] == len(rows) and counts == sorted(counts, reverse=True)
    assert found["faint_parts_left_out"]["0"]["false_alarms_at_95"] == false_alarms_at(
        run_predictions(run, "val"), "regions", unreached=None)
