"""`genpipe kubeflow submit|schedule SPEC`: run a compiled pipeline (`genpipe run MODEL
--compile-only SPEC.yaml --image IMAGE`) on Kubeflow Pipelines, or on Vertex AI with --vertex."""

from __future__ import annotations

import argparse
import sys
import time

from pipeline import kubeflow
from pipeline.stages import BASELINE_METADATA

EXIT_FAILED = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `kubeflow submit` and `kubeflow schedule` to the `genpipe` command line."""
    parser = subparsers.add_parser(
        "kubeflow", help="submit or schedule a compiled pipeline on Kubeflow Pipelines or Vertex",
        description="Run a spec compiled by `genpipe run MODEL --compile-only SPEC.yaml --image "
        "IMAGE` on Kubeflow Pipelines (--host) or Vertex AI Pipelines (--vertex). "
        "See docs/kubeflow.md.",
    )
    parser.set_defaults(handler=kubeflow_command)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    submit = actions.add_parser("submit", help="create one run")
    schedule = actions.add_parser(
        "schedule", help="create a recurring run (cron, at most one run at a time, no catch-up)")
    for sub in (submit, schedule):
        sub.add_argument("spec", metavar="SPEC", help="the compiled .yaml (Vertex: also .json)")
        sub.add_argument("--host", help="the Kubeflow Pipelines API, e.g. http://localhost:8080")
        sub.add_argument("--vertex", action="store_true",
                         help="use Vertex AI Pipelines (needs --project, --region)")
        sub.add_argument("--project", help="Vertex: the Google Cloud project")
        sub.add_argument("--region", help="Vertex: the region, e.g. europe-west4")
        sub.add_argument("--experiment", default=kubeflow.DEFAULT_EXPERIMENT,
                         help=f"Kubeflow experiment (default: {kubeflow.DEFAULT_EXPERIMENT})")
        sub.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                         help="a runtime parameter of the spec (repeatable), e.g. "
                         "source=gs://bucket/texts or max_documents=5000")
        sub.add_argument("--name", help="run or schedule name (default: the pipeline's name)")
    schedule.add_argument("--cron", help="5 fields in UTC, or 6 with seconds first (Kubeflow's)")
    schedule.add_argument("--from-entry", metavar="NAME",
                          help="take the cron and name of this `genpipe schedule` entry "
                          "(with --root)")
    schedule.add_argument("--root", help="the root whose schedules hold --from-entry")


def _fail(message: str) -> int:
    print(f"genpipe kubeflow: {message}", file=sys.stderr)
    return 2


def _entry_cron(args: argparse.Namespace, pipeline_name: str) -> tuple[str, str]:
    """(cron, name) of the schedule: --cron, or the --from-entry entry's."""
    if (args.cron is None) == (args.from_entry is None):
        raise ValueError("give either --cron or --from-entry NAME --root ROOT")
    if args.cron is not None:
        return args.cron, args.name or pipeline_name
    if not args.root:
        raise ValueError("--from-entry needs --root, the root whose schedules hold the entry")
    from pipeline.schedule import Schedules

    entry = Schedules(args.root).entry(args.from_entry)
    if entry.command:
        raise ValueError(f"--from-entry {entry.name!r} runs a custom command, not genpipe "
                         "models; only model entries become Kubeflow schedules")
    if not pipeline_name.endswith(f"-{entry.profile}"):
        raise ValueError(f"SPEC is pipeline {pipeline_name!r}, but entry {entry.name!r} runs "
                         f"profile {entry.profile!r} (models {', '.join(entry.models)}); "
                         f"compile with --profile {entry.profile}")
    return entry.cron, args.name or entry.name


def kubeflow_command(args: argparse.Namespace) -> int:
    """Validates the arguments, then submits or schedules; returns the exit code."""
    if args.action is None:
        return _fail("ACTION is missing; allowed: submit, schedule")
    try:
        if args.vertex == bool(args.host):
            raise ValueError("give either --host URL (Kubeflow Pipelines) or --vertex")
        if args.vertex and not (args.project and args.region):
            raise ValueError("--vertex needs --project and --region")
        spec = kubeflow.load_spec(args.spec)
        if not args.vertex and not args.spec.endswith((".yaml", ".yml")):
            raise ValueError(f"SPEC {args.spec!r}: the kfp client uploads only .yaml; compile "
                             "with --compile-only FILE.yaml")
        params = kubeflow.parse_params(spec, args.param)
        pipeline_name = spec["pipelineInfo"]["name"]
        cron, name = ((None, args.name or f"{pipeline_name} {time.strftime('%Y-%m-%d %H:%M')}")
                      if args.action == "submit" else _entry_cron(args, pipeline_name))
        if cron is not None:
            (kubeflow.vertex_cron if args.vertex else kubeflow.kfp_cron)(cron)
    except ValueError as error:
        return _fail(str(error))
    declared = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    what = "run" if cron is None else f"schedule ({cron})"
    where = "Vertex AI" if args.vertex else args.host
    try:
        if args.vertex:
            if BASELINE_METADATA in declared:  # Vertex has no ML Metadata gRPC endpoint
                params.setdefault(BASELINE_METADATA, "")
            job = kubeflow.vertex_job(args.spec, args.project, args.region, params, name)
            made = (kubeflow.submit_vertex(job) if cron is None
                    else kubeflow.schedule_vertex(job, name, cron))
        elif cron is None:
            made = kubeflow.submit_kfp(args.spec, args.host, params, name, args.experiment)
        else:
            made = kubeflow.schedule_kfp(args.spec, args.host, params, name, cron,
                                         args.experiment)
    except Exception as error:  # noqa: BLE001 (the backend's refusal, said plainly)
        print(f"genpipe kubeflow: creating the {what} on {where} failed: "
              f"{type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(f"genpipe kubeflow: created {what} {made} of {pipeline_name}")
    return 0
