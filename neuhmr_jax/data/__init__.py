"""Video datasets read from the user's own copies, for NeuHMR's evaluation
(docs/video_evaluation.md).

* `emdb`: EMDB sequences ('<root>/P<k>/<seq>/P<k>_<seq>_data.pkl') and their camera-frame ground
  truth.
* `threedpw`: 3DPW sequences ('<root>/sequenceFiles/<split>/<seq>.pkl', python 2 pickles) and
  their camera-frame ground truth.
* `common`: checked pickle reading (errors name the file and the key) and the world -> camera
  SMPL posing both use.

Nothing here downloads data: the datasets' licences require each user to obtain them.
"""
from neuhmr_jax.data import common, emdb, threedpw

__all__ = ["common", "emdb", "threedpw"]
