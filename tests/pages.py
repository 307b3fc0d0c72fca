"""Reading an HTML report back: its embedded chart specs."""

from __future__ import annotations

import re

import orjson

CHART = re.compile(
    r'<script type="application/json" class="kv-chart" '
    r'data-target="chart-\d+-(\w+)">(.*?)</script>',
    re.S,
)


def charts(page: str) -> dict[str, dict]:
    """Chart name -> plotly spec, as embedded in the page."""
    return {name: orjson.loads(spec.replace("<\\/", "</")) for name, spec in CHART.findall(page)}
