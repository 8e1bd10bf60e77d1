"""`genpipe schema update`'s merge: new statistics refresh a curated schema without undoing its
curation.

Each feature the curated schema already has keeps its constraints (tightened domains, presence,
value counts, drift comparators, annotations), block for block as written, with the comments
above and inside it; features only the statistics have are added as inferred; features the
statistics no longer have are removed, unless the schema lets examples lack them. A feature
whose type changed is replaced by the inferred one, because its curation cannot apply any
more. Every addition, removal, replacement and every kept feature that the statistics alone
would describe differently is reported.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

# A top-level block of a schema's text: `feature {` (or `string_domain {`) at the start of a
# line, up to the first `}` at the start of a line, with the comment lines just above it.
_BLOCK = re.compile(r"((?:^#[^\n]*\n)*)^(feature|string_domain) \{\n(.*?)^\}\n", re.M | re.S)
_NAME = re.compile(r'^\s*name:\s*"((?:[^"\\]|\\.)*)"', re.M)


@dataclasses.dataclass(frozen=True)
class Merge:
    """The merged schema, its text (to write) and one line per change worth reviewing."""

    schema: Any
    text: str
    changes: list[str]


def _one_line(message: Any) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(message, as_one_line=True)


def _type(feature: Any) -> str:
    from tensorflow_metadata.proto.v0 import schema_pb2

    return schema_pb2.FeatureType.Name(feature.type)


def _optional(feature: Any) -> bool:
    """Whether the schema lets examples lack the feature (so a sample may not show it)."""
    presence = feature.presence
    return not feature.HasField("presence") or (presence.min_count == 0
                                                  and presence.min_fraction == 0)


def _differing_fields(curated: Any, inferred: Any) -> list[str]:
    fields = {field.name for field, _ in curated.ListFields()}
    fields |= {field.name for field, _ in inferred.ListFields()}
    return sorted(name for name in fields - {"name"}
                  if getattr(curated, name) != getattr(inferred, name))


def _merged_features(curated: Any, inferred: Any) -> tuple[list[Any], set[str], list[str]]:
    """(features, names taken from the inferred schema, change lines)."""
    new = {feature.name: feature for feature in inferred.feature}
    features, from_inferred, changes = [], set(), []
    for feature in curated.feature:
        fresh = new.get(feature.name)
        if fresh is None and _optional(feature):
            features.append(feature)
            changes.append(f"= {feature.name}: not in the statistics; kept (it is optional)")
        elif fresh is None:
            changes.append(f"- {feature.name}: not in the statistics; removed")
        elif fresh.type != feature.type:
            features.append(fresh)
            from_inferred.add(feature.name)
            changes.append(f"! {feature.name}: type {_type(feature)} is now {_type(fresh)}; "
                           "replaced by the inferred feature (its curation no longer applies): "
                           f"{_one_line(fresh)}")
        else:
            features.append(feature)
            differing = _differing_fields(feature, fresh)
            if differing:
                changes.append(f"= {feature.name}: curated constraints kept; the statistics "
                               f"alone would differ in {', '.join(differing)}: {_one_line(fresh)}")
    known = {feature.name for feature in curated.feature}
    for feature in inferred.feature:
        if feature.name not in known:
            features.append(feature)
            from_inferred.add(feature.name)
            changes.append(f"+ {feature.name}: new, as inferred: {_one_line(feature)}")
    return features, from_inferred, changes


def merge_schema(curated: Any, inferred: Any, curated_text: str) -> Merge:
    """Merges `inferred` into `curated` (whose file text is `curated_text`, to keep its
    comments and layout where nothing changed)."""
    features, from_inferred, changes = _merged_features(curated, inferred)
    merged = type(curated)()
    merged.CopyFrom(curated)
    del merged.feature[:]
    merged.feature.extend(features)
    used = {feature.domain for feature in features if feature.domain}
    inferred_domains = {domain.name: domain for domain in inferred.string_domain}
    domains = [inferred_domains[feature.domain] for feature in features
               if feature.name in from_inferred and feature.domain in inferred_domains]
    taken = {domain.name for domain in domains}
    domains += [domain for domain in curated.string_domain
                if domain.name in used and domain.name not in taken]
    del merged.string_domain[:]
    merged.string_domain.extend(sorted(domains, key=lambda domain: domain.name))
    for domain in curated.string_domain:
        if domain.name not in used:
            changes.append(f"- string_domain {domain.name}: no feature uses it; removed")
    return Merge(merged, _text(merged, curated, curated_text, from_inferred), changes)


def _text(merged: Any, curated: Any, curated_text: str, from_inferred: set[str]) -> str:
    """The merged schema as text: the curated file's header, then each block, verbatim from the
    curated file where it is unchanged (comments included), freshly printed otherwise."""
    from google.protobuf import text_format

    header = re.match(r"(?:#.*\n)*", curated_text).group(0)
    written = {}
    for match in _BLOCK.finditer(curated_text, len(header)):
        name = _NAME.search(match.group(3))
        if name:
            written[match.group(2), name.group(1)] = (match.group(1), match.group(0))
    old = {("feature", f.name): f for f in curated.feature}
    old |= {("string_domain", d.name): d for d in curated.string_domain}
    parts = [header]
    for kind, items in (("feature", merged.feature), ("string_domain", merged.string_domain)):
        for item in items:
            comments, block = written.get((kind, item.name), ("", ""))
            unchanged = item.name not in from_inferred and old.get((kind, item.name)) == item
            if unchanged and block and _parses_to(block[len(comments):], kind, item):
                parts.append(block)
            else:
                body = text_format.MessageToString(item, indent=2)
                parts.append(f"{comments}{kind} {{\n{body}}}\n")
    rest = type(merged)()
    rest.CopyFrom(merged)
    del rest.feature[:]
    del rest.string_domain[:]
    parts.append(text_format.MessageToString(rest))
    text = "".join(parts)
    if text_format.Parse(text, type(merged)()) != merged:  # never write what we did not mean
        raise AssertionError("the merged schema's text does not parse back to the merged schema")
    return text


def _parses_to(block: str, kind: str, item: Any) -> bool:
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    return list(getattr(text_format.Parse(block, schema_pb2.Schema()), kind)) == [item]
