"""What kvtool finds in prompt text, without any other kvtool stage: volatile spans (timestamps
and ids, ``volatile``), whitespace folding (``fold``) and common prefixes (``prefix``). Both break
analysis (on text) and a redacted ingest (which keeps only fingerprints of these findings) use them.
"""

from kvtool.textscan.fold import fold_text
from kvtool.textscan.prefix import lcp
from kvtool.textscan.volatile import (
    Span,
    VolatileChange,
    hazards,
    id_spans,
    timestamp_spans,
    volatile_change,
)

__all__ = [
    "Span",
    "VolatileChange",
    "fold_text",
    "hazards",
    "id_spans",
    "lcp",
    "timestamp_spans",
    "volatile_change",
]
