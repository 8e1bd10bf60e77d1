"""TF Serving-compatible model server (gRPC and REST), model manager (clients: `client/`)."""
