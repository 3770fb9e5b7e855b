"""What the API server refuses on create, before admission webhooks and storage, in the words
it uses (k8s.io/apimachinery/pkg/util/validation and api/validation of Kubernetes 1.32):

- a namespaced object in a namespace that does not exist: 404 NotFound, `namespaces "x" not
  found` (the NamespaceLifecycle admission plugin);
- `metadata.name` that is not a lowercase RFC 1123 subdomain (253 characters at most): 422
  Invalid, `Pod "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase
  RFC 1123 subdomain must consist of ...`;
- a label key that is not a qualified name (an optional DNS-subdomain prefix and `/`, then a
  name of at most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric), or a
  value that is not empty or such a name: 422 Invalid on `metadata.labels` (a length and a
  pattern are separate messages, as apimachinery words them);
- a Pod without containers: 422 Invalid, `spec.containers: Required value`.

Objects seeded with `FakeKube.add` skip this (fixtures are the cluster's state, not requests).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from tests.fakekube.store import Resource

SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
NAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                 "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                 "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
NAME_PART_MSG = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
                 "an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
                 "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and "
             "must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', "
             "regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")


@dataclass(frozen=True)
class Refusal:
    code: int
    reason: str
    message: str


def _subdomain(text: str) -> list[str]:
    """IsDNS1123Subdomain: the length and the pattern are separate messages."""
    msgs = ["must be no more than 253 characters"] if len(text) > 253 else []
    return msgs + ([SUBDOMAIN_MSG] if not SUBDOMAIN.fullmatch(text) else [])


def _label_errors(labels: Any) -> list[str]:
    """IsQualifiedName for each key, IsValidLabelValue for each value."""
    if not isinstance(labels, dict):
        return ["metadata.labels: Invalid value: must be a map of strings"]
    errors = []
    for key, value in labels.items():
        prefix, slash, name = str(key).rpartition("/")
        msgs = []
        if slash:
            msgs += ["prefix part must be non-empty"] if not prefix else [f"prefix part {m}" for m in _subdomain(prefix)]
        if not name:
            msgs.append("name part must be non-empty")
        else:
            msgs += ["name part must be no more than 63 characters"] if len(name) > 63 else []
            msgs += [NAME_PART_MSG] if not NAME_PART.fullmatch(name) else []
        errors += [f'metadata.labels: Invalid value: "{key}": {m}' for m in msgs]
        text = str(value) if value is not None else ""
        msgs = ["must be no more than 63 characters"] if len(text) > 63 else []
        msgs += [VALUE_MSG] if text and not NAME_PART.fullmatch(text) else []
        errors += [f'metadata.labels: Invalid value: "{text}": {m}' for m in msgs]
    return errors


def invalid_on_create(resource: Resource, namespace: str, body: dict[str, Any],
            namespace_exists: Callable[[str], bool]) -> Refusal | None:
    meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    if resource.namespaced and namespace and not namespace_exists(namespace):
        return Refusal(404, "NotFound", f'namespaces "{namespace}" not found')
    name = meta.get("name") or ""
    errors = []
    errors += [f'metadata.name: Invalid value: "{name}": {m}' for m in (_subdomain(name) if name else [])]
    if "labels" in meta and meta["labels"] is not None:
        errors += _label_errors(meta["labels"])
    if (resource.group, resource.plural) == ("", "pods") and not ((body.get("spec") or {}).get("containers")):
        errors.append("spec.containers: Required value")
    if not errors:
        return None
    shown = f'{resource.kind} "{name or meta.get("generateName", "")}" is invalid: '
    return Refusal(422, "Invalid", shown + ("[" + ", ".join(errors) + "]" if len(errors) > 1 else errors[0]))
