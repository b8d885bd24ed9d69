"""The mixture-of-experts block that SDAR-30B-A3B (`sdar_moe`) and LLaDA2 (`llada2_moe`) share: a top-k router (softmax
over the experts as in Qwen3-MoE, or a sigmoid with an expert bias and grouped top-k as in DeepSeek-V3 / LLaDA2), the
routed SwiGLU experts as one batched computation, and an optional shared expert.

The experts' weights are stacked, `experts.gate_up_proj` (experts, 2 x intermediate, hidden) and `experts.down_proj`
(experts, hidden, intermediate), as transformers 5 stores Qwen2/3-MoE experts. Checkpoints keep the published
per-expert names (`mlp.experts.{e}.gate_proj.weight`, ...): [`register_expert_weight_conversion`] registers
transformers' own Qwen2-MoE `WeightConverter`s for a `model_type`, which stack them on load and split them again on
save. A forward sorts the (token, expert) pairs by expert and runs each projection as one grouped matrix product
(`torch.nn.functional.grouped_mm`), so its cost follows the active experts, not the total.

For RL the router is plain inference: routing is recomputed in every forward from the current weights (so two ELBOs
of the same weights use the same experts), no load-balancing loss is added (`output_router_logits` stays off, as in
the published SDAR and LLaDA2 configs), and LLaDA2's `expert_bias` is a buffer: it loads, saves and routes, and nothing
updates it (the bias update of LLaDA2's pre-training is a separate optimiser-side rule, not a gradient).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN


def _grouped_mm_applies(x: torch.Tensor, weight_t: torch.Tensor) -> bool:
    """Whether torch's grouped GEMM kernel takes these operands: float32/bfloat16/float16, rows 16-byte aligned."""
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16) or weight_t.dtype != x.dtype:
        return False
    if not hasattr(F, "grouped_mm"):
        return False
    if x.device.type == "cuda" and torch.cuda.get_device_capability(x.device) < (8, 0):
        return False
    if x.device.type not in ("cpu", "cuda"):
        return False
    size = x.element_size()
    return (weight_t.shape[-2] * size) % 16 == 0 and (weight_t.shape[-1] * size) % 16 == 0


def grouped_linear(x: torch.Tensor, weight: torch.Tensor, offsets: torch.Tensor, expert_of_row: torch.Tensor):
    """`x[r] @ weight[expert_of_row[r]].T` for rows `x` sorted by expert (`offsets`: cumulative row counts per expert,
    int32). One grouped GEMM where torch has the kernel for these operands; else one batched matmul over the experts'
    row groups, padded to the largest group (float64, odd widths)."""
    weight_t = weight.transpose(-2, -1)
    if _grouped_mm_applies(x, weight_t):
        return F.grouped_mm(x, weight_t, offs=offsets)
    counts = torch.diff(offsets.long(), prepend=offsets.new_zeros(1).long())
    row_in_group = torch.arange(x.shape[0], device=x.device) - (offsets.long() - counts)[expert_of_row]
    width = int(counts.max()) if x.shape[0] else 0
    padded = x.new_zeros(weight.shape[0], width, x.shape[-1])
    padded = padded.index_put((expert_of_row, row_in_group), x)
    return torch.bmm(padded, weight_t.to(x.dtype))[expert_of_row, row_in_group]


class MoEExperts(nn.Module):
    """The routed SwiGLU experts, stacked: `down(act(gate(x)) * up(x))` of each selected expert, weighted and summed."""

    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int, hidden_act: str = "silu"):
        super().__init__()
        self.num_experts = num_experts
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * intermediate_size, hidden_size))
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden_size, intermediate_size))
        self.act_fn = ACT2FN[hidden_act]

    def forward(self, hidden: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
        """hidden (tokens, hidden), top_k_index / top_k_weights (tokens, k) -> (tokens, hidden). The weighted sum runs
        in the weights' dtype (float32 for LLaDA2, as published)."""
        tokens, k = top_k_index.shape
        flat = top_k_index.reshape(-1)
        order = torch.argsort(flat, stable=True)
        expert_of_row = flat[order]
        offsets = torch.bincount(expert_of_row, minlength=self.num_experts).cumsum(0).to(torch.int32)
        x = hidden[order // k]
        gate, up = grouped_linear(x, self.gate_up_proj, offsets, expert_of_row).chunk(2, dim=-1)
        out = grouped_linear(self.act_fn(gate) * up, self.down_proj, offsets, expert_of_row)
        unsorted = torch.empty_like(out).index_copy(0, order, out)
        weighted = unsorted.view(tokens, k, -1).to(top_k_weights.dtype) * top_k_weights.unsqueeze(-1)
        return weighted.sum(dim=1).to(hidden.dtype)

    def reference_forward(self, hidden, top_k_index, top_k_weights):
        """The published per-expert loop (tests compare the batched forward with it)."""
        out = torch.zeros(hidden.shape, dtype=top_k_weights.dtype, device=hidden.device)
        for e in range(self.num_experts):
            token, slot = torch.where(top_k_index == e)
            gate, up = F.linear(hidden[token], self.gate_up_proj[e]).chunk(2, dim=-1)
            y = F.linear(self.act_fn(gate) * up, self.down_proj[e])
            out.index_add_(0, token, y.to(out.dtype) * top_k_weights[token, slot, None])
        return out.to(hidden.dtype)


class TopKRouter(nn.Module):
    """Scores every expert for every token and picks `top_k` of them.

    - `score_function="softmax"` (Qwen3-MoE / SDAR): softmax over all experts in float32, top-k, renormalised when
      `norm_topk_prob`; the weights return in the hidden states' dtype, as published.
    - `score_function="sigmoid"` (LLaDA2): logits in float32, sigmoid scores; the choice uses scores + `expert_bias`,
      restricted to the `topk_group` best of `n_group` expert groups (a group scores the sum of its two best); the
      weights are the chosen experts' unbiased scores, normalised, times `routed_scaling_factor`, in float32.
    """

    def __init__(self, num_experts: int, hidden_size: int, top_k: int, *, score_function: str = "softmax",
                 norm_topk_prob: bool = True, n_group: int = 1, topk_group: int = 1,
                 routed_scaling_factor: float = 1.0, expert_bias: bool = False):
        super().__init__()
        if score_function not in ("softmax", "sigmoid"):
            raise ValueError(f"score_function={score_function!r}: the router scores with 'softmax' or 'sigmoid'.")
        if num_experts % n_group or not 1 <= topk_group <= n_group:
            raise ValueError(f"n_group={n_group}, topk_group={topk_group}: the {num_experts} experts must split into "
                             "n_group equal groups, and 1 <= topk_group <= n_group.")
        self.num_experts, self.top_k = num_experts, top_k
        self.score_function, self.norm_topk_prob = score_function, norm_topk_prob
        self.n_group, self.topk_group, self.routed_scaling_factor = n_group, topk_group, routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(num_experts, hidden_size))
        if expert_bias:
            self.register_buffer("expert_bias", torch.zeros(num_experts))
        else:
            self.expert_bias = None

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """hidden (tokens, hidden) -> (top_k_index, top_k_weights, router_logits)."""
        if self.score_function == "softmax":
            logits = F.linear(hidden, self.weight)
            probs = F.softmax(logits, dim=-1, dtype=torch.float)
            weights, index = torch.topk(probs, self.top_k, dim=-1)
            if self.norm_topk_prob:
                weights = weights / weights.sum(dim=-1, keepdim=True)
            return index, weights.to(hidden.dtype), logits
        logits = F.linear(hidden.float(), self.weight.float())
        scores = torch.sigmoid(logits)
        choice = scores + self.expert_bias if self.expert_bias is not None else scores
        index = grouped_topk(choice, self.top_k, self.n_group, self.topk_group)
        weights = scores.gather(1, index)
        if self.top_k > 1:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return index, weights * self.routed_scaling_factor, logits


def grouped_topk(scores: torch.Tensor, top_k: int, n_group: int, topk_group: int) -> torch.Tensor:
    """Indices of the `top_k` best experts among the `topk_group` best groups (a group scores the sum of its two best
    experts; one expert per group scores itself)."""
    tokens, experts = scores.shape
    if n_group == 1:
        return torch.topk(scores, top_k, dim=-1)[1]
    grouped = scores.view(tokens, n_group, experts // n_group)
    group_scores = grouped.topk(min(2, experts // n_group), dim=-1)[0].sum(dim=-1)
    best_groups = torch.topk(group_scores, topk_group, dim=-1, sorted=False)[1]
    keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, best_groups, True)
    masked = scores.masked_fill(~keep.repeat_interleave(experts // n_group, dim=1), float("-inf"))
    return torch.topk(masked, top_k, dim=-1)[1]


class SwiGLU(nn.Module):
    """`down_proj(act(gate_proj(x)) * up_proj(x))`, the dense MLP and the shared expert (published names)."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str = "silu"):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)
        self.act_fn = ACT2FN[hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class SparseMoeBlock(nn.Module):
    """`gate` (the router), `experts` (stacked) and, when configured, `shared_experts` (a SwiGLU every token takes)."""

    def __init__(self, router: TopKRouter, hidden_size: int, moe_intermediate_size: int, hidden_act: str = "silu",
                 shared_intermediate_size: int = 0):
        super().__init__()
        self.gate = router
        self.experts = MoEExperts(router.num_experts, hidden_size, moe_intermediate_size, hidden_act)
        if shared_intermediate_size:
            self.shared_experts = SwiGLU(hidden_size, shared_intermediate_size, hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        index, weights, _ = self.gate(flat)
        out = self.experts(flat, index, weights).view_as(x)
        if hasattr(self, "shared_experts"):
            out = out + self.shared_experts(x)
        return out


@torch.no_grad()
def init_moe_weights(module: nn.Module, std: float) -> None:
    """Random init of what `DiffusionPreTrainedModel._init_weights` does not know (stacked experts, router)."""
    if isinstance(module, MoEExperts):
        module.gate_up_proj.normal_(0.0, std)
        module.down_proj.normal_(0.0, std)
    elif isinstance(module, TopKRouter):
        module.weight.normal_(0.0, std)
        if module.expert_bias is not None:
            module.expert_bias.zero_()


def register_expert_weight_conversion(model_type: str) -> None:
    """Load and save `model_type`'s experts under the published per-expert names (`mlp.experts.{e}.gate_proj.weight`,
    `up_proj`, `down_proj`), with transformers' Qwen2-MoE converters: stacked on load, split again on save."""
    from transformers import conversion_mapping

    qwen2_moe = conversion_mapping.get_checkpoint_conversion_mapping("qwen2_moe")
    conversion_mapping.register_checkpoint_conversion_mapping(model_type, qwen2_moe, overwrite=True)
