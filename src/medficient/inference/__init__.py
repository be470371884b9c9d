"""Box-prompted inference on challenge-format cases (2D images and 3D volumes)."""
