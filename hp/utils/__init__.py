"""Small helpers with no speech in them: atomic files and JSON."""
