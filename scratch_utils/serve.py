"""The scratch-masking app: upload a photo, get the scratch masked back.

``python -m scratch_utils serve --model RUN`` starts it. Pages and API use
:class:`scratch_utils.predict.Predictor`, the same preprocessing, threshold and minimum area
as ``predict`` and notebook 05 (read from the run folder), so the app and the notebooks
agree on every photo.

- ``GET /``: an upload page; ``POST /`` shows the photo, the verdict and the photo with
  the scratch masked, side by side (works without JavaScript).
- ``POST /api/v1/mask`` (multipart, field ``file``): JSON with the verdict, defect area share,
  bounding boxes of defect regions, and the mask and overlay as base64 PNG.
- ``GET /healthz``: liveness and the operating point.

Safe by default: no debug mode, no secrets, an upload size limit, JSON errors (400 for a
missing or unreadable upload, 413 for an oversize one), uploads kept in memory and never
written to disk unless ``save_uploads`` names a folder, the model loaded once in safe mode.
"""
from __future__ import annotations

import base64
import html
import io
import threading
import uuid
from pathlib import Path

import numpy as np
from flask import Flask, Request, jsonify, request
from PIL import Image

from .data import ItemError
from .files import atomic_write_bytes
from .report import mask_image, overlay_image, png_bytes
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
    mask = np.asarray(mask, bool)
    seen = np.zeros_like(mask)
    height, width = mask.shape
    boxes = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        stack, xs, ys = [(y0, x0)], [], []
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            xs.append(x)
            ys.append(y)
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
        left, top = min(xs) * scale_x, min(ys) * scale_y
        right, bottom = (max(xs) + 1) * scale_x, (max(ys) + 1) * scale_y
        boxes.append([int(left), int(top), int(np.ceil(right - left)), int(np.ceil(bottom - top)),
                      len(xs)])
    boxes.sort(key=lambda b: -b[4])
    return [b[:4] for b in boxes]


def _png_base64(image: Image.Image) -> str:
    return base64.b64encode(png_bytes(image)).decode("ascii")


class MaskService:
    """The predictor plus the response format; one instance per app, shared by threads."""

    def __init__(self, run, threshold=None, min_area=None):
        self.run = Path(run)
        self.predictor = Predictor(run, threshold, min_area)
        self.lock = threading.Lock()  # one inference at a time: the CPU is the bottleneck anyway

    def read_upload(self, data: bytes) -> tuple[Image.Image, Image.Image]:
        """(photo, photo as preparation decodes it) from the upload's bytes, in memory."""
        if not data:
            raise ValueError("the uploaded file is empty")
        try:
            return self.predictor.open(data)  # the same decoding and colour handling as preparation
        except ItemError as exc:
            raise ValueError(f"could not read the upload as an image ({exc})") from None

    def analyse(self, photo: Image.Image, model_photo: Image.Image | None = None) -> dict:
        with self.lock:
            result = self.predictor.predict_photo(photo, model_photo)
        width, height = photo.size
        p = self.predictor
        boxes = defect_boxes(result["model_mask"], *result["scale"])
        return {"verdict": "defective" if result["defective"] else "good",
                "defective": bool(result["defective"]),
                "defect_area_share": round(result["defect_area_share"], 6),
                "max_probability": round(result["max_probability"], 4),
                "boxes": boxes, "width": width, "height": height,
                "mask_threshold": p.mask_threshold, "threshold": p.threshold,
                "min_area": p.min_area, "largest_region_pixels": result["largest_region_pixels"],
                "model": self.run.name,
                "mask_png_base64": _png_base64(mask_image(result["mask"])),
                "overlay_png_base64": _png_base64(overlay_image(photo, result["mask"]))}


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Paint scratch check</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
 .pair {{ display: flex; gap: 1.5rem; flex-wrap: wrap; }}
 figure {{ margin: 0; }} img {{ width: min(44vw, 720px); height: auto; border: 1px solid #ccc; }}
 .defective {{ color: #b0004e; }} .good {{ color: #1d7a3a; }} .error {{ color: #b00020; }}
</style></head>
<body>
<h1>Paint scratch check</h1>
<p>Upload a photo of a painted part: the model ({model}) masks the scratch in magenta.</p>
<form method="post" enctype="multipart/form-data">
 <input type="file" name="file" accept="image/*" required>
 <button type="submit" id="submit">Check</button>
</form>
{result}
</body></html>"""

RESULT = """<h2 id="verdict" class="{verdict}">{verdict_text}</h2>
<p>Defect area: {share:.2f}% of the photo; {n_boxes} region(s) masked at {mask_threshold:.2f}.
A part is called defective when one region above {threshold:.2f} has {min_area} px or more (at model resolution).</p>
<div class="pair">
 <figure><img id="photo" alt="uploaded photo" src="data:image/png;base64,{photo}"><figcaption>photo</figcaption></figure>
 <figure><img id="overlay" alt="scratch masked" src="data:image/png;base64,{overlay}"><figcaption>scratch masked</figcaption></figure>
</div>"""


def create_app(run, threshold: float | None = None, min_area: int | None = None,
               max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
               save_uploads: str | Path | None = None) -> Flask:
    """The Flask app for one run folder; the model is loaded here, once."""
    service = MaskService(run, threshold, min_area)
    app = Flask(__name__)
    app.request_class = InMemoryRequest
    app.config.update(MAX_CONTENT_LENGTH=int(max_upload_mb * 1024 * 1024), DEBUG=False,
                      TESTING=False, PROPAGATE_EXCEPTIONS=False)
    upload_dir = Path(save_uploads) if save_uploads else None

    def error(status: int, message: str):
        response = jsonify({"error": message})
        response.status_code = status
        return response

    def upload_bytes() -> bytes:
        if UPLOAD_FIELD not in request.files:
            fields = ", ".join(sorted(request.files)) or "none"
            raise ValueError(f"no file in the multipart field '{UPLOAD_FIELD}' (fields sent: {fields})")
        data = request.files[UPLOAD_FIELD].read()
        if upload_dir is not None:  # only when the operator asked for it
            atomic_write_bytes(upload_dir / f"{uuid.uuid4().hex}.upload", data)
        return data

    @app.errorhandler(413)
    def too_large(_exc):
        return error(413, f"upload larger than the {max_upload_mb:g} MB limit")

    @app.errorhandler(404)
    def not_found(_exc):
        return error(404, "not found: use GET /, POST /api/v1/mask or GET /healthz")

    @app.errorhandler(405)
    def not_allowed(_exc):
        return error(405, "method not allowed")

    @app.errorhandler(500)
    def internal(_exc):
        return error(500, "internal error while analysing the photo")

    @app.get("/healthz")
    def healthz():
        p = service.predictor
        return jsonify({"status": "ok", "model": service.run.name,
                        "geometry": p.geometry.describe(), "mask_threshold": p.mask_threshold,
                        "threshold": p.threshold, "min_area": p.min_area})

    @app.post("/api/v1/mask")
    def api_mask():
        try:
            photos = service.read_upload(upload_bytes())
        except ValueError as exc:
            return error(400, str(exc))
        return jsonify(service.analyse(*photos))

    @app.route("/", methods=["GET", "POST"])
    def page():
        result = ""
        if request.method == "POST":
            try:
                photos = service.read_upload(upload_bytes())
                answer = service.analyse(*photos)
                result = RESULT.format(
                    verdict=answer["verdict"],
                    verdict_text="Defective: scratch found" if answer["defective"] else "Good: no scratch found",
                    share=100 * answer["defect_area_share"], n_boxes=len(answer["boxes"]),
                    mask_threshold=answer["mask_threshold"], threshold=answer["threshold"],
                    min_area=answer["min_area"], photo=_png_base64(photos[0]), overlay=answer["overlay_png_base64"])
            except ValueError as exc:
                result = f'<p id="error" class="error">{html.escape(str(exc))}</p>'
                return PAGE.format(model=html.escape(service.run.name), result=result), 400
        return PAGE.format(model=html.escape(service.run.name), result=result)

    return app


def serve(run, host: str = "127.0.0.1", port: int = 8000, **kwargs) -> None:
    """Run the app with Werkzeug's threaded server (debug off)."""
    from werkzeug.serving import run_simple
    app = create_app(run, **kwargs)
    print(f"serving {run} on http://{host}:{port}/  (Ctrl-C to stop)")
    run_simple(host, port, app, threaded=True, use_debugger=False, use_reloader=False)
