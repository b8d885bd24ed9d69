"""Regenerate tests/fixtures/block_sampler_tiny: the tokens the published block-diffusion samplers produce on a tiny
block model, for `tests/test_block_sampling.py` to compare `dipod_trl.generate` with.

The published samplers:
- SDAR's `block_diffusion_generate` (generate.py of github.com/JetAstra/SDAR, commit c2041a8);
- LLaDA2.0-mini's and LLaDA2.1-mini's `generate` (models/LLaDA2.{0,1}-mini/modeling_llada2_moe.py of
  github.com/yjyddq/DARE, commit 83ae8a3), a method of the published model class.

The repository holds none of that code; `--sdar` and `--dare` point at checkouts of it:

    git clone https://github.com/JetAstra/SDAR /tmp/SDAR && git -C /tmp/SDAR checkout c2041a8
    git clone https://github.com/yjyddq/DARE /tmp/DARE && git -C /tmp/DARE checkout 83ae8a3
    PYTHONPATH=. python scripts/make_block_sampler_fixtures.py --sdar /tmp/SDAR --dare /tmp/DARE

Second, the published samplers on the published model classes, in the reference environments of
scripts/make_block_parity_fixtures.py (whose flash-attn stand-ins SDAR's modeling file needs on a CPU), on the tiny
checkpoints tests/fixtures/{sdar,llada2}_tiny, written to published_{sdar,llada2}.json:

    python3 -m venv /tmp/t452 && /tmp/t452/bin/pip install torch==2.13.0 transformers==4.52.4 einops
    python3 -m venv /tmp/t4571 && /tmp/t4571/bin/pip install torch==2.13.0 transformers==4.57.1 einops
    /tmp/t452/bin/python scripts/make_block_sampler_fixtures.py --sdar /tmp/SDAR --dare /tmp/DARE --published sdar
    /tmp/t4571/bin/python scripts/make_block_sampler_fixtures.py --sdar /tmp/SDAR --dare /tmp/DARE --published llada2

(models/SDAR-4B-Chat and models/LLaDA2.0-mini of DARE; the model runs in float32, LLaDA2's bf16 block mask cast to
float32, its values 0 and -inf unchanged.)

Environment of the first part: the project's own (torch 2.13, transformers 5). The samplers run unchanged on the
project's tiny block model (`TinyBlockMDLMForBlockDiffusion`, fp32, saved into the fixture) through a thin stand-in
for the published model classes' forward, so that what is compared is the samplers' logic on the same network:
- SDAR: `model(x, attention_mask, position_ids, past_key_values, use_cache, store_kv)` of modeling_sdar.py. Its
  attention reads the mask as boolean (1 = attend) and, with `store_kv=True`, appends the call's keys/values to the
  cache; `store_kv=False` attends to the cache and the call's tokens without storing. The stand-in keeps the stored
  tokens with the mask rows they were stored under and recomputes them with those rows at every call: the same keys
  and values as a cache, computed again.
- LLaDA2: `self.forward(x, attention_mask, position_ids)` of modeling_llada2_moe.py, whose SDPA and eager attention
  add a floating-point 4-D mask to the scores. The stand-in passes the mask as an additive float mask too. LLaDA2.0's
  `generate` builds it as log(0/1) = -inf/0, the block-causal mask. LLaDA2.1's builds it as 0/1 values: added to the
  scores, that masks nothing (attended keys get +1), so its prompt and earlier blocks attend to later positions of
  the window; the script measures how many tokens that changes (`llada21_mask` in the fixture) and LLaDA2.1 is
  not used as a block-causal reference.
Their `_sample_with_temperature_topk_topp` / `sample_with_temperature_topk_topp` is replaced by the greedy rule
(argmax; confidence = its softmax probability in float64) for the greedy cases, and left as published for the
seeded sampling cases (the global RNG seeded per row with `torch.manual_seed`, which `dipod_trl.generate` matches
with one `torch.Generator` per row seeded alike).

SDAR's top-k (`low_confidence_static`, and `low_confidence_dynamic` below the threshold) takes the step's scheduled
count even when fewer masks are left (the prompt's partial block when its masks are not a sum of the first steps'
counts, or a block the threshold filled ahead of the schedule), and then overwrites filled positions, prompt tokens
included, with new predictions. `dipod_trl.generate` commits the masks left (LLaDA2's `min`). The SDAR stand-in
watches for a step that changes a filled position; such rows are recorded with `sdar: null`. SDAR's
`entropy_bounded` strategy fails on its first step (`transfer_index` is never assigned in that branch) and is not
reproduced; the script records the error.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

OUT = REPO / "tests" / "fixtures" / "block_sampler_tiny"
PROMPTS = ["2+2=", "what is 13*7?", "a", "hello world, dear model", "count: 1 2 3"]
NEVER = -1  # an EOS id no token has

# (name, gen_length, block_length, steps_per_block, threshold, temperature, top_k, top_p, stop)
CASES = [
    ("greedy_b4_n4", 8, 4, 4, None, 0.0, None, None, False),
    ("greedy_b4_n2", 10, 4, 2, None, 0.0, None, None, False),
    ("greedy_b5_n3", 13, 5, 3, None, 0.0, None, None, False),
    ("greedy_b3_n1", 7, 3, 1, None, 0.0, None, None, False),
    ("greedy_b4_n8", 9, 4, 8, None, 0.0, None, None, False),
    ("threshold_b4_n4", 12, 4, 4, 0.3, 0.0, None, None, False),
    ("threshold_b6_n3", 11, 6, 3, 0.2, 0.0, None, None, False),
    ("sample_b4_n4", 12, 4, 4, None, 0.8, None, None, False),
    ("sample_topk_topp_b4_n2", 10, 4, 2, None, 1.3, 20, 0.9, False),
    ("sample_threshold_b5_n5", 10, 5, 5, 0.25, 0.7, 30, None, False),
    ("stop_b4_n4", 24, 4, 4, None, 0.0, None, None, True),
    ("stop_threshold_b4_n2", 24, 4, 2, 0.3, 0.0, None, None, True),
]


def greedy(logits, *args, **kwargs):
    """The greedy rule: argmax, with its softmax probability in float64."""
    x0 = logits.argmax(dim=-1)
    return x0, F.softmax(logits.double(), dim=-1).gather(-1, x0[..., None])[..., 0]


class SDARStandIn:
    """modeling_sdar.py's forward, as the sampler calls it, on the tiny block model (module docstring)."""

    def __init__(self, model):
        self.model, self.device = model, torch.device("cpu")
        self.tokens, self.positions, self.rows = [], [], []
        self.last, self.overwrote = None, False  # whether a step changed a filled position of the block

    def watch(self, x, position_ids):
        if self.last is not None and self.last[1] == int(position_ids[0, 0]):
            filled = self.last[0] != self.model.config.mask_token_id
            self.overwrote |= bool((filled & (x != self.last[0])).any())
        self.last = (x.clone(), int(position_ids[0, 0]))

    def eval(self):
        return self

    def __call__(self, x, attention_mask, position_ids, past_key_values=None, use_cache=True, store_kv=False):
        self.watch(x, position_ids)
        stored = sum(t.shape[1] for t in self.tokens)
        keys = stored + x.shape[1]
        assert attention_mask.shape[-1] == keys, (attention_mask.shape, keys)
        rows = [F.pad(r, (0, keys - r.shape[-1])) for r in self.rows] + [attention_mask[0].bool()]
        mask = torch.cat(rows, dim=0)[None, None]
        tokens = torch.cat(self.tokens + [x], dim=1)
        positions = torch.cat(self.positions + [position_ids], dim=1)
        logits = self.model(tokens, attention_mask=mask, position_ids=positions).logits[:, stored:]
        if store_kv:
            self.tokens.append(x.clone())
            self.positions.append(position_ids)
            self.rows.append(attention_mask[0].bool())
        return SimpleNamespace(logits=logits)


class WatchedSDAR(SDARStandIn):
    """The published SDAR model itself, watched like the stand-in for steps that change a filled position."""

    def __call__(self, x, attention_mask, position_ids, **kwargs):
        self.watch(x, position_ids)
        return self.model(x, attention_mask=attention_mask, position_ids=position_ids, **kwargs)


def load_sdar_sampler(sdar: Path):
    spec = importlib.util.spec_from_file_location("sdar_generate", sdar / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_llada2_sampler(path: Path):
    """The published class's sampling methods (generate and the helpers it calls), bound to a stand-in class whose
    forward is the tiny block model's: the rest of the modeling file needs transformers 4.x and is not needed."""
    wanted = {"generate", "_get_num_transfer_tokens", "_sample_with_temperature_topk_topp", "_top_k_logits",
              "_top_p_logits"}
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "LLaDA2MoeModelLM")
    body = []
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name in wanted:
            first = min([d.lineno for d in node.decorator_list] + [node.lineno])
            body.append("\n".join(lines[first - 1 : node.end_lineno]))
    namespace = {"torch": torch, "F": F, "Optional": __import__("typing").Optional}
    exec("class Published:\n" + "\n".join(body), namespace)

    class LLaDA2StandIn(namespace["Published"]):
        def __init__(self, model):
            self.model, self.device = model, torch.device("cpu")

        def forward(self, x, attention_mask=None, position_ids=None, **kwargs):
            return SimpleNamespace(logits=self.model(x, attention_mask=attention_mask.float(),
                                                     position_ids=position_ids).logits)

    return LLaDA2StandIn


def cut_at(tokens: list[int], stop: int) -> list[int]:
    return tokens[: tokens.index(stop) + 1] if stop in tokens else tokens


def sdar_reference(module, model, prompt, case, stop, seed):
    _, gen, block, steps, threshold, temperature, top_k, top_p, _ = case
    torch.manual_seed(seed)
    standin = SDARStandIn(model)
    x = module.block_diffusion_generate(
        standin, {"input_ids": torch.tensor([prompt])}, model.config.mask_token_id, gen_length=gen,
        block_length=block, denoising_steps=steps, temperature=temperature if temperature else 1.0,
        top_k=top_k or 0, top_p=top_p or 1.0,
        remasking_strategy="low_confidence_static" if threshold is None else "low_confidence_dynamic",
        confidence_threshold=threshold, stopping_criteria_idx=[stop] if stop != NEVER else None)
    return None if standin.overwrote else cut_at(x[0, len(prompt):].tolist(), stop)


def llada2_reference(standin, model, prompt, case, stop, seed):
    _, gen, block, steps, threshold, temperature, top_k, top_p, _ = case
    torch.manual_seed(seed)
    out = standin(model).generate(
        inputs=torch.tensor([prompt]), temperature=temperature, block_length=block, steps=steps, gen_length=gen,
        top_p=top_p, top_k=top_k, threshold=1.0 if threshold is None else threshold, eos_id=stop,
        mask_id=model.config.mask_token_id)
    return out[0].tolist()


def tiny_block_fixtures(args) -> None:
    """The published samplers on the tiny block model (the project's environment)."""
    from dipod_trl.models import build_tiny_tokenizer
    from dipod_trl.models.tiny import build_tiny_model

    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer, seed=1, block_causal=True, hidden_size=32, intermediate_size=64,
                             num_attention_heads=2, initializer_range=0.3).eval()
    prompts = [tokenizer(text).input_ids for text in PROMPTS]
    sdar = load_sdar_sampler(args.sdar)
    published_sampler = sdar.sample_with_temperature_topk_topp
    llada20 = load_llada2_sampler(args.dare / "models/LLaDA2.0-mini/modeling_llada2_moe.py")
    llada21 = load_llada2_sampler(args.dare / "models/LLaDA2.1-mini/modeling_llada2_moe.py")
    published_llada = llada20._sample_with_temperature_topk_topp

    fixture = {"prompts": prompts, "cases": []}
    for case in CASES:
        name, gen, block, steps, threshold, temperature, top_k, top_p, stopping = case
        sampled = temperature > 0
        sdar.sample_with_temperature_topk_topp = published_sampler if sampled else greedy
        llada20._sample_with_temperature_topk_topp = published_llada if sampled else staticmethod(greedy)
        stop = NEVER
        if stopping:  # the stop id: the most frequent token past the first two, so that rows stop at various blocks
            counts = torch.bincount(torch.tensor(sum(
                (llada2_reference(llada20, model, p, case, NEVER, 0)[2:] for p in prompts), [])))
            stop = int(counts.argmax())
        rows = []
        for row, prompt in enumerate(prompts):
            seed = 1000 + row
            rows.append({
                "seed": seed,
                "sdar": sdar_reference(sdar, model, prompt, case, stop, seed),
                "llada2": llada2_reference(llada20, model, prompt, case, stop, seed),
            })
        fixture["cases"].append({
            "name": name, "gen_length": gen, "block_length": block, "steps_per_block": steps,
            "confidence_threshold": threshold, "temperature": temperature, "top_k": top_k, "top_p": top_p,
            "eos_token_ids": [stop] if stopping else [], "rows": rows,
        })
        print(name, "rows where SDAR overwrote a filled position:", sum(r["sdar"] is None for r in rows))

    # LLaDA2.1's 0/1 mask: its generate (greedy rule; one token per step, no editing) against the same decoding with
    # its mask turned into the block-causal -inf/0 mask.
    llada21._sample_with_temperature_topk_topp = staticmethod(greedy)
    differ = total = 0
    for prompt in prompts:
        kwargs = dict(inputs=torch.tensor([prompt]), temperature=0.0, block_length=4, gen_length=16, threshold=1.0,
                      editing_threshold=1.0, max_post_steps=0, eos_id=NEVER, mask_id=model.config.mask_token_id)
        as_published = llada21(model).generate(**kwargs)[0]

        class BlockCausal(llada21):
            def forward(self, x, attention_mask=None, position_ids=None, **kw):
                return super().forward(x, attention_mask=attention_mask.float().log(), position_ids=position_ids)

        block_causal = BlockCausal(model).generate(**kwargs)[0]
        differ += int((as_published != block_causal).sum())
        total += as_published.numel()
    fixture["llada21_mask"] = {"tokens": total, "differ_from_block_causal": differ}
    print(f"LLaDA2.1 as published vs its block-causal mask: {differ} of {total} tokens differ")

    try:
        sdar.block_diffusion_generate(SDARStandIn(model), {"input_ids": torch.tensor([prompts[0]])},
                                      model.config.mask_token_id, gen_length=8, block_length=4, denoising_steps=4,
                                      remasking_strategy="entropy_bounded", eb_threshold=0.35)
        fixture["sdar_entropy_bounded"] = "ran"
    except Exception as error:  # noqa: BLE001 - recorded as the published code's behaviour
        fixture["sdar_entropy_bounded"] = f"{type(error).__name__}: {error}"
    print("SDAR entropy_bounded:", fixture["sdar_entropy_bounded"])

    OUT.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(OUT)
    (OUT / "parity.json").write_text(json.dumps(fixture, indent=1) + "\n")
    print("wrote", OUT)


# The published-model cases: (name, gen_length, block_length, steps_per_block, threshold, temperature)
PUBLISHED_CASES = [("greedy_b4_n4", 8, 4, 4, None, 0.0), ("greedy_b4_n2", 10, 4, 2, None, 0.0),
                   ("threshold_b4_n4", 12, 4, 4, 0.3, 0.0), ("sample_b4_n4", 8, 4, 4, None, 0.8)]
PUBLISHED_PROMPT_LENGTHS = [3, 6, 9, 13]


def published_model(family: str, code_dir: Path, checkpoint: Path, workdir: Path):
    """The published model class on the checkpoint, through the hub route (`trust_remote_code`), in float32. SDAR's
    flash-attn kernels are replaced by the stand-ins of scripts/make_block_parity_fixtures.py (same math); LLaDA2's
    generate builds its block mask in bf16, which SDPA refuses beside float32 queries: it is cast to float32 (0 and
    -inf in both)."""
    import shutil

    from transformers import AutoModelForCausalLM

    if family == "sdar":
        parity_script = REPO / "scripts" / "make_block_parity_fixtures.py"
        spec = importlib.util.spec_from_file_location("block_parity", parity_script)
        block_parity = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(block_parity)
        block_parity.install_flash_attn_stand_ins(workdir / "stand_ins")
    code = workdir / "code"
    code.mkdir()
    for path in code_dir.glob("*.py"):
        shutil.copy(path, code / path.name)
    (code / "fused_linear_diffusion_cross_entropy.py").write_text("FusedLinearDiffusionCrossEntropyLoss = None\n")
    for name in ("config.json", "model.safetensors"):
        shutil.copy(checkpoint / name, code / name)
    model = AutoModelForCausalLM.from_pretrained(code, trust_remote_code=True, torch_dtype=torch.float32).eval()
    if family == "llada2":  # its generate builds the mask in bf16: 0 / -inf, the same values in the model's float32
        forward = model.forward
        model.forward = lambda *a, attention_mask=None, **k: forward(*a, attention_mask=attention_mask.float(), **k)
    return model


def published_model_fixtures(args) -> None:
    """The published sampler on the published model class (run in the family's reference environment):
    transformers 4.52.4 for SDAR, 4.57.1 for LLaDA2 (the environments of scripts/make_block_parity_fixtures.py)."""
    import tempfile

    family = args.published
    checkpoint = REPO / "tests" / "fixtures" / f"{family}_tiny"
    config = json.loads((checkpoint / "config.json").read_text())
    generator = torch.Generator().manual_seed(7)
    prompts = [torch.randint(0, 256, (n,), generator=generator).tolist() for n in PUBLISHED_PROMPT_LENGTHS]
    fixture = {"checkpoint": checkpoint.name, "prompts": prompts, "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        code_dir = args.dare / "models" / ("SDAR-4B-Chat" if family == "sdar" else "LLaDA2.0-mini")
        model = published_model(family, code_dir, checkpoint, Path(tmp))
        sdar = load_sdar_sampler(args.sdar)
        published_sdar, published_llada = sdar.sample_with_temperature_topk_topp, None
        for name, gen, block, steps, threshold, temperature in PUBLISHED_CASES:
            case = (name, gen, block, steps, threshold, temperature, None, None, False)
            rows = []
            for row, prompt in enumerate(prompts):
                seed = 2000 + row  # (rows where SDAR overwrote a filled position: tokens null)
                torch.manual_seed(seed)
                if family == "sdar":
                    sdar.sample_with_temperature_topk_topp = published_sdar if temperature else greedy
                    watched = WatchedSDAR(model)
                    x = sdar.block_diffusion_generate(
                        watched, {"input_ids": torch.tensor([prompt])}, config["mask_token_id"], gen_length=gen,
                        block_length=block, denoising_steps=steps, temperature=temperature or 1.0,
                        remasking_strategy="low_confidence_static" if threshold is None else "low_confidence_dynamic",
                        confidence_threshold=threshold)
                    tokens = None if watched.overwrote else x[0, len(prompt):].tolist()
                else:
                    cls = type(model)
                    published_llada = published_llada or cls._sample_with_temperature_topk_topp
                    cls._sample_with_temperature_topk_topp = published_llada if temperature else staticmethod(greedy)
                    tokens = model.generate(inputs=torch.tensor([prompt]), temperature=temperature,
                                            block_length=block, steps=steps, gen_length=gen,
                                            threshold=1.0 if threshold is None else threshold, eos_id=NEVER,
                                            mask_id=config["mask_token_id"])[0].tolist()
                rows.append({"seed": seed, "tokens": tokens})
            del case
            fixture["cases"].append({"name": name, "gen_length": gen, "block_length": block, "steps_per_block": steps,
                                     "confidence_threshold": threshold, "temperature": temperature, "rows": rows})
            print(family, name, [len(r["tokens"]) if r["tokens"] else None for r in rows])
    out = OUT / f"published_{family}.json"
    out.write_text(json.dumps(fixture, indent=1) + "\n")
    print("wrote", out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sdar", type=Path, required=True, help="checkout of github.com/JetAstra/SDAR")
    parser.add_argument("--dare", type=Path, required=True, help="checkout of github.com/yjyddq/DARE")
    parser.add_argument("--published", choices=["sdar", "llada2"], default=None,
                        help="instead: the published sampler on the published model class of tests/fixtures/"
                             "{sdar,llada2}_tiny, run in that family's reference environment (published_models.py)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    if args.published:
        published_model_fixtures(args)
    else:
        tiny_block_fixtures(args)


if __name__ == "__main__":
    main()
