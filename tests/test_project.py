"""Project plumbing that cannot run here (no Docker engine) checked for what can be checked."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("client", "components", "contracts", "models", "pipeline", "protos", "serving",
            "sources")
DEV_TOOLS = ("pytest", "pytest-timeout", "ruff")


def _dockerfile_copies() -> list[list[str]]:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    return [line.split()[1:-1] for line in lines if line.startswith("COPY ")]


def test_dockerfile_copy_sources_exist():
    copies = _dockerfile_copies()
    assert copies, "Dockerfile copies nothing"
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), f"Dockerfile COPY source {source} missing"


def _pins(path: str) -> dict[str, str]:
    lines = (ROOT / path).read_text().splitlines()
    return dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))


def test_image_installs_the_runtime_lock_and_setup_adds_the_dev_tools():
    dockerfile = (ROOT / "Dockerfile").read_text()
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    for path in ("requirements/lock.txt", "requirements/carriers.txt"):
        assert path in dockerfile
    assert "dev-lock.txt" not in dockerfile
    for path in ("requirements/dev-lock.txt", "requirements/carriers.txt"):
        assert path in setup
    runtime, dev = _pins("requirements/lock.txt"), _pins("requirements/dev-lock.txt")
    assert {name: dev.get(name) for name in runtime} == runtime, "dev-lock.txt left lock.txt"
    for tool in DEV_TOOLS:
        assert tool in dev and tool not in runtime
    assert "FROM python:3.10-slim" in dockerfile
    assert re.search(r'ENTRYPOINT \["genpipe"\]', dockerfile)
    uv_pin = re.search(r"uv==([\d.]+)", dockerfile).group(1)
    assert f"UV_VERSION := {uv_pin}" in (ROOT / "Makefile").read_text()


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(group: str) -> set[str]:
    """The distribution names of a dependency list of pyproject.toml (`dependencies` or an
    extra), read with a regex: Python 3.10 has no tomllib."""
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(rf"^{group} = \[(.*?)^\]", text, re.S | re.M).group(1)
    return {_normalized(re.match(r"[A-Za-z0-9_.-]+", spec).group())
            for spec in re.findall(r'^\s*"([^"]+)"', block, re.M)}


def _module_distributions() -> dict[str, set[str]]:
    """{module path up to 3 levels ("google.protobuf"): distributions whose files hold it}.
    `packages_distributions()` misses distributions without top_level.txt on Python 3.10."""
    found: dict[str, set[str]] = {}
    for module, names in importlib.metadata.packages_distributions().items():
        found.setdefault(module, set()).update(_normalized(n) for n in names)
    for dist in importlib.metadata.distributions():
        name = _normalized(dist.metadata["Name"])  # read once: each access re-parses the file
        for file in dist.files or ():
            parts = file.parts
            if parts[0] == ".." or parts[0].endswith((".dist-info", ".egg-info")):
                continue
            if file.suffix not in (".py", ".so", ".pyd"):
                continue
            parts = (*parts[:-1], parts[-1].split(".")[0])
            for depth in range(1, min(3, len(parts)) + 1):
                module = ".".join(parts[:depth])
                found.setdefault(module, set()).add(name)
    return found


def _third_party_imports() -> dict[str, set[str]]:
    """{imported module: files importing it} over genpipe's packages (absolute imports)."""
    imports: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in PACKAGES:
                        imports.setdefault(module, set()).add(str(path.relative_to(ROOT)))
    return imports


def test_every_imported_package_is_declared():
    declared = _declared("dependencies")
    distributions = _module_distributions()
    undeclared = {}
    for module, files in _third_party_imports().items():
        parts = module.split(".")
        prefixes = [".".join(parts[:depth]) for depth in range(min(3, len(parts)), 0, -1)]
        owners = next((distributions[p] for p in prefixes if p in distributions), None)
        assert owners, f"{module} (imported by {sorted(files)}) is not installed"
        if not owners & declared:
            undeclared[module] = (sorted(owners), sorted(files))
    assert not undeclared, f"imported but not in pyproject's dependencies: {undeclared}"
    assert not declared & set(DEV_TOOLS)
    assert set(DEV_TOOLS) <= _declared("dev")


def test_carriers_are_pinned_and_kept_apart_from_the_lock():
    carriers = [
        line
        for line in (ROOT / "requirements/carriers.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert all("==" in line for line in carriers)
    lock = (ROOT / "requirements/lock.txt").read_text()
    for line in carriers:
        assert line.split("==")[0] not in lock


def test_lock_pins_the_stack_named_by_the_design():
    lock = (ROOT / "requirements/lock.txt").read_text()
    for pin in (
        "tfx==1.16.0",
        "tensorflow==2.16.2",
        "apache-beam==2.59.",
        "tensorflow-serving-api==2.16.1",
    ):
        assert pin in lock


def test_generated_folders_are_ignored():
    for path in (
        "out/x.png",
        "runs/a",
        ".assets/paintings/s.jpg",
        ".venv/bin/python",
        "w.weights.h5",
    ):
        result = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        assert result.returncode == 0, f"{path} is not ignored"
