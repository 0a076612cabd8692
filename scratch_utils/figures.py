"""Figures: one helper writes every figure, plus the plots the notebooks share (notebooks 01-05).

``save_figure`` writes ``<folder>/<name>.png``: the notebooks pass the folder
:func:`scratch_utils.profiles.outputs` gives them (the repository's ``figures/`` for the synthetic
set of a published profile, a folder beside the data for smoke runs and for photos of your own),
so tests and your own photos never overwrite the committed figures.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib import patheffects
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.morphology import disk

from .metrics import scores_from_counts
from .photos import DEFECT_COLOUR, overlay



def write_figure(fig, path, dpi: int = 110) -> None:
    """Write ``fig`` as a PNG at ``path``: the one place figures are written (no timestamp
    in the file, so a regenerated figure only differs where its content does)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Software": None})


def save_figure(fig, name: str, folder, dpi: int = 110) -> None:
    """Write ``fig`` as ``<folder>/<name>.png`` (the notebooks pass their
    :func:`scratch_utils.profiles.outputs` ``.figures``); returns nothing, so a notebook cell
    ending with it shows the figure, not a path."""
    write_figure(fig, Path(folder) / f"{name}.png", dpi)


def show_preparation(rows: list[dict], prepared, title: str = ""):
    """Per part: the source photo with its label polygons, the prepared pair, the overlay
    (``prepared``: a :class:`scratch_utils.dataset.Prepared`)."""
    fig, axes = plt.subplots(len(rows), 4, figsize=(13, 2.6 * len(rows)), squeeze=False,
                             gridspec_kw={"width_ratios": [1.8, 1, 1, 1]})
    for row, ax in zip(rows, axes):
        photo = Image.open(prepared.source_photo(row)).convert("RGB")
        ax[0].imshow(photo)
        for poly in prepared.truths.polygons(row["stem"]):
            xy = np.asarray(poly).reshape(-1, 2)
            ax[0].fill(xy[:, 0], xy[:, 1], facecolor="none", edgecolor=DEFECT_COLOUR, linewidth=0.6)
        ax[0].set_title(f"{row['stem']}: {row['quality']}, {row['width']}x{row['height']}",
                        fontsize=9)
        image = np.asarray(Image.open(prepared.image_path(row["stem"])))
        mask = np.asarray(Image.open(prepared.mask_path(row["stem"])))
        ax[1].imshow(image)
        ax[1].set_title(f"prepared {image.shape[1]}x{image.shape[0]}", fontsize=9)
        ax[2].imshow(mask, cmap="gray", vmin=0, vmax=255)
        ax[2].set_title(f"mask: {100 * (mask > 0).mean():.2f}% defect", fontsize=9)
        ax[3].imshow(overlay(image, mask))
        ax[3].set_title("scratch masked", fontsize=9)
        for a in ax:
            a.set_xticks([])
            a.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return fig


def plot_split_counts(rows: list[dict]):
    """Good and defective parts in each split (stratified: the same shares everywhere)."""
    splits = ["train", "val", "test"]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    x = np.arange(len(splits))
    for offset, quality, colour in ((-0.2, "good", "#4c9a6a"), (0.2, "defective", "#c2185b")):
        counts = [sum(r["split"] == s and r["quality"] == quality for r in rows) for s in splits]
        bars = ax.bar(x + offset, counts, width=0.4, label=quality, color=colour)
        ax.bar_label(bars, fontsize=8)
    ax.set_xticks(x, splits)
    ax.set_ylabel("parts")
    ax.set_title("Good and defective parts per split")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def plot_defect_sizes(rows: list[dict]):
    """How much of each defective photo is defect: the class imbalance a model faces."""
    shares = np.asarray([r["defect_share"] for r in rows if r["quality"] == "defective"])
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    if shares.size:
        bins = np.logspace(np.log10(max(shares.min(), 1e-6)), np.log10(shares.max()) + 1e-9, 25)
        ax.hist(shares * 100, bins=bins * 100, color="#c2185b", alpha=0.85)
        ax.set_xscale("log")
        median = np.median(shares) * 100
        ax.axvline(median, color="black", linestyle="--", linewidth=1)
        ax.text(median, ax.get_ylim()[1] * 0.92, f" median {median:.2f}%", fontsize=8)
    ax.set_xlabel("defect area, % of the photo (log scale)")
    ax.set_ylabel("defective parts")
    ax.set_title("Defect size distribution")
    fig.tight_layout()
    return fig


def show_augmented_pairs(originals: tuple, augmented: list[tuple], labels: list[str],
                         n_parts: int = 3):
    """Rows of parts; columns: the original and each augmented version, the mask outlined
    (magenta) so the scratch under it stays visible.

    ``originals`` is ``(images, masks)`` as batches; ``augmented`` a list of such batches
    (same parts, different seeds or transforms) titled by ``labels``.
    """
    columns = [originals, *augmented]
    titles = ["original", *labels]
    fig, axes = plt.subplots(n_parts, len(columns), figsize=(2.3 * len(columns), 2.4 * n_parts),
                             squeeze=False)
    for row in range(n_parts):
        for col, ((images, masks), title) in enumerate(zip(columns, titles)):
            ax = axes[row, col]
            ax.imshow(np.clip(np.asarray(images[row]), 0, 1), interpolation="nearest")
            mask = np.asarray(masks[row])[..., 0]
            if mask.any():
                ax.contour(mask.astype(float), levels=[0.5], colors=[DEFECT_COLOUR], linewidths=0.9)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


ROW_COLOURS = {"encoder_decoder": "tab:blue", "unet": "tab:orange", "unet_bce": "tab:green",
               "unet_dice": "tab:red", "vgg16_unet": "tab:purple", "unet_squashed": "tab:brown",
               "unet_region_rule": "tab:olive", "ridge_filter": "tab:gray", "flag_every_part": "black"}


def row_colour(name: str, index: int):
    """One colour per comparison row in every figure (a name not listed takes the cycle's)."""
    return ROW_COLOURS.get(name, f"C{index % 10}")


def plot_comparison_bars(rows: list[dict], chosen: str | None = None, split: str = "test",
                         keys=("dice", "dice_defective_parts", "located_detection_rate", "false_alarm_rate")):
    """Grouped bars: one group per score, one bar per model (test split, chosen operating
    point), with the 95% interval over parts where the results carry one; the plant's target
    and limit drawn on the two scores they apply to; the model ``chosen`` on validation edged
    in black and named so in the legend."""
    fig, ax = plt.subplots(figsize=(11, 4.6))
    width = 0.8 / len(rows)
    x = np.arange(len(keys))
    for k, row in enumerate(rows):
        values = np.array([_number(row.get(f"{split}_{key}")) for key in keys])
        positions = x + (k - (len(rows) - 1) / 2) * width
        mine = row["name"] == chosen
        ax.bar(positions, values, width, label=row["name"] + (" (chosen on validation)" if mine else ""),
               color=row_colour(row["name"], k), edgecolor="black" if mine else "none", linewidth=2 if mine else 0)
        with_interval = [j for j, key in enumerate(keys) if f"{split}_{key}_low" in row]
        if with_interval:   # only the scores that carry a bootstrap interval get an error bar
            low = np.array([_number(row[f"{split}_{keys[j]}_low"], values[j]) for j in with_interval])
            high = np.array([_number(row[f"{split}_{keys[j]}_high"], values[j]) for j in with_interval])
            error = np.vstack([np.clip(values[with_interval] - low, 0, None),
                               np.clip(high - values[with_interval], 0, None)])
            ax.errorbar(positions[with_interval], values[with_interval], yerr=error, fmt="none",
                        elinewidth=0.8, capsize=1.5, ecolor="0.25")
    names = {"tolerance_f1": "tolerance F1", "detection_rate": "defective caught", "dice": "Dice (pooled)",
             "dice_defective_parts": "Dice per\ndefective part", "located_detection_rate": "caught where\nthe defect is",
             "false_alarm_rate": "false alarms\n(lower is better)"}
    ax.set_xticks(x, [names.get(key, key.replace("_", " ")) for key in keys])
    ax.set_ylim(0, 1.05)
    for key, level, label, style in (("located_detection_rate", 0.95, "plant's target: 95% caught", ":"),
                                     ("false_alarm_rate", 0.05, "plant's limit: 5% false alarms", "--")):
        if key in keys:   # the plant's target and limit apply to these scores only (named in the legend)
            k = list(keys).index(key)
            ax.hlines(level, k - 0.45, k + 0.45, color="black", linestyle=style, linewidth=1.4, label=label)
    bare = [names.get(key, key).replace("\n", " ") for key in keys if not any(f"{split}_{key}_low" in row for row in rows)]
    whiskers = "\n(whiskers: 95% interval over parts" + (f";\nnone on {', '.join(bare)})" if bare else ")")
    ax.set_ylabel(f"{split} score" + (whiskers if len(bare) < len(keys) else ""), fontsize=11)
    ax.tick_params(labelsize=11)
    ax.set_title(f"Models compared on the {split} split, each at its operating point chosen on validation")
    ax.legend(fontsize=10, ncol=1, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def _number(value, default=np.nan) -> float:
    """A results cell as a float (missing or empty: ``default``)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return float(default)
    return value if np.isfinite(value) else float(default)


POINT_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def plot_curves(curves: dict, points: dict | None = None, kind: str = "pr", chosen: str | None = None):
    """Pixel precision-recall curves (``kind="pr"``) or part-level curves of located detection
    against false alarms (``kind="detection"``: the plant's target corner enlarged beside it,
    and the decisions chosen on validation as markers, ``chosen``'s filled and drawn on top)."""
    detection = kind == "detection"
    fig, axes = plt.subplots(1, 2 if detection else 1, figsize=(12.5 if detection else 8.4, 4.8), squeeze=False,
                             gridspec_kw={"width_ratios": [1.3, 1]} if detection else None)
    views = [(axes[0, 0], (-0.02, 1.02), (-0.02, 1.02))]
    if detection:
        views.append((axes[0, 1], (-0.005, 0.30), (0.70, 1.005)))
    for ax, xlim, ylim in views:
        for index, (name, (x, y)) in enumerate(curves.items()):
            # chosen points often coincide (every model at 95% caught and near 100% flagged):
            # hollow markers of different shapes stay readable on top of each other
            marker = POINT_MARKERS[index % len(POINT_MARKERS)] if points and name in points else None
            line, = ax.plot(x, y, label=name, linewidth=1.6, color=row_colour(name, index),
                            drawstyle="steps-post" if detection else "default", marker=marker, markevery=[],
                            markerfacecolor="none", markeredgewidth=1.8, markersize=9)
            if marker:
                mine = name == chosen   # the model the comparison chose: filled, larger, above the others
                ax.plot(*points[name], linestyle="none", marker=marker, color=line.get_color(),
                        markerfacecolor=line.get_color() if mine else "none", markeredgecolor="black" if mine else None,
                        markeredgewidth=1.8, markersize=13 if mine else 9, zorder=5 if mine else 3)
                if mine:
                    line.set(marker=marker, markerfacecolor=line.get_color(), markeredgecolor="black",
                             markersize=11, label=f"{name} (chosen on validation)")
        if detection:
            ax.axhline(0.95, color="black", linestyle=":", linewidth=1.2, label="plant's target: 95% caught")
            ax.axvline(0.05, color="black", linestyle="--", linewidth=1.2, label="plant's limit: 5% false alarms")
            ax.set_xlabel("false alarms (share of good parts flagged)", fontsize=11)
            ax.set_ylabel("caught where the defect is", fontsize=11)
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.grid(alpha=0.3)
    if detection:
        axes[0, 0].set_title("Test split: best located detection at each false-alarm rate\n"
                             "over every decision searched (markers: chosen on validation)", fontsize=11)
        axes[0, 1].set_title("The target's corner, enlarged: the target is met\nabove the dotted and left of the dashed line",
                             fontsize=11)
        low, high = views[1][2][0], views[1][1][1]
        below = [name for name, (x, y) in curves.items() if not np.any((np.asarray(x) <= high) & (np.asarray(y) >= low))]
        if below:
            axes[0, 1].text(0.98, 0.03, "below this view:\n" + "\n".join(below), transform=axes[0, 1].transAxes,
                            ha="right", va="bottom", fontsize=9, color="0.25")
        axes[0, 1].legend(fontsize=9, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    else:
        ax = axes[0, 0]
        ax.set_xlabel("recall (share of scratch pixels found)", fontsize=11)
        ax.set_ylabel("precision (share of masked pixels that are scratch)", fontsize=11)
        ax.set_title("Pixel precision-recall, test split", fontsize=11)
        ax.legend(fontsize=9, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def _defect_box(mask: np.ndarray, pad: int, shape) -> tuple[slice, slice]:
    ys, xs = np.nonzero(mask)
    if not len(ys):
        h, w = shape[:2]
        return slice(h // 3, h // 3 + 2 * pad), slice(w // 3, w // 3 + 2 * pad)
    y0, y1 = max(0, ys.min() - pad), min(shape[0], ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(shape[1], xs.max() + pad + 1)
    return slice(y0, y1), slice(x0, x1)


def show_resolutions(photo: Image.Image, mask: np.ndarray, versions: dict):
    """One defect at the source and at each prepared version: the same region of the
    photo, its mask overlaid. ``versions`` maps a title to (photo, mask) arrays of any size."""
    columns = [("source", np.asarray(photo), mask), *[(t, i, m) for t, (i, m) in versions.items()]]
    fig, axes = plt.subplots(2, len(columns), figsize=(4.2 * len(columns), 6.4), squeeze=False)
    rows, cols = _defect_box(mask, 40, mask.shape)
    fy = (rows.start / mask.shape[0], rows.stop / mask.shape[0])
    fx = (cols.start / mask.shape[1], cols.stop / mask.shape[1])
    for ax_photo, ax_mask, (title, image, defect) in zip(axes[0], axes[1], columns):
        image = np.asarray(image)
        h, w = image.shape[:2]
        crop = (slice(int(fy[0] * h), max(int(fy[0] * h) + 1, int(np.ceil(fy[1] * h)))),
                slice(int(fx[0] * w), max(int(fx[0] * w) + 1, int(np.ceil(fx[1] * w)))))
        ax_photo.imshow(image[crop], interpolation="nearest")
        ax_photo.set_title(f"{title}: {w}x{h}", fontsize=9)
        ax_mask.imshow(overlay(image[crop], np.asarray(defect)[crop]), interpolation="nearest")
        ax_mask.set_title(f"mask: {int(np.asarray(defect)[crop].sum())} defect px in view", fontsize=9)
        for ax in (ax_photo, ax_mask):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig


def show_tiles(photos: dict, tiles: list[dict], tile_size: int):
    """Training tiles drawn on their photos: cyan for tiles centred on a defect, dashed white
    for uniform ones. ``photos`` maps a stem to (photo, mask) arrays at working scale."""
    from matplotlib.patches import Rectangle
    fig, axes = plt.subplots(1, len(photos), figsize=(5.2 * len(photos), 3.4), squeeze=False)
    for ax, (stem, (image, mask)) in zip(axes[0], photos.items()):
        ax.imshow(overlay(image, mask, alpha=0.8))
        mine = [t for t in tiles if t["stem"] == stem]
        for tile in mine:
            ax.add_patch(Rectangle((tile["x0"], tile["y0"]), tile_size, tile_size, fill=False,
                                   linewidth=1.2, edgecolor="cyan" if tile["centred"] else "white",
                                   linestyle="-" if tile["centred"] else "--"))
        centred = sum(t["centred"] for t in mine)
        ax.set_title(f"{stem}: {len(mine)} tile{'s' * (len(mine) != 1)}, {centred} centred on a defect",
                     fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def mask_caption(truth: np.ndarray, mask: np.ndarray) -> str:
    """What a mask panel's title says: Dice against a defect; on a good part (nothing to
    overlap, so Dice is only 1 or 0) how many pixels the mask covers, which may lie outside
    the zoom. (The mask, not the part's pass/fail call: that rule has its own threshold.)"""
    if truth.any():
        if not mask.any():        # one wording for an empty mask, on a defect or not
            return "empty mask (Dice 0.00)"
        overlap = int(np.sum(truth & mask))
        dice = scores_from_counts(overlap, int(mask.sum()) - overlap, int(truth.sum()) - overlap)["dice"]
        return f"Dice {float(dice):.2f}"
    masked = int(mask.sum())
    return "empty mask" if not masked else f"{masked:,} px masked"


def zoom_box(truth: np.ndarray, fallback: np.ndarray | None = None, share: float = 0.35,
             max_aspect: float = 2.0) -> tuple[slice, slice]:
    """A zoom on the defect wide enough to read: at least ``share`` of the photo's height and
    width, no flatter than ``max_aspect`` (a long horizontal scratch is not a letterbox strip),
    centred on the truth (on ``fallback``, e.g. a good part's mask, when there is none)."""
    height, width = truth.shape[:2]
    target = truth if truth.any() or fallback is None else _largest_component(fallback)
    ys, xs = np.nonzero(target)
    cy, cx = (np.mean(ys), np.mean(xs)) if len(ys) else (height / 2, width / 2)
    span_y = max(int(share * height), int(np.ptp(ys)) + 32 if len(ys) else 0)
    span_x = max(int(share * width), int(np.ptp(xs)) + 32 if len(xs) else 0)
    span_y = min(height, max(span_y, int(span_x / max_aspect)))
    span_x = min(width, max(span_x, int(span_y / max_aspect)))
    y0 = int(np.clip(cy - span_y / 2, 0, height - span_y))
    x0 = int(np.clip(cx - span_x / 2, 0, width - span_x))
    return slice(y0, y0 + span_y), slice(x0, x0 + span_x)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected region of a mask (a good part's zoom goes to it)."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count <= 1:
        return mask
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


MASK_ALPHA = 0.8   # a 3-px mask on a whole photo must still read as magenta
SMALL_REGION = 40  # px: a mask region this small is circled, or a whole photo would hide it
MANY_REGIONS = 12  # more regions than this in one panel: shaded (calls) or left uncircled (small regions)


def _draw_prediction(ax, photo, truth, mask, deciding=None) -> int:
    """The mask filled in magenta (mostly opaque: at whole-photo size it is a thin line), its small
    regions away from the defect circled, the truth outlined in green a few pixels out (never on top
    of the mask) and the regions that made the call outlined in dashed yellow further out (shaded
    when there are more than ``MANY_REGIONS``). Returns how many deciding regions the panel shows."""
    regions = ndimage.label(deciding, structure=np.ones((3, 3), bool))[1] if deciding is not None else 0
    ax.imshow(overlay(photo, mask, alpha=MASK_ALPHA) if mask is not None else photo, interpolation="nearest")
    around = ndimage.binary_dilation(truth, disk(4)) if truth.any() else truth
    if mask is not None and mask.any():   # small regions away from the truth are circled (at the truth, outlined)
        labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
        sizes = ndimage.sum_labels(mask, labels, range(1, count + 1))
        touching = set(np.unique(labels[around])) if truth.any() else set()
        small = [k for k, size in enumerate(sizes, start=1) if size <= SMALL_REGION and k not in touching]
        if 0 < len(small) <= MANY_REGIONS:   # dozens of circles would hide the mask they point at
            ys, xs = np.transpose(ndimage.center_of_mass(mask, labels, small)).reshape(2, -1)
            ax.plot(xs, ys, linestyle="none", marker="o", markersize=16, markerfacecolor="none",
                    markeredgecolor=DEFECT_COLOUR, markeredgewidth=1.8)
    if truth.any():
        ax.contour(around.astype(float), levels=[0.5], colors=["lime"], linewidths=1.0)
    if deciding is not None and deciding.any():
        # a ring about 2% of the view out, so a 1-px deciding region of a whole photo still shows;
        # dark under the dashes, so it reads on pale paint too
        around = ndimage.binary_dilation(deciding, disk(max(8, round(0.02 * max(deciding.shape)))))
        if regions > MANY_REGIONS:
            # dozens of rings would hide the photo: a light yellow veil instead (the title counts them)
            ax.imshow(np.where(around[..., None], np.array([1.0, 1.0, 0.0, 0.3]), 0.0), interpolation="nearest")
        else:
            ax.contour(around.astype(float), levels=[0.5], colors=["yellow"], linewidths=1.3, linestyles="dashed")\
                .set(path_effects=[patheffects.Stroke(linewidth=3.2, foreground="0.1"), patheffects.Normal()])
    ax.set_xticks([])
    ax.set_yticks([])
    return regions


def call_words(result, truth: np.ndarray, tolerance: int = 2) -> str:
    """How a part was called, and for a defective part called defective whether the call points
    at the defect (its deciding regions within ``tolerance`` px of the truth) or elsewhere."""
    if not result.defective:
        return "called good"
    if not truth.any():
        return "called defective: a false alarm"
    near = ndimage.binary_dilation(truth, disk(tolerance))
    return (f"called defective, within {tolerance} px of the defect" if np.any(result.deciding_regions & near)
            else "called defective, in the wrong place")


GALLERY_LEGEND = [Line2D([], [], color="lime", lw=1.5, label="true defect (outlined a few px out)"),
                  Patch(color=DEFECT_COLOUR, label="model's mask"),
                  Line2D([], [], color=DEFECT_COLOUR, marker="o", markerfacecolor="none", markersize=11,
                         linestyle="none", markeredgewidth=1.8, label=f"mask region of {SMALL_REGION} px or fewer"),
                  Line2D([], [], color="yellow", lw=1.5, ls="--", label="regions that made the part's call")]
GALLERY_MODELS = 2   # columns: the photo with its truth, then at most two models


def show_photo_predictions(photos: list, truths: list, predictions: dict, titles: list[str]):
    """One row per part, at most three columns: the photo with the true defect outlined (green),
    then each model's mask on it (magenta) with the regions that made its call (dashed yellow),
    all zoomed on the defect (a third of the photo at least; a good part is shown whole). Each
    model's title says its call (a call away from the defect is labelled so) and the Dice of
    what the panel shows. ``predictions`` maps a model name to a list of
    :class:`~scratch_utils.predict.PhotoPrediction` at the photos' own size."""
    if len(predictions) > GALLERY_MODELS:
        raise ValueError(f"a gallery shows at most {GALLERY_MODELS} models side by side, got {len(predictions)}")
    columns = 1 + len(predictions)
    fig, axes = plt.subplots(len(photos), columns, figsize=(4.3 * columns, 3.3 * len(photos)), squeeze=False)
    for row, (photo, truth, title) in enumerate(zip(photos, truths, titles)):
        photo = np.asarray(photo)
        view = zoom_box(truth) if truth.any() else (slice(None), slice(None))
        _draw_prediction(axes[row, 0], photo[view], truth[view], None)
        axes[row, 0].set_title(f"{title}\n" + ("true defect (green)" if truth.any() else "good part, whole photo"),
                               fontsize=10)
        for k, (name, results) in enumerate(predictions.items(), start=1):
            result = results[row]
            regions = _draw_prediction(axes[row, k], photo[view], truth[view], result.mask[view],
                                       result.deciding_regions[view])
            call = (f"; call from {regions} dashed region{'s' * (regions != 1)}" if regions <= MANY_REGIONS
                    else f"; call from {regions} regions (shaded)") if regions else ""
            if not regions and result.deciding_regions.any():
                call = "; call from a region outside this zoom"
            axes[row, k].set_title(f"{name}: {call_words(result, truth)}\nmask: "
                                   f"{mask_caption(truth[view], result.mask[view])}{call}", fontsize=10)
    ncol = 4 if columns > 2 else 2
    fig.legend(handles=GALLERY_LEGEND, loc="upper center", ncol=ncol, fontsize=10, bbox_to_anchor=(0.5, 1.0),
               facecolor="0.3", labelcolor="white", framealpha=1.0)   # dark: the yellow reads on it
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 * (len(GALLERY_LEGEND) // ncol) / fig.get_figheight()))
    return fig


def plot_history(history: list[dict], path=None, title: str = ""):
    """The loss per epoch from a run's ``history.csv`` (:func:`scratch_utils.runs.read_history`):
    on the training tiles every epoch (a line), and on the whole validation photos where they
    were scored (points, not joined: two points are not a trend; :func:`validation_table` lists them)."""
    import math

    from matplotlib.ticker import MaxNLocator
    epochs = [int(row["epoch"]) + 1 for row in history]
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    ax.plot(epochs, [row["loss"] for row in history], marker="o", label="training tiles")
    scored = [(epoch, row["val_loss"]) for epoch, row in zip(epochs, history)
              if math.isfinite(row.get("val_loss", math.nan))]
    if scored:
        ax.plot(*zip(*scored), linestyle="none", marker="s", markersize=8, label="whole validation photos")
    ax.set_xlim(0.5, max(epochs) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (BCE + Dice)")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    ax.set_title(title or "loss per epoch")
    fig.tight_layout()
    if path:
        write_figure(fig, path, dpi=100)
        plt.close(fig)
    return fig


def validation_table(history: list[dict]) -> list[dict]:
    """The scored validation epochs of a history, one row each (for a table, not a curve)."""
    import math
    return [{"epoch": int(row["epoch"]) + 1, "training loss": round(row["loss"], 3),
             "validation loss": round(row["val_loss"], 3), "Dice": round(row["val_dice"], 3),
             "precision": round(row["val_precision"], 3), "recall": round(row["val_recall"], 3)}
            for row in history if math.isfinite(row.get("val_loss", math.nan))]
