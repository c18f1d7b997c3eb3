"""The method-agnostic training spine both systems build on (it never imports a model or a loss).

    sharding     device mesh ('data' axis), shardings, global batches from per-process rows
    state        TrainState, creation in its sharding, the guarded (non-finite-skipping) update,
                 merging pre-trained weights, NonFiniteError
    optim        optimizer and learning-rate schedules from a config's `train` section
    ema          exponential moving average of parameters and BatchNorm statistics
    checkpoint   orbax checkpoints: keep-N with the data-iterator state, best, load_variables
    writer       metrics.jsonl (+ TensorBoard), running means, progress bar, loss curves
    spikes       loss / gradient-norm spikes (orders of magnitude over the recent median)
    startup      jax.distributed, barriers, the shared-workdir check, quiet logs

Each method writes its own short step and loop with these (big_vision's way: share helpers, not
the loop): `imphmr_jax/train.py` for ImpHMR.
"""
