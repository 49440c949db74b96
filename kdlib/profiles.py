"""Profiles: how big a chapter's experiments are.

* ``smoke`` — CI: the real ``minilm-l6`` teacher and students on a small synthetic data set (no data
  needed), one or two epochs; each chapter runs in a couple of minutes on 2 CPU cores.
* ``cpu`` — real GLUE tasks, the real pre-trained ``minilm-l6`` teacher fine-tuned once per task on the full
  training set, students on the full training set, 3 seeds; sized for a 2-core CPU.
* ``gpu`` — full training sets, the papers' epochs and learning rates, 5 seeds; ``bert-base-uncased`` as
  the teacher where the hub answers, else ``minilm-l6``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import check_choice


@dataclass(frozen=True)
class Profile:
    """What a profile fixes: data, teacher checkpoint, the default student and the seeds. How long each
    task trains is in the settings table (:mod:`kdlib.settings`), shared by every chapter."""

    name: str
    data: str  # "glue" or "synthetic"
    teacher: str  # checkpoint the teacher is fine-tuned from
    student_layers: tuple  # encoder layers of the pre-trained checkpoint copied into the default student
    train_size: int | None  # None: the full training set
    dev_size: int | None  # only for synthetic data
    seeds: tuple
    description: str = ""

    @property
    def student_depth(self) -> int:
        return len(self.student_layers)


def hub_available() -> bool:
    """True when the Hugging Face hub can serve ``bert-base-uncased`` (or it is in the local HF cache)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        try:
            from huggingface_hub import try_to_load_from_cache

            return isinstance(try_to_load_from_cache("google-bert/bert-base-uncased", "config.json"), str)
        except Exception:  # pragma: no cover
            return False
    try:  # pragma: no cover - needs the network
        from huggingface_hub import HfApi

        HfApi().model_info("google-bert/bert-base-uncased", timeout=5)
        return True
    except Exception:
        return False


def _gpu() -> Profile:
    if os.environ.get("KDLIB_GPU_TEACHER"):
        teacher = os.environ["KDLIB_GPU_TEACHER"]
    else:
        teacher = "bert-base-uncased" if hub_available() else "minilm-l6"
    big = teacher == "bert-base-uncased"
    return Profile("gpu", "glue", teacher, student_layers=(0, 1, 2, 3, 4, 5) if big else (0, 1),
                   train_size=None, dev_size=None, seeds=(0, 1, 2, 3, 4),
                   description=f"full training sets, paper-like epochs, 5 seeds, teacher {teacher}")


PROFILES = {
    "smoke": lambda: Profile("smoke", "synthetic", "minilm-l6", student_layers=(0,), train_size=384, dev_size=128,
                             seeds=(0, 1), description="synthetic data, minilm-l6 teacher, 1-layer students (CI)"),
    "cpu": lambda: Profile("cpu", "glue", "minilm-l6", student_layers=(0, 1), train_size=None, dev_size=None,
                           seeds=(0, 1, 2), description="full training sets, minilm-l6 teacher, 3 seeds, "
                           "sized for a 2-core CPU"),
    "gpu": _gpu,
}


def get_profile(name: str) -> Profile:
    check_choice("profile", name, PROFILES)
    return PROFILES[name]()
