"""A run killed (SIGKILL) or out of disk space while saving a checkpoint leaves a folder `resume_from_checkpoint: true`
passes over, with a warning naming it; the last complete checkpoint resumes to the uninterrupted run's weights.

The kills are real: a `dipod train` process sends itself SIGKILL at the moment its save starts writing a given file
(found by the interpreter's profiling hook, which changes nothing in the code under test). The processes are forked
from a server that imported the package once, so each costs the training time only.
"""

import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from dipod_trl.commands import cli
from dipod_trl.saving.checkpoints import COMPLETE_NAME, checkpoint_problem, resolve_resume
from tests.helpers.processes import forkserver, kill_when_saving

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "recipes", "tiny.yaml")
# tiny.yaml: num_iterations 2, so checkpoint-1 and checkpoint-3 fall inside a generation cycle.
ARGS = ["--model_name_or_path", "tiny", "--per_device_train_batch_size", "8", "--num_generations", "4",
        "--drift_num_orders", "0", "--logging_steps", "1", "--disable_tqdm", "true", "--save_steps", "1",
        "--max_steps", "3"]

def train_and_die(output_dir: str, folder: str, target: str, inside: bool, threads: int) -> None:
    """`dipod train` into `output_dir`, killed while saving `folder`; at the test process's thread count, which other
    tests may have changed (the float sums, and so the weights, depend on it)."""
    torch.set_num_threads(threads)
    sys.setprofile(kill_when_saving(folder, target, inside))
    cli.main(["train", TINY, "--output_dir", output_dir, *ARGS])


@pytest.fixture(scope="module")
def forked():
    return forkserver("tests.test_crash_safety")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    cli.main(["train", TINY, "--output_dir", str(out), *ARGS])
    return out


# Each moment of checkpoint-2's save (a generation-cycle boundary; checkpoint-1 is inside the cycle).
slow = pytest.mark.slow
MOMENTS = [
    pytest.param("model.safetensors", False, id="config.json-only"),
    pytest.param("optimizer.pt", False, id="weights-written", marks=slow),
    pytest.param("optimizer.pt", True, id="optimizer.pt-open-empty"),
    pytest.param("scheduler.pt", False, id="optimizer-written", marks=slow),
    pytest.param("rng_state.pth", False, id="scheduler-written", marks=slow),
    pytest.param("trainer_state.json", False, id="rng-written", marks=slow),
    pytest.param("generation_state_rank0.pt", False, id="trainer-files-written", marks=slow),
    pytest.param(COMPLETE_NAME, False, id="all-but-the-marker-written"),
]


@pytest.mark.parametrize("target, inside", MOMENTS)
def test_a_run_killed_while_saving_resumes_from_the_last_complete_checkpoint(forked, uninterrupted, tmp_path, target,
                                                                              inside):
    process = forked.Process(target=train_and_die, args=(str(tmp_path), "checkpoint-2", target, inside,
                                                                   torch.get_num_threads()))
    process.start()
    process.join(timeout=300)
    assert process.exitcode == -signal.SIGKILL
    assert not (tmp_path / "checkpoint-3").exists()
    assert checkpoint_problem(str(tmp_path / "checkpoint-1")) is None
    assert "did not finish" in checkpoint_problem(str(tmp_path / "checkpoint-2"))

    with pytest.warns(UserWarning, match=r"skipping incomplete checkpoint .*checkpoint-2: it has no checkpoint_compl"):
        resumed = cli.main(["train", TINY, "--output_dir", str(tmp_path), *ARGS, "--resume_from_checkpoint", "true"])
    assert resumed.state.global_step == 3
    expected, got = load_file(uninterrupted / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    assert expected.keys() == got.keys()
    for name, weights in expected.items():
        assert torch.equal(weights, got[name]), name
    for step in (1, 2, 3):  # the re-saved checkpoint-2 is complete and whole again
        assert checkpoint_problem(str(tmp_path / f"checkpoint-{step}")) is None


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs at tmp_path/disk (needs root), resized with `resize(bytes)`."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")

    def resize(size: int):
        subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)

    try:
        yield disk, resize
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def _disk_usage(path) -> int:
    """Bytes a tmpfs charges for the files under `path` (whole pages)."""
    page = os.sysconf("SC_PAGE_SIZE")
    return sum(-(-os.path.getsize(os.path.join(root, name)) // page) * page
               for root, _, names in os.walk(path) for name in names)


def test_a_disk_that_fills_while_saving_leaves_the_last_complete_checkpoint_to_resume(uninterrupted, small_disk):
    disk, resize = small_disk
    out = disk / "run"
    # Room for what the run writes before checkpoint-2, and for half of checkpoint-2.
    before = _disk_usage(uninterrupted) - _disk_usage(uninterrupted / "checkpoint-2") - _disk_usage(
        uninterrupted / "checkpoint-3") - os.path.getsize(uninterrupted / "model.safetensors")
    resize(before + _disk_usage(uninterrupted / "checkpoint-2") // 2)
    with pytest.raises(RuntimeError, match=r"saving .*checkpoint-2 failed .*MiB free \(full\?\). The folder is left "
                       "incomplete"):
        cli.main(["train", TINY, "--output_dir", str(out), *ARGS])
    assert checkpoint_problem(str(out / "checkpoint-1")) is None
    assert checkpoint_problem(str(out / "checkpoint-2")) is not None

    resize(64 << 20)  # space freed
    with pytest.warns(UserWarning, match=r"skipping incomplete checkpoint .*checkpoint-2"):
        cli.main(["train", TINY, "--output_dir", str(out), *ARGS, "--resume_from_checkpoint", "true"])
    expected, got = load_file(uninterrupted / "model.safetensors"), load_file(out / "model.safetensors")
    for name, weights in expected.items():
        assert torch.equal(weights, got[name]), name


def test_old_checkpoints_are_rotated_away_only_once_the_new_one_is_complete(forked, uninterrupted, tmp_path):
    """save_total_limit 1: killed after checkpoint-2's Trainer files but before its generation state, checkpoint-1
    must still be there (it was deleted at that moment before), and resume from it."""
    process = forked.Process(target=train_and_die_with_limit, args=(str(tmp_path), "generation_state_rank0.pt",
                                                                              torch.get_num_threads()))
    process.start()
    process.join(timeout=300)
    assert process.exitcode == -signal.SIGKILL
    assert sorted(p for p in os.listdir(tmp_path) if p.startswith("checkpoint-")) == ["checkpoint-1", "checkpoint-2"]
    assert checkpoint_problem(str(tmp_path / "checkpoint-1")) is None
    with pytest.warns(UserWarning, match=r"skipping incomplete checkpoint .*checkpoint-2"):
        resumed = cli.main(["train", TINY, "--output_dir", str(tmp_path), *ARGS, "--save_total_limit", "1",
                            "--resume_from_checkpoint", "true"])
    assert resumed.state.global_step == 3
    assert sorted(p for p in os.listdir(tmp_path) if p.startswith("checkpoint-")) == ["checkpoint-3"]
    assert checkpoint_problem(str(tmp_path / "checkpoint-3")) is None
    expected, got = load_file(uninterrupted / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    for name, weights in expected.items():
        assert torch.equal(weights, got[name]), name


def train_and_die_with_limit(output_dir: str, target: str, threads: int) -> None:
    torch.set_num_threads(threads)
    sys.setprofile(kill_when_saving("checkpoint-2", target, False))
    cli.main(["train", TINY, "--output_dir", output_dir, *ARGS, "--save_total_limit", "1"])


def test_resume_true_with_only_incomplete_checkpoints_names_them_and_starts_afresh(tmp_path):
    """A run killed during its first save left nothing to resume: `true` starts afresh, saying so (a requeued job
    must not fail on every requeue)."""
    (tmp_path / "checkpoint-1").mkdir()
    (tmp_path / "checkpoint-1" / "config.json").write_text("{}")
    with pytest.warns(UserWarning, match=r"only what a run cut short .*\(checkpoint-1\): starting the run afresh"):
        trainer = cli.main(["train", TINY, "--output_dir", str(tmp_path), *ARGS, "--max_steps", "1",
                            "--resume_from_checkpoint", "true"])
    assert trainer.state.global_step == 1 and checkpoint_problem(str(tmp_path / "checkpoint-1")) is None
    # Anything else in the folder is not the run's own leftovers: refused as before, naming what is there.
    shutil.rmtree(tmp_path)
    (tmp_path / "checkpoint-1").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileNotFoundError, match=r"no complete checkpoint-N .*checkpoint-1"):
        cli.main(["train", TINY, "--output_dir", str(tmp_path), *ARGS, "--resume_from_checkpoint", "true"])


def test_an_eval_sweep_skips_a_checkpoint_cut_short_and_summarises_the_others(forked, tmp_path):
    run = tmp_path / "run"
    process = forked.Process(target=train_and_die, args=(str(run), "checkpoint-2", "model.safetensors", False,
                                                               torch.get_num_threads()))
    process.start()
    process.join(timeout=300)
    assert process.exitcode == -signal.SIGKILL
    assert os.listdir(run / "checkpoint-2") == ["config.json"]  # what the kill left
    shutil.copytree(run / "checkpoint-1", run / "checkpoint-3")  # a folder without a marker whose config is cut
    os.remove(run / "checkpoint-3" / COMPLETE_NAME)
    (run / "checkpoint-3" / "config.json").write_text('{"model_type": "tiny')
    out = tmp_path / "sweep"
    argv = ["eval", "--checkpoints", str(run / "checkpoint-*"), "--task", "digit_sort", "--gen_length", "8",
            "--block_length", "4", "--num_examples", "8", "--batch_size", "8", "--output_dir", str(out)]
    with pytest.warns(UserWarning) as caught:
        rows = cli.main(argv)
    messages = [str(w.message) for w in caught if "skipping checkpoint" in str(w.message)]
    assert len(messages) == 2
    assert f"skipping checkpoint {run / 'checkpoint-2'}: it has no weights file" in messages[0]
    assert f"skipping checkpoint {run / 'checkpoint-3'}: its model could not be loaded" in messages[1]
    with pytest.raises(FileNotFoundError, match=r"checkpoint-2 is incomplete: .* no trainer state. Resume from "
                                                rf"{run / 'checkpoint-1'}, the last complete checkpoint before it"):
        resolve_resume(str(run / "checkpoint-2"), str(run))  # given by path, as an older launch script did
    assert [r["step"] for r in rows] == [1]
    with open(out / "summary.csv") as f:
        assert [line.split(",")[0] for line in f.read().splitlines()[1:]] == [str(run / "checkpoint-1")]
    summary = (out / "summary.md").read_text()
    assert "best at gen_length 8" in summary and "- skipped checkpoint-2: it has no weights file" in summary


def test_sft_checkpoints_are_marked_complete_and_resume_true_finds_them(tmp_path):
    sft = [os.path.join(ROOT, "recipes", "tiny_sft.yaml"), "--output_dir", str(tmp_path), "--save_strategy", "steps",
           "--save_steps", "1", "--disable_tqdm", "true"]
    cli.main(["sft", *sft, "--max_steps", "2"])
    assert [checkpoint_problem(str(tmp_path / f"checkpoint-{n}")) for n in (1, 2)] == [None, None]
    os.remove(tmp_path / "checkpoint-2" / COMPLETE_NAME)  # as a kill before the marker leaves it
    with pytest.warns(UserWarning, match=r"skipping incomplete checkpoint .*checkpoint-2"):
        resumed = cli.main(["sft", *sft, "--max_steps", "3", "--resume_from_checkpoint", "true"])
    assert resumed.state.global_step == 3
