"""Screenshots of what a user sees, for the docs: TensorBoard on the quickstart's logs, and the audit report.

Not part of CI (it needs Debian's ``chromium`` and a few minutes). Run it from the repository root after the
quickstart, look at every image, and commit them:

    .venv/bin/python examples/lightning_quickstart.py            # writes ntk_runs/
    .venv/bin/python docs/screenshots.py                          # writes docs/images/screenshot_*.png

It starts TensorBoard on ``ntk_runs`` (port 6123, localhost only), loads each dashboard in headless Chromium with
a virtual-time budget so the charts finish drawing, runs ``ntkmonitor audit`` on the quickstart's checkpoints into
a temporary folder, and screenshots its report. Every page is read locally: nothing is fetched from the network.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"
PORT = 6123

VIEWS = {
    "screenshot_tensorboard_timeseries.png": ("#timeseries", (1400, 1500)),
    "screenshot_tensorboard_custom_scalars.png": ("#custom_scalars", (1400, 1500)),
}


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("docs/screenshots.py: no chromium found; install Debian's chromium package")


def shoot(url: str, out: Path, size: tuple[int, int], wait_ms: int = 20000) -> None:
    """Load ``url`` in headless Chromium and write a PNG screenshot of ``size`` to ``out``."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                _chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--hide-scrollbars",
                f"--window-size={size[0]},{size[1]}",
                f"--virtual-time-budget={wait_ms}",
                f"--screenshot={out}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )
    print(f"wrote {out.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="ntk_runs", help="the quickstart's TensorBoard logs (default ntk_runs)")
    args = parser.parse_args(argv)
    logdir = Path(args.logdir)
    if not (logdir / "init.pt").is_file():
        sys.exit(f"docs/screenshots.py: {logdir} has no quickstart run; run examples/lightning_quickstart.py first")
    IMAGES.mkdir(parents=True, exist_ok=True)
    board = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(60):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/data/runs", timeout=1)  # noqa: S310 - localhost
                break
            except OSError:
                time.sleep(1)
        for name, (fragment, size) in VIEWS.items():
            shoot(f"http://127.0.0.1:{PORT}/{fragment}", IMAGES / name, size)
    finally:
        board.terminate()
        board.wait(timeout=30)
    with tempfile.TemporaryDirectory() as tmp:
        audit = [
            sys.executable,
            "-m",
            "ntkmonitor",
            "audit",
            "--model",
            "examples/lightning_quickstart.py:make_net",
            "--checkpoint",
            str(logdir / "init.pt"),
            "--checkpoint",
            str(logdir / "final.pt"),
            "--data",
            str(logdir / "data.pt"),
            "--out",
            str(Path(tmp) / "audit"),
        ]
        subprocess.run(audit, check=True, cwd=ROOT, capture_output=True)
        shoot((Path(tmp) / "audit" / "report.html").as_uri(), IMAGES / "audit_report.png", (1280, 1400), 5000)


if __name__ == "__main__":
    main()
