"""Training: typed config, data feeding, state, the loop, logging, sparsity, schedules, checkpoints, pretraining."""
