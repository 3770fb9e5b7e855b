"""RBAC for the fake API server, decided the way kube-apiserver's RBAC authorizer decides.

Why: a fake that allows everything hides a Role that is missing a verb until the code meets
a real cluster. With a `Policy` loaded from the repo's own manifests, a test sees the 403
the cluster would answer, and `FakeKube.authorizations` shows what the code really asked for.

Two halves, as in the apiserver:
- `request_attributes` turns a request (method, path, query) into the attributes the
  authorizer sees (verb, API group, resource, subresource, namespace, name), as
  `RequestInfoFactory` does: GET on an item is `get`, on a collection `list` (or `watch`),
  DELETE on a collection `deletecollection`, `/api/v1/namespaces/NAME` is in namespace NAME.
- `Policy.decide` walks ClusterRoleBindings, then the RoleBindings of the request's
  namespace, and allows when a rule of a bound role matches (no rule ever denies).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qsl

import yaml

ALL = "*"
SA_PREFIX = "system:serviceaccount:"
#: pods/exec, attach and portforward: the websocket upgrade is a GET (verb `get`); from 1.35
#: the apiserver also checks `create` on it (AuthorizePodWebsocketUpgradeCreatePermission).
CONNECT_SUBRESOURCES = frozenset({"exec", "attach", "portforward"})
#: non-resource paths the default ClusterRoles (system:discovery, system:public-info-viewer)
#: open to every authenticated user.
DISCOVERY_PREFIXES = ("/api", "/apis", "/version", "/healthz", "/livez", "/readyz", "/openapi")
_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True)
class Authorization:
    """One decision, as a test reads it back: `resource` includes "/sub" ("pods/eviction")."""

    user: str
    verb: str
    group: str
    resource: str
    namespace: str
    name: str
    allowed: bool


@dataclass(frozen=True)
class Attributes:
    """What the authorizer sees of a request (apiserver's RequestInfo)."""

    verb: str
    path: str
    resource_request: bool = False
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    @property
    def qualified(self) -> str:
        """"pods", "pods/eviction": how RBAC rules and denials name it."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def request_attributes(method: str, path: str, query: Mapping[str, str] | str = "") -> Attributes:
    """The attributes of one request, parsed as kube-apiserver's RequestInfoFactory does."""
    params = dict(parse_qsl(query, keep_blank_values=True)) if isinstance(query, str) else dict(query)
    verb = _VERBS.get(method.upper(), method.lower())
    parts = [p for p in path.split("/") if p]
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return Attributes(verb=method.lower(), path=path)
    rest = parts[1:]
    group = ""
    if parts[0] == "apis":
        if len(rest) < 3:
            return Attributes(verb=method.lower(), path=path)  # /apis/GROUP/VERSION is discovery
        group, rest = rest[0], rest[1:]
    version, rest = rest[0], rest[1:]
    if rest and rest[0] in ("watch", "proxy"):  # the deprecated /watch/ prefix names the verb
        verb, rest = rest[0], rest[1:]
    namespace = ""
    if rest and rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in ("status", "finalize"):
            rest = rest[2:]  # otherwise the request is about the Namespace object itself
    resource, name, sub = (rest + ["", "", ""])[:3]
    if verb == "proxy":
        sub = ""
    if not name and verb == "get":
        verb = "watch" if params.get("watch", "").lower() in ("true", "1") else "list"
        exact = _exact_name(params.get("fieldSelector", ""))
        if exact:
            name = exact  # a list of metadata.name=X is authorised as that one name
    elif not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(verb=verb, path=path, resource_request=True, group=group, version=version,
                      resource=resource, subresource=sub, namespace=namespace, name=name)


def _exact_name(selector: str) -> str:
    for term in selector.split(","):
        key, eq, value = term.partition("==") if "==" in term else term.partition("=")
        if eq and key.strip() == "metadata.name":
            return value.strip()
    return ""


def groups_of(user: str) -> frozenset[str]:
    """The groups the authenticator adds: a service account's token also carries its own."""
    groups = {"system:authenticated"}
    if user.startswith(SA_PREFIX):
        namespace = user[len(SA_PREFIX):].split(":", 1)[0]
        groups |= {"system:serviceaccounts", f"system:serviceaccounts:{namespace}"}
    return frozenset(groups)


def service_account(namespace: str, name: str) -> str:
    return f"{SA_PREFIX}{namespace}:{name}"


@dataclass(frozen=True)
class Rule:
    verbs: frozenset[str]
    api_groups: frozenset[str]
    resources: frozenset[str]
    resource_names: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> Rule:
        return cls(frozenset(doc.get("verbs") or ()), frozenset(doc.get("apiGroups") or ()),
                   frozenset(doc.get("resources") or ()), frozenset(doc.get("resourceNames") or ()))

    def matches(self, verb: str, group: str, resource: str, subresource: str, name: str) -> bool:
        """RBAC's VerbMatches, APIGroupMatches, ResourceMatches and ResourceNameMatches."""
        return ((ALL in self.verbs or verb in self.verbs)
                and (ALL in self.api_groups or group in self.api_groups)
                and self._resource_matches(resource, subresource)
                and (not self.resource_names or name in self.resource_names))

    def _resource_matches(self, resource: str, subresource: str) -> bool:
        combined = f"{resource}/{subresource}" if subresource else resource
        return (ALL in self.resources or combined in self.resources
                or bool(subresource) and f"*/{subresource}" in self.resources)


@dataclass(frozen=True)
class Role:
    kind: str  # "Role" or "ClusterRole"
    name: str
    namespace: str  # "" for a ClusterRole
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Subject:
    kind: str  # "ServiceAccount", "User" or "Group"
    name: str
    namespace: str = ""

    def applies_to(self, user: str, groups: frozenset[str], binding_namespace: str) -> bool:
        if self.kind == "ServiceAccount":
            return user == service_account(self.namespace or binding_namespace, self.name)
        if self.kind == "User":
            return user == self.name
        return self.kind == "Group" and self.name in groups


@dataclass(frozen=True)
class Binding:
    kind: str  # "RoleBinding" or "ClusterRoleBinding"
    name: str
    namespace: str  # "" for a ClusterRoleBinding
    role_kind: str
    role_name: str
    subjects: tuple[Subject, ...]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""  # as RBAC words it: "RBAC: role.rbac.authorization.k8s.io \"x\" not found"


@dataclass
class Policy:
    """Roles and bindings as a cluster would hold them once the manifests are applied."""

    roles: dict[tuple[str, str, str], Role] = field(default_factory=dict)  # (kind, namespace, name)
    bindings: list[Binding] = field(default_factory=list)
    service_accounts: list[str] = field(default_factory=list)  # as users: system:serviceaccount:NS:NAME

    @classmethod
    def from_manifests(cls, paths: Iterable[Path], namespace_override: str | None = None,
                       default_namespace: str = "inferchaos") -> Policy:
        """Load Role, ClusterRole, RoleBinding, ClusterRoleBinding and ServiceAccount documents
        (other kinds are skipped). Namespaced documents without a namespace get
        `default_namespace`, as the kustomization's `namespace:` gives them;
        `namespace_override` puts every Role and RoleBinding in that namespace instead (an
        overlay that grants the runner rights in the target namespace). Subjects keep theirs."""
        docs: list[dict[str, Any]] = []
        for path in paths:
            docs.extend(d for d in yaml.safe_load_all(Path(path).read_text()) if isinstance(d, dict))
        return cls.from_documents(docs, namespace_override, default_namespace)

    @classmethod
    def from_documents(cls, docs: Iterable[Mapping[str, Any]], namespace_override: str | None = None,
                       default_namespace: str = "inferchaos") -> Policy:
        policy = cls()
        for doc in docs:
            policy.add(doc, namespace_override, default_namespace)
        return policy

    def add(self, doc: Mapping[str, Any], namespace_override: str | None = None,
            default_namespace: str = "inferchaos") -> None:
        kind = doc.get("kind", "")
        meta = doc.get("metadata") or {}
        name = meta.get("name", "")
        namespace = meta.get("namespace") or default_namespace
        if kind in ("Role", "RoleBinding") and namespace_override:
            namespace = namespace_override
        if kind in ("Role", "ClusterRole"):
            scope = namespace if kind == "Role" else ""
            self.roles[(kind, scope, name)] = Role(kind, name, scope,
                                                   tuple(Rule.parse(r) for r in doc.get("rules") or ()))
        elif kind in ("RoleBinding", "ClusterRoleBinding"):
            ref = doc.get("roleRef") or {}
            subjects = tuple(Subject(s.get("kind", ""), s.get("name", ""),
                                     s.get("namespace") or (default_namespace if s.get("kind") == "ServiceAccount" else ""))
                             for s in doc.get("subjects") or ())
            self.bindings.append(Binding(kind, name, namespace if kind == "RoleBinding" else "",
                                         ref.get("kind", ""), ref.get("name", ""), subjects))
        elif kind == "ServiceAccount":
            self.service_accounts.append(service_account(namespace, name))

    def allows(self, user: str, verb: str, group: str, resource: str, subresource: str = "",
               namespace: str = "", name: str = "") -> bool:
        return self.decide(user, verb, group, resource, subresource, namespace, name).allowed

    def decide(self, user: str, verb: str, group: str, resource: str, subresource: str = "",
               namespace: str = "", name: str = "") -> Decision:
        """A ClusterRoleBinding grants its ClusterRole everywhere (cluster-scoped resources too);
        a RoleBinding grants its Role or ClusterRole in its own namespace only."""
        groups = groups_of(user)
        errors: list[str] = []
        for binding in self._bindings_for(namespace):
            if not any(s.applies_to(user, groups, binding.namespace) for s in binding.subjects):
                continue
            role = self._role(binding)
            if role is None:
                errors.append(f'{binding.role_kind.lower()}.rbac.authorization.k8s.io "{binding.role_name}" not found')
                continue
            if any(rule.matches(verb, group, resource, subresource, name) for rule in role.rules):
                return Decision(True)
        reason = ""
        if errors:
            reason = "RBAC: " + (errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]")
        return Decision(False, reason)

    def _bindings_for(self, namespace: str) -> list[Binding]:
        cluster = [b for b in self.bindings if b.kind == "ClusterRoleBinding"]
        local = [b for b in self.bindings if b.kind == "RoleBinding" and namespace and b.namespace == namespace]
        return cluster + local

    def _role(self, binding: Binding) -> Role | None:
        if binding.kind == "ClusterRoleBinding" and binding.role_kind != "ClusterRole":
            return None  # a ClusterRoleBinding can only refer to a ClusterRole
        scope = binding.namespace if binding.role_kind == "Role" else ""
        return self.roles.get((binding.role_kind, scope, binding.role_name))


def is_discovery(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in DISCOVERY_PREFIXES)


def forbidden_message(user: str, attrs: Attributes, reason: str = "") -> str:
    """The message of the 403, word for word as kube-apiserver builds it (responsewriters.Forbidden
    wrapped by apierrors.NewForbidden)."""
    if not attrs.resource_request:
        inner = f'User "{user}" cannot {attrs.verb} path "{attrs.path}"'
        return f"forbidden: {inner}" + (f": {reason}" if reason else "")
    scope = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    inner = (f'User "{user}" cannot {attrs.verb} resource "{attrs.qualified}" '
             f'in API group "{attrs.group}" {scope}')
    if reason:
        inner += f": {reason}"
    what = f"{attrs.resource}.{attrs.group}" if attrs.group else attrs.resource
    return f'{what} "{attrs.name}" is forbidden: {inner}' if attrs.name else f"{what} is forbidden: {inner}"
