"""Intention-aligned evaluation: is the forget set still *said* (behaviour), is it still *there*
(knowledge), and therefore was it removed or only suppressed?

One module per job:

- :mod:`~unlearn_kb.evaluation.text`: exact match and ROUGE-L recall;
- :mod:`~unlearn_kb.evaluation.behaviour`: recall, answer probability, truth ratio, utility, fluency;
- :mod:`~unlearn_kb.evaluation.relearn`: the relearning attack;
- :mod:`~unlearn_kb.evaluation.probes`: linear probes and the logit lens on hidden states;
- :mod:`~unlearn_kb.evaluation.quantization`: RTN weight quantization;
- :mod:`~unlearn_kb.evaluation.mia`: LOSS, zlib, Min-K%, Min-K%++, PrivLeak;
- :mod:`~unlearn_kb.evaluation.stats`: AUC, KS test, means;
- :mod:`~unlearn_kb.evaluation.measure`: every figure for one model;
- :mod:`~unlearn_kb.evaluation.verdict`: the rule and its tolerances;
- :mod:`~unlearn_kb.evaluation.suite`: comparing the model with the reference and original;
- :mod:`~unlearn_kb.evaluation.report` and :mod:`~unlearn_kb.evaluation.plots`: output files;
- :mod:`~unlearn_kb.evaluation.runs`: run folders and model folders; :mod:`~unlearn_kb.evaluation.bench`;
- :mod:`~unlearn_kb.evaluation.calibration`: subjects with known verdicts (the output guardrail).

Nothing here imports torch at import time.
"""

from __future__ import annotations

from unlearn_kb.evaluation.measure import ALL_PROBES, EvalConfig, EvalData, Measurement, measure, parse_probes
from unlearn_kb.evaluation.runs import evaluate_paths, evaluate_run
from unlearn_kb.evaluation.suite import MeasurementCache, Report, evaluate

__all__ = [
    "ALL_PROBES",
    "EvalConfig",
    "EvalData",
    "Measurement",
    "MeasurementCache",
    "Report",
    "evaluate",
    "evaluate_paths",
    "evaluate_run",
    "measure",
    "parse_probes",
]
