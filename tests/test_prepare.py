"""Preparation: the output contract, incremental re-runs, and every bad-input case."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from scratch_utils.errors import PrepareError
from scratch_utils.geometry import Geometry
from scratch_utils.preparation import MANIFEST_FIELDS, assign_splits, prepare
from scratch_utils.dataset import Prepared

from conftest import defect, tree_digest, write_aihub_label, write_photo


def run(source, out, **kwargs):
    return prepare(source, out, progress=False, **{"size": 64, **kwargs})


def skipped_reasons(report) -> dict:
    return {entry["file"]: entry["reason"] for entry in report["skipped"]}


# --------------------------------------------------------------------- the contract

def test_output_contract(aihub_source, tmp_path):
    before = tree_digest(aihub_source)
    out = tmp_path / "prepared"
    report = run(aihub_source, out)
    assert tree_digest(aihub_source) == before, "SOURCE must stay byte-for-byte unchanged"
    assert report["format"] == "aihub"
    assert report["counts"]["prepared"] == 10 and report["counts"]["skipped"] == 0
    assert (report["counts"]["defective"], report["counts"]["good"]) == (6, 4)
    assert report["images_per_second"] > 0 and report["seconds"] > 0

    rows = Prepared.open(out).rows
    with (out / "manifest.csv").open(encoding="utf-8") as handle:
        assert next(csv.reader(handle)) == MANIFEST_FIELDS
    for row in rows:
        image = Image.open(out / "images" / f"{row['stem']}.png")
        mask = Image.open(out / "masks" / f"{row['stem']}.png")
        assert (image.mode, image.size, mask.mode, mask.size) == ("RGB", (64, 64), "L", (64, 64))
        values = set(np.unique(np.asarray(mask)))
        assert values <= {0, 255}
        assert (255 in values) == (row["quality"] == "defective")
        assert (row["width"], row["height"]) == (320, 180)
        assert row["source_image"].startswith("data/door/scratch/")
        assert row["label_file"].startswith("label/door/scratch/")
        assert (row["defect_share"] > 0) == (row["quality"] == "defective")

    coco = COCO(str(out / "coco.json"))
    assert len(coco.getImgIds()) == 10 and len(coco.getAnnIds()) == 6
    ann = coco.loadAnns(coco.getAnnIds())[0]
    assert ann["iscrowd"] == 0 and isinstance(ann["segmentation"][0], list)
    assert coco.annToMask(ann).shape == (180, 320), "polygons stay at source resolution"
    assert not list(out.rglob("*.tmp")), "no half-written files"


def test_mask_matches_the_polygon(tmp_path):
    """A rectangle covering the left half of the photo gives the left half of the mask."""
    root = tmp_path / "src"
    write_photo(root / "a.png", width=200, height=100)
    write_aihub_label(root / "a.json", "a.png", 200, 100, [defect([0, 0, 100, 0, 100, 100, 0, 100])])
    run(root, tmp_path / "out", size=32)
    mask = np.asarray(Image.open(tmp_path / "out" / "masks" / "a.png")) > 0
    assert mask[:, :16].all() and not mask[:, 16:].any()
    assert Prepared.open(tmp_path / "out").rows[0]["defect_share"] == pytest.approx(0.5, abs=0.01)


def test_a_scratch_thinner_than_a_prepared_pixel_is_kept(tmp_path):
    """1 px wide at 1280x720 is a tenth of a pixel at 128: it must not vanish."""
    root = tmp_path / "src"
    write_photo(root / "a.jpg", width=1280, height=720)
    write_aihub_label(root / "a.json", "a.jpg", 1280, 720,
                      [defect([100, 300, 900, 310, 900, 311, 100, 301])])
    run(root, tmp_path / "out", size=128)
    mask = np.asarray(Image.open(tmp_path / "out" / "masks" / "a.png")) > 0
    assert 60 <= mask.sum() <= 200, "a thin line of prepared pixels, not nothing, not a blob"


def test_splits_are_deterministic_stratified_and_stable():
    rows = [{"stem": f"d{k}", "quality": "defective"} for k in range(60)]
    rows += [{"stem": f"g{k}", "quality": "good"} for k in range(40)]
    assign_splits(rows)
    again = [dict(r) for r in rows]
    assign_splits(again)
    assert [r["split"] for r in rows] == [r["split"] for r in again]
    for quality, n in (("defective", 60), ("good", 40)):
        splits = [r["split"] for r in rows if r["quality"] == quality]
        assert (splits.count("train"), splits.count("val"), splits.count("test")) == (
            n * 8 // 10, n // 10, n // 10)
    grown = [dict(r) for r in rows] + [{"stem": f"d{k}", "quality": "defective"}
                                        for k in range(60, 66)]
    assign_splits(grown)
    moved = sum(a["split"] != b["split"] for a, b in zip(rows, grown))
    assert moved <= 6, "adding parts moves few of the old ones"
    tiny = [{"stem": f"t{k}", "quality": "good"} for k in range(3)]
    assign_splits(tiny)
    assert sorted(r["split"] for r in tiny) == ["test", "train", "val"]


def split_folder_source(root: Path, folders, count: int = 6) -> Path:
    """An AIHub tree with ``count`` parts (half defective, half good) in each of ``folders``."""
    for folder in folders:
        for k in range(count):
            name = f"{folder.lower()}_{k}.jpg"
            write_photo(root / folder / "data" / name)
            annotations = ([defect([20, 20, 120, 30, 120, 40, 20, 34])] if k < count // 2 else
                           [defect([0, 0, 319, 0, 319, 179, 0, 179], quality="양품")])
            write_aihub_label(root / folder / "label" / f"{folder.lower()}_{k}.json", name, 320, 180, annotations)
    return root


def test_split_folders_decide_the_split(tmp_path):
    """Photos kept in train/, val/ and test/ folders (the default set's held-out parts) keep
    that split; AIHub's Training/ + Validation/ get a test split carved from the training parts."""
    from scratch_utils.dataset import Prepared
    source = split_folder_source(tmp_path / "three", ("train", "val", "test"))
    summary = run(source, tmp_path / "out3")
    assert summary["settings"]["split"] == "folders"
    rows = Prepared.open(tmp_path / "out3").rows
    assert all(row["split"] == row["stem"].split("_")[0] for row in rows)
    aihub = split_folder_source(tmp_path / "aihub", ("Training", "Validation"))
    rows = Prepared.open(run(aihub, tmp_path / "out2")["out"]).rows
    assert {r["split"] for r in rows if r["stem"].startswith("validation")} == {"val"}
    carved = [r["split"] for r in rows if r["stem"].startswith("training")]
    assert "test" in carved and "train" in carved and "val" not in carved


def test_photos_half_in_split_folders_are_refused_with_the_photo_named(tmp_path):
    source = split_folder_source(tmp_path / "mixed", ("train", "extra"))
    with pytest.raises(PrepareError, match=r"extra/data/extra_0.jpg is in no split folder"):
        prepare(source, tmp_path / "out", progress=False)


def test_rerun_skips_up_to_date_and_redoes_changed(aihub_source, tmp_path):
    out = tmp_path / "out"
    run(aihub_source, out)
    outputs = tree_digest(out / "images")
    again = run(aihub_source, out)
    assert again["counts"]["prepared"] == 0 and again["counts"]["up_to_date"] == 10
    assert tree_digest(out / "images") == outputs
    label = aihub_source / "label" / "door" / "scratch" / "part_07.json"
    write_aihub_label(label, "part_07.jpg", 320, 180, [defect([5, 5, 60, 5, 60, 60])])
    third = run(aihub_source, out)
    assert third["counts"]["prepared"] == 1 and third["counts"]["defective"] == 7
    resized = run(aihub_source, out, size=32)
    assert resized["counts"]["prepared"] == 10, "new settings re-make every output"


def test_pad_keeps_the_aspect_ratio(tmp_path):
    def box(width, height, fit):
        layout = Geometry(size=128, fit=fit).layout(width, height)
        return layout.box_w, layout.box_h, layout.x0, layout.y0
    assert box(1280, 720, "pad") == (128, 72, 0, 28)
    assert box(300, 600, "pad") == (64, 128, 32, 0)
    assert box(1280, 720, "stretch") == (128, 128, 0, 0)
    root = tmp_path / "src"
    write_photo(root / "a.png", width=400, height=200, colour=(250, 250, 250))
    write_aihub_label(root / "a.json", "a.png", 400, 200, [defect([0, 0, 400, 0, 400, 200, 0, 200])])
    run(root, tmp_path / "out", size=40, fit="pad")
    image = np.asarray(Image.open(tmp_path / "out" / "images" / "a.png"))
    mask = np.asarray(Image.open(tmp_path / "out" / "masks" / "a.png")) > 0
    assert mask[10:30].all() and not mask[:10].any() and not mask[30:].any()
    assert image[:10].max() == 0 and image[12:28].min() > 200


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_any_colour_mode_becomes_rgb(tmp_path, mode):
    root = tmp_path / "src"
    path = root / ("a.tif" if mode in {"CMYK", "I;16"} else "a.png")
    if mode == "I;16":
        root.mkdir(parents=True)
        ramp = (np.arange(160 * 90).reshape(90, 160) * 4).astype(np.uint16)
        Image.fromarray(ramp).save(path)
    else:
        write_photo(path, width=160, height=90, mode=mode)
    write_aihub_label(root / "a.json", path.name, 160, 90, [defect([0, 0, 50, 0, 50, 50])])
    report = run(root, tmp_path / "out", size=32)
    assert report["counts"]["prepared"] == 1, report["skipped"]
    image = Image.open(tmp_path / "out" / "images" / "a.png")
    assert image.mode == "RGB"
    if mode == "I;16":
        assert np.asarray(image).max() > 100, "16-bit values are rescaled, not clipped to black"


# --------------------------------------------------------------------- other formats

def test_coco_export_with_polygons_and_rle(tmp_path):
    from pycocotools import mask as mask_utils
    root = tmp_path / "roboflow" / "train"
    for k in range(3):
        write_photo(root / f"img{k}.jpg", width=100, height=80)
    rle = mask_utils.encode(np.asfortranarray(np.pad(np.ones((10, 10), np.uint8), ((0, 70), (0, 90)))))
    coco = {"images": [{"id": k, "file_name": f"img{k}.jpg", "width": 100, "height": 80}
                       for k in range(3)],
            "annotations": [
                {"id": 1, "image_id": 0, "category_id": 1, "iscrowd": 0,
                 "segmentation": [[10, 10, 50, 10, 50, 40, 10, 40]], "bbox": [10, 10, 40, 30], "area": 1200},
                {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 1,
                 "segmentation": {"size": [80, 100], "counts": rle["counts"].decode()},
                 "bbox": [0, 0, 10, 10], "area": 100}],
            "categories": [{"id": 0, "name": "scratches"}, {"id": 1, "name": "scratch"}]}
    (root / "_annotations.coco.json").write_text(json.dumps(coco))
    before = tree_digest(tmp_path / "roboflow")
    report = run(tmp_path / "roboflow", tmp_path / "out", size=20)
    assert tree_digest(tmp_path / "roboflow") == before
    assert report["format"] == "coco" and report["counts"]["prepared"] == 3
    rows = {r["stem"]: r for r in Prepared.open(tmp_path / "out").rows}
    assert [rows[f"img{k}"]["quality"] for k in range(3)] == ["defective", "defective", "good"]
    assert rows["img0"]["defect_share"] == pytest.approx(1200 / 8000, rel=0.05)
    assert rows["img1"]["defect_share"] == pytest.approx(100 / 8000)
    assert len(COCO(str(tmp_path / "out" / "coco.json")).getAnnIds()) == 2


def test_pairs_with_matching_stems(tmp_path):
    root = tmp_path / "src"
    (root / "masks").mkdir(parents=True)
    for k in range(3):
        write_photo(root / "images" / f"p{k}.jpg", width=90, height=60)
        mask = np.zeros((60, 90), np.uint8)
        mask[10:20, 10:40] = 255 if k else 0
        Image.fromarray(mask).save(root / "masks" / f"p{k}.png")
    write_photo(root / "images" / "lonely.jpg", width=90, height=60)
    report = run(root, tmp_path / "out", size=30)
    assert report["format"] == "pairs" and report["counts"]["total"] == 3
    assert "no mask" in skipped_reasons(report)["images/lonely.jpg"]
    qualities = [r["quality"] for r in Prepared.open(tmp_path / "out").rows]
    assert sorted(qualities) == ["defective", "defective", "good"]


def test_medical_course_layout_paired_by_sorted_name(tmp_path):
    """Seed 002: train/ + train_labels/ bmp, paired by sorted file name."""
    root = tmp_path / "src"
    for k in range(4):
        write_photo(root / "train" / f"{k:03d}.bmp", width=57, height=50, fmt="BMP")
        (root / "train_labels").mkdir(exist_ok=True)
        label = np.zeros((50, 57), np.uint8)
        label[:25] = 1  # 0/1 label images are common too
        Image.fromarray(label).save(root / "train_labels" / f"{k:03d}_anno.bmp")
    report = run(root, tmp_path / "out", size=16, fmt="pairs")
    assert report["counts"]["total"] == 4
    mask = np.asarray(Image.open(tmp_path / "out" / "masks" / "000.png")) > 0
    assert mask[:8].all() and not mask[8:].any()


# --------------------------------------------------------------------- bad input

@pytest.fixture
def bad_source(aihub_source):
    """The tiny tree plus one of each kind of bad file."""
    data = aihub_source / "data" / "door" / "scratch"
    labels = aihub_source / "label" / "door" / "scratch"
    (data / "corrupt.jpg").write_bytes(b"this is not a jpeg at all")
    write_aihub_label(labels / "corrupt.json", "corrupt.jpg", 320, 180, [defect([1, 1, 9, 1, 9, 9])])
    whole = (data / "part_00.jpg").read_bytes()
    (data / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    write_aihub_label(labels / "truncated.json", "truncated.jpg", 320, 180, [defect([1, 1, 9, 1, 9, 9])])
    write_aihub_label(labels / "orphan.json", "missing.jpg", 320, 180, [defect([1, 1, 9, 1, 9, 9])])
    write_photo(data / "unlabelled.jpg")
    (labels / "broken.json").write_text('{"images": [', encoding="utf-8")
    write_photo(data / "twopoints.jpg")
    write_aihub_label(labels / "twopoints.json", "twopoints.jpg", 320, 180, [defect([1, 1, 50, 50])])
    write_photo(data / "partly_bad.jpg")
    write_aihub_label(labels / "partly_bad.json", "partly_bad.jpg", 320, 180,
                      [defect([1, 1, 50, 50]), defect([300, 100, 400, 100, 400, 150, 300, 150])])
    write_aihub_label(labels / "escape.json", "../../../../etc/passwd", 320, 180, [])
    write_aihub_label(labels / "subdir.json", "data/door/scratch/part_01.jpg", 320, 180, [])
    write_photo(data / "wrongsize.jpg", width=300, height=180)
    write_aihub_label(labels / "wrongsize.json", "wrongsize.jpg", 320, 180, [defect([1, 1, 9, 1, 9, 9])])
    write_aihub_label(labels / "part_03_copy.json", "part_03.jpg", 320, 180, [])
    write_photo(aihub_source / "other" / "part_04.png")
    write_aihub_label(aihub_source / "other" / "part_04.json", "part_04.png", 320, 180, [])
    write_photo(data / "oddquality.jpg")
    write_aihub_label(labels / "oddquality.json", "oddquality.jpg", 320, 180,
                      [defect([1, 1, 9, 1, 9, 9], quality="maybe")])
    return aihub_source


def test_bad_files_are_reported_by_name_and_the_run_goes_on(bad_source, tmp_path):
    before = tree_digest(bad_source)
    report = run(bad_source, tmp_path / "out")
    assert tree_digest(bad_source) == before, "SOURCE must stay byte-for-byte unchanged"
    reasons = skipped_reasons(report)
    L = "label/door/scratch/"
    D = "data/door/scratch/"
    expected = {
        D + "corrupt.jpg": "cannot read image",
        D + "truncated.jpg": "corrupt or truncated",
        L + "orphan.json": "'missing.jpg' not found",
        D + "unlabelled.jpg": "image has no label",
        L + "broken.json": "invalid JSON at line 1",
        L + "twopoints.json": "no usable defect polygon",
        L + "escape.json": "has a directory part",
        L + "subdir.json": "has a directory part",
        D + "wrongsize.jpg": "label says 320x180 but the image is 300x180",
        L + "part_03_copy.json": "duplicate: image data/door/scratch/part_03.jpg",
        "other/part_04.png": "duplicate file name: stem 'part_04'",
        L + "oddquality.json": "quality 'maybe'",
    }
    for file, words in expected.items():
        assert file in reasons, f"{file} should be reported; got {sorted(reasons)}"
        assert words in reasons[file], f"{file}: {reasons[file]!r} lacks {words!r}"
    assert len(reasons) == len(expected), sorted(set(reasons) - set(expected))
    warnings = " | ".join(report["warnings"])
    assert "partly_bad.json annotation 1 polygon 1: has 2 point(s)" in warnings
    assert "partly_bad.json annotation 2 polygon 1: extends outside the 320x180 image: clipped" in warnings
    # The valid ones went through, including the partly bad label's good polygon.
    stems = {r["stem"] for r in Prepared.open(tmp_path / "out").rows}
    assert stems == {f"part_{k:02d}" for k in range(10)} | {"partly_bad"}
    assert not (tmp_path / "out" / "images" / "passwd.png").exists()


def test_a_label_without_bom_and_with_bom_read_the_same(tmp_path):
    for bom in (True, False):
        root = tmp_path / f"src{bom}"
        write_photo(root / "a.png", width=50, height=50)
        write_aihub_label(root / "a.json", "a.png", 50, 50, [defect([0, 0, 20, 0, 20, 20])], bom=bom)
        run(root, tmp_path / f"out{bom}", size=16)
    assert (tmp_path / "outTrue" / "masks" / "a.png").read_bytes() == (
        tmp_path / "outFalse" / "masks" / "a.png").read_bytes()


def test_image_and_mask_of_different_sizes(tmp_path):
    root = tmp_path / "src"
    write_photo(root / "images" / "a.jpg", width=90, height=60)
    write_photo(root / "images" / "b.jpg", width=90, height=60)
    (root / "masks").mkdir()
    Image.new("L", (90, 60)).save(root / "masks" / "a.png")
    Image.new("L", (45, 30)).save(root / "masks" / "b.png")
    report = run(root, tmp_path / "out", size=16)
    assert skipped_reasons(report)["images/b.jpg"] == "image is 90x60 but its mask b.png is 45x30"


@pytest.mark.parametrize("case", ["missing", "file", "empty", "out_inside", "all_bad"])
def test_unusable_source_is_one_clear_error(tmp_path, case):
    source = tmp_path / "src"
    out = tmp_path / "out"
    if case == "file":
        source.write_text("x")
    elif case == "empty":
        (source / "sub").mkdir(parents=True)
    elif case == "out_inside":
        write_photo(source / "a.png")
        write_aihub_label(source / "a.json", "a.png", 320, 180, [])
        out = source / "prepared"
    elif case == "all_bad":
        source.mkdir()
        (source / "a.json").write_text("{not json")
        (source / "b.jpg").write_bytes(b"")
    words = {"missing": "does not exist", "file": "is not a folder", "empty": "no images or labels",
             "out_inside": "inside SOURCE", "all_bad": "could be prepared"}[case]
    with pytest.raises(PrepareError, match=words):
        run(source, out)
    result = subprocess.run([sys.executable, "-m", "scratch_utils", "prepare", str(source),
                             "--out", str(out)], capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0]
    assert str(source.name) in lines[0]


def test_unreadable_source(tmp_path, monkeypatch):
    """Root reads any folder, so the permission check is exercised through os.access."""
    import scratch_utils.preparation as data_module
    source = tmp_path / "src"
    source.mkdir()
    real_access = data_module.os.access
    monkeypatch.setattr(data_module.os, "access",
                        lambda path, mode: False if Path(path) == source else real_access(path, mode))
    with pytest.raises(PrepareError, match="is not readable"):
        run(source, tmp_path / "out")


def test_cli_prepare_prints_a_summary(aihub_source, tmp_path):
    result = subprocess.run([sys.executable, "-m", "scratch_utils", "prepare", str(aihub_source),
                             "--out", str(tmp_path / "out"), "--size", "32"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "aihub: prepared 10" in result.stdout and "6 defective, 4 good" in result.stdout


def test_supersampled_coverage_agrees_with_full_resolution_rasterising():
    from pycocotools import mask as mask_utils

    from scratch_utils.masks import polygon_coverage, raster_coverage
    rng = np.random.default_rng(0)
    for _ in range(20):
        centre = rng.uniform([100, 100], [1180, 620])
        angles = np.sort(rng.uniform(0, 2 * np.pi, 7))
        radii = rng.uniform(20, 90, 7)
        polygon = (centre + np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None])
        flat = polygon.reshape(-1).tolist()
        reference = raster_coverage(mask_utils.decode(mask_utils.merge(
            mask_utils.frPyObjects([flat], 720, 1280))), (128, 96))
        fast = polygon_coverage([flat], 1280, 720, (128, 96))
        assert np.abs(fast - reference).max() < 0.3
        assert abs(fast.sum() - reference.sum()) / reference.sum() < 0.03


def test_coco_reports_unlisted_images_and_bad_entries_once(tmp_path):
    root = tmp_path / "src"
    write_photo(root / "a.jpg", width=60, height=40)
    write_photo(root / "stray.jpg", width=60, height=40)
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "width": 60, "height": 40},
                       {"id": 2, "file_name": "../outside.jpg", "width": 60, "height": 40},
                       {"id": 3, "file_name": "gone.jpg", "width": 60, "height": 40}],
            "annotations": [], "categories": [{"id": 1, "name": "scratch"}]}
    (root / "_annotations.coco.json").write_text(json.dumps(coco))
    report = run(root, tmp_path / "out", size=16)
    reasons = skipped_reasons(report)
    assert reasons["stray.jpg"] == "image is not in any COCO file"
    assert "leaves SOURCE" in reasons["_annotations.coco.json image 2"]
    assert "not found" in reasons["_annotations.coco.json image 3"]
    assert len(reasons) == 3 and report["counts"]["total"] == 1


def test_a_large_defect_on_a_large_box_is_thresholded_not_kept_whole():
    """A defect of 6 M source pixels on a 3 MP box: its area in prepared pixels is 1.5 M, and
    pycocotools' uint32 area times the box size overflowed, so the defect read as thin and kept
    every pixel it touched. It is a blob: a pixel is defect when a quarter of it is covered."""
    import warnings

    from scratch_utils.geometry import Geometry
    from scratch_utils.masks import polygon_coverage, prepared_mask
    from scratch_utils.sources import Item
    width, height = 4000, 3000
    square = [500.3, 500.3, 3500.3, 500.3, 3500.3, 2500.3, 500.3, 2500.3]   # 3000 x 2000, edges at .3
    item = Item(stem="big", image="", source_image="big.jpg", polygons=[[square]])
    layout = Geometry(scale=0.5).layout(width, height)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "overflow encountered"
        mask, area = prepared_mask(item, (width, height), layout)
    coverage = polygon_coverage([square], width, height, (layout.box_w, layout.box_h))
    assert area == pytest.approx(6e6, rel=1e-3)
    assert np.array_equal(mask, coverage >= 0.25), "thresholded at a quarter, not every pixel touched"
    assert np.any((coverage > 0) & (coverage < 0.25)), "the test has edge pixels covered under a quarter"
