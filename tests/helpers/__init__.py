"""Test helpers, by concern (imported by name from their module, e.g. `from tests.helpers.models import
make_tiny_model`); tests/conftest.py only wires fixtures on top of them.

    models      the tiny masked diffusion LM, BERT masked LMs and reward model, brute-force likelihoods
    block_models  tiny SDAR, SDAR-MoE and LLaDA2 models built in memory
    trainers    fast-run arguments and recipes, prompt datasets, reward functions, the trainer factory, each base
                objective written out independently of the trainer
    servers     an OpenAI-compatible judge server
    processes   kills at chosen moments of a save, a forkserver, shell-script checks
    exploits    checkpoint files that would run code
    control     the control trainer's fast config
    rounding    which generated tokens kernel rounding cannot flip
"""
