"""CI gates: absolute floors and ceilings, and latency regressions judged on distributions.

A policy (YAML, see ``examples/gates.yaml``) holds ``rules`` (min accuracy, max accuracy drop vs
the float model, min top-1 agreement, max p90 latency, max size, marks a record may not carry
such as ``forbid_marks: [slower than fp32]``; each for the records its ``match`` selects, with
shell wildcards) and an optional ``regression`` section: the current
per-call latency samples are compared with a stored baseline's, and a check fails only when
the whole bootstrap confidence interval of the ratio of medians lies above ``1 + tolerance``,
i.e. when a slowdown beyond the tolerance is statistically clear.

Exit codes: 0 every check passed, 1 a check failed, 2 a usage error (bad policy, malformed or
old results, a baseline of other models or another machine, a check that cannot be evaluated),
3 an internal error (see :mod:`modelpress.exits`).

>>> from modelpress.measure.gate import load_policy, run_gates                # doctest: +SKIP
>>> from modelpress.measure.results import load_results
>>> report = run_gates(load_results("results.json"), load_policy("gates.yaml"),
...                    baseline=load_results("baseline.json"))
>>> report.exit_code, report.write_junit("gates.xml")
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError, one_line
from .gate_format import gate_junit_xml, gate_markdown, print_gate
from .results import Record, Results, load_results

CheckStatus = Literal["pass", "fail", "error", "skip"]
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}


class _Strict(BaseModel):
    """Unknown keys are refused with the list of valid ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(map(str, data)) - set(cls.model_fields))
            if unknown:
                raise ValueError(f"unknown key(s) {unknown}; valid: {sorted(cls.model_fields)}")
        return data


class Match(_Strict):
    """Which records a rule applies to; fnmatch wildcards (``*``, ``?``, ``[..]``)."""

    model: str = "*"
    target: str = "*"
    precision: str = "*"
    family: str = "*"

    def matches(self, rec: Record) -> bool:
        pairs = ((self.model, rec.model), (self.target, rec.target))
        pairs += ((self.precision, rec.precision), (self.family, rec.family))
        return all(fnmatchcase(value, pattern) for pattern, value in pairs)


def parse_size(value: int | float | str) -> int:
    """Bytes from ``1500000``, ``"1.5 MB"`` (10^6) or ``"512 KiB"`` (2^10)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"size must be a number of bytes or like '1.5 MB', got {value!r}")
    try:
        m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([A-Za-z]*)\s*", str(value))
        unit = m.group(2).lower() if m else ""
        n = float(m.group(1)) * _UNITS[unit] if m and unit in _UNITS else None
    except (ValueError, OverflowError):  # "1.2.3", a 5000-digit integer
        n = None
    if n is None:
        raise ValueError(f"size {value!r} is not a number of bytes or like '1.5 MB' / '512 KiB'")
    if not math.isfinite(n) or n <= 0:
        raise ValueError(f"size must be a positive, finite number of bytes, got {value!r}")
    return int(n)


class Rule(_Strict):
    name: str = ""
    match: Match = Match()
    min_accuracy: float | None = None  # fraction in [0, 1]
    max_accuracy_drop: float | None = None  # percentage points below the float reference
    min_agreement: float | None = None  # top-1 agreement with the float model, [0, 1]
    max_p90_ms: dict[int, float] | None = None  # {batch: ms}; a plain number means batch 1
    max_size: int | None = None  # bytes; also "1.5 MB", "512 KiB"
    forbid_marks: list[str] | None = None  # e.g. ["slower than fp32"]: a record marked fails

    @field_validator("forbid_marks")
    @classmethod
    def _marks(cls, v: list[str] | None) -> list[str] | None:
        from .marks import LEGEND

        unknown = [m for m in v or [] if m not in LEGEND]
        if v is not None and (not v or unknown):
            got = f"unknown mark(s) {unknown}" if unknown else "an empty list"
            raise ValueError(f"{got}; valid marks: {sorted(LEGEND)}")
        return v

    @field_validator("min_accuracy", "min_agreement")
    @classmethod
    def _fraction(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 <= v <= 1.0:
            hint = f"; did you mean {v / 100:g}?" if 1 < v <= 100 else ""
            raise ValueError(f"is a fraction in [0, 1], got {v}{hint}")
        return v

    @field_validator("max_accuracy_drop")
    @classmethod
    def _points(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 <= v <= 100.0:
            raise ValueError(f"is in percentage points, 0 to 100, got {v}")
        return v

    @field_validator("max_p90_ms", mode="before")
    @classmethod
    def _latency(cls, v: Any) -> Any:
        v = {1: v} if isinstance(v, int | float) and not isinstance(v, bool) else v
        if not isinstance(v, dict):
            return v  # pydantic names the type it expected

        def bad(batch: Any, ms: Any) -> bool:  # JSON keys are strings: "32" is batch 32
            if isinstance(batch, str) and batch.strip().isascii() and batch.strip().isdigit():
                batch = int(batch)
            if isinstance(ms, bool) or not isinstance(ms, int | float):
                return True
            return not (isinstance(batch, int) and batch >= 1 and math.isfinite(ms) and ms > 0)

        if any(bad(b, ms) for b, ms in v.items()):
            raise ValueError(f"needs {{batch >= 1: positive ms}} (or ms for batch 1), got {v}")
        return v

    @field_validator("max_size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        return None if v is None else parse_size(v)

    @model_validator(mode="after")
    def _has_threshold(self) -> Rule:
        if all(getattr(self, k) is None for k in THRESHOLDS):
            raise ValueError(
                f"rule {self.name or self.match} sets no threshold; set one of {THRESHOLDS}"
            )
        return self


THRESHOLDS = (
    "min_accuracy",
    "max_accuracy_drop",
    "min_agreement",
    "max_p90_ms",
    "max_size",
    "forbid_marks",
)


class Regression(_Strict):
    """Latency against a baseline. ``mode: stored`` (the default) compares the results' samples
    with a baseline results file's (``--baseline``); ``mode: interleaved`` measures the baseline
    artifacts (``baseline:``, a results file or one artifact) and the current ones now,
    alternately, in one worker (:mod:`modelpress.measure.gate_interleaved`)."""

    mode: Literal["stored", "interleaved"] = "stored"
    baseline: str | None = None  # interleaved: a results .json of the base build, or an artifact
    match: Match = Match()
    # allowed slowdown of the median: 0.10 = 10 % (the default: 0.10 stored, 0.02 interleaved)
    tolerance: float | None = Field(None, ge=0.0, le=10.0)
    confidence: float = Field(0.95, ge=0.5, lt=1.0)  # of the bootstrap interval
    batches: list[int] | None = None  # None: every batch size measured in both files
    n_boot: int = Field(2000, ge=200, le=100_000)
    seed: int = Field(0, ge=0)
    missing: Literal["error", "skip"] = "error"  # a current record with no baseline record
    require_same_cpu: bool = True
    blocks: int = Field(30, ge=5, le=1000)  # interleaved: ABBA block pairs per batch size
    calls_per_block: int = Field(50, ge=1, le=100_000)  # interleaved
    reload: bool = True  # interleaved: fresh sessions for every block pair

    @model_validator(mode="after")
    def _baseline_for_interleaved(self) -> Regression:
        if self.mode == "interleaved" and not self.baseline:
            raise ValueError(
                "mode interleaved needs baseline: (a results .json of the base build, or an "
                ".onnx / .tflite artifact)"
            )
        if self.mode == "stored" and self.baseline:
            raise ValueError(
                "baseline: is for mode interleaved; a stored baseline is --baseline FILE"
            )
        return self

    def allowed_slowdown(self) -> float:
        """The tolerance, or the mode's default (0.10 stored; interleaved: measured, see
        benchmarks/results/gates_interleaved.md)."""
        from .interleave import DEFAULT_TOLERANCE

        if self.tolerance is not None:
            return self.tolerance
        return DEFAULT_TOLERANCE if self.mode == "interleaved" else 0.10


class Policy(_Strict):
    version: Literal[1] = 1
    fail_on_skipped: bool = False  # a target skipped as unavailable fails the gate
    rules: list[Rule] = []
    regression: Regression | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Policy:
        if not self.rules and self.regression is None:
            raise ValueError("the policy has no rules and no regression section: it checks nothing")
        return self


def load_policy(path: str | Path) -> Policy:
    """Read a YAML (or JSON) policy; every problem (a file that is not UTF-8 or not YAML, a key
    given twice, unknown keys, impossible thresholds) is one ConfigError line with the file, the
    line and the key path."""
    from ..userinput import key_path
    from ..yamlfile import load_yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"policy file {path} does not exist; see examples/gates.yaml")
    data, lines = load_yaml(path, ConfigError, what="policy ")
    if not isinstance(data, dict):
        raise ConfigError(f"policy {path} must be a mapping with rules: and/or regression:")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = key_path(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if not err["type"].startswith("value_error") and "input" in err:
            msg += f" (got {one_line(repr(err['input']))[:60]})"
        line = lines.line(tuple(err["loc"]))
        where = f"{path}:{line}" if line else str(path)
        raise ConfigError(f"policy {where}: {loc}: {one_line(msg)}") from exc


@dataclass
class GateCheck:
    record: str  # model/target/precision
    name: str  # min_accuracy, max_p90_ms@batch1, regression_p50@batch32, status, ...
    status: CheckStatus
    measured: float | str | None = None
    threshold: float | str | None = None
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class GateReport:
    checks: list[GateCheck]

    def count(self, status: CheckStatus) -> int:
        return sum(c.status == status for c in self.checks)

    @property
    def exit_code(self) -> int:
        return 2 if self.count("error") else 1 if self.count("fail") else 0

    def summary(self) -> str:
        counts = ", ".join(f"{self.count(s)} {w}" for s, w in _WORDS.items())
        return f"gate: {counts} -> exit {self.exit_code}"

    def write_junit(self, path: str | Path) -> Path:
        from ..fsutil import atomic_write_text

        return atomic_write_text(path, gate_junit_xml(self))


_WORDS = {"pass": "passed", "fail": "failed", "error": "errors", "skip": "skipped"}


def _check_value(
    rec: Record, name: str, limit: float, value: float | None, floor: bool, missing: str
) -> GateCheck:
    if value is None:
        return GateCheck(rec.label, name, "error", None, limit, f"{missing}; cannot check {name}")
    ok = value >= limit if floor else value <= limit
    fmt = "{:,.0f} B" if name == "max_size" else "{:.4g}"
    word = (">=" if floor else "<=") if ok else ("not >=" if floor else "not <=")
    msg = f"{fmt.format(value)} {word} {fmt.format(limit)}"
    return GateCheck(rec.label, name, "pass" if ok else "fail", value, limit, msg)


def rule_checks(rule: Rule, rec: Record) -> list[GateCheck]:
    """The rule's thresholds on one ok record; a value the results lack is an error."""
    val = rec.validation
    no_val = "no validation in the results (bench ran without data or with validation off)"
    no_ref = "no float reference in the results (bench ran without reference logits)"
    specs = [  # (check, threshold, measured, is a floor, why it may be missing)
        ("min_accuracy", rule.min_accuracy, val and val.accuracy, True, no_val),
        ("max_accuracy_drop", rule.max_accuracy_drop, val and val.accuracy_drop, False, no_ref),
        ("min_agreement", rule.min_agreement, val and val.agreement, True, no_ref),
        *(
            (
                f"max_p90_ms@batch{b}",
                ms,
                (lat := rec.latency_at(b)) and lat.p90_ms,
                False,
                f"batch {b} was not measured (bench --batch {b})",
            )
            for b, ms in sorted((rule.max_p90_ms or {}).items())
        ),
        ("max_size", rule.max_size, rec.size_bytes, False, "the size on disk is unknown"),
    ]
    checks = [_check_value(rec, *spec) for spec in specs if spec[1] is not None]
    return checks + ([marks_check(rule.forbid_marks, rec)] if rule.forbid_marks else [])


def marks_check(forbidden: list[str], rec: Record) -> GateCheck:
    """Fails when ``rec`` carries one of the ``forbidden`` marks (set by the run before the
    gate, see :mod:`modelpress.measure.marks`)."""
    hit = [m for m in forbidden if m in rec.marks]
    msg = f"marked {', '.join(hit)}" if hit else f"none of {', '.join(forbidden)}"
    status: CheckStatus = "fail" if hit else "pass"
    shown = ", ".join(hit) or "none"
    return GateCheck(rec.label, "forbid_marks", status, shown, ", ".join(forbidden), msg)


def status_check(rec: Record, policy: Policy) -> GateCheck:
    if rec.status == "ok":
        return GateCheck(rec.label, "status", "pass", "ok", "ok", "measured")
    if rec.status == "skipped" and not policy.fail_on_skipped:
        return GateCheck(rec.label, "status", "skip", "skipped", "ok", rec.reason)
    return GateCheck(rec.label, "status", "fail", rec.status, "ok", rec.reason)


def _key_text(key: tuple[str | None, ...]) -> str:
    model, target, precision, device = key
    return f"{model}/{target}/{precision}" + (f"@{device}" if device else "")


def check_baseline(results: Results, baseline: Results, reg: Regression) -> None:
    """Refuse a baseline that cannot be compared with ``results`` (ConfigError, exit 2)."""
    cur = {r.key for r in results.records if reg.match.matches(r)}
    base = {r.key for r in baseline.records}
    if not cur & base:
        fmt = lambda keys: ", ".join(_key_text(k) for k in sorted(keys, key=str)[:4]) or "nothing"  # noqa: E731
        raise ConfigError(
            f"the baseline is from other models or targets: it holds {fmt(base)}; the results "
            f"hold {fmt(cur)}; compare results of the same models, targets and precisions"
        )
    a, b = baseline.environment.cpu_model, results.environment.cpu_model
    if reg.require_same_cpu and a != b:
        raise ConfigError(
            f"the baseline was measured on {a!r}, the results on {b!r}: latency is not comparable "
            "across machines; re-measure the baseline on this runner (docs/ci.md)"
        )


def regression_checks(rec: Record, base: Record | None, reg: Regression) -> list[GateCheck]:
    """Latency of ``rec`` against its baseline ``base``, one check per batch size."""
    from .stats import mann_whitney_greater, ratio_of_medians_ci

    name = "regression_p50"
    if base is None or base.status != "ok":
        why = "no baseline record" if base is None else f"the baseline record is {base.status}"
        status: CheckStatus = "error" if reg.missing == "error" else "skip"
        return [GateCheck(rec.label, name, status, None, None, f"{why}; cannot compare latency")]
    if base.injected_slowdown or base.threads != rec.threads:
        why = (
            f"threads differ (baseline {base.threads}, current {rec.threads})"
            if base.threads != rec.threads
            else "the baseline has an injected slowdown"
        )
        return [GateCheck(rec.label, name, "error", None, None, f"{why}: not comparable")]
    limit = 1.0 + reg.allowed_slowdown()
    batches = reg.batches or sorted(
        {x.batch for x in rec.latency} & {x.batch for x in base.latency}
    )
    out = []
    for batch in batches:
        cur, old = rec.latency_at(batch), base.latency_at(batch)
        if cur is None or old is None:
            msg = f"batch {batch} is missing in the {'results' if cur is None else 'baseline'}"
            out.append(GateCheck(rec.label, f"{name}@batch{batch}", "error", None, limit, msg))
            continue
        ci = ratio_of_medians_ci(
            cur.samples_us, old.samples_us, reg.confidence, reg.n_boot, reg.seed
        )
        mw = mann_whitney_greater(cur.samples_us, [v * limit for v in old.samples_us])
        bad = ci.low > limit
        msg = (
            f"median {cur.p50_ms:.4g} ms vs {old.p50_ms:.4g} ms: ratio {ci.ratio:.3f}, "
            f"{100 * reg.confidence:g}% CI [{ci.low:.3f}, {ci.high:.3f}] "
            f"{'entirely above' if bad else 'not entirely above'} {limit:.3f}"
        )
        details = {"ci_low": ci.low, "ci_high": ci.high, "rank_test_p": mw.p_greater}
        out.append(
            GateCheck(
                rec.label,
                f"{name}@batch{batch}",
                "fail" if bad else "pass",
                ci.ratio,
                limit,
                msg,
                details,
            )
        )
    return out


def run_gates(
    results: Results,
    policy: Policy,
    baseline: Results | None = None,
    where: Path | None = None,
) -> GateReport:
    """Every check of ``policy`` on ``results`` (and against ``baseline``), in a report.
    ``where``: the folder a relative interleaved ``baseline:`` path may also be found in."""
    reg = policy.regression or (Regression() if baseline is not None else None)
    live = reg is not None and reg.mode == "interleaved"
    if live:  # measured now, alternately with the baseline's artifacts: no stored samples
        reg, live_checks = None, _interleaved(results, reg, where)
    if reg is not None and baseline is None:
        raise ConfigError("the policy has a regression section: pass a baseline (--baseline FILE)")
    if reg is not None:
        check_baseline(results, baseline, reg)
    checks: list[GateCheck] = []
    for i, rule in enumerate(policy.rules):
        if not any(rule.match.matches(r) for r in results.records):
            msg = f"rule {rule.name or i} matches no record ({rule.match}); fix its match"
            checks.append(GateCheck("-", f"rule {rule.name or i}", "error", None, None, msg))
    for rec in results.records:
        rules = [r for r in policy.rules if r.match.matches(rec)]
        compare = reg is not None and reg.match.matches(rec)
        if not rules and not compare:
            continue
        checks.append(status_check(rec, policy))
        if rec.status != "ok":
            continue
        for rule in rules:
            checks.extend(rule_checks(rule, rec))
        if compare:
            checks.extend(regression_checks(rec, baseline.find(*rec.key), reg))
    if live:
        checks += live_checks
    if not checks:
        raise ConfigError("no record of the results is matched by the policy: nothing to gate")
    return GateReport(checks)


def _interleaved(results: Results, reg: Regression, where: Path | None) -> list[GateCheck]:
    from .gate_interleaved import interleaved_checks

    return [GateCheck(*fields) for fields in interleaved_checks(results, reg, where)]


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of ``modelpress gate`` (for cli.py's subparser)."""
    p.add_argument("results", type=Path, help="results.json written by `modelpress bench`")
    p.add_argument("--policy", type=Path, required=True, help="gates.yaml (examples/gates.yaml)")
    p.add_argument("--baseline", type=Path, help="a results.json to compare latency against")
    p.add_argument("--junit", type=Path, help="write JUnit XML here (one testcase per check)")
    p.add_argument(
        "--summary", type=Path, help="append a markdown table here ($GITHUB_STEP_SUMMARY)"
    )
    p.add_argument("--quiet", action="store_true", help="print only the summary line")


def cmd_gate(a: argparse.Namespace) -> int:
    """Run ``modelpress gate``; returns the exit code (0 pass, 1 fail, 2 usage error)."""
    policy = load_policy(a.policy)
    results = load_results(a.results)
    baseline = load_results(a.baseline, "baseline") if a.baseline else None
    report = run_gates(results, policy, baseline, where=Path(a.policy).parent)
    if a.junit:
        report.write_junit(a.junit)
    if a.summary:
        with open(a.summary, "a", encoding="utf-8") as fh:
            fh.write(gate_markdown(report) + "\n")
    print_gate(report, quiet=a.quiet)
    return report.exit_code


def main(argv: list[str] | None = None) -> int:
    """``python -m modelpress.measure.gate RESULTS --policy P [--baseline B] [--junit X]``."""
    from ..exits import standalone

    return standalone("modelpress gate", __doc__, configure_parser, cmd_gate, argv)


if __name__ == "__main__":
    sys.exit(main())
