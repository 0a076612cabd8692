import json

import numpy as np
from PIL import Image

from scratch_utils import QUALITY_DEFECTIVE, QUALITY_GOOD
from scratch_utils.synthetic import PartSpec, generate, render_part

from conftest import tree_digest


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path):
    generate(tmp_path / "a", count=4, seed=3, width=320, height=180, workers=1, progress=False)
    generate(tmp_path / "b", count=4, seed=3, width=320, height=180, workers=2, progress=False)
    generate(tmp_path / "c", count=4, seed=4, width=320, height=180, workers=1, progress=False)
    digest = lambda p: {k: v[0] for k, v in tree_digest(p).items()}  # noqa: E731
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != {k.replace("s004", "s003"): v
                                      for k, v in digest(tmp_path / "c").items()}


def test_labels_follow_the_aihub_schema(tmp_path):
    generate(tmp_path, count=12, seed=0, width=320, height=180, workers=1, progress=False)
    labels = sorted((tmp_path / "labels").glob("*.json"))
    assert len(labels) == 12 == len(list((tmp_path / "images").glob("*.jpg")))
    for path in labels:
        raw = path.read_bytes()
        assert raw.startswith(b"\xef\xbb\xbf"), "AIHub labels are UTF-8 with BOM"
        label = json.loads(raw.decode("utf-8-sig"))
        meta = label["images"][0]
        assert set(meta) >= {"file_name", "height", "width", "date_captured"}
        assert (tmp_path / "images" / meta["file_name"]).is_file()
        with Image.open(tmp_path / "images" / meta["file_name"]) as image:
            assert image.size == (meta["width"], meta["height"]) == (320, 180)
        qualities = {a["attributes"]["quality"] for a in label["annotations"]}
        assert qualities in ({QUALITY_GOOD}, {QUALITY_DEFECTIVE})
        for ann in label["annotations"]:
            polygon = np.asarray(ann["segmentation"]).reshape(-1, 2)
            assert len(polygon) >= 3
            assert polygon[:, 0].min() >= 0 and polygon[:, 0].max() <= 320
            assert polygon[:, 1].min() >= 0 and polygon[:, 1].max() <= 180
            x, y, w, h = ann["bbox"]
            assert abs(x - polygon[:, 0].min()) < 0.2 and abs(w - np.ptp(polygon[:, 0])) < 0.3
            assert 0 < ann["area"] <= w * h + 1


def test_about_forty_percent_of_parts_are_good():
    flags = [render_part(PartSpec(i, 0, 96, 64))[2] for i in range(200)]
    good_share = 1 - np.mean(flags)
    assert 0.3 < good_share < 0.5


def test_scratches_change_the_pixels_they_are_labelled_on():
    """The polygon is where the paint differs: labels and pixels agree."""
    from pycocotools import mask as mask_utils
    for index in range(30):
        pixels, label, defective = render_part(PartSpec(index, 1, 640, 360))
        if not defective:
            continue
        ann = label["annotations"][0]
        rle = mask_utils.frPyObjects([ann["segmentation"]], 360, 640)
        inside = mask_utils.decode(mask_utils.merge(rle)).astype(bool)
        assert inside.sum() > 0
        # Scratch pixels stand out from the paint right around them.
        x, y, w, h = (int(v) for v in ann["bbox"])
        ring = np.zeros_like(inside)
        ring[max(0, y - 6):y + h + 7, max(0, x - 6):x + w + 7] = True
        ring &= ~inside
        grey = pixels.astype(float).mean(axis=2)
        assert abs(grey[inside].mean() - grey[ring].mean()) > 1.0 or grey[inside].std() > 3
        return
    raise AssertionError("no defective part among the first 30")


def test_rerun_keeps_existing_files(tmp_path):
    generate(tmp_path, count=3, seed=0, width=160, height=96, workers=1, progress=False)
    before = tree_digest(tmp_path)
    summary = generate(tmp_path, count=3, seed=0, width=160, height=96, workers=1, progress=False)
    assert tree_digest(tmp_path) == before
    assert summary["good"] + summary["defective"] == 3


def test_a_rerun_reads_existing_parts_instead_of_rendering_them(tmp_path, monkeypatch):
    from scratch_utils import synthetic
    first = generate(tmp_path, count=6, seed=5, width=160, height=96, workers=1, progress=False)
    before = tree_digest(tmp_path)

    def no_rendering(spec):
        raise AssertionError("an existing part was rendered again")
    monkeypatch.setattr(synthetic, "render_part", no_rendering)
    again = generate(tmp_path, count=6, seed=5, width=160, height=96, workers=1, progress=False)
    assert again == first and tree_digest(tmp_path) == before


def test_visible_draws_the_faint_defects_the_default_draws_near_invisible_and_changes_nothing_else():
    """Validation parts 100 and 25 of the default profile carry a scratch a few levels from its paint
    (a dark one on black, a light one on pale paint): with ``visible`` the same scratch, same label,
    stands well out; a part whose scratch already shows (part 5: dark on red) is drawn bit for bit alike."""
    import sys
    from pathlib import Path
    from pycocotools import mask as mask_utils
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from bench_visibility import defect_contrast
    from scratch_utils.synthetic import VISIBLE_LEVELS

    def drawn(index, visible):
        pixels, label, defective = render_part(PartSpec(index, 1, 1280, 720, 0.62, visible))
        defects = [mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([a["segmentation"]], 720, 1280))).astype(bool)
                   for a in label["annotations"]]
        return pixels, label, max(defect_contrast(pixels, d)["levels"] for d in defects)

    for index in (100, 25):
        (_, label, faint), (_, same_label, shown) = drawn(index, False), drawn(index, True)
        assert same_label == label and faint < 5 and shown > 2 * VISIBLE_LEVELS
    (pixels, _, _), (same_pixels, _, _) = drawn(5, False), drawn(5, True)
    assert np.array_equal(pixels, same_pixels)


def test_a_folder_generated_with_other_settings_is_refused_not_mixed(tmp_path):
    """Parts are reused by name, so a folder drawn with other settings (another share of good parts,
    visible defects, or from before the settings were written: not visible) would mix two sets."""
    import pytest
    generate(tmp_path / "a", count=2, seed=0, width=160, height=96, workers=1, progress=False)
    with pytest.raises(ValueError, match=r"a holds parts generated with other settings \(visible False there, True asked\)"):
        generate(tmp_path / "a", count=2, seed=0, width=160, height=96, workers=1, progress=False, visible=True)
    with pytest.raises(ValueError, match="good_fraction 0.4 there, 0.7 asked"):
        generate(tmp_path / "a", count=3, seed=0, width=160, height=96, workers=1, progress=False, good_fraction=0.7)
    (tmp_path / "a" / ".synthetic.json").unlink()            # a folder from before the settings were written
    generate(tmp_path / "a", count=3, seed=0, width=160, height=96, workers=1, progress=False)
    with pytest.raises(ValueError, match="visible False there"):
        generate(tmp_path / "a", count=3, seed=0, width=160, height=96, workers=1, progress=False, visible=True)


def test_the_course_draws_its_synthetic_set_visible_in_its_own_folder_beside_an_older_one(tmp_path, monkeypatch):
    """Every profile's set keeps its defects visible (a label no one can see measures the generator),
    in ``synthetic-visible``: a set drawn before, in ``synthetic``, is neither refused nor touched."""
    from dataclasses import replace
    from scratch_utils.dataset import synthetic_source
    from scratch_utils.profiles import PROFILES, SyntheticSplit
    assert all(profile.visible_defects for profile in PROFILES.values())
    monkeypatch.setenv("SCRATCH_DATA_DIR", str(tmp_path))
    tiny = replace(PROFILES["smoke"], photo_size=(160, 96),
                   synthetic={"train": SyntheticSplit(2, 0, 0.0), "val": SyntheticSplit(1, 1, 0.0)})
    generate(tmp_path / "smoke" / "synthetic" / "train", count=2, seed=0, width=160, height=96, workers=1,
             progress=False)
    before = tree_digest(tmp_path / "smoke" / "synthetic")
    source = synthetic_source(tiny, progress=False)
    assert source == tmp_path / "smoke" / "synthetic-visible"
    for split in ("train", "val"):
        assert json.loads((source / split / ".synthetic.json").read_text())["visible"] is True
    assert tree_digest(tmp_path / "smoke" / "synthetic") == before
