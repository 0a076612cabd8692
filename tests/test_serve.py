"""The app: API with Flask's test client, a real browser, and a bounded load test."""
import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("flask")
pytest.importorskip("keras")

from scratch_utils.errors import PhotoTooLarge  # noqa: E402
from scratch_utils.predict import Predictor  # noqa: E402
from scratch_utils.runs import OperatingPoint, save_operating_point  # noqa: E402
from scratch_utils.serve import create_app, defect_boxes  # noqa: E402

from hostile_uploads import flat_png_bytes  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def png_bytes(image: Image.Image, fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photos(prepared):
    """A defective and a good synthetic photo at source resolution."""
    import csv
    rows = list(csv.DictReader((prepared / "manifest.csv").open()))
    source = prepared.parent / "source"
    defective = next(r for r in rows if r["quality"] == "defective")
    good = next(r for r in rows if r["quality"] == "good")
    return {q: (source / r["source_image"]).read_bytes() for q, r in
            (("defective", defective), ("good", good))}


@pytest.fixture(scope="module")
def client(run):
    app = create_app(run, max_upload_mb=1)
    return app.test_client()


def post(client, data: bytes, field="file", name="photo.jpg"):
    return client.post("/api/v1/mask", data={field: (io.BytesIO(data), name)},
                       content_type="multipart/form-data")


def test_healthz(client, run):
    body = client.get("/healthz").get_json()
    assert body["status"] == "ok" and body["model"] == run.name and body["geometry"] == "scale 0.5"


@pytest.mark.parametrize("quality", ["defective", "good"])
def test_api_answers_like_predict_does(client, run, photos, quality):
    response = post(client, photos[quality])
    assert response.status_code == 200
    body = response.get_json()
    photo = Image.open(io.BytesIO(photos[quality])).convert("RGB")
    predictor = Predictor(run)
    expected = predictor.predict_photo(predictor.open(photos[quality]))  # `predict`'s code path
    assert body["defective"] == expected.defective
    assert body["verdict"] == ("defective" if expected.defective else "good")
    # the decision `train` wrote into the run folder, applied the same way by the app and `predict`
    written = json.loads((run / "operating_point.json").read_text())
    assert body["rule"] == expected.rule == written["rule"]
    assert body["region_measure"] == written["region_measure"] and body["min_region"] == written["min_region"]
    assert body["score"] == pytest.approx(expected.score, abs=1e-4)
    assert body["defect_area_share"] == pytest.approx(expected.defect_area_share, abs=1e-6)
    assert (body["width"], body["height"]) == photo.size
    mask = Image.open(io.BytesIO(base64.b64decode(body["mask_png_base64"])))
    overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay_png_base64"])))
    assert mask.size == overlay.size == photo.size and mask.mode == "L"
    assert set(np.unique(np.asarray(mask))) <= {0, 255}
    for box in body["boxes"]:
        x, y, w, h = box
        assert 0 <= x < photo.size[0] and 0 <= y < photo.size[1] and w > 0 and h > 0


def test_operating_point_from_the_run_folder_is_used(run, photos, tmp_path):
    copy = shutil.copytree(run, tmp_path / "run")
    save_operating_point(copy, OperatingPoint(mask_threshold=0.0, decision_threshold=0.0, min_region=1))
    body = post(create_app(copy).test_client(), photos["good"]).get_json()   # everything is defect
    assert body["decision_threshold"] == 0.0 and body["defective"] and body["defect_area_share"] == 1.0
    assert len(body["boxes"]) == 1
    health = create_app(copy).test_client().get("/healthz").get_json()
    assert health["operating_point"]["mask_threshold"] == 0.0


def test_corrupt_upload_is_a_400_with_a_json_reason(client):
    response = post(client, b"\x89PNG\r\n\x1a\n but then nothing")
    assert response.status_code == 400
    assert "could not read the upload as an image" in response.get_json()["error"]
    assert post(client, b"").get_json()["error"] == "the uploaded file is empty"


def test_wrong_field_is_a_400_naming_the_field(client, photos):
    response = post(client, photos["good"], field="image")
    assert response.status_code == 400
    assert response.get_json()["error"] == ("no file in the multipart field 'file' "
                                            "(fields sent: image)")


def test_oversize_upload_is_a_413(client):
    response = post(client, os.urandom(1024 * 1024 + 10))
    assert response.status_code == 413
    assert "1 MB limit" in response.get_json()["error"]


def test_uploads_never_touch_the_disk(run, photos, tmp_path, monkeypatch):
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (900, 900, 3), dtype=np.uint8))
    data = png_bytes(big)
    assert len(data) > 600_000, "over Werkzeug's 500 KB in-memory limit"
    response = post(create_app(run, max_upload_mb=5).test_client(), data)
    assert response.status_code == 200
    assert list(tmp_path.iterdir()) == []
    saved = tmp_path / "kept"
    post(create_app(run, save_uploads=saved).test_client(), photos["good"])
    assert len(list(saved.iterdir())) == 1, "--save-uploads keeps a copy when asked"


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """A 15000x10000 PNG of one grey value: a ~165 KB upload, far under the size limit."""
    return flat_png_bytes(15000, 10000)


def test_pixel_budget_is_read_from_the_header_without_decoding(bomb, monkeypatch):
    import tracemalloc

    from PIL import ImageFile

    from scratch_utils.photos import open_photo

    def no_decoding(self):
        raise AssertionError("pixels were decoded")
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    tracemalloc.start()
    try:
        with pytest.raises(PhotoTooLarge, match=r"15000x10000 \(150.0 MP\), over the 40 MP limit"):
            open_photo(io.BytesIO(bomb), exif="always")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000, f"{peak / 1e6:.1f} MB allocated to refuse a photo"
    monkeypatch.undo()
    photo, size = open_photo(io.BytesIO(flat_png_bytes(300, 200)), max_megapixels=0.1)
    assert size == (300, 200) and photo.mode == "RGB"
    with pytest.raises(PhotoTooLarge):
        open_photo(io.BytesIO(flat_png_bytes(400, 300)), max_megapixels=0.1)
    # Without our budget, Pillow's own guard still refuses, as the same error (413 in the app).
    with pytest.raises(PhotoTooLarge, match=r"\(150.0 MP\), over what Pillow opens safely"):
        import PIL.Image
        monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 50_000_000)
        open_photo(io.BytesIO(bomb), max_megapixels=None)


def test_photo_over_the_pixel_budget_is_a_413_naming_size_and_limit(client, bomb, monkeypatch):
    from PIL import ImageFile

    def no_decoding(self):
        raise AssertionError("pixels were decoded")
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)   # refused from the header
    response = post(client, bomb, name="flat.png")
    assert response.status_code == 413
    body = response.get_json()
    assert (body["width"], body["height"], body["max_megapixels"]) == (15000, 10000, 40.0)
    assert "over the 40 MP limit" in body["error"]
    page = client.post("/", data={"file": (io.BytesIO(bomb), "flat.png")},
                       content_type="multipart/form-data")
    assert page.status_code == 413 and "40 MP limit" in page.data.decode()


def test_predict_and_prepare_skip_a_photo_over_the_budget_with_the_reason(run, bomb, tmp_path):
    from conftest import defect, write_aihub_label, write_photo

    from scratch_utils.preparation import prepare
    from scratch_utils.predict import predict
    inputs = tmp_path / "in"
    write_photo(inputs / "ok.jpg", 160, 96)
    (inputs / "huge.png").write_bytes(bomb)
    result = predict(run, inputs, tmp_path / "out", progress=False)
    assert result["predicted"] == 1
    assert [Path(s["file"]).name for s in result["skipped"]] == ["huge.png"]
    assert "over the 40 MP limit" in result["skipped"][0]["reason"]
    source = tmp_path / "source"
    for k in range(3):
        write_photo(source / "images" / f"p{k}.jpg", 160, 96)
        write_aihub_label(source / "labels" / f"p{k}.json", f"p{k}.jpg", 160, 96,
                          [defect([10, 10, 90, 12, 90, 16, 10, 14])])
    (source / "images" / "huge.png").write_bytes(bomb)
    write_aihub_label(source / "labels" / "huge.json", "huge.png", 15000, 10000,
                      [defect([10, 10, 90, 12, 90, 16, 10, 14])])
    report = prepare(source, tmp_path / "prepared", scale=0.5, progress=False)
    assert report["counts"]["prepared"] == 3 and report["settings"]["max_megapixels"] == 40.0
    (skipped,) = [s for s in report["skipped"] if "huge" in s["file"]]
    assert "15000x10000" in skipped["reason"] and "40 MP limit" in skipped["reason"]


def test_a_queue_longer_than_the_wait_budget_gets_503_and_healthz_still_answers(run, photos):
    app = create_app(run, max_wait_s=0.3)
    service, client = app.extensions["mask_service"], app.test_client()
    service.lock.acquire()                      # an inference in progress
    try:
        assert client.get("/healthz").status_code == 200, "healthz never waits for the model"
        response = post(client, photos["good"])            # waits its 0.3 s for the lock, then 503
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1" and "wait limit" in response.get_json()["error"]
    finally:
        service.lock.release()
    service.seconds_per_photo, service.in_flight = 2.0, 3    # three photos of 2 s queued
    try:
        response = post(client, photos["good"])
        # Refused at admission, before the lock: its Retry-After is the queue's 6 s, not the lock's 1 s.
        assert response.status_code == 503 and response.headers["Retry-After"] == "6"
        page = client.post("/", data={"file": (io.BytesIO(photos["good"]), "p.jpg")},
                           content_type="multipart/form-data")
        assert page.status_code == 503 and page.headers["Retry-After"] == "6"
    finally:
        service.in_flight = 0
    assert post(client, photos["good"]).status_code == 200


def test_upload_page_shows_photo_verdict_and_overlay(client, photos):
    assert b'type="file" name="file"' in client.get("/").data
    page = client.post("/", data={"file": (io.BytesIO(photos["defective"]), "p.jpg")},
                       content_type="multipart/form-data").data.decode()
    assert 'id="verdict"' in page and 'id="overlay"' in page and 'id="photo"' in page
    bad = client.post("/", data={"file": (io.BytesIO(b"nope"), "p.jpg")},
                      content_type="multipart/form-data")
    assert bad.status_code == 400 and 'id="error"' in bad.data.decode()


def test_defect_boxes():
    mask = np.zeros((6, 8), bool)
    mask[1:3, 1:4] = True
    mask[5, 7] = True
    assert defect_boxes(mask) == [[1, 1, 3, 2], [7, 5, 1, 1]]
    assert defect_boxes(mask, 10, 10)[0] == [10, 10, 30, 20]


# --------------------------------------------------------------------- a real server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(run):
    """The app on the production server `serve` runs (waitress), on a free local port."""
    from scratch_utils.serve import production_server
    port = free_port()
    httpd = production_server(create_app(run), "127.0.0.1", port)
    thread = threading.Thread(target=httpd.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    httpd.close()


def multipart(body: bytes, name: str = "p.jpg", boundary: str = "scratchboundary") -> tuple[bytes, str]:
    payload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
               f"Content-Type: application/octet-stream\r\n\r\n").encode() + body + f"\r\n--{boundary}--\r\n".encode()
    return payload, f"multipart/form-data; boundary={boundary}"


@pytest.mark.slow
def test_the_production_server_keeps_uploads_in_memory_and_refuses_oversize_ones(run, monkeypatch):
    """On waitress, `serve`'s server: a 1.5 MB upload is answered with no temporary file (waitress
    spools bodies over 512 KB by default), and an upload over the limit gets the app's JSON 413."""
    import urllib.error
    import urllib.request

    import waitress.buffers

    from scratch_utils.serve import production_server

    def no_disk(*args, **kwargs):
        raise AssertionError("waitress wrote an upload to a temporary file")

    monkeypatch.setattr(waitress.buffers.TempfileBasedBuffer, "newfile", no_disk)
    port = free_port()
    httpd = production_server(create_app(run, max_upload_mb=2), "127.0.0.1", port, max_upload_mb=2)
    stopping = threading.Event()

    def serve():
        try:
            httpd.run()
        except OSError:   # the loop's select meets the sockets close() just shut: the teardown, not a fault
            if not stopping.is_set():
                raise

    threading.Thread(target=serve, daemon=True).start()
    try:
        noise = np.random.default_rng(1).integers(0, 255, (800, 800, 3), dtype=np.uint8)
        data = png_bytes(Image.fromarray(noise))
        assert 1_000_000 < len(data) < 2 * 1024 * 1024
        payload, content_type = multipart(data, "big.png")
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/mask", data=payload, method="POST",
                                         headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200 and "verdict" in json.loads(response.read())
        payload, content_type = multipart(os.urandom(3 * 1024 * 1024), "huge.jpg")
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/mask", data=payload, method="POST",
                                         headers={"Content-Type": content_type})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=60)
        assert refused.value.code == 413 and "2 MB limit" in json.loads(refused.value.read())["error"]
    finally:
        stopping.set()
        httpd.close()


@pytest.mark.slow
def test_mixed_load_good_requests_all_answered_bad_ones_refused(server, photos, bomb):
    """Bounded: 300 requests on 127.0.0.1, 8 at a time, 10 s timeout each; 1 in 10 is a
    pixel bomb or a corrupt file. Every good one gets its verdict, every bad one its 4xx."""
    import urllib.error
    import urllib.request
    uploads = {"good": multipart(photos["defective"]), "bomb": multipart(bomb, "flat.png"),
               "corrupt": multipart(photos["defective"][:2000], "cut.jpg")}
    kinds = ["bomb" if k % 20 == 9 else "corrupt" if k % 20 == 19 else "good" for k in range(300)]

    def one(kind):
        payload, content_type = uploads[kind]
        started = time.perf_counter()
        req = urllib.request.Request(f"{server}/api/v1/mask", data=payload, method="POST",
                                     headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                status, body = response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            status, body = exc.code, json.loads(exc.read())
        return kind, status, body, time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, kinds))
    seconds = time.perf_counter() - started
    assert len(results) == 300
    assert all(status == 200 and "verdict" in body for kind, status, body, _ in results if kind == "good")
    assert all(status == 413 for kind, status, _, _ in results if kind == "bomb")
    assert all(status == 400 and "error" in body for kind, status, body, _ in results if kind == "corrupt")
    latencies = np.array([t for kind, _, _, t in results if kind == "good"]) * 1000
    print(f"\n300 mixed requests, 8 clients: {300 / seconds:.0f} req/s, good p50 "
          f"{np.percentile(latencies, 50):.0f} ms, p95 {np.percentile(latencies, 95):.0f} ms")


def chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.mark.slow
def test_browser_uploads_a_photo_and_sees_the_overlay(server, photos, tmp_path):
    found = chromium()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver must be installed in CI (.ci/run installs them)")
        pytest.skip("headless Chromium not installed: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as conditions
    from selenium.webdriver.support.ui import WebDriverWait
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic", "--window-size=1400,900",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    photo = tmp_path / "part.jpg"
    photo.write_bytes(photos["defective"])
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    try:
        driver.get(server + "/")
        driver.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(photo))
        driver.find_element(By.ID, "submit").click()
        overlay = WebDriverWait(driver, 30).until(conditions.visibility_of_element_located((By.ID, "overlay")))
        assert overlay.get_attribute("naturalWidth") == str(Image.open(photo).size[0])
        assert driver.find_element(By.ID, "verdict").text.startswith(("Defective", "Good"))
        assert driver.save_screenshot(str(tmp_path / "app_upload.png"))
    finally:
        driver.quit()


@pytest.mark.slow
def test_cli_serve_starts_and_answers(run):
    import urllib.request
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "scratch_utils", "serve", "--model", str(run),
                                "--port", str(port), "--max-megapixels", "24", "--max-wait", "5",
                                "--min-region", "7"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"})
    try:
        # serve prints its address once the socket listens (waitress binds it on creation).
        for line in process.stdout:
            if f"on http://127.0.0.1:{port}/ with waitress" in line:
                break
        else:
            raise AssertionError("the server exited before it listened")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            health = json.loads(response.read())
        assert health["status"] == "ok"
        assert (health["max_megapixels"], health["max_wait_s"]) == (24.0, 5.0)
        assert health["operating_point"]["min_region"] == 7
    finally:
        process.terminate()
        process.wait(timeout=10)
