"""Train the tiny GHN for a few SGD steps in its own process with NUM_DEVICES fake CPU devices and
save the final parameters (tests/test_ghn.py: 8 devices = 1 device).

    python tests/ghn_worker.py OUT_DIR NUM_DEVICES
"""
import os
import sys


def main():
    out_dir, num_devices = sys.argv[1], int(sys.argv[2])
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={num_devices}")
    import jax
    import numpy as np
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from ghn_fixtures import params_npz, tiny_config, tiny_people
    from neuhmr_jax.train_ghn import train_ghn
    assert jax.device_count() == num_devices
    # SGD: linear in the gradient, so sharding changes only the float summation order.
    config = tiny_config(optimizer="sgd", learning_rate=0.05, grad_clip=0.0, momentum=0.0,
                         batch_multiple=4, num_steps=2)
    config.eval.max_targets = 0  # parameters only: no final evaluation
    people = tiny_people()
    result = train_ghn(config, os.path.join(out_dir, "run"), people=people, test_people=people)
    np.savez(os.path.join(out_dir, "params.npz"), **params_npz(result["state"]))
    print("done")


if __name__ == "__main__":
    main()
