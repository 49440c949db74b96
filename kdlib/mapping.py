"""Layer mappings: which teacher layer teaches which student layer.

Layers are numbered as a Hugging Face model's ``hidden_states`` tuple numbers them: 0 is the embedding
output and ``i`` (1..L) the output of encoder layer ``i``. A :class:`LayerMap` is a tuple of
``(student layer, teacher layer)`` pairs. Patient KD (Sun et al. 2019) uses fixed maps: *skip* (every
``L_t / L_s``-th teacher layer) and *last* (the teacher's last layers). The last student layer is left out
of both, since the soft-label loss already covers it. ALP-KD (Passban et al. 2021) learns no fixed map:
each student layer attends over all teacher layers (:func:`attention`, a soft map per example), and
:func:`draw` shows those weights, averaged over a data set, the same way it shows a fixed map.

TinyBERT (Jiao et al. 2020) maps every student layer, the embedding output included (0 → 0): *uniform*
(student layer m learns from teacher layer m·L_t/L_s, the last from the last), and, as the paper's
ablations, *top* (the teacher's last layers) and *bottom* (its first layers).
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import KDLibError, check_choice

KINDS = ("skip", "last", "uniform", "top", "bottom", "given")


@dataclass(frozen=True)
class LayerMap:
    pairs: tuple  # ((student layer, teacher layer), ...), layers numbered as hidden_states (0 = embeddings)
    student_depth: int
    teacher_depth: int
    kind: str = "given"

    def __post_init__(self):
        pairs = tuple((int(s), int(t)) for s, t in self.pairs)
        object.__setattr__(self, "pairs", pairs)
        check_mapping(pairs, self.student_depth, self.teacher_depth)

    @property
    def student_layers(self) -> list:
        return [s for s, _ in self.pairs]

    @property
    def teacher_layers(self) -> list:
        return [t for _, t in self.pairs]

    def matrix(self):
        """A ``(student_depth + 1) × (teacher_depth + 1)`` 0/1 array: row s, column t is 1 where s ← t."""
        import numpy as np

        m = np.zeros((self.student_depth + 1, self.teacher_depth + 1))
        for s, t in self.pairs:
            m[s, t] = 1.0
        return m

    def __str__(self) -> str:
        return f"{self.kind}: " + ", ".join(f"s{s}←t{t}" for s, t in self.pairs)


def check_mapping(pairs, student_depth: int, teacher_depth: int) -> None:
    """One clear error for a map that cannot apply to these depths."""
    if student_depth < 1 or teacher_depth < 1:
        raise KDLibError(f"depths must be >= 1, got student {student_depth}, teacher {teacher_depth}")
    seen = set()
    for s, t in pairs:
        if not 0 <= s <= student_depth:
            raise KDLibError(f"student layer {s} is out of range; valid layers: 0..{student_depth}")
        if not 0 <= t <= teacher_depth:
            raise KDLibError(f"teacher layer {t} is out of range; valid layers: 0..{teacher_depth}")
        if s in seen:
            raise KDLibError(f"student layer {s} is mapped twice")
        seen.add(s)


def skip(student_depth: int, teacher_depth: int, include_last: bool = False) -> LayerMap:
    """PKD-Skip: student layer j learns from teacher layer j·(L_t // L_s). With 12 → 6: 2, 4, 6, 8, 10."""
    step = teacher_depth // student_depth
    if step < 1:
        raise KDLibError(f"a student of {student_depth} layers is deeper than its teacher of {teacher_depth}")
    top = student_depth if include_last else student_depth - 1
    return LayerMap(tuple((j, j * step) for j in range(1, top + 1)), student_depth, teacher_depth, "skip")


def last(student_depth: int, teacher_depth: int, include_last: bool = False) -> LayerMap:
    """PKD-Last: the student's layers learn from the teacher's last ones. With 12 → 6: 7, 8, 9, 10, 11."""
    if student_depth > teacher_depth:
        raise KDLibError(f"a student of {student_depth} layers is deeper than its teacher of {teacher_depth}")
    top = student_depth if include_last else student_depth - 1
    offset = teacher_depth - student_depth
    return LayerMap(tuple((j, j + offset) for j in range(1, top + 1)), student_depth, teacher_depth, "last")


def _deeper(student_depth: int, teacher_depth: int) -> None:
    if student_depth > teacher_depth:
        raise KDLibError(f"a student of {student_depth} layers is deeper than its teacher of {teacher_depth}")


def uniform(student_depth: int, teacher_depth: int) -> LayerMap:
    """TinyBERT's map g(m) = m·L_t/L_s for every student layer, the embeddings included (0 → 0): with 6 → 3,
    0←0, 1←2, 2←4, 3←6. The teacher's depth must be a multiple of the student's."""
    _deeper(student_depth, teacher_depth)
    if teacher_depth % student_depth:
        raise KDLibError(f"a uniform map needs the teacher's depth ({teacher_depth}) to be a multiple of the "
                         f"student's ({student_depth}); valid choices: top, bottom, given")
    step = teacher_depth // student_depth
    return LayerMap(tuple((m, m * step) for m in range(student_depth + 1)), student_depth, teacher_depth, "uniform")


def top(student_depth: int, teacher_depth: int) -> LayerMap:
    """The embeddings and the teacher's last layers (TinyBERT's "top" ablation): with 6 → 3, 0←0, 1←4, 2←5, 3←6."""
    _deeper(student_depth, teacher_depth)
    offset = teacher_depth - student_depth
    return LayerMap(((0, 0),) + tuple((m, m + offset) for m in range(1, student_depth + 1)), student_depth,
                    teacher_depth, "top")


def bottom(student_depth: int, teacher_depth: int) -> LayerMap:
    """The embeddings and the teacher's first layers (TinyBERT's "bottom" ablation): with 6 → 3, 0←0, 1←1, 2←2, 3←3."""
    _deeper(student_depth, teacher_depth)
    return LayerMap(tuple((m, m) for m in range(student_depth + 1)), student_depth, teacher_depth, "bottom")


def given(pairs, student_depth: int, teacher_depth: int) -> LayerMap:
    """A user-given list of ``(student layer, teacher layer)`` pairs."""
    return LayerMap(tuple(pairs), student_depth, teacher_depth, "given")


def attention(student_states, teacher_states, scaled: bool = True):
    """ALP-KD's attention-based map: for each example, a (student layers × teacher layers) matrix of weights
    α_jk = softmax_k(h_s^j · h_t^k / √d) whose rows sum to one. Inputs have shape (batch, layers, d); the
    equation and the reason for the scaling are at :func:`kdlib.losses.alp_weights`, beside ALP's loss."""
    from .losses import alp_weights

    return alp_weights(student_states, teacher_states, scaled)


def make(kind: str, student_depth: int, teacher_depth: int, pairs=None) -> LayerMap:
    check_choice("layer mapping", kind, KINDS)
    if kind == "given":
        if pairs is None:
            raise KDLibError("a 'given' layer mapping needs its pairs")
        return given(pairs, student_depth, teacher_depth)
    return {"skip": skip, "last": last, "uniform": uniform, "top": top, "bottom": bottom}[kind](student_depth,
                                                                                           teacher_depth)


def draw(mapping, ax=None, title: str = "", teacher_depth: int | None = None):
    """Draw a mapping as a student-layers × teacher-layers grid.

    ``mapping`` is a :class:`LayerMap` (cells of the pairs filled) or a weight matrix of shape (student
    layers, teacher layers), such as ALP-KD's attention averaged over a data set (a heatmap). For a matrix,
    rows are the student layers in order and columns the teacher layers 1..L_t (or 0..L_t when
    ``teacher_depth`` is one less than the number of columns)."""
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 3.0))
    if isinstance(mapping, LayerMap):
        m = mapping.matrix()[1:, :]  # student layer 0 (embeddings) is rarely mapped: drop its row if empty
        rows = list(range(1, mapping.student_depth + 1))
        if mapping.matrix()[0].any():
            m, rows = mapping.matrix(), list(range(0, mapping.student_depth + 1))
        cols = list(range(mapping.teacher_depth + 1))
        cmap, vmax = "Greys", 1.0
    else:
        m = np.asarray(mapping, dtype=float)
        rows = list(range(1, m.shape[0] + 1))
        first = 0 if teacher_depth is not None and m.shape[1] == teacher_depth + 1 else 1
        cols = list(range(first, first + m.shape[1]))
        cmap, vmax = "viridis", None
    im = ax.imshow(m, cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), [str(c) for c in cols])
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    ax.set_xlabel("teacher layer")
    ax.set_ylabel("student layer")
    if not isinstance(mapping, LayerMap):
        plt.colorbar(im, ax=ax, fraction=0.046)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] < 0.5 * m.max() else "black")
    ax.set_title(title or (str(mapping) if isinstance(mapping, LayerMap) else "attention over teacher layers"),
                 fontsize=9)
    return ax
