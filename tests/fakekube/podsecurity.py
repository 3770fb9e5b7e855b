"""Pod Security admission, as k8s.io/pod-security-admission enforces it on a Pod's create.

A namespace labelled `pod-security.kubernetes.io/enforce: restricted` (or `baseline`) refuses
a Pod that breaks the level, 403 Forbidden, in the admission's words:

    pods "x" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false
    (container "c" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities
    (container "c" must set securityContext.capabilities.drop=["ALL"]), ...

The checks modelled (policy/check_*.go), baseline's before restricted's as the admission lists
them: host namespaces, hostPath volumes, host ports, privileged; then allowPrivilegeEscalation,
capabilities (drop ALL, add nothing but NET_BIND_SERVICE), volume types (which at restricted
replaces the hostPath check), runAsNonRoot, runAsUser=0, seccompProfile (RuntimeDefault or
Localhost). Not modelled: AppArmor, SELinux,
/proc mount, sysctls, Windows host process (none of deploy/'s pods set them).
"""

from __future__ import annotations

from typing import Any

ENFORCE = "pod-security.kubernetes.io/enforce"
VERSION = "pod-security.kubernetes.io/enforce-version"
ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                   "projected", "secret"}


def _names(kind: str, names: list[str]) -> str:
    quoted = ", ".join(f'"{n}"' for n in names)
    return f"{kind}s {quoted}" if len(names) > 1 else f"{kind} {quoted}"


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or []),
            *(spec.get("ephemeralContainers") or [])]


def _setters(pod_bad: bool, containers: list[str]) -> list[str]:
    return (["pod"] if pod_bad else []) + ([_names("container", containers)] if containers else [])


def _uses(kind: str, names: list[str], what: str, values: list[str]) -> str:
    """`container "c" uses hostPort 80`, `volumes "a", "b" use restricted volume types "x", "y"`."""
    return f"{_names(kind, names)} {'use' if len(names) > 1 else 'uses'} {what}{'s' if len(values) > 1 else ''} " \
        + ", ".join(values)


def _baseline(spec: dict[str, Any], restricted_volumes: bool) -> list[str]:
    out = []
    hosts = [f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    if hosts:
        out.append(f"host namespaces ({', '.join(hosts)})")
    host_path = [v["name"] for v in spec.get("volumes") or [] if "hostPath" in v]
    if host_path and not restricted_volumes:  # restricted's volume check overrides this one
        out.append(f"hostPath volumes ({_names('volume', host_path)})")
    users = [(c["name"], str(p["hostPort"])) for c in _containers(spec) for p in c.get("ports") or [] if p.get("hostPort")]
    if users:
        out.append(f"hostPort ({_uses('container', sorted({n for n, _ in users}), 'hostPort', [p for _, p in users])})")
    privileged = [c["name"] for c in _containers(spec) if (c.get("securityContext") or {}).get("privileged")]
    if privileged:
        out.append(f"privileged ({_names('container', privileged)} must not set securityContext.privileged=true)")
    return out


def baseline(spec: dict[str, Any]) -> list[str]:
    return _baseline(spec, restricted_volumes=False)


def restricted(spec: dict[str, Any]) -> list[str]:
    """Baseline's checks, then restricted's, each worded as its check_*.go words it (an
    explicit bad setting is reported before, and instead of, a missing one)."""
    out = _baseline(spec, restricted_volumes=True)
    pod_sc = spec.get("securityContext") or {}
    containers = _containers(spec)

    def sc(c: dict[str, Any]) -> dict[str, Any]:
        return c.get("securityContext") or {}

    escalating = [c["name"] for c in containers if sc(c).get("allowPrivilegeEscalation") is not False]
    if escalating:
        out.append(f"allowPrivilegeEscalation != false ({_names('container', escalating)} must set "
                   "securityContext.allowPrivilegeEscalation=false)")
    caps = []
    not_dropped = [c["name"] for c in containers if "ALL" not in ((sc(c).get("capabilities") or {}).get("drop") or [])]
    if not_dropped:
        caps.append(f'{_names("container", not_dropped)} must set securityContext.capabilities.drop=["ALL"]')
    adding = {c["name"]: [a for a in (sc(c).get("capabilities") or {}).get("add") or [] if a != "NET_BIND_SERVICE"]
              for c in containers}
    if any(adding.values()):
        listed = ", ".join(f'"{a}"' for a in sorted({a for v in adding.values() for a in v}))
        caps.append(f"{_names('container', [n for n, v in adding.items() if v])} must not include {listed} in "
                    "securityContext.capabilities.add")
    if caps:
        out.append(f"unrestricted capabilities ({'; '.join(caps)})")
    odd = {v["name"]: next((k for k in v if k != "name"), "") for v in spec.get("volumes") or []}
    odd = {n: k for n, k in odd.items() if k not in ALLOWED_VOLUMES}
    if odd:
        kinds = [f'"{k}"' for k in sorted(set(odd.values()))]
        out.append(f"restricted volume types ({_uses('volume', list(odd), 'restricted volume type', kinds)})")
    out += _explicit_or_missing(
        "runAsNonRoot != true", pod_sc.get("runAsNonRoot") is False,
        [c["name"] for c in containers if sc(c).get("runAsNonRoot") is False],
        "must not set securityContext.runAsNonRoot=false",
        [] if pod_sc.get("runAsNonRoot") is True else [c["name"] for c in containers if sc(c).get("runAsNonRoot") is None],
        "must set securityContext.runAsNonRoot=true")
    zero = _setters(pod_sc.get("runAsUser") == 0, [c["name"] for c in containers if sc(c).get("runAsUser") == 0])
    if zero:
        out.append(f"runAsUser=0 ({' and '.join(zero)} must not set runAsUser=0)")
    valid = ("RuntimeDefault", "Localhost")
    pod_type = (pod_sc.get("seccompProfile") or {}).get("type")
    types = {c["name"]: (sc(c).get("seccompProfile") or {}).get("type") for c in containers}
    bad_values = sorted({t for t in [pod_type, *types.values()] if t is not None and t not in valid})
    out += _explicit_or_missing(
        "seccompProfile", pod_type is not None and pod_type not in valid,
        [n for n, t in types.items() if t is not None and t not in valid],
        "must not set securityContext.seccompProfile.type to " + ", ".join(f'"{v}"' for v in bad_values),
        [] if pod_type in valid else [n for n, t in types.items() if t is None],
        'must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"')
    return out


def _explicit_or_missing(reason: str, pod_bad: bool, bad: list[str], bad_words: str, missing: list[str],
                         missing_words: str) -> list[str]:
    setters = _setters(pod_bad, bad)
    if setters:
        return [f"{reason} ({' and '.join(setters)} {bad_words})"]
    if missing:
        return [f"{reason} (pod or {_names('container', missing)} {missing_words})"]
    return []


LEVELS = {"baseline": baseline, "restricted": restricted}


def refusal(namespace_labels: dict[str, str], pod: dict[str, Any]) -> str | None:
    """The Forbidden message for a Pod this namespace's enforce level refuses; else None."""
    level = namespace_labels.get(ENFORCE, "privileged")
    check = LEVELS.get(level)
    if check is None:
        return None
    broken = check(pod.get("spec") or {})
    if not broken:
        return None
    name = (pod.get("metadata") or {}).get("name", "")
    version = namespace_labels.get(VERSION, "latest")
    return f'pods "{name}" is forbidden: violates PodSecurity "{level}:{version}": {", ".join(broken)}'
