"""Corpora: the built-in mini corpus, VoxCeleb and ASVspoof trees, manifests, audio I/O and augmentation."""
