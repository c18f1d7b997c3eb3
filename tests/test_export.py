"""smpl_jax.export: OBJ / PLY round trips (trimesh as an independent reader when installed) and
the smplx parameter layout (against smplx's own forward when smplx and torch are installed,
always against smpl_jax.forward)."""
import numpy as np
import pytest

import smpl_jax
from smpl_jax import export
from smpl_jax.default_body import load_arrays, to_official_layout
from smpl_jax.rotations import axis_angle_to_matrix

B = 3


def _mesh(seed=0, nv=40, nf=70):
    rng = np.random.default_rng(seed)
    verts = rng.normal(0, 0.5, size=(nv, 3)).astype(np.float32)
    verts[0] = [1e-8, -123.456789, 3.0e5]  # tiny, long and large values survive the text format
    faces = np.stack([rng.permutation(nv)[:3] for _ in range(nf)]).astype(np.int64)
    return verts, faces


def _read_ply(path):
    """A minimal PLY reader written from the format's description (not from write_ply): header
    lines up to end_header, then binary little-endian or ASCII bodies."""
    with open(path, "rb") as f:
        data = f.read()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    fmt = next(line.split()[1] for line in header if line.startswith("format"))
    nv = next(int(line.split()[2]) for line in header if line.startswith("element vertex"))
    nf = next(int(line.split()[2]) for line in header if line.startswith("element face"))
    vprops = []
    section = None
    for line in header:
        if line.startswith("element"):
            section = line.split()[1]
        elif line.startswith("property") and section == "vertex":
            vprops.append((line.split()[2], {"float": "<f4", "uchar": "u1"}[line.split()[1]]))
    names = [n for n, _ in vprops]
    body = data[end:]
    if fmt == "binary_little_endian":
        vrec = np.frombuffer(body, dtype=vprops, count=nv)
        frec = np.frombuffer(body, dtype=[("n", "u1"), ("ids", "<i4", (3,))], count=nf,
                             offset=vrec.nbytes)
        assert (frec["n"] == 3).all()
        verts = np.stack([vrec[c] for c in "xyz"], 1)
        colors = np.stack([vrec[c] for c in ("red", "green", "blue")], 1) \
            if "red" in names else None
        return verts, frec["ids"].astype(np.int64), colors
    assert fmt == "ascii"
    rows = body.decode("ascii").split("\n")
    vrows = np.array([[float(x) for x in r.split()] for r in rows[:nv]]).reshape(nv, len(names))
    frows = np.array([[int(x) for x in r.split()] for r in rows[nv:nv + nf]]).reshape(nf, 4)
    assert (frows[:, 0] == 3).all()
    colors = vrows[:, 3:6].astype(np.uint8) if "red" in names else None
    return vrows[:, :3].astype(np.float32), frows[:, 1:], colors


def test_obj_round_trip(tmp_path):
    verts, faces = _mesh()
    path = export.write_obj(tmp_path / "sub" / "mesh.obj", verts, faces)
    v, f = export.read_obj(path)
    assert v.dtype == np.float64 and f.dtype == np.int64
    np.testing.assert_array_equal(v.astype(np.float32), verts)  # bit for bit
    np.testing.assert_array_equal(f, faces)
    text = open(path).read().splitlines()
    assert text[1].startswith("v ") and text[-1].startswith("f ")
    assert min(int(x) for line in text if line.startswith("f ") for x in line.split()[1:]) >= 1


def test_read_obj_other_writers(tmp_path):
    """Entries with texture/normal ids, negative ids, a quad (fan split), comments, colours."""
    path = tmp_path / "other.obj"
    path.write_text("# made by hand\nmtllib x.mtl\no body\nv 0 0 0 1 0 0\nv 1 0 0\nv 1 1 0\n"
                    "v 0 1 0\nvt 0 0\nvn 0 0 1\ns off\nf 1/1/1 2/1/1 3/1/1 4/1/1\nf -4//1 -2//1 -1//1\n")
    v, f = export.read_obj(path)
    np.testing.assert_array_equal(v, [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(f, [[0, 1, 2], [0, 2, 3], [0, 2, 3]])
    bad = tmp_path / "bad.obj"
    bad.write_text("v 0 0 0\nv 1 0 0\nv 0 1\n")
    with pytest.raises(ValueError, match="bad.obj:3"):
        export.read_obj(bad)
    bad.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n")
    with pytest.raises(ValueError, match="vertex 4"):
        export.read_obj(bad)
    with pytest.raises(ValueError, match="vertex ids must lie"):
        export.write_obj(tmp_path / "x.obj", np.zeros((3, 3)), [[0, 1, 3]])
    with pytest.raises(ValueError, match=r"\(F, 3\)"):
        export.write_obj(tmp_path / "x.obj", np.zeros((4, 3)), [[0, 1, 2, 3]])


@pytest.mark.parametrize("binary", [True, False])
def test_ply_round_trip(tmp_path, binary):
    verts, faces = _mesh(1)
    colors = np.random.default_rng(2).integers(0, 256, size=verts.shape).astype(np.uint8)
    path = export.write_ply(tmp_path / "mesh.ply", verts, faces, colors, binary=binary)
    v, f, c = _read_ply(path)
    np.testing.assert_array_equal(v, verts)
    np.testing.assert_array_equal(f, faces)
    np.testing.assert_array_equal(c, colors)
    plain = export.write_ply(tmp_path / "plain.ply", verts, faces, binary=binary)
    v2, f2, c2 = _read_ply(plain)
    np.testing.assert_array_equal(v2, verts)
    np.testing.assert_array_equal(f2, faces)
    assert c2 is None
    # float colours in [0, 1] are scaled and rounded
    export.write_ply(tmp_path / "fc.ply", verts, faces, colors / 255.0, binary=binary)
    np.testing.assert_array_equal(_read_ply(tmp_path / "fc.ply")[2], colors)


@pytest.mark.parametrize("binary", [True, False])
def test_trimesh_reads_what_we_write(tmp_path, binary):
    """trimesh (an independent reader; not a dependency) loads the same mesh from OBJ and PLY."""
    trimesh = pytest.importorskip("trimesh")
    verts, faces = _mesh(3)
    colors = np.random.default_rng(4).integers(0, 256, size=verts.shape).astype(np.uint8)
    paths = [export.write_ply(tmp_path / "m.ply", verts, faces, colors, binary=binary)]
    if binary:
        paths.append(export.write_obj(tmp_path / "m.obj", verts, faces))
    for path in paths:
        mesh = trimesh.load(str(path), process=False, maintain_order=True)
        np.testing.assert_allclose(np.asarray(mesh.vertices), verts, rtol=1e-7, atol=0)
        np.testing.assert_array_equal(np.asarray(mesh.faces), faces)
    ply = trimesh.load(str(paths[0]), process=False, maintain_order=True)
    np.testing.assert_array_equal(np.asarray(ply.visual.vertex_colors)[:, :3], colors)


# ------------------------------------------------------------------------------- parameters
@pytest.fixture(scope="module")
def body():
    return smpl_jax.load("default-small")


def _pose(seed=0, batch=B):
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 0.4, size=(batch, 24, 3)).astype(np.float32),
            rng.normal(0, 1.0, size=(batch, 10)).astype(np.float32),
            rng.normal(0, 1.0, size=(batch, 3)).astype(np.float32))


def test_smplx_params_layouts():
    pose, betas, transl = _pose()
    p = export.smplx_params(pose, betas, transl)
    assert list(p) == list(export.SMPLX_KEYS)
    assert {k: v.shape for k, v in p.items()} == {"global_orient": (B, 3), "body_pose": (B, 69),
                                                 "betas": (B, 10), "transl": (B, 3)}
    assert all(v.dtype == np.float32 for v in p.values())
    np.testing.assert_array_equal(p["global_orient"], pose[:, 0])
    np.testing.assert_array_equal(p["body_pose"], pose[:, 1:].reshape(B, 69))
    np.testing.assert_array_equal(p["transl"], transl)
    # flat vectors, rotation matrices (batched and not), no translation
    flat = export.smplx_params(pose.reshape(B, 72), betas, transl)
    mats = export.smplx_params(np.asarray(axis_angle_to_matrix(pose)), betas, transl)
    for k in export.SMPLX_KEYS:
        np.testing.assert_array_equal(flat[k], p[k])
        np.testing.assert_allclose(mats[k], p[k], atol=2e-5)
    one = export.smplx_params(np.asarray(axis_angle_to_matrix(pose[0])), betas[0])
    np.testing.assert_allclose(one["body_pose"], p["body_pose"][:1], atol=2e-5)
    np.testing.assert_array_equal(one["transl"], np.zeros((1, 3)))
    # 23 body joints with the root given separately (axis-angle or matrix)
    split = export.smplx_params(pose[:, 1:], betas, transl,
                                global_orient=np.asarray(axis_angle_to_matrix(pose[:, 0])))
    np.testing.assert_allclose(split["global_orient"], p["global_orient"], atol=2e-5)
    np.testing.assert_array_equal(split["body_pose"], p["body_pose"])
    with pytest.raises(ValueError, match="global_orient"):
        export.smplx_params(pose[:, 1:], betas)
    with pytest.raises(ValueError, match="pose must be"):
        export.smplx_params(pose[:, :10], betas)
    with pytest.raises(ValueError, match="betas must be"):
        export.smplx_params(pose, betas[:2])
    with pytest.raises(ValueError, match="transl must be"):
        export.smplx_params(pose, betas, transl[:, :2])


def test_smplx_params_give_smpl_jax_forward(body, tmp_path):
    pose, betas, transl = _pose(1)
    extra = {"cam_crop": np.ones((B, 3), np.float32), "focal_length": np.float64(5000.0)}
    written = export.save_smplx_params(tmp_path / "p.npz", pose, betas, transl, extra=extra)
    with np.load(tmp_path / "p.npz") as z:
        loaded = {k: z[k] for k in z.files}
    assert set(loaded) == set(export.SMPLX_KEYS) | set(extra)
    for k in export.SMPLX_KEYS:
        np.testing.assert_array_equal(loaded[k], written[k])
    full = np.concatenate([loaded["global_orient"][:, None],
                           loaded["body_pose"].reshape(B, 23, 3)], 1)
    a = smpl_jax.forward(body, full, loaded["betas"], loaded["transl"])
    b = smpl_jax.forward(body, pose, betas, transl)
    np.testing.assert_allclose(a.vertices, b.vertices, atol=1e-6)
    with pytest.raises(ValueError, match="may not be named"):
        export.save_smplx_params(tmp_path / "q.npz", pose, betas, extra={"betas": betas})


def test_smplx_params_match_smplx_forward(body, tmp_path):
    """smplx's SMPL with the same model arrays and these keyword arguments gives smpl_jax's mesh."""
    torch = pytest.importorskip("torch")
    smplx = pytest.importorskip("smplx")
    from conftest import write_plain_pkl

    arrays = to_official_layout(load_arrays("default-small"))
    keys = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
    path = write_plain_pkl(tmp_path / "SMPL_NEUTRAL.pkl", {k: arrays[k] for k in keys})
    # smplx selects 21 extra joints by vertex id: give it the default body's (its SMPL ids would
    # be out of range for 1,229 vertices).
    names = ["nose", "reye", "leye", "rear", "lear", "LBigToe", "LSmallToe", "LHeel", "RBigToe",
             "RSmallToe", "RHeel"] + [h + f for h in "lr"
                                      for f in ("thumb", "index", "middle", "ring", "pinky")]
    vertex_ids = dict(zip(names, (int(i) for i in arrays["vertex_joint_ids"])))
    ref_model = smplx.SMPL(model_path=str(path), num_betas=10, batch_size=B,
                           vertex_ids=vertex_ids)
    pose, betas, transl = _pose(2)
    for given in (pose, np.asarray(axis_angle_to_matrix(pose))):  # axis-angle and matrices
        params = export.smplx_params(given, betas, transl)
        with torch.no_grad():
            ref = ref_model(**{k: torch.from_numpy(v) for k, v in params.items()})
        out = smpl_jax.forward(body, pose, betas, transl)
        np.testing.assert_allclose(out.vertices, ref.vertices.numpy(), rtol=0, atol=1e-5)
        np.testing.assert_allclose(out.joints, ref.joints.numpy()[:, :24], rtol=0, atol=1e-5)
