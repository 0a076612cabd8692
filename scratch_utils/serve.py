"""The scratch-masking app: upload a photo, get the scratch masked back.

``python -m scratch_utils serve --model RUN`` starts it. Pages and API use
:class:`scratch_utils.predict.Predictor`: the same preprocessing and operating point (mask threshold,
decision threshold, minimum region) as ``predict`` and notebook 05 (read from the run folder), so the app and the notebooks
agree on every photo.

- ``GET /``: an upload page; ``POST /`` shows the photo, the verdict and the photo with
  the scratch masked, side by side (works without JavaScript).
- ``POST /api/v1/mask`` (multipart, field ``file``): JSON with the verdict, defect area share,
  bounding boxes of defect regions, and the mask and overlay as base64 PNG.
- ``GET /healthz``: liveness and the operating point.

Safe by default: no debug mode, no secrets, an upload size limit, JSON errors (400 for a
missing or unreadable upload, 413 for an upload over the size limit or a photo over the
pixel budget, read from its header before any pixel is decoded), uploads kept in memory and
never written to disk unless ``save_uploads`` names a folder, the model loaded once in safe
mode.

Responsive under load: one inference runs at a time (the CPU is the bottleneck), and a
request that would queue longer than ``max_wait_s`` for it gets 503 with ``Retry-After``
at once instead of piling up; ``/healthz`` never waits for the model.
"""
from __future__ import annotations

import base64
import io
import math
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from flask import Flask, Request, jsonify, make_response, render_template, request
from PIL import Image
from scipy import ndimage

from .errors import ItemError, PhotoTooLarge
from .files import atomic_write_bytes
from .limits import DEFAULT_MAX_MEGAPIXELS, DEFAULT_MAX_WAIT_S
from .decision import EIGHT_NEIGHBOURS
from .photos import mask_image, overlay_image, png_bytes
from .predict import Predictor

UPLOAD_FIELD = "file"
DEFAULT_MAX_UPLOAD_MB = 10


class InMemoryRequest(Request):
    """Werkzeug spools uploads over 500 KB to temporary files on disk; keep them in memory
    (bounded by MAX_CONTENT_LENGTH) so an upload never touches the disk."""

    def _get_file_stream(self, total_content_length, content_type, filename=None,
                         content_length=None):
        return io.BytesIO()


def defect_boxes(mask: np.ndarray, scale_x: float = 1.0, scale_y: float = 1.0) -> list[list[int]]:
    """Bounding boxes ``[x, y, width, height]`` of the 8-connected regions of a mask,
    scaled from mask pixels to photo pixels, largest first."""
    labels, count = ndimage.label(np.asarray(mask, bool), structure=EIGHT_NEIGHBOURS)
    if not count:
        return []
    sizes = np.bincount(labels.ravel())[1:]
    boxes = []
    for size, (rows, cols) in zip(sizes, ndimage.find_objects(labels)):
        left, top = cols.start * scale_x, rows.start * scale_y
        right, bottom = cols.stop * scale_x, rows.stop * scale_y
        boxes.append((int(size), [int(left), int(top), int(np.ceil(right - left)),
                                  int(np.ceil(bottom - top))]))
    boxes.sort(key=lambda b: -b[0])   # stable: equal sizes keep reading order
    return [box for _, box in boxes]


def _png_base64(image: Image.Image) -> str:
    return base64.b64encode(png_bytes(image)).decode("ascii")


class ServiceBusy(Exception):
    """The model's queue is longer than the wait budget: answer 503 with Retry-After."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class MaskService:
    """The predictor plus the response format; one instance per app, shared by threads.

    Admission control: each request in flight is expected to cost one inference (a moving
    average of the measured ones); a request that would wait longer than ``max_wait_s`` is
    refused before its photo is decoded, so a burst costs neither memory nor CPU."""

    def __init__(self, run, max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS,
                 max_wait_s: float = DEFAULT_MAX_WAIT_S, **overrides):
        self.run = Path(run)
        self.predictor = Predictor(run, max_megapixels=max_megapixels, **overrides)
        self.lock = threading.Lock()  # one inference at a time: the CPU is the bottleneck anyway
        self.max_wait_s = float(max_wait_s)
        self._state = threading.Lock()
        self.in_flight = 0
        self.seconds_per_photo = 0.0  # moving average of inference time; 0 until measured

    def _busy(self, expected_wait: float) -> ServiceBusy:
        return ServiceBusy(f"the model is busy: about {expected_wait:.1f} s of photos are queued, "
                           f"over the {self.max_wait_s:g} s wait limit; retry later",
                           max(1, math.ceil(expected_wait)))

    @contextmanager
    def admitted(self):
        """Count a request in flight, or raise ServiceBusy when its expected wait is too long."""
        with self._state:
            expected = self.in_flight * self.seconds_per_photo
            if expected > self.max_wait_s:
                raise self._busy(expected)
            self.in_flight += 1
        try:
            yield
        finally:
            with self._state:
                self.in_flight -= 1

    def read_upload(self, data: bytes):
        """The upload's photo, opened in memory as :meth:`Predictor.open` opens it.
        PhotoTooLarge (before decoding) over the pixel budget; ValueError when unreadable."""
        if not data:
            raise ValueError("the uploaded file is empty")
        try:
            return self.predictor.open(data)  # the same decoding and colour handling as preparation
        except PhotoTooLarge:
            raise
        except ItemError as exc:
            raise ValueError(f"could not read the upload as an image ({exc})") from None

    def analyse(self, opened) -> dict:
        if not self.lock.acquire(timeout=self.max_wait_s):
            raise self._busy(self.max_wait_s)
        try:
            started = time.perf_counter()
            result = self.predictor.predict_photo(opened)
            seconds = time.perf_counter() - started
        finally:
            self.lock.release()
        with self._state:
            self.seconds_per_photo = (seconds if not self.seconds_per_photo
                                      else 0.8 * self.seconds_per_photo + 0.2 * seconds)
        photo = opened.photo()
        width, height = photo.size
        point = self.predictor.point
        boxes = defect_boxes(result.model_mask, *result.scale)
        return {"verdict": "defective" if result.defective else "good", "defective": result.defective,
                "defect_area_share": round(result.defect_area_share, 6),
                "max_probability": round(result.max_probability, 4),
                "boxes": boxes, "width": width, "height": height,
                "mask_threshold": point.mask_threshold, "decision_threshold": point.decision_threshold,
                "rule": point.rule, "rule_text": point.describe(), "score": round(result.score, 4),
                "min_region": point.min_region, "region_measure": point.region_measure,
                "model": self.run.name,
                "mask_png_base64": _png_base64(mask_image(result.mask)),
                "overlay_png_base64": _png_base64(overlay_image(photo, result.mask))}


def _error(status: int, message: str, **details):
    response = jsonify({"error": message, **details})
    response.status_code = status
    return response


def _refused(exc: Exception):
    """The JSON answer to an upload the app will not analyse: 413 (over the pixel budget)
    or 503 with Retry-After (the queue is too long)."""
    if isinstance(exc, PhotoTooLarge):
        return _error(413, str(exc), width=exc.width, height=exc.height,
                      megapixels=round(exc.pixels / 1e6, 1), max_megapixels=exc.max_megapixels)
    response = _error(503, str(exc), retry_after_s=exc.retry_after)
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


def _upload_reader(upload_dir: Path | None):
    def upload_bytes() -> bytes:
        if UPLOAD_FIELD not in request.files:
            fields = ", ".join(sorted(request.files)) or "none"
            raise ValueError(f"no file in the multipart field '{UPLOAD_FIELD}' (fields sent: {fields})")
        data = request.files[UPLOAD_FIELD].read()
        if upload_dir is not None:  # only when the operator asked for it
            atomic_write_bytes(upload_dir / f"{uuid.uuid4().hex}.upload", data)
        return data
    return upload_bytes


def _error_pages(app: Flask, max_upload_mb: float) -> None:
    app.register_error_handler(413, lambda _: _error(413, f"upload larger than the {max_upload_mb:g} MB limit"))
    app.register_error_handler(404, lambda _: _error(404, "not found: use GET /, POST /api/v1/mask or GET /healthz"))
    app.register_error_handler(405, lambda _: _error(405, "method not allowed"))
    app.register_error_handler(500, lambda _: _error(500, "internal error while analysing the photo"))


def _page_view(service: MaskService, upload_bytes):
    """GET /: the upload form; POST /: the photo, the verdict and the scratch masked
    (``templates/page.html``, escaped by Jinja)."""
    def page():
        context = {"model": service.run.name}
        if request.method != "POST":
            return render_template("page.html", **context)
        try:
            data = upload_bytes()
            with service.admitted():
                opened = service.read_upload(data)
                answer = service.analyse(opened)
            return render_template("page.html", answer=answer, photo=_png_base64(opened.photo()), **context)
        except (ValueError, PhotoTooLarge, ServiceBusy) as exc:
            status = 400 if isinstance(exc, ValueError) else 413 if isinstance(exc, PhotoTooLarge) else 503
            response = make_response(render_template("page.html", error=str(exc), **context), status)
            if isinstance(exc, ServiceBusy):
                response.headers["Retry-After"] = str(exc.retry_after)
            return response
    return page


def create_app(run, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
               max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS,
               max_wait_s: float = DEFAULT_MAX_WAIT_S,
               save_uploads: str | Path | None = None, **overrides) -> Flask:
    """The Flask app for one run folder; the model is loaded here, once. ``overrides``
    (``mask_threshold``, ``decision_threshold``, ``min_region``) replace the run's values."""
    service = MaskService(run, max_megapixels, max_wait_s, **overrides)
    app = Flask(__name__)
    app.extensions["mask_service"] = service
    app.request_class = InMemoryRequest
    app.config.update(MAX_CONTENT_LENGTH=int(max_upload_mb * 1024 * 1024), DEBUG=False,
                      TESTING=False, PROPAGATE_EXCEPTIONS=False)
    upload_bytes = _upload_reader(Path(save_uploads) if save_uploads else None)
    _error_pages(app, max_upload_mb)

    @app.get("/healthz")
    def healthz():
        p = service.predictor
        return jsonify({"status": "ok", "model": service.run.name,
                        "geometry": p.geometry.describe(), "operating_point": p.point.as_dict(),
                        "max_megapixels": p.max_megapixels, "max_wait_s": service.max_wait_s,
                        "in_flight": service.in_flight})

    @app.post("/api/v1/mask")
    def api_mask():
        try:
            data = upload_bytes()
            with service.admitted():
                return jsonify(service.analyse(service.read_upload(data)))
        except ValueError as exc:
            return _error(400, str(exc))
        except (PhotoTooLarge, ServiceBusy) as exc:
            return _refused(exc)

    app.add_url_rule("/", "page", _page_view(service, upload_bytes), methods=["GET", "POST"])
    return app


SERVER_THREADS = 4   # requests handled at once (one inference at a time; /healthz never waits)


def production_server(app: Flask, host: str, port: int, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
                      threads: int = SERVER_THREADS):
    """A waitress WSGI server for the app (pure Python, meant for production, unlike Werkzeug's
    development server). Upload bodies stay in memory up to the app's limit, so an upload never
    touches the disk, and a body over twice the limit is cut by waitress itself."""
    from waitress import create_server
    limit = int(max_upload_mb * 1024 * 1024)
    return create_server(app, host=host, port=port, threads=threads, inbuf_overflow=2 * limit + 65536,
                         max_request_body_size=2 * limit + 65536, ident="scratch-utils")


def serve(run, host: str = "127.0.0.1", port: int = 8000, development: bool = False, **kwargs) -> None:
    """Serve the app on waitress (debug off); ``development=True`` uses Werkzeug's development
    server instead (single machine, reloads nothing, not for a paint line)."""
    app = create_app(run, **kwargs)
    if development:
        from werkzeug.serving import run_simple
        print(f"serving {run} on http://{host}:{port}/ with Werkzeug's development server (Ctrl-C to stop)",
              flush=True)
        run_simple(host, port, app, threaded=True, use_debugger=False, use_reloader=False)
        return
    server = production_server(app, host, port, kwargs.get("max_upload_mb", DEFAULT_MAX_UPLOAD_MB))
    print(f"serving {run} on http://{host}:{port}/ with waitress, {SERVER_THREADS} threads (Ctrl-C to stop)",
          flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
