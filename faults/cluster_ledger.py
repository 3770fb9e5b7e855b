"""Kubernetes entries of the file ledger, mirrored into their run's ConfigMap in the cluster
(`targets.kubernetes.runledger`), so that any operator, or the next nightly run, can see and
undo what a lost runner left applied.

Every append of an entry that names a cluster ledger goes there too, from whichever process
writes it: the runner (applied, extended), a `revert` or `recover` (reverted). A change's
first entry that cannot be mirrored stops the change (it would be one nobody else can see),
and the file closes it; any later one only warns (the change is made or undone; the
ConfigMap says so late, and a later recover replays an idempotent undo). The last revert of
a run deletes its ConfigMap.
"""

from __future__ import annotations

import json
import warnings

from inferchaos.ground.errors import FaultError, InferchaosError
from inferchaos.faults.ledger import Entry, open_of


class NotMirrored(FaultError):
    """The first entry of a change could not be written to the cluster: the change is not made."""


def mirror(entry: Entry, first: bool = False) -> None:
    """Append the entry to its run's ConfigMap; after a revert that leaves nothing open,
    delete the ConfigMap (only as it was read: a newer entry written meanwhile keeps it)."""
    from urllib3.exceptions import HTTPError as Urllib3Error

    from inferchaos.faults.undo_kube import RUN_ID, checked_namespace, kube_connection
    from inferchaos.targets.kubernetes import runledger

    t = entry.target
    try:
        checked_namespace(t["namespace"])
        if not RUN_ID.fullmatch(str(t["ledger"])):
            raise FaultError(f"ledger {t['ledger']!r} is not a run id the suite makes: refused")
        conn = kube_connection(t["connection"])
        expires = entry.wall + float(t.get("expire_after_s", 900))
        lines, version = runledger.append(conn, t["namespace"], t["ledger"], entry.to_json(), entry.operator or "",
                                          t.get("runner_pod", ""), expires)
        if entry.event == "reverted" and not open_of(entries_of(lines)):
            runledger.delete(conn, t["namespace"], runledger.PREFIX + t["ledger"], version)
    except (InferchaosError, KeyError, ValueError, OSError, Urllib3Error) as exc:
        if first:
            raise NotMirrored(f"{entry.fault}: the run's ledger in the cluster was not written, nothing "
                              f"changed: {exc}") from None
        warnings.warn(f"{entry.fault} {entry.id}: its ledger in the cluster was not updated ({entry.event}: {exc}); "
                      "the file ledger has it, and `inferchaos recover --expired` closes what it leaves open",
                      stacklevel=2)


def entries_of(lines: tuple[str, ...], refused: list[str] | None = None) -> list[Entry]:
    """The entries of a ConfigMap's lines, each type-checked; why each other line is not one
    goes to `refused` (a ConfigMap is written whole: no line of it is a crash's)."""
    out = []
    for n, line in enumerate(lines, 1):
        try:
            out.append(Entry.from_dict(json.loads(line)))
        except (json.JSONDecodeError, ValueError, TypeError) as exc:
            if refused is not None:
                refused.append(f"line {n}: not a ledger entry ({exc}): refused")
    return out
