"""Message types and service description of the demo gRPC worker, built at
run time from a FileDescriptorProto (no protoc, no generated *_pb2.py).

    package snakepit.demo;
    message PingRequest    { string payload = 1; }
    message PingReply      { string payload = 1; int32 pid = 2; string run_id = 3;
                             int32 port = 4; double uptime_s = 5; }
    message ComputeRequest { string op = 1; int64 n = 2; }
    message ComputeReply   { int64 result = 1; int64 elapsed_us = 2; int32 pid = 3; }
    service Worker {
      rpc Ping(PingRequest) returns (PingReply);
      rpc Compute(ComputeRequest) returns (ComputeReply);
    }
"""

from google.protobuf import descriptor_pb2, message_factory

PACKAGE = "snakepit.demo"
SERVICE = f"{PACKAGE}.Worker"
PING = f"/{SERVICE}/Ping"
COMPUTE = f"/{SERVICE}/Compute"

_F = descriptor_pb2.FieldDescriptorProto
_TYPES = {"string": _F.TYPE_STRING, "int32": _F.TYPE_INT32, "int64": _F.TYPE_INT64,
          "double": _F.TYPE_DOUBLE}

_MESSAGES = {
    "PingRequest": [("payload", "string")],
    "PingReply": [("payload", "string"), ("pid", "int32"), ("run_id", "string"),
                  ("port", "int32"), ("uptime_s", "double")],
    "ComputeRequest": [("op", "string"), ("n", "int64")],
    "ComputeReply": [("result", "int64"), ("elapsed_us", "int64"), ("pid", "int32")],
}


def _file_proto() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="snakepit/demo/worker.proto", package=PACKAGE, syntax="proto3")
    for name, fields in _MESSAGES.items():
        msg = fdp.message_type.add(name=name)
        for number, (fname, ftype) in enumerate(fields, start=1):
            msg.field.add(name=fname, number=number, type=_TYPES[ftype],
                          label=_F.LABEL_OPTIONAL, json_name=fname)
    svc = fdp.service.add(name="Worker")
    svc.method.add(name="Ping", input_type=f".{PACKAGE}.PingRequest",
                   output_type=f".{PACKAGE}.PingReply")
    svc.method.add(name="Compute", input_type=f".{PACKAGE}.ComputeRequest",
                   output_type=f".{PACKAGE}.ComputeReply")
    return fdp


_classes = message_factory.GetMessages([_file_proto()])
PingRequest = _classes[f"{PACKAGE}.PingRequest"]
PingReply = _classes[f"{PACKAGE}.PingReply"]
ComputeRequest = _classes[f"{PACKAGE}.ComputeRequest"]
ComputeReply = _classes[f"{PACKAGE}.ComputeReply"]
