"""Claims checked for smpl_jax.load: an official-layout pkl (chumpy objects, old scipy/numpy module
paths, sparse J_regressor) loads without chumpy into exactly the arrays written; npz files load the
same; optional keys, keyword regressor files and num_betas behave as documented; the model is a
pytree with static kinematic tree; bad files and requests raise errors that name the file, key or
name and what was expected; a pickle that references other classes is refused."""
import pickle
import sys

import jax
import numpy as np
import pytest

import smpl_jax
from smpl_jax import io as smpl_io
from smpl_jax import joint_sets as js

from conftest import SMPL_PARENTS, random_smpl_arrays, write_official_pkl


def test_fixture_pickle_looks_like_an_official_file(smpl_pkl):
    blob = open(smpl_pkl, "rb").read()
    assert b"cchumpy.ch\nCh\n" in blob and b"cchumpy.reordering\nSelect\n" in blob
    assert b"cscipy.sparse.csc\ncsc_matrix\n" in blob  # old path (deprecated, going away in SciPy 2)
    assert b"cnumpy.core.multiarray\n" in blob
    assert "chumpy" not in sys.modules  # the fixture's fake chumpy modules are gone again


def test_official_pkl_loads_the_arrays_written(smpl_pkl, smpl_arrays):
    m = smpl_jax.load(smpl_pkl)
    a = smpl_arrays
    np.testing.assert_allclose(m.v_template, a["v_template"], atol=1e-7)
    np.testing.assert_allclose(m.shapedirs, a["shapedirs"], atol=1e-8)
    np.testing.assert_allclose(m.posedirs, a["posedirs"].reshape(-1, 207).T, atol=1e-8)
    np.testing.assert_allclose(m.J_regressor, a["J_regressor"], atol=1e-7)
    np.testing.assert_allclose(m.weights, a["weights"], atol=1e-7)
    np.testing.assert_array_equal(m.faces, a["f"].astype(np.int32))
    assert m.parents == tuple(SMPL_PARENTS)
    np.testing.assert_allclose(m.joint_template, a["J_regressor"] @ a["v_template"], atol=1e-6)
    np.testing.assert_allclose(m.joint_shapedirs,
                               np.einsum("jv,vcn->jcn", a["J_regressor"], a["shapedirs"]),
                               atol=1e-7)
    assert m.v_template.dtype == np.float32 and m.faces.dtype == np.int32
    assert "chumpy" not in sys.modules


def test_npz_loads_the_same_model(smpl_pkl, smpl_npz):
    a, b = smpl_jax.load(smpl_pkl), smpl_jax.load(smpl_npz)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(x, y, atol=1e-7)


def test_6890_vertex_files_get_the_smpl_vertex_joints(smpl_pkl):
    m = smpl_jax.load(smpl_pkl)
    assert m.joint_sets == ("vertex21",)
    reg = m.regressors["vertex21"]
    ids = np.asarray(reg.support)[np.argmax(np.asarray(reg.weights), axis=1)]
    np.testing.assert_array_equal(ids, js.SMPL_VERTEX_JOINT_IDS)
    assert js.SMPL_VERTEX_JOINT_IDS[:5] == (332, 6260, 2800, 4071, 583)  # nose, reye, leye, rear, lear


def test_optional_keys_in_the_file_are_used(small_npz, small_arrays):
    m = smpl_jax.load(small_npz, num_betas=12)
    assert m.num_vertices == 500 and m.num_betas == 12
    assert m.posedirs is None and not m.has_pose_correctives
    assert m.joint_sets == js.JOINT_SET_NAMES  # vertex21 from the file's ids, so spin49 too
    reg = m.regressors["vertex21"]
    ids = np.asarray(reg.support)[np.argmax(np.asarray(reg.weights), axis=1)]
    np.testing.assert_array_equal(ids, small_arrays["vertex_joint_ids"])
    h36m = m.regressors["h36m17"]
    dense = np.zeros((17, 500))
    dense[:, np.asarray(h36m.support)] = h36m.weights
    np.testing.assert_allclose(dense, small_arrays["J_regressor_h36m"], atol=1e-7)
    assert h36m.support.shape[0] < 500  # stored on its support only


def test_keyword_regressor_files_add_and_override_sets(smpl_pkl, small_npz, spin_regressors,
                                                      tmp_path):
    extra, h36m = spin_regressors
    m = smpl_jax.load(smpl_pkl, j_regressor_extra=extra, j_regressor_h36m=h36m)
    assert m.joint_sets == js.JOINT_SET_NAMES
    override = tmp_path / "h36m.npy"
    np.save(override, np.full((17, 500), 1 / 500))
    m = smpl_jax.load(small_npz, j_regressor_h36m=override)
    np.testing.assert_allclose(m.regressors["h36m17"].weights, np.full((17, 500), 1 / 500))


def test_num_betas_slices_the_shape_space(small_npz):
    assert smpl_jax.load(small_npz).num_betas == 10  # the default
    assert smpl_jax.load(small_npz, num_betas=4).joint_shapedirs.shape == (24, 3, 4)
    assert smpl_jax.load(small_npz, num_betas=None).num_betas == 12


def test_all_zero_posedirs_means_no_pose_correctives(tmp_path):
    arrays = random_smpl_arrays(num_vertices=300, num_faces=10, seed=7)
    arrays["posedirs"] = np.zeros_like(arrays["posedirs"])
    path = write_official_pkl(tmp_path / "zero_pd.pkl", arrays)
    assert smpl_jax.load(path).posedirs is None


def test_model_is_a_pytree_with_a_static_tree(smpl_pkl):
    m = smpl_jax.load(smpl_pkl)
    leaves, treedef = jax.tree_util.tree_flatten(m)
    assert all(isinstance(x, jax.Array) for x in leaves)
    assert all(x.shape != (24,) or x.dtype != np.int64 for x in leaves)  # parents not a leaf
    assert jax.tree_util.tree_unflatten(treedef, leaves).parents == tuple(SMPL_PARENTS)
    # Two loads of the same layout share a tree structure: jit does not recompile.
    assert jax.tree_util.tree_structure(smpl_jax.load(smpl_pkl)) == treedef


def test_default_names_resolve_to_package_data():
    try:
        m = smpl_jax.load("default")
    except FileNotFoundError as e:  # package data not built in this checkout
        assert "default" in str(e) and "build_default" in str(e)
        pytest.skip("package data not built")
    assert m.num_vertices > 6890 and m.num_betas == 10
    assert {"vertex21", "extra9", "spin49"} <= set(m.joint_sets)


# --- errors --------------------------------------------------------------------------------------


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown body model name 'smpl'.*'default'.*'default-small'"):
        smpl_jax.load("smpl")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"SMPL model file not found: .*nowhere\.pkl"):
        smpl_jax.load(tmp_path / "nowhere.pkl")


def test_unknown_extension_is_named(tmp_path):
    path = tmp_path / "model.obj"
    path.write_text("v 0 0 0\n")
    with pytest.raises(ValueError, match=r"model\.obj: unknown model file extension '\.obj'.*\.pkl"):
        smpl_jax.load(path)


def _write_variant(tmp_path, name, **changes):
    arrays = random_smpl_arrays(num_vertices=300, num_faces=10, seed=8)
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("change,message", [
    (dict(weights=None), r"missing key\(s\) \['weights'\]"),
    (dict(weights=np.full((299, 24), 1 / 24)), r"'weights' must have shape \(300, 24\).*got \(299, 24\)"),
    (dict(J_regressor=np.zeros((23, 300))), r"'J_regressor' must have shape \(24, 300\).*got \(23, 300\)"),
    (dict(kintree_table=np.zeros((2, 23), int)), r"'kintree_table' must have shape \(2, 24\)"),
    (dict(kintree_table=np.stack([np.arange(-1, 23)[::-1], np.arange(24)])),
     r"kintree_table row 0 must hold parents"),
    (dict(shapedirs=np.zeros((300, 2, 10))), r"'shapedirs' must have shape \(V, 3, NB\) = \(300, 3, NB\)"),
    (dict(posedirs=np.zeros((300, 3, 10))), r"'posedirs' must have shape \(300, 3, 207\)"),
    (dict(f=np.full((10, 3), 300)), r"'f' has vertex ids outside \[0, 300\)"),
    (dict(J_regressor_extra=np.zeros((8, 300))), r"'J_regressor_extra' must have shape \(9, 300\)"),
    (dict(v_template=np.full((300, 3), np.nan)), r"'v_template' contains NaN"),
])
def test_bad_layout_names_the_file_and_the_expectation(tmp_path, change, message):
    path = _write_variant(tmp_path, "bad.npz", **change)
    with pytest.raises(ValueError, match=r"bad\.npz.*" + message):
        smpl_jax.load(path)


def test_too_many_betas_names_the_file(tmp_path):
    path = _write_variant(tmp_path, "ten.npz")
    with pytest.raises(ValueError, match=r"ten\.npz: num_betas=11 requested but the file holds 10"):
        smpl_jax.load(path, num_betas=11)


def test_bad_keyword_regressor_file_is_named(small_npz, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"J_regressor_extra file not found: .*missing\.npy"):
        smpl_jax.load(small_npz, j_regressor_extra=tmp_path / "missing.npy")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((9, 6890)))
    with pytest.raises(ValueError, match=r"small\.npz.*'J_regressor_extra' must have shape \(9, 500\)"):
        smpl_jax.load(small_npz, j_regressor_extra=wrong)


def test_corrupt_pickle_is_named(tmp_path):
    path = tmp_path / "broken.pkl"
    path.write_bytes(b"\x80\x02}q\x00(X")
    with pytest.raises(ValueError, match=r"broken\.pkl: cannot read as an SMPL model \.pkl file"):
        smpl_jax.load(path)


class _Sneaky:
    def __reduce__(self):
        import operator
        return operator.add, (1, 2)


def test_pickles_with_other_classes_are_refused(tmp_path):
    path = tmp_path / "sneaky.pkl"
    arrays = random_smpl_arrays(num_vertices=300, num_faces=10, seed=9)
    arrays["extra"] = _Sneaky()
    path.write_bytes(pickle.dumps(arrays))
    with pytest.raises(ValueError, match=r"sneaky\.pkl.*refusing to load _?operator\.add"):
        smpl_jax.load(path)
