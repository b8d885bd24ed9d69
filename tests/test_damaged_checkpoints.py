"""Checkpoints that cannot resume the run are refused before anything loads, with an error naming the file and the
checkpoint to resume from instead: files cut short, a pickle that would run code, a generation cycle saved by another
number of processes or with another num_iterations."""

import os
import shutil
import subprocess
import sys

import pytest
import torch

from dipod_trl.saving.checkpoints import COMPLETE_NAME, load_checkpoint_file, mark_complete, resolve_resume
from tests.helpers.exploits import craft
from tests.helpers.trainers import make_trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# New completions every 2 steps: checkpoint-1 and checkpoint-3 fall inside a generation cycle, checkpoint-2 not.
COMMON = dict(max_steps=3, save_strategy="steps", save_steps=1, num_iterations=2, objective="fpo", beta=0.04)


@pytest.fixture(scope="module")
def saved_run(tokenizer, tmp_path_factory):
    """A finished 3-step run with a checkpoint after each step."""
    out = tmp_path_factory.mktemp("saved")
    make_trainer(tokenizer, out, **COMMON).train()
    return out / "run"


@pytest.fixture
def run(saved_run, tmp_path):
    """A copy of `saved_run` to damage."""
    shutil.copytree(saved_run, tmp_path / "run")
    return tmp_path / "run"


def truncate(path, keep: float = 0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


FILES = ["optimizer.pt", "scheduler.pt", "rng_state.pth", "generation_state_rank0.pt", "trainer_state.json",
         "model.safetensors"]


@pytest.mark.parametrize("name", FILES)
def test_a_file_cut_short_is_named_with_the_checkpoint_to_resume_from(tokenizer, run, name):
    last, previous = run / "checkpoint-3", run / "checkpoint-2"
    truncate(last / name)
    # Given by path: refused, naming the file and the checkpoint before it.
    with pytest.raises(ValueError, match=rf"checkpoint-3 is damaged: {last / name} has \d+ bytes where \d+ were saved.*"
                                         rf"Resume from {previous}, the last complete checkpoint before it"):
        make_trainer(tokenizer, run.parent, **COMMON).train(resume_from_checkpoint=str(last))
    # `true`: passed over with a warning naming it.
    with pytest.warns(UserWarning, match=rf"skipping incomplete checkpoint {last}: {last / name} has"):
        assert resolve_resume(True, str(run)) == str(previous)
    # Without the marker (a checkpoint written before markers existed) the file itself is found unreadable.
    os.remove(last / COMPLETE_NAME)
    kind = {".json": "JSON", ".safetensors": "safetensors"}.get(os.path.splitext(name)[1], "torch")
    with pytest.warns(UserWarning, match="may be incomplete"), \
            pytest.raises(ValueError, match=rf"{last / name} is not a readable {kind} file .*Resume from {previous}"):
        make_trainer(tokenizer, run.parent, **COMMON).train(resume_from_checkpoint=str(last))


def test_loading_a_cut_file_directly_names_it(run):
    path = run / "checkpoint-3" / "generation_state_rank0.pt"
    truncate(path)
    with pytest.raises(ValueError, match=rf"{path} cannot be read .*Resume from {run / 'checkpoint-2'}"):
        load_checkpoint_file(str(path))


@pytest.mark.parametrize("name", ["generation_state_rank0.pt", "optimizer.pt", "rng_state.pth"])
def test_a_checkpoint_file_that_would_run_code_is_refused(tokenizer, run, tmp_path, name):
    checkpoint, witness = run / "checkpoint-3", tmp_path / "pwned"
    craft(checkpoint / name, witness)
    mark_complete(str(checkpoint))  # made to look whole
    trainer = make_trainer(tokenizer, run.parent, **COMMON)
    with pytest.raises(ValueError, match=rf"refusing to load {checkpoint / name}: it holds Python objects"):
        trainer.train(resume_from_checkpoint=str(checkpoint))
    assert not witness.exists()


def test_a_mid_cycle_checkpoint_with_another_num_iterations_is_refused(tokenizer, run):
    checkpoint = run / "checkpoint-3"
    trainer = make_trainer(tokenizer, run.parent, **{**COMMON, "num_iterations": 3, "max_steps": 4})
    with pytest.raises(ValueError, match=r"checkpoint-3 was saved inside a generation cycle with num_iterations 2 "
                                         r"\(this run: 3\)"):
        trainer.train(resume_from_checkpoint=str(checkpoint))
    # At the end of a cycle the buffered batch is spent: another num_iterations is fine.
    trainer = make_trainer(tokenizer, run.parent, **{**COMMON, "num_iterations": 3, "max_steps": 3})
    trainer.train(resume_from_checkpoint=str(run / "checkpoint-2"))
    assert trainer.state.global_step == 3


def test_a_mid_cycle_checkpoint_of_two_processes_is_refused_on_one(tokenizer, run):
    """The files a two-process save writes (one generation state per process, each recording the count), built from a
    one-process checkpoint; the slow test below makes them with two real processes."""
    checkpoint = run / "checkpoint-3"
    state = torch.load(checkpoint / "generation_state_rank0.pt", weights_only=True)
    state["num_processes"] = 2
    for rank in (0, 1):
        torch.save(state, checkpoint / f"generation_state_rank{rank}.pt")
    mark_complete(str(checkpoint))
    with pytest.raises(ValueError, match=r"checkpoint-3 was saved inside a generation cycle with num_processes 2 "
                                         r"\(this run: 1\).*accelerate launch --num_processes N"):
        make_trainer(tokenizer, run.parent, **COMMON).train(resume_from_checkpoint=str(checkpoint))


@pytest.mark.slow
def test_a_two_process_mid_cycle_checkpoint_is_refused_on_one_process(tmp_path):
    out = tmp_path / "ddp"
    out.mkdir()
    args = [os.path.join(ROOT, "recipes", "tiny.yaml"), "--model_name_or_path", "tiny", "--num_generations", "4",
            "--drift_num_orders", "0", "--disable_tqdm", "true", "--save_steps", "1", "--max_steps", "1",
            "--output_dir", str(out)]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              os.path.join(ROOT, "recipes", "accelerate", "cpu2.yaml"), "-m", "dipod_trl", *args,
              "--per_device_train_batch_size", "4"]
    result = subprocess.run(launch, cwd=out, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = out / "checkpoint-1"
    with open(checkpoint / COMPLETE_NAME) as f:
        listed = f.read()
    for name in ("generation_state_rank0.pt", "generation_state_rank1.pt", "rng_state_0.pth", "rng_state_1.pth"):
        assert name in listed  # the marker was written after both processes' files
    from dipod_trl.commands import cli

    with pytest.raises(ValueError, match=r"num_processes 2 \(this run: 1\)"):
        cli.main(["train", *args, "--per_device_train_batch_size", "8", "--max_steps", "2",
                  "--resume_from_checkpoint", "true"])


def overwrite_tensor_bytes(path, data: bytes):
    """Replace the tensor bytes of a safetensors file (after its header) by `data` repeated: same size, same header,
    so only a check of its contents can tell."""
    raw = path.read_bytes()
    start = 8 + int.from_bytes(raw[:8], "little")
    body = (data * (len(raw) - start))[: len(raw) - start]
    path.write_bytes(raw[:start] + body)


DAMAGE = {"garbage": bytes(range(7, 256, 3)), "nan": b"\x00\x00\xc0\x7f"}  # float32 NaN, little-endian


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_same_size_damage_to_the_weights_is_refused_naming_the_checkpoint_and_the_one_before(tokenizer, run, damage):
    last, previous = run / "checkpoint-3", run / "checkpoint-2"
    weights = last / "model.safetensors"
    size = weights.stat().st_size
    overwrite_tensor_bytes(weights, DAMAGE[damage])
    assert weights.stat().st_size == size
    with pytest.raises(ValueError, match=rf"checkpoint {last} is damaged: {weights} does not match the SHA-256 saved "
                                         rf"with it.*Resume from {previous}, the last complete checkpoint before it"):
        make_trainer(tokenizer, run.parent, **COMMON).train(resume_from_checkpoint=str(last))
    with pytest.warns(UserWarning, match=rf"skipping damaged checkpoint {last}: {weights} does not match"):
        assert resolve_resume(True, str(run)) == str(previous)


def test_nan_weights_in_a_checkpoint_without_checksums_are_refused_before_the_first_step(tokenizer, run):
    """A checkpoint of a version without checksums (no marker): loaded, its NaN weights are found before a step runs,
    rather than failing at the next step with a hint that points back at this checkpoint as the good one."""
    last, previous = run / "checkpoint-3", run / "checkpoint-2"
    overwrite_tensor_bytes(last / "model.safetensors", DAMAGE["nan"])
    os.remove(last / COMPLETE_NAME)
    with pytest.warns(UserWarning, match="may be incomplete"), pytest.raises(
            ValueError, match=rf"checkpoint {last} is damaged: its weight .* holds NaN or infinite values.*Resume from "
                              rf"{previous}"):
        make_trainer(tokenizer, run.parent, **{**COMMON, "max_steps": 4}).train(resume_from_checkpoint=str(last))
