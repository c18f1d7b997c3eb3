"""Configs of NeuHMR's parts (ml_collections, locked like ImpHMR's: a misspelled field in a
config file or on the command line is refused). `ghn_config()` is the generalizable human NeRF's
training config; configs/neuhmr/*.py start from it. Numbers and their provenance:
docs/neuhmr.md.
"""
from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder


def ghn_config() -> ml_collections.ConfigDict:
    """Φ^GHN trained on multi-view video (ZJU-MoCap-like): target image + n = 2 references."""
    c = ml_collections.ConfigDict()
    c.name = "ghn"

    c.body = ml_collections.ConfigDict()
    c.body.model = "default"          # any smpl_jax body: 'default', 'default-small', an SMPL path
    c.body.num_betas = 10

    g = c.ghn = ml_collections.ConfigDict()
    g.feature_width = 64              # 𝓕: ResNet-18 stem width (ActorsNeRF: 64 -> 256-ch maps)
    g.volume_resolution = 32          # 𝒯: 25×32³ skinning volume (HumanNeRF)
    g.volume_embedding = 256
    g.volume_widths = (512, 512, 256, 256)
    g.prior = "gaussian_bones"        # | 'body_weights'
    g.learn_volume = True             # False: the prior is the volume (no decoder, faster steps)
    g.occupancy = "skinning"          # w' = summed bone weights (HumanNeRF) | 'surface' (sharp)
    g.occupancy_softness = 0.01       # 'surface': metres, width of the person's edge
    g.shape_resolution = 32           # 'surface': side of the shape-direction volume
    g.psi_width = 256                 # ψ (ActorsNeRF)
    g.pe_octaves = 10                 # γ(x_c): 63-d with the input
    g.num_samples = 64                # per ray in the posed box (HumanNeRF: 128)
    g.box_margin = 0.3                # joints ± 0.3 m (HumanNeRF)
    g.chunk = 1024                    # rays per rendering chunk (memory bound)
    g.background = (0.0, 0.0, 0.0)    # ZJU-MoCap's masked black background

    d = c.data = ml_collections.ConfigDict()
    d.name = "synthetic_humans"
    d.builder_config = "multiview_video"
    d.data_dir = "~/tensorflow_datasets"
    d.train_split = "train"
    d.test_split = "test"
    d.image_size = 128                # images are resized to this side when loaded (None: as built)
    d.lazy_images = False             # keep images encoded in memory, decode per batch (large sets)
    # Options of the dataset builder (`synthetic_humans/multiview_video`: people, frames, cameras,
    # image size, body, seed; `zju_mocap`: root, subjects, cameras, frame stride).
    d.builder_options = ml_collections.ConfigDict({"num_train": 12, "num_test": 4,
                                                   "num_frames": 12, "num_views": 4})
    d.n_refs = 2                      # n reference images per target (NeuHMR: 2)
    d.same_camera = False             # references from the target's camera only
    d.rays_per_image = 512
    d.fraction_inside = 0.8           # rays drawn inside the mask; the rest around it
    d.dilation = 8                    # pixels around the mask's box for the other rays

    lo = c.loss = ml_collections.ConfigDict()
    lo.mse = 1.0                      # on C (HumanNeRF: 0.2 with 1.0 LPIPS)
    lo.occupancy_bce = 0.1            # W vs the mask
    lo.ssim = 0.0                     # optional SSIM term on patches (dm-pix)
    lo.num_patches = 2
    lo.patch_size = 16
    lo.volume_l1 = 0.0                # L1 on the skinning volume's residual (ActorsNeRF: 0.01)

    t = c.train = ml_collections.ConfigDict()
    t.seed = 0
    t.batch_size = 4                  # targets per step (each with n references)
    t.num_steps = 20_000
    t.learning_rate = 5e-4            # HumanNeRF / ActorsNeRF
    t.volume_lr_scale = 0.1           # HumanNeRF: 5e-5 for the weight volume
    t.optimizer = "adam"
    t.momentum = 0.9
    t.schedule = "warmup_cosine"
    t.warmup_steps = 200
    t.weight_decay = 0.0
    t.grad_clip = 1.0
    t.log_every = 50
    t.eval_every = 2000
    t.checkpoint_every = 1000
    t.keep_checkpoints = 3
    t.nan_max_consecutive = 10
    t.spike_factor = 100.0
    t.spike_window = 50
    t.progress = True

    e = c.eval = ml_collections.ConfigDict()
    e.max_targets = 16                # held-out (person, frame, camera) targets rendered in full
    e.periodic_max_targets = 4
    e.max_figures = 4
    e.seed = 1
    e.checkpoint = placeholder(str)   # eval_ghn: 'latest' or a step; None = latest
    c.lock()
    return c


def ghn_synthetic_config() -> ml_collections.ConfigDict:
    """The GHN on the synthetic multi-view video people at a CPU size (the NeuHMR default job's
    renderer): the small default body, 64-px images, a narrow 𝓕 and ψ, 16³ volume."""
    c = ghn_config()
    c.name = "ghn_synthetic"
    c.body.model = "default-small"
    g = c.ghn
    g.feature_width = 16
    # The synthetic people are the unclothed default body: its own skinning weights are the true
    # volume, so it is used as is (3-4x cheaper steps on CPU than learning it), on a fine grid
    # (3.4 cm voxels) whose foreground hugs the body: at 16³ it covers a third of the box.
    g.volume_resolution = 64
    g.volume_embedding = 64
    g.volume_widths = (128, 64, 32, 32, 32)
    g.prior = "body_weights"
    g.learn_volume = False
    # The skinning foreground fades over ~2 voxels + 2 falloffs around the body (W covered twice
    # the mask's pixels: IoU 0.4-0.5 with a saturated density); the rest surface's signed
    # distance ends it at the skin (IoU 0.90-0.95 before any training, at 32 and 64 px).
    g.occupancy = "surface"
    g.psi_width = 32
    g.pe_octaves = 6
    g.num_samples = 32
    g.chunk = 512
    d = c.data
    d.data_dir = "out/neuhmr/data"
    d.image_size = 64
    d.builder_options = ml_collections.ConfigDict({
        "num_train": 24, "num_test": 4, "num_frames": 12, "num_views": 4, "image_size": 64,
        "body": "default-small", "seed": 0})
    d.rays_per_image = 256
    d.dilation = 4
    t = c.train
    t.batch_size = 4
    t.num_steps = 3000
    t.learning_rate = 1e-3
    t.warmup_steps = 100
    t.log_every = 25
    t.eval_every = 1000
    t.checkpoint_every = 500
    return c


def optimize_config() -> ml_collections.ConfigDict:
    """NeuHMR's refinement of a video's per-frame SMPL against the frozen GHN
    (`python -m neuhmr_jax.optimize`, `neuhmr_jax.optimize.refine`).

    Provenance of each value: [B] = stated in NeuHMR's supplementary material; [C: src] = read in
    the named source; [I] = a project choice (the supplementary is silent). Method:
    `neuhmr_jax.optimize`, docs/neuhmr.md.
    """
    c = ml_collections.ConfigDict()
    c.name = "neuhmr_optimize"
    c.ghn_workdir = "out/ghn"         # [I] a `train_ghn` run (its config.json and checkpoints)
    c.ghn_checkpoint = "latest"       # [I] 'latest' or a step of that run

    a = c.anchors = ml_collections.ConfigDict()
    a.every = 10                      # [B] N = T/10 candidate anchors
    a.num_anchors = 8                 # [I] N̂ after farthest point sampling (FPS itself is [B])
    a.n_refs = 2                      # [B] n = 2 reference images per rendered frame
    a.facing_angle_deg = 30.0         # [C: Yzmblog/MonoHuman select_keyframe.py] back-view test
    # [I] pose of the references in the GHN's forward warp: 'current' = the motion field's
    # current estimate at the anchor frame (stop-gradient; the supplementary counts the anchors
    # as part of the optimised motion), 'init' = the estimator's pose, fixed.
    a.reference_pose = "current"

    m = c.motion_field = ml_collections.ConfigDict()
    m.hidden = 500                    # [C: wangkua1/nemo-cvpr2023] NeMo MotionNet width (CPU jobs
    #                                   may use less)
    m.depth = 3                       # [C: NeMo] Linear layers of the FCNN
    m.fourier_octaves = 6             # [I] Fourier features of the phase (NeMo: raw phase)
    m.head_gain = 0.0                 # [I] 0: the field starts exactly at the init (NeMo: 1e-5)

    o = c.optim = ml_collections.ConfigDict()
    o.seed = 0
    # [I] Adam. NeMo uses 1e-2 at 128 frames per batch for 5000 steps; the GHN affords ~8 frames
    # per step, so each step's gradient is noisier and the rate is 10x lower.
    o.learning_rate = 1e-3
    o.weight_decay = 0.0              # [I] (NeMo: 1e-3)
    o.grad_clip = 0.0                 # [I] global norm clip; 0 = off
    o.steps = 2000                    # [I]
    o.batch_frames = 8                # [I] frames per step (divisible by the device count)
    o.rays_per_frame = 256            # [I] random rays per frame and step
    # [I] share of the rays drawn inside the person region; the others are uniform in its box
    # grown by `dilation`. 0 = uniform over the box: the mean loss over the box's pixels. (The
    # GHN's training draws 80% inside; for the pose that weighting rewards a too large
    # silhouette: the tiny test's body moved 13 cm towards the camera in 30 steps.)
    o.fraction_inside = 0.0
    o.dilation = 8                    # [I] px around the person's box for the other rays
    # [I] without masks, the person region = the init mesh's silhouette dilated by this many px
    # (it also masks the frames and the reference images onto the GHN's background)
    o.silhouette_dilation = 4
    o.log_every = 10                  # [I] progress-bar refresh (the history keeps every step)
    o.eval_batch = 64                 # [I] frames per call when evaluating / preparing
    o.nan_max_consecutive = 20        # [I] stop after this many non-finite steps in a row
    o.progress = True

    lo = c.loss = ml_collections.ConfigDict()
    lo.rgb = 1.0                      # [I] λ_rgb, MSE on the person's rays
    lo.occupancy = 0.1                # [I] λ_sil, BCE(W, mask); used only when masks are given
    lo.joint_matching = 0.1           # [I] λ_jm (on Geman–McClure of box-normalised px)
    lo.regulariser = 0.01             # [I] λ_reg on ‖R' − I‖² + ‖T'‖²

    j = c.matching = ml_collections.ConfigDict()
    j.num_candidates = 128            # [B] S (ablation: 16, 32, 64, 128, 256; 128 best)
    j.sigma = 0.05                    # [I] metres, std of the Gaussian candidates ([B]: Gaussian)
    j.temperature = 0.05              # [I] soft-argmax temperature on the cosine scores
    j.soft = True                     # [I] soft-argmax target (False: the best candidate)
    j.tau = 0.15                      # [I] metres, visibility depth tolerance (body half-width)
    j.min_occupancy = 0.5             # [I] W a visible joint's pixel needs
    j.gm_scale = 0.1                  # [I] Geman–McClure scale, fraction of the box diagonal
    j.depth_stride = 4                # [I] 𝒟 and W rendered every this many px (no gradients)

    c.betas = "median"                # [I] β fixed to the per-frame median | 'per_frame' (the init's)
    # [I] the command line's working resolution: frames (and masks, K) are resized so that their
    # longer side has this many pixels; None = the GHN run's training image size
    # (data.image_size: its features are learned at that scale); 0 = as given.
    c.image_side = placeholder(int)
    c.finetune_ghn = False            # [B] fine-tuning the GHN hurts (+7.0 MPJPE on EMDB): off
    c.ghn_learning_rate = 5e-5        # [I] when finetune_ghn (HumanNeRF's lower rate)
    # [B] a temporal stabiliser may follow as a post-process: moving average of the 6D rotations
    # and translations over this many frames (centred); 0 or 1 = off [I].
    c.temporal_smoothing = 0
    c.lock()
    return c


def default_job_config() -> ml_collections.ConfigDict:
    """NeuHMR's end-to-end default job (`python -m neuhmr_jax.default_job`), sized for a 2-core
    CPU: ImpHMR's default job (the init), the synthetic GHN, held-out monocular clips, NeuHMR and
    keypoint fitting. Every part's own config is nested (`--config.ghn.train.num_steps=...`)."""
    from imphmr_jax.config import synthetic_config
    c = ml_collections.ConfigDict()
    c.name = "neuhmr_default_job"
    c.reuse = True                    # [I] reuse a finished ImpHMR run / GHN run / rendered clips
    c.imphmr = synthetic_config()     # ImpHMR's default job: the estimator of the init
    c.imphmr.eval.harder_splits = False  # reported by ImpHMR's own job; not needed here

    c.ghn = ghn_synthetic_config()
    c.ghn.train.num_steps = 600       # [I] ~10 min on 2 cores (the job's time budget)
    c.ghn.train.eval_every = 600
    c.ghn.train.checkpoint_every = 200
    c.ghn.eval.max_targets = 16

    k = c.clips = ml_collections.ConfigDict()
    k.num_clips = 2                   # [I] held-out people (the video stream's test split)
    k.num_frames = 30                 # [I] 3 s at 10 frames/s
    k.image_size = 128                # [I] ImpHMR's input size; NeuHMR works at the GHN's
    k.seed = 0
    k.split = "test"
    k.use_masks = False               # [I] True: give NeuHMR the clips' GT masks (W vs mask term)

    d = c.detector = ml_collections.ConfigDict()   # 2D keypoints for keypoint fitting
    d.noise_px = 2.0                  # [I] Gaussian std at the clips' image size (128 px)
    d.outlier_prob = 0.05             # [I] share of joints detected elsewhere (low confidence)
    d.outlier_px = 20.0               # [I] typical displacement of an outlier
    d.seed = 0

    f = c.fitting = ml_collections.ConfigDict()
    f.steps = 100                     # keypoint fitting (neuhmr_jax.baselines.fit_keypoints)
    f.lr = 0.01

    c.optimize = optimize_config()
    c.optimize.unlock()
    c.optimize.ghn_workdir = ""       # set by the job to <workdir>/ghn
    c.optimize.motion_field.hidden = 128  # [I] CPU size
    c.optimize.optim.steps = 150      # [I] per clip (CPU budget: ~2 s per step on 2 cores)
    c.optimize.optim.batch_frames = 4     # [I] CPU size (each frame visited 20 times)
    c.optimize.optim.rays_per_frame = 128  # [I] CPU size
    c.optimize.optim.progress = True
    c.optimize.lock()
    c.overlay_clips = 1               # [I] before/after overlay videos written for this many clips
    c.lock()
    return c
