"""Decodes a serialized ExportProfilesServiceRequest with the official
OpenTelemetry classes (PyPI opentelemetry-proto) and prints what it holds
as JSON, for rover's tests to check. Checks the dictionary's invariants
itself: a violation exits 1 with the reason.

usage: python3 decode.py REQUEST_FILE
"""
import json
import sys

from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2


def fail(why):
    print(why, file=sys.stderr)
    sys.exit(1)


def any_value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def main():
    request = profiles_service_pb2.ExportProfilesServiceRequest()
    with open(sys.argv[1], "rb") as f:
        request.ParseFromString(f.read())
    if not request.HasField("dictionary"):
        fail("no dictionary")
    d = request.dictionary
    strings = list(d.string_table)
    if not strings or strings[0] != "":
        fail("string_table[0] is not the empty string")
    for name in ("mapping_table", "location_table", "function_table", "link_table",
                 "attribute_table", "stack_table"):
        table = getattr(d, name)
        if len(table) == 0 or table[0].ByteSize() != 0:
            fail(f"{name}[0] is not the zero value")

    def string(i):
        if not 0 <= i < len(strings):
            fail(f"string index {i} out of range")
        return strings[i]

    def attribute(i):
        a = d.attribute_table[i]
        return string(a.key_strindex), any_value(a.value)

    def location(i):
        loc = d.location_table[i]
        names = [string(d.function_table[line.function_index].name_strindex) for line in loc.lines]
        frame_type = dict(attribute(a) for a in loc.attribute_indices).get("profile.frame.type")
        mapping = d.mapping_table[loc.mapping_index]
        return {
            "functions": names,
            "frame_type": frame_type,
            "mapping": string(mapping.filename_strindex),
            "mapping_attributes": dict(attribute(a) for a in mapping.attribute_indices),
        }

    out = {"resources": []}
    for rp in request.resource_profiles:
        resource = {kv.key: any_value(kv.value) for kv in rp.resource.attributes}
        profiles = []
        for sp in rp.scope_profiles:
            for p in sp.profiles:
                samples = []
                seen = set()
                for s in p.samples:
                    attributes = [attribute(a) for a in s.attribute_indices]
                    key = (s.stack_index, tuple(s.attribute_indices))
                    if key in seen:
                        fail("two samples with the same stack and attributes")
                    seen.add(key)
                    if len(s.values) != 1:
                        fail(f"a sample with {len(s.values)} values")
                    stack = [location(i) for i in d.stack_table[s.stack_index].location_indices]
                    samples.append({
                        "value": s.values[0],
                        "attributes": dict(attributes),
                        "stack": stack,
                    })
                profiles.append({
                    "scope": sp.scope.name,
                    "sample_type": [string(p.sample_type.type_strindex),
                                    string(p.sample_type.unit_strindex)],
                    "period_type": [string(p.period_type.type_strindex),
                                    string(p.period_type.unit_strindex)],
                    "period": p.period,
                    "time_unix_nano": p.time_unix_nano,
                    "duration_nano": p.duration_nano,
                    "profile_id": p.profile_id.hex(),
                    "samples": samples,
                })
        out["resources"].append({"attributes": resource, "profiles": profiles})
    json.dump(out, sys.stdout)


main()
