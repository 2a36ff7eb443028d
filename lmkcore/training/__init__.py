"""Training: heatmap targets and losses, augmentation, the trainer, run profiles and the methods
(configured experiments) of the four papers."""
