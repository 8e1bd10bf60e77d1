"""The serving contract of every model genpipe pushes, in one place and free of TensorFlow.

Exports check their signatures against it when they save; the validator, the client's typed
calls, `genpipe generate`'s defaults and the tests' stand-ins read it. `docs/serving.md`
documents it for users.
"""

from __future__ import annotations

from contracts import deepdream, fast_style, gan, style_transfer, text_lm, vae
from contracts.spec import (
    ANY,
    BYTES_SUFFIX,
    SEED_MAX,
    SIDECAR,
    Contract,
    Signature,
    Tensor,
    read_sidecar,
    write_sidecar,
)

__all__ = [
    "ANY",
    "BYTES_SUFFIX",
    "CONTRACTS",
    "SEED_MAX",
    "SIDECAR",
    "Contract",
    "Signature",
    "Tensor",
    "contract_for",
    "read_sidecar",
    "write_sidecar",
]

CONTRACTS: dict[str, Contract] = {
    module.MODEL: module.CONTRACT
    for module in (text_lm, vae, gan, deepdream, style_transfer, fast_style)
}


def contract_for(model_name: str) -> Contract:
    """The contract of a served model name (`fast_style_<style>` maps to the fast style one)."""
    if model_name in CONTRACTS:
        return CONTRACTS[model_name]
    if model_name.startswith(fast_style.PREFIX) and len(model_name) > len(fast_style.PREFIX):
        return fast_style.CONTRACT
    allowed = [name for name in CONTRACTS if name != fast_style.MODEL]
    raise KeyError(
        f"model {model_name!r} has no serving contract; allowed: {allowed} and "
        f"{fast_style.PREFIX}<style>"
    )
