"""What a run leaves for people and machines: the timeline plot, SLO tables, Allure
results, summary.json/summary.html, the rendered Allure site and the night-to-night trend.

Reports read data (summary entries, request logs, ledger entries), never the engine.
"""

from inferchaos.reports.compare import compare, load_summary, render
from inferchaos.reports.writer import replot_missing, write_run, write_summary, write_summary_html

__all__ = ["compare", "load_summary", "render", "replot_missing", "write_run", "write_summary", "write_summary_html"]
