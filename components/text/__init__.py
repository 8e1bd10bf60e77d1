"""TFX pieces of the text language-model pipeline: ingestion, preprocessing, training, evaluation.

TFX finds `preprocessing_fn` and `run_fn` here by dotted path (installed package, no module file).
"""
