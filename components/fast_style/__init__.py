"""The fast style network (Johnson et al., 2016): content-photo ingestion and the Trainer run_fn."""
