"""Hand-written PyTorch reference of SPIN's HMR (torchvision ResNet + avgpool + iterative regressor).

A test and benchmark oracle, not a runtime dependency: the forward is built from
`torch.nn.functional` ops only, driven by a torchvision / SPIN-keyed state dict of numpy arrays, so
the same dict can be converted with `imphmr_jax.convert.spin_from_torch` and run through our Flax
modules. torch is imported lazily inside the functions; importing this module never needs torch.

    sd = random_spin_state((3, 4, 6, 3), "bottleneck", width=64)   # numpy, no torch needed
    ref = torch_spin_forward(sd, images_nhwc, (3, 4, 6, 3), "bottleneck")   # dict of numpy
    fwd = make_torch_spin_forward(sd, (3, 4, 6, 3), "bottleneck")  # reusable, torch in/out
    out = fwd(torch_images_nchw)
"""
import numpy as np

from imphmr_jax.models.regressor import spin_default_mean_params


def random_torchvision_state(stage_sizes, block, width, seed=0, fc=True):
    """A torchvision-named ResNet state dict with random weights AND random running statistics.

    Args:
      stage_sizes: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
      block: 'bottleneck' or 'basic'.
      width: channels of conv1 (64 in torchvision).
      seed: numpy seed.
      fc: include the 1000-way classifier `fc.weight`, `fc.bias`.
    Returns:
      dict torch key -> numpy array (float32; `num_batches_tracked` int64), conv weights OIHW.
    """
    rng = np.random.default_rng(seed)
    sd = {}

    def conv(key, cout, cin, k):
        sd[key + ".weight"] = rng.normal(0, np.sqrt(2.0 / (cin * k * k)), (cout, cin, k, k))

    def bn(key, c):
        sd[key + ".weight"] = rng.uniform(0.5, 1.5, c)
        sd[key + ".bias"] = rng.normal(0, 0.1, c)
        sd[key + ".running_mean"] = rng.normal(0, 0.2, c)
        sd[key + ".running_var"] = rng.uniform(0.5, 2.0, c)
        sd[key + ".num_batches_tracked"] = np.array(7, np.int64)

    expansion = 4 if block == "bottleneck" else 1
    conv("conv1", width, 3, 7)
    bn("bn1", width)
    cin = width
    for i, n in enumerate(stage_sizes):
        planes = width * 2**i
        for j in range(n):
            p = f"layer{i + 1}.{j}"
            if block == "bottleneck":
                conv(p + ".conv1", planes, cin, 1), bn(p + ".bn1", planes)
                conv(p + ".conv2", planes, planes, 3), bn(p + ".bn2", planes)
                conv(p + ".conv3", planes * 4, planes, 1), bn(p + ".bn3", planes * 4)
            else:
                conv(p + ".conv1", planes, cin, 3), bn(p + ".bn1", planes)
                conv(p + ".conv2", planes, planes, 3), bn(p + ".bn2", planes)
            if j == 0 and (i > 0 or cin != planes * expansion):
                conv(p + ".downsample.0", planes * expansion, cin, 1)
                bn(p + ".downsample.1", planes * expansion)
            cin = planes * expansion
    if fc:
        sd["fc.weight"], sd["fc.bias"] = rng.normal(0, 0.01, (1000, cin)), np.zeros(1000)
    return {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in sd.items()}


def random_spin_state(stage_sizes, block, width, hidden=1024, seed=0):
    """SPIN HMR state dict: backbone (no fc) + fc1, fc2, dec* Linear layers + init_* buffers.

    The `init_pose (1, 144)`, `init_shape (1, 10)`, `init_cam (1, 3)` buffers are SPIN's default
    mean parameters plus N(0, 0.1) noise; `hidden` is the width of fc1 / fc2 (1024 in SPIN).
    """
    sd = random_torchvision_state(stage_sizes, block, width, seed, fc=False)
    rng = np.random.default_rng(seed + 1)
    nfeat = width * 8 * (4 if block == "bottleneck" else 1)
    mean = spin_default_mean_params()
    for name, n_out, n_in, scale in (("fc1", hidden, nfeat + 157, 0.03), ("fc2", hidden, hidden, 0.03),
                                     ("decpose", 144, hidden, 0.05), ("decshape", 10, hidden, 0.05),
                                     ("deccam", 3, hidden, 0.05)):
        sd[name + ".weight"] = rng.normal(0, scale, (n_out, n_in)).astype(np.float32)
        sd[name + ".bias"] = rng.normal(0, 0.05, n_out).astype(np.float32)
    for name, key in (("init_pose", "pose"), ("init_shape", "shape"), ("init_cam", "cam")):
        sd[name] = (mean[key] + rng.normal(0, 0.1, mean[key].shape)).astype(np.float32)[None]
    return sd


def make_torch_spin_forward(sd, stage_sizes, block, n_iter=3):
    """A reusable PyTorch SPIN forward: torch images (B, 3, H, W) -> dict of torch tensors.

    torchvision ResNet (eval-mode BatchNorm, eps 1e-5) + AdaptiveAvgPool + SPIN's HMR regressor
    (`n_iter` residual iterations, dropout off) + SPIN's rot6d_to_rotmat, from F.* ops only. The
    state dict is turned into tensors once, here; each call runs under `torch.no_grad()`.
    Returns fwd(x) -> dict(features (B, C), pose_6d (B, 144), betas (B, 10), cam (B, 3),
    rotmat (B, 24, 3, 3)).
    """
    import torch

    F = torch.nn.functional
    t = {k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}

    def bn(x, p):
        return F.batch_norm(x, t[p + ".running_mean"], t[p + ".running_var"], t[p + ".weight"],
                            t[p + ".bias"], training=False, eps=1e-5)

    lin = {k: (lambda z, k=k: F.linear(z, t[k + ".weight"], t[k + ".bias"]))
           for k in ("fc1", "fc2", "decpose", "decshape", "deccam")}

    @torch.no_grad()
    def forward(x):
        x = F.max_pool2d(F.relu(bn(F.conv2d(x, t["conv1.weight"], stride=2, padding=3), "bn1")),
                         3, 2, 1)
        for i, n in enumerate(stage_sizes):
            for j in range(n):
                s, p = (2 if i > 0 and j == 0 else 1), f"layer{i + 1}.{j}"
                if block == "bottleneck":
                    y = F.relu(bn(F.conv2d(x, t[p + ".conv1.weight"]), p + ".bn1"))
                    y = F.relu(bn(F.conv2d(y, t[p + ".conv2.weight"], stride=s, padding=1), p + ".bn2"))
                    y = bn(F.conv2d(y, t[p + ".conv3.weight"]), p + ".bn3")
                else:
                    y = F.relu(bn(F.conv2d(x, t[p + ".conv1.weight"], stride=s, padding=1), p + ".bn1"))
                    y = bn(F.conv2d(y, t[p + ".conv2.weight"], padding=1), p + ".bn2")
                if p + ".downsample.0.weight" in t:
                    x = bn(F.conv2d(x, t[p + ".downsample.0.weight"], stride=s), p + ".downsample.1")
                x = F.relu(y + x)
        xf = F.adaptive_avg_pool2d(x, 1).flatten(1)
        b = xf.shape[0]
        pose, shape, cam = (t[k].expand(b, -1) for k in ("init_pose", "init_shape", "init_cam"))
        for _ in range(n_iter):
            xc = lin["fc2"](lin["fc1"](torch.cat([xf, pose, shape, cam], 1)))  # dropout off in eval
            pose, shape, cam = lin["decpose"](xc) + pose, lin["decshape"](xc) + shape, lin["deccam"](xc) + cam
        a = pose.reshape(-1, 3, 2)  # SPIN utils/geometry.py rot6d_to_rotmat
        b1 = F.normalize(a[:, :, 0])
        b2 = F.normalize(a[:, :, 1] - torch.einsum("bi,bi->b", b1, a[:, :, 1]).unsqueeze(-1) * b1)
        rotmat = torch.stack((b1, b2, torch.cross(b1, b2, dim=1)), dim=-1).reshape(b, 24, 3, 3)
        return dict(features=xf, pose_6d=pose, betas=shape, cam=cam, rotmat=rotmat)

    return forward


def torch_spin_forward(sd, images_nhwc, stage_sizes, block, n_iter=3):
    """One call of `make_torch_spin_forward` on numpy NHWC images; returns a dict of numpy arrays.

    Raises ImportError when torch is not installed (tests call `pytest.importorskip('torch')`).
    """
    import torch

    x = torch.from_numpy(np.asarray(images_nhwc)).permute(0, 3, 1, 2)
    out = make_torch_spin_forward(sd, stage_sizes, block, n_iter)(x)
    return {k: v.numpy() for k, v in out.items()}
