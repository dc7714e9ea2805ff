"""Render a ``report.html`` in headless Chromium and save a PNG, so the page is checked as a person sees it.

    python benchmarks/report_screenshot.py --report RUN/report.html --out report.png
    python benchmarks/report_screenshot.py --make cross-validate --out cv_report.png   # a fresh tiny run first

``--make cross-validate|train|explain`` first writes a small synthetic run into ``--work DIR`` (a temporary
folder by default) with the flags a user would type. Chromium comes from Debian (``apt-get install chromium``);
without it the script says so in one line and exits 2. The browser runs with networking refused
(``--proxy-server`` to a closed port), so a page that needed the network would show the gap.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def screenshot(report: Path, out: Path, width: int = 1280, height: int = 5000, browser: str | None = None) -> Path:
    """Save a ``width`` x ``height`` PNG of ``report`` as headless Chromium draws it."""
    browser = browser or find_browser()
    if browser is None:
        raise SystemExit("report_screenshot: needs headless Chromium (apt-get install chromium)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                   "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>", f"--user-data-dir={profile}",
                   f"--window-size={width},{height}", f"--screenshot={out.resolve()}",
                   report.resolve().as_uri()]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not out.is_file():
        raise SystemExit(f"report_screenshot: chromium failed ({done.returncode}): {done.stderr.strip()[-300:]}")
    return out


def make_run(kind: str, work: Path) -> Path:
    """A small synthetic run of ``aam <kind>`` in ``work``; returns its report."""
    from click.testing import CliRunner

    from aam.cli import cli
    from aam.data.synthetic import write_synthetic_dataset

    paths = write_synthetic_dataset(work, n_samples=120, n_asvs=60, seed=0)
    common = ["--table", str(paths["table"]), "--metadata", str(paths["metadata"]), "--seed", "0", "--quiet"]

    def aam(*args: str) -> None:
        result = CliRunner().invoke(cli, list(args))
        if result.exit_code != 0:
            raise SystemExit(f"report_screenshot: aam {args[0]} failed: {result.output.strip()[-300:]}")

    if kind == "cross-validate":
        aam("cross-validate", *common, "--metadata-column", "target", "--model-type", "sequence-groups",
            "--n-folds", "5", "--output-dir", str(work / "cv"))
        return work / "cv" / "report.html"
    aam("train", *common, "--metadata-column", "target", "--preset", "small-data", "--epochs", "12",
        "--output-dir", str(work / "train"), "--device", "cpu")
    if kind == "train":
        return work / "train" / "report.html"
    aam("explain", "--model", str(work / "train" / "checkpoints" / "best_model.pt"), "--table", str(paths["table"]),
        "--output-dir", str(work / "explain"), "--device", "cpu", "--quiet")
    return work / "explain" / "report.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--report", type=Path, help="report.html to render")
    source.add_argument("--make", choices=["cross-validate", "train", "explain"], help="make a tiny run first")
    parser.add_argument("--work", type=Path, default=None, help="folder for --make (default: a temporary one)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=5000)
    args = parser.parse_args(argv)
    if find_browser() is None:
        print("report_screenshot: needs headless Chromium (apt-get install chromium)", file=sys.stderr)
        return 2
    if args.report is not None:
        report = args.report
    else:
        work = args.work or Path(tempfile.mkdtemp(prefix="aam_report_"))
        report = make_run(args.make, work)
    if not report.is_file():
        print(f"report_screenshot: {report}: no such report", file=sys.stderr)
        return 2
    print(screenshot(report, args.out, args.width, args.height))
    return 0


if __name__ == "__main__":
    sys.exit(main())
