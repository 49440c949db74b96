"""kdbook bench (kdlib.bench): the Trainer recipe and kdlib's loop, side by side, computing the same loss."""
import pytest
import torch

from kdlib.errors import KDLibError


def test_the_trainer_recipe_and_kdlib_compute_the_same_kd_loss():
    """The comparison is of loops, not of losses: on one batch the Trainer side's loss equals kdlib's KD
    objective's, teacher and student the same."""
    from transformers import TrainingArguments

    from kdlib import bench
    from kdlib.data import collate, encode, synthetic_task
    from kdlib.methods import make_objective
    from kdlib.models import load_tokenizer

    tok = load_tokenizer("minilm-l6")
    enc = encode(tok, synthetic_task("sst2", "train", 8), 32)
    teacher, student = bench._teacher_and_student("minilm-l6", (0,), 2)
    student.eval()  # no dropout: the two forward passes must see the same network
    batch = collate(enc, list(range(8)))
    batch.pop("idx")
    args = TrainingArguments(output_dir="/tmp/kdlib-bench-test", report_to=[], use_cpu=True)
    trainer = bench._KDTrainer.get()(model=student, args=args, teacher=teacher, T=4.0, alpha=0.9)
    theirs = trainer.compute_loss(student, dict(batch)).detach()
    with torch.no_grad():
        t_logits = teacher(**{k: v for k, v in batch.items() if k != "labels"}).logits
        ours = make_objective("kd", {"T": 4.0, "alpha": 0.9}).loss(
            student(**{k: v for k, v in batch.items() if k != "labels"}), {**batch, "teacher_logits": t_logits})
    assert float(theirs) == pytest.approx(float(ours), rel=1e-6)


def test_a_small_bench_times_every_side_and_stores_it(store):
    from kdlib.bench import SIDES, stored_bench

    rec = stored_bench(examples=48, rounds=1, seeds=1, batch_size=16, max_length=32)
    assert rec["data"] == "synthetic" and rec["examples"] == 48 and rec["workload_runs"] == 2
    for r in rec["rounds"]:
        assert set(r) == set(SIDES) and len(r["kdlib"]["runs"]) == len(r["trainer, grouped"]["runs"]) == 2
        assert len(r["trainer, padded"]["runs"]) == 1 and r["kdlib"]["cache"] > 0
    s = rec["summary"]
    assert all(v["min"] <= v["median"] <= v["max"] and v["min"] > 0 for v in {**s["examples_per_s"],
                                                                             **s["ratios"]}.values())
    assert rec["config"]["device"] == "cpu" and "hardware" in rec and "wall_time_s" in rec
    again = stored_bench(examples=48, rounds=1, seeds=1, batch_size=16, max_length=32)
    assert again == rec  # stored: read, not measured again


@pytest.mark.parametrize("kw, message", [({"examples": 0}, "examples must be an integer >= 1, got 0"),
                                         ({"sides": ("trainer, fast",)}, "unknown side 'trainer, fast'"),
                                         ({"task": "stsb"}, "task 'stsb' is not one")])
def test_bad_bench_settings_are_one_line(kw, message):
    from kdlib.bench import bench

    with pytest.raises(KDLibError, match=message):
        bench(**kw)


def test_bad_bench_options_on_the_command_line_are_one_line_and_write_nothing(capsys, store):
    from kdlib.cli import main
    from kdlib.store import results_dir

    assert main(["bench", "--examples", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "kdbook: error: examples must be an integer >= 1, got 0"
    assert not results_dir().exists()
