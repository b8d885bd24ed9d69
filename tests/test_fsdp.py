"""FSDP through accelerate needs CUDA: on a CPU machine an FSDP launch is refused instead of silently running DDP."""

import pytest
import torch

from dipod_trl import DiPODConfig


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_an_fsdp_launch_without_cuda_is_refused_with_the_alternatives(monkeypatch, tmp_path):
    # what `accelerate launch --config_file <an FSDP config>` sets in each of two processes
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="FSDP needs CUDA.*cpu2_zero3.yaml"):
        DiPODConfig(output_dir=str(tmp_path), report_to="none")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not DiPODConfig(output_dir=str(tmp_path), report_to="none").use_cpu  # other launches are unaffected
