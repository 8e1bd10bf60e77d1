"""`ContentPhotoGen`: random crops of content photos as a TFX Examples artifact (train/eval).

The fast style network learns from a few dozen crops of photos, so this ingestion is a plain
Python component, not a Beam ExampleGen. The source is `offline` (the bundled skimage photos
and the darknet photos that setup extracted) or a folder of JPEG/PNG images. Each photo is
scaled so its shorter side is `scale_side`, then `crops_per_photo` square crops of `crop_size`
are taken at seeded random positions. Every `EVAL_EVERY`-th crop, starting with the first,
goes to `eval`.

The records are GZIP TFRecords in `Split-<name>/` in the same layout as
`components.images.example_gen` (`image`: raw uint8 bytes, `height`, `width`, `channels`), so
TFX tools and the Trainer read them like any ExampleGen output.
"""

# No `from __future__ import annotations`: the @component decorator reads real annotations.
import os
from collections.abc import Iterator

from tfx import v1 as tfx
from tfx.dsl.io import fileio
from tfx.types import artifact_utils

OFFLINE = "offline"
SOURCE_HELP = ("offline (the bundled skimage photos and the darknet photos) or a folder of "
               "JPEG/PNG photos")
SPLITS = ("train", "eval")
EVAL_EVERY = 8  # crop k goes to eval when k % EVAL_EVERY == 0
RECORD_FILE = "data_tfrecord-00000-of-00001.gz"


def photo_names(source: str) -> list[str]:
    """The photos of `source`: names for `sources.photos.photo`, or image paths of a folder."""
    from sources import photos
    from sources.images import image_files

    if source != OFFLINE:
        return [str(path) for path in image_files(source)]
    darknet = [name for name in photos.DARKNET_PHOTOS
               if (photos.assets_dir() / "photos" / f"{name}.jpg").is_file()]
    return [*photos.SKIMAGE_PHOTOS, *darknet]


def random_crops(image, crop_size: int, count: int, scale_side: int, rng) -> Iterator:
    """`count` square crops of `crop_size` from `image` scaled to shorter side `scale_side`."""
    import numpy as np
    from PIL import Image

    height, width = image.shape[:2]
    scale = scale_side / min(height, width)
    size = (max(crop_size, round(width * scale)), max(crop_size, round(height * scale)))
    scaled = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
    for _ in range(count):
        top = int(rng.integers(0, scaled.shape[0] - crop_size + 1))
        left = int(rng.integers(0, scaled.shape[1] - crop_size + 1))
        yield scaled[top:top + crop_size, left:left + crop_size]


def crop_example(pixels) -> bytes:
    """A serialized tf.Example of uint8 pixels [H, W, 3] (raw bytes + shape)."""
    import numpy as np
    import tensorflow as tf

    def ints(value: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

    height, width, channels = pixels.shape
    raw = np.ascontiguousarray(pixels, np.uint8).tobytes()
    features = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[raw])),
                "height": ints(height), "width": ints(width), "channels": ints(channels)}
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


@tfx.dsl.components.component
def ContentPhotoGen(  # noqa: N802 (TFX component names are classes)
    examples: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Examples],
    source: tfx.dsl.components.Parameter[str],
    crop_size: tfx.dsl.components.Parameter[int],
    crops_per_photo: tfx.dsl.components.Parameter[int],
    scale_side: tfx.dsl.components.Parameter[int],
    seed: tfx.dsl.components.Parameter[int] = 0,
) -> None:
    """Random square crops of the content photos, split train/eval (module docstring)."""
    import numpy as np
    import tensorflow as tf

    from sources import photos

    rng = np.random.default_rng(seed)
    writers = {}
    for split in SPLITS:
        fileio.makedirs(os.path.join(examples.uri, f"Split-{split}"))
        writers[split] = tf.io.TFRecordWriter(
            os.path.join(examples.uri, f"Split-{split}", RECORD_FILE), options="GZIP")
    counts = {"photos_read": 0, "unreadable_photos": 0, "train_examples": 0, "eval_examples": 0}
    index = 0
    for name in photo_names(source):
        try:
            image = photos.photo(name)
        except (OSError, ValueError) as error:
            counts["unreadable_photos"] += 1
            print(f"  skipping unreadable photo {name}: {error}", flush=True)
            continue
        counts["photos_read"] += 1
        for crop in random_crops(image, crop_size, crops_per_photo, scale_side, rng):
            split = "eval" if index % EVAL_EVERY == 0 else "train"
            writers[split].write(crop_example(crop))
            counts[f"{split}_examples"] += 1
            index += 1
    for writer in writers.values():
        writer.close()
    if not counts["train_examples"] or not counts["eval_examples"]:
        raise ValueError(f"--source {source!r} gave {counts['train_examples']} train and "
                         f"{counts['eval_examples']} eval crops from {counts['photos_read']} "
                         f"readable photos; allowed: {SOURCE_HELP} with at least one photo")
    examples.split_names = artifact_utils.encode_split_names(list(SPLITS))
    examples.set_string_custom_property("payload_format", "FORMAT_TF_EXAMPLE")
    examples.set_string_custom_property("source", source)
    examples.set_string_custom_property("image_shape", f"{crop_size}x{crop_size}x3")
    for name, value in counts.items():
        examples.set_int_custom_property(name, value)
    print("  " + ", ".join(f"{name} {value}" for name, value in counts.items()), flush=True)
