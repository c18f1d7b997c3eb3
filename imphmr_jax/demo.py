"""ImpHMR on your own images: `python -m imphmr_jax.demo --images FILE|DIR --out DIR
(--workdir TRAINED_RUN | --weights converted.npz [--config CONFIG]) [--boxes FILE]`.

For every image, DIR/<stem>/ gets:
  overlay.png       the predicted meshes drawn over the whole photo with its full-perspective
                    camera (`inference` module docstring), at a readable size (longer side 512 to
                    1024 px), person boxes outlined
  imagination.png   the multi-view imagination panel (paper Fig. 7: mesh and silhouette predicted
                    at φ = 0°, 90°, 180°, 270°) per person, for the variants that render views
  params.json       per person: smplx's parameters (global_orient (3,), body_pose (69,), betas,
                    transl (3,); axis-angle radians, camera frame x right / y down / z forward,
                    metres) and the camera (crop camera [s, tx, ty], focal length, intrinsics,
                    box, crop centre and scale)
  params.npz        the same arrays with a leading person axis (smpl_jax.export.save_smplx_params)
  mesh.obj          every person's mesh in the camera frame (person k's vertices are rows
                    k·V..(k+1)·V): smpl_jax.forward(body, pose, betas, transl) of the parameters
and DIR/summary.png + DIR/index.html show all overlays with their names (and the skipped images).

Boxes (`--boxes`; without it each image is one crop of the whole image):
  * COCO-style JSON: a list of {"file_name" | "image_id", "bbox": [x, y, w, h]}, or a COCO dict
    with "images" ({"id", "file_name"}) and "annotations" ({"image_id", "bbox"}); crowd
    annotations are skipped, and when "categories" names a "person" only its annotations are
    used. An image_id without an images table matches the file name's stem (123 or 000000000123).
  * Text: one box per line, `FILE x0 y0 x1 y1` (pixels; FILE is matched by its base name);
    blank lines and '#' comments are skipped.
Several boxes of one image are several people.

Bad inputs (an unreadable image, a box outside its image, an image without a box in the boxes
file) are reported in one line each and skipped; the exit status is 1 only when no image was
processed (or the model, the boxes file or the image folder cannot be used at all).
"""
from __future__ import annotations

import argparse
import html
import json
import os
from typing import Optional, Sequence

import numpy as np

from imphmr_jax import cli

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SUMMARY_TILE = 320  # longer side of each overlay on the contact sheet


# ------------------------------------------------------------------------------------- inputs
def list_images(path: str) -> list[str]:
    """One image file, or the image files of a folder (by extension, sorted by name)."""
    path = cli.expand_path(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"--images {path} does not exist")
    if os.path.isfile(path):
        return [path]
    files = sorted(f for f in os.listdir(path)
                   if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, f)))
    if not files:
        raise cli.InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {path}")
    return [os.path.join(path, f) for f in files]


def read_image(path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB, EXIF orientation applied; an InputError for an unreadable file."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:  # DecompressionBombError: Pillow's refusal of absurdly large images
        bomb = (Image.DecompressionBombError,)
    except AttributeError:  # pragma: no cover - old Pillow
        bomb = ()
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) + bomb as e:
        raise cli.InputError(f"cannot read {os.path.basename(path)} as an image "
                             f"({type(e).__name__}: {cli.error_message(e)})") from None


class Boxes:
    """Person boxes [x0, y0, x1, y1] (pixels) by image: `lookup(path)` -> (P, 4) or raises."""

    def __init__(self, source: str):
        self.source = source
        self.by_name: dict[str, list] = {}
        self.by_id: dict[str, list] = {}

    def add(self, key: dict, box) -> None:
        table = self.by_name if "name" in key else self.by_id
        table.setdefault(key.get("name", key.get("id")), []).append(list(map(float, box)))

    def lookup(self, path: str) -> np.ndarray:
        name = os.path.basename(path)
        stem = os.path.splitext(name)[0]
        found = self.by_name.get(name) or self.by_name.get(stem)
        if found is None:
            ids = [stem] + ([str(int(stem))] if stem.isdigit() else [])
            found = next((self.by_id[i] for i in ids if i in self.by_id), None)
        if not found:
            raise cli.InputError(f"no box for {name} in {os.path.basename(self.source)}")
        return np.asarray(found, np.float64)


def _coco_box(entry, where: str):
    box = entry.get("bbox") if isinstance(entry, dict) else None
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError):
        raise cli.InputError(f"{where}: 'bbox' must be [x, y, width, height], got {box!r}") \
            from None
    return [x, y, x + w, y + h]


def parse_boxes(path: str) -> Boxes:
    """Read a boxes file (COCO-style JSON or `FILE x0 y0 x1 y1` lines; see the module doc)."""
    path = cli.expand_path(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--boxes {path} does not exist")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out = Boxes(path)
    base = os.path.basename(path)
    if path.lower().endswith(".json") or text.lstrip()[:1] in ("[", "{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise cli.InputError(f"{base} is not valid JSON (line {e.lineno}: {e.msg})") from None
        if isinstance(data, dict):
            if "annotations" not in data:
                raise cli.InputError(f"{base}: a COCO dict needs 'annotations' (and 'images')")
            names = {}
            for k, im in enumerate(data.get("images") or []):
                if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
                    raise cli.InputError(f"{base}: images[{k}] needs 'id' and 'file_name'")
                names[str(im["id"])] = os.path.basename(str(im["file_name"]))
            person = [c.get("id") for c in data.get("categories") or []
                      if isinstance(c, dict) and c.get("name") == "person"]
            anns = data["annotations"]
        elif isinstance(data, list):
            names, person, anns = {}, [], data
        else:
            raise cli.InputError(f"{base}: expected a list of boxes or a COCO dict")
        for k, ann in enumerate(anns):
            where = f"{base}: entry {k}"
            if not isinstance(ann, dict):
                raise cli.InputError(f"{where} is not an object")
            if ann.get("iscrowd"):
                continue
            if person and "category_id" in ann and ann["category_id"] not in person:
                continue
            box = _coco_box(ann, where)
            if "file_name" in ann:
                out.add({"name": os.path.basename(str(ann["file_name"]))}, box)
            elif "image_id" in ann:
                image_id = str(ann["image_id"])
                if image_id in names:
                    out.add({"name": names[image_id]}, box)
                elif names:
                    raise cli.InputError(f"{where}: image_id {image_id} is not in 'images'")
                else:
                    out.add({"id": image_id}, box)
            else:
                raise cli.InputError(f"{where} needs 'file_name' or 'image_id'")
    else:
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.rsplit(None, 4)
            try:
                if len(parts) != 5:
                    raise ValueError
                box = [float(v) for v in parts[1:]]
            except ValueError:
                raise cli.InputError(f"{base}:{lineno}: expected 'FILE x0 y0 x1 y1', got "
                                     f"{line[:80]!r}") from None
            out.add({"name": os.path.basename(parts[0])}, box)
    if not out.by_name and not out.by_id:
        raise cli.InputError(f"{base} holds no boxes")
    return out


def output_names(paths: Sequence[str]) -> list[str]:
    """A folder name per image: its stem, made unique ('a.jpg', 'a.png' -> 'a', 'a_png')."""
    used, out = set(), []
    for p in paths:
        stem, ext = os.path.splitext(os.path.basename(p))
        name = stem
        if name in used:
            name = f"{stem}_{ext.lstrip('.').lower()}"
        k = 2
        while name in used:
            name, k = f"{stem}_{k}", k + 1
        used.add(name)
        out.append(name)
    return out


# ------------------------------------------------------------------------------------- outputs
def write_params(out_dir: str, image_path: str, preds, body_model: str) -> dict:
    """params.json and params.npz of one image's people (see the module doc)."""
    from smpl_jax.export import save_smplx_params

    pose = np.stack([p.pose for p in preds])
    betas = np.stack([p.betas for p in preds])
    transl = np.stack([p.cam_t for p in preds])
    first = preds[0]
    extra = {"cam_crop": np.stack([p.cam for p in preds]).astype(np.float32),
             "box": np.stack([p.crop.box for p in preds]),
             "center": np.stack([p.crop.center for p in preds]),
             "scale": np.array([p.crop.scale for p in preds]),
             "focal_length": np.float64(first.focal_length),
             "intrinsics": first.intrinsics, "image_size": np.asarray(first.image_size)}
    params = save_smplx_params(os.path.join(out_dir, "params.npz"), pose, betas, transl,
                               extra=extra)
    people = []
    for k, p in enumerate(preds):
        person = {key: params[key][k].tolist() for key in params}
        person.update({"box": p.crop.box.tolist(), "center": p.crop.center.tolist(),
                       "scale": float(p.crop.scale), "cam_crop": p.cam.tolist()})
        people.append(person)
    doc = {
        "image": os.path.abspath(image_path),
        "image_size": list(first.image_size),
        "focal_length": float(first.focal_length),
        "intrinsics": first.intrinsics.tolist(),
        "frame": "camera: x right, y down, z forward; metres; axis-angle in radians",
        "layout": "smplx.SMPL(...)(global_orient, body_pose, betas, transl) gives the mesh in "
                  "the camera frame",
        "body_model": body_model,
        "people": people,
    }
    with open(os.path.join(out_dir, "params.json"), "w") as f:
        json.dump(doc, f, indent=2)
    return params


def write_imagination(path: str, predictor, preds, body, faces) -> Optional[str]:
    """The imagination panel of every person, stacked top to bottom, as one PNG."""
    import tempfile

    from imphmr_jax import figures
    from imphmr_jax.inference import normalize_crops
    from imphmr_jax.render.shading import write_png
    from PIL import Image

    phis = np.deg2rad(np.asarray(figures.IMAGINATION_PHIS_DEG, np.float32))[None]
    panels = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, p in enumerate(preds):
            out = predictor.views(normalize_crops(p.crop.image[None]), phis)
            if "silhouette_logits" not in out:
                return None
            view = figures.imagination_view_outputs(out, phis, body, 0)
            panel = os.path.join(tmp, f"{k}.png")
            # The meshes are rendered at the input's size: upsample small crops (64 -> 192 px).
            side = figures.readable_tile(p.crop.image.shape[0])
            figures.imagination_panel(figures.resize_image(p.crop.image, side, side), view,
                                      faces, panel)
            panels.append(np.asarray(Image.open(panel).convert("RGB")))
    width = max(p.shape[1] for p in panels)
    sheet = np.full((sum(p.shape[0] for p in panels), width, 3), 255, np.uint8)
    y = 0
    for p in panels:
        sheet[y:y + p.shape[0], :p.shape[1]] = p
        y += p.shape[0]
    write_png(path, sheet)
    return path


def process_image(image_path: str, out_dir: str, predictor, loaded, boxes: Optional[Boxes], *,
                  focal_length: Optional[float], imagination: bool) -> dict:
    """All outputs of one image; returns {'name', 'people', 'overlay'} (the overlay array)."""
    from smpl_jax.export import write_obj

    from imphmr_jax import figures
    from imphmr_jax.render.shading import write_png

    image = read_image(image_path)
    box = boxes.lookup(image_path) if boxes is not None else None
    preds = predictor.predict(image, box, focal_length=focal_length)
    for k, p in enumerate(preds):
        if not (np.all(np.isfinite(p.vertices_cam)) and np.all(np.isfinite(p.pose))):
            raise cli.InputError(f"the model's prediction for person {k} is not finite "
                                 "(NaN or inf): are the weights and the config a match?")
    faces = np.asarray(loaded.body.faces)
    os.makedirs(out_dir, exist_ok=True)
    overlay = figures.full_image_overlay(
        image, np.stack([p.vertices_cam for p in preds]), faces, preds[0].intrinsics,
        boxes=None if box is None else np.stack([p.crop.box for p in preds]))
    write_png(os.path.join(out_dir, "overlay.png"), overlay)
    write_params(out_dir, image_path, preds, str(loaded.config.body.model))
    nv = preds[0].vertices.shape[0]
    write_obj(os.path.join(out_dir, "mesh.obj"), np.concatenate([p.vertices_cam for p in preds]),
              np.concatenate([faces + k * nv for k in range(len(preds))]))
    if imagination:
        write_imagination(os.path.join(out_dir, "imagination.png"), predictor, preds,
                          loaded.body, faces)
    return {"people": len(preds), "overlay": overlay}


def write_summary(out_root: str, done: list, skipped: list) -> None:
    """summary.png (the overlays, labelled) and index.html (overlays, links, skipped images)."""
    from imphmr_jax import figures

    if done:
        tiles, labels = [], []
        for item in done:
            img = item["overlay"]
            f = SUMMARY_TILE / max(img.shape[:2])
            tiles.append(figures.resize_image(img, max(1, round(img.shape[0] * f)),
                                              max(1, round(img.shape[1] * f))))
            n = item["people"]
            labels.append(f"{item['name']}  ({n} {'person' if n == 1 else 'people'})")
        figures.labelled_sheet(tiles, labels, os.path.join(out_root, "summary.png"),
                               ncols=min(4, len(tiles)), font_size=14)
    rows = []
    for item in done:
        name = html.escape(item["name"])
        links = " · ".join(f'<a href="{name}/{f}">{f}</a>' for f in item["files"])
        rows.append(f'<figure><a href="{name}/overlay.png"><img src="{name}/overlay.png" '
                    f'width="{SUMMARY_TILE}"></a><figcaption>{name} ({item["people"]}) '
                    f'{links}</figcaption></figure>')
    skipped_html = "".join(f"<li>{html.escape(s)}</li>" for s in skipped)
    page = ("<!doctype html><meta charset='utf-8'><title>ImpHMR demo</title>"
            "<style>figure{display:inline-block;margin:6px;vertical-align:top;"
            "font:13px sans-serif}</style>"
            f"<h1>ImpHMR demo: {len(done)} image(s)</h1>" + "".join(rows)
            + (f"<h2>Skipped</h2><ul>{skipped_html}</ul>" if skipped else ""))
    with open(os.path.join(out_root, "index.html"), "w", encoding="utf-8") as f:
        f.write(page)


# ------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m imphmr_jax.demo",
        description="Predict SMPL bodies for your own images with a trained ImpHMR run or "
                    "converted SPIN weights; writes overlays, imagination panels, smplx "
                    "parameters and meshes.")
    p.add_argument("--images", required=True, help="an image file or a folder of images")
    p.add_argument("--out", required=True, help="output folder (one sub-folder per image)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--workdir", help="a training workdir (its config.json and best checkpoint)")
    src.add_argument("--weights", help="converted SPIN weights (.npz from imphmr_jax.convert)")
    p.add_argument("--config", help="experiment config (configs/imphmr/NAME.py[:ARG] or a "
                   "config.json); with --weights the default is SPIN's architecture "
                   "(baseline.py:paper); with --workdir it replaces the run's config.json")
    p.add_argument("--checkpoint", default="best", help="with --workdir: best, latest or a step")
    p.add_argument("--boxes", help="person boxes: COCO-style JSON or 'FILE x0 y0 x1 y1' lines "
                   "(default: the whole image)")
    p.add_argument("--body", help="body model (smpl_jax.load name or SMPL file) instead of the "
                   "config's body.model")
    p.add_argument("--focal_length", type=float, default=None,
                   help="the photos' focal length in pixels (default 5000·max(H, W)/224)")
    p.add_argument("--batch_size", type=int, default=8, help="crops per compiled forward")
    p.add_argument("--no_imagination", action="store_true", help="skip the imagination panels")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from imphmr_jax import inference
    from imphmr_jax.training import startup, writer

    startup.quiet_logs()
    images = list_images(args.images)
    boxes = parse_boxes(args.boxes) if args.boxes else None
    if args.focal_length is not None and not args.focal_length > 0:
        raise cli.InputError(f"--focal_length must be > 0, got {args.focal_length}")
    loaded = inference.load_model(workdir=cli.expand_path(args.workdir),
                                  weights=cli.expand_path(args.weights),
                                  config=cli.expand_path(args.config), which=args.checkpoint,
                                  body_model=args.body)
    cfg = loaded.config
    imagination = (not args.no_imagination and cfg.model.variant != "baseline"
                   and bool(cfg.model.use_decoder))
    predictor = inference.Predictor.from_loaded(loaded, batch_size=args.batch_size)
    out_root = cli.expand_path(args.out)
    os.makedirs(out_root, exist_ok=True)
    note = ""
    if not imagination and not args.no_imagination:
        note = f", no imagination panels (variant {cfg.model.variant!r} renders no views)"
    print(f"demo: {len(images)} image(s), {loaded.source}, body {cfg.body.model}{note}",
          flush=True)
    names = output_names(images)
    done, skipped = [], []
    bar = writer.progress_bar(len(images), desc="demo", enabled=not args.no_progress)
    try:
        for path, name in zip(images, names):
            try:
                item = process_image(path, os.path.join(out_root, name), predictor, loaded,
                                     boxes, focal_length=args.focal_length,
                                     imagination=imagination)
            except (cli.UserError, ValueError, OSError) as e:
                line = f"skipped {os.path.basename(path)}: {cli.error_message(e)}"
                skipped.append(line)
                writer.console(line, bar)
            else:
                files = ["overlay.png"] + (["imagination.png"] if os.path.exists(
                    os.path.join(out_root, name, "imagination.png")) else []) + [
                    "params.json", "params.npz", "mesh.obj"]
                done.append(dict(item, name=name, files=files))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    write_summary(out_root, done, skipped)
    print(f"demo: {len(done)} of {len(images)} image(s) processed -> {out_root}"
          + (f" (summary.png, index.html); {len(skipped)} skipped" if skipped else
             " (summary.png, index.html)"), flush=True)
    if not done:
        raise cli.InputError("no image was processed")
    return 0


if __name__ == "__main__":
    cli.run(main)
