"""pytest plugin: the ``prompt_cache`` fixture fails a test whose rendered prompt would break the
cached prefix of its committed baseline (docs/ci.md#pytest).

    def test_first_turn(prompt_cache):
        prompt_cache.check("first-turn", build_messages("Hi"), tools=TOOLS, model=MODEL)

The baseline is ``<test file's dir>/__prompt_baselines__/<name>.json`` (ini ``kvtool_baseline_dir``
changes the directory, relative to the test file's). The comparison is the gate's
(``kvtool.check.prompt_baselines``); its policy comes from the ini options ``kvtool_max_loss``,
``kvtool_min_stable_tokens``, ``kvtool_block_size``, ``kvtool_allow``, ``kvtool_volatile`` and
``kvtool_tokenizer``, overridden per test by ``@pytest.mark.prompt_cache(max_loss=..., ...)``.
A missing baseline fails (nothing is written) unless pytest runs with
``--kvtool-update-baselines``, which writes missing and changed baselines and passes them (the
volatile check still runs: a timestamp in the system prompt is never accepted that way).

Opt-in, not autoloaded: ``pytest_plugins = ["kvtool.check.pytest_plugin"]`` in the root
conftest.py (or ``-p kvtool.check.pytest_plugin``). Loading it imports the ``kvtool`` package
(about 0.3 s), which a ``pytest11`` entry point would impose on every pytest run wherever kvtool
is installed. Loading only adds the option, the ini keys and the marker; the tokenizer is loaded
once per session, at the first ``prompt_cache.check``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from kvtool.check.gate import CheckResult, Policy
    from kvtool.check.prompt_baselines import PromptOutcome
    from kvtool.tokenize import TokenizerBundle

UPDATE_OPTION = "--kvtool-update-baselines"
BASELINE_DIR = "__prompt_baselines__"
MARKER = "prompt_cache"
MARKER_KEYS = ("max_loss", "min_stable_tokens", "block_size", "allow", "volatile", "tokenizer")

_INI: dict[str, tuple[str, str, str | bool | list[str]]] = {
    "kvtool_baseline_dir": (
        "string",
        "directory of the prompt_cache baselines, relative to each test file's directory",
        BASELINE_DIR,
    ),
    "kvtool_max_loss": (
        "string",
        "cached tokens a prompt may lose against its baseline: TOKENS or PCT% (default 0)",
        "0",
    ),
    "kvtool_min_stable_tokens": (
        "string",
        "tokens a prompt must keep sharing with its baseline (default 0: no minimum)",
        "0",
    ),
    "kvtool_block_size": ("string", "cache block size in tokens (default 16)", "16"),
    "kvtool_allow": ("linelist", "regexes of known-stable strings that look volatile", []),
    "kvtool_volatile": ("bool", "scan the stable head for volatile content (default true)", True),
    "kvtool_tokenizer": (
        "string",
        "tokenizer for prompt_cache (default: kvtool's bundled deepseek-v4; never downloads)",
        "",
    ),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kvtool", "kvtool prompt-cache baselines")
    group.addoption(
        UPDATE_OPTION,
        action="store_true",
        default=False,
        help="write missing and changed prompt_cache baselines instead of failing on them",
    )
    for name, (kind, text, default) in _INI.items():
        parser.addini(name, text, type=kind, default=default)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}({', '.join(f'{k}=...' for k in MARKER_KEYS)}): the prompt_cache fixture's "
        "policy for this test (overrides the kvtool_* ini options)",
    )
    config.stash[_SESSION] = _Session()


@dataclass
class _Session:
    """Per-session state: loaded tokenizers, the baselines checked so far (path -> test id and
    content, to catch one name used for two prompts) and the baselines written."""

    tokenizers: dict[str, TokenizerBundle] = field(default_factory=dict)
    seen: dict[Path, tuple[str, bytes]] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)


_SESSION = pytest.StashKey[_Session]()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    session = config.stash.get(_SESSION, None)
    if session is None or not session.written:
        return
    terminalreporter.write_sep("-", f"kvtool: {len(session.written)} prompt baseline(s) written")
    for path in session.written:
        terminalreporter.write_line(_visible(_shown(config, path)))


def _visible(text: str) -> str:
    """``text`` safe for a terminal: newlines as ⏎, other unprintable characters (escapes,
    bidi controls) as their Python escapes."""
    text = text.replace("\n", "⏎")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _shown(config: pytest.Config, path: Path) -> str:
    """``path`` relative to the rootdir when under it."""
    try:
        return str(path.relative_to(config.rootpath))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class _Settings:
    """One test's settings: the gate's policy, the tokenizer spec ('': kvtool's default) and
    the baseline directory."""

    policy: Policy
    tokenizer: str
    directory: Path


class PromptCache:
    """The ``prompt_cache`` fixture: ``check`` one named prompt per call against its baseline."""

    def __init__(self, request: pytest.FixtureRequest):
        self._request = request

    def check(
        self,
        name: str,
        prompt: list | dict | str,
        *,
        tools: list | None = None,
        model: str | None = None,
    ) -> CheckResult:
        """Fail the test when ``prompt`` (chat messages with ``tools`` and ``model``, a request
        body, or a rendered prompt string) would break the cached prefix of the baseline
        ``name``, or holds volatile content in its stable head; return the gate's result."""
        from kvtool.errors import KvtoolError, OptionError

        try:
            settings = self._settings()
            outcome = self._outcome(name, prompt, tools, model, settings)
        except KvtoolError as exc:
            problem = str(exc)
            if isinstance(exc, OptionError) and exc.param in MARKER_KEYS:
                problem = (
                    f"{exc.param} (ini kvtool_{exc.param}, @pytest.mark.{MARKER}({exc.param}=...))"
                    f" {exc.message}"
                )
        else:
            config = self._request.config
            if outcome.written:
                config.stash[_SESSION].written.append(outcome.baseline)
            if outcome.result is None or not outcome.passed:
                shown = _shown(config, outcome.baseline)
                pytest.fail(_failure(outcome, shown, settings.policy), pytrace=False)
            return outcome.result
        # failed outside the except block: pytest shows one line, not a chained traceback
        pytest.fail(_visible(f"prompt_cache.check({name!r}): {problem}"), pytrace=False)

    def _outcome(
        self,
        name: str,
        prompt: list | dict | str,
        tools: list | None,
        model: str | None,
        settings: _Settings,
    ) -> PromptOutcome:
        """Check the prompt; ``OptionError`` for a name that another test used for another
        prompt in this session, else what ``check_prompt`` raises."""
        from kvtool.check.prompt_baselines import (
            baseline_bytes,
            baseline_path,
            check_prompt,
            prompt_request,
        )
        from kvtool.errors import OptionError

        config = self._request.config
        seen = config.stash[_SESSION].seen
        req = prompt_request(prompt, tools=tools, model=model)
        content = baseline_bytes(req)
        path = baseline_path(settings.directory, name)
        earlier = seen.get(path)
        if earlier is not None and earlier[1] != content:
            raise OptionError(
                "name",
                f"{name!r} was checked with another prompt by {earlier[0]}; give each prompt "
                "its own name (e.g. add the test parameter to it)",
            )
        outcome = check_prompt(
            name,
            req,
            settings.directory,
            self._tokenizer(settings.tokenizer),
            settings.policy,
            update=config.getoption(UPDATE_OPTION),
        )
        seen[path] = (self._request.node.nodeid, content)
        return outcome

    def _tokenizer(self, spec: str) -> TokenizerBundle:
        from kvtool.tokenize import load_tokenizer

        loaded = self._request.config.stash[_SESSION].tokenizers
        if spec not in loaded:
            loaded[spec] = load_tokenizer(spec or None)
        return loaded[spec]

    def _settings(self) -> _Settings:
        """The policy, tokenizer spec and baseline directory of this test: the ini options,
        then the closest ``prompt_cache`` marker's keywords. ``OptionError`` naming the key."""
        from kvtool.check.gate import Policy, parse_max_loss
        from kvtool.errors import OptionError

        config = self._request.config
        values: dict = {
            key: config.getini(f"kvtool_{key}") for key in MARKER_KEYS if key != "allow"
        }
        values["allow"] = config.getini("kvtool_allow")
        marker = self._request.node.get_closest_marker(MARKER)
        if marker is not None:
            if marker.args:
                raise OptionError(f"@pytest.mark.{MARKER}", "takes keywords only")
            unknown = sorted(set(marker.kwargs) - set(MARKER_KEYS))
            if unknown:
                raise OptionError(
                    f"@pytest.mark.{MARKER}",
                    f"has unknown keyword(s) {unknown}; expected some of {list(MARKER_KEYS)}",
                )
            values.update(marker.kwargs)
        max_loss = parse_max_loss(str(values["max_loss"]))
        allow = values["allow"]
        policy = Policy(
            block_size=_whole(values["block_size"], "block_size"),
            max_loss=max_loss.tokens,
            max_loss_pct=max_loss.percent,
            min_stable_tokens=_whole(values["min_stable_tokens"], "min_stable_tokens"),
            allow=(allow,) if isinstance(allow, str) else tuple(allow),
            volatile=_flag(values["volatile"], "volatile"),
        )
        directory = self._request.path.parent / config.getini("kvtool_baseline_dir")
        return _Settings(
            policy=policy, tokenizer=str(values["tokenizer"] or ""), directory=directory
        )


def _whole(value: object, key: str) -> int:
    """A non-negative whole number from an ini string or a marker keyword."""
    from kvtool.errors import OptionError

    text = str(value).strip()
    if not text.isdigit():
        raise OptionError(key, f"must be a whole number of tokens, got {value!r}")
    return int(text)


def _flag(value: object, key: str) -> bool:
    """A marker keyword that must be True or False (the ini option is parsed by pytest)."""
    from kvtool.errors import OptionError

    if not isinstance(value, bool):
        raise OptionError(key, f"must be True or False, got {value!r}")
    return value


def _failure(outcome: PromptOutcome, shown: str, policy: Policy) -> str:
    """The failure report: what broke, where, what it costs, and how to accept it."""
    if outcome.result is None:
        return _visible(
            f"prompt_cache: no baseline for {outcome.name!r} at {shown}; run pytest with "
            f"{UPDATE_OPTION} to write it, then review and commit it"
        )
    limit = (
        f"{policy.max_loss_pct:g}% of the cacheable prefix"
        if policy.max_loss_pct is not None
        else f"{policy.max_loss:,} tokens"
    )
    lines = [
        f"prompt {outcome.name!r} would break the cached prefix of its baseline {shown} "
        f"(block size {policy.block_size}, max loss {limit}):"
    ]
    for f in outcome.result.findings:
        lines.append(f"  [{f.check}] {f.message}")
        if f.diff:
            d = f.diff
            lines.append(
                f"    …{d.get('before', '')}[-{d.get('removed', '')}-]"
                f"{{+{d.get('added', '')}+}}{d.get('after', '')}…"
            )
    if any(f.check == "baseline" for f in outcome.result.findings):
        lines.append(
            f"If the change is intended, run pytest with {UPDATE_OPTION} and commit the baseline."
        )
    return "\n".join(_visible(line) for line in lines)


@pytest.fixture
def prompt_cache(request: pytest.FixtureRequest) -> PromptCache:
    """Check rendered prompts against committed baselines: ``prompt_cache.check(name, messages,
    tools=..., model=...)`` fails the test when the prompt would break the cached prefix."""
    return PromptCache(request)
