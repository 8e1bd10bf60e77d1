"""Pieces shared by every model's TFX components: counted ExampleGen executors, blessing."""
