"""The documented contract, checked against live traffic: every message the server sends to a
worker, client or debug viewer must match its JSON Schema in docs/schemas/switchboard.json,
and every REST response must match docs/openapi.yaml. `sb.Peer` and `sb.rest` call these on
everything they receive, so every integration test checks the contract as it runs."""
import json
import os
import urllib.parse

from jsonschema import Draft202012Validator
from openapi_core import OpenAPI
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from openapi_core.testing import MockRequest, MockResponse
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCHEMA_PATH = os.path.join(ROOT, "docs", "schemas", "switchboard.json")
OPENAPI_PATH = os.path.join(ROOT, "docs", "openapi.yaml")

SCHEMA = json.load(open(SCHEMA_PATH))
REGISTRY = Registry().with_resource("urn:switchboard", Resource.from_contents(SCHEMA, default_specification=DRAFT202012))
_validators = {}
_api = None

# Counted so a test can show that validation ran (and on how much).
checked = {"messages": 0, "rest": 0}


def validator(name):
    if name not in _validators:
        if name not in SCHEMA["$defs"]:
            raise AssertionError(f"no schema for {name!r} in docs/schemas/switchboard.json")
        _validators[name] = Draft202012Validator({"$ref": f"urn:switchboard#/$defs/{name}"}, registry=REGISTRY)
    return _validators[name]


def check(name, value):
    errors = sorted(validator(name).iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        raise AssertionError(f"{name} does not match its schema at {list(e.absolute_path)}: {e.message}\n{json.dumps(value)[:2000]}")


def check_server_message(m, role):
    """A message received on a worker, client or debug connection."""
    checked["messages"] += 1
    if role == "debug" and "direction" in m:
        if m["direction"].startswith("cdp_"):
            check("debug.cdp", m)
            return
        check("debug.envelope", m)
        inner = m["message"]
        # What the server sent is checked; what peers sent may be hostile test input.
        if m["direction"].startswith("server"):
            check_server_message(inner, "worker")
        return
    t = m.get("type") if isinstance(m, dict) else None
    if not (isinstance(t, str) and (t.startswith("server.") or t in ("server.phase",))):
        raise AssertionError(f"the server sent a message with no server type: {json.dumps(m)[:500]}")
    if t == "server.phase":
        assert set(m) == {"type", "phase"} and m["phase"] in SCHEMA["$defs"]["Phase"]["enum"], m
        return
    check(t, m)
    if t == "server.replay":
        for inner in m["messages"]:
            check_server_message(inner, role)


def api():
    global _api
    if _api is None:
        _api = OpenAPI.from_file_path(OPENAPI_PATH)
    return _api


def check_rest(port, method, target, status, content_type, body):
    """A REST response. Paths the document does not list must answer 404/405 with the error envelope."""
    checked["rest"] += 1
    url = urllib.parse.urlsplit(target)
    args = dict(urllib.parse.parse_qsl(url.query))
    path = url.path.rstrip("/") if url.path != "/" else url.path
    request = MockRequest(f"http://127.0.0.1:{port}", method.lower(), path, args=args)
    response = MockResponse(body, status_code=status, content_type=(content_type or "").split(";")[0])
    try:
        api().validate_response(request, response)
    except (PathNotFound, OperationNotFound):
        assert status in (404, 405), f"{method} {target} answered {status} but is not in docs/openapi.yaml"
        check("APIError", json.loads(body))
    except Exception as e:
        raise AssertionError(f"{method} {target} → {status} does not match docs/openapi.yaml: {e!r} {getattr(e, '__cause__', '')!r}\n{body[:2000]!r}")
