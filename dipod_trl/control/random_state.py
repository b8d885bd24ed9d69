"""The process's random number generators (torch, numpy, Python) as tensors and plain values, for checkpoints that
load with `weights_only=True` and resume the same random draws."""

from __future__ import annotations

import random

import numpy as np
import torch


def capture_random_state() -> dict:
    """torch's, numpy's and Python's global generator states, under the keys a trainer state stores them."""
    return {"torch_rng": torch.get_rng_state(), "numpy_rng": _numpy_rng_to_plain(np.random.get_state()),
            "python_rng": random.getstate()}


def restore_random_state(state: dict) -> None:
    """Set the global generators back to what `capture_random_state` recorded (read from `state`)."""
    torch.set_rng_state(state["torch_rng"])
    np.random.set_state(_numpy_rng_from_plain(state["numpy_rng"]))
    random.setstate(state["python_rng"])


def _numpy_rng_to_plain(state: tuple) -> dict:
    """`np.random.get_state()` as a tensor and plain values (a numpy array would need pickle to load)."""
    name, keys, position, has_gauss, cached_gaussian = state
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}


def _numpy_rng_from_plain(state: dict) -> tuple:
    keys = state["keys"].numpy().astype(np.uint32)
    return state["name"], keys, state["position"], state["has_gauss"], state["cached_gaussian"]
