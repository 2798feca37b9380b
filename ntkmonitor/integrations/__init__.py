"""Callbacks for training frameworks other than Lightning.

- :mod:`ntkmonitor.integrations.transformers`: :class:`~ntkmonitor.integrations.transformers.NTKMonitorCallback`,
  a Hugging Face ``transformers.TrainerCallback`` (needs ``transformers``; LoRA adapters need ``peft``).

Each module imports its framework when it is imported, not before.
"""
