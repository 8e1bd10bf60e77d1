"""Render the report page (Jinja2, autoescaped) and write it with its PNGs."""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
from pathlib import Path
from typing import Any

from pipeline.files import write_atomically
from pipeline.report import plots
from pipeline.report.facts import Facts
from pipeline.report.samples import Sample
from pipeline.status_cli import state_text

DEFAULT_OUT = os.path.join("out", "report")
PAGE = "index.html"
TEMPLATE = "report.html"
IMAGE_PREFIX = "img-"  # every PNG the report writes; older ones are removed after a write
UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclasses.dataclass
class ModelView:
    """One model's part of the page."""

    name: str
    versions: list[Any]
    metrics_png: str | None
    samples: list[dict[str, Any]]
    moves: list[Any]


def _file_name(*parts: Any) -> str:
    return IMAGE_PREFIX + UNSAFE.sub("_", "-".join(str(p) for p in parts)) + ".png"


def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("pipeline.report", "templates"),
        autoescape=True,  # every text from a root (messages, samples, paths) is escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def views(facts: Facts, samples: list[Sample]) -> tuple[list[ModelView], dict[str, bytes]]:
    """The models' views and the PNGs they name (file name -> bytes)."""
    images: dict[str, bytes] = {}
    models = []
    for model in facts.models:
        versions = [v for v in facts.versions if v.model == model]
        png = plots.metrics_png(model, versions)
        plot_name = None
        if png is not None:
            plot_name = _file_name(model, "metrics")
            images[plot_name] = png
        shown = []
        for index, sample in enumerate(s for s in samples if s.model == model):
            image = None
            if sample.png is not None:
                image = _file_name(model, sample.version, index)
                images[image] = sample.png
            shown.append({"sample": sample, "image": image})
        models.append(ModelView(model, versions, plot_name, shown,
                                [m for m in facts.moves if m.model == model]))
    return models, images


def render(facts: Facts, samples: list[Sample], server: str | None) -> tuple[str, dict]:
    """(the HTML page, its PNGs by file name)."""
    models, images = views(facts, samples)
    html = _environment().get_template(TEMPLATE).render(
        root=facts.root,
        server=server,
        generated=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ"),
        models=models,
        state=state_text,
        gates=facts.gates,
        data=facts.data,
        examples_uri=facts.examples_uri,
        schedule=facts.schedule,
    )
    return html, images


def write(out: str | os.PathLike, html: str, images: dict[str, bytes]) -> Path:
    """Writes the PNGs, then `index.html` in one step, then removes PNGs no page names."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in images.items():
        temp = folder / f".{name}.{os.getpid()}.tmp"
        temp.write_bytes(data)
        os.replace(temp, folder / name)
    page = folder / PAGE
    write_atomically(page, html)
    for old in folder.glob(f"{IMAGE_PREFIX}*.png"):
        if old.name not in images:
            old.unlink(missing_ok=True)
    return page
