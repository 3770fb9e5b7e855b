"""The three PATCH flavours the API server speaks, applied to plain dicts.

Strategic merge is only as deep as the suite needs: maps merge, `null` deletes, lists with a
known merge key (containers by name, conditions by type, ...) merge item by item and honour
`$patch: delete`; every other list is replaced whole — which is what the real server does for
`spec.taints` and `spec.tolerations`, since they carry no patch strategy.
"""

from __future__ import annotations

import copy
from typing import Any

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# field name -> merge key of its items, for lists Kubernetes merges under strategic merge patch
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "conditions": "type",
    "ownerReferences": "uid",
    "imagePullSecrets": "name",
    "addresses": "type",
}
PRIMITIVE_MERGE_LISTS = {"finalizers"}


class PatchError(ValueError):
    """The patch cannot apply (a JSON patch `test` failed, a path is missing, bad body)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value, MERGE_KEYS[key])
        elif isinstance(value, list) and key in PRIMITIVE_MERGE_LISTS and isinstance(result.get(key), list):
            result[key] = result[key] + [v for v in value if v not in result[key]]
        elif isinstance(value, list):
            result[key] = [_strip_directives(v) for v in value if not _is_delete(v)]
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def _merge_list(current: list, patch: list, merge_key: str) -> list:
    merged = [copy.deepcopy(item) for item in current]
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise PatchError(f"list item without merge key {merge_key!r}: {item!r}")
        index = next((i for i, old in enumerate(merged) if old.get(merge_key) == item[merge_key]), None)
        if _is_delete(item):
            if index is not None:
                del merged[index]
        elif index is None:
            merged.append(_strip_directives(item))
        else:
            merged[index] = strategic_merge_patch(merged[index], item)
    return merged


def _is_delete(item: Any) -> bool:
    return isinstance(item, dict) and item.get("$patch") == "delete"


def _strip_directives(item: Any) -> Any:
    if isinstance(item, dict):
        return {k: _strip_directives(v) for k, v in item.items() if not k.startswith("$")}
    return copy.deepcopy(item)


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch: add, remove, replace, move, copy, test."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch is a list of operations")
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"bad JSON patch operation: {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = _put(doc, path, copy.deepcopy(op["value"]), insert=True)
        elif kind == "remove":
            doc, _ = _take(doc, path)
        elif kind == "replace":
            _get(doc, path)
            doc = _put(doc, path, copy.deepcopy(op["value"]), insert=False)
        elif kind == "move":
            doc, value = _take(doc, op["from"])
            doc = _put(doc, path, value, insert=True)
        elif kind == "copy":
            doc = _put(doc, path, copy.deepcopy(_get(doc, op["from"])), insert=True)
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise PatchError(f"test failed at {path}")
        else:
            raise PatchError(f"unknown JSON patch op {kind!r}")
    return doc


def _tokens(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"bad JSON pointer {path!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _child(node: Any, token: str) -> Any:
    try:
        if isinstance(node, list):
            return node[int(token)]
        return node[token]
    except (KeyError, IndexError, ValueError, TypeError):
        raise PatchError(f"path element {token!r} not found") from None


def _walk(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens:
        node = _child(node, token)
    return node


def _get(doc: Any, path: str) -> Any:
    return _walk(doc, _tokens(path))


def _put(doc: Any, path: str, value: Any, insert: bool) -> Any:
    tokens = _tokens(path)
    if not tokens:
        return value
    parent = _walk(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if index > len(parent):
            raise PatchError(f"index {index} out of range")
        if insert:
            parent.insert(index, value)
        else:
            parent[index] = value
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise PatchError(f"cannot set {path}")
    return doc


def _take(doc: Any, path: str) -> tuple[Any, Any]:
    tokens = _tokens(path)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _walk(doc, tokens[:-1])
    last = tokens[-1]
    try:
        value = parent.pop(int(last) if isinstance(parent, list) else last)
    except (KeyError, IndexError, ValueError, AttributeError):
        raise PatchError(f"path {path} not found") from None
    return doc, value


def apply_patch(content_type: str, target: dict, body: Any) -> dict:
    kind = content_type.split(";")[0].strip().lower()
    if kind == JSON_PATCH:
        return json_patch(target, body)
    if kind == MERGE_PATCH:
        return merge_patch(target, body)
    if kind == STRATEGIC_PATCH:
        return strategic_merge_patch(target, body)
    raise PatchError(f"unsupported patch content type {content_type!r}")
