"""Ingestion memory and speed: the text and image ExampleGens on generated sources of two sizes.

    .venv/bin/python benchmarks/ingestion.py --json out/bench/ingestion.json
    .venv/bin/python benchmarks/ingestion.py --text-sizes 10000 --image-sizes 5000   # quicker

Generates review files (about 1 KB of words each, 1% exact duplicates) and PNG images (48x40
RGB, made 32x32) under `--workdir` (kept between runs, never in the repo), then runs each
ExampleGen executor on each size in a fresh process (the in-memory DirectRunner runs in that
process, so its peak resident set is the ingestion's). Reported per run: peak RSS, RSS after
the imports (before ingesting), wall seconds and CPU seconds of the executor, documents (or
images) per wall second and per CPU second (= per core). Results: docs/benchmarks.md, "Ingestion".
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TEXT_SIZES = (10_000, 100_000)
IMAGE_SIZES = (5_000, 50_000)
IMAGE_SOURCE_SHAPE = (48, 40, 3)  # height, width, channels of a generated PNG
IMAGE_TARGET_SHAPE = (32, 32, 3)
WORDS_PER_REVIEW = 180
DUPLICATE_EVERY = 100  # every 100th review repeats an earlier one
MAX_GROWTH = 1.5  # the target: peak RSS at 10x the data at most 1.5x


def make_reviews(folder: Path, count: int) -> None:
    """`count` review files of random words (the same files for the same count)."""
    import numpy as np

    if (folder / ".complete").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(count)
    vocabulary = np.array([f"word{index}" for index in range(5_000)])
    for index in range(count):
        if index % DUPLICATE_EVERY == DUPLICATE_EVERY - 1:
            text = (folder / f"{index - 1:07d}.txt").read_text()
        else:
            text = " ".join(rng.choice(vocabulary, WORDS_PER_REVIEW))
        (folder / f"{index:07d}.txt").write_text(text)
    (folder / ".complete").write_text(str(count))


def make_images(folder: Path, count: int) -> None:
    """`count` PNG files of smooth random colours (the same files for the same count)."""
    import numpy as np
    from PIL import Image

    if (folder / ".complete").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(count)
    height, width, _ = IMAGE_SOURCE_SHAPE
    ramp = np.linspace(0, 1, width)[None, :, None] * np.linspace(0, 1, height)[:, None, None]
    for index in range(count):
        colour = rng.integers(0, 256, 3)
        pixels = (ramp * colour + rng.integers(0, 32, IMAGE_SOURCE_SHAPE)).clip(0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{index:07d}.png")
    (folder / ".complete").write_text(str(count))


def rss_mb() -> float:
    """The current resident set of this process, MB (Linux /proc)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_one(kind: str, folder: str) -> dict:
    """Runs one ExampleGen executor on `folder` in this process; its measurements."""
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    from pipeline.runner import DEFAULT_BEAM_ARGS

    if kind == "text":
        from components.text.example_gen import Executor, TextExampleGen

        component, read = TextExampleGen(source=folder), "documents_read"
    else:
        from components.images.example_gen import Executor, ImageExampleGen

        component = ImageExampleGen(dataset=folder, image_shape=IMAGE_TARGET_SHAPE)
        read = "images_read"
    properties = {
        key: proto_utils.proto_to_json(value) if hasattr(value, "DESCRIPTOR") else value
        for key, value in component.exec_properties.items()
    }
    with tempfile.TemporaryDirectory(prefix="genpipe-ingestion-") as out:
        examples = standard_artifacts.Examples()
        examples.uri = os.path.join(out, "examples")
        executor = Executor(BaseBeamExecutor.Context(
            beam_pipeline_args=list(DEFAULT_BEAM_ARGS), tmp_dir=os.path.join(out, "tmp")))
        rss_before = rss_mb()
        cpu, wall = time.process_time(), time.perf_counter()
        executor.Do({}, {"examples": [examples]}, properties)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    count = examples.get_int_custom_property(read)
    return {
        "kind": kind,
        "files": count,
        "examples_written": examples.get_int_custom_property("examples_written"),
        "rss_after_imports_mb": round(rss_before, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "per_wall_s": round(count / wall, 1),
        "per_cpu_s": round(count / cpu, 1),
    }


def measure(kind: str, folder: Path) -> dict:
    """`run_one` in a fresh Python process, so that its peak RSS is this run's alone."""
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--run", kind, str(folder)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text-sizes", type=int, nargs="*", default=list(TEXT_SIZES))
    parser.add_argument("--image-sizes", type=int, nargs="*", default=list(IMAGE_SIZES))
    parser.add_argument("--workdir", default=os.path.join("out", "bench", "ingestion-data"),
                        help="where the generated sources are kept between runs (default: "
                        "out/bench/ingestion-data, ignored by git)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--run", nargs=2, metavar=("KIND", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_one(*args.run)))
        return

    workdir = Path(args.workdir)
    runs = []
    for kind, sizes, make in (("text", args.text_sizes, make_reviews),
                              ("images", args.image_sizes, make_images)):
        for size in sizes:
            folder = workdir / f"{kind}-{size}"
            started = time.perf_counter()
            make(folder, size)
            print(f"{kind} {size}: data ready in {time.perf_counter() - started:.0f} s",
                  flush=True)
            runs.append(measure(kind, folder))
            print("  " + json.dumps(runs[-1]), flush=True)
    growth = {}
    for kind in ("text", "images"):
        mine = sorted((run for run in runs if run["kind"] == kind), key=lambda run: run["files"])
        if len(mine) >= 2:
            growth[kind] = {
                "data_ratio": round(mine[-1]["files"] / mine[0]["files"], 1),
                "peak_rss_ratio": round(mine[-1]["peak_rss_mb"] / mine[0]["peak_rss_mb"], 2),
                "target_max": MAX_GROWTH,
            }
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
                    "platform": platform.platform(), "python": platform.python_version()},
        "runs": runs,
        "growth": growth,
    }
    print(json.dumps(growth, indent=2))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
