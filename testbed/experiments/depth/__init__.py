"""Sub-studies of the depth-scaling experiment (one module each)."""
