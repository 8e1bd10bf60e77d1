"""The chapter's own models, written here from DLwP chapter 12's description: plain Keras on
numpy arrays, the baselines `benchmarks/quality_parity.py` trains beside genpipe's Trainers."""
