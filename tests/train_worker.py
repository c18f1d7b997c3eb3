"""Run a tiny training job in its own process (device count / jax.distributed set from argv) and
save the final parameters, for tests/test_train.py's multi-device and multi-process checks.

    python tests/train_worker.py OUT_DIR NUM_DEVICES [COORDINATOR NUM_PROCESSES PROCESS_ID]

With WORKER_CHECK_WORKDIR=private|shared it only runs `training.startup.check_shared_workdir` on a private
(per-process) or shared directory under OUT_DIR and prints the outcome.
"""
import os
import sys


def main():
    out_dir, num_devices = sys.argv[1], int(sys.argv[2])
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={num_devices}")
    import jax
    if len(sys.argv) > 3:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=sys.argv[3],
                                   num_processes=int(sys.argv[4]), process_id=int(sys.argv[5]))
    import numpy as np
    check = os.environ.get("WORKER_CHECK_WORKDIR")
    if check:
        from imphmr_jax.training import startup
        sub = f"private{jax.process_index()}" if check == "private" else "shared"
        workdir = os.path.join(out_dir, sub)
        os.makedirs(workdir, exist_ok=True)
        try:
            startup.check_shared_workdir(workdir)
            print("workdir check: ok")
        except ValueError as e:
            print(f"workdir check: error: {e}")
        return
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from train_fixtures import tiny_config, tiny_sources
    from imphmr_jax import train

    # SGD: its update is linear in the gradient, so sharding changes (float summation order)
    # stay at float-rounding size; Adam's m/sqrt(v) turns rounding noise on near-zero gradients
    # into lr-sized steps, which would test Adam's conditioning rather than the sharding.
    config = tiny_config(num_steps=int(os.environ.get("WORKER_STEPS", "3")), optimizer="sgd",
                         learning_rate=1e-4)
    train_src, test_src = tiny_sources()
    # One workdir for all processes, as on a real multi-host job (a shared filesystem): orbax
    # coordinates a multi-process checkpoint inside one directory.
    result = train.train_and_evaluate(config, os.path.join(out_dir, "work"),
                                      sources=[(train_src, 1.0)],
                                      eval_source=(test_src, "synthetic"))
    flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
            for path, v in jax.tree_util.tree_leaves_with_path(
                jax.device_get(result["state"].params))}
    flat["eval_pa_mpjpe"] = np.asarray(result["eval"]["metrics"]["pa_mpjpe"])
    if jax.process_index() == 0:
        import json
        rows = [json.loads(line) for line in open(os.path.join(out_dir, "work", "metrics.jsonl"))]
        flat["train_losses"] = np.asarray([r["train/loss"] for r in rows if "train/loss" in r])
    np.savez(os.path.join(out_dir, f"params{jax.process_index()}.npz"), **flat)
    print("devices", jax.device_count(), "processes", jax.process_count())


if __name__ == "__main__":
    main()
