"""Last night against tonight: what changed between two summary.json files.

For the nightly staging run, the question is not "did it pass" but "what got worse": a
verdict that flipped, an SLO newly breached, an observed value that moved the wrong way
while still inside its objective. Direction comes from the objective (`<=` lower is
better, `>=` higher is better), so the comparison needs no table of its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from inferchaos.ground.errors import UsageError

#: a relative move smaller than this is noise, not a trend.
NOISE = 0.10


@dataclass(frozen=True)
class Change:
    experiment: str
    what: str  # verdict | slo | added | removed
    name: str
    old: object
    new: object
    regression: bool
    text: str


def load_summary(path: Path) -> dict:
    """A summary.json, or a report directory holding one."""
    file = path / "summary.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise UsageError(f"no summary at {file}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {file}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{file} is not JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, dict) or not isinstance(data.get("experiments"), list):
        raise UsageError(f"{file} is not an inferchaos summary (no \"experiments\" list)")
    return data


def compare(old: dict, new: dict, noise: float = NOISE) -> list[Change]:
    before = {e["id"]: e for e in old["experiments"]}
    after = {e["id"]: e for e in new["experiments"]}
    out: list[Change] = []
    for eid in sorted(set(before) | set(after)):
        if eid not in after:
            # a gate that stopped running an experiment has stopped checking it
            out.append(Change(eid, "removed", eid, before[eid]["verdict"], None, True,
                              f"{eid}: missing: not run or skipped (was {before[eid]['verdict']}) (REGRESSION)"))
            continue
        if eid not in before:
            e = after[eid]
            out.append(Change(eid, "added", eid, None, e["verdict"], e["verdict"] != "pass",
                              f"{eid}: new experiment, {e['verdict']}"))
            continue
        out.extend(_experiment(before[eid], after[eid], noise))
    return out


def _experiment(old: dict, new: dict, noise: float) -> list[Change]:
    eid, out = new["id"], []
    if old["verdict"] != new["verdict"]:
        worse = old["verdict"] == "pass" or new["verdict"] in ("inconclusive", "error")
        out.append(Change(eid, "verdict", "verdict", old["verdict"], new["verdict"], worse,
                          f"{eid}: verdict {old['verdict']} -> {new['verdict']}"
                          + (" (REGRESSION)" if worse else "")))
    slos_old = {s["name"]: s for s in old.get("slos", [])}
    slos_new = {s["name"] for s in new.get("slos", [])}
    if new["verdict"] not in ("inconclusive", "error"):  # those say why already
        for name in sorted(set(slos_old) - slos_new):
            out.append(Change(eid, "slo", name, slos_old[name].get("observed"), None, True,
                              f"{eid}: {name} no longer judged (was {_fmt(slos_old[name].get('observed'))}) "
                              "(REGRESSION)"))
    for s in new.get("slos", []):
        was = slos_old.get(s["name"])
        if was is None:
            continue
        a, b = was.get("observed"), s.get("observed")
        if a is not None and b is None:
            out.append(Change(eid, "slo", s["name"], a, None, True,
                              f"{eid}: {s['name']} {_fmt(a)} -> not measured ({s.get('detail', '')}) (REGRESSION)"))
            continue
        breach = was["ok"] and not s["ok"]
        fixed = not was["ok"] and s["ok"]
        moved = _moved(s["objective"], a, b, noise)
        if not (breach or fixed or moved):
            continue
        text = f"{eid}: {s['name']} {_fmt(a)} -> {_fmt(b)} (objective {s['objective']})"
        if breach:
            text += ": newly BREACHED (REGRESSION)"
        elif fixed:
            text += ": back within objective"
        else:
            text += f": {moved}"
        out.append(Change(eid, "slo", s["name"], a, b, breach, text))
    return out


def _moved(objective: str, a: float | None, b: float | None, noise: float) -> str | None:
    """'worse by 35%' / 'better by 20%' when the value moved beyond the noise, else None."""
    if a is None or b is None or a == b:
        return None
    lower_is_better = objective.strip().startswith("<=")
    base = abs(a) if a else abs(b)
    if base == 0 or abs(b - a) / base < noise:
        return None
    worse = (b > a) if lower_is_better else (b < a)
    return f"{'worse' if worse else 'better'} by {abs(b - a) / base:.0%}"


def _fmt(v: object) -> str:
    return "not measured" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def render(changes: list[Change], old_name: str, new_name: str) -> str:
    if not changes:
        return f"no changes between {old_name} and {new_name} beyond {NOISE:.0%} noise"
    regressions = sum(c.regression for c in changes)
    lines = [f"{old_name} -> {new_name}: {len(changes)} changes, {regressions} regressions"]
    lines += [("  ! " if c.regression else "    ") + c.text for c in changes]
    return "\n".join(lines)
