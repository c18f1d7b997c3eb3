"""Plausible SMPL body poses for the synthetic dataset, sampled host-side with numpy.

Every pose is built as intrinsic XYZ Euler angles per joint (scipy ``"XYZ"``: R = Rx @ Ry @ Rz,
angles in radians) in SMPL's frame (rest pose a T-pose, y up, facing +z, body's left on +x), clipped
to an anatomical joint-limit table, and converted to axis-angle. Families (standing, walking,
reaching, crouching, sitting, lying, articulation) give the variety an HMR training set needs
without the implausible bodies that uniform noise gives.

Sign conventions used below (checked with forward passes of the default body):
  hips    x < 0 swings the thigh forward (flexion); left z > 0 abducts (right: z < 0)
  knees   x > 0 bends (shank goes back)
  ankles  x > 0 points the toes down (plantar flexion)
  spine/neck/head  x > 0 bends forward
  shoulders  left z > 0 raises the arm, z < 0 lowers it to the side (right: mirrored, z < 0 raises);
             left y < 0 swings the T-pose arm forward (right: y > 0); with the arm lowered by z,
             x < 0 swings it forward (both sides, like the hips)
  elbows  left y < 0 flexes (forearm goes forward), right y > 0
Right-side joints mirror the left: mirroring the body across x = 0 maps an axial rotation
(wx, wy, wz) to (wx, -wy, -wz), so right Euler angles are (x, -y, -z) of the left ones.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

EULER_ORDER = "XYZ"  # intrinsic: R = Rx @ Ry @ Rz (scipy's uppercase convention)

FAMILIES = ("standing", "walking", "reaching", "crouching", "sitting", "lying", "articulation")

# Default family probabilities: upright everyday poses dominate (as in HMR training sets), with
# enough crouching/sitting/lying and free articulation to cover the rest of the pose space.
DEFAULT_WEIGHTS = {
    "standing": 0.15, "walking": 0.20, "reaching": 0.15, "crouching": 0.10,
    "sitting": 0.10, "lying": 0.10, "articulation": 0.20,
}

# SMPL joint indices.
PELVIS, L_HIP, R_HIP, SPINE1, L_KNEE, R_KNEE, SPINE2, L_ANKLE, R_ANKLE, SPINE3 = range(10)
L_FOOT, R_FOOT, NECK, L_COLLAR, R_COLLAR, HEAD, L_SHOULDER, R_SHOULDER = range(10, 18)
L_ELBOW, R_ELBOW, L_WRIST, R_WRIST, L_HAND, R_HAND = range(18, 24)
_SPINE = (SPINE1, SPINE2, SPINE3)
# (left, right) pairs; right angles are the left ones mirrored (x, -y, -z).
_PAIRS = ((L_HIP, R_HIP), (L_KNEE, R_KNEE), (L_ANKLE, R_ANKLE), (L_FOOT, R_FOOT),
          (L_COLLAR, R_COLLAR), (L_SHOULDER, R_SHOULDER), (L_ELBOW, R_ELBOW),
          (L_WRIST, R_WRIST), (L_HAND, R_HAND))
_MIRROR = np.array([1.0, -1.0, -1.0])

# Joint limits, radians, per Euler axis (x, y, z) as (lo, hi). Ranges follow the usual clinical
# ranges of motion (AAOS normal values: hip flexion ~120-125 deg, extension ~20-30, abduction ~45,
# adduction ~20-30, rotation ~35-45; knee flexion 0-140; ankle dorsiflexion ~20, plantar flexion
# ~45-50; elbow flexion 0-145; shoulder elevation up to ~180; spine and neck modest per segment),
# mapped onto SMPL's per-joint axes and trimmed where an Euler decomposition would otherwise wrap.
# Every |y| range stays below pi/2 except the elbow's, so scipy's as_euler recovers the angles
# uniquely (the elbow needs the equivalent triple (x +- pi, pi - y, z +- pi), see axis_angle_to_euler).
_LEFT_AND_CENTRE_LIMITS = {
    L_HIP: ((-2.2, 0.5), (-0.6, 0.6), (-0.45, 0.9)),       # flex fwd (x<0) to ~125 deg, abduct +z
    L_KNEE: ((0.0, 2.45), (-0.1, 0.1), (-0.1, 0.1)),      # flexion only, never hyperextends
    L_ANKLE: ((-0.4, 0.8), (-0.3, 0.3), (-0.3, 0.3)),     # dorsi (x<0) ~20 deg, plantar ~45 deg
    L_FOOT: ((-0.5, 0.3), (-0.1, 0.1), (-0.1, 0.1)),      # toe joint, mostly extension
    SPINE1: ((-0.3, 0.6), (-0.35, 0.35), (-0.3, 0.3)),    # three segments share trunk motion
    SPINE2: ((-0.3, 0.6), (-0.35, 0.35), (-0.3, 0.3)),
    SPINE3: ((-0.3, 0.6), (-0.35, 0.35), (-0.3, 0.3)),
    NECK: ((-0.5, 0.6), (-0.6, 0.6), (-0.4, 0.4)),
    HEAD: ((-0.4, 0.5), (-0.5, 0.5), (-0.3, 0.3)),
    L_COLLAR: ((-0.2, 0.2), (-0.3, 0.3), (-0.2, 0.4)),    # shrug up (+z) more than down
    L_SHOULDER: ((-1.6, 1.0), (-1.5, 0.8), (-1.45, 1.4)),  # lowered to the side at z ~ -1.3
    L_ELBOW: ((-0.5, 0.5), (-2.5, 0.0), (-0.1, 0.1)),     # flexion only (left: y<0), ~145 deg
    L_WRIST: ((-0.6, 0.6), (-0.4, 0.4), (-0.8, 0.8)),     # twist, deviation, flexion/extension
    L_HAND: ((-0.3, 0.3), (-0.3, 0.3), (-0.3, 0.3)),
}


def _build_limits() -> np.ndarray:
    lim = np.zeros((24, 3, 2))
    lim[PELVIS] = [[-np.pi, np.pi]] * 3  # global orientation: not limited
    for j, rng3 in _LEFT_AND_CENTRE_LIMITS.items():
        lim[j] = rng3
    for left, right in _PAIRS:
        lo, hi = lim[left, :, 0] * _MIRROR, lim[left, :, 1] * _MIRROR
        lim[right, :, 0], lim[right, :, 1] = np.minimum(lo, hi), np.maximum(lo, hi)
    return lim


JOINT_LIMITS = _build_limits()
"""(24, 3, 2) float64: [joint, Euler axis x/y/z, (lo, hi)] in radians; row 0 (global) is +-pi."""


# ----------------------------------------------------------------------------- conversions

def euler_to_axis_angle(euler: np.ndarray) -> np.ndarray:
    """(..., 3) intrinsic XYZ Euler angles (rad) -> (..., 3) axis-angle (rad), float64."""
    euler = np.asarray(euler, np.float64)
    flat = Rotation.from_euler(EULER_ORDER, euler.reshape(-1, 3)).as_rotvec()
    return flat.reshape(euler.shape)


def axis_angle_to_euler(aa: np.ndarray, limits: np.ndarray | None = None) -> np.ndarray:
    """(..., 3) axis-angle -> (..., 3) intrinsic XYZ Euler angles (rad).

    scipy returns y in [-pi/2, pi/2]; every rotation also has the triple (x + pi, pi - y, z + pi)
    (wrapped). With ``limits`` broadcastable to (..., 3, 2) the triple inside (or nearest to) the
    limits is returned, which is how elbow flexion beyond 90 degrees is recovered.
    """
    aa = np.asarray(aa, np.float64)
    e1 = Rotation.from_rotvec(aa.reshape(-1, 3)).as_euler(EULER_ORDER).reshape(aa.shape)
    if limits is None:
        return e1
    wrap = lambda a: (a + np.pi) % (2 * np.pi) - np.pi  # noqa: E731
    e2 = np.stack([wrap(e1[..., 0] + np.pi), wrap(np.pi - e1[..., 1]), wrap(e1[..., 2] + np.pi)], -1)
    lim = np.broadcast_to(limits, aa.shape + (2,))
    excess = lambda e: np.maximum(lim[..., 0] - e, 0) + np.maximum(e - lim[..., 1], 0)  # noqa: E731
    use2 = excess(e2).sum(-1) < excess(e1).sum(-1)
    return np.where(use2[..., None], e2, e1)


def _rot_y(angle: np.ndarray) -> Rotation:
    return Rotation.from_euler("y", np.asarray(angle)[:, None])


# ----------------------------------------------------------------------------- families
# Each family maps (rng, m) -> Euler angles (m, 24, 3) in radians for joints 1..23 (row 0 unused).
# Angles are written for the left side and centre; `_with_right` mirrors them where a family wants
# symmetric variation, otherwise right-side angles are written explicitly in left-side terms and
# mirrored by `_set_pair`.

def _u(rng, lo, hi, m):
    return rng.uniform(lo, hi, size=m)


def _set(e, j, x=None, y=None, z=None):
    for k, v in enumerate((x, y, z)):
        if v is not None:
            e[:, j, k] = v


def _set_side(e, left_joint, side, x=0.0, y=0.0, z=0.0):
    """Write angles given in LEFT-side terms for side 0 (left) or 1 (right, mirrored)."""
    j = left_joint + (1 if side else 0)  # every (left, right) pair in SMPL is (i, i + 1)
    s = _MIRROR if side else np.ones(3)
    e[:, j, 0], e[:, j, 1], e[:, j, 2] = s[0] * x, s[1] * y, s[2] * z


def _small_noise(rng, e, scale=0.05):
    # A little jitter everywhere so no two poses of a family share exact joint angles.
    e[:, 1:] += rng.normal(0.0, scale, size=e[:, 1:].shape)


def _trunk_and_head(rng, e, m, lean=(-0.05, 0.1), twist=0.1, side=0.05):
    for j in _SPINE:
        _set(e, j, _u(rng, *lean, m), _u(rng, -twist, twist, m), _u(rng, -side, side, m))
    _set(e, NECK, _u(rng, -0.2, 0.2, m), _u(rng, -0.3, 0.3, m), _u(rng, -0.15, 0.15, m))
    _set(e, HEAD, _u(rng, -0.2, 0.25, m), _u(rng, -0.3, 0.3, m), _u(rng, -0.1, 0.1, m))


def _arms_down(rng, e, m, side, elbow=(0.0, 0.6), swing=(-0.3, 0.3)):
    # Arm lowered to the side (z ~ -1.3 in left terms), swung a little in the sagittal plane (x).
    _set_side(e, L_SHOULDER, side, x=_u(rng, *swing, m), y=_u(rng, -0.2, 0.2, m),
              z=_u(rng, -1.42, -1.05, m))
    _set_side(e, L_ELBOW, side, x=_u(rng, -0.3, 0.3, m), y=-_u(rng, *elbow, m))
    _set_side(e, L_WRIST, side, x=_u(rng, -0.4, 0.4, m), z=_u(rng, -0.4, 0.4, m))


def _legs_straight(rng, e, m, side):
    _set_side(e, L_HIP, side, x=_u(rng, -0.15, 0.1, m), y=_u(rng, -0.2, 0.2, m), z=_u(rng, -0.05, 0.2, m))
    _set_side(e, L_KNEE, side, x=_u(rng, 0.0, 0.15, m))
    _set_side(e, L_ANKLE, side, x=_u(rng, -0.1, 0.15, m), z=_u(rng, -0.1, 0.1, m))


def standing(rng: np.random.Generator, m: int) -> np.ndarray:
    """Relaxed upright stance, arms hanging. Returns Euler angles (m, 24, 3), rad."""
    e = np.zeros((m, 24, 3))
    _trunk_and_head(rng, e, m)
    for side in (0, 1):
        _legs_straight(rng, e, m, side)
        _arms_down(rng, e, m, side)
    _small_noise(rng, e, 0.03)
    return e


def walking(rng: np.random.Generator, m: int) -> np.ndarray:
    """A gait cycle phase: legs in antiphase, each arm swinging with the opposite leg. (m, 24, 3)."""
    e = standing(rng, m)
    phase = _u(rng, 0.0, 2 * np.pi, m)
    stride = _u(rng, 0.25, 0.55, m)  # hip swing amplitude, rad
    for side, sign in ((0, 1.0), (1, -1.0)):
        s = sign * np.sin(phase)  # > 0 while this leg swings forward
        _set_side(e, L_HIP, side, x=-stride * s, y=_u(rng, -0.1, 0.1, m), z=_u(rng, 0.0, 0.1, m))
        # The knee bends most while the leg swings through (leading phase), little in stance.
        knee = 0.05 + _u(rng, 0.3, 0.9, m) * np.clip(np.sin(phase * sign + 0.8 * sign), 0, None) ** 2
        _set_side(e, L_KNEE, side, x=knee)
        _set_side(e, L_ANKLE, side, x=0.2 * s + _u(rng, -0.1, 0.1, m))
        # Opposite arm: forward (x < 0 with the arm lowered) while this leg is back.
        _set_side(e, L_SHOULDER, side, x=_u(rng, 0.5, 1.0, m) * stride * s, y=_u(rng, -0.1, 0.1, m),
                  z=_u(rng, -1.4, -1.1, m))
        _set_side(e, L_ELBOW, side, y=-_u(rng, 0.1, 0.7, m))
    e[:, SPINE1, 1] += 0.1 * np.sin(phase)  # slight counter-rotation of the trunk
    return e


def reaching(rng: np.random.Generator, m: int) -> np.ndarray:
    """Standing with one or both arms raised or forward (m, 24, 3)."""
    e = standing(rng, m)
    which = rng.integers(0, 3, size=m)  # 0 left arm, 1 right arm, 2 both
    for side in (0, 1):
        active = (which == side) | (which == 2)
        mode = rng.integers(0, 3, size=m)  # 0 forward, 1 up, 2 forward-up / diagonal
        x = _u(rng, -0.6, 0.6, m)
        y = np.select([mode == 0, mode == 1], [_u(rng, -1.5, -1.0, m), _u(rng, -0.4, 0.1, m)],
                      _u(rng, -1.4, -0.6, m))
        z = np.select([mode == 0, mode == 1], [_u(rng, -0.4, 0.3, m), _u(rng, 0.8, 1.4, m)],
                      _u(rng, 0.2, 0.9, m))
        j = L_SHOULDER + side
        s = _MIRROR if side else np.ones(3)
        e[active, j] = (np.stack([x, y, z], -1) * s)[active]
        je = L_ELBOW + side
        e[active, je, 1] = (-_u(rng, 0.0, 0.6, m) * s[1])[active]
    # Lean the trunk a little toward the reach.
    for j in _SPINE:
        e[:, j, 0] += _u(rng, 0.0, 0.15, m)
    e[:, NECK, 0] -= _u(rng, 0.0, 0.3, m)  # look up/out toward the hands
    return e


def crouching(rng: np.random.Generator, m: int) -> np.ndarray:
    """Deep squat: hips and knees deeply flexed, trunk leaning forward (m, 24, 3)."""
    e = np.zeros((m, 24, 3))
    _trunk_and_head(rng, e, m, lean=(0.05, 0.3), twist=0.1, side=0.05)
    e[:, NECK, 0] -= _u(rng, 0.2, 0.5, m)  # keep the gaze forward despite the lean
    for side in (0, 1):
        _set_side(e, L_HIP, side, x=_u(rng, -2.2, -1.85, m), y=_u(rng, -0.3, 0.3, m), z=_u(rng, 0.0, 0.45, m))
        _set_side(e, L_KNEE, side, x=_u(rng, 2.1, 2.45, m))
        _set_side(e, L_ANKLE, side, x=_u(rng, -0.4, 0.1, m))
        # Arms forward for balance or hanging/resting on the knees.
        fwd = rng.random(m) < 0.5
        _arms_down(rng, e, m, side, elbow=(0.2, 1.2), swing=(-1.2, -0.3))
        e[fwd, L_SHOULDER + side, 0] = _u(rng, -1.6, -1.0, m)[fwd]
    _small_noise(rng, e, 0.03)
    return e


def sitting(rng: np.random.Generator, m: int) -> np.ndarray:
    """Seated on a chair: hips ~90 deg flexed (thighs horizontal), knees ~90 deg (shanks vertical)."""
    e = np.zeros((m, 24, 3))
    _trunk_and_head(rng, e, m, lean=(-0.1, 0.15), twist=0.1, side=0.05)
    for side in (0, 1):
        _set_side(e, L_HIP, side, x=_u(rng, -1.7, -1.45, m), y=_u(rng, -0.15, 0.15, m), z=_u(rng, 0.0, 0.3, m))
        _set_side(e, L_KNEE, side, x=_u(rng, 1.4, 1.75, m))
        _set_side(e, L_ANKLE, side, x=_u(rng, -0.2, 0.2, m))
        # Hands in the lap or on the thighs.
        _arms_down(rng, e, m, side, elbow=(0.5, 1.5), swing=(-0.8, 0.0))
    _small_noise(rng, e, 0.02)
    return e


def articulation(rng: np.random.Generator, m: int) -> np.ndarray:
    """Every body joint uniform within its limits: arm/leg coverage beyond everyday poses."""
    lim = JOINT_LIMITS[1:]
    e = np.zeros((m, 24, 3))
    e[:, 1:] = rng.uniform(lim[..., 0], lim[..., 1], size=(m, 23, 3))
    # Keep the trunk and head moderate: their uniform draws would add up over four segments.
    for j in (*_SPINE, NECK, HEAD):
        e[:, j] *= 0.5
    return e


_BODY_FAMILIES = {"standing": standing, "walking": walking, "reaching": reaching,
                  "crouching": crouching, "sitting": sitting, "articulation": articulation}
_LYING_BASES = ("standing", "walking", "reaching", "crouching", "sitting", "articulation")


def _lying(rng: np.random.Generator, m: int):
    """Any other family with the body horizontal: on the back, front or side.

    Returns (Euler (m, 24, 3), lie rotation (m,) scipy Rotation in the body's frame).
    """
    base = rng.integers(0, len(_LYING_BASES), size=m)
    e = np.zeros((m, 24, 3))
    for b, name in enumerate(_LYING_BASES):
        idx = np.flatnonzero(base == b)
        if len(idx):
            e[idx] = _BODY_FAMILIES[name](rng, len(idx))
    # A body on the floor rests its trunk along it: halve trunk/neck bending so the long axis stays
    # horizontal.
    for j in (*_SPINE, NECK):
        e[:, j] *= 0.5
    # 0 back (face up), 1 front (face down), 2 left side down, 3 right side down. A crouch lying on
    # its back would point the head up, so crouches lie on a side (the fetal position).
    how = rng.integers(0, 4, size=m)
    crouch = base == _LYING_BASES.index("crouching")
    how[crouch] = 2 + rng.integers(0, 2, size=crouch.sum())
    # Rotations about x tip the body over (x rot by -pi/2 turns facing +z into facing +y, i.e. up);
    # about z roll it onto a side. Jitter keeps it from lying perfectly flat.
    angle_x = np.select([how == 0, how == 1], [-np.pi / 2, np.pi / 2], 0.0) + _u(rng, -0.15, 0.15, m)
    angle_z = np.select([how == 2, how == 3], [np.pi / 2, -np.pi / 2], 0.0) + _u(rng, -0.15, 0.15, m)
    lie = Rotation.from_euler("xz", np.stack([angle_x, angle_z], -1))
    return e, lie


def _clip(e: np.ndarray) -> np.ndarray:
    e = e.copy()
    e[:, 1:] = np.clip(e[:, 1:], JOINT_LIMITS[1:, :, 0], JOINT_LIMITS[1:, :, 1])
    return e


def sample_family(rng: np.random.Generator, family: str, n: int) -> np.ndarray:
    """n poses of one family: axis-angle (n, 24, 3) float32, radians.

    Joint 0 is the global orientation in the body's own y-up frame: a random yaw about y, composed
    (for ``lying``) after the rotation that lays the body down. Joints 1..23 are clipped to
    ``JOINT_LIMITS`` in Euler space before conversion.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown pose family {family!r}; expected one of {FAMILIES}")
    if family == "lying":
        e, lie = _lying(rng, n)
    else:
        e, lie = _BODY_FAMILIES[family](rng, n), Rotation.identity(n)
    e = _clip(e)
    pose = euler_to_axis_angle(e)
    yaw = _rot_y(rng.uniform(-np.pi, np.pi, size=n))
    pose[:, 0] = (yaw * lie).as_rotvec()  # lay down in the body frame, then turn about world y
    return pose.astype(np.float32)


def sample_poses(rng: np.random.Generator, n: int, weights: dict | None = None):
    """Sample n poses from the families.

    Args:
      rng: numpy Generator; the output is a deterministic function of its state.
      n: number of poses.
      weights: family name -> probability (missing families get 0; renormalised). Defaults to
        ``DEFAULT_WEIGHTS``: standing .15, walking .20, reaching .15, crouching .10, sitting .10,
        lying .10, articulation .20.
    Returns:
      pose: (n, 24, 3) float32 axis-angle, radians; joint 0 = global orientation in the body's
        y-up frame (random yaw; lying also laid down), joints 1..23 within ``JOINT_LIMITS``.
      family: (n,) int64 indices into ``FAMILIES``.
    """
    weights = DEFAULT_WEIGHTS if weights is None else weights
    unknown = set(weights) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown pose families in weights: {sorted(unknown)}; expected {FAMILIES}")
    p = np.array([float(weights.get(f, 0.0)) for f in FAMILIES])
    if (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"pose family weights must be non-negative with a positive sum, got {weights}")
    family = rng.choice(len(FAMILIES), size=n, p=p / p.sum())
    pose = np.zeros((n, 24, 3), np.float32)
    for k, name in enumerate(FAMILIES):
        idx = np.flatnonzero(family == k)
        if len(idx):
            pose[idx] = sample_family(rng, name, len(idx))
    return pose, family.astype(np.int64)
