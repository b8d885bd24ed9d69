"""dipod-trl: RL post-training of diffusion policies with DiPOD, on top of TRL.

    import dipod_trl
    completion_ids, completion_mask = dipod_trl.generate(model, prompt_ids, gen_length=64, block_length=32, steps=64)
    elbo = dipod_trl.elbo(model, prompt_ids, completion_ids, completion_mask=completion_mask, num_samples=4)

Every name below is imported on first use, so that `import dipod_trl` (and `dipod --help`) does not load torch.
"""

import logging
from importlib import import_module

# bitsandbytes (imported by peft) warns on every CPU start that it cannot fetch an optional kernel from the hub; its
# own CPU path runs without it, and the line reads like an error in a newcomer's first run or a benchmark's log.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

__version__ = "0.1.0"

_LAZY = {
    "DiPODConfig": "dipod_trl.config",
    "DiPODTrainer": "dipod_trl.trainer",
    "elbo": "dipod_trl.likelihood",
    "order_bound": "dipod_trl.likelihood",
    "generate": "dipod_trl.sampling",
}


def __getattr__(name):
    if name == "models":
        return import_module("dipod_trl.models")
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dipod_trl' has no attribute {name!r}")


__all__ = ["DiPODConfig", "DiPODTrainer", "elbo", "generate", "models", "order_bound"]
