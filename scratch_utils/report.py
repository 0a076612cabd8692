"""Figures: one helper writes every figure, plus the plots the notebooks share.

``save_figure`` writes ``figures/<name>.png`` for the published profiles (default, full)
and a scratch folder for smoke runs, so tests never overwrite the committed figures.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from .metrics import per_image_scores
from .profiles import figures_dir, get_profile

DEFECT_COLOUR = (1.0, 0.1, 0.6)  # magenta: stands out on every paint colour


def write_figure(fig, path, dpi: int = 110) -> None:
    """Write ``fig`` as a PNG at ``path``: the one place figures are written (no timestamp
    in the file, so a regenerated figure only differs where its content does)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Software": None})


def save_figure(fig, name: str, profile=None, dpi: int = 110) -> None:
    """Write ``fig`` as ``<figures dir>/<name>.png`` (returns nothing, so a notebook cell
    ending with it shows the figure, not a path)."""
    profile = get_profile(profile) if not hasattr(profile, "name") else profile
    write_figure(fig, figures_dir(profile) / f"{name}.png", dpi)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.55,
            colour=DEFECT_COLOUR) -> np.ndarray:
    """The photo with the defect mask painted on it (float RGB in [0, 1])."""
    image = np.asarray(image, dtype=np.float32)
    image = image / 255.0 if image.max() > 1.0 else image
    weight = (np.asarray(mask, dtype=np.float32) > 0)[..., None] * alpha
    return image * (1 - weight) + weight * np.asarray(colour, dtype=np.float32)


def overlay_image(photo: Image.Image, mask: np.ndarray) -> Image.Image:
    """:func:`overlay` as an 8-bit RGB image: what ``predict`` writes and the app returns."""
    return Image.fromarray((overlay(np.asarray(photo), mask) * 255).astype(np.uint8))


def mask_image(mask: np.ndarray) -> Image.Image:
    """A boolean mask as an 8-bit 0/255 greyscale image."""
    return Image.fromarray(np.asarray(mask, dtype=np.uint8) * np.uint8(255))


def _coco_polygons(prepared: Path) -> dict[str, list]:
    coco = json.loads((prepared / "coco.json").read_text(encoding="utf-8"))
    stems = {image["id"]: image["stem"] for image in coco["images"]}
    polygons: dict[str, list] = {}
    for ann in coco["annotations"]:
        if isinstance(ann["segmentation"], list):
            polygons.setdefault(stems[ann["image_id"]], []).extend(ann["segmentation"])
    return polygons


def show_preparation(rows: list[dict], source: Path, prepared: Path, title: str = ""):
    """Per part: the source photo with its label polygons, the prepared pair, the overlay."""
    polygons = _coco_polygons(prepared)
    fig, axes = plt.subplots(len(rows), 4, figsize=(13, 2.6 * len(rows)), squeeze=False,
                             gridspec_kw={"width_ratios": [1.8, 1, 1, 1]})
    for row, ax in zip(rows, axes):
        photo = Image.open(source / row["source_image"]).convert("RGB")
        ax[0].imshow(photo)
        for poly in polygons.get(row["stem"], []):
            xy = np.asarray(poly).reshape(-1, 2)
            ax[0].fill(xy[:, 0], xy[:, 1], facecolor="none", edgecolor=DEFECT_COLOUR, linewidth=1.2)
        ax[0].set_title(f"{row['stem']}: {row['quality']}, {row['width']}x{row['height']}",
                        fontsize=9)
        image = np.asarray(Image.open(prepared / "images" / f"{row['stem']}.png"))
        mask = np.asarray(Image.open(prepared / "masks" / f"{row['stem']}.png"))
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
    """Rows of parts; columns: the original and each augmented version, scratch overlaid.

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
            ax.imshow(overlay(np.asarray(images[row]), np.asarray(masks[row])[..., 0], alpha=0.45))
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


class Table:
    """The course's one table formatter: rows of dicts shown with full column headers and
    sensible rounding, as HTML in a notebook, Markdown in the README, aligned text elsewhere.

    ``columns`` maps a row key to its header (default: the keys); values are formatted by
    type: floats to ``digits`` places, keys in ``percent`` as percentages, ints with
    thousands separators, missing values as a dash. Strings are shown as they are."""

    def __init__(self, rows, columns: dict | list | None = None, digits: int = 3, percent=()):
        rows = [dict(row) for row in rows]
        if isinstance(columns, dict):
            self.columns = dict(columns)
        else:
            keys = columns or list(dict.fromkeys(k for row in rows for k in row))
            self.columns = {key: key for key in keys}
        self.rows, self.digits, self.percent = rows, digits, set(percent)

    @classmethod
    def from_named(cls, named: dict, name_header: str = "", **kwargs) -> "Table":
        """A table from ``{row name: {key: value}}``; the names become the first column."""
        columns = kwargs.pop("columns", None)
        rows = [{"_name": name, **values} for name, values in named.items()]
        if isinstance(columns, dict):
            columns = {"_name": name_header, **columns}
        elif columns is not None:
            columns = {"_name": name_header, **{key: key for key in columns}}
        return cls(rows, columns, **kwargs)

    def cell(self, key: str, value) -> str:
        if value is None or (isinstance(value, float) and not np.isfinite(value)):
            return "–"
        if isinstance(value, (bool, np.bool_)):
            return "yes" if value else "no"
        if key in self.percent and isinstance(value, (int, float, np.number)):
            return f"{100 * float(value):.0f}%"
        if isinstance(value, (int, np.integer)):
            return f"{int(value):,}"
        if isinstance(value, (float, np.floating)):
            return f"{float(value):.{self.digits}f}"
        return str(value)

    def cells(self) -> list[list[str]]:
        return [[self.cell(key, row.get(key)) for key in self.columns] for row in self.rows]

    def to_markdown(self) -> str:
        lines = ["| " + " | ".join(self.columns.values()) + " |",
                 "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(cells) + " |" for cells in self.cells()]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def _repr_html_(self) -> str:
        import html
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.columns.values())
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
                       for cells in self.cells())
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __repr__(self) -> str:
        table = [list(self.columns.values())] + self.cells()
        widths = [max(len(row[k]) for row in table) for k in range(len(self.columns))]
        return "\n".join("  ".join(c.ljust(w) if k == 0 else c.rjust(w)
                                   for k, (c, w) in enumerate(zip(row, widths))) for row in table)


def model_table(model) -> Table:
    """A model's compact summary, one row per stage (:func:`scratch_utils.models.stage_table`)."""
    from .models import stage_table
    return Table(stage_table(model), {"stage": "stage", "layers": "layers",
                                      "output": "output (height x width x channels)",
                                      "parameters": "parameters", "trainable": "trainable"})


SCORE_HEADERS = {"dice": "Dice", "iou": "IoU", "miou": "mIoU", "tolerance_f1": "tolerance F1",
                 "precision": "precision", "recall": "recall", "detection_rate": "defective caught",
                 "false_alarm_rate": "false alarms (good parts)", "auroc": "AUROC"}


def scores_table(rows: dict, keys=tuple(SCORE_HEADERS)) -> Table:
    """One row per model/split, one column per score (pixel scores at photo resolution)."""
    return Table.from_named(rows, "model / split", columns={k: SCORE_HEADERS.get(k, k) for k in keys},
                            percent=("detection_rate", "false_alarm_rate"))


def plot_comparison_bars(rows: list[dict], split: str = "test",
                         keys=("dice", "iou", "tolerance_f1", "recall", "detection_rate",
                               "false_alarm_rate")):
    """Grouped bars: one group per score, one bar per model (test split, chosen operating point)."""
    fig, ax = plt.subplots(figsize=(11, 4))
    width = 0.8 / len(rows)
    x = np.arange(len(keys))
    for k, row in enumerate(rows):
        values = [row[f"{split}_{key}"] for key in keys]
        bars = ax.bar(x + (k - (len(rows) - 1) / 2) * width, values, width, label=row["name"])
        ax.bar_label(bars, fmt="%.2f", fontsize=6, rotation=90, padding=2)
    names = {"tolerance_f1": "tolerance F1", "detection_rate": "defective caught",
             "false_alarm_rate": "false alarms\n(lower is better)"}
    ax.set_xticks(x, [names.get(key, key.replace("_", " ")) for key in keys])
    ax.set_ylim(0, 1.15)
    if "detection_rate" in keys:   # the plant's target applies to this score only
        k = list(keys).index("detection_rate")
        ax.hlines(0.95, k - 0.45, k + 0.45, color="black", linestyle=":", linewidth=1.2)
        ax.text(k + 0.45, 0.965, "95% target", fontsize=7, ha="right")
    ax.set_ylabel(f"{split} score")
    ax.set_title(f"Models compared on the {split} split, each at its operating point chosen on validation")
    ax.legend(fontsize=7, ncol=3, frameon=False, loc="upper left")
    fig.tight_layout()
    return fig


def plot_curves(curves: dict, points: dict | None = None, kind: str = "pr"):
    """Pixel precision-recall curves (``kind="pr"``) or image-level detection versus
    false-alarm curves (``kind="detection"``, with the 95% target and chosen points)."""
    fig, ax = plt.subplots(figsize=(6.2, 4.6))
    for name, (x, y) in curves.items():
        line, = ax.plot(x, y, label=name, linewidth=1.4,
                        drawstyle="steps-post" if kind == "detection" else "default")
        if points and name in points:
            ax.plot(*points[name], marker="o", color=line.get_color(), markersize=7)
    if kind == "pr":
        ax.set_xlabel("recall (share of scratch pixels found)")
        ax.set_ylabel("precision (share of masked pixels that are scratch)")
        ax.set_title("Pixel precision-recall, test split")
    else:
        ax.axhline(0.95, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("false-alarm rate (good parts flagged)")
        ax.set_ylabel("detection rate (defective parts caught)")
        ax.set_title("Detection vs false alarms, test split: best over every threshold and\n"
                     "minimum region searched (dots: the rule chosen on validation)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False, loc="lower right" if kind == "detection" else "lower left")
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
    """Training tiles drawn on their photos: magenta for tiles centred on a defect, white
    for uniform ones. ``photos`` maps a stem to (photo, mask) arrays at working scale."""
    from matplotlib.patches import Rectangle
    fig, axes = plt.subplots(1, len(photos), figsize=(5.2 * len(photos), 3.4), squeeze=False)
    for ax, (stem, (image, mask)) in zip(axes[0], photos.items()):
        ax.imshow(overlay(image, mask, alpha=0.8))
        mine = [t for t in tiles if t["stem"] == stem]
        for tile in mine:
            ax.add_patch(Rectangle((tile["x0"], tile["y0"]), tile_size, tile_size, fill=False,
                                   linewidth=1.4, edgecolor=DEFECT_COLOUR if tile["centred"] else "white"))
        ax.set_title(f"{stem}: {len(mine)} tiles, {sum(t['centred'] for t in mine)} centred on a defect",
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
        return f"Dice {per_image_scores(truth, mask)['dice'][0]:.2f}"
    masked = int(mask.sum())
    return "empty mask" if not masked else f"{masked:,} px masked on a good part"


def show_photo_predictions(photos: list, truths: list, predictions: dict, titles: list[str]):
    """Per part (rows): the whole photo with the truth (at the photo's own resolution), then a
    zoom on the defect for the truth and for each model's mask. ``predictions`` maps a model
    name to a list of boolean masks at the photos' own size."""
    columns = 2 + len(predictions)
    fig, axes = plt.subplots(len(photos), columns, figsize=(3.3 * columns, 2.7 * len(photos)),
                             squeeze=False)
    for row, (photo, truth, title) in enumerate(zip(photos, truths, titles)):
        photo = np.asarray(photo)
        zoom = _defect_box(truth if truth.any() else
                           next((m[row] for m in predictions.values() if m[row].any()), truth),
                           48, truth.shape)
        axes[row, 0].imshow(overlay(photo, truth))
        axes[row, 0].set_title(title, fontsize=8)
        axes[row, 1].imshow(overlay(photo[zoom], truth[zoom]), interpolation="nearest")
        axes[row, 1].set_title("ground truth (zoom)", fontsize=8)
        for col, (name, masks) in enumerate(predictions.items(), start=2):
            axes[row, col].imshow(overlay(photo[zoom], masks[row][zoom]), interpolation="nearest")
            axes[row, col].set_title(f"{name}: {mask_caption(truth, masks[row])}", fontsize=8)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig
