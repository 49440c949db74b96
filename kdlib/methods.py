"""Training objectives by name: what an experiment's ``method`` means.

Each objective wraps a loss from :mod:`kdlib.losses` for the training loop. New chapters add methods
by registering an :class:`~kdlib.steps.Objective` subclass here; the loop stays the same. An objective
declares the teacher quantities it reads (``teacher_quantities``); the runner caches them or runs the
teacher live (:mod:`kdlib.teachers`).
"""
from __future__ import annotations

import dataclasses
import inspect
import math

import torch

from . import losses
from . import mapping as maps
from .errors import KDLibError, check_choice, choices
from .steps import Objective, TrainingStep


class FineTune(Objective):
    """Cross-entropy with the gold labels (MSE with the gold score for regression)."""

    def loss(self, out, batch):
        return losses.hard_loss(out.logits, batch["labels"])


class LabelSmoothing(Objective):
    """Cross-entropy against smoothed one-hot targets (Szegedy et al. 2016); classes only (no STS-B)."""

    classification_only = True

    def __init__(self, epsilon: float = 0.1):
        self.epsilon = losses.check_weight("epsilon", epsilon)

    def loss(self, out, batch):
        return losses.label_smoothing_ce(out.logits, batch["labels"], self.epsilon)


class HintonKD(Objective):
    """(1 − α)·CE + α·T²·KL(teacher_T ‖ student_T) (Hinton et al. 2015)."""

    teacher_quantities = ("logits",)

    def __init__(self, T: float = 2.0, alpha: float = 0.5):
        self.T = losses.check_temperature(T)
        self.alpha = losses.check_weight("alpha", alpha)

    def loss(self, out, batch):
        return losses.hinton_kd(out.logits, batch["teacher_logits"], batch["labels"], self.T, self.alpha)


class LogitMSE(Objective):
    """(1 − α)·CE + α·‖z_t − z_s‖² (Ba & Caruana 2014; Tang et al. 2019's BiLSTM_SOFT is α = 1)."""

    teacher_quantities = ("logits",)

    def __init__(self, alpha: float = 1.0):
        self.alpha = losses.check_weight("alpha", alpha)

    def loss(self, out, batch):
        soft = losses.logit_mse(out.logits, batch["teacher_logits"])
        if self.alpha == 1:
            return soft
        return (1 - self.alpha) * losses.hard_loss(out.logits, batch["labels"]) + self.alpha * soft


class _LayerObjective(Objective):
    """Base for methods that read [CLS] vectors of intermediate layers: the student returns its hidden
    states, and the teacher's come from the cache (``batch["teacher_cls"]``: embeddings + every layer)."""

    teacher_quantities = ("logits", "cls")
    student_kwargs = {"output_hidden_states": True}

    summarizes_dev = True

    @staticmethod
    def student_cls(out) -> list:
        from .train import hidden_states

        return [h[:, 0] for h in hidden_states(out)]

    def summarize(self, student_cls, teacher_cls) -> dict:
        """The cosine similarity of each student layer's [CLS] vector with each teacher layer's, averaged
        over the dev set: (student layers) × (teacher layers), embeddings excluded on both sides."""
        s = torch.nn.functional.normalize(student_cls[:, 1:], dim=-1)
        t = torch.nn.functional.normalize(teacher_cls[:, 1:], dim=-1)
        return {"cls_cosine": _rounded((s @ t.transpose(1, 2)).mean(0))}

    def teacher_layers(self, student_depth: int, teacher_depth: int) -> list:
        """The teacher layers (numbered as hidden states) whose [CLS] vectors the loss reads."""
        return list(range(1, teacher_depth + 1))

    def teacher_floats(self, shapes: dict, student_depth: int) -> int:
        n_layers, hidden = shapes["cls"]
        return math.prod(shapes["logits"]) + hidden * len(self.teacher_layers(student_depth, n_layers - 1))


def _rounded(t: torch.Tensor) -> list:
    return [[round(float(x), 4) for x in row] for row in t.tolist()]


class PatientKD(_LayerObjective):
    """(1 − α)·CE + α·T²·KL + β·L_PT over a PKD-Skip or PKD-Last layer map (Sun et al. 2019)."""

    def __init__(self, T: float = 5.0, alpha: float = 0.5, beta: float = 100.0, mapping: str = "skip"):
        self.T = losses.check_temperature(T)
        self.alpha = losses.check_weight("alpha", alpha)
        self.beta = losses.check_nonnegative("beta", beta)
        check_choice("PKD layer mapping", mapping, ("skip", "last"))
        self.mapping, self._map = mapping, None

    def layer_map(self, student_depth: int, teacher_depth: int):
        if self._map is None or (self._map.student_depth, self._map.teacher_depth) != (student_depth, teacher_depth):
            self._map = maps.make(self.mapping, student_depth, teacher_depth)
        return self._map

    def teacher_layers(self, student_depth: int, teacher_depth: int) -> list:
        return list(self.layer_map(student_depth, teacher_depth).teacher_layers)

    def summarize(self, student_cls, teacher_cls) -> dict:
        """Adds L_PT's per-layer term on the dev set (mean over examples), mapped layers in order."""
        summary = super().summarize(student_cls, teacher_cls)
        m = self.layer_map(student_cls.size(1) - 1, teacher_cls.size(1) - 1)
        s = torch.nn.functional.normalize(student_cls[:, m.student_layers], dim=-1)
        t = torch.nn.functional.normalize(teacher_cls[:, m.teacher_layers], dim=-1)
        summary["patient_distance"] = [round(float(x), 6) for x in (s - t).pow(2).mean(-1).mean(0)]
        summary["pairs"] = [list(p) for p in m.pairs]
        return summary

    def loss(self, out, batch):
        cls = self.student_cls(out)
        t_cls = batch["teacher_cls"]
        m = self.layer_map(len(cls) - 1, t_cls.size(1) - 1)
        if not m.pairs:  # a 1-layer student has no intermediate layer: PKD is plain KD
            return losses.hinton_kd(out.logits, batch["teacher_logits"], batch["labels"], self.T, self.alpha)
        s = torch.stack([cls[j] for j in m.student_layers], 1)
        t = t_cls[:, m.teacher_layers]
        return losses.pkd(out.logits, batch["teacher_logits"], batch["labels"], s, t, self.T, self.alpha,
                          self.beta)


class ALPKD(_LayerObjective):
    """β·CE + η·T²·KL + λ·Σ_j MSE(h_s^j, Σ_k α_jk h_t^k) over every student and teacher layer (Passban et al.
    2021); α_jk = softmax_k(h_s^j·h_t^k/√d) when ``scaled``."""

    def __init__(self, T: float = 1.0, beta: float = 1.0, eta: float = 1.0, lam: float = 1.0, scaled: bool = True):
        self.T = losses.check_temperature(T)
        self.beta, self.eta, self.lam = (losses.check_nonnegative(n, v) for n, v in
                                         (("beta", beta), ("eta", eta), ("lam", lam)))
        self.scaled = bool(scaled)

    def summarize(self, student_cls, teacher_cls) -> dict:
        """Adds the attention weights α_jk averaged over the dev set (rows: student layers 1..k)."""
        summary = super().summarize(student_cls, teacher_cls)
        w = maps.attention(student_cls[:, 1:], teacher_cls[:, 1:], self.scaled)
        summary["alp_weights"] = _rounded(w.mean(0))
        return summary

    def loss(self, out, batch):
        s = torch.stack(self.student_cls(out)[1:], 1)  # every student layer (not the embeddings)
        t = batch["teacher_cls"][:, 1:]  # every teacher layer
        return losses.alp_kd(out.logits, batch["teacher_logits"], batch["labels"], s, t, self.T, self.beta,
                             self.eta, self.lam, self.scaled)


class TinyBERT(Objective):
    r"""TinyBERT's losses (Jiao et al. 2020) over a layer map that includes the embeddings (0 → 0):
    :math:`\sum_{(m, n)} \big(a\,L_{attn}^{m,n} + h\,L_{hidn}^{m,n}\big) + e\,L_{embd} + p\,L_{pred}`.

    ``stage`` picks the terms: ``"intermediate"`` (attention, hidden states and embeddings: general
    distillation and the first stage of task distillation), ``"prediction"`` (the soft cross-entropy at
    ``T``: the second stage), or ``"all"``. The projections :math:`W_e` (embeddings) and :math:`W_h` (every
    mapped layer) from the student's width to the teacher's belong to the run: they are trained with the
    student, saved and restored with it. Weights 0 leave a term out (the paper's ablations)."""

    student_kwargs = {"output_hidden_states": True}
    #: the most it reads; an instance reads what its stage needs (``self.teacher_quantities``)
    teacher_quantities = ("hidden", "attention_scores", "logits")

    def __init__(self, stage: str = "intermediate", mapping: str = "uniform", attn: float = 1.0,
                 hidn: float = 1.0, embd: float = 1.0, pred: float = 1.0, T: float = 1.0):
        check_choice("TinyBERT stage", stage, ("intermediate", "prediction", "all"))
        check_choice("TinyBERT layer mapping", mapping, ("uniform", "top", "bottom"))
        self.stage, self.mapping = stage, mapping
        self.w = {n: losses.check_nonnegative(n, v) for n, v in
                  (("attn", attn), ("hidn", hidn), ("embd", embd), ("pred", pred))}
        self.T = losses.check_temperature(T)
        self.intermediate = stage in ("intermediate", "all")
        self.prediction = stage in ("prediction", "all")
        self.label_free = not self.prediction  # general distillation runs on plain text
        names = (("hidden", "attention_scores") if self.intermediate else ()) + (("logits",) if self.prediction else ())
        self.teacher_quantities = names
        self._map = None

    def build_modules(self, student, teacher_config=None) -> dict:
        if not self.intermediate:
            return {}
        if teacher_config is None:
            raise KDLibError("TinyBERT's intermediate losses need a teacher (its width sizes the projections)")
        s, t = student.config, teacher_config
        if self.w["attn"] and s.num_attention_heads != t.num_attention_heads:
            raise KDLibError(f"the attention loss compares heads one by one: the student has "
                             f"{s.num_attention_heads} heads, the teacher {t.num_attention_heads}; give the student "
                             f"{t.num_attention_heads} heads (or attn=0)")
        return {"proj_embd": torch.nn.Linear(s.hidden_size, t.hidden_size),
                "proj_hidn": torch.nn.Linear(s.hidden_size, t.hidden_size)}

    def layer_map(self, student_depth: int, teacher_depth: int):
        if self._map is None or (self._map.student_depth, self._map.teacher_depth) != (student_depth, teacher_depth):
            self._map = maps.make(self.mapping, student_depth, teacher_depth)
        return self._map

    def forward(self, student, inputs: dict):
        from types import SimpleNamespace

        from .models import capture_attention_scores

        if not self.intermediate:
            return student(**inputs)
        with capture_attention_scores(student) as scores:
            out = student(**inputs, **self.student_kwargs)
        return SimpleNamespace(logits=out.logits, hidden_states=out.hidden_states, attention_scores=scores)

    def terms(self, out, batch) -> dict:
        """Each weighted term of the loss on one batch (for curves per term)."""
        got = {}
        if self.intermediate:
            mask = batch["attention_mask"]
            t_hidden, t_scores = batch["teacher_hidden"], batch["teacher_attention_scores"]
            m = self.layer_map(len(out.hidden_states) - 1, t_hidden.size(1) - 1)
            zero = out.logits.new_zeros(())
            got.update(embd=zero, hidn=zero, attn=zero)
            for s, t in m.pairs:
                if s == 0:
                    if self.w["embd"]:
                        got["embd"] = got["embd"] + losses.tinybert_hidden(
                            self.modules["proj_embd"](out.hidden_states[0]), t_hidden[:, 0], mask)
                    continue
                if self.w["hidn"]:
                    got["hidn"] = got["hidn"] + losses.tinybert_hidden(
                        self.modules["proj_hidn"](out.hidden_states[s]), t_hidden[:, t], mask)
                if self.w["attn"]:
                    got["attn"] = got["attn"] + losses.tinybert_attention(out.attention_scores[s - 1],
                                                                          t_scores[:, t - 1], mask)
        if self.prediction:
            got["pred"] = losses.tinybert_prediction(out.logits, batch["teacher_logits"], self.T)
        return {k: self.w[k] * v for k, v in got.items()}

    def loss(self, out, batch):
        return sum(self.terms(out, batch).values())


class AnnealingKD(Objective):
    """Stage I of Annealing KD (Jafari et al. 2021): ‖z_s − Φ(T)·z_t‖², T lowered from ``tau_max`` to 1 over
    the run in equal shares of its steps (:func:`kdlib.losses.annealing_schedule`). Stage II is a separate
    run on the labels that starts from this one's best weights."""

    teacher_quantities = ("logits",)

    def __init__(self, tau_max: int = 7):
        self.tau_max = losses._check_positive_int("tau_max", tau_max)
        self.T = self.tau_max

    def on_step_start(self, step: int, total_steps: int) -> None:
        self.T = losses.annealing_schedule(step, total_steps, self.tau_max)

    def loss(self, out, batch):
        return losses.annealing_kd(out.logits, batch["teacher_logits"], self.T, self.tau_max)


class MaskedLanguageModel(Objective):
    """BERT's masked-LM loss (Devlin et al. 2019) on plain text: each token chosen with probability ``p``
    (80% → [MASK], 10% a random token, 10% kept), cross-entropy of the original at the chosen positions.
    Its dev score is the masked-token accuracy (:mod:`kdlib.mlm`), every chosen token masked, with masks
    drawn from a fixed generator so that every evaluation of every run sees the same ones."""

    label_free = True
    evaluates = True

    def __init__(self, p: float = 0.15):
        self.p = losses.check_weight("p", p)
        if self.p == 0:
            raise KDLibError("p must be > 0: with no token chosen there is nothing to predict; valid choices: (0, 1]")
        self.special_ids, self.mask_id, self.vocab_size = (), None, None

    def use_tokenizer(self, tokenizer) -> None:
        self.special_ids = tuple(tokenizer.all_special_ids)
        self.mask_id, self.vocab_size = tokenizer.mask_token_id, len(tokenizer)

    def _masked(self, batch: dict, generator=None, replace: bool = True):
        from . import mlm

        if self.mask_id is None:
            raise KDLibError("the masked-LM objective needs the tokenizer first (use_tokenizer)")
        ok = mlm.maskable(batch["input_ids"], batch["attention_mask"], self.special_ids)
        return mlm.mask_tokens(batch["input_ids"], ok, self.mask_id, self.vocab_size, self.p, generator, replace)

    def forward(self, student, inputs: dict):
        from types import SimpleNamespace

        from . import mlm

        masked, chosen = self._masked(inputs)
        logits = mlm.masked_logits(student, masked, inputs["attention_mask"], chosen, inputs.get("token_type_ids"))
        return SimpleNamespace(logits=logits, targets=inputs["input_ids"][chosen])

    def loss(self, out, batch):
        return torch.nn.functional.cross_entropy(out.logits.float(), out.targets)

    @torch.no_grad()
    def evaluate(self, student, loader, accelerator) -> dict:
        from . import mlm

        student.eval()
        gen = torch.Generator(device=accelerator.device).manual_seed(0)
        right = total = 0
        nll = torch.zeros((), dtype=torch.float64, device=accelerator.device)
        for batch in loader:
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            masked, chosen = self._masked(batch, gen, replace=False)
            with accelerator.autocast():
                logits = mlm.masked_logits(student, masked, batch["attention_mask"], chosen, batch["token_type_ids"])
            target = batch["input_ids"][chosen]
            right += int((logits.argmax(-1) == target).sum())
            total += int(target.numel())
            nll += torch.nn.functional.cross_entropy(logits.float(), target, reduction="sum").double()
        counts = accelerator.reduce(torch.tensor([right, total], device=accelerator.device), "sum")
        nll = float(accelerator.reduce(nll, "sum"))
        right, total = int(counts[0]), int(counts[1])
        return {"masked_accuracy": round(100 * right / max(total, 1), 4),
                "masked_loss": round(nll / max(total, 1), 6)}


class MateKD(Objective):
    r"""MATE-KD (Rashid et al. 2021): a masked-LM *generator* rewrites a share ``mask_rate`` of each sentence's
    tokens, sampled by straight-through Gumbel-softmax, and ascends :math:`\mathrm{KL}(T(x')\,\|\,S(x'))`; the
    student descends :math:`\tfrac13\,\mathrm{CE}(S(x), y) + \tfrac13\,T^2\mathrm{KL}` on :math:`x'` :math:`+
    \tfrac13\,T^2\mathrm{KL}` on the clean :math:`x` (the official code's weights). The players alternate,
    ``generator_steps`` then ``student_steps`` (the code: 10 and 100), each clipped to ``clip``. The teacher
    runs live on :math:`x'` (its gradient reaches the generator's one-hots, never its weights); its logits on
    the clean :math:`x` are cached. ``generator`` is the masked LM's run (:func:`kdlib.chapters.masked_lm`),
    whose weights the generator starts from."""

    teacher_quantities = ("logits",)
    needs_live_teacher = True

    def __init__(self, generator=None, T: float = 1.0, mask_rate: float = 0.3, gumbel_tau: float = 1.0,
                 generator_steps: int = 10, student_steps: int = 100, generator_lr: float = 1e-6,
                 clip: float = 5.0):
        if getattr(generator, "method", None) != "mlm":
            raise KDLibError("MATE-KD needs a generator: give generator=masked_lm(profile), a run of method 'mlm'")
        if not 0 < mask_rate < 1:
            raise KDLibError(f"mask_rate must be in (0, 1), got {mask_rate}")
        self.generator = generator
        self.T, self.mask_rate = losses.check_temperature(T), float(mask_rate)
        self.gumbel_tau = losses.check_temperature(gumbel_tau)
        self.generator_steps = losses._check_positive_int("generator_steps", generator_steps)
        self.student_steps = losses._check_positive_int("student_steps", student_steps)
        self.generator_lr, self.clip = losses.check_nonnegative("generator_lr", generator_lr), float(clip)
        self.step_index, self.special_ids, self.mask_id = 0, (), None

    def use_tokenizer(self, tokenizer) -> None:
        self.special_ids, self.mask_id = tuple(tokenizer.all_special_ids), tokenizer.mask_token_id

    def on_step_start(self, step: int, total_steps: int) -> None:
        self.step_index = step  # whose turn it is follows from the step, so a resumed run keeps the rhythm

    def build_modules(self, student, teacher_config=None) -> dict:
        gen = self.from_runs.get("generator")
        if gen is None:
            raise KDLibError("MATE-KD's generator weights were not loaded (the runner loads them from its run)")
        sizes = {"generator": gen.config.vocab_size, "student": student.get_input_embeddings().num_embeddings}
        if teacher_config is not None:
            sizes["teacher"] = teacher_config.vocab_size
        if len(set(sizes.values())) > 1:
            raise KDLibError(f"vocabularies differ ({', '.join(f'{k} {v}' for k, v in sizes.items())}); the generator, "
                             "the teacher and the student must share one")
        for p in gen.parameters():  # the generator trains whole (its embedding table is its output layer)
            p.requires_grad_(True)
        return {"generator": gen}

    def generator_turn(self) -> bool:
        return self.step_index % (self.generator_steps + self.student_steps) < self.generator_steps

    def make_step(self, student, args):
        from .steps import OptimArgs, Player

        modules = {"student": student, "generator": self.modules["generator"]}
        g_args = OptimArgs(lr=self.generator_lr, weight_decay=0.0, warmup_ratio=0.0, max_grad_norm=self.clip,
                           maximize=True)
        s_args = dataclasses.replace(args, max_grad_norm=self.clip)
        return MateStep(self, modules, [Player("student", ["student"], s_args), Player("generator", ["generator"], g_args)])

    def rewrite(self, generator, batch: dict):
        """``(chosen positions, one-hots)`` of a rewritten batch: the chosen tokens masked, the generator's
        straight-through Gumbel sample at each."""
        from . import mlm

        ids, att = batch["input_ids"], batch["attention_mask"]
        chosen = mlm.choose(ids, mlm.maskable(ids, att, self.special_ids), self.mask_rate)
        logits = mlm.masked_logits(generator, ids.masked_fill(chosen, self.mask_id), att, chosen,
                                   batch.get("token_type_ids"))
        return chosen, mlm.gumbel_rewrite(logits, chosen, self.gumbel_tau)

    def divergence(self, student, teacher, batch, chosen, one_hots, grad_to_inputs: bool) -> torch.Tensor:
        """T²·KL(teacher ‖ student) on the rewritten batch, each model reading the one-hots through its own
        embedding table."""
        from .mlm import embed_rewritten

        ids, rest = batch["input_ids"], {k: batch[k] for k in ("attention_mask", "token_type_ids")}
        t_emb = embed_rewritten(teacher.model.get_input_embeddings(), ids, chosen, one_hots)
        t_logits = teacher.outputs({"inputs_embeds": t_emb, **rest}, ("logits",), grad_to_inputs=grad_to_inputs)["logits"]
        s_logits = student(inputs_embeds=embed_rewritten(student.get_input_embeddings(), ids, chosen, one_hots), **rest).logits
        return losses.kd_divergence(s_logits, t_logits, self.T)


    def examples(self, step, dev_enc, tokenizer, seed: int, n: int = 8) -> dict:
        """The first ``n`` dev examples rewritten once by the generator as training left it (the sample drawn
        from ``seed``), with the teacher's and the student's outputs on the clean and on the rewritten text (the
        student, too, as training left it; class probabilities, or the score for a regression task)."""
        from .data import collate

        gen, student, teacher = self.modules["generator"], step.student, step.teacher.live
        device = next(student.parameters()).device
        batch = {k: v.to(device) for k, v in collate(dev_enc, range(min(n, len(dev_enc)))).items()}
        rest = {k: batch[k] for k in ("attention_mask", "token_type_ids")}
        training = gen.training, student.training
        gen.eval(), student.eval()
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            chosen, one_hots = self.rewrite(gen, batch)
            new_ids = batch["input_ids"].masked_scatter(chosen, one_hots.argmax(-1))
            out = {}
            for name, ids in (("clean", batch["input_ids"]), ("rewritten", new_ids)):
                t = teacher.outputs({"input_ids": ids, **rest}, ("logits",))["logits"].float()
                s = student(input_ids=ids, **rest).logits.float()
                show = (lambda z: z[:, 0]) if dev_enc.regression else (lambda z: z.softmax(-1))
                out[name] = {"ids": ids, "teacher": show(t), "student": show(s), "kl": losses.kd_divergence(s, t, self.T)}
        gen.train(training[0]), student.train(training[1])
        rows = []
        for i in range(batch["input_ids"].size(0)):
            keep = batch["attention_mask"][i].bool()

            def text(ids):  # a pair's two sides joined by " ||| "
                segments, current = [], []
                for t in ids[i][keep].tolist():
                    if t == tokenizer.sep_token_id:
                        segments.append(current)
                        current = []
                    elif t != tokenizer.cls_token_id:
                        current.append(t)
                return " ||| ".join(tokenizer.decode(seg) for seg in segments + ([current] if current else []))

            rows.append({"dev_index": i, "label": dev_enc.labels[i], "changed": int(chosen[i].sum()),
                         "clean": text(out["clean"]["ids"]), "rewritten": text(out["rewritten"]["ids"]),
                         **{f"{who}_{name}": [round(float(x), 4) for x in out[name][who][i].reshape(-1).tolist()]
                            for who in ("teacher", "student") for name in ("clean", "rewritten")}})
        return {"seed": seed, "mask_rate": self.mask_rate, "examples": rows,
                "kl_clean": round(float(out["clean"]["kl"]), 6), "kl_rewritten": round(float(out["rewritten"]["kl"]), 6)}


class MateStep(TrainingStep):
    """MATE-KD's alternating step: the generator's turn ascends the divergence on rewritten text, the student's
    descends ⅓ CE + ⅓ KL on rewritten text + ⅓ KL on clean text. The generator's turn reports the student's
    loss as NaN (not measured on that step)."""

    def step(self, batch: dict, accelerator) -> dict:
        o, gen, teacher = self.objective, self.modules["generator"], self.teacher.live
        if o.generator_turn():
            with accelerator.autocast():
                chosen, one_hots = o.rewrite(gen, batch)
                div = o.divergence(self.student, teacher, batch, chosen, one_hots, grad_to_inputs=True)
            self.update(self.players[1], div, accelerator)
            return {"loss": float("nan"), "divergence": div.item()}
        with accelerator.autocast():
            with torch.no_grad():
                chosen, one_hots = o.rewrite(gen, batch)
            adv = o.divergence(self.student, teacher, batch, chosen, one_hots, grad_to_inputs=False)
            inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
            clean = self.student(**inputs).logits
            loss = (losses.hard_loss(clean, batch["labels"]) + adv
                    + losses.kd_divergence(clean, batch["teacher_logits"], o.T)) / 3
        self.update(self.players[0], loss, accelerator)
        return {"loss": loss.item(), "divergence": adv.item()}


METHODS: dict[str, type] = {
    "finetune": FineTune,
    "label_smoothing": LabelSmoothing,
    "kd": HintonKD,
    "logit_mse": LogitMSE,
    "pkd": PatientKD,
    "alp": ALPKD,
    "tinybert": TinyBERT,
    "mlm": MaskedLanguageModel,
    "annealing": AnnealingKD,
    "mate": MateKD,
}


def method_params(method: str) -> list:
    check_choice("method", method, METHODS)
    params = inspect.signature(METHODS[method]).parameters.values()
    return [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def make_objective(method: str, hparams: dict | None = None) -> Objective:
    """Build the objective for ``method``; an unknown hyper-parameter is an error naming the valid ones."""
    valid = method_params(method)
    for key in hparams or {}:
        if key not in valid:
            raise KDLibError(f"unknown hyper-parameter {key!r} for method {method!r}; "
                             f"valid choices: {choices(valid) or 'none'}")
    return METHODS[method](**(hparams or {}))


def needs_teacher(method: str) -> bool:
    check_choice("method", method, METHODS)
    return bool(METHODS[method].teacher_quantities)


def label_free_methods() -> str:
    """The methods that may train on the label-free ``text`` task, for error messages."""
    return "mlm, tinybert with stage='intermediate'"
