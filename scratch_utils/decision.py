"""The plant's decision: is a part defective, and where does the call point? (notebooks 03-05,
``train``, ``predict``, the app.)

Two rules, each chosen on the validation photos:

- **regions**: a part is defective when one connected region of pixels at or above the
  ``decision_threshold`` reaches ``min_region`` pixels at model resolution, measured along its
  skeleton (``length``: a scratch is long, a speck compact) or as its ``area``;
- **head**: the *part head*, a small network trained after the segmentation network on the
  training photos (good parts included, so a seam on a good part is a negative example), reads
  the segmentation network's last features and its mask, pooled, and scores the part; it is
  defective when the score reaches the ``decision_threshold`` (Tabernik et al. 2019: a
  segmentation network with a decision network on top).

A call counts **where it points**: the regions that made a region rule's call, or for the head
the masked regions the app shows (the most probable pixel when nothing is masked), must lie within
2 px of the true defect at the photo's own resolution (*located*). The operating point is chosen for the plant's target on located
detection **with a margin**: on validation it must catch ``target`` plus one binomial standard
error at the split's number of defective parts (:func:`required_detection`), so that a test
rate, which differs from it by about that much, still reaches the target; among those, the
fewest false alarms on good parts. With no good part on validation every decision has no false
alarm, so the one with the most margin is taken and a warning says the false-alarm rate is
unknown.

Light to import (the head's Keras code is imported inside its functions): the app reads it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

from .metrics import detection_rates, scores_from_counts
from .names import REGION_MEASURES

TARGET_DETECTION = 0.95          # the plant's target: defective parts caught where the defect is ...
TARGET_FALSE_ALARMS = 0.05       # ... with at most this share of good parts flagged
INTERMEDIATE_FALSE_ALARMS = 0.10   # the stepping stone on the way there (issue 26)


# Minimum defect regions, in pixels at model resolution (of skeleton length or of area): a dust
# speck measures a few, a scratch dozens. 1 is a real limit; the top is past any region seen.
MIN_REGIONS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048)
EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)
HEAD_POOL = 4                    # the head reads features and mask max-pooled 4 x 4


@dataclass
class OperatingPoint:
    """How a run decides, chosen once on the validation photos by ``train`` and read from its
    run folder by everything that makes a mask or a pass/fail call.

    - ``mask_threshold``: a pixel is masked at or above it (the mask a user sees and every pixel
      score; chosen for the best Dice);
    - ``rule``: ``regions`` (``decision_threshold``, ``min_region``, ``region_measure``) or
      ``head`` (the part head's score at or above ``decision_threshold``).

    On the split it was chosen on: ``detection_rate``, ``located_detection_rate`` (caught where
    the defect is) and ``false_alarm_rate``; ``detection_target_met`` says it catches ``target``
    where the defect is, ``target_met`` that it meets the plant's whole target (that, with at
    most ``false_alarm_limit`` of the good parts flagged); ``required_detection`` is the target
    with its margin.
    """
    mask_threshold: float
    decision_threshold: float
    min_region: int = 1
    region_measure: str = "length"
    rule: str = "regions"
    detection_rate: float = float("nan")
    located_detection_rate: float = float("nan")
    false_alarm_rate: float = float("nan")
    detection_target_met: bool = False
    target_met: bool = False
    target: float = TARGET_DETECTION
    false_alarm_limit: float = TARGET_FALSE_ALARMS
    required_detection: float = TARGET_DETECTION
    chosen_on: str = "val"

    @classmethod
    def from_dict(cls, values: dict) -> "OperatingPoint":
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in names})

    def as_dict(self) -> dict:
        return asdict(self)

    def with_overrides(self, mask_threshold: float | None = None, decision_threshold: float | None = None,
                       min_region: int | None = None, region_measure: str | None = None) -> "OperatingPoint":
        """This point with the named values replaced (``None`` keeps the chosen one)."""
        if region_measure is not None and region_measure not in REGION_MEASURES:
            raise ValueError(f"region_measure must be one of {', '.join(REGION_MEASURES)}, not {region_measure!r}")
        changes = {key: value for key, value in (("mask_threshold", mask_threshold),
                                                  ("decision_threshold", decision_threshold),
                                                  ("min_region", min_region), ("region_measure", region_measure))
                   if value is not None}
        return replace(self, **changes, chosen_on="overridden") if changes else self

    def describe(self) -> str:
        """The rule in words, e.g. ``length ≥ 6 px above 0.98`` or ``part head ≥ 0.41``."""
        if self.rule == "head":
            return f"part head ≥ {self.decision_threshold:.3g}"
        return f"{self.region_measure} ≥ {self.min_region} px above {self.decision_threshold:g}"


# ------------------------------------------------------------------ region rules


def measured_regions(mask: np.ndarray, measures=REGION_MEASURES) -> tuple[np.ndarray, dict]:
    """(8-connected labels of a mask, {measure: size of each label}, label 0 the background):
    ``area`` counts a region's pixels, ``length`` the pixels of its skeleton (its centre line: a
    1-px line of n pixels has length n, a compact blob of the same area a few)."""
    labels, count = ndimage.label(mask, structure=EIGHT_NEIGHBOURS)
    sizes = {}
    if "area" in measures:
        sizes["area"] = np.bincount(labels.ravel(), minlength=count + 1)
    if "length" in measures:
        sizes["length"] = np.bincount(labels[skeletonize(mask)], minlength=count + 1)
    for size in sizes.values():
        size[0] = 0
    return labels, sizes


def region_call(mask, measure: str, minimum: int) -> tuple[int, np.ndarray]:
    """The region rule on one mask in one labelling: (its largest region by ``measure``, the
    regions reaching ``minimum``). Only the mask's bounding box is measured, and the skeleton
    only when the measure is length."""
    mask = np.asarray(mask, dtype=bool)
    deciding = np.zeros(mask.shape, bool)
    if not mask.any():
        return 0, deciding
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    labels, sizes = measured_regions(mask[box], (measure,))
    deciding[box] = (sizes[measure] >= max(1, int(minimum)))[labels]
    return int(sizes[measure].max()), deciding


def peak_pixel(probability: np.ndarray) -> np.ndarray:
    """Where a head's call points when nothing is masked: the photo's most probable pixel."""
    region = np.zeros(probability.shape, bool)
    if probability.size:
        region[np.unravel_index(int(np.argmax(probability)), probability.shape)] = True
    return region


def called_defective(largest_region_px, min_region: int) -> np.ndarray:
    """The region rule from the largest region(s) found: defective at ``min_region`` pixels."""
    return np.asarray(largest_region_px) >= max(1, int(min_region))


# ------------------------------------------------------------------ choosing the operating point


def required_detection(defective_parts: int, target: float = TARGET_DETECTION) -> float:
    """The located detection rate a decision must reach on validation: ``target`` plus one
    binomial standard error at ``defective_parts`` (2 points at 114 parts, 4 at 31)."""
    return target + math.sqrt(target * (1 - target) / max(1, defective_parts))


def choose_mask_threshold(stats: dict, thresholds) -> float:
    """The threshold of the grid with the best pooled pixel Dice (ties: the lower one)."""
    tp, fp = stats["tp"].sum(axis=0), stats["fp"].sum(axis=0)
    dice = scores_from_counts(tp, fp, stats["positives"].sum() - tp)["dice"]
    return float(thresholds[int(np.argmax(dice))])


def candidates(predictions, rule: str = "regions", min_regions=MIN_REGIONS, measures=REGION_MEASURES):
    """Every decision the rule's search looks at, as columns: ``detection``, ``located``,
    ``false_alarm``, ``threshold``, ``min_region``, ``measure`` (the head's thresholds are its
    validation scores themselves)."""
    is_defective, s = predictions.is_defective, predictions.stats
    rows = []
    if rule == "head":
        scores = np.asarray(predictions.part_scores, float)
        points_at = head_points_at_defect(predictions, choose_mask_threshold(s, predictions.thresholds))
        for threshold in np.unique(scores):
            called = scores >= threshold
            rows.append((called, called & points_at, float(threshold), 1, ""))
    else:
        for measure in measures:
            for k, threshold in enumerate(predictions.thresholds):
                for minimum in min_regions:
                    rows.append((s[measure][:, k] >= minimum, s[f"near_{measure}"][:, k] >= minimum,
                                 float(threshold), int(minimum), measure))
    columns = {name: [] for name in ("detection", "located", "false_alarm", "threshold", "min_region", "measure")}
    for called, found, threshold, minimum, measure in rows:
        rates = detection_rates(is_defective, called)
        located = float(found[is_defective].mean()) if is_defective.any() else float("nan")
        for name, value in zip(columns, (rates["detection_rate"], located, rates["false_alarm_rate"],
                                         threshold, minimum, measure)):
            columns[name].append(value)
    return {name: np.asarray(values) for name, values in columns.items()}


def head_points_at_defect(predictions, mask_threshold: float) -> np.ndarray:
    """Per photo: whether a head's call would point at the defect. It points where the mask is
    (the regions at the mask threshold, what the app shows), or at the most probable pixel when
    nothing is masked; it is located when one of those lies within 2 px of the true defect."""
    s, k = predictions.stats, predictions.column(mask_threshold)
    masked = s["area"][:, k] > 0
    return np.where(masked, s["near_area"][:, k] > 0, s["peak_near"])


def choose_operating_point(predictions, rule: str = "regions", target: float = TARGET_DETECTION,
                           min_regions=MIN_REGIONS, measures=REGION_MEASURES) -> OperatingPoint:
    """The fewest false alarms among the decisions whose located detection reaches
    :func:`required_detection` on these (validation) predictions; ties to more located
    detection, then more detection, then the middle one of those left (in threshold order, so
    the point sits inside a plateau, not at its edge). If none reaches it, the most located
    detection (the plant's priority), ties to fewer false alarms. The mask threshold is chosen
    apart, for the best Dice."""
    grid = candidates(predictions, rule, min_regions, measures)
    required = required_detection(int(predictions.is_defective.sum()), target)
    meeting = grid["located"] >= required - 1e-9
    pool = np.flatnonzero(meeting) if meeting.any() else np.arange(len(grid["threshold"]))
    columns = ((grid["false_alarm"], -grid["located"], -grid["detection"]) if meeting.any()
               else (-grid["located"], grid["false_alarm"], -grid["detection"]))
    best = min(tuple(column[k] for column in columns) for k in pool)
    ties = [k for k in pool if tuple(column[k] for column in columns) == best]
    order = sorted(ties, key=lambda k: (grid["measure"][k], grid["threshold"][k], grid["min_region"][k]))
    chosen = order[len(order) // 2]
    located, false_alarm = float(grid["located"][chosen]), float(grid["false_alarm"][chosen])
    return OperatingPoint(mask_threshold=choose_mask_threshold(predictions.stats, predictions.thresholds),
                          decision_threshold=float(grid["threshold"][chosen]),
                          min_region=int(grid["min_region"][chosen]),
                          region_measure=str(grid["measure"][chosen]) or "length", rule=rule,
                          detection_rate=float(grid["detection"][chosen]), located_detection_rate=located,
                          false_alarm_rate=false_alarm, detection_target_met=located >= target,
                          target_met=located >= target and false_alarm <= TARGET_FALSE_ALARMS,
                          target=target, required_detection=required)


def detection_curve(predictions, rule: str = "regions", located: bool = True,
                    min_regions=MIN_REGIONS, measures=REGION_MEASURES) -> tuple[np.ndarray, np.ndarray]:
    """(false-alarm rates, detection rates): the best (located, by default) detection reachable
    at each false-alarm rate over the whole search, so a chosen point lies on or under it."""
    grid = candidates(predictions, rule, min_regions, measures)
    points = {}
    for detection, false_alarm in zip(grid["located" if located else "detection"], grid["false_alarm"]):
        points[false_alarm] = max(points.get(false_alarm, 0.0), detection)
    points.setdefault(0.0, 0.0)
    # Flagging every part catches every defective one, but locates none it did not already:
    # a located curve ends flat at its best real value, never at a (100%, 100%) corner.
    points.setdefault(1.0, 0.0 if located else 1.0)
    false_alarms = np.array(sorted(points))
    return false_alarms, np.maximum.accumulate(np.array([points[fa] for fa in false_alarms]))


def false_alarms_at(predictions, rule: str = "regions", target: float = TARGET_DETECTION,
                    located: bool = True, unreached: float | None = 1.0,
                    measures=REGION_MEASURES) -> float | None:
    """The lowest false-alarm rate of the decisions reaching ``target`` detection (located, by default);
    ``unreached`` when none does (1.0, flagging every part, for averages; a table says "not reached")."""
    false_alarms, detections = detection_curve(predictions, rule, located, measures=measures)
    reached = detections >= target - 1e-9
    return float(false_alarms[np.argmax(reached)]) if reached.any() else unreached


def calls(predictions, point: OperatingPoint) -> dict:
    """Per photo at an operating point: ``called`` defective, ``located`` (called where the defect
    is), ``size`` (the largest region by the point's measure, or the head's score) and ``score``
    (what AUROC ranks parts by: the head's score, or for the region rule the highest threshold
    of the grid at which a region still reaches ``min_region``)."""
    s = predictions.stats
    if point.rule == "head":
        score = np.asarray(predictions.part_scores, float)
        called = score >= point.decision_threshold
        return {"called": called, "located": called & head_points_at_defect(predictions, point.mask_threshold),
                "size": score, "score": score}
    k = predictions.column(point.decision_threshold)
    minimum = max(1, int(point.min_region))
    reached = s[point.region_measure] >= minimum
    score = np.where(reached, np.asarray(predictions.thresholds, float)[None, :], 0.0).max(axis=1)
    return {"called": s[point.region_measure][:, k] >= minimum,
            "located": s[f"near_{point.region_measure}"][:, k] >= minimum,
            "size": s[point.region_measure][:, k], "score": score}


# ------------------------------------------------------------------ when a model has not learned

MOSTLY_MASKED = 0.5          # a good photo with half its pixels masked is "mostly masked"
HIGH_FALSE_ALARMS = 0.5      # a decision flagging more good parts than this has not learned the defect
LOW_DICE = 0.1


def learning_warnings(predictions, point: OperatingPoint, min_regions=MIN_REGIONS) -> list[str]:
    """What says that a model has not learned the defect, or that validation cannot tell, from
    its validation predictions at its operating point: each warning names the cause and what to
    try (``train`` prints them and writes them into ``metrics.json``)."""
    s, thresholds = predictions.stats, predictions.thresholds
    k = predictions.column(point.mask_threshold)
    good, defective = ~predictions.is_defective, predictions.is_defective
    warnings = []
    if point.rule == "head":
        scores = np.unique(np.asarray(predictions.part_scores, float))
        edges = (scores[0], scores[-1]) if len(scores) else ()
        at_edge = [f"threshold {point.decision_threshold:.3g}, "
                   + ("every part flagged" if edge == edges[0] else "no part flagged")
                   for edge in edges if point.decision_threshold == edge]
    else:
        at_edge = [f"threshold {point.decision_threshold:g}" for edge in (thresholds[0], thresholds[-1])
                   if point.decision_threshold == edge]
        at_edge += [f"minimum region {point.min_region} px" for edge in (min_regions[-1],)
                    if point.min_region == edge]
    if at_edge:
        warnings.append(f"the decision sits at the edge of its search ({'; '.join(at_edge)}): the model's "
                        f"scores do not separate defective from good parts inside it; train longer, "
                        f"check the masks, or look at the validation galleries")
    if not good.any():
        warnings.append("validation has no good part: the false-alarm rate is unknown, so the decision was "
                        "chosen for detection alone; add good parts to the validation split")
    elif good.sum() < 1 / TARGET_FALSE_ALARMS:
        warnings.append(f"validation has {good.sum()} good parts: one of them is "
                        f"{1 / good.sum():.0%} of false alarms, so a {TARGET_FALSE_ALARMS:.0%} limit cannot "
                        f"be resolved; add good parts to the validation split")
    if good.any() and point.false_alarm_rate > HIGH_FALSE_ALARMS:
        warnings.append(f"the decision flags {point.false_alarm_rate:.0%} of the good validation parts to catch "
                        f"{point.located_detection_rate:.0%} of the defective ones where the defect is: the model "
                        f"fires on good surface; train longer or on more good parts, or check that good parts "
                        f"have empty masks")
    masked = s["fp"][good, k] / np.maximum(s["pixels"][good], 1)
    if good.any() and np.mean(masked >= MOSTLY_MASKED) > 0.1:
        warnings.append(f"{np.mean(masked >= MOSTLY_MASKED):.0%} of the good validation photos are mostly masked "
                        f"(at least half their pixels): the model paints surface as defect; check the masks "
                        f"(a mask that is not empty on a good part teaches that) and the working scale")
    tp, fp = s["tp"][:, k].sum(), s["fp"][:, k].sum()
    dice = float(scores_from_counts(tp, fp, s["positives"].sum() - tp)["dice"])
    if defective.any() and dice < LOW_DICE:
        warnings.append(f"validation Dice is {dice:.2f}: the masks barely overlap the defects; train longer, or "
                        f"check the working scale (preparation.json) and the masks")
    return warnings


# ------------------------------------------------------------------ the part head

FEATURES_LAYER = "defect_probability"   # the head reads what this 1x1 sigmoid layer reads


def feature_model(model):
    """The segmentation model with a second output: the features its sigmoid head reads."""
    import keras
    features = model.get_layer(FEATURES_LAYER).input
    return keras.Model(model.inputs, [model.outputs[0], features], name=f"{model.name}_with_features")


def head_input(probability: np.ndarray, features: np.ndarray) -> np.ndarray:
    """What the part head reads of one photo: its features and its defect probability
    (H, W, C + 1), max-pooled :data:`HEAD_POOL` x :data:`HEAD_POOL` (float16): a thin scratch's
    strongest pixels survive the pooling."""
    stacked = np.concatenate([features, probability[..., None]], axis=-1).astype(np.float32)
    h, w = (max(1, d // HEAD_POOL) for d in stacked.shape[:2])
    cropped = stacked[:h * HEAD_POOL, :w * HEAD_POOL] if min(stacked.shape[:2]) >= HEAD_POOL else stacked
    if min(stacked.shape[:2]) < HEAD_POOL:
        return stacked.max(axis=(0, 1), keepdims=True).astype(np.float16)
    return cropped.reshape(h, HEAD_POOL, w, HEAD_POOL, -1).max(axis=(1, 3)).astype(np.float16)


def build_head(channels: int, filters: int = 16):
    """The part head: two 3x3 convolutions over the pooled features and mask, then the global
    maximum and average of their output and of the mask, then one sigmoid unit."""
    import keras
    from keras import layers
    inputs = keras.Input((None, None, channels), name="pooled_features_and_mask")
    x = layers.Conv2D(filters, 3, padding="same", activation="relu", name="head_conv1")(inputs)
    x = layers.MaxPooling2D(2, padding="same", name="head_pool")(x)
    x = layers.Conv2D(filters, 3, padding="same", activation="relu", name="head_conv2")(x)
    pooled = [layers.GlobalMaxPooling2D(name="head_max")(x), layers.GlobalAveragePooling2D(name="head_mean")(x),
              layers.GlobalMaxPooling2D(name="head_input_max")(inputs),
              layers.GlobalAveragePooling2D(name="head_input_mean")(inputs)]
    x = layers.Concatenate(name="head_pooled")(pooled)
    outputs = layers.Dense(1, activation="sigmoid", name="part_score")(x)
    return keras.Model(inputs, outputs, name="part_head")


HEAD_EPOCHS = 30
HEAD_BATCH = 16


def _batches(inputs: list, order) -> list[list[int]]:
    """Indices of ``inputs`` in ``order``, in batches of photos of one size (photos of several
    sizes cannot share a batch)."""
    groups: dict = {}
    for k in order:
        groups.setdefault(inputs[k].shape, []).append(int(k))
    return [members[i:i + HEAD_BATCH] for members in groups.values() for i in range(0, len(members), HEAD_BATCH)]


def fit_head(inputs: list[np.ndarray], labels, seed: int = 0, epochs: int = HEAD_EPOCHS):
    """Train a part head on the :func:`head_input` of photos and their part labels (1 =
    defective), in shuffled batches; returns it."""
    import keras
    keras.utils.set_random_seed(seed)
    head = build_head(inputs[0].shape[-1])
    head.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    labels = np.asarray(labels, np.float32).reshape(-1, 1)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        batches = _batches(inputs, rng.permutation(len(inputs)))
        for k in rng.permutation(len(batches)):
            batch = batches[k]
            head.train_on_batch(np.stack([inputs[i] for i in batch]).astype(np.float32), labels[batch])
    return head


def head_scores(head, inputs: list[np.ndarray]) -> np.ndarray:
    """The part head's score of each photo."""
    scores = np.zeros(len(inputs), np.float32)
    for batch in _batches(inputs, range(len(inputs))):
        out = head.predict_on_batch(np.stack([inputs[i] for i in batch]).astype(np.float32))
        scores[batch] = np.asarray(out, np.float32)[:, 0]
    return scores
