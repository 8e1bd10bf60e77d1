"""TF Serving's `MonitoringConfig` and `SSLConfig` messages.

The ``tensorflow-serving-api`` wheel ships `model_server_config_pb2` but not the monitoring and
SSL config protos that `--monitoring_config_file` and `--ssl_config_file` hold. Written by hand
(no package provides them): the two small messages are declared here field for field as in
tensorflow_serving/config/{monitoring,ssl}_config.proto, in a private descriptor pool, so the
official protobuf text-format parser reads the same files the real server reads.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_STRING = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
_BOOL = descriptor_pb2.FieldDescriptorProto.TYPE_BOOL
_MESSAGE = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
_OPTIONAL = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL


def _message(name: str, fields: list[tuple[str, int, int, str]]) -> descriptor_pb2.DescriptorProto:
    message = descriptor_pb2.DescriptorProto(name=name)
    for field_name, number, field_type, type_name in fields:
        field = message.field.add(name=field_name, number=number, type=field_type, label=_OPTIONAL)
        if type_name:
            field.type_name = type_name
    return message


def _build() -> dict[str, type]:
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="genpipe/tensorflow_serving_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
    )
    file_proto.message_type.extend(
        [
            _message("PrometheusConfig", [("enable", 1, _BOOL, ""), ("path", 2, _STRING, "")]),
            _message(
                "MonitoringConfig",
                [("prometheus_config", 1, _MESSAGE, ".tensorflow.serving.PrometheusConfig")],
            ),
            _message(
                "SSLConfig",
                [
                    ("server_key", 1, _STRING, ""),
                    ("server_cert", 2, _STRING, ""),
                    ("custom_ca", 3, _STRING, ""),
                    ("client_verify", 4, _BOOL, ""),
                ],
            ),
        ]
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_proto)
    names = [f"{file_proto.package}.{message.name}" for message in file_proto.message_type]
    # protobuf >= 4.21 has GetMessageClass; the 3.20 pinned by TF 2.16 has MessageFactory only.
    make_class = getattr(message_factory, "GetMessageClass", None)
    if make_class is None:
        make_class = message_factory.MessageFactory(pool).GetPrototype
    return {name: make_class(pool.FindMessageTypeByName(name)) for name in names}


_MESSAGES = _build()
PrometheusConfig = _MESSAGES["tensorflow.serving.PrometheusConfig"]
MonitoringConfig = _MESSAGES["tensorflow.serving.MonitoringConfig"]
SSLConfig = _MESSAGES["tensorflow.serving.SSLConfig"]
