"""Check that what `dipod merge` and training save for LLaDA and Dream loads in the published modeling code under
transformers 4.x, with the logits our implementation computes.

Two environments, as for tests/fixtures (scripts/make_parity_fixtures.py): the project's saves the folders, a
throwaway transformers 4.x environment loads them with the published code:

    python3 -m venv /tmp/t457 && /tmp/t457/bin/pip install torch==2.13.0 transformers==4.57.1 einops
    git clone https://github.com/NVlabs/Fast-dLLM /tmp/Fast-dLLM   # the published llada/model and dream/model code
    python scripts/check_published_loading.py --python4 /tmp/t457/bin/python --code /tmp/Fast-dLLM

For each family it writes two folders from the parity fixture: `dipod merge` of LoRA adapters on it (the fixture
ships no modeling code, so `auto_map` points at the family's hub repository), and a save from a source folder that
ships the modeling code (copied along). Under 4.x, offline, with a hub cache holding only the published code, each
folder loads through `AutoConfig`/`AutoModel.from_pretrained(dir, trust_remote_code=True)` and `AutoTokenizer` (with
and without `trust_remote_code`); the published model's logits and the tokenizer's ids are compared with ours.
Prints one JSON report; exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FAMILIES = {"llada": ("GSAI-ML/LLaDA-8B-Instruct", "llada/model"), "dream": ("Dream-org/Dream-v0-Instruct-7B",
                                                                          "dream/model")}
TEXTS = ["sort: 31415", "<|endoftext|>hello world"]


def save_folders(work: Path, code: Path) -> dict:
    """Project environment: the merged and the code-carrying folder of each family, with our logits and ids."""
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file

    from dipod_trl.commands import cli
    from dipod_trl.models import load_diffusion_model, load_diffusion_tokenizer

    folders = {}
    for family, (_, code_dir) in FAMILIES.items():
        fixture = REPO / "tests" / "fixtures" / f"{family}_tiny"
        torch.manual_seed(0)
        model = get_peft_model(load_diffusion_model(str(fixture)),
                               LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        model.save_pretrained(work / f"{family}_adapters")
        cli.main(["merge", str(work / f"{family}_adapters"), str(work / f"{family}_merged")])
        source = work / f"{family}_source"
        shutil.copytree(fixture, source)
        for path in (code / code_dir).glob("*.py"):
            if path.name != "__init__.py":
                shutil.copy(path, source / path.name)
        load_diffusion_model(str(source)).save_pretrained(work / f"{family}_with_code")
        load_diffusion_tokenizer(str(source)).save_pretrained(work / f"{family}_with_code")
        for kind in ("merged", "with_code"):
            folder = work / f"{family}_{kind}"
            tokenizer = load_diffusion_tokenizer(str(folder))
            ids = torch.tensor([tokenizer(TEXTS[0]).input_ids * 2])
            with torch.no_grad():
                logits = load_diffusion_model(str(folder)).eval()(ids).logits
            save_file({"input_ids": ids, "logits": logits}, str(folder / "ours.safetensors"))
            folders[f"{family}_{kind}"] = {"family": family, "ids": [tokenizer(t).input_ids for t in TEXTS]}
    return folders


def fake_hub_cache(cache: Path, code: Path) -> None:
    """A hub cache holding only the published code of each family's repository (`repo--module.Class` references)."""
    for repo, code_dir in FAMILIES.values():
        revision = "0" * 40
        snapshot = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / revision
        snapshot.mkdir(parents=True)
        (snapshot.parent.parent / "refs").mkdir()
        (snapshot.parent.parent / "refs" / "main").write_text(revision)
        for path in (code / code_dir).glob("*.py"):
            shutil.copy(path, snapshot / path.name)


def check_in_published_code(work: Path, folders: dict) -> dict:
    """transformers 4.x environment: load each folder with the published code and compare with our numbers."""
    import torch
    import torch.nn.functional as F
    import transformers
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    report = {"transformers": transformers.__version__}
    for name, expected in folders.items():
        folder = work / name
        result = {}
        try:
            AutoConfig.from_pretrained(folder, trust_remote_code=True)
            model = AutoModel.from_pretrained(folder, trust_remote_code=True, torch_dtype=torch.float32)
            module = sys.modules[type(model).__module__]
            if hasattr(module, "scaled_dot_product_attention"):  # Fast-dLLM wraps SDPA in torch.compile
                module.scaled_dot_product_attention = F.scaled_dot_product_attention
            ours = load_file(str(folder / "ours.safetensors"))
            with torch.no_grad():
                theirs = model.float().eval()(ours["input_ids"]).logits
            error = ((theirs - ours["logits"]).abs().max() / ours["logits"].abs().max()).item()
            result["model_class"] = f"{type(model).__module__}.{type(model).__name__}"
            result["logits_relative_error"] = error
            for trust in (False, True):
                tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust)
                ids = [tokenizer(t).input_ids for t in TEXTS]
                result[f"tokenizer_trust_remote_code_{trust}"] = type(tokenizer).__name__
                result[f"tokenizer_ids_match_{trust}"] = ids == expected["ids"]
            result["ok"] = error < 1e-4 and all(v for k, v in result.items() if k.startswith("tokenizer_ids_match"))
        except Exception as error:  # report every folder, then fail
            result.update(ok=False, error=f"{type(error).__name__}: {error}")
        report[name] = result
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python4", required=True, help="python of an environment with transformers 4.x")
    parser.add_argument("--code", type=Path, required=True, help="checkout of NVlabs/Fast-dLLM")
    parser.add_argument("--work", type=Path, help="where the folders are written (default: a temporary directory)")
    parser.add_argument("--_published", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._published:  # second stage, inside the transformers 4.x environment
        folders = json.loads((args.work / "folders.json").read_text())
        print(json.dumps(check_in_published_code(args.work, folders)))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="published_loading_"))
    folders = save_folders(work, args.code)
    (work / "folders.json").write_text(json.dumps(folders))
    fake_hub_cache(work / "hub", args.code)
    env = {**os.environ, "HF_HUB_CACHE": str(work / "hub"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": "",
           "HF_MODULES_CACHE": str(work / "modules")}
    run = subprocess.run([args.python4, __file__, "--python4", args.python4, "--code", str(args.code), "--work",
                          str(work), "--_published"], env=env, capture_output=True, text=True)
    if run.returncode != 0:
        print(run.stderr[-4000:], file=sys.stderr)
        sys.exit(run.returncode)
    report = json.loads(run.stdout.strip().splitlines()[-1])
    print(json.dumps(report, indent=2))
    sys.exit(0 if all(v["ok"] for k, v in report.items() if k != "transformers") else 1)


if __name__ == "__main__":
    main()
