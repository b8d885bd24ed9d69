"""The model card (README.md) written next to a trained model: what it is, how it was trained, how to run it.

TRL's card is made for autoregressive models: its quick start is `pipeline("text-generation")`, which cannot sample a
masked diffusion LM, and it would cite GRPO's paper. This one says how the model was trained (DiPOD with its
objective and `dipod_beta`, or masked-diffusion SFT), runs it with `dipod generate` / `dipod_trl.generate`, names the
base model when it is known, and cites DiPOD.
"""

from __future__ import annotations

import os

from huggingface_hub import ModelCard

from .run_record import read_run

PAPER_TITLE = "Diffusion Policy Optimization without Drifting Apart"
PAPER_ARXIV_ID = "2606.13795"
CITATION = f"""@misc{{dipod2026,
    title         = {{{{{PAPER_TITLE}}}}},
    year          = {{2026}},
    eprint        = {{{PAPER_ARXIV_ID}}},
    archivePrefix = {{arXiv}},
    url           = {{https://arxiv.org/abs/{PAPER_ARXIV_ID}}},
}}"""


def base_model_of(model) -> str | None:
    """The model a trained model started from, as loaded (hub id or directory); None for one built in memory."""
    peft_config = getattr(model, "peft_config", None)
    if peft_config:
        base = next(iter(peft_config.values())).base_model_name_or_path
    else:
        base = getattr(getattr(model, "config", None), "_name_or_path", None)
    return base or None


def family_of(model) -> str:
    """The model's family as its class names it (`family_name`), with its `model_type`."""
    from ..models.protocol import unwrap_model

    base = unwrap_model(model)
    name = getattr(type(base), "family_name", None) or type(base).__name__
    model_type = getattr(getattr(base, "config", None), "model_type", None)
    return f"{name}, `model_type` `{model_type}`" if model_type else name


def _generation_settings(args) -> tuple[int, int, int]:
    gen_length = getattr(args, "max_completion_length", None) or 256
    block_length = min(getattr(args, "block_length", None) or 32, gen_length)
    steps = getattr(args, "diffusion_steps", None) or gen_length
    return gen_length, block_length, steps


def _training_lines(args, global_step: int) -> list[str]:
    if hasattr(args, "dipod_beta"):
        lines = [
            f"- Method: RL with DiPOD ([{PAPER_TITLE}](https://arxiv.org/abs/{PAPER_ARXIV_ID})): the "
            f"`{args.objective}` surrogate plus DiPOD's on-policy ELBO term",
            f"- `objective`: `{args.objective}`, `dipod_beta`: {args.dipod_beta}"
            + ("" if args.dipod_beta else " (the base objective alone, DiPOD's term off)")
            + f", `dipod_normalization`: `{args.dipod_normalization}`",
            f"- `num_generations`: {args.num_generations}, `num_iterations`: {args.num_iterations}, "
            f"`elbo_num_samples`: {args.elbo_num_samples}, `beta` (KL): {args.beta}",
        ]
    else:
        lines = [
            "- Method: masked-diffusion SFT (the negative ELBO of completion tokens; the SFT stage of d1's pipeline)",
            f"- `elbo_num_samples`: {args.elbo_num_samples}",
        ]
    lines.append(f"- `learning_rate`: {args.learning_rate}, optimizer steps: {global_step}")
    return lines


def _history_lines(run: dict | None) -> list[str]:
    """Where the run started from (a fork) and each setting changed when it resumed (the values above are the last)."""
    if not run:
        return []
    lines = []
    if run.get("forked_from"):
        lines.append(f"- Continued from the checkpoint `{run['forked_from']['checkpoint']}` of another run folder")
    for entry in run.get("changes", []):
        shown = ", ".join(f"`{name}` {old} -> {new}" for name, (old, new) in entry["changes"].items())
        lines.append(f"- Resumed at step {entry['step']} with changed settings: {shown}")
    return lines


def _model_line(model) -> str:
    return f"- Model family: {family_of(model)}"


def dipod_model_card(model, args, *, model_name: str, global_step: int = 0, hub_model_id: str | None = None,
                     dataset_name: str | None = None, run: dict | None = None) -> ModelCard:
    """The card of `model` trained with `args` (a `DiPODConfig` or a `MaskedSFTConfig`); `run`: its run record
    (`dipod_trl.saving.run_record`), for the settings changed on resume."""
    base = base_model_of(model)
    on_hub = base is not None and not os.path.exists(base)  # a hub id, not a local directory
    adapters = bool(getattr(model, "peft_config", None))
    name = hub_model_id or model_name
    source = hub_model_id or args.output_dir  # what the quick start loads: the hub repository, or the directory
    metadata = ["---"]
    if on_hub:
        metadata.append(f"base_model: {base}")
    metadata += [f"library_name: {'peft' if adapters else 'transformers'}", "tags:"]
    metadata += [f"- {tag}" for tag in ("dipod-trl", "masked-diffusion-lm", "dipod" if hasattr(args, "dipod_beta")
                                        else "sft")]
    if dataset_name:
        metadata += ["datasets:", f"- {dataset_name}"]
    metadata.append("---")
    if base is None:
        origin = "A masked diffusion language model"
    elif on_hub:
        origin = f"A fine-tuned version of [{base}](https://huggingface.co/{base}), a masked diffusion language model,"
    else:
        origin = f"A fine-tuned version of the masked diffusion language model in `{base}`"
    what = "LoRA adapters on it" if adapters else "the full model"
    gen_length, block_length, steps = _generation_settings(args)
    body = f"""
# {name}

{origin} trained with dipod-trl ({what}).

## Quick start

A masked diffusion LM samples by unmasking a whole block at a time, not token by token, so
`transformers.pipeline("text-generation")` cannot run it. With dipod-trl installed (`pip install dipod-trl`):

```bash
dipod generate --model {source} --prompt "What is 7 * 8?" \\
    --gen_length {gen_length} --block_length {block_length} --steps {steps}
```

```python
import dipod_trl
from dipod_trl.models import load_diffusion_model, load_diffusion_tokenizer

model = load_diffusion_model("{source}").eval()
tokenizer = load_diffusion_tokenizer("{source}", padding_side="left")
batch = tokenizer.apply_chat_template([[{{"role": "user", "content": "What is 7 * 8?"}}]], add_generation_prompt=True,
                                      return_dict=True, return_tensors="pt")
ids, mask = dipod_trl.generate(model, batch["input_ids"], batch["attention_mask"], tokenizer=tokenizer,
                               gen_length={gen_length}, block_length={block_length}, steps={steps})
print(tokenizer.decode(ids[0][mask[0].bool()], skip_special_tokens=True))
```
{"" if not adapters else '''
`dipod merge ADAPTER_DIR OUTPUT_DIR` folds the adapters into the base model, for tools that do not read adapters.
'''}
## Training

{_model_line(model)}
{chr(10).join(_training_lines(args, global_step) + _history_lines(run))}

## Citation

Cite DiPOD as:

```bibtex
{CITATION}
```
"""
    return ModelCard("\n".join(metadata) + "\n" + body)


def write_model_card(trainer, output_dir: str | None = None, model_name: str | None = None,
                     dataset_name: str | None = None) -> None:
    """Write `trainer`'s model card to `output_dir/README.md` (default: the run's output_dir), on the main process."""
    if not trainer.is_world_process_zero():
        return
    output_dir = output_dir or trainer.args.output_dir
    os.makedirs(output_dir, exist_ok=True)
    card = dipod_model_card(trainer.model, trainer.args, model_name=model_name or os.path.basename(
        os.path.normpath(trainer.args.output_dir)), global_step=trainer.state.global_step,
        hub_model_id=trainer.args.hub_model_id, dataset_name=dataset_name,
        run=getattr(trainer, "dipod_run", None) or read_run(trainer.args.output_dir))
    card.save(os.path.join(output_dir, "README.md"))
