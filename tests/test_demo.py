"""The demo CLI (`python -m imphmr_jax.demo`) and `imphmr_jax.inference` with a randomly
initialised tiny model (tests/train_fixtures.py): outputs on JPEG and PNG photos, the camera in
the photo's frame, the OBJ against the parameters' SMPL forward, boxes files, bad inputs."""
import io
import json
import os
import sys

import jax
import numpy as np
import pytest
from PIL import Image, ImageDraw

import smpl_jax
from imphmr_jax import cli, demo, inference
from imphmr_jax.geometry import camera as cam_lib
from imphmr_jax.models.build import build_model, init_variables
from imphmr_jax.training.checkpoint import BestCheckpoint
from smpl_jax.export import read_obj

sys.path.insert(0, os.path.dirname(__file__))
from train_fixtures import tiny_config  # noqa: E402

H, W = 96, 128  # photo size (not square, so the camera conversion is exercised off-centre)


class _State:
    def __init__(self, variables):
        self._v = variables

    def variables(self):
        return self._v


def _random_variables(model, config, seed=0):
    """Random variables of the model's shapes, drawn with numpy: compiling the model's own init
    takes minutes on a 2-core CPU, and any random weights do for these tests. Weights ~ N(0,
    0.05²), biases 0, BatchNorm scales and running variances 1, running means 0."""
    shapes = jax.eval_shape(
        lambda k: init_variables(model, k, config.data.img_res, config.train.num_views),
        jax.random.key(0))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = str(path[-1].key)
        if name in ("scale", "var"):
            return np.ones(leaf.shape, leaf.dtype)
        if name in ("bias", "mean"):
            return np.zeros(leaf.shape, leaf.dtype)
        return rng.normal(0, 0.05, leaf.shape).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A training workdir as `imphmr_jax.train` leaves it: config.json and best/ (random tiny
    model), plus the model, variables and body for the library calls."""
    config = tiny_config()
    model = build_model(config.model)
    variables = _random_variables(model, config)
    workdir = tmp_path_factory.mktemp("run")
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    best = BestCheckpoint(str(workdir / "best"))
    best.update(3, _State(variables), 100.0)
    best.wait()
    return {"workdir": str(workdir), "config": config, "model": model,
            "variables": variables, "body": smpl_jax.load(config.body.model)}


def _photo(seed, people):
    """A synthetic photo: a colour gradient with stick people drawn in the given boxes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    base = rng.uniform(40, 200, size=3)
    img = np.clip(base + 0.6 * xx[..., None] * rng.uniform(-1, 1, 3)
                  + 0.4 * yy[..., None] * rng.uniform(-1, 1, 3), 0, 255).astype(np.uint8)
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    for x0, y0, x1, y1 in people:
        cx, w, h = (x0 + x1) / 2, x1 - x0, y1 - y0
        draw.ellipse((cx - w / 6, y0, cx + w / 6, y0 + h / 5), fill=(230, 190, 160))
        draw.rectangle((cx - w / 5, y0 + h / 5, cx + w / 5, y0 + 0.6 * h), fill=(40, 90, 200))
        draw.line((cx - w / 10, y0 + 0.6 * h, x0, y1), fill=(50, 50, 60), width=3)
        draw.line((cx + w / 10, y0 + 0.6 * h, x1, y1), fill=(50, 50, 60), width=3)
    return np.asarray(pil)


BOX_A = [30.0, 10.0, 70.0, 90.0]
BOXES_B = [[5.0, 20.0, 45.0, 94.0], [70.0, 8.0, 120.0, 90.0]]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder with a JPEG (one person), a PNG (two people), an unreadable .jpg, a PNG whose box
    lies outside it, a PNG without a box, a text file; and a COCO-dict boxes file."""
    d = tmp_path_factory.mktemp("photos")
    a, b = _photo(0, [BOX_A]), _photo(1, BOXES_B)
    Image.fromarray(a).save(d / "a.jpg", quality=95)
    Image.fromarray(b).save(d / "b.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    Image.fromarray(a).save(d / "outside.png")
    Image.fromarray(b).save(d / "nobox.png")
    (d / "notes.txt").write_text("not an image")
    coco = {"images": [{"id": 1, "file_name": "photos/a.jpg"}, {"id": 2, "file_name": "b.png"},
                       {"id": 3, "file_name": "outside.png"}, {"id": 4, "file_name": "broken.jpg"}],
            "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}],
            "annotations": [
                {"image_id": 1, "bbox": [BOX_A[0], BOX_A[1], 40, 80], "category_id": 1},
                {"image_id": 1, "bbox": [0, 0, 10, 10], "category_id": 2},  # a dog: not used
                {"image_id": 2, "bbox": [5, 20, 40, 74], "category_id": 1},
                {"image_id": 2, "bbox": [70, 8, 50, 82], "category_id": 1},
                {"image_id": 2, "bbox": [0, 0, 128, 96], "category_id": 1, "iscrowd": 1},
                {"image_id": 3, "bbox": [300, 300, 40, 40], "category_id": 1},
                {"image_id": 4, "bbox": [0, 0, 40, 40], "category_id": 1}]}
    boxes = d.parent / "boxes.json"
    boxes.write_text(json.dumps(coco))
    return {"dir": d, "boxes": boxes, "a": a, "b": b}


def _run_cli(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.run(demo.main, argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.fixture(scope="module")
def demo_out(run, photos, tmp_path_factory):
    """The demo run once over the photo folder (in process). Batches of 2 crops: photo a's one
    crop is padded; the library tests below reuse this compiled forward (equal tiny models)."""
    out = tmp_path_factory.mktemp("demo_out")
    argv = ["--images", str(photos["dir"]), "--out", str(out), "--workdir", run["workdir"],
            "--boxes", str(photos["boxes"]), "--batch_size", "2", "--no_progress"]
    capture = io.StringIO()
    stdout = sys.stdout
    sys.stdout = capture
    try:
        with pytest.raises(SystemExit) as e:
            cli.run(demo.main, argv)
    finally:
        sys.stdout = stdout
    return {"dir": out, "code": e.value.code, "stdout": capture.getvalue()}


def test_demo_writes_every_output(demo_out, run):
    out, log = demo_out["dir"], demo_out["stdout"]
    assert demo_out["code"] == 0, log
    # one line per bad input, naming the file and the reason; the others were processed
    skipped = [line for line in log.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 3, log
    assert any("broken.jpg" in s and "cannot read" in s for s in skipped)
    assert any("outside.png" in s and "lies outside the 128x96 image" in s for s in skipped)
    assert any("nobox.png" in s and "no box for nobox.png in boxes.json" in s for s in skipped)
    assert "2 of 5 image(s) processed" in log
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "index.html", "summary.png"]
    forward = jax.jit(smpl_jax.forward)
    for name, people in (("a", 1), ("b", 2)):
        d = out / name
        assert sorted(p.name for p in d.iterdir()) == [
            "imagination.png", "mesh.obj", "overlay.png", "params.json", "params.npz"]
        overlay = np.asarray(Image.open(d / "overlay.png"))
        assert overlay.shape == (384, 512, 3)  # the whole photo, longer side raised to 512
        imag = np.asarray(Image.open(d / "imagination.png"))
        assert imag.shape[0] == 240 * people and imag.std() > 10
        doc = json.loads((d / "params.json").read_text())
        assert len(doc["people"]) == people and doc["image_size"] == [H, W]
        assert doc["intrinsics"] == [doc["focal_length"]] * 2 + [W / 2, H / 2]
        with np.load(d / "params.npz") as z:
            p = {k: z[k] for k in z.files}
        assert p["global_orient"].shape == (people, 3) and p["body_pose"].shape == (people, 69)
        assert p["betas"].shape == (people, 10) and p["transl"].shape == (people, 3)
        np.testing.assert_allclose(p["body_pose"], [q["body_pose"] for q in doc["people"]])
        # The OBJ is the parameters' SMPL forward in the camera frame, people one after another.
        pose = np.concatenate([p["global_orient"][:, None], p["body_pose"].reshape(-1, 23, 3)], 1)
        ref = forward(run["body"], pose, p["betas"], p["transl"])
        verts, faces = read_obj(d / "mesh.obj")
        nv = run["body"].num_vertices
        np.testing.assert_allclose(verts, np.asarray(ref.vertices).reshape(-1, 3), atol=2e-5)
        body_faces = np.asarray(run["body"].faces)
        np.testing.assert_array_equal(
            faces, np.concatenate([body_faces + k * nv for k in range(people)]))
    b = json.loads((out / "b" / "params.json").read_text())
    np.testing.assert_allclose([q["box"] for q in b["people"]], BOXES_B)  # crowd box dropped
    sheet = np.asarray(Image.open(out / "summary.png"))
    assert sheet.shape[1] > 2 * demo.SUMMARY_TILE and (sheet < 100).any()
    page = (out / "index.html").read_text()
    assert 'src="a/overlay.png"' in page and "broken.jpg" in page


def _coverage(uv, faces, h, w):
    """(h, w) bool: pixel centres inside any projected triangle (an edge-function test in numpy,
    independent of the project's rasterizer)."""
    cov = np.zeros((h, w), bool)
    for tri in uv[faces]:
        x0, y0 = np.maximum(np.floor(tri.min(0)).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(tri.max(0)).astype(int), [w, h])
        if x1 <= x0 or y1 <= y0:
            continue
        py, px = np.mgrid[y0:y1, x0:x1] + 0.5
        e = [(b[0] - a[0]) * (py - a[1]) - (b[1] - a[1]) * (px - a[0])
             for a, b in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0]))]
        inside = ((e[0] >= 0) & (e[1] >= 0) & (e[2] >= 0)) | ((e[0] <= 0) & (e[1] <= 0)
                                                              & (e[2] <= 0))
        cov[y0:y1, x0:x1] |= inside
    return cov


def _grow(mask, r):
    out = np.zeros_like(mask)
    pad = np.pad(mask, r)
    h, w = mask.shape
    for dr in range(-r, r + 1):
        for dc in range(-r, r + 1):
            out |= pad[r + dr:r + dr + h, r + dc:r + dc + w]
    return out


def test_overlay_draws_the_mesh_where_the_camera_puts_it(demo_out, run, photos):
    """The overlay differs from the photo exactly where mesh.obj (both people), projected with
    the intrinsics of params.json scaled to the drawn size, covers it (and on the box outlines)."""
    d = demo_out["dir"] / "b"  # the lossless PNG
    doc = json.loads((d / "params.json").read_text())
    verts, faces = read_obj(d / "mesh.obj")
    overlay = np.asarray(Image.open(d / "overlay.png")).astype(int)
    photo = np.asarray(Image.fromarray(photos["b"]).resize((512, 384), Image.Resampling.BILINEAR))
    intr = np.asarray(doc["intrinsics"]) * 512 / W
    uv = intr[:2] * verts[:, :2] / verts[:, 2:] + intr[2:]
    cov = _coverage(uv, faces, 384, 512)
    assert cov.mean() > 0.05
    changed = np.any(overlay != photo, axis=-1)
    box_lines = np.zeros_like(cov)
    for x0, y0, x1, y1 in np.asarray(BOXES_B) * 512 / W:
        box_lines[int(y0) - 3:int(y1) + 4, int(x0) - 3:int(x1) + 4] = True
        box_lines[int(y0) + 4:int(y1) - 3, int(x0) + 4:int(x1) - 3] = False
    interior = ~_grow(~cov, 1)
    exterior = ~_grow(cov, 1) & ~box_lines
    assert changed[interior].mean() > 0.99
    assert not changed[exterior].any()


def test_batched_predictor_equals_single_crops(run, photos):
    """Three crops through batches of two (the last one padded) give the single-crop results."""
    preds = inference.predict_images(run["model"], run["variables"], [photos["a"], photos["b"]],
                                     [BOX_A, BOXES_B], body=run["body"], config=run["config"],
                                     batch_size=2)
    assert [(p.image_index, p.box_index) for p in preds] == [(0, 0), (1, 0), (1, 1)]
    one_crop = inference.Predictor(run["model"], run["variables"], run["body"],
                                   img_res=run["config"].data.img_res, batch_size=2)
    for p, (img, box) in zip(preds, [(photos["a"], BOX_A), (photos["b"], BOXES_B[0]),
                                     (photos["b"], BOXES_B[1])]):
        one = one_crop.predict(img, box)[0]  # alone in its (padded) batch
        np.testing.assert_allclose(p.rotmat, one.rotmat, atol=1e-5)
        np.testing.assert_allclose(p.cam_t, one.cam_t, rtol=1e-5)
        np.testing.assert_allclose(p.vertices, one.vertices, atol=1e-5)


def test_predict_image_matches_the_demo(demo_out, run, photos):
    # (reuses the batch-2 predictor of predict_images above when it ran: no new compile)
    pred = inference.predict_image(run["model"], run["variables"], photos["a"], BOX_A,
                                   body=run["body"], config=run["config"])
    with np.load(demo_out["dir"] / "a" / "params.npz") as z:
        np.testing.assert_allclose(pred.smplx_params()["body_pose"], z["body_pose"], atol=1e-5)
        np.testing.assert_allclose(pred.cam_t, z["transl"][0], rtol=1e-5)
    res = run["config"].data.img_res
    assert pred.crop.image.shape == (res, res, 3) and pred.rotmat.shape == (24, 3, 3)
    assert pred.pose.shape == (24, 3) and pred.betas.shape == (10,) and pred.cam.shape == (3,)
    assert pred.vertices.shape == (run["body"].num_vertices, 3) and pred.joints.shape == (24, 3)
    np.testing.assert_allclose(pred.crop.center, [50.0, 50.0])
    np.testing.assert_allclose(pred.crop.scale, 1.2 * 80 / 200)
    np.testing.assert_allclose(pred.vertices_cam, pred.vertices + pred.cam_t, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(smpl_jax.rotations.axis_angle_to_matrix(pred.pose)), pred.rotmat, atol=1e-5)


def test_full_image_camera():
    """crop_to_full_translation: the whole-image crop is reproduced exactly; for an off-centre
    box the photo projection differs from the crop's by the perspective terms of the module
    docstring, [(u_c - c)(k - 1) - (c - size/2)]·Z/(Z + T_z), a fraction of a pixel."""
    rng = np.random.default_rng(0)
    joints = rng.normal(0, 0.3, size=(30, 3))
    cam = np.array([0.8, 0.05, -0.1])

    def crop_pixels(crop):  # SPIN's crop projection, mapped back to photo pixels
        t = np.asarray(cam_lib.weak_perspective_to_translation(cam))
        xn = np.asarray(cam_lib.perspective_projection_normalized(joints, t))
        return inference.augment.apply_affine(
            inference.augment.invert_affine(crop.affine), (xn + 1) * 224 / 2)

    def full_pixels(crop, f):
        t = inference.crop_to_full_translation(cam, crop.center, crop.side, crop.image_size, f)
        p = joints + t
        h, w = crop.image_size
        return f * p[:, :2] / p[:, 2:] + np.array([w, h]) / 2, t

    square = np.zeros((300, 300, 3), np.uint8)
    whole = inference.make_crop(square, None, 224)
    f = inference.default_focal_length((300, 300))
    assert f == pytest.approx(5000 * 300 / 224)
    np.testing.assert_allclose(full_pixels(whole, f)[0], crop_pixels(whole), atol=1e-6)
    photo = np.zeros((400, 600, 3), np.uint8)
    for box, given in (([400, 50, 500, 250], None), ([20, 300, 80, 390], 1500.0)):
        crop = inference.make_crop(photo, box, 224)
        f = inference.default_focal_length((400, 600)) if given is None else given
        full, t = full_pixels(crop, f)
        ref = crop_pixels(crop)
        k = f / (5000 * crop.side / 224)  # F over the crop's own focal length in photo pixels
        z = joints[:, 2:]
        predicted = ((ref - crop.center) * (k - 1) - (crop.center - [300, 200])) * z / (z + t[2])
        np.testing.assert_allclose(full - ref, predicted, atol=1e-5)  # float32 projection
        if given is None:  # the default focal length: sub-pixel to a pixel
            assert np.abs(full - ref).max() < 1.0


def test_make_crop_is_the_training_crop():
    """make_crop of a box equals the pipeline's evaluation crop at SPIN's centre and scale."""
    photo = _photo(3, [BOX_A])
    crop = inference.make_crop(photo, BOX_A, 64)  # 96-px crop side: no reduction
    ref = inference.augment.crop_image(
        photo, inference.augment.crop_transform([50, 50], 1.2 * 80 / 200, 64), 64)
    np.testing.assert_array_equal(crop.image, ref)
    # 8x larger: box-filtered by 8 before the crop, which then equals the small photo's crop
    # (the reduction undoes the nearest-neighbour enlargement exactly)
    big = np.kron(photo, np.ones((8, 8, 1), np.uint8))
    small = inference.make_crop(big, np.asarray(BOX_A) * 8, 64)
    np.testing.assert_array_equal(small.image, crop.image)
    np.testing.assert_allclose(small.center, crop.center * 8)
    with pytest.raises(cli.InputError, match="lies outside the 128x96 image"):
        inference.make_crop(photo, [200, 10, 260, 50], 32)
    with pytest.raises(cli.InputError, match="is empty"):
        inference.make_crop(photo, [50, 10, 40, 50], 32)
    with pytest.raises(cli.InputError, match=r"\(H, W, 3\) uint8"):
        inference.make_crop(photo.astype(np.float32), None, 32)


def test_boxes_files(tmp_path):
    txt = tmp_path / "boxes.txt"
    txt.write_text("# file x0 y0 x1 y1\nimg one.jpg 1 2 30 40\n\nx/two.png 0 0 5 5  # comment\n"
                   "two.png 1 1 6 6\n")
    b = demo.parse_boxes(str(txt))
    np.testing.assert_array_equal(b.lookup("/data/img one.jpg"), [[1, 2, 30, 40]])
    np.testing.assert_array_equal(b.lookup("two.png"), [[0, 0, 5, 5], [1, 1, 6, 6]])
    with pytest.raises(cli.InputError, match="no box for three.png in boxes.txt"):
        b.lookup("three.png")
    txt.write_text("a.jpg 1 2 3\n")
    with pytest.raises(cli.InputError, match="boxes.txt:1: expected"):
        demo.parse_boxes(str(txt))
    js = tmp_path / "list.json"  # a plain list: image_id matched to COCO-style numbered names
    js.write_text(json.dumps([{"image_id": 139, "bbox": [1, 2, 3, 4]},
                              {"file_name": "a/b.jpg", "bbox": [0, 0, 2, 2]}]))
    b = demo.parse_boxes(str(js))
    np.testing.assert_array_equal(b.lookup("000000000139.jpg"), [[1, 2, 4, 6]])
    np.testing.assert_array_equal(b.lookup("b.jpg"), [[0, 0, 2, 2]])
    js.write_text(json.dumps([{"image_id": 1, "bbox": [1, 2]}]))
    with pytest.raises(cli.InputError, match=r"entry 0: 'bbox' must be \[x, y, width, height\]"):
        demo.parse_boxes(str(js))
    js.write_text("{not json")
    with pytest.raises(cli.InputError, match="not valid JSON"):
        demo.parse_boxes(str(js))
    assert demo.output_names(["d/a.jpg", "e/a.png", "f/a.png"]) == ["a", "a_png", "a_2"]


def test_demo_bad_invocations(run, photos, tmp_path, capsys):
    code, out, err = _run_cli(["--help"], capsys)
    assert code == 0 and "--images" in out and "--boxes" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    base = ["--out", str(tmp_path / "o"), "--no_progress"]
    code, _, err = _run_cli(["--images", str(empty), "--workdir", run["workdir"]] + base, capsys)
    assert code == 1 and err.strip().startswith("error: no images") and len(err.splitlines()) == 1
    code, _, err = _run_cli(["--images", str(photos["dir"]), "--workdir",
                             str(tmp_path / "missing")] + base, capsys)
    assert code == 1 and "training workdir" in err and "does not exist" in err
    assert len(err.strip().splitlines()) == 1
    nockpt = tmp_path / "nockpt"
    nockpt.mkdir()
    (nockpt / "config.json").write_text(run["config"].to_json_best_effort())
    code, _, err = _run_cli(["--images", str(photos["dir"]), "--workdir", str(nockpt)] + base,
                            capsys)
    assert code == 1 and "no checkpoint" in err and len(err.strip().splitlines()) == 1
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, a=np.zeros(3))
    code, _, err = _run_cli(["--images", str(photos["dir"]), "--weights", str(wrong)] + base,
                            capsys)
    assert code == 1 and "not converted SPIN weights" in err
    notnpz = tmp_path / "weights.npz"
    notnpz.write_text("hello")
    code, _, err = _run_cli(["--images", str(photos["dir"]), "--weights", str(notnpz)] + base,
                            capsys)
    assert code == 1 and "is not an .npz file" in err
    # Only bad images: each is reported, then one error line and status 1.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"garbage")
    Image.fromarray(photos["a"]).save(bad / "outside.png")
    code, out, err = _run_cli(["--images", str(bad), "--workdir", run["workdir"], "--boxes",
                               str(photos["boxes"])] + base, capsys)
    assert code == 1 and err.strip() == "error: no image was processed"
    assert sum(line.startswith("skipped") for line in out.splitlines()) == 2


def test_load_model_errors(run, tmp_path):
    loaded = inference.load_model(workdir=run["workdir"])
    assert loaded.model == run["model"] and loaded.config.data.img_res == 32
    np.testing.assert_array_equal(
        jax.tree.leaves(loaded.variables)[0], jax.tree.leaves(run["variables"])[0])
    other = tiny_config()
    other.model.regressor_hidden = 48
    with pytest.raises(cli.InputError, match="do not fit this config's model: params/regressor"):
        inference.load_model(workdir=run["workdir"], config=other)
    with pytest.raises(cli.InputError, match="either a training workdir or converted weights"):
        inference.load_model()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        inference.load_model(workdir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="weights file"):
        inference.load_model(weights=str(tmp_path / "none.npz"))
