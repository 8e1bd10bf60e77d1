"""TFX pieces of the image-generator pipelines (VAE, DCGAN): ingestion, preprocessing, training,
evaluation.

TFX finds `preprocessing_fn` and the `run_fn`s here by dotted path (installed package).
"""
