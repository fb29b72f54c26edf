"""The experiments layer: what runs ``generation.py``'s runs and the trainers at scale (the Ray executor)."""
