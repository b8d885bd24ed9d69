"""Throughput of the control trainer: env steps/s end to end, and where the time goes (policy vs simulator vs update).

    python benchmarks/control_throughput.py                      # HalfCheetah-v5 and Hopper-v5, 10 updates each
    python benchmarks/control_throughput.py --envs Pendulum-v1 --updates 20 --threads 2

For each env: (1) the simulator alone (same vectorised env and wrappers, uniform random actions); (2) the policy
alone (Euler sampling of `num_envs` actions per step, plus the critic); (3) `FlowPolicyTrainer` end to end with the
default FPO++ config (num_envs=8, num_steps=256, 10 epochs x 32 minibatches, N=32 CFM draws), its per-update time
split into policy (sampling actions and values during the rollout), simulator (`envs.step`) and update (CFM draws,
GAE, the FPO++ epochs). Evaluation is excluded from the end-to-end figure.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import numpy as np
import torch


def simulator_sps(env_id: str, num_envs: int, steps: int) -> float:
    from dipod_trl.control.envs import make_envs

    envs = make_envs(env_id, num_envs, normalize_reward=True, reward_clip=10.0)
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    action_dim = envs.single_action_space.shape[0]
    start = time.perf_counter()
    for _ in range(steps):
        envs.step(rng.uniform(-1, 1, size=(num_envs, action_dim)).astype(np.float32))
    elapsed = time.perf_counter() - start
    envs.close()
    return steps * num_envs / elapsed


def policy_sps(obs_dim: int, action_dim: int, num_envs: int, steps: int, flow_steps: int) -> float:
    from dipod_trl.control import Critic, FlowPolicy

    policy, critic = FlowPolicy(obs_dim, action_dim, flow_steps=flow_steps), Critic(obs_dim)
    obs = torch.randn(num_envs, obs_dim)
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(steps):
            policy.update_obs_stats(obs)
            obs_norm = policy.normalize(obs)
            policy.sample(obs_norm, torch.randn(num_envs, action_dim)).numpy()
            critic(obs_norm)
    return steps * num_envs / (time.perf_counter() - start)


def trainer_throughput(env_id: str, updates: int, num_envs: int, num_steps: int) -> dict:
    from dipod_trl.control import FlowPolicyConfig, FlowPolicyTrainer
    from dipod_trl.control.metrics import read_metrics

    with tempfile.TemporaryDirectory() as output_dir:
        config = FlowPolicyConfig(
            env_id=env_id,
            num_envs=num_envs,
            num_steps=num_steps,
            total_timesteps=updates * num_envs * num_steps,
            eval_every=0,
            eval_episodes=1,
            output_dir=output_dir,
            logging_steps=10**9,
        )
        trainer = FlowPolicyTrainer(config)
        trainer.train()
        records = [r for r in read_metrics(output_dir) if r.get("update", 0) > 0]
    seconds = np.array([config.batch_size / r["time/sps"] for r in records])  # wall time of each update's loop
    share = lambda key: float(np.sum([r[key] * s for r, s in zip(records, seconds)]) / seconds.sum())
    return {
        "sps": config.batch_size * len(records) / seconds.sum(),
        "policy": share("time/policy_share"),
        "sim": share("time/sim_share"),
        "update": share("time/update_share"),
        "obs_dim": trainer.obs_dim,
        "action_dim": trainer.action_dim,
        "flow_steps": config.flow_steps,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["HalfCheetah-v5", "Hopper-v5"])
    parser.add_argument("--updates", type=int, default=10, help="FPO++ updates per env, of num_envs * num_steps steps")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--num-steps", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:  # keep MuJoCo's compiler warnings out of MUJOCO_LOG.TXT in the cwd
        import mujoco

        mujoco.set_mju_user_warning(lambda message: warnings.warn(f"MuJoCo: {message}", stacklevel=2))
    except ImportError:
        pass

    rows = []
    for env_id in args.envs:
        result = trainer_throughput(env_id, args.updates, args.num_envs, args.num_steps)
        sim = simulator_sps(env_id, args.num_envs, 1000)
        pol = policy_sps(result["obs_dim"], result["action_dim"], args.num_envs, 1000, result["flow_steps"])
        rows.append((env_id, result, sim, pol))

    print(f"torch threads: {args.threads}; num_envs={args.num_envs}, batch {args.num_envs * args.num_steps} per update")
    print("| env | trainer end to end (env steps/s) | policy share | simulator share | update share "
          "| simulator alone (steps/s) | policy alone (steps/s) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for env_id, r, sim, pol in rows:
        print(f"| {env_id} | {r['sps']:.0f} | {r['policy']:.1%} | {r['sim']:.1%} | {r['update']:.1%} "
              f"| {sim:.0f} | {pol:.0f} |")


if __name__ == "__main__":
    main()
