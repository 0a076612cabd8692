"""Command line: ``python -m scratch_utils <command>`` runs what the notebooks run."""
from __future__ import annotations

import argparse
import errno
import json
import sys

from .geometry import FITS, Geometry
from .limits import DEFAULT_MAX_MEGAPIXELS, DEFAULT_MAX_WAIT_S

from .names import DECISION_RULES, ENCODER_WEIGHTS, LOSS_NAMES, MODEL_NAMES, REGION_MEASURES, SPLITS
from .profiles import PROFILE_NAMES
from .sources import FORMATS


def _synth(args) -> int:
    from .synthetic import generate
    summary = generate(args.out, count=args.count, seed=args.seed, width=args.width,
                       height=args.height, workers=args.workers, visible=args.visible)
    print(f"wrote {summary['count']} parts ({summary['defective']} defective, "
          f"{summary['good']} good) to {summary['out']}")
    return 0


def _prepare(args) -> int:
    from .preparation import prepare
    summary = prepare(args.source, args.out, fmt=args.format, scale=args.scale,
                     max_side=args.max_side, size=args.size, fit=args.fit, extent=args.extent, seed=args.seed,
                     workers=args.workers, max_megapixels=args.max_megapixels)
    counts = summary["counts"]
    for entry in summary["skipped"]:
        print(f"skipped {entry['file']}: {entry['reason']}", file=sys.stderr)
    for warning in summary["warnings"]:
        print(f"warning {warning}", file=sys.stderr)
    rate = summary["images_per_second"]
    settings, estimate = summary["settings"], summary["settings"].get("scale_estimate")
    if settings.get("size"):
        print(f"geometry: {settings['size']}x{settings['size']} square ({settings['fit']})")
    elif settings.get("extent"):
        print(f"geometry: {Geometry.from_dict(settings).describe()}")
    else:
        print(f"geometry: scale {settings['scale']:g}"
              + (f", longer side at most {settings['max_side']} px" if settings.get("max_side") else "")
              + (f" (auto: the narrowest defects are {estimate['narrowest_defect_px']} px wide at "
                 f"source, {estimate['narrowest_defect_px'] * settings['scale']:.2f} px prepared; "
                 f"{estimate['defects_measured']} defects measured, {estimate['specks_measured']} of them "
                 f"specks of 1-2 px that weigh by their length)"
                 if estimate and estimate.get("narrowest_defect_px") else ""))
    print(f"{summary['format']}: prepared {counts['prepared']}, up to date {counts['up_to_date']}, "
          f"skipped {counts['skipped']} -> {counts['total']} pairs "
          f"({counts['defective']} defective, {counts['good']} good; train {counts['train']}, "
          f"val {counts['val']}, test {counts['test']}) in {summary['seconds']:.1f} s"
          + (f" ({rate:.0f} images/s)" if rate else "") + f" -> {summary['out']}")
    return 0


def _train(args) -> int:
    from .profiles import get_profile
    from .train import train
    weights = None if args.encoder_weights in (None, "none") else args.encoder_weights
    given = {name: getattr(args, name) for name in TRAIN_HELP if getattr(args, name) is not None}
    config = get_profile(args.profile).train_config(args.model, weights, **given)   # incl. the VGG warm-up rule
    run = train(args.data, args.out, config, overwrite=args.overwrite)
    from .runs import read_metrics
    metrics = read_metrics(run)
    test = metrics["test"]
    point = metrics["operating_point"]
    print(f"run {run}: chosen on validation: mask threshold {point['mask_threshold']:.2f}; "
          f"a part is defective when one region above {point['decision_threshold']:.2f} has "
          f"{point['min_region']} px or more of {point['region_measure']}; test at the photos' own resolution: "
          f"dice {test['dice']:.3f}, IoU {test['iou']:.3f}, caught {test['detection_rate']:.0%} "
          f"of defective parts, false alarms on {test['false_alarm_rate']:.0%} of good parts")
    if metrics.get("warnings"):
        print(f"{len(metrics['warnings'])} warning(s) about this run, also in {run / 'metrics.json'} (printed above)")
    return 0


def _scale(value: str):
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--scale must be 'auto' or a fraction, got {value!r}") from None


def _evaluate(args) -> int:
    from .evaluation import evaluate_run
    scores = evaluate_run(args.model, args.data, args.split, **_overrides(args))
    print(json.dumps(scores, indent=1))
    return 0


def _predict(args) -> int:
    from .predict import predict
    result = predict(args.model, args.input, args.out, max_megapixels=args.max_megapixels,
                     **_overrides(args))
    for entry in result["skipped"]:
        print(f"skipped {entry['file']}: {entry['reason']}", file=sys.stderr)
    print(f"predicted {result['predicted']} photos ({result['defective']} defective), "
          f"skipped {len(result['skipped'])} -> {result['out']}")
    return 0


def _serve(args) -> int:
    from .serve import serve
    serve(args.model, host=args.host, port=args.port, development=args.development,
          max_upload_mb=args.max_upload_mb, max_megapixels=args.max_megapixels, max_wait_s=args.max_wait_s,
          save_uploads=args.save_uploads, **_overrides(args))
    return 0


def _links(args) -> int:
    from .notebooks import repository_url, sync_links
    changed = sync_links()
    print(f"repository {repository_url()}: "
          + (f"rewrote {', '.join(p.name for p in changed)}" if changed else "every link already in sync"))
    return 0


def _report(args) -> int:
    from .report import run_all
    run_all(profile=args.profile, only=args.only)
    return 0


# What a failed write says: no space, over quota, a read-only disk, no permission.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
OVERRIDES = ("mask_threshold", "decision_threshold", "min_region", "region_measure")


def _overrides(args) -> dict:
    return {key: getattr(args, key) for key in OVERRIDES if getattr(args, key, None) is not None}


def _operating_point_overrides(command) -> None:
    """Flags that replace one value of the run's operating point (chosen on validation by train)."""
    command.add_argument("--mask-threshold", dest="mask_threshold", type=float,
                         help="pixels at or above it are masked (default: the run's)")
    command.add_argument("--decision-threshold", dest="decision_threshold", type=float,
                         help="pixel threshold of the pass/fail call (default: the run's)")
    command.add_argument("--min-region", dest="min_region", type=int,
                         help="pixels (at model resolution, by --region-measure) of the smallest region "
                              "called a defect (default: the run's)")
    command.add_argument("--region-measure", dest="region_measure", choices=REGION_MEASURES,
                         help="measure a region by the length of its skeleton or by its area "
                              "(default: the run's)")


def _pixel_budget(command, what: str) -> None:
    command.add_argument("--max-megapixels", dest="max_megapixels", type=float,
                         default=DEFAULT_MAX_MEGAPIXELS,
                         help=f"pixel budget per photo, read from its header; {what} "
                              "(default %(default)s)")


def _data_commands(commands) -> None:
    """The synth, prepare commands."""
    synth = commands.add_parser("synth", help="generate the synthetic AIHub-format car-paint set")
    synth.add_argument("--out", required=True, help="folder for images/ and labels/")
    synth.add_argument("--count", type=int, default=600)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--width", type=int, default=1280)
    synth.add_argument("--height", type=int, default=720)
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    synth.add_argument("--visible", action="store_true",
                       help="draw every defect at least 8 levels from its paint (without it a few are nearly invisible)")
    synth.set_defaults(run=_synth)

    prep = commands.add_parser("prepare", help="labelled photos -> masks, resized pairs, splits")
    prep.add_argument("source", help="folder with the photos and labels (never modified)")
    prep.add_argument("--out", required=True, help="output folder (outside SOURCE)")
    prep.add_argument("--format", default="auto", choices=FORMATS)
    prep.add_argument("--scale", type=_scale, default="auto",
                      help="fraction of each photo's own resolution, aspect ratio kept (default "
                           "auto: the narrowest defects, read by their length, stay about 1 px wide)")
    prep.add_argument("--max-side", dest="max_side", type=int, default=None,
                      help="cap on the longer side after scaling, in pixels")
    prep.add_argument("--size", type=int, default=None,
                      help="instead of scaling, squash into a SIZE x SIZE square (the earlier projects: 128)")
    prep.add_argument("--fit", default="stretch", choices=FITS,
                      help="with --size: stretch to the square (the earlier projects) or keep the aspect ratio and pad")
    prep.add_argument("--extent", type=int, default=None,
                      help="instead of one scale, each photo its own: the pixels of an EXTENT x EXTENT square, "
                           "aspect ratio kept (for photos framed at different sizes)")
    prep.add_argument("--seed", type=int, default=0, help="seed of the train/val/test split")
    prep.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    _pixel_budget(prep, "photos over it are skipped and named in preparation.json")
    prep.set_defaults(run=_prepare)


# train's flags, one a TrainConfig field (its type and default come from the profile's config):
# "field: help" a line.
TRAIN_FLAGS = """
epochs: epochs
batch_size: tiles per batch
base_filters: filters of the first block (the U-Net doubles them at each level)
loss: training loss
learning_rate: Adam's learning rate, before cosine decay
freeze_encoder_epochs: vgg16_unet: epochs with a frozen encoder first
tile_size: training crop side (multiple of 16)
defect_share: share of training tiles centred on a defect
hard_negative_share: share of training tiles on good photos where the model fires
tiles_per_epoch: training tiles per epoch (0: one per training photo)
zoom: random zoom of each training tile, height and width apart (0.3: 0.7-1.3 times)
decision: how a part is called: regions (one long or large region) or head (the part head)
early_stopping: patience in validated epochs (0: off)
validate_every: score the validation photos every n epochs and after the last
seed: random seed
"""
TRAIN_HELP = dict(line.split(": ", 1) for line in TRAIN_FLAGS.strip().splitlines())


def _training_commands(commands, profile) -> None:
    """The train, evaluate commands (train's defaults are ``profile``'s)."""
    tr = commands.add_parser("train", help="train a model on a prepared folder -> run folder")
    tr.add_argument("--data", required=True, help="prepared folder (python -m scratch_utils prepare)")
    tr.add_argument("--model", default="unet", choices=MODEL_NAMES)
    tr.add_argument("--out", required=True, help="run folder to create")
    tr.add_argument("--profile", default=None, choices=PROFILE_NAMES,
                    help=f"the recipe every other setting defaults to (default: $SCRATCH_PROFILE or default; "
                         f"the defaults below are the {profile.name} profile's)")
    defaults, vgg = profile.train_config("unet"), profile.train_config("vgg16_unet", "hed")
    choices = {"loss": LOSS_NAMES, "decision": DECISION_RULES}
    for name, text in TRAIN_HELP.items():
        value, vgg_value = getattr(defaults, name), getattr(vgg, name)
        tr.add_argument(f"--{name.replace('_', '-')}", dest=name, type=type(value), default=None,
                        choices=choices.get(name),
                        help=f"{text} (default: {value}" + (f"; {vgg_value} for a pretrained vgg16_unet"
                                                             if vgg_value != value else "") + ")")
    tr.add_argument("--encoder-weights", dest="encoder_weights", choices=ENCODER_WEIGHTS,
                    help="vgg16_unet's pretrained encoder (default: none)")
    tr.add_argument("--deterministic", action="store_true", default=None,
                    help="TensorFlow's deterministic ops (slower)")
    tr.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    tr.set_defaults(run=_train)

    ev = commands.add_parser("evaluate", help="scores of a run on a split of a prepared folder")
    ev.add_argument("--model", required=True, help="run folder")
    ev.add_argument("--data", default=None, help="prepared folder (default: the run's own)")
    ev.add_argument("--split", default="test", choices=SPLITS)
    _operating_point_overrides(ev)
    ev.set_defaults(run=_evaluate)


def _use_commands(commands) -> None:
    """The predict, serve commands."""
    pr = commands.add_parser("predict", help="mask the scratches on photos of any size")
    pr.add_argument("--model", required=True, help="run folder")
    pr.add_argument("--input", required=True, help="a photo or a folder of photos")
    pr.add_argument("--out", required=True, help="output folder (outside the input folder)")
    _operating_point_overrides(pr)
    _pixel_budget(pr, "photos over it are skipped with the reason")
    pr.set_defaults(run=_predict)

    sv = commands.add_parser("serve", help="web app: upload a photo, get the scratch masked")
    sv.add_argument("--model", required=True, help="run folder")
    sv.add_argument("--host", default="127.0.0.1", help="127.0.0.1: this machine only")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--max-upload-mb", dest="max_upload_mb", type=float, default=10.0)
    _pixel_budget(sv, "larger uploads get 413 before any pixel is decoded")
    sv.add_argument("--max-wait", dest="max_wait_s", type=float, default=DEFAULT_MAX_WAIT_S,
                    help="seconds a request may queue for the model before it gets 503 with "
                         "Retry-After (default %(default)s)")
    _operating_point_overrides(sv)
    sv.add_argument("--development", action="store_true",
                    help="Werkzeug's development server instead of waitress (not for production)")
    sv.add_argument("--save-uploads", dest="save_uploads", default=None,
                    help="keep a copy of each upload in this folder (off by default)")
    sv.set_defaults(run=_serve)


def _course_commands(commands) -> None:
    """The links, report commands."""
    links = commands.add_parser("links", help="rewrite the notebooks' install cells and Colab badges "
                                               "from pyproject's repository address")
    links.set_defaults(run=_links)

    report = commands.add_parser("report", help="run every notebook and keep its rendered outputs")
    report.add_argument("--profile", default="default", choices=PROFILE_NAMES)
    report.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 01 02")
    report.set_defaults(run=_report)


def build_parser(argv=None) -> argparse.ArgumentParser:
    """The parser; ``train``'s help shows the defaults of the profile ``argv`` names (else
    ``$SCRATCH_PROFILE``, else default)."""
    from .profiles import get_profile
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--profile", default=None, choices=PROFILE_NAMES)
    profile = get_profile(early.parse_known_args(argv)[0].profile)
    parser = argparse.ArgumentParser(prog="python -m scratch_utils",
                                     description="Car-paint scratch segmentation course tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    _data_commands(commands)
    _training_commands(commands, profile)
    _use_commands(commands)
    _course_commands(commands)
    return parser


def _error(exc: Exception, code: int) -> int:
    """Print ``exc`` as one line on stderr and return ``code``."""
    import gc
    exc.__traceback__ = None   # frees the frames: a progress bar they hold closes, and ends its line, first
    gc.collect()
    print(f"error: {exc}", file=sys.stderr)
    return code


def main(argv=None) -> int:
    args = build_parser(argv).parse_args(argv)
    from .errors import OutputError, PrepareError, WeightsUnavailable, output_error
    try:
        return args.run(args)
    except OutputError as exc:          # the disk or the folder, not the input: exit code 1
        return _error(exc, 1)
    except (PrepareError, WeightsUnavailable, FileExistsError, FileNotFoundError,
            ValueError) as exc:
        return _error(exc, 2)
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        # a write by a library (Keras saving a checkpoint, Matplotlib a figure) that failed
        return _error(output_error(exc, exc.filename or getattr(args, "out", None) or "."), 1)
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept, nothing is half-written", file=sys.stderr)
        return 130
