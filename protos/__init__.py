"""genpipe's own gRPC API, next to TensorFlow Serving's (which comes from tensorflow-serving-api).

Built at runtime from hand-written descriptors (no protoc here); both `client` and `serving`
import it, and neither imports the other.
"""
