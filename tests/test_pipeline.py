"""imphmr_jax.data.pipeline: host-count invariance, resume, mixing ratios, per-epoch reshuffling,
eval padding, and the batch layout of schema.py."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from imphmr_jax.data import augment, pipeline, schema

RES = 16


def make_source(n, seed, size=24):
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        img = rng.integers(0, 255, (size, size, 3)).astype(np.uint8)
        b = io.BytesIO()
        Image.fromarray(img).save(b, "JPEG", quality=90)
        kp = np.concatenate([rng.uniform(0, size, (49, 2)), np.ones((49, 1))], 1)
        j3 = np.concatenate([rng.normal(0, 0.3, (24, 3)), np.ones((24, 1))], 1)
        recs.append(schema.empty_record(
            image=b.getvalue(), center=[size / 2, size / 2], scale=size / 200, keypoints_2d=kp,
            joints_3d=j3, pose=rng.normal(0, 0.3, 72), betas=rng.normal(size=10),
            has_smpl=i % 2, has_pose_3d=1, gender=i % 2))
    return recs


@pytest.fixture(scope="module")
def sources():
    return [make_source(7, 0), make_source(5, 1), make_source(3, 2)]


def cfg(**kw):
    base = dict(img_res=RES, batch_size=8, seed=11, num_threads=2, prefetch=8)
    base.update(kw)
    return pipeline.PipelineConfig(**base)


def take(it, n):
    return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert set(x) == set(y)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_batch_layout(sources):
    b = next(pipeline.make_train_iterator(sources, [1, 1, 1], cfg(), process_index=0,
                                          process_count=1))
    want = {"image": ((8, RES, RES, 3), np.float32), "keypoints_2d": ((8, 49, 3), np.float32),
            "joints_3d": ((8, 24, 4), np.float32), "pose": ((8, 72), np.float32),
            "betas": ((8, 10), np.float32), "has_smpl": ((8,), np.float32),
            "has_pose_3d": ((8,), np.float32), "gender": ((8,), np.int32),
            "dataset": ((8,), np.int32)}
    assert set(b) == set(want)
    for k, (shape, dtype) in want.items():
        assert b[k].shape == shape and b[k].dtype == dtype, k


def test_two_processes_equal_one(sources):
    one = take(pipeline.make_train_iterator(sources, [0.5, 0.3, 0.2], cfg(), process_index=0,
                                            process_count=1), 3)
    hosts = [take(pipeline.make_train_iterator(sources, [0.5, 0.3, 0.2], cfg(num_threads=1),
                                               process_index=p, process_count=2), 3)
             for p in range(2)]
    for step in range(3):
        for k in one[step]:
            np.testing.assert_array_equal(
                np.concatenate([hosts[0][step][k], hosts[1][step][k]]), one[step][k], err_msg=k)
    # the sequence is not trivially repeating: augmentation differs between steps
    assert not np.allclose(one[0]["image"], one[1]["image"])


def test_sample_matches_process_record(sources):
    """A batch row is process_record of the planned record with the planned augmentation seed."""
    c = cfg()
    weights = [0.5, 0.3, 0.2]
    b = next(pipeline.make_train_iterator(sources, weights, c, process_index=0, process_count=1))
    plan = pipeline.GlobalPlan([len(s) for s in sources], weights, c.seed, c.mix_window)
    for row in (0, 5):
        src, idx, g = plan[row]
        want = augment.process_record(sources[src][idx], c.augment, pipeline._aug_rng(c.seed, g),
                                      train=True, res=RES)
        assert b["dataset"][row] == src
        for k, v in want.items():
            np.testing.assert_array_equal(b[k][row], v, err_msg=k)


def test_resume_continues_exact_sequence(sources):
    it = pipeline.make_train_iterator(sources, [1, 2, 1], cfg(), process_index=0, process_count=1)
    take(it, 2)
    state = json.loads(json.dumps(it.get_state()))
    assert state["step"] == 2
    rest = take(it, 2)
    new = pipeline.make_train_iterator(sources, [1, 2, 1], cfg(num_threads=1), process_index=0,
                                       process_count=1)
    new.set_state(state)
    assert_batches_equal(take(new, 2), rest)
    new.close()
    named = pipeline.make_train_iterator({"a": sources[0], "b": sources[1], "c": sources[2]},
                                         {"c": 1, "a": 1, "b": 2}, cfg(), process_index=0,
                                         process_count=1)
    named.set_state(state)  # same sources, same normalised weights in the same order
    assert_batches_equal(take(named, 2), rest)
    named.close()
    bad = dict(state, seed=state["seed"] + 1)
    with pytest.raises(ValueError, match="seed"):
        new.set_state(bad)


def test_mixing_ratios(sources):
    weights = pipeline.mixture_weights("spin", {"h36m": 300, "mpi-inf-3dhp": 20, "lsp-orig": 100,
                                                "mpii": 200, "lspet": 100, "coco": 600})
    names = list(weights)
    w = np.array([weights[n] for n in names])
    sizes = [300, 20, 100, 200, 100, 600]
    plan = pipeline.GlobalPlan(sizes, w / w.sum(), seed=3, window=4096)
    n = 20000
    counts = np.bincount([plan[g][0] for g in range(n)], minlength=len(names))
    sigma = np.sqrt(n * w * (1 - w))
    assert np.all(np.abs(counts - n * w) < 3 * sigma), (counts, n * w)
    # through the iterator itself (dataset field), 3 sources with 0.6/0.3/0.1
    it = pipeline.make_train_iterator(sources, [0.6, 0.3, 0.1], cfg(img_res=8), process_index=0,
                                      process_count=1)
    ds = np.concatenate([b["dataset"] for b in take(it, 25)])
    p = np.array([0.6, 0.3, 0.1])
    assert np.all(np.abs(np.bincount(ds, minlength=3) - len(ds) * p)
                  < 3 * np.sqrt(len(ds) * p * (1 - p)) + 1)


def test_each_source_epoch_is_a_fresh_permutation():
    sizes = [13, 6]
    plain = pipeline.GlobalPlan(sizes, [0.5, 0.5], seed=5, window=1)  # no window shuffle
    seq = {0: [], 1: []}
    for g in range(64 * 4):
        s, i, _ = plain[g]
        seq[s].append(i)
    for s, n in enumerate(sizes):
        epochs = [seq[s][e * n:(e + 1) * n] for e in range(4)]
        for ep in epochs:  # every record once per epoch of its source
            assert sorted(ep) == list(range(n))
        assert epochs[0] != epochs[1] and epochs[1] != epochs[2]  # reshuffled every epoch
    # the window shuffle permutes positions within each window of 64: same multiset per window
    plan = pipeline.GlobalPlan(sizes, [0.5, 0.5], seed=5, window=64)
    for w in range(4):
        span = range(64 * w, 64 * (w + 1))
        assert sorted(plan[g][:2] for g in span) == sorted(plain[g][:2] for g in span)
        assert [plan[g][:2] for g in span] != [plain[g][:2] for g in span]
    # different seeds give different orders
    other = pipeline.GlobalPlan(sizes, [0.5, 0.5], seed=6, window=64)
    assert [plan[g] for g in range(20)] != [other[g] for g in range(20)]


def test_mixture_weights():
    sizes = {"h36m": 1000, "mpi-inf-3dhp": 500, "lsp-orig": 100, "mpii": 300, "lspet": 200,
             "coco": 400}
    w = pipeline.mixture_weights("spin", sizes)
    assert w["h36m"] == 0.3 and w["mpi-inf-3dhp"] == 0.1
    np.testing.assert_allclose([w["lsp-orig"], w["mpii"], w["lspet"], w["coco"]],
                               [0.06, 0.18, 0.12, 0.24])
    np.testing.assert_allclose(sum(w.values()), 1.0)
    p = pipeline.mixture_weights("pare", sizes)
    assert "lsp-orig" not in p
    np.testing.assert_allclose([p["mpii"], p["lspet"], p["coco"]], [0.2, 0.1333333, 0.2666667],
                               rtol=1e-5)
    np.testing.assert_allclose(sum(p.values()), 1.0)
    with pytest.raises(KeyError, match="coco"):
        pipeline.mixture_weights("spin", {k: v for k, v in sizes.items() if k != "coco"})
    with pytest.raises(KeyError, match="unknown mixture"):
        pipeline.mixture_weights("hmr", sizes)


def test_eval_padding_and_sharding(sources):
    src = sources[0]  # 7 records, batch 4 -> 2 batches, the last padded by 1
    one = list(pipeline.make_eval_iterator(src, cfg(batch_size=4), process_index=0,
                                           process_count=1))
    assert len(one) == 2
    np.testing.assert_array_equal(np.concatenate([b["index"] for b in one]), [0, 1, 2, 3, 4, 5, 6, -1])
    np.testing.assert_array_equal(np.concatenate([b["valid"] for b in one]), [1] * 7 + [0])
    assert one[0]["valid"].dtype == np.float32 and one[0]["index"].dtype == np.int32
    want = augment.process_record(src[5], train=False, res=RES)
    for k, v in want.items():
        np.testing.assert_array_equal(one[1][k][1], v, err_msg=k)
    hosts = [list(pipeline.make_eval_iterator(src, cfg(batch_size=4), process_index=p,
                                              process_count=2)) for p in range(2)]
    for step in range(2):
        for k in one[step]:
            np.testing.assert_array_equal(
                np.concatenate([hosts[0][step][k], hosts[1][step][k]]), one[step][k], err_msg=k)


def test_bad_configuration(sources):
    with pytest.raises(ValueError, match="divisible"):
        pipeline.make_train_iterator(sources, [1, 1, 1], cfg(batch_size=6), process_index=0,
                                     process_count=4)
    with pytest.raises(ValueError, match="weights"):
        pipeline.make_train_iterator(sources, [1, 1], cfg(), process_index=0, process_count=1)
    with pytest.raises(ValueError, match="empty"):
        pipeline.make_train_iterator([[]], [1], cfg(), process_index=0, process_count=1)


def test_worker_processes_give_the_same_batches(sources):
    """grain multiprocessing prefetch (2 workers) reproduces the threaded sequence exactly."""
    threaded = take(pipeline.make_train_iterator(sources, [1, 1, 1], cfg(), process_index=0,
                                                 process_count=1), 2)
    it = pipeline.make_train_iterator(sources, [1, 1, 1], cfg(num_workers=2), process_index=0,
                                      process_count=1)
    assert_batches_equal(take(it, 2), threaded)
