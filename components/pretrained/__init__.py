"""Models built from ImageNet weights rather than trained: export them for serving."""
