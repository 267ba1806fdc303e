"""An OTLP profiles receiver for rover's push tests, built only on the
official OpenTelemetry classes (PyPI opentelemetry-proto) and grpcio.

    receiver.py (grpc|http) PORT RECORD [--slow SECONDS] [--unavailable N]
                [--partial N] [--refuse] [--hold FILE]

Listens on 127.0.0.1:PORT (0: any free port), prints "port N" once it
listens, and appends one JSON line per request to RECORD (flushed at once,
so a receiver killed mid-run keeps what it had). Requests it takes are
recorded with what they carried; requests it refuses are recorded as
{"refused": ...}.

Faults: --slow sleeps before each answer; --unavailable answers the first N
requests UNAVAILABLE (gRPC) or 503 with Retry-After: 0 (HTTP); --partial
answers a partial success rejecting N profiles; --refuse answers every
request INVALID_ARGUMENT / 400; --hold waits until FILE exists before
answering.
"""

import argparse
import gzip
import json
import os
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.profiles.v1development import (
    profiles_service_pb2 as service,
    profiles_service_pb2_grpc as service_grpc,
)

PATH = "/v1development/profiles"
REJECTION = "rover test receiver: rejected on purpose"


def any_value(value):
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def summary(request, extra):
    """What a request carried, as the official classes decode it."""
    dictionary = request.dictionary
    strings = dictionary.string_table
    profiles = 0
    samples = 0
    sample_types = set()
    resources = []
    for resource_profiles in request.resource_profiles:
        resources.append(
            {a.key: any_value(a.value) for a in resource_profiles.resource.attributes}
        )
        for scope in resource_profiles.scope_profiles:
            for profile in scope.profiles:
                profiles += 1
                sample_type = profile.sample_type
                sample_types.add(
                    strings[sample_type.type_strindex] + "/" + strings[sample_type.unit_strindex]
                )
                for sample in profile.samples:
                    samples += sum(sample.values) if sample.values else len(sample.timestamps_unix_nano)
    functions = sorted(
        {strings[f.name_strindex] for f in dictionary.function_table if f.name_strindex}
    )
    record = {
        "profiles": profiles,
        "samples": samples,
        "sample_types": sorted(sample_types),
        "resources": resources,
        "functions": functions,
        "string_table_0": strings[0] if strings else None,
    }
    record.update(extra)
    return record


class Receiver:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.seen = 0
        self.out = open(args.record, "a", encoding="utf-8")

    def record(self, line):
        with self.lock:
            self.out.write(json.dumps(line) + "\n")
            self.out.flush()

    def fault(self):
        """The fault this request meets: None, "unavailable" or "refuse"."""
        with self.lock:
            self.seen += 1
            seen = self.seen
        if self.args.hold:
            while not os.path.exists(self.args.hold):
                time.sleep(0.02)
        if self.args.slow:
            time.sleep(self.args.slow)
        if self.args.refuse:
            return "refuse"
        if seen <= self.args.unavailable:
            return "unavailable"
        return None

    def response(self):
        if self.args.partial:
            return service.ExportProfilesServiceResponse(
                partial_success=service.ExportProfilesPartialSuccess(
                    rejected_profiles=self.args.partial, error_message=REJECTION
                )
            )
        return service.ExportProfilesServiceResponse()


class Service(service_grpc.ProfilesServiceServicer):
    def __init__(self, receiver):
        self.receiver = receiver

    def Export(self, request, context):
        fault = self.receiver.fault()
        if fault == "unavailable":
            self.receiver.record({"refused": "UNAVAILABLE"})
            context.abort(grpc.StatusCode.UNAVAILABLE, "rover test receiver: unavailable")
        if fault == "refuse":
            self.receiver.record({"refused": "INVALID_ARGUMENT"})
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "rover test receiver: refused")
        metadata = dict(context.invocation_metadata())
        self.receiver.record(
            summary(request, {"transport": "grpc", "x_rover_test": metadata.get("x-rover-test")})
        )
        return self.receiver.response()


def serve_grpc(receiver, port):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    service_grpc.add_ProfilesServiceServicer_to_server(Service(receiver), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    if bound == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    server.start()
    print(f"port {bound}", flush=True)
    server.wait_for_termination()


def serve_http(receiver, port):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def answer(self, status, body, content_type, extra=()):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in extra:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            if self.path != PATH:
                self.receiver_record({"refused": "path " + self.path})
                return self.answer(404, b"not found", "text/plain")
            fault = receiver.fault()
            if fault == "unavailable":
                receiver.record({"refused": "503"})
                return self.answer(503, b"unavailable", "text/plain", [("Retry-After", "0")])
            if fault == "refuse":
                receiver.record({"refused": "400"})
                return self.answer(400, b"refused", "text/plain")
            encoding = self.headers.get("Content-Encoding")
            body = gzip.decompress(raw) if encoding == "gzip" else raw
            request = service.ExportProfilesServiceRequest.FromString(body)
            receiver.record(
                summary(
                    request,
                    {
                        "transport": "http",
                        "content_type": self.headers.get("Content-Type"),
                        "content_encoding": encoding,
                        "x_rover_test": self.headers.get("x-rover-test"),
                    },
                )
            )
            self.answer(
                200, receiver.response().SerializeToString(), "application/x-protobuf"
            )

        def receiver_record(self, line):
            receiver.record(line)

    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"port {server.server_address[1]}", flush=True)
    server.serve_forever()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("transport", choices=["grpc", "http"])
    parser.add_argument("port", type=int)
    parser.add_argument("record")
    parser.add_argument("--slow", type=float, default=0.0)
    parser.add_argument("--unavailable", type=int, default=0)
    parser.add_argument("--partial", type=int, default=0)
    parser.add_argument("--refuse", action="store_true")
    parser.add_argument("--hold")
    args = parser.parse_args()
    receiver = Receiver(args)
    if args.transport == "grpc":
        serve_grpc(receiver, args.port)
    else:
        serve_http(receiver, args.port)


if __name__ == "__main__":
    main()
