"""TF Serving-compatible model server (gRPC and REST), model manager and client library."""
