"""Host-side data for both systems: the record layout (`schema`), TFDS builders of the real
datasets and of the synthetic default (`builders`, `build` CLI), the synthetic renderer
(`synthetic`), pose sampling, SPIN's crops and augmentation (`augment`) and the grain input
pipeline (`pipeline`)."""
