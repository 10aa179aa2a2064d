"""Reproduce the lottery-ticket studies of Frankle & Carbin (2019) and ship their results.

A *study* (:data:`STUDIES`) is an :class:`ltfunc.config.ImpConfig` at the paper's settings,
a list of seeds, the paper's reference settings (to list deviations from) and the paper's
reference numbers. :func:`reproduce` runs every seed in turn with :func:`ltfunc.run_imp`
(resumable: finished rounds are kept, an interrupted one is redone) into::

    RUNS_DIR/<prefix>-seed<k>/        one run directory per seed (layout in docs/design.md)
        machines.json                 the machines that trained this run (CPU, cores, torch, device)

and then :func:`collect` writes the evidence into ``OUT`` (default ``docs/results/<prefix>``)::

    rounds.csv        per condition and round: weights remaining, early-stop iteration and test
                      accuracy at early stop (mean and std over seeds), seeds, wall-clock seconds
    runs.csv          one row per (seed, condition, round) with the summary.json fields
    accuracy.png      test accuracy at early stop vs weights remaining, ticket / reinit / random
                      pruning, error bars = one std over seeds
    early_stop.png    early-stop iteration vs weights remaining
    curves_ticket.png, curves_reinit.png
                      test accuracy during training for a few rounds of the first seed
    results.md        tables, figures, deviations from the paper, the comparison with the
                      paper's numbers (checked claims), the machine and whether the results are
                      complete or partial

``<prefix>`` is the study name, with the overridden settings appended when some are changed
(``lenet-mnist-iterations300-rounds2``), so shortened runs never mix with the full study.
Collection only reads finished rounds, so it can run (``collect_only=True``,
``ltfunc reproduce STUDY --collect-only``) while the runs are still going; every file is
written atomically.

The package is an application on top of ``ltfunc``: ``import ltfunc`` does not import it.
Modules: :mod:`~ltfunc.studies.registry` (the studies, their configs, expected densities and
deviations), :mod:`~ltfunc.studies.paper` (the paper's numbers next to ours: each study's
checked claims), :mod:`~ltfunc.studies.claims` (checking claims against the results),
:mod:`~ltfunc.studies.run` (running the seeds; collecting and aggregating their finished
rounds), :mod:`~ltfunc.studies.state` (which rounds of the run directories have finished),
:mod:`~ltfunc.studies.results` (the CSVs, figures and ``results.md``, whose comparison with
the paper prints only the claims that hold) and :mod:`~ltfunc.studies.machine` (machine
descriptions).
"""

from .machine import machine_info
from .registry import (
    OVERRIDABLE,
    STUDIES,
    Study,
    deviations,
    expected_densities,
    get_study,
    protocol_deviations,
    run_name,
    study_configs,
)
from .results import ROUND_FIELDS, RUN_FIELDS
from .run import CollectResult, collect, reproduce, run_study

__all__ = [
    "OVERRIDABLE",
    "ROUND_FIELDS",
    "RUN_FIELDS",
    "STUDIES",
    "CollectResult",
    "Study",
    "collect",
    "deviations",
    "expected_densities",
    "get_study",
    "machine_info",
    "protocol_deviations",
    "reproduce",
    "run_name",
    "run_study",
    "study_configs",
]
