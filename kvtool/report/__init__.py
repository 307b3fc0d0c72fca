"""Rendering only: command results (the JSON the stages return) as terminal tables and HTML.

- ``format``: number formatting shared by every renderer (``pct``, ``num``, ``money``,
  ``seconds``);
- ``terminal``: rich tables of ``ingest`` and ``analyze``; ``simulate`` and ``replay``: of
  ``simulate`` and of ``replay``/``validate``;
- ``html`` (with ``report.html.jinja``) and ``figures``: the self-contained HTML page and its
  plotly charts.

Nothing here computes or reads a database; ``kvtool.overview`` gathers what ``kvtool report``
shows.
"""
