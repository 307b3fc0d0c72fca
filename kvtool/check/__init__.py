"""``kvtool check``, the CI gate: fail a prompt change that would break the cached prefix.

- ``gate``: the policy, the three checks (baseline, consistency, volatile) and their findings;
- ``baseline``: where the baseline fixtures come from (a file, ``git:REF``, ``git:REF:PATH``);
- ``provider``: losses counted by a hosted provider's rules and priced (``--provider``);
- ``render``: terminal text, GitHub Actions annotations, JUnit XML;
- ``sarif``: SARIF 2.1.0 for code-scanning annotations;
- ``pytest_plugin`` (opt-in) and ``prompt_baselines``: the ``prompt_cache`` pytest fixture and
  its committed baseline files.

The gate reaches analyze only through its public break API (``kvtool.analyze.breaks``) and the
volatile scan (``kvtool.textscan.hazards``). docs/ci.md is the user's page.
"""

from kvtool.check.baseline import Baseline, resolve_baseline
from kvtool.check.gate import (
    CHECKS,
    CheckResult,
    Finding,
    FixtureRef,
    MaxLoss,
    Policy,
    check,
    parse_max_loss,
)
from kvtool.check.provider import ProviderGate, ProviderLoss
from kvtool.check.render import diff_markup, github_annotations, junit_xml, render_check

__all__ = [
    "CHECKS",
    "Baseline",
    "CheckResult",
    "Finding",
    "FixtureRef",
    "MaxLoss",
    "Policy",
    "ProviderGate",
    "ProviderLoss",
    "check",
    "diff_markup",
    "github_annotations",
    "junit_xml",
    "parse_max_loss",
    "render_check",
    "resolve_baseline",
]
