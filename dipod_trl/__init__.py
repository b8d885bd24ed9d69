"""dipod-trl: RL post-training of diffusion policies with DiPOD, on top of TRL.

    import dipod_trl
    completion_ids, completion_mask = dipod_trl.generate(model, prompt_ids, gen_length=64, block_length=32, steps=64)
    elbo = dipod_trl.elbo(model, prompt_ids, completion_ids, completion_mask=completion_mask, num_samples=4)

`DiPODConfig` and `DiPODTrainer` are imported on first access (module `__getattr__`), so that `import dipod_trl`
for sampling and likelihoods does not load TRL and datasets; the models themselves need transformers.
"""

from importlib import import_module

from . import models
from .likelihood import elbo, order_bound
from .sampling import generate

__version__ = "0.1.0"

_LAZY = {"DiPODConfig": "dipod_trl.config", "DiPODTrainer": "dipod_trl.trainer"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dipod_trl' has no attribute {name!r}")


__all__ = ["DiPODConfig", "DiPODTrainer", "elbo", "generate", "models", "order_bound"]
