"""Label and field selectors, parsed the way the API server reads `?labelSelector=`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

Predicate = Callable[[dict[str, Any]], bool]


class SelectorError(ValueError):
    """The selector does not parse (the server answers 400)."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        return not present or value not in self.values  # "!=", "notin"


_SET = re.compile(r"^\s*([^\s!=()]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(text: str | None) -> list[Requirement]:
    if not text:
        return []
    requirements = []
    for part in _split_top_level(text):
        if m := _SET.match(part):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            requirements.append(Requirement(m.group(1), m.group(2), values))
        elif "!=" in part:
            key, value = part.split("!=", 1)
            requirements.append(Requirement(key.strip(), "!=", frozenset([value.strip()])))
        elif "=" in part:
            key, value = part.split("==", 1) if "==" in part else part.split("=", 1)
            requirements.append(Requirement(key.strip(), "=", frozenset([value.strip()])))
        elif part.startswith("!"):
            requirements.append(Requirement(part[1:].strip(), "!exists"))
        elif re.fullmatch(r"[A-Za-z0-9._/-]+", part):
            requirements.append(Requirement(part, "exists"))
        else:
            raise SelectorError(f"unable to parse requirement: {part!r}")
    return requirements


def label_predicate(text: str | None) -> Predicate:
    requirements = parse_label_selector(text)

    def matches(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(r.matches(labels) for r in requirements)

    return matches


def _field(obj: dict[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None:
        return ""
    return str(node).lower() if isinstance(node, bool) else str(node)


def field_predicate(text: str | None) -> Predicate:
    """Field selectors: `=`, `==` and `!=` on any dotted path (spec.nodeName, metadata.name,
    metadata.namespace, status.phase, ...). A missing field compares as the empty string, as the
    real server does for `spec.nodeName=`."""
    terms: list[tuple[str, bool, str]] = []
    for part in _split_top_level(text or ""):
        if "!=" in part:
            key, value = part.split("!=", 1)
            terms.append((key.strip(), False, value.strip()))
        elif "=" in part:
            key, value = part.split("==", 1) if "==" in part else part.split("=", 1)
            terms.append((key.strip(), True, value.strip()))
        else:
            raise SelectorError(f"invalid field selector: {part!r}")

    def matches(obj: dict[str, Any]) -> bool:
        return all((_field(obj, key) == value) == equal for key, equal, value in terms)

    return matches


_OPS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}


def label_selector_predicate(selector: dict[str, Any] | None) -> Callable[[dict[str, str]], bool]:
    """A metav1.LabelSelector over a labels map, as LabelSelectorAsSelector reads it: null
    selects nothing, {} everything (policy/v1 PDBs), matchLabels and matchExpressions ANDed."""
    if selector is None:
        return lambda labels: False
    requirements = [Requirement(k, "=", frozenset({str(v)})) for k, v in (selector.get("matchLabels") or {}).items()]
    for e in selector.get("matchExpressions") or []:
        op = _OPS.get(e.get("operator", ""))
        if op is None:
            raise SelectorError(f"{e.get('operator')!r} is not a valid label selector operator")
        requirements.append(Requirement(e.get("key", ""), op, frozenset(e.get("values") or [])))
    return lambda labels: all(r.matches(labels) for r in requirements)
