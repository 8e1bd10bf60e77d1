"""Image generation speed: DeepDream, Gatys style transfer and the fast style network.

    .venv/bin/python benchmarks/images.py --json out/bench/images.json

Same ImageNet weights (packaged offline copies), same photo, same settings on both sides:
- dream chapter: the chapter's DeepDream on the Keras InceptionV3, a Python loop over octaves
  and steps calling a `tf.function` gradient-ascent step (retraced once per octave size);
- dream export: the exported `dream` signature (every loop in the graph, batch norms folded into
  the convolutions), reloaded from disk; `export_unfolded` is the same without the folding;
  all warm, then the chapter and the export on a photo of a size not seen before;
- step loop: ten steps as the chapter's Python loop, and as a `tf.while_loop` with the step
  inlined or called as its own function, each loop variant loaded `--loads` times;
- gatys chapter / export: seconds per iteration of the chapter's training loop (a
  `tf.function` step on a `tf.Variable`, features of all three images every step) and of the
  exported `transfer` signature (targets computed once, loop in the graph);
- fast forward: the exported `stylize` signature of an (untrained, paper-sized) transformer net
  at the Gatys output size, against 4000 Gatys iterations (the book's run length).
Compared variants run alternately; each figure is the best of `--repeats` warm runs, with
medians beside. Results and how to read them: docs/benchmarks.md, "Images".
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
from serving.servable import load_servable  # noqa: E402
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


def alternating_seconds(runs: dict[str, Callable[[], object]], repeats: int) -> dict:
    """Best and median times of (warm) runs measured alternately, so load hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(timed(run))
    return {name: {"best": min(t), "median": statistics.median(t)} for name, t in times.items()}


def session_signature(export_dir: str, key: str) -> Callable[..., dict]:
    """A signature of an export run as the model server runs it (Session, SignatureDef names)."""
    servable = load_servable(key, 1, export_dir)
    return lambda **inputs: servable.run(key, inputs)


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
    # The chapter runs the Keras InceptionV3 as is; the export folds its batch norms into the
    # convolutions (same function). `export_unfolded` separates that from the loops' effect.
    book = deepdream.build_deepdream(args.weights, fold_batch_norm=False)
    signatures = {}
    for name, fold in (("export", True), ("export_unfolded", False)):
        export_dir = os.path.join(workdir, name)
        module = deepdream.build_deepdream(args.weights, fold_batch_norm=fold)
        deepdream.export_deepdream(export_dir, module=module)
        signatures[name] = session_signature(export_dir, "dream")
    dream = signatures["export"]
    request = {
        "image": tf.constant([tf.io.encode_png(photo).numpy()]),
        **{
            k: tf.constant([v], tf.float32 if isinstance(v, float) else tf.int32)
            for k, v in settings.items()
        },
    }
    chapter = chapter_dream(book, settings)

    start = time.perf_counter()
    chapter_image = chapter(photo)
    chapter_first = time.perf_counter() - start
    start = time.perf_counter()
    export_image = tf.io.decode_png(dream(**request)["image_bytes"][0]).numpy()
    export_first = time.perf_counter() - start
    signatures["export_unfolded"](**request)  # warm-up
    one_step = {**request, "iterations": tf.constant([1])}
    one_step_chapter = chapter_dream(book, {**settings, "iterations": 1})(photo)
    one_step_export = tf.io.decode_png(dream(**one_step)["image_bytes"][0]).numpy()
    warm = alternating_seconds(
        {
            "chapter": lambda: chapter(photo),
            "export": lambda: dream(**request),
            "export_unfolded": lambda: signatures["export_unfolded"](**request),
        },
        args.repeats,
    )
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
        "chapter_s": warm["chapter"]["best"],
        "export_s": warm["export"]["best"],
        "export_unfolded_s": warm["export_unfolded"]["best"],
        "chapter_median_s": warm["chapter"]["median"],
        "export_median_s": warm["export"]["median"],
        "export_unfolded_median_s": warm["export_unfolded"]["median"],
        "export_speedup": warm["chapter"]["best"] / warm["export"]["best"],
        "export_speedup_median": warm["chapter"]["median"] / warm["export"]["median"],
        "export_unfolded_speedup": warm["chapter"]["best"] / warm["export_unfolded"]["best"],
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


def bench_step_loop(args) -> dict:
    """Why the exported step is a called (``_noinline``) function, measured.

    Ten DeepDream steps on one 300x450 image, as: the chapter's Python loop over a compiled step;
    a ``tf.while_loop`` with the step inlined into its body (the export before the change); the
    same loop calling the step as its own function (the export now). Each loop variant is loaded
    ``--loads`` times (a fresh ``tf.function`` each), since the inlined loop's speed was found to
    differ from load to load; all variants are timed alternately.
    """
    module = deepdream.build_deepdream(args.weights)
    image = tf.random.stateless_uniform((1, 300, 450, 3), (0, 0), -1.0, 1.0)
    steps, step_size = 10, tf.constant(20.0)
    any_image = tf.TensorSpec([1, None, None, 3], tf.float32)

    def inlined(image):
        with tf.GradientTape() as tape:
            tape.watch(image)
            loss = module.compute_loss(image)
        return loss, image + step_size * tf.math.l2_normalize(tape.gradient(loss, image))

    def while_loop(step: Callable | None) -> Callable:
        def body(i, image):
            return i + 1, (step(image, step_size) if step else inlined(image))[1]

        def run(image):
            return tf.while_loop(lambda i, _: i < steps, body, (0, image))[1]

        return tf.function(run, input_signature=[any_image])

    chapter_step = tf.function(inlined)

    def chapter_loop(image):
        for _ in range(steps):
            image = chapter_step(image)[1]
        return image

    tf.get_logger().setLevel("ERROR")  # each load is a new tf.function on purpose (retracing)
    variants = {"chapter_loop": chapter_loop}
    for load in range(args.loads):
        variants[f"inlined_{load}"] = while_loop(None)
        variants[f"called_{load}"] = while_loop(module.gradient_ascent_step)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for run in variants.values():
        np.asarray(run(image))  # trace and warm up
    for _ in range(args.repeats):
        for name, run in variants.items():
            times[name].append(timed(lambda run=run: np.asarray(run(image))))
    best = {name: min(t) for name, t in times.items()}
    return {
        "steps": steps,
        "size": [300, 450],
        "best_s": best,
        "median_s": {name: statistics.median(t) for name, t in times.items()},
        "inlined_slowest_vs_chapter": max(v for k, v in best.items() if k.startswith("inlined"))
        / best["chapter_loop"],
        "called_slowest_vs_chapter": max(v for k, v in best.items() if k.startswith("called"))
        / best["chapter_loop"],
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
    transfer = session_signature(export_dir, "transfer")

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
    pair = alternating_seconds(
        {"chapter": chapter_loop, "export": lambda: transfer(**many)}, args.repeats
    )
    setup_s = seconds(lambda: transfer(**one), args.repeats)  # decode, targets, 1 step, encode
    chapter_per_iteration = pair["chapter"]["best"] / n
    export_per_iteration = (pair["export"]["best"] - setup_s) / n

    transformer = fast_style.build_transformer_net()  # paper-sized; weights don't change speed
    fast_dir = os.path.join(workdir, "fast_style")
    fast_style.export_fast_style(transformer, fast_dir)
    stylize = session_signature(fast_dir, "stylize")
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
    parser.add_argument("--loads", type=int, default=4, help="loads per step-loop variant")
    parser.add_argument("--only", choices=["deepdream", "step-loop", "style"], help="run one part")
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
        if args.only in (None, "step-loop"):
            results["step_loop"] = bench_step_loop(args)
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
