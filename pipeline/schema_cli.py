"""`genpipe schema show|update`: the curated schemas the pipelines import (`components.schemas`).

`update` is the deliberate refresh: it infers a schema from the statistics of a model's latest run
under a root (the run may have stopped at the data gate) and merges it into the curated file
(`components.schemas.merge`: existing features keep their curation, new ones are added, removed
and changed ones reported), shows the diff, and writes it only with `--yes` (or after a "y" on a
terminal); review it with `git diff` and commit it like code.
"""

from __future__ import annotations

import argparse
import sys

from pipeline.profiles import PROFILE_NAMES


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `schema show` and `schema update` to the `genpipe` command line."""
    from pipeline.registry import MODEL_NAMES

    parser = subparsers.add_parser(
        "schema", help="show or refresh the curated data schemas the pipelines validate against")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    trained = [name for name in MODEL_NAMES if _has_schema(name)]
    for action, text in (
        ("show", "print the curated schema a model's source is validated against"),
        ("update", "merge what the statistics of the model's latest run under --root infer "
                   "into the curated file, keeping its curation; shows the diff, writes with "
                   "--yes"),
    ):
        sub = actions.add_parser(action, help=text, description=text)
        sub.add_argument("model", metavar="MODEL", help=f"one of: {', '.join(trained)}")
        sub.add_argument("--source", "--dataset", dest="source", default="offline",
                         help="the source the schema is for, as given to `genpipe run` "
                              "(default: offline)")
        if action == "update":
            sub.add_argument("--root", default="runs",
                             help="the --root of the run to learn from (default: runs/)")
            sub.add_argument("--profile", default="demo",
                             help=f"the run's profile, one of: {', '.join(PROFILE_NAMES)} "
                                  "(default: demo)")
            sub.add_argument("--file", help="the curated schema file to merge into "
                                            "(default: the model's in components/schemas/)")
            write = sub.add_mutually_exclusive_group()
            write.add_argument("--yes", action="store_true",
                               help="write the merged schema without asking")
            write.add_argument("--dry-run", action="store_true",
                               help="print the changes and the diff without writing the file")
        sub.set_defaults(handler=schema_command)


def _has_schema(name: str) -> bool:
    from pipeline.registry import MODELS

    return MODELS[name].stages.schema is not None


def _fail(message: str) -> int:
    print(f"genpipe schema: {message}", file=sys.stderr)
    return 2


def schema_command(args: argparse.Namespace) -> int:
    from components import schemas
    from pipeline.registry import get_model

    try:
        model = get_model(args.model)
        if model.stages.schema is None:
            raise ValueError(f"{model.name} has no training data, hence no schema")
        source = model.check_source(args.source, False)
        name = model.stages.schema(source)
    except ValueError as error:
        return _fail(str(error))
    path = schemas.schema_file(name)
    if args.action == "show":
        with open(path) as f:
            print(f"# {path}\n{f.read()}", end="")
        return 0
    return _update(args, model, name, path)


def _update(args: argparse.Namespace, model, name: str, path: str) -> int:
    import difflib
    import os

    from components import schemas
    from components.schemas.merge import merge_schema
    from pipeline.files import write_atomically
    from pipeline.profiles import get_profile
    from pipeline.runner import RootLayout, latest_run

    path = args.file or path
    try:
        profile = get_profile(model.profiles, args.profile)
        layout = RootLayout.for_run(args.root, True)
        with open(path) as f:
            curated_text = f.read()
        curated = schemas.load_schema(path)
    except (ValueError, OSError) as error:
        return _fail(str(error))
    if not os.path.isfile(layout.metadata_path):
        return _fail(f"--root {args.root!r} has no ML Metadata store ({layout.metadata_path}); "
                     "run the pipeline there first")
    pipeline_name = model.pipeline_name(profile.name)
    try:
        statistics = latest_run(layout.metadata_config(), pipeline_name).output(
            "StatisticsGen", "statistics")
    except (LookupError, KeyError) as error:
        return _fail(f"no statistics of {pipeline_name} under {args.root}: {error}")
    merge = merge_schema(curated, schemas.infer_schema(statistics.uri), curated_text)
    print(f"{name}: {len(merge.changes)} change(s) from the statistics of {pipeline_name} "
          f"({statistics.uri})")
    for line in merge.changes:
        print(f"  {line}")
    diff = list(difflib.unified_diff(curated_text.splitlines(keepends=True),
                                     merge.text.splitlines(keepends=True),
                                     fromfile=path, tofile=f"{path} (merged)"))
    if not diff:
        print(f"{path} is up to date")
        return 0
    print("".join(diff), end="")
    if args.dry_run:
        return 0
    if not args.yes and not _confirmed(f"write {path}? [y/N] "):
        print(f"not written; rerun with --yes to write {path}")
        return 0
    write_atomically(path, merge.text)
    print(f"wrote {path}; review it with `git diff` before committing")
    return 0


def _confirmed(question: str) -> bool:
    """A "y" typed on a terminal; never when stdin is not a terminal (scripts use --yes)."""
    if not sys.stdin.isatty():
        return False
    return input(question).strip().lower() in ("y", "yes")
