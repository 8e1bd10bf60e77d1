"""`genpipe report` on the session's smoke roots, rendered in headless Chromium: the page loads
with every image present and decoded; the screenshot is saved as out/report_screenshot.png."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fixtures_dream_style import run_cli

from pipeline.report import facts, page
from pipeline.report.samples import Sample
from pipeline.status import VersionStatus

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "out" / "report_screenshot.png"
# Appended to a copy of the page (never to the report): counts the images that decoded.
PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const decoded = images.filter((image) => image.complete && image.naturalWidth > 0);
  document.body.setAttribute("data-images", decoded.length + "/" + images.length);
});
</script></body>"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (scripts/setup_extras.sh installs it)")
        pytest.skip("chromium is not installed (scripts/setup_extras.sh installs it; CI fails)")
    return found


def _headless(chromium: str, *args: str) -> str:
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu",
               "--virtual-time-budget=10000", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _images_decoded(chromium: str, report: Path) -> tuple[int, int]:
    probe = report / "probe.html"
    probe.write_text((report / page.PAGE).read_text().replace("</body>", PROBE))
    dom = _headless(chromium, "--dump-dom", probe.as_uri())
    match = re.search(r'data-images="(\d+)/(\d+)"', dom)
    assert match, dom[:2000]
    return int(match.group(1)), int(match.group(2))


@pytest.fixture(scope="module")
def reports(text_smoke_run, vae_smoke_run, gan_smoke_run, dream_style_smoke_root, tmp_path_factory):
    """`genpipe report` of each smoke root (no server: the samples the pipelines wrote)."""
    written = {}
    for name, root in (("text", text_smoke_run.root), ("images", vae_smoke_run.root),
                       ("dream_style", dream_style_smoke_root.root)):
        out = tmp_path_factory.mktemp(f"report_{name}")
        code, text = run_cli("report", "--root", str(root), "--out", str(out))
        assert code == 0, text
        written[name] = out
    return written


def test_the_report_shows_every_model_with_versions_metrics_samples_and_gates(reports):
    html = {name: (out / page.PAGE).read_text() for name, out in reports.items()}
    for name, models in (("text", ["text_lm"]), ("images", ["vae", "gan"]),
                         ("dream_style", ["deepdream", "style_transfer"])):
        for model in models:
            assert f'id="model-{model}"' in html[name]
    assert "perplexity" in html["text"] and "temperature_" in html["text"]  # text samples
    assert "img-text_lm-metrics.png" in html["text"]
    assert "negative_elbo" in html["images"] and "kid" in html["images"]
    assert "serving validation" in html["images"] and "evaluation" in html["images"]
    assert "data (anomalies and drift)" in html["images"] and "no anomalies" in html["images"]
    assert "Examples #" in html["images"] and "from mnist" in html["images"]  # lineage
    assert "no training data (exported from weights)" in html["dream_style"]
    for out in reports.values():  # every image the page names is beside it, and no other
        named = set(re.findall(r'src="([^"]+)"', (out / page.PAGE).read_text()))
        assert named == {p.name for p in out.glob("*.png")} and named


def test_every_image_loads_in_headless_chromium(reports):
    chromium = _chromium()
    for name, out in reports.items():
        decoded, total = _images_decoded(chromium, out)
        assert total > 0 and decoded == total, f"{name}: {decoded} of {total} images decoded"
    SCREENSHOT.parent.mkdir(exist_ok=True)
    _headless(chromium, f"--screenshot={SCREENSHOT}", "--window-size=1280,3000",
              (reports["images"] / page.PAGE).as_uri())
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_text_from_a_root_is_escaped(tmp_path):
    hostile = "<script>alert(1)</script>"
    version = VersionStatus("vae", 7, on_disk=True, blessing=hostile, metrics={"loss": 1.5},
                            pushed_at="2026-01-01 00:00:00Z")
    found = facts.Facts(str(tmp_path), [version], [], [], [], [], {})
    html, images = page.render(found, [Sample("vae", 7, hostile, text=hostile)], None)
    assert hostile not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert list(images) == ["img-vae-metrics.png"]
    written = page.write(tmp_path / "report", html, images)
    (tmp_path / "report" / "img-stale.png").write_bytes(b"old")
    page.write(tmp_path / "report", html, images)
    assert sorted(p.name for p in written.parent.iterdir()) == ["img-vae-metrics.png", "index.html"]
