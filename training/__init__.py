"""Training c-ResUnet from approved masks, and the worker that runs training, scoring and counting jobs.

Modules: ``config`` (TrainConfig), ``crops`` (crop starts), ``augment`` (seeded augmentation),
``data`` (per-image split, crop batches, PyDataset), ``fit`` (resumable Keras fit, threshold
tuning, scoring, run directory), ``jobs`` (submit, job runners), ``worker`` (the worker loop),
``demo`` (the committed demo model). Command line: ``python -m training --help``.

Nothing here imports TensorFlow or Streamlit; ``keras`` is imported inside functions only.
"""
