"""LoRA training on the loaded Transformers model: datasets, parameters, memory estimate, the training job.

`start_training(app, params)` validates everything a person can get wrong (model, dataset, name, memory)
before the job starts, then trains as an `app.jobs` job of kind ``"training"``; the Training tab and
``python -m webui.train`` both call it and render the job's status.
"""

from webui.training.config import TrainingError, TrainingParams
from webui.training.trainer import TRAINING_JOB, start_training

__all__ = ["TRAINING_JOB", "TrainingError", "TrainingParams", "start_training"]
