"""The serving contract's readers without a server: the client's request columns, the package
boundary between client and server, and docs/serving.md against `contracts` (no drift)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from client.inputs import out_of_range, signature_inputs
from contracts import ANY, CONTRACTS, SEED_MAX, Contract, Tensor, text_lm, vae

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "serving.md"


# -- the client's request columns ------------------------------------------------------------


def test_signature_inputs_fill_defaults_dtypes_and_the_batch():
    columns = signature_inputs(text_lm.GENERATE, {"prompt": ["a", "b"], "seed": [3, 4]})
    assert list(columns) == [t.name for t in text_lm.GENERATE.inputs]
    for tensor in text_lm.GENERATE.inputs:
        assert columns[tensor.name].dtype == (object if tensor.dtype == "string" else tensor.dtype)
        assert columns[tensor.name].shape == (2,)
    assert columns["prompt"].tolist() == [b"a", b"b"] and columns["seed"].tolist() == [3, 4]
    for name, default in text_lm.GENERATE.defaults().items():
        if name != "seed":
            assert columns[name].tolist() == [default] * 2
    grid = signature_inputs(vae.LATENT_GRID, {"extent": 2.0})
    assert grid["n"].tolist() == [vae.LATENT_GRID.input("n").default] and grid["extent"] == 2.0


def test_signature_inputs_refuse_unknown_and_missing_inputs():
    with pytest.raises(TypeError, match=r"no inputs \['temp'\]"):
        signature_inputs(text_lm.GENERATE, {"prompt": "a", "temp": 1.0})
    with pytest.raises(TypeError, match="generate needs 'prompt'"):
        signature_inputs(text_lm.GENERATE, {"temperature": 1.0})


def test_only_plain_number_bounds_are_checked_by_the_client():
    top_p, temperature = text_lm.GENERATE.input("top_p"), text_lm.GENERATE.input("temperature")
    assert out_of_range(top_p, 0.0) == "must be in (0, 1]; got 0.0"
    assert out_of_range(top_p, 1.0) is None
    assert out_of_range(temperature, -0.5) == "must be in [0, max_temperature]; got -0.5"
    assert out_of_range(temperature, 1e9) is None  # max_temperature is fixed at export
    strength = vae.EDIT.input("strength")  # both bounds are limits: nothing to check here
    assert out_of_range(strength, -1e9) is None
    seed = text_lm.GENERATE.input("seed")
    assert out_of_range(seed, SEED_MAX) is None
    assert out_of_range(seed, -1) == f"must be in [0, {SEED_MAX}]; got -1"
    assert out_of_range(vae.EDIT.input("from_label"), -1) == "must be in [0, inf); got -1"


# -- client and server are separate packages -------------------------------------------------


def _module_path(name: str) -> Path | None:
    """The file of a first-party module or package, None for anything else."""
    base = REPO.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported_names(path: Path, module: str) -> set[str]:
    """Every module an `import` or `from ... import` anywhere in the file may load (function
    bodies included: a lazy import is an import too), with the packages above each."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
            source = ".".join(part for part in (base, node.module or "") if part)
            names |= {source} | {f"{source}.{alias.name}" for alias in node.names}
    return {".".join(name.split(".")[:end]) for name in names
            for end in range(1, name.count(".") + 2)}


def reachable(package: str) -> set[str]:
    """The first-party modules importing every module of `package` can load, transitively
    (read from the source: no TensorFlow start-up, and lazy imports count)."""
    todo = [".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            for path in (REPO / package).rglob("*.py") if path.name != "__main__.py"]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        path = _module_path(module)
        if module in seen or path is None:
            continue
        seen.add(module)
        todo.extend(_imported_names(path, module) - seen)
    return seen


def _of(package: str, modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m == package or m.startswith(package + "."))


def test_the_client_does_not_import_the_server():
    modules = reachable("client")
    assert _of("client.model_client", modules)  # the walk found the client's own modules
    assert _of("serving", modules) == []


def test_the_server_does_not_import_the_client():
    modules = reachable("serving")
    assert _of("serving.server", modules)
    assert _of("client", modules) == []


def test_contracts_and_the_generate_command_line_load_without_tensorflow():
    code = "import sys, client.cli, contracts; print('tensorflow' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip() == "False", result.stderr


# -- docs/serving.md documents every contract ------------------------------------------------


def shape_text(tensor: Tensor) -> str:
    """B is the batch; ? a dimension of any size."""
    sizes = ["B"] + ["?" if size == ANY else str(size) for size in tensor.shape[1:]]
    return f"[{', '.join(sizes)}]"


def default_text(tensor: Tensor) -> str:
    if tensor.default is None:
        return "required"
    return f"{tensor.default:g}" if isinstance(tensor.default, float) else str(tensor.default)


def input_row(tensor: Tensor) -> str:
    """The start of an input's row in the docs' tables (the meaning column follows)."""
    return (
        f"| `{tensor.name}` | {tensor.dtype} | {shape_text(tensor)} | {default_text(tensor)} "
        f"| {tensor.range_text()} |"
    )


def output_row(tensor: Tensor) -> str:
    return f"| `{tensor.name}` | {tensor.dtype} | {shape_text(tensor)} |"


def model_section(contract: Contract) -> str:
    """The docs' section of a model: its `### \\`model\\`` heading to the next ## or ###."""
    text = DOCS.read_text()
    match = re.search(rf"^### `{re.escape(contract.model)}`.*?(?=^##? |\Z)", text, re.M | re.S)
    assert match, f"docs/serving.md has no section ### `{contract.model}`"
    return match.group(0)


@pytest.mark.parametrize("contract", list(CONTRACTS.values()), ids=list(CONTRACTS))
def test_docs_document_every_signature_input_output_and_limit(contract):
    section = model_section(contract)
    for key in contract.signature_keys():
        assert f"`{key}`" in section, key
    for signature in contract.signatures:
        for tensor in signature.inputs:
            assert input_row(tensor) in section, f"{signature.name}: {input_row(tensor)}"
        for tensor in signature.outputs:
            assert output_row(tensor) in section, f"{signature.name}: {output_row(tensor)}"
    for limit in contract.limits:
        assert f"`{limit}`" in section, limit


def test_nothing_points_to_documents_outside_the_repo():
    """The team's design and asset notes are not in the repo: the contract is `contracts/` and
    docs/serving.md, the offline data is described in the README."""
    needles = ("DESIGN" + ".md", "ASSETS" + ".md")  # spelled apart so this file does not match
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    suffixes = (".py", ".md", ".sh", ".toml", ".yml", ".yaml", ".txt", ".in")
    suffixes += ("Makefile", "Dockerfile")
    files = [REPO / p for p in listed if p.endswith(suffixes) and (REPO / p).is_file()]
    cited = [str(f) for f in files if any(n in f.read_text(errors="replace") for n in needles)]
    assert cited == []
