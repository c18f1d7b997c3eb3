"""Shared fixtures: random SMPL-layout model files (official pkl with chumpy-like objects and an
old-scipy sparse J_regressor, an smplx-style npz, a plain-numpy pkl for smplx, SPIN-style extra
regressor .npy files). Nothing here needs the licensed SMPL files."""
import pickle
import sys
import types

import numpy as np
import pytest

SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]


def random_smpl_arrays(num_vertices=6890, num_faces=13776, num_betas=10, posedirs=True, seed=0):
    """Truth arrays (float64) of a random model in the official SMPL key layout."""
    rng = np.random.default_rng(seed)
    nv = num_vertices
    v_template = rng.uniform([-0.4, -1.1, -0.15], [0.4, 0.7, 0.15], size=(nv, 3))
    j_regressor = np.zeros((24, nv))
    for j in range(24):  # a few vertices per joint, non-negative, rows sum to 1
        ids = rng.choice(nv, size=12, replace=False)
        j_regressor[j, ids] = rng.uniform(0.1, 1.0, size=12)
    j_regressor /= j_regressor.sum(1, keepdims=True)
    weights = rng.uniform(0, 1, size=(nv, 24)) ** 4
    weights /= weights.sum(1, keepdims=True)
    kintree = np.stack([np.array(SMPL_PARENTS, np.int64), np.arange(24)])
    kintree[0, 0] = 2**32 - 1
    out = dict(
        v_template=v_template,
        shapedirs=rng.normal(0, 0.01, size=(nv, 3, num_betas)),
        J_regressor=j_regressor,
        weights=weights,
        kintree_table=kintree,
        f=rng.integers(0, nv, size=(num_faces, 3)).astype(np.uint32),
    )
    if posedirs:
        out["posedirs"] = rng.normal(0, 0.01, size=(nv, 3, 207))
    return out


def random_extra_regressor(num_rows, num_vertices, seed):
    """Sparse non-negative regressor rows summing to 1, like SPIN's J_regressor_extra/h36m."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((num_rows, num_vertices))
    for k in range(num_rows):
        ids = rng.choice(num_vertices, size=30, replace=False)
        rows[k, ids] = rng.uniform(0.1, 1.0, size=30)
    return rows / rows.sum(1, keepdims=True)


class _FakeChumpy:
    """Registers modules chumpy, chumpy.ch, chumpy.reordering with classes whose pickles look like
    chumpy's (instance __dict__ with 'x' / 'a', 'idxs', 'preferred_shape' and bookkeeping keys)."""

    def __enter__(self):
        ch_mod, re_mod = types.ModuleType("chumpy.ch"), types.ModuleType("chumpy.reordering")

        class Ch:
            def __init__(self, x):
                self.x = np.asarray(x)
                self._dirty_vars = set()
                self._itr = None
                self._depends_on_deps = {}
                self._make_dense = False
                self._make_sparse = False

        class Select:
            def __init__(self, a, idxs, preferred_shape):
                self.a, self.idxs, self.preferred_shape = a, idxs, preferred_shape
                self._dirty_vars = set()
                self._itr = None

        Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
        Select.__module__, Select.__qualname__ = "chumpy.reordering", "Select"
        ch_mod.Ch, re_mod.Select = Ch, Select
        self.Ch, self.Select = Ch, Select
        self._saved = {m: sys.modules.get(m) for m in ("chumpy", "chumpy.ch", "chumpy.reordering")}
        sys.modules.update({"chumpy": types.ModuleType("chumpy"), "chumpy.ch": ch_mod,
                            "chumpy.reordering": re_mod})
        return self

    def __exit__(self, *exc):
        for name, mod in self._saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod


def write_official_pkl(path, arrays):
    """Write ``arrays`` like an official SMPL pkl: chumpy shapedirs (Ch) and posedirs (Select of a
    flat Ch), a csc J_regressor, protocol 2, with the module paths of old numpy/scipy."""
    import scipy.sparse

    with _FakeChumpy() as ch:
        data = dict(arrays)
        data["shapedirs"] = ch.Ch(arrays["shapedirs"])
        if "posedirs" in arrays:
            pd = arrays["posedirs"]
            data["posedirs"] = ch.Select(ch.Ch(pd.ravel()), np.arange(pd.size), pd.shape)
        data["J_regressor"] = scipy.sparse.csc_matrix(arrays["J_regressor"])
        data["J"] = ch.Ch(arrays["J_regressor"] @ arrays["v_template"])
        data["bs_style"], data["bs_type"] = "lbs", "lrotmin"
        blob = pickle.dumps(data, protocol=2)
    for new, old in ((b"scipy.sparse._csc\n", b"scipy.sparse.csc\n"),
                     (b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")):
        blob = blob.replace(b"c" + new, b"c" + old)
    with open(path, "wb") as f:
        f.write(blob)
    return path


def write_plain_pkl(path, arrays):
    """The same model as plain numpy arrays (what smplx.SMPL can unpickle without chumpy)."""
    data = {k: np.asarray(v) for k, v in arrays.items()}
    if "posedirs" not in data:  # smplx always applies pose correctives
        data["posedirs"] = np.zeros((len(data["v_template"]), 3, 207))
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return path


@pytest.fixture(scope="session")
def smpl_arrays():
    return random_smpl_arrays()


@pytest.fixture(scope="session")
def smpl_pkl(tmp_path_factory, smpl_arrays):
    """Path of a random 6890-vertex model in the official pkl layout (chumpy, sparse, old paths)."""
    return str(write_official_pkl(tmp_path_factory.mktemp("smpl") / "SMPL_NEUTRAL.pkl", smpl_arrays))


@pytest.fixture(scope="session")
def smpl_plain_pkl(tmp_path_factory, smpl_arrays):
    return str(write_plain_pkl(tmp_path_factory.mktemp("smplx") / "SMPL_NEUTRAL.pkl", smpl_arrays))


@pytest.fixture(scope="session")
def smpl_npz(tmp_path_factory, smpl_arrays):
    """The same model as an smplx-style npz (dense J_regressor)."""
    path = tmp_path_factory.mktemp("smpl_npz") / "SMPL_NEUTRAL.npz"
    np.savez(path, **smpl_arrays)
    return str(path)


@pytest.fixture(scope="session")
def spin_regressors(tmp_path_factory):
    """Paths of random SPIN-style J_regressor_extra.npy (9, 6890) and J_regressor_h36m.npy (17, 6890)."""
    d = tmp_path_factory.mktemp("spin_data")
    extra, h36m = d / "J_regressor_extra.npy", d / "J_regressor_h36m.npy"
    np.save(extra, random_extra_regressor(9, 6890, seed=1))
    np.save(h36m, random_extra_regressor(17, 6890, seed=2))
    return str(extra), str(h36m)


@pytest.fixture(scope="session")
def small_arrays():
    """A 500-vertex model without pose correctives, with all extra keys stored in the file."""
    arrays = random_smpl_arrays(num_vertices=500, num_faces=900, num_betas=12, posedirs=False,
                                seed=3)
    arrays["J_regressor_extra"] = random_extra_regressor(9, 500, seed=4)
    arrays["J_regressor_h36m"] = random_extra_regressor(17, 500, seed=5)
    arrays["vertex_joint_ids"] = np.random.default_rng(6).choice(500, size=21, replace=False)
    return arrays


@pytest.fixture(scope="session")
def small_npz(tmp_path_factory, small_arrays):
    path = tmp_path_factory.mktemp("small") / "small.npz"
    np.savez(path, **small_arrays)
    return str(path)


def pytest_collection_modifyitems(config, items):
    """Tests marked `slow` (rare, long) run only when asked for: `pytest -m slow`."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
