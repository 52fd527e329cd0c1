"""DiscriTune: discriminative finetuning of image captioners as an EGG game (Dessì et al., CVPR 2023)."""
