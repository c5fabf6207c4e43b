"""``ralu eval``: the field's quality protocol (images of every configuration on the same
prompts and seeds, timed side by side, scored by well-kept libraries) in one command, on a
diffusers model or on the analytic Gaussian backend. See ``docs/eval.md``.

- :mod:`~ralu_torch.evaluation.configs`: configuration strings (torch-free);
- :mod:`~ralu_torch.evaluation.metrics`: the image metrics and how their models load;
- :mod:`~ralu_torch.evaluation.run`: the command on a model (:func:`~ralu_torch.evaluation.run.evaluate`);
- :mod:`~ralu_torch.evaluation.analytic`: the same table on exact Gaussian data;
- :mod:`~ralu_torch.evaluation.report`: the CSV, markdown, plot and contact sheet;
- :mod:`~ralu_torch.evaluation.results`: the output folder, its record, and a rerun into it.
"""

from .configs import Config, parse_config, parse_configs

__all__ = ["Config", "parse_config", "parse_configs"]
