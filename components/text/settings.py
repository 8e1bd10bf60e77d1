"""Settings of the text LM pipeline's components, declared once (no TensorFlow or TFX import).

`pipeline.profiles` composes them into a `TextProfile`; each component receives its part as a
plain dict (`dataclasses.asdict`) and the component code rebuilds the same class from it
(`components.common.config.settings_from_config`).
"""

from __future__ import annotations

import dataclasses

from components.common.settings import TrainingSettings
from contracts import text_lm


@dataclasses.dataclass(frozen=True)
class TextIngestionSettings:
    """What `TextExampleGen` reads."""

    max_documents: int  # 0: every document of the source


@dataclasses.dataclass(frozen=True)
class TextTransformSettings:
    """`custom_config` of Transform (`components.text.transform.preprocessing_fn`)."""

    vocab_size: int  # including padding (id 0) and [UNK] (id 1), like TextVectorization
    sequence_length: int  # L: windows of L + 1 words give inputs and targets of length L


@dataclasses.dataclass(frozen=True)
class TrainerSettings(TrainingSettings):
    """`custom_config` of the Trainer (`components.text.trainer.run_fn`): model sizes, training
    schedule and sampling options."""

    sequence_length: int
    embed_dim: int
    latent_dim: int
    num_heads: int
    num_layers: int = 1
    batch_size: int = 64
    epochs: int = 1
    steps_per_epoch: int = 0  # 0: one full pass over the training split per epoch
    learning_rate: float = 1e-3
    sample_prompt: str = "this movie"
    sample_temperatures: tuple[float, ...] = (0.2, 0.5, 0.7, 1.0, 1.5)
    sample_max_tokens: int = 50
    max_new_tokens: int = text_lm.LIMITS["max_new_tokens"]  # limit of the `generate` signature
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.precision != "float32":  # the per-epoch samples decode with a float32 cache
            raise ValueError(f"precision {self.precision!r} is not supported by the text LM "
                             "(its cached decoding runs in float32); allowed: float32")


@dataclasses.dataclass(frozen=True)
class TextEvaluatorSettings:
    """Parameters of `components.text.evaluate.TextLmEvaluator` (evaluation and blessing)."""

    perplexity_threshold: float = 1000.0
    baseline_tolerance: float = 0.05  # relative: may be 5% worse than the last blessed model
    max_unigram_ratio: float = 1.0  # perplexity at most this times the unigram baseline's
    batch_size: int = 64  # scoring batch (profiles use the Trainer's)
