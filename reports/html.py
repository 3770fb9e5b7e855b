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
.pass{color:#2e7d32;font-weight:600} .fail,.aborted,.error{color:#c62828;font-weight:600}
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


def summary_page(summary: dict, timelines: dict[str, Path]) -> str:
    """Verdict table first (what the on-call person needs), then per experiment its SLOs
    and its timeline, inlined as a data: URI so the page is one file."""
    experiments = summary.get("experiments", [])
    counts = {v: sum(e["verdict"] == v for e in experiments) for v in ("pass", "fail", "aborted", "error")}
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
    return _page("inferchaos summary", head + table + "".join(sections))


def _section(e: dict, png: Path | None) -> str:
    img = ""
    if png is not None and png.is_file():
        data = base64.b64encode(png.read_bytes()).decode()
        img = f"<img alt=\"timeline of {escape(e['id'])}\" src=\"data:image/png;base64,{data}\">"
    return (f"<h2 id=\"{escape(e['id'])}\">{escape(e['id'])}</h2>{_verdict_line(e)}" + slo_table(e) + img)


def _verdict_line(e: dict) -> str:
    why = e.get("aborted") or e.get("error") or ""
    fw = e.get("fault_window") or {}
    window = ""
    if fw.get("inject_s") is not None and fw.get("revert_s") is not None:
        window = f" · fault from +{fw['inject_s']:.1f}s to +{fw['revert_s']:.1f}s"
    return (f"<p><span class={escape(e['verdict'])}>{escape(e['verdict'].upper())}</span> · fault "
            f"{escape(e['fault'])} · {e.get('requests', 0)} requests{window}"
            + (f" · {escape(why)}" if why else "")
            + (f" · <a href=\"{escape(e['labels']['runbook'])}\">runbook</a>" if e.get("labels", {}).get("runbook")
               else "") + "</p>")


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>\n")
