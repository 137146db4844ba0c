"""Perplexity and KL-divergence evaluation of local models, on any loader, as a cancellable job.

`start_evaluation(app, request)` checks what a person can get wrong (models, dataset, window sizes)
before the job starts, then evaluates each model in turn as an `app.jobs` job of kind ``"evaluation"``;
the Training tab's evaluation panel and ``python -m webui.evaluate`` both call it and render its status.
Results are appended to ``user_data/logs/evaluations.csv`` (`results`).
"""

from webui.evaluation.dataset import EvaluationError, list_datasets, read_dataset
from webui.evaluation.results import read_results, results_path
from webui.evaluation.runner import EVALUATION_JOB, EvaluationRequest, Evaluator, start_evaluation

__all__ = [
    "EVALUATION_JOB",
    "EvaluationError",
    "EvaluationRequest",
    "Evaluator",
    "list_datasets",
    "read_dataset",
    "read_results",
    "results_path",
    "start_evaluation",
]
