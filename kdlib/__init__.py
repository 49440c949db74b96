"""kdlib — the library behind the knowledge-distillation study book.

Modules are the book's concepts: :mod:`~kdlib.data` (GLUE tasks), :mod:`~kdlib.models` (teachers and
students), :mod:`~kdlib.losses` (one pure function per loss), :mod:`~kdlib.methods` (objectives by name),
:mod:`~kdlib.train` (one training loop), :mod:`~kdlib.metrics`, :mod:`~kdlib.experiment` (configs and the
results store), :mod:`~kdlib.profiles` (smoke / cpu / gpu), :mod:`~kdlib.report` (tables and plots),
:mod:`~kdlib.chapters` (each chapter's experiment plan) and :mod:`~kdlib.cli` (the ``kdbook`` command).
"""
__version__ = "0.1.0"

from .errors import KDLibError  # noqa: E402,F401
