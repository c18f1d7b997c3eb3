"""Claims checked for smpl_jax.forward: it matches smplx (vertices, 24 joints and the 21 vertex
joints) on random official-layout models; rotation-matrix and axis-angle poses agree; the rest pose
is the template with regressed joints; translation shifts everything; the joints-only path equals
the full path for every joint set; spin49/lsp14 pick the joints their names say and the flip
permutations swap left and right names; jit, vmap and grad work, and gradients match finite
differences in float64; bad pose/betas/transl/joint-set requests raise errors naming them."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import smpl_jax
from smpl_jax import body_model
from smpl_jax import joint_sets as js
from smpl_jax import io as smpl_io

B = 8  # one batch size throughout, so each jitted function compiles once per model
fwd = jax.jit(smpl_jax.forward, static_argnames=("extra_joints", "return_vertices"))
ALL = ("vertex21", "extra9", "h36m17", "lsp14", "spin49")  # most tests share this request


def random_inputs(seed, batch=B, num_betas=10):
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 0.5, (batch, 24, 3)).astype(np.float32),
            rng.normal(0, 1.0, (batch, num_betas)).astype(np.float32),
            rng.normal(0, 1.0, (batch, 3)).astype(np.float32))


@pytest.fixture(scope="module")
def model(smpl_pkl, spin_regressors):
    return smpl_jax.load(smpl_pkl, j_regressor_extra=spin_regressors[0],
                         j_regressor_h36m=spin_regressors[1])


@pytest.fixture(scope="module")
def small_model(small_npz):
    return smpl_jax.load(small_npz, num_betas=12)


# --- parity with smplx ---------------------------------------------------------------------------
# Parameterised by a model spec, so that more bodies can be added to the list: each spec resolves
# (in parity_case) to a path or name for smpl_jax.load and the same model's arrays, read
# independently of smpl_jax, from which smplx gets a plain-numpy pkl copy. Packaged bodies are
# skipped while their files are not built.
PARITY_MODELS = ["random-6890-pkl", "random-6890-npz", "random-500-no-posedirs",
                 "default", "default-small"]


def _package_arrays(name):
    try:
        with smpl_io.package_file(name) as path:
            return dict(np.load(path, allow_pickle=False))
    except FileNotFoundError:
        pytest.skip(f"package data for {name!r} not built yet")


@pytest.fixture
def parity_case(request, smpl_pkl, smpl_npz, smpl_arrays, small_npz, small_arrays):
    spec = request.param
    if spec == "random-6890-pkl":
        return smpl_pkl, smpl_arrays
    if spec == "random-6890-npz":
        return smpl_npz, smpl_arrays
    if spec == "random-500-no-posedirs":
        return small_npz, small_arrays
    return spec, _package_arrays(spec)


def _smplx_vertex_ids(ids):
    names = ["nose", "reye", "leye", "rear", "lear", "LBigToe", "LSmallToe", "LHeel", "RBigToe",
             "RSmallToe", "RHeel"] + [h + f for h in "lr"
                                      for f in ("thumb", "index", "middle", "ring", "pinky")]
    return dict(zip(names, (int(i) for i in ids)))


@pytest.mark.parametrize("parity_case", PARITY_MODELS, indirect=True)
def test_matches_smplx(parity_case, tmp_path):
    torch = pytest.importorskip("torch")
    smplx = pytest.importorskip("smplx")
    from conftest import write_plain_pkl

    path, arrays = parity_case
    keys = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
    plain = write_plain_pkl(tmp_path / "SMPL_NEUTRAL.pkl",
                            {k: arrays[k] for k in keys if k in arrays})
    kwargs = {}
    if "vertex_joint_ids" in arrays:  # otherwise smplx uses its own SMPL ids: an independent check
        kwargs["vertex_ids"] = _smplx_vertex_ids(arrays["vertex_joint_ids"])
    # smplx keeps at most 10 betas for SMPL files with fewer than 300: also exercises NB' < NB.
    ref_model = smplx.SMPL(model_path=str(plain), num_betas=10, batch_size=B, **kwargs)
    model = smpl_jax.load(path, num_betas=None)

    pose, betas, transl = random_inputs(1)
    t = lambda x: torch.tensor(np.asarray(x), dtype=torch.float32)
    with torch.no_grad():
        ref = ref_model(global_orient=t(pose[:, 0]), body_pose=t(pose[:, 1:].reshape(B, -1)),
                        betas=t(betas), transl=t(transl))
    has_v21 = "vertex21" in model.joint_sets
    out = fwd(model, pose, betas, transl, extra_joints=("vertex21",) if has_v21 else ())
    np.testing.assert_allclose(out.vertices, ref.vertices.numpy(), rtol=0, atol=1e-5)
    nj = 45 if has_v21 else 24
    np.testing.assert_allclose(out.joints, ref.joints.numpy()[:, :nj], rtol=0, atol=1e-5)


# --- basic equations -----------------------------------------------------------------------------


def test_rotation_matrix_pose_equals_axis_angle(model):
    pose, betas, transl = random_inputs(2)
    mats = smpl_jax.rotations.axis_angle_to_matrix(jnp.asarray(pose))
    a = fwd(model, pose, betas, transl, extra_joints=ALL)
    b = fwd(model, mats, betas, transl, extra_joints=ALL)
    np.testing.assert_allclose(a.vertices, b.vertices, atol=1e-6)
    np.testing.assert_allclose(a.joints, b.joints, atol=1e-6)


def test_rest_pose_is_template_with_regressed_joints(model, smpl_arrays, spin_regressors):
    zeros = np.zeros((B, 24, 3), np.float32), np.zeros((B, 10), np.float32)
    out = fwd(model, *zeros, np.zeros((B, 3), np.float32), extra_joints=ALL)
    tpl = smpl_arrays["v_template"]
    np.testing.assert_allclose(out.vertices, np.broadcast_to(tpl, (B,) + tpl.shape), atol=1e-6)
    extra, h36m = np.load(spin_regressors[0]), np.load(spin_regressors[1])
    lsp_rows = [6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10]  # SPIN's H36M_TO_J14
    expected = np.concatenate([smpl_arrays["J_regressor"] @ tpl,
                               tpl[list(js.SMPL_VERTEX_JOINT_IDS)],
                               extra @ tpl, h36m @ tpl, (h36m @ tpl)[lsp_rows]])
    n = len(expected)  # 24 + 21 + 9 + 17 + 14; spin49 follows and is checked below
    np.testing.assert_allclose(out.joints[:, :n], np.broadcast_to(expected, (B, n, 3)), atol=1e-6)


def test_translation_shifts_vertices_and_joints(model):
    pose, betas, transl = random_inputs(3)
    a = fwd(model, pose, betas, np.zeros_like(transl), extra_joints=ALL)
    b = fwd(model, pose, betas, transl, extra_joints=ALL)
    np.testing.assert_allclose(b.vertices - a.vertices,
                               np.broadcast_to(transl[:, None], a.vertices.shape), atol=1e-5)
    np.testing.assert_allclose(b.joints - a.joints,
                               np.broadcast_to(transl[:, None], a.joints.shape), atol=1e-5)


def test_fewer_betas_equal_zero_padded_betas(model):
    pose, betas, transl = random_inputs(4)
    betas[:, 7:] = 0
    a = fwd(model, pose, betas[:, :7], transl, extra_joints=ALL)
    b = fwd(model, pose, betas, transl, extra_joints=ALL)
    np.testing.assert_allclose(a.vertices, b.vertices, atol=1e-6)
    np.testing.assert_allclose(a.joints, b.joints, atol=1e-6)


def test_betas_and_transl_with_batch_one_broadcast(model):
    pose, betas, transl = random_inputs(5)
    a = fwd(model, pose, betas[:1], transl[:1], extra_joints=ALL)
    b = fwd(model, pose, np.repeat(betas[:1], B, 0), np.repeat(transl[:1], B, 0), extra_joints=ALL)
    np.testing.assert_allclose(a.vertices, b.vertices, atol=1e-6)


@pytest.mark.parametrize("which", ["model", "small_model"])
def test_joints_only_path_equals_full_path(request, which):
    m = request.getfixturevalue(which)
    sets = m.joint_sets
    assert set(sets) >= {"extra9", "h36m17", "lsp14"}
    pose, betas, transl = random_inputs(6)
    full = fwd(m, pose, betas, transl, extra_joints=sets)
    joints_only = fwd(m, pose, betas, transl, extra_joints=sets, return_vertices=False)
    assert joints_only.vertices is None
    assert full.joints.shape == (B, 24 + sum(js.JOINT_SET_SIZES[s] for s in sets), 3)
    np.testing.assert_allclose(joints_only.joints, full.joints, atol=2e-6)


# --- joint sets ----------------------------------------------------------------------------------


def _spin49_name_to_source():
    """SPIN's 49 names -> (set, joint name) written from the names alone."""
    side = {"R": "right", "L": "left"}
    out = {}
    for name in js.SPIN49_NAMES:
        if name.startswith("OP "):
            n = name[3:]
            special = {"Nose": ("vertex21", "nose"), "Neck": ("smpl", "neck"),
                       "MidHip": ("smpl", "pelvis")}
            if n in special:
                out[name] = special[n]
            elif n[1:] in ("Eye", "Ear"):
                out[name] = ("vertex21", f"{side[n[0]]}_{n[1:].lower()}")
            elif n[1:] in ("BigToe", "SmallToe", "Heel"):
                part = {"BigToe": "big_toe", "SmallToe": "small_toe", "Heel": "heel"}[n[1:]]
                out[name] = ("vertex21", f"{side[n[0]]}_{part}")
            else:
                out[name] = ("smpl", f"{side[n[0]]}_{n[1:].lower()}")
        elif name.split()[0] in ("Right", "Left"):
            s, part = name.lower().split()
            if part == "hip":
                out[name] = ("extra9", f"{s}_hip_lsp")
            elif part in ("eye", "ear"):
                out[name] = ("vertex21", f"{s}_{part}")
            else:
                out[name] = ("smpl", f"{s}_{part}")
        elif name == "Nose":
            out[name] = ("vertex21", "nose")
        else:  # "Neck (LSP)" -> neck_lsp, "Top of Head (LSP)" -> top_of_head_lsp, ...
            base, src = name[:-1].split(" (")
            out[name] = ("extra9", f"{base.lower().replace(' ', '_')}_{src.lower()}")
    return out


def test_spin49_picks_the_joints_its_names_say(model):
    pose, betas, transl = random_inputs(7)
    out = fwd(model, pose, betas, transl, extra_joints=ALL)
    spin = np.asarray(out.joints[:, js.set_slices(ALL)["spin49"]])
    pools = {"smpl": (js.SMPL_JOINT_NAMES, 0), "vertex21": (js.VERTEX21_NAMES, 24),
             "extra9": (js.EXTRA9_NAMES, 45)}
    for k, name in enumerate(js.SPIN49_NAMES):
        src, joint = _spin49_name_to_source()[name]
        names, offset = pools[src]
        np.testing.assert_array_equal(spin[:, k], out.joints[:, offset + names.index(joint)],
                                      err_msg=name)
    # spin49_indices finds the same joints from 'vertex21' + 'extra9' alone.
    np.testing.assert_array_equal(out.joints[:, js.spin49_indices(("vertex21", "extra9"))], spin)
    np.testing.assert_array_equal(out.joints[:, js.spin49_indices(ALL)], spin)
    np.testing.assert_array_equal(js.SPIN49_SLICE, slice(24, 73))


def test_lsp14_rows_match_their_names():
    assert [js.H36M17_NAMES[i].replace("thorax", "neck").replace("head", "top_of_head")
            for i in js.H36M_TO_J14] == list(js.LSP14_NAMES)


def _swap_sides(name):
    for a, b in (("left", "right"), ("Left", "Right"), ("OP L", "OP R")):
        if a in name:
            return name.replace(a, b)
        if b in name:
            return name.replace(b, a)
    return name


@pytest.mark.parametrize("perm,names", [
    (js.SMPL_JOINTS_FLIP_PERM, js.SMPL_JOINT_NAMES),
    (js.J24_FLIP_PERM, js.SPIN49_NAMES[25:]),
    (js.J49_FLIP_PERM, js.SPIN49_NAMES),
])
def test_flip_permutations_swap_left_and_right(perm, names):
    assert sorted(perm) == list(range(len(names)))
    assert [names[p] for p in perm] == [_swap_sides(n) for n in names]


def test_joint_names_follow_the_request():
    names = js.joint_names(("lsp14", "vertex21"))
    assert names[:24] == js.SMPL_JOINT_NAMES
    assert names[24:38] == js.LSP14_NAMES and names[38:] == js.VERTEX21_NAMES
    assert js.set_slices(("lsp14", "vertex21"))["vertex21"] == slice(38, 59)


# --- transformations -----------------------------------------------------------------------------


def test_vmap_over_single_samples_equals_batch(small_model):
    pose, betas, transl = random_inputs(9)
    batched = fwd(small_model, pose, betas, transl)
    per_sample = jax.jit(jax.vmap(lambda p, b, t: smpl_jax.forward(small_model, p, b, t)))(
        pose[:, None], betas[:, None], transl[:, None])
    np.testing.assert_allclose(per_sample.vertices[:, 0], batched.vertices, atol=1e-6)
    np.testing.assert_allclose(per_sample.joints[:, 0], batched.joints, atol=1e-6)


def test_grad_is_finite_at_rest_pose(model):
    def loss(pose, betas):
        out = smpl_jax.forward(model, pose, betas, extra_joints=ALL)
        return jnp.sum(out.vertices ** 2) + jnp.sum(out.joints ** 2)

    g_pose, g_betas = jax.jit(jax.grad(loss, argnums=(0, 1)))(
        jnp.zeros((B, 24, 3)), jnp.zeros((B, 10)))
    assert np.all(np.isfinite(g_pose)) and np.all(np.isfinite(g_betas))
    assert np.abs(g_pose).max() > 0 and np.abs(g_betas).max() > 0


def test_grad_of_translation_is_exact(small_model):
    pose, betas, transl = random_inputs(10)
    g = jax.jit(jax.grad(lambda t: jnp.sum(smpl_jax.forward(small_model, pose, betas, t).vertices)))
    np.testing.assert_allclose(g(transl), np.full((B, 3), small_model.num_vertices), rtol=1e-6)


def test_forward_mode_with_plain_autodiff_matches_the_fast_reverse_mode(small_model):
    pose, betas, transl = random_inputs(13, batch=2)

    def joints(b, fast):
        out = smpl_jax.forward(small_model, pose[:2], b, transl[:2], extra_joints=("vertex21",),
                               fast_vjp=fast)
        return out.joints + out.vertices[:, :3].mean(1, keepdims=True)

    forward_jac = jax.jit(jax.jacfwd(lambda b: joints(b, False)))(betas[:2])
    reverse_jac = jax.jit(jax.jacrev(lambda b: joints(b, True)))(betas[:2])
    np.testing.assert_allclose(forward_jac, reverse_jac, rtol=1e-4, atol=1e-6)
    assert np.abs(forward_jac).max() > 1e-3


def _force_small_chunks(monkeypatch, batch):
    """Skin in 128-vertex chunks (the last one shifted to overlap its predecessor)."""
    monkeypatch.setattr(body_model, "_CHUNK_BYTES", 48 * batch * 128)


def test_chunked_skinning_equals_single_chunk(model, monkeypatch):
    pose, betas, transl = random_inputs(12)
    whole = fwd(model, pose, betas, transl, extra_joints=ALL)
    _force_small_chunks(monkeypatch, B)
    assert body_model._chunking(model.num_vertices, B) == (128, 54)  # 54 * 128 > 6890
    chunked = jax.jit(lambda *a: smpl_jax.forward(*a, extra_joints=ALL))(model, pose, betas, transl)
    np.testing.assert_allclose(chunked.vertices, whole.vertices, atol=1e-6)
    np.testing.assert_allclose(chunked.joints, whole.joints, atol=1e-6)


@pytest.mark.parametrize("which", ["model", "small_model", "small_model-chunked"])
def test_grad_matches_finite_differences_float64(request, monkeypatch, which):
    """Covers the full path (vertices and regressed joints) and the joints-only path at once."""
    if which.endswith("-chunked"):
        which = which[:-len("-chunked")]
        _force_small_chunks(monkeypatch, 2)
    with jax.enable_x64(True):
        m = request.getfixturevalue(which).astype(jnp.float64)
        pose, betas, transl = (jnp.asarray(x, jnp.float64) for x in random_inputs(11, batch=2))
        rng = np.random.default_rng(0)
        wv = jnp.asarray(rng.normal(size=(2, m.num_vertices, 3)))
        wj = jnp.asarray(rng.normal(size=(2, 2, 24 + 17, 3)))

        def loss(pose, betas, transl):
            full = smpl_jax.forward(m, pose, betas, transl, extra_joints=("h36m17",))
            joints_only = smpl_jax.forward(m, pose, betas, transl, extra_joints=("h36m17",),
                                           return_vertices=False)
            return (jnp.sum(jnp.sin(full.vertices) * wv) + jnp.sum(jnp.sin(full.joints) * wj[0])
                    + jnp.sum(jnp.cos(joints_only.joints) * wj[1]))

        value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
        _, grads = value_and_grad(pose, betas, transl)
        eps = 1e-6
        for arg, index in ((0, (1, 5, 1)), (0, (0, 0, 2)), (1, (1, 3)), (2, (0, 1))):
            args = [pose, betas, transl]
            plus, minus = list(args), list(args)
            plus[arg] = args[arg].at[index].add(eps)
            minus[arg] = args[arg].at[index].add(-eps)
            fd = (value_and_grad(*plus)[0] - value_and_grad(*minus)[0]) / (2 * eps)
            np.testing.assert_allclose(grads[arg][index], fd, rtol=1e-6, atol=1e-8,
                                       err_msg=f"argument {arg}, index {index}")


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("pose_shape,message", [
    ((B, 72), r"pose must have shape \(B, 24, 3\) or \(B, 24, 3, 3\), got \(8, 72\).*reshape"),
    ((24, 3), r"pose must have shape .*got \(24, 3\).*batch axis"),
    ((B, 23, 3), r"pose must have shape .*got \(8, 23, 3\)"),
])
def test_bad_pose_shape_is_named(small_model, pose_shape, message):
    with pytest.raises(ValueError, match=message):
        smpl_jax.forward(small_model, np.zeros(pose_shape), np.zeros((B, 10)))


def test_bad_betas_and_transl_are_named(small_model):
    pose = np.zeros((B, 24, 3))
    with pytest.raises(ValueError, match=r"betas has 13 coefficients but the model holds 12"):
        smpl_jax.forward(small_model, pose, np.zeros((B, 13)))
    with pytest.raises(ValueError, match=r"betas must have shape \(B, num_betas\).*got \(10,\)"):
        smpl_jax.forward(small_model, pose, np.zeros(10))
    with pytest.raises(ValueError, match=r"betas must have shape .*got \(3, 10\)"):
        smpl_jax.forward(small_model, pose, np.zeros((3, 10)))
    with pytest.raises(ValueError, match=r"transl must have shape \(B, 3\).*got \(8, 2\)"):
        smpl_jax.forward(small_model, pose, np.zeros((B, 10)), np.zeros((B, 2)))


def test_bad_joint_set_requests_are_named(small_model, smpl_pkl):
    pose, betas = np.zeros((B, 24, 3)), np.zeros((B, 10))
    with pytest.raises(ValueError, match=r"unknown joint set 'coco'.*'vertex21'"):
        smpl_jax.forward(small_model, pose, betas, extra_joints=("coco",))
    plain = smpl_jax.load(smpl_pkl)  # official file: no SPIN regressors
    with pytest.raises(ValueError, match=r"joint set 'h36m17' needs .*j_regressor_h36m="):
        smpl_jax.forward(plain, pose, betas, extra_joints=("h36m17",))
    with pytest.raises(ValueError, match=r"joint set 'spin49' needs .*j_regressor_extra="):
        smpl_jax.forward(plain, pose, betas, extra_joints=("spin49",))
