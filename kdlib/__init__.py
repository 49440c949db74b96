"""kdlib — the library behind the knowledge-distillation study book.

Modules are the book's concepts: :mod:`~kdlib.data` (GLUE tasks), :mod:`~kdlib.models` (teachers and
students), :mod:`~kdlib.losses` (one pure function per loss), :mod:`~kdlib.methods` (objectives by name),
:mod:`~kdlib.steps` (what one training step does: modules, optimisers, players), :mod:`~kdlib.train` (one
training loop), :mod:`~kdlib.metrics`, :mod:`~kdlib.config` (what a run is), :mod:`~kdlib.settings` (epochs,
learning rates, lengths per profile and task), :mod:`~kdlib.store` (records and caches on disk),
:mod:`~kdlib.teachers` (cached or live teacher quantities), :mod:`~kdlib.mlm` (masking and a masked LM's words), :mod:`~kdlib.runner` (from a config to a record),
:mod:`~kdlib.profiles` (smoke / cpu / gpu), :mod:`~kdlib.report` (tables and plots), :mod:`~kdlib.chapters`
(each chapter's experiment plan) and :mod:`~kdlib.cli` (the ``kdbook`` command).
"""
__version__ = "0.2.0"

import warnings

# a notebook kernel without ipywidgets: tqdm.auto (imported by transformers) falls back to text bars and
# says so on stderr, once per kernel, into whichever chapter cell first loads a model
warnings.filterwarnings("ignore", message="IProgress not found")

from .errors import KDLibError  # noqa: E402,F401
