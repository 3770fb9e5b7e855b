"""Kubernetes entries of the file ledger, mirrored into their run's ConfigMap in the cluster
(`targets.kubernetes.runledger`), so that any operator, or the next nightly run, can see and
undo what a lost runner left applied.

Every append of an entry that names a cluster ledger goes there too, from whichever process
writes it: the runner (applied, extended), a `revert` or `recover` (reverted). An applied
entry that cannot be mirrored stops the change (it would be a change nobody else can see);
a reverted one only warns (the change is undone; the ConfigMap then says so late, and a
later recover replays an idempotent undo). The last revert of a run deletes its ConfigMap.
"""

from __future__ import annotations

import json
import warnings
from typing import TYPE_CHECKING

from inferchaos.errors import FaultError
from inferchaos.faults.ledger import Entry, open_of

if TYPE_CHECKING:
    from inferchaos.faults.ledger import Ledger


def mirror(entry: Entry, ledger: Ledger) -> None:
    from inferchaos.faults.undo import kube_connection
    from inferchaos.targets.kubernetes import runledger

    t = entry.target
    try:
        conn = kube_connection(t["connection"])
        expires = entry.wall + float(t.get("expire_after_s", 900))
        runledger.append(conn, t["namespace"], t["ledger"], entry.to_json(), entry.operator or "",
                         t.get("runner_pod", ""), expires)
        if entry.event == "reverted":
            name = runledger.PREFIX + t["ledger"]
            for run in runledger.ledgers(conn, t["namespace"]):
                if run.name == name and not open_of(entries_of(run.lines)):
                    runledger.delete(conn, t["namespace"], name)
    except (FaultError, KeyError, ValueError) as exc:
        if entry.event == "applied":
            raise FaultError(f"{entry.fault}: the run's ledger in the cluster was not written, nothing "
                             f"changed: {exc}") from None
        warnings.warn(f"{entry.fault} {entry.id}: reverted, but its ledger in the cluster still shows it "
                      f"applied ({exc}); `inferchaos recover --expired` closes it", stacklevel=2)


def entries_of(lines: tuple[str, ...]) -> list[Entry]:
    out = []
    for line in lines:
        try:
            out.append(Entry.from_dict(json.loads(line)))
        except (json.JSONDecodeError, TypeError, KeyError):
            continue
    return out
