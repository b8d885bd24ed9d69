"""`dipod merge` never writes over a model folder by accident: a non-empty output_dir is refused unless --overwrite,
which replaces it whole (no old file left beside the merged model); the adapter directory itself is never a target."""

import os
import shutil

import pytest
import torch

from dipod_trl.commands import cli
from dipod_trl.models import TinyMDLMForMaskedDiffusion, load_diffusion_model
from tests.helpers.models import masked_batch_logits


def snapshot(folder) -> dict[str, bytes]:
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


def test_merge_refuses_a_non_empty_output_dir_and_replaces_it_whole_with_overwrite(lora_run, tmp_path):
    base_dir, adapter_dir, adapter_logits, base_logits = lora_run
    out = tmp_path / "model"
    shutil.copytree(base_dir, out)  # an existing full model ...
    (out / "notes.txt").write_text("results of the base model")  # ... with a file of its own
    out.chmod(0o750)
    before = snapshot(out)
    with pytest.raises(FileExistsError, match=f"output_dir '{out}' is not empty .*notes.txt.*--overwrite"):
        cli.main(["merge", adapter_dir, str(out)])
    assert snapshot(out) == before  # untouched
    torch.testing.assert_close(masked_batch_logits(load_diffusion_model(str(out))), base_logits, rtol=0, atol=0)

    cli.main(["merge", adapter_dir, str(out), "--overwrite"])
    merged = load_diffusion_model(str(out))
    assert type(merged) is TinyMDLMForMaskedDiffusion
    torch.testing.assert_close(masked_batch_logits(merged), adapter_logits, rtol=0, atol=1e-5)
    assert not (out / "notes.txt").exists()  # replaced whole, not mixed
    assert out.stat().st_mode & 0o777 == 0o750  # with the folder's permissions
    assert sorted(os.listdir(tmp_path)) == ["model"]  # no staging folder left behind

    empty = tmp_path / "empty"
    empty.mkdir()
    cli.main(["merge", adapter_dir, str(empty)])  # an empty directory needs no --overwrite
    torch.testing.assert_close(masked_batch_logits(load_diffusion_model(str(empty))), adapter_logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("target", ["adapters", "parent"])
def test_merge_never_writes_into_or_over_the_adapter_directory(lora_run, tmp_path, target):
    run = tmp_path / "run"
    adapters = run / "checkpoint-5"
    shutil.copytree(lora_run[1], adapters)
    output = adapters if target == "adapters" else run
    before = snapshot(adapters)
    for extra in ([], ["--overwrite"]):
        with pytest.raises(ValueError, match="would mix the merged model with the adapters"):
            cli.main(["merge", str(adapters), str(output) + "/", *extra])
    assert snapshot(adapters) == before and sorted(os.listdir(run)) == ["checkpoint-5"]
