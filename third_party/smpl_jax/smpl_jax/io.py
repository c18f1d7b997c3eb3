"""Reading SMPL-layout model files into a :class:`~smpl_jax.BodyModel`.

Formats:

* official SMPL ``.pkl`` files (``basicmodel_*`` / ``SMPL_{NEUTRAL,MALE,FEMALE}.pkl``): pickles
  from Python 2 holding chumpy arrays and a scipy.sparse J_regressor, often with module paths that
  current libraries no longer have (``scipy.sparse.csc``, ``numpy.core``). They are read with a
  restricted unpickler that needs neither chumpy nor old scipy: chumpy arrays become numpy
  arrays, sparse matrices are rebuilt from their stored index arrays, and any other class in the
  file is refused (a pickle can otherwise run arbitrary code);
* ``.npz`` archives with the same keys (smplx-style); object members are read with the same
  restricted unpickler;
* the names ``'default'`` and ``'default-small'``: the openly licensed default body shipped as
  package data (``smpl_jax/data/default.npz``, ``default-small.npz``).

Keys (V vertices, J = 24 joints, F faces, NB shape coefficients):

=====================  ======================  =====================================================
key                    shape                   notes
=====================  ======================  =====================================================
v_template             (V, 3)                  metres
shapedirs              (V, 3, NB)              NB >= num_betas
posedirs               (V, 3, 207)             optional; absent or all zero -> no pose correctives
J_regressor            (24, V)                 dense or scipy.sparse
weights                (V, 24)
kintree_table          (2, 24)                 row 0 = parents; parents[0] may be 2**32 - 1 or -1
f                      (F, 3)                  vertex ids
J_regressor_extra      (9, V)                  optional (SPIN's J_regressor_extra)
J_regressor_h36m       (17, V)                 optional (SPIN's J_regressor_h36m)
vertex_joint_ids       (21,)                   optional; 6890-vertex files default to the SMPL ids
=====================  ======================  =====================================================
"""
from __future__ import annotations

import contextlib
import importlib.resources
import io as _io
import os
import pickle
import zipfile
from typing import Any, Mapping, Optional

import jax.numpy as jnp
import numpy as np

from smpl_jax import default_body
from smpl_jax import joint_sets as _js
from smpl_jax.body_model import BodyModel, make_joint_regressor

PACKAGE_MODELS = default_body.NAMES
EXTENSIONS = (".pkl", ".npz")
REQUIRED_KEYS = ("v_template", "shapedirs", "J_regressor", "weights", "kintree_table", "f")


class ModelFileError(ValueError):
    """A model file that is readable but not an SMPL-layout body model."""


# ---------------------------------------------------------------------------------------------
# Restricted unpickling


class _ChumpyArray:
    """Stand-in for chumpy objects: keeps the pickled attribute dict, converts to numpy."""

    _chumpy_class = "chumpy.ch.Ch"

    def __setstate__(self, state):
        if isinstance(state, tuple):  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.__dict__.update(state)

    def to_numpy(self) -> np.ndarray:
        d = self.__dict__
        name = self._chumpy_class.rsplit(".", 1)[-1]
        if name == "Select" and "a" in d and "idxs" in d:
            out = _to_numpy(d["a"]).ravel()[np.asarray(d["idxs"])]
            shape = d.get("preferred_shape")
            return out.reshape(shape) if shape is not None else out
        if name == "reshape" and "a" in d and "newshape" in d:
            return _to_numpy(d["a"]).reshape(d["newshape"])
        if name == "transpose" and "a" in d:
            return np.transpose(_to_numpy(d["a"]), d.get("axes"))
        if "x" in d:
            return _to_numpy(d["x"])
        raise ModelFileError(f"cannot convert chumpy object {self._chumpy_class} "
                             f"(attributes {sorted(d)}) to an array")

    def __array__(self, dtype=None, copy=None):
        out = self.to_numpy()
        return out if dtype is None else out.astype(dtype)


class _SparseMatrix:
    """Stand-in for scipy.sparse csc/csr/coo matrices (any scipy version's pickle)."""

    _format = "csc"

    def __setstate__(self, state):
        if isinstance(state, tuple):
            state = {**(state[0] or {}), **(state[1] or {})}
        self.__dict__.update(state)

    def toarray(self) -> np.ndarray:
        d = self.__dict__
        shape = tuple(int(s) for s in (d.get("_shape") or d.get("shape")))
        data = np.asarray(d["data"], dtype=np.float64)
        out = np.zeros(shape, dtype=np.float64)
        fmt = d.get("format", self._format)
        if isinstance(fmt, bytes):
            fmt = fmt.decode()
        if fmt in ("csc", "csr"):
            indices = np.asarray(d["indices"], dtype=np.int64)
            indptr = np.asarray(d["indptr"], dtype=np.int64)
            major = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
            rows, cols = (indices, major) if fmt == "csc" else (major, indices)
        elif fmt == "coo":
            if "coords" in d:
                rows, cols = (np.asarray(c, dtype=np.int64) for c in d["coords"])
            else:
                rows, cols = np.asarray(d["row"], np.int64), np.asarray(d["col"], np.int64)
        else:
            raise ModelFileError(f"unsupported sparse matrix format {fmt!r}")
        np.add.at(out, (rows, cols), data)
        return out


_NUMPY_MODULES = ("numpy", "numpy.core.multiarray", "numpy._core.multiarray", "numpy.core",
                  "numpy._core", "numpy.core.numeric", "numpy._core.numeric", "numpy.dtypes")
_NUMPY_NAMES = {"_reconstruct", "scalar", "ndarray", "dtype", "_frombuffer"}
_BUILTINS = {"object", "set", "frozenset", "slice", "complex", "list", "dict", "tuple", "str",
             "bytes", "bytearray", "int", "float", "bool", "range"}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, sparse matrices and chumpy arrays; refuses everything else."""

    def find_class(self, module, name):
        if module == "chumpy" or module.startswith("chumpy."):
            return type(name, (_ChumpyArray,), {"_chumpy_class": f"{module}.{name}"})
        if module == "scipy.sparse" or module.startswith("scipy.sparse."):
            for fmt in ("csc", "csr", "coo"):
                if name in (f"{fmt}_matrix", f"{fmt}_array"):
                    return type(name, (_SparseMatrix,), {"_format": fmt})
        if module in _NUMPY_MODULES and (name in _NUMPY_NAMES or name.endswith("DType")):
            if module.startswith("numpy.core"):
                module = "numpy._core" + module[len("numpy.core"):]
            return super().find_class(module, name)
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return super().find_class("copyreg", name)
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            return super().find_class("builtins", name)
        if module == "_codecs" and name == "encode":  # bytes in protocol-2 pickles from Python 3
            return super().find_class(module, name)
        if module == "collections" and name == "OrderedDict":
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: an SMPL model file holds only numpy arrays, "
            "scipy.sparse matrices and chumpy arrays")


def _to_numpy(value) -> Any:
    """Resolve stand-ins (chumpy, sparse) and lists to numpy arrays; leave other values alone."""
    if isinstance(value, _ChumpyArray):
        return value.to_numpy()
    if isinstance(value, _SparseMatrix):
        return value.toarray()
    if isinstance(value, np.ndarray) and value.dtype == object and value.shape == ():
        return _to_numpy(value.item())
    if hasattr(value, "toarray") and "scipy.sparse" in type(value).__module__:
        return np.asarray(value.toarray())
    return value


def _read_pkl(path: str) -> dict:
    with open(path, "rb") as f:
        data = _RestrictedUnpickler(f, encoding="latin1").load()
    if not isinstance(data, Mapping):
        raise ModelFileError(f"{path}: expected a pickled dict of arrays, got "
                             f"{type(data).__name__}")
    return {str(k): v for k, v in data.items()}


def _read_npz(path: str) -> dict:
    out = {}
    with zipfile.ZipFile(path) as zf:
        for member in zf.namelist():
            if not member.endswith(".npy"):
                continue
            key = member[:-4]
            with zf.open(member) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    _, _, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    _, _, dtype = np.lib.format.read_array_header_2_0(f)
                if dtype.hasobject:
                    out[key] = _RestrictedUnpickler(f, encoding="latin1").load()
                    continue
            with zf.open(member) as f:
                out[key] = np.lib.format.read_array(_io.BytesIO(f.read()), allow_pickle=False)
    return out


def read_model_file(path) -> dict:
    """Raw contents of a ``.pkl`` or ``.npz`` model file as a dict (chumpy and sparse resolved).

    Raises FileNotFoundError for a missing file and ValueError for an unknown extension or an
    unreadable file; does not check the layout (see :func:`from_arrays`).
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in EXTENSIONS:
        raise ValueError(f"{path}: unknown model file extension {ext or '(none)'!r}; expected "
                         f"one of {', '.join(EXTENSIONS)} or a name in {list(PACKAGE_MODELS)}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"SMPL model file not found: {path}")
    try:
        raw = _read_pkl(path) if ext == ".pkl" else _read_npz(path)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, TypeError,
            AttributeError, KeyError) as e:
        raise ModelFileError(f"{path}: cannot read as an SMPL model {ext} file: {e}") from e
    return {k: _to_numpy(v) for k, v in raw.items()}


# ---------------------------------------------------------------------------------------------
# Validation and model building


def _array(arrays, key, source, ndim, dtype=np.float64) -> np.ndarray:
    try:
        a = np.asarray(arrays[key], dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{source}: key {key!r} is not a numeric array ({e})") from e
    if a.ndim != ndim:
        raise ModelFileError(f"{source}: {key!r} must be a {ndim}-d array, got shape {a.shape}")
    if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
        raise ModelFileError(f"{source}: {key!r} contains NaN or inf")
    return a


def _expect_shape(a, shape, key, source, what=""):
    if a.shape != shape:
        raise ModelFileError(f"{source}: {key!r} must have shape {shape}{what}, got {a.shape}")


def from_arrays(arrays: Mapping[str, Any], num_betas: Optional[int] = 10, *,
                source: str = "<arrays>", dtype=np.float32) -> BodyModel:
    """Validate SMPL-layout arrays (the file keys above) and build a :class:`BodyModel`.

    Args:
      arrays: mapping with the keys of an SMPL model file (extra keys are ignored).
      num_betas: how many shape coefficients to keep (None: all in the file).
      source: name used in error messages (the file path).
      dtype: floating dtype of the model arrays.
    """
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise ModelFileError(f"{source}: missing key(s) {missing}; an SMPL model needs "
                             f"{list(REQUIRED_KEYS)} (and optionally 'posedirs')")
    v_template = _array(arrays, "v_template", source, 2)
    nv = v_template.shape[0]
    _expect_shape(v_template, (nv, 3), "v_template", source, " = (V, 3)")
    kintree = _array(arrays, "kintree_table", source, 2, dtype=np.int64)
    nj = len(_js.SMPL_PARENTS)
    _expect_shape(kintree, (2, nj), "kintree_table", source, " (row 0: parents of the 24 joints)")
    parents = [int(p) for p in kintree[0]]
    if parents[0] in (2**32 - 1, 2**64 - 1, -1):
        parents[0] = -1
    if parents[0] != -1 or any(not 0 <= p < i for i, p in enumerate(parents) if i > 0):
        raise ModelFileError(f"{source}: kintree_table row 0 must hold parents with "
                             f"parents[0] = -1 (or 2**32 - 1) and 0 <= parents[i] < i, "
                             f"got {parents}")
    shapedirs = _array(arrays, "shapedirs", source, 3)
    if shapedirs.shape[:2] != (nv, 3):
        raise ModelFileError(f"{source}: 'shapedirs' must have shape (V, 3, NB) = ({nv}, 3, NB), "
                             f"got {shapedirs.shape}")
    if num_betas is None:
        num_betas = shapedirs.shape[2]
    if not 0 <= num_betas <= shapedirs.shape[2]:
        raise ValueError(f"{source}: num_betas={num_betas} requested but the file holds "
                         f"{shapedirs.shape[2]} shape coefficients (shapedirs {shapedirs.shape})")
    shapedirs = shapedirs[:, :, :num_betas]
    j_regressor = _array(arrays, "J_regressor", source, 2)
    _expect_shape(j_regressor, (nj, nv), "J_regressor", source, " = (24 joints, V vertices)")
    weights = _array(arrays, "weights", source, 2)
    _expect_shape(weights, (nv, nj), "weights", source, " = (V vertices, 24 joints)")
    faces = _array(arrays, "f", source, 2, dtype=np.int64)
    if faces.shape[1:] != (3,):
        raise ModelFileError(f"{source}: 'f' must have shape (F, 3), got {faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= nv):
        raise ModelFileError(f"{source}: 'f' has vertex ids outside [0, {nv})")

    posedirs = None
    if arrays.get("posedirs") is not None:
        pd = _array(arrays, "posedirs", source, 3)
        _expect_shape(pd, (nv, 3, 9 * (nj - 1)), "posedirs", source, " = (V, 3, 207)")
        if np.any(pd != 0):
            posedirs = pd.reshape(nv * 3, -1).T  # (207, V*3)

    regressors = {}
    if arrays.get("vertex_joint_ids") is not None:
        ids = _array(arrays, "vertex_joint_ids", source, 1, dtype=np.int64)
        _expect_shape(ids, (21,), "vertex_joint_ids", source)
        if ids.min() < 0 or ids.max() >= nv:
            raise ModelFileError(f"{source}: 'vertex_joint_ids' has ids outside [0, {nv})")
    elif nv == 6890:
        ids = np.asarray(_js.SMPL_VERTEX_JOINT_IDS)
    else:
        ids = None
    parts = (v_template, shapedirs, posedirs, weights)
    if ids is not None:
        rows = np.zeros((21, nv))
        rows[np.arange(21), ids] = 1.0
        regressors["vertex21"] = make_joint_regressor(rows, *parts, dtype=dtype)
    for key, file_key in (("extra9", "J_regressor_extra"), ("h36m17", "J_regressor_h36m")):
        if arrays.get(file_key) is not None:
            rows = _array(arrays, file_key, source, 2)
            _expect_shape(rows, (_js.REGRESSOR_KEYS[key][0], nv), file_key, source)
            regressors[key] = make_joint_regressor(rows, *parts, dtype=dtype)

    return BodyModel(
        v_template=jnp.asarray(v_template, dtype),
        shapedirs=jnp.asarray(shapedirs, dtype),
        posedirs=None if posedirs is None else jnp.asarray(posedirs, dtype),
        J_regressor=jnp.asarray(j_regressor, dtype),
        weights=jnp.asarray(weights, dtype),
        faces=jnp.asarray(faces, jnp.int32),
        joint_template=jnp.asarray(j_regressor @ v_template, dtype),
        joint_shapedirs=jnp.asarray(np.einsum("jv,vcn->jcn", j_regressor, shapedirs), dtype),
        regressors=regressors,
        parents=tuple(parents),
    )


@contextlib.contextmanager
def package_file(name: str):
    """Context manager giving the filesystem path of a packaged body ('default', 'default-small')."""
    with importlib.resources.as_file(default_body.packaged_path(name)) as p:
        yield str(p)


def _load_npy(path, key) -> np.ndarray:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{key} file not found: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        raise ModelFileError(f"{path}: cannot read {key} as a .npy array: {e}") from e


def load(path_or_name, num_betas: Optional[int] = 10, *, j_regressor_extra=None,
         j_regressor_h36m=None, dtype=np.float32) -> BodyModel:
    """Load an SMPL-layout body model.

    Args:
      path_or_name: ``'default'``, ``'default-small'`` (package data), or a path to an SMPL
        ``.pkl`` or ``.npz`` file.
      num_betas: number of shape coefficients to keep (<= what the file holds; None: all).
      j_regressor_extra: optional path to SPIN's ``J_regressor_extra.npy`` (9, V); overrides a
        ``J_regressor_extra`` key in the file. Enables the 'extra9' and 'spin49' joint sets.
      j_regressor_h36m: optional path to ``J_regressor_h36m.npy`` (17, V); overrides a
        ``J_regressor_h36m`` key. Enables 'h36m17' and 'lsp14'.
      dtype: floating dtype of the model arrays (float32).

    Raises:
      FileNotFoundError: missing file. ValueError: unknown name or extension, missing keys,
      wrong shapes, too many betas requested (messages name the file and what was expected).
    """
    if isinstance(path_or_name, str) and path_or_name in PACKAGE_MODELS:
        with package_file(path_or_name) as path:
            arrays = read_model_file(path)
            source = f"{path_or_name!r} ({path})"
    else:
        path = os.fspath(path_or_name)
        ext = os.path.splitext(path)[1].lower()
        if not ext and os.sep not in path and not os.path.exists(path):
            raise ValueError(f"unknown body model name {path!r}; valid names: "
                             f"{', '.join(repr(n) for n in PACKAGE_MODELS)}, or a path to a "
                             f"{' / '.join(EXTENSIONS)} SMPL model file")
        arrays = read_model_file(path)
        source = path
    arrays = dict(arrays)
    if j_regressor_extra is not None:
        arrays["J_regressor_extra"] = _load_npy(j_regressor_extra, "J_regressor_extra")
    if j_regressor_h36m is not None:
        arrays["J_regressor_h36m"] = _load_npy(j_regressor_h36m, "J_regressor_h36m")
    return from_arrays(arrays, num_betas, source=source, dtype=dtype)
