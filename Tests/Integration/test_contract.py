"""The documents themselves: docs/openapi.yaml and docs/asyncapi.yaml validate against their
specifications, refer only to schemas that exist, cover every message; and the live checks in
`contract` (run on all traffic of every integration test) reject what does not match."""
import copy
import json
import os
import pathlib

import pytest
import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from openapi_spec_validator.readers import read_from_filename
from pydantic_asyncapi.v3 import AsyncAPI

import contract
import sb
from conftest import ROOT

DOCS = os.path.join(ROOT, "docs")


def refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from refs(v)


def resolve(doc, ref):
    """Follows a local (#/…) or schema-file reference; fails when it points nowhere."""
    where, _, pointer = ref.partition("#")
    target = doc if not where else json.load(open(os.path.join(DOCS, where)))
    for part in [p for p in pointer.split("/") if p]:
        target = target[part]
    return target


def test_the_schemas_are_valid_json_schema_2020_12():
    Draft202012Validator.check_schema(contract.SCHEMA)
    for name in contract.SCHEMA["$defs"]:
        contract.validator(name)   # every definition compiles and its references resolve
    for r in refs(contract.SCHEMA):
        resolve(contract.SCHEMA, r)


def test_openapi_document_is_valid_and_complete():
    spec, _ = read_from_filename(os.path.join(DOCS, "openapi.yaml"))
    validate_openapi(spec, base_uri=pathlib.Path(DOCS, "openapi.yaml").as_uri())
    for r in refs(spec):
        resolve(spec, r)
    paths = set(spec["paths"])
    for p in ["/v1/sessions", "/v1/sessions/{id}", "/v1/sessions/{id}/events", "/v1/sessions/{id}/journal",
              "/v1/sessions/{id}/cdp/json/version", "/v1/sessions/{id}/cdp/json/list", "/sessions/{id}/ws", "/sessions/{id}/cdp",
              "/healthz", "/readyz", "/version", "/metrics"]:
        assert p in paths, p
    # A broken document is refused (the validator is not a formality).
    broken = copy.deepcopy(spec)
    broken["paths"]["/healthz"]["get"]["responses"] = {"200": {"content": {}}}
    with pytest.raises(Exception):
        validate_openapi(broken, base_uri=pathlib.Path(DOCS, "openapi.yaml").as_uri())


def test_asyncapi_document_is_valid_and_covers_every_message():
    doc = yaml.safe_load(open(os.path.join(DOCS, "asyncapi.yaml")))
    AsyncAPI.model_validate(doc)
    for r in refs(doc):
        resolve(doc, r)
    payloads = {m["payload"]["schema"]["$ref"].split("/")[-1] for m in doc["components"]["messages"].values()}
    for m in doc["components"]["messages"].values():
        assert m["payload"]["schemaFormat"] == "application/schema+json;version=draft-2020-12"
    wire = {n for n in contract.SCHEMA["$defs"] if n.split(".")[0] in ("server", "worker", "client", "debug", "cdp")}
    assert wire == payloads, wire ^ payloads
    # Operations only name messages of their own channel.
    for name, op in doc["operations"].items():
        channel = op["channel"]["$ref"].split("/")[-1]
        for m in op["messages"]:
            assert m["$ref"].startswith(f"#/channels/{channel}/messages/"), (name, m)
    broken = copy.deepcopy(doc)
    broken["operations"]["workerSends"]["action"] = "publish"
    with pytest.raises(Exception):
        AsyncAPI.model_validate(broken)


def test_live_checks_reject_what_does_not_match(server):
    """Real messages pass; each mutation of them is caught."""
    async def main():
        s, w, c = await sb.pair(server.port)
        d = await sb.Peer.connect(s, "debug")
        await w.send({"type": "worker.command", "id": "c1", "command": "title"})
        cmd = await c.expect("server.command")
        await c.send({"type": "client.command_response", "id": "c1", "result": {"value": "T"}})
        result = await w.expect("server.command_result")
        envelope = await d.recv()
        return w.hello, cmd, result, envelope
    before = dict(contract.checked)
    hello, cmd, result, envelope = sb.run(main())
    assert contract.checked["messages"] > before["messages"] + 4 and contract.checked["rest"] > before["rest"]
    for good, role in [(hello, "worker"), (cmd, "client"), (result, "worker"), (envelope, "debug")]:
        contract.check_server_message(good, role)
    bad = [({k: v for k, v in hello.items() if k != "sessionId"}, "worker"),
           (dict(cmd, timeoutMs="30s"), "client"),
           (dict(result, extra=1), "worker"),
           (dict(cmd, type="server.unknown"), "client"),
           (dict(cmd, type="client.command_response"), "client"),
           (dict(envelope, direction="sideways"), "debug"),
           ({"type": "server.replay", "fromSeq": 1, "toSeq": 1, "complete": True, "messages": [dict(cmd, seq="1")]}, "client")]
    for message, role in bad:
        with pytest.raises(AssertionError):
            contract.check_server_message(message, role)
    with pytest.raises(AssertionError):
        contract.check_rest(server.port, "GET", "/healthz", 200, "application/json", b'{"status":"fine"}')
    with pytest.raises(AssertionError):
        contract.check_rest(server.port, "GET", "/v1/sessions", 200, "application/json", b'{"sessions":[{}],"next":null}')
    with pytest.raises(AssertionError):
        contract.check_rest(server.port, "GET", "/v1/sessions", 418, "application/json", b'{"error":{"code":"x","message":"y"}}')


def test_every_metric_is_documented_in_operations(server):
    _, text = sb.rest(server.port, "GET", "/metrics")
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    assert len(names) > 20
    ops = open(os.path.join(DOCS, "operations.md")).read()
    missing = sorted(n for n in names if f"`{n}" not in ops)
    assert not missing, f"metrics not described in docs/operations.md: {missing}"
