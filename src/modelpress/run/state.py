"""What a run is made of, as data: one model's run (:class:`ModelRun`), a model's failure
(:class:`ModelFailure`) and the outcome of the whole run (:class:`RunOutcome`). Every step of a
run imports these from here; none of them imports the pipeline that fills them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifact import Artifact
from ..data import DataBundle
from ..errors import ModelPressError, one_line


@dataclass
class ModelRun:
    """What one recipe model became: its float baseline, the compressed chain, their records."""

    label: str
    family: str
    data: DataBundle
    baseline: Artifact
    teacher: Artifact | None = None
    compressed: Artifact | None = None  # the last torch artifact of the pass chain
    qdq: Artifact | None = None  # a QAT QDQ ONNX artifact, when the chain has qat
    chain: list[str] = field(default_factory=list)
    pass_records: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failure: ModelFailure | None = None  # the pass chain failed: its rows are failed records

    @property
    def compressed_label(self) -> str:
        return f"{self.label}+{'+'.join(self.chain)}" if self.chain else self.label


@dataclass(frozen=True)
class ModelFailure:
    """Why a model (``label``: its results label) got no artifact from ``stage``."""

    label: str
    stage: str  # import | train | teacher | <pass name>
    reason: str
    exit_code: int = 1  # 2: the user's input was wrong (ModelPressError.exit_code)

    @classmethod
    def of(cls, label: str, stage: str, exc: BaseException, log: Path) -> ModelFailure:
        """The failure ``exc``; an unexpected one (not a ModelPressError) also leaves its
        traceback in ``log`` for a bug report."""
        if isinstance(exc, ModelPressError):
            return cls(label, stage, one_line(exc) or type(exc).__name__, exc.exit_code)
        from ..exits import write_traceback

        where = write_traceback(exc, lambda: log)
        return cls(label, stage, f"{type(exc).__name__}: {one_line(exc)} (traceback: {where})")

    @property
    def message(self) -> str:
        return f"{self.stage} failed: {self.reason}"


@dataclass
class RunOutcome:
    results_path: Path
    report_md: Path
    report_html: Path
    exit_code: int
    models: list[ModelRun]
    failures: list[ModelFailure] = field(default_factory=list)
    gate_summary: str = ""
    junit: Path | None = None
    seconds: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0
