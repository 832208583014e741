"""The demo: the operator on the local cluster, driven by MovieLens users replayed at a compressed diurnal rate."""
