"""Settings every Trainer takes beside its model's own (no TensorFlow or TFX import).

Each Trainer's settings class (`components/text/settings.py`, `components/images/settings.py`)
derives from `TrainingSettings`, so the option is declared once and travels in the same
`custom_config`. `components.common.distribution` applies it.
"""

from __future__ import annotations

import dataclasses

# "float32": every layer computes in float32. "mixed": float16 compute on GPUs (mixed_float16,
# with loss scaling), bfloat16 on CPUs (mixed_bfloat16: float16 on a CPU is emulated and slow);
# variables, losses and the model outputs stay float32 either way, and exports are float32.
PRECISIONS = ("float32", "mixed")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainingSettings:
    """How a Trainer computes: `precision` is one of PRECISIONS."""

    precision: str = "float32"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is unknown; allowed: "
                             f"{', '.join(PRECISIONS)}")
