"""HTML without a toolchain: the SLO table attached to each Allure result, and
`summary.html`, one self-contained page (images inlined) that opens from a CI artefact
or a mail attachment with nothing else installed.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#212121;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
table{border-collapse:collapse;margin:8px 0 12px} th,td{border:1px solid #ddd;padding:4px 10px;text-align:left;
font-size:13px} th{background:#f5f5f5} td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#2e7d32;font-weight:600} .fail,.aborted,.error,.inconclusive{color:#c62828;font-weight:600}
tr.breached td{background:#ffebee} .muted{color:#757575;font-size:12px} img{max-width:100%;border:1px solid #eee}
"""


def slo_table(experiment: dict) -> str:
    """The SLO results of one experiment as an HTML table (a fragment)."""
    rows = []
    for s in experiment.get("slos", []):
        cls = "" if s["ok"] else ' class="breached"'
        verdict = "ok" if s["ok"] else "BREACHED"
        observed = "—" if s.get("observed") is None else f"{s['observed']:.4g}"
        rows.append(f"<tr{cls}><td>{escape(s['name'])}</td><td>{escape(s['objective'])}</td>"
                    f"<td class=num>{observed}</td><td class=\"{'pass' if s['ok'] else 'fail'}\">{verdict}"
                    f"{' (optional)' if s.get('optional') else ''}</td><td>{escape(s.get('detail') or '')}</td></tr>")
    return ("<table><tr><th>SLO</th><th>objective</th><th>observed</th><th>verdict</th><th>detail</th></tr>"
            + "".join(rows) + "</table>")


def slo_page(experiment: dict) -> str:
    return _page(f"{experiment['id']}: SLOs", f"<h1>{escape(experiment['id'])}</h1>{_verdict_line(experiment)}"
                 + slo_table(experiment))


def summary_page(summary: dict, timelines: dict[str, Path], side_by_side: Path | None = None) -> str:
    """Verdict table first (what the on-call person needs), then per experiment its SLOs
    and its timeline, inlined as a data: URI so the page is one file."""
    experiments = summary.get("experiments", [])
    counts = {v: sum(e["verdict"] == v for e in experiments) for v in ("pass", "fail", "inconclusive", "aborted",
                                                                                 "error")}
    head = (f"<h1>inferchaos: {len(experiments)} experiments on target {escape(str(summary.get('target')))}</h1>"
            f"<p class=muted>" + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + "</p>")
    rows = []
    for e in experiments:
        breached = ", ".join(s["name"] for s in e.get("slos", []) if not s["ok"]) or "—"
        rows.append(f"<tr><td><a href=\"#{escape(e['id'])}\">{escape(e['id'])}</a></td><td>{escape(e['fault'])}</td>"
                    f"<td class={escape(e['verdict'])}>{escape(e['verdict'].upper())}</td>"
                    f"<td class=num>{e.get('requests', 0)}</td><td>{escape(breached)}</td></tr>")
    table = ("<table id=verdicts><tr><th>experiment</th><th>fault</th><th>verdict</th><th>requests</th>"
             "<th>breached</th></tr>" + "".join(rows) + "</table>")
    sections = [_section(e, timelines.get(e["id"])) for e in experiments]
    compare = ""
    if side_by_side is not None and side_by_side.is_file():
        rows = "".join(
            f"<tr><td>{escape(e['id'])}</td>" + "".join(
                f"<td class=num>{_num(e['autoscaling'].get(k))}</td>" for k in
                ("ready_at_inject", "decision_s", "capacity_s", "scale_out_s", "max_ready")) + "</tr>"
            for e in experiments if e.get("autoscaling"))
        compare = ("<h2 id=autoscaling>autoscaling side by side</h2><table><tr><th>experiment</th><th>ready at "
                   "surge</th><th>decision s</th><th>capacity s</th><th>scale_out_s</th><th>max ready</th></tr>"
                   + rows + "</table>" + _img(side_by_side, "the autoscaled experiments side by side"))
    return _page("inferchaos summary", head + table + _savings(experiments) + compare + _inventory(summary)
                 + "".join(sections))


def _savings(experiments: list[dict]) -> str:
    """For each experiment that held a warm pool or a pre-heat, against one of the same fault
    without: what the extra capacity cost a day, and the SLO minutes it saved in this run."""
    lines = []
    for e in experiments:
        cost = e.get("cost") or {}
        if not cost.get("warm_pool_replicas") and not (e.get("figures") or {}).get("settings", {}).get("preheat"):
            continue
        bases = [b for b in experiments if b is not e and b["fault"] == e["fault"] and b.get("cost")
                 and not b["cost"].get("warm_pool_replicas") and not (b.get("figures") or {}).get("settings", {})
                 .get("preheat")]
        for b in bases[:1]:
            saved = b["cost"]["slo_minutes_lost"] - cost.get("slo_minutes_lost", 0)
            extra = cost.get("total_cost", 0) - b["cost"].get("total_cost", 0)
            per_day = extra / cost["window_s"] * 86400 if cost.get("window_s") and "total_cost" in cost else None
            money = (f"cost {extra:+.4f} {cost.get('currency', '$')} over the run ({per_day:.2f} "
                     f"{cost.get('currency', '$')}/day)" if per_day is not None else "cost not priced (--gpu-hour-price)")
            lines.append(f"<li>{escape(e['id'])} against {escape(b['id'])}: {money}; saved {saved:.2f} SLO minutes "
                         f"in this run</li>")
    return ("<h2 id=savings>what the extra capacity bought</h2><ul>" + "".join(lines) + "</ul>") if lines else ""


def _inventory(summary: dict) -> str:
    rows = summary.get("inventory") or []
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{escape(str(w.get('namespace') or '-'))}</td><td>{escape(str(w.get('name')))}</td>"
        f"<td>{escape(str(w.get('model')))}</td><td class=num>{w.get('replicas_ready')}/{w.get('replicas_desired')}</td>"
        f"<td class=num>{w.get('gpus')}</td><td>{escape(', '.join(w.get('gpu_types') or []) or '-')}</td>"
        f"<td>{escape(', '.join(f'{k}={v}' for k, v in (w.get('owner') or {}).items()) or '-')}</td>"
        f"<td class={'fail' if w.get('shadow') else 'pass'}>{'YES' if w.get('shadow') else '-'}</td></tr>"
        for w in rows)
    return ("<h2 id=inventory>what was tested</h2><table><tr><th>namespace</th><th>workload</th><th>model</th>"
            "<th>ready</th><th>GPUs</th><th>GPU type</th><th>owner</th><th>shadow AI</th></tr>" + body + "</table>")


def _num(v: object) -> str:
    return "—" if v is None else f"{v:g}" if isinstance(v, (int, float)) else escape(str(v))


def _img(png: Path, alt: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode()
    return f"<img alt=\"{escape(alt)}\" src=\"data:image/png;base64,{data}\">"


def _section(e: dict, png: Path | None) -> str:
    img = _img(png, f"timeline of {e['id']}") if png is not None and png.is_file() else ""
    return (f"<h2 id=\"{escape(e['id'])}\">{escape(e['id'])}</h2>{_verdict_line(e)}" + slo_table(e) + img)


def _verdict_line(e: dict) -> str:
    why = e.get("inconclusive") or e.get("aborted") or e.get("error") or ""
    fw = e.get("fault_window") or {}
    window = ""
    if fw.get("inject_s") is not None and fw.get("revert_s") is not None:
        window = f" · fault from +{fw['inject_s']:.1f}s to +{fw['revert_s']:.1f}s"
    return (f"<p><span class={escape(e['verdict'])}>{escape(e['verdict'].upper())}</span> · fault "
            f"{escape(e['fault'])} · {e.get('requests', 0)} requests{window}"
            + (f" · load: {escape(e['load']['describe'])}" if (e.get("load") or {}).get("describe") else "")
            + (f" · {escape(why)}" if why else "")
            + (f" · <a href=\"{escape(e['labels']['runbook'])}\">runbook</a>" if e.get("labels", {}).get("runbook")
               else "") + "</p>"
            + (f"<p class=muted>{escape(e['cost']['line'])}</p>" if (e.get("cost") or {}).get("line") else ""))


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>\n")
