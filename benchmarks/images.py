"""Image generation speed: DeepDream, Gatys style transfer and the fast style network.

    .venv/bin/python benchmarks/images.py --json out/bench/images.json

Same ImageNet weights (packaged offline copies), same photo, same settings on both sides:
- dream_chapter: the chapter's DeepDream, a Python loop over octaves and steps calling a
  `tf.function` gradient-ascent step (retraced once per octave size, as in the book);
- dream_export: the exported `dream` signature (every loop in the graph), reloaded from disk;
  both warm, and both on a photo of a size not seen before (the chapter's step retraces);
- gatys_chapter / gatys_export: seconds per iteration of the chapter's training loop (a
  `tf.function` step on a `tf.Variable`, features of all three images every step) and of the
  exported `transfer` signature (targets computed once, loop in the graph);
- fast_forward: the exported `stylize` signature of an (untrained, paper-sized) transformer net
  at the Gatys output size, against 4000 Gatys iterations (the book's run length).
Paired variants run alternately; each figure is the best of `--repeats` warm runs, with medians
beside the DeepDream pair. Results and how to read them: docs/benchmarks.md, "Images".
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from models import deepdream, fast_style, pretrained, style_transfer  # noqa: E402
from sources import photos  # noqa: E402

BOOK_GATYS_ITERATIONS = 4000


def seconds(run: Callable[[], object], repeats: int) -> float:
    """Best wall time of `repeats` runs after one warm-up run.

    The machine is shared, so other jobs only ever add time: the minimum is the least noisy
    estimate (as the `timeit` docs advise); medians are reported beside it where it matters.
    """
    run()
    return min(timed(run) for _ in range(repeats))


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def paired_seconds(
    run_a: Callable[[], object], run_b: Callable[[], object], repeats: int
) -> dict[str, float]:
    """Best and median times of two (warm) runs measured alternately, so load hits both alike."""
    times_a, times_b = [], []
    for _ in range(repeats):
        times_a.append(timed(run_a))
        times_b.append(timed(run_b))
    return {
        "a": min(times_a),
        "b": min(times_b),
        "a_median": statistics.median(times_a),
        "b_median": statistics.median(times_b),
    }


def resized(image: np.ndarray, height: int) -> np.ndarray:
    width = round(image.shape[1] * height / image.shape[0])
    return tf.cast(tf.round(tf.image.resize(image, (height, width), antialias=True)), tf.uint8)


# ----------------------------------------------------------------------------- DeepDream


def chapter_dream(
    module: deepdream.DeepDream, settings: dict
) -> Callable[[np.ndarray], np.ndarray]:
    """The book's listing: eager octave loop, Python step loop, compiled step."""

    @tf.function
    def gradient_ascent_step(image, learning_rate):
        with tf.GradientTape() as tape:
            tape.watch(image)
            loss = module.compute_loss(image)
        grads = tf.math.l2_normalize(tape.gradient(loss, image))
        return loss, image + learning_rate * grads

    def gradient_ascent_loop(image, iterations, learning_rate, max_loss):
        for _ in range(iterations):
            loss, image = gradient_ascent_step(image, learning_rate)
            if max_loss is not None and loss > max_loss:
                break
        return image

    def run(photo: np.ndarray) -> np.ndarray:
        original = pretrained.preprocess_inception(photo)[tf.newaxis]
        original_shape = photo.shape[:2]
        shapes = [original_shape] + [
            tuple(int(d / settings["octave_scale"] ** i) for d in original_shape)
            for i in range(1, settings["octaves"])
        ]
        shapes = shapes[::-1]
        shrunk_original = tf.image.resize(original, shapes[0])
        image = tf.identity(original)
        for shape in shapes:
            image = tf.image.resize(image, shape)
            image = gradient_ascent_loop(
                image, settings["iterations"], settings["step"], settings["max_loss"]
            )
            upscaled = tf.image.resize(shrunk_original, shape)
            same_size = tf.image.resize(original, shape)
            image += same_size - upscaled
            shrunk_original = tf.image.resize(original, shape)
        return tf.cast(tf.round(pretrained.deprocess_inception(image[0])), tf.uint8).numpy()

    return run


def bench_dream(args, workdir: str) -> dict:
    settings = {
        "iterations": args.dream_iterations,
        "octaves": 3,
        "octave_scale": 1.4,
        "step": 20.0,
        "max_loss": 15.0,
    }
    photo = resized(photos.photo("coffee"), args.dream_height).numpy()
    module = deepdream.build_deepdream(args.weights)
    export_dir = os.path.join(workdir, "deepdream")
    deepdream.export_deepdream(export_dir, module=module)
    dream = tf.saved_model.load(export_dir).signatures["dream"]
    request = {
        "image": tf.constant([tf.io.encode_png(photo).numpy()]),
        **{
            k: tf.constant([v], tf.float32 if isinstance(v, float) else tf.int32)
            for k, v in settings.items()
        },
    }
    chapter = chapter_dream(module, settings)

    start = time.perf_counter()
    chapter_image = chapter(photo)
    chapter_first = time.perf_counter() - start
    start = time.perf_counter()
    export_image = tf.io.decode_png(dream(**request)["image"][0]).numpy()
    export_first = time.perf_counter() - start
    one_step = {**request, "iterations": tf.constant([1])}
    one_step_chapter = chapter_dream(module, {**settings, "iterations": 1})(photo)
    one_step_export = tf.io.decode_png(dream(**one_step)["image"][0]).numpy()
    pair = paired_seconds(lambda: chapter(photo), lambda: dream(**request), args.repeats)
    # A server sees new sizes all the time: the chapter's step retraces for each new octave size.
    new_photo = resized(photos.photo("coffee"), args.dream_height + 8).numpy()
    new_request = {**request, "image": tf.constant([tf.io.encode_png(new_photo).numpy()])}
    chapter_new_size = timed(lambda: chapter(new_photo))
    export_new_size = timed(lambda: dream(**new_request))
    return {
        "size": list(photo.shape[:2]),
        "settings": settings,
        "chapter_first_call_s": chapter_first,
        "export_first_call_s": export_first,
        "chapter_s": pair["a"],
        "export_s": pair["b"],
        "chapter_median_s": pair["a_median"],
        "export_median_s": pair["b_median"],
        "export_speedup": pair["a"] / pair["b"],
        "chapter_new_size_s": chapter_new_size,
        "export_new_size_s": export_new_size,
        "export_speedup_new_size": chapter_new_size / export_new_size,
        # Gradient ascent is chaotic (a 1e-5 input change grows to ~13/255 in 10 steps), so the
        # two agree to rounding after one step per octave and drift apart afterwards.
        "mean_abs_pixel_difference": float(
            np.abs(chapter_image.astype(int) - export_image.astype(int)).mean()
        ),
        "mean_abs_pixel_difference_one_step_per_octave": float(
            np.abs(one_step_chapter.astype(int) - one_step_export.astype(int)).mean()
        ),
    }


# ----------------------------------------------------------------------------- Gatys


def chapter_gatys_step(module: style_transfer.StyleTransfer, content, style) -> Callable:
    """The book's `compute_loss_and_grads` + SGD step on a `tf.Variable` (3 images per step)."""
    base = pretrained.preprocess_vgg(tf.cast(content, tf.float32))[tf.newaxis]
    reference = pretrained.preprocess_vgg(tf.cast(style, tf.float32))[tf.newaxis]
    combination = tf.Variable(base)
    optimizer = keras.optimizers.SGD(style_transfer.LEARNING_RATE)
    weights = style_transfer.CHAPTER_WEIGHTS
    size = float(content.shape[0] * content.shape[1])

    def compute_loss(combination_image):
        features = module.extractor(tf.concat([base, reference, combination_image], 0))
        layer = features[module.content_layer]
        loss = weights["content_weight"] * style_transfer.content_loss(layer[0], layer[2])
        for name in module.style_layers:
            layer = features[name]
            gram = style_transfer.gram_matrix(layer[1])
            loss += (weights["style_weight"] / len(module.style_layers)) * (
                style_transfer.style_loss(gram, layer[2], size)
            )
        return loss + weights["tv_weight"] * style_transfer.total_variation_loss(combination_image)

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            loss = compute_loss(combination)
        grads = tape.gradient(loss, combination)
        optimizer.apply_gradients([(grads, combination)])
        return loss

    return train_step


def bench_gatys_and_fast(args, workdir: str) -> dict:
    content = resized(photos.photo("chelsea"), args.gatys_height)
    style = tf.cast(tf.image.resize(photos.painting("starry_night"), content.shape[:2]), tf.uint8)
    module = style_transfer.build_style_transfer(args.weights, max_height=args.gatys_height)
    export_dir = os.path.join(workdir, "style_transfer")
    style_transfer.export_style_transfer(export_dir, module=module)
    transfer = tf.saved_model.load(export_dir).signatures["transfer"]

    def request(iterations: int) -> dict:
        return {
            "content": tf.constant([tf.io.encode_png(content).numpy()]),
            "style": tf.constant([tf.io.encode_png(style).numpy()]),
            "iterations": tf.constant([iterations]),
            "height": tf.constant([args.gatys_height]),
            **{k: tf.constant([v]) for k, v in style_transfer.CHAPTER_WEIGHTS.items()},
        }

    n = args.gatys_iterations
    one, many = request(1), request(n + 1)
    step = chapter_gatys_step(module, content, style)

    def chapter_loop():
        for _ in range(n):
            step()

    chapter_loop()  # warm-up: traces the step
    transfer(**many)
    transfer(**one)
    pair = paired_seconds(chapter_loop, lambda: transfer(**many), args.repeats)
    setup_s = seconds(lambda: transfer(**one), args.repeats)  # decode, targets, 1 step, encode
    chapter_per_iteration = pair["a"] / n
    export_per_iteration = (pair["b"] - setup_s) / n

    transformer = fast_style.build_transformer_net()  # paper-sized; weights don't change speed
    fast_dir = os.path.join(workdir, "fast_style")
    fast_style.export_fast_style(transformer, fast_dir)
    stylize = tf.saved_model.load(fast_dir).signatures["stylize"]
    image = tf.constant([tf.io.encode_png(content).numpy()])
    forward = seconds(lambda: stylize(image=image), max(args.repeats, 5))
    book_run = BOOK_GATYS_ITERATIONS * export_per_iteration
    return {
        "size": list(content.shape[:2]),
        "gatys_chapter_s_per_iteration": chapter_per_iteration,
        "gatys_export_s_per_iteration": export_per_iteration,
        "gatys_export_iterations_per_s": 1.0 / export_per_iteration,
        "gatys_export_speedup": chapter_per_iteration / export_per_iteration,
        "fast_forward_s": forward,
        "gatys_4000_iterations_s": book_run,
        "fast_vs_gatys_4000": book_run / forward,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--weights", default="packaged", help="imagenet | packaged | path")
    parser.add_argument(
        "--dream-height",
        type=int,
        default=300,
        help=">= 273 keeps 3 octaves above the 139 px floor",
    )
    parser.add_argument("--dream-iterations", type=int, default=10, help="steps per octave")
    parser.add_argument("--gatys-height", type=int, default=128)
    parser.add_argument("--gatys-iterations", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["deepdream", "style"], help="run one part")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as workdir:
        results = {
            "date": datetime.date.today().isoformat(),
            "command": "benchmarks/images.py "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, TF {tf.__version__}",
        }
        if args.only in (None, "deepdream"):
            results["deepdream"] = bench_dream(args, workdir)
        if args.only in (None, "style"):
            results["style"] = bench_gatys_and_fast(args, workdir)
    print(json.dumps(results, indent=2))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
