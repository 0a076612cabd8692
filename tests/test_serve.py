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

from scratch_utils.compare import OperatingPoint  # noqa: E402
from scratch_utils.serve import create_app, defect_boxes  # noqa: E402
from scratch_utils.predict import Predictor  # noqa: E402
from scratch_utils.train import save_operating_point  # noqa: E402

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
    expected = predictor.predict_photo(*predictor.open(photos[quality]))  # `predict`'s code path
    assert body["defective"] == expected["defective"]
    assert body["verdict"] == ("defective" if expected["defective"] else "good")
    assert body["defect_area_share"] == pytest.approx(expected["defect_area_share"], abs=1e-6)
    assert (body["width"], body["height"]) == photo.size
    mask = Image.open(io.BytesIO(base64.b64decode(body["mask_png_base64"])))
    overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay_png_base64"])))
    assert mask.size == overlay.size == photo.size and mask.mode == "L"
    assert set(np.unique(np.asarray(mask))) <= {0, 255}
    for box in body["boxes"]:
        x, y, w, h = box
        assert 0 <= x < photo.size[0] and 0 <= y < photo.size[1] and w > 0 and h > 0


def test_operating_point_from_the_run_folder_is_used(run, photos):
    chosen = (run / "operating_point.json").read_bytes()
    save_operating_point(run, OperatingPoint(0.0, 1, 1.0, 1.0, True))  # everything is defect
    try:
        body = post(create_app(run).test_client(), photos["good"]).get_json()
        assert body["threshold"] == 0.0 and body["defective"] and body["defect_area_share"] == 1.0
        assert len(body["boxes"]) == 1
    finally:
        (run / "operating_point.json").write_bytes(chosen)


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
    from werkzeug.serving import make_server
    port = free_port()
    httpd = make_server("127.0.0.1", port, create_app(run), threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    httpd.shutdown()


def test_load_500_requests_from_8_clients_lose_nothing(server, photos):
    """Bounded: 500 requests on 127.0.0.1, 8 at a time, each with a 10 s timeout."""
    import urllib.request
    body, boundary = photos["defective"], "scratchboundary"
    payload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.jpg\"\r\n"
               f"Content-Type: image/jpeg\r\n\r\n").encode() + body + f"\r\n--{boundary}--\r\n".encode()

    def one(_):
        started = time.perf_counter()
        req = urllib.request.Request(f"{server}/api/v1/mask", data=payload, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(req, timeout=10) as response:
            ok = response.status == 200 and "verdict" in json.loads(response.read())
        return ok, time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(500)))
    seconds = time.perf_counter() - started
    latencies = np.array([latency for _, latency in results]) * 1000
    assert all(ok for ok, _ in results) and len(results) == 500
    print(f"\n500 requests, 8 clients: {500 / seconds:.0f} req/s, p50 {np.percentile(latencies, 50):.0f} ms, "
          f"p95 {np.percentile(latencies, 95):.0f} ms")


def chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


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
        shots = ROOT / "data" / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(shots / "app_upload.png"))
    finally:
        driver.quit()


def test_cli_serve_starts_and_answers(run):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "scratch_utils", "serve", "--model", str(run),
                                "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        import urllib.request
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    assert json.loads(r.read())["status"] == "ok"
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("the server did not come up in 60 s")
    finally:
        process.terminate()
        process.wait(timeout=10)
