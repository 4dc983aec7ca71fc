"""Scoring, score normalisation, calibration, metrics, bootstrap intervals and the training-free baseline."""
