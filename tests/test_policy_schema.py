"""docs/policy.schema.json agrees with the loader.

No jsonschema dependency: a small validator for exactly the keywords the
schema uses (it refuses any other keyword, so the schema cannot grow beyond
what is tested). Checked: every built-in validates; every bad sample is
rejected by BOTH the schema and the loader; good samples are accepted by
both; and the schema's tables and keys are exactly the loader's (spec.py).
"""
from __future__ import annotations

import json
import os
import re
import tomllib

import pytest

from sandbox.errors import PolicyError
from sandbox.policy import parse_policy
from sandbox.policy.search import builtin_dir
from sandbox.policy.spec import TABLES, TOP

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(REPO, "docs", "policy.schema.json")) as f:
    SCHEMA = json.load(f)

ANNOTATIONS = {"$schema", "$id", "title", "description", "default", "examples", "$comment", "$defs"}


class Invalid(Exception):
    pass


def _type_ok(value, t: str) -> bool:
    if t == "object":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    if t == "string":
        return isinstance(value, str)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    raise AssertionError(f"type {t!r} not supported by the test validator")


def validate(value, schema, where="$"):
    for kw in schema:
        if kw not in ANNOTATIONS | {"type", "properties", "additionalProperties", "items", "enum",
                                    "const", "pattern", "minimum", "exclusiveMinimum", "minLength",
                                    "oneOf", "anyOf", "not", "$ref", "propertyNames"}:
            raise AssertionError(f"schema keyword {kw!r} not supported by the test validator")
    if "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/$defs/")
        validate(value, SCHEMA["$defs"][ref.split("/")[-1]], where)
    if "type" in schema and not _type_ok(value, schema["type"]):
        raise Invalid(f"{where}: not {schema['type']}")
    if "enum" in schema and value not in schema["enum"]:
        raise Invalid(f"{where}: not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        raise Invalid(f"{where}: not {schema['const']!r}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise Invalid(f"{where}: does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0):
            raise Invalid(f"{where}: too short")
    if _type_ok(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            raise Invalid(f"{where}: below minimum")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            raise Invalid(f"{where}: not above exclusiveMinimum")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for k, v in value.items():
            if "propertyNames" in schema:
                validate(k, schema["propertyNames"], f"{where}.{k}(name)")
            if k in props:
                validate(v, props[k], f"{where}.{k}")
            elif schema.get("additionalProperties") is False:
                raise Invalid(f"{where}: unexpected key {k!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                validate(v, schema["additionalProperties"], f"{where}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            validate(v, schema["items"], f"{where}[{i}]")
    if "oneOf" in schema:
        ok = sum(1 for s in schema["oneOf"] if _valid(value, s, where))
        if ok != 1:
            raise Invalid(f"{where}: matches {ok} of oneOf")
    if "anyOf" in schema and not any(_valid(value, s, where) for s in schema["anyOf"]):
        raise Invalid(f"{where}: matches none of anyOf")
    if "not" in schema and _valid(value, schema["not"], where):
        raise Invalid(f"{where}: matches a forbidden form")


def _valid(value, schema, where="$") -> bool:
    try:
        validate(value, schema, where)
        return True
    except Invalid:
        return False


def loader_accepts(text: str) -> bool:
    try:
        parse_policy(text)
        return True
    except PolicyError:
        return False


BUILTIN_FILES = sorted(f for f in os.listdir(builtin_dir()) if f.endswith(".toml"))


def test_there_are_builtins():
    assert {"base.toml", "strict.toml", "default.toml"} <= set(BUILTIN_FILES)


@pytest.mark.parametrize("name", BUILTIN_FILES)
def test_builtin_validates(name):
    with open(os.path.join(builtin_dir(), name), "rb") as f:
        validate(tomllib.load(f), SCHEMA)


GOOD = [
    "",
    'name = "x"\nbest_effort = true\nextends = ["base"]\n',
    '[filesystem]\nread = ["/usr", "${PYTHON}", "${WORKDIR}/in/**/*.py", "/a$b"]\ntmp_size = "1.5K"\n',
    '[filesystem]\nwrite = ["/tmp/run/out"]\ndeny = ["/proc/kcore", "/tmp"]\n',
    '[filesystem]\nread = ["/a..b/..c/d.."]\nallow_credentials = [".aws", ".kube", "*"]\n',
    '[limits]\ncpu = 0.5\nwall = "2min"\nmemory = "unlimited"\nfile_size = 1\nprocesses = "unlimited"\n',
    '[limits]\nmemory = " 2 GiB "\nwall = "500ms"\nopen_files = 3\n',
    '[syscalls]\nprofile = "strict"\nallow = ["ptrace"]\ndeny = ["mount"]\non_violation = "kill"\n',
    '[env]\nkeep = ["PATH", "_X1"]\nset = { LANG = "C", _y = "" }\n',
    '[audit]\nfiles = "all"\n[network]\nmode = "host"\n',
    '[network]\nmode = "allowlist"\nallow = ["pypi.org:443", "*.pythonhosted.org:443", "10.0.0.0/8:5432", '
    '"api.example.com:80-8080", "[::1]:*", "[fd00::/8]:22"]\ndeny_private = false\ndns = true\n',
]

BAD = [
    'colour = "red"\n',
    'name = 1\n',
    'best_effort = "no"\n',
    'extends = "base"\n',
    'extends = [""]\n',
    '[filesystem]\nread = ["relative"]\n',
    '[filesystem]\nread = ["~/x"]\n',
    '[filesystem]\nread = ["${NOPE}/x"]\n',
    '[filesystem]\nread = ["/x/${HOME"]\n',
    '[filesystem]\nread = ["/x/${home}"]\n',
    '[filesystem]\nread = [""]\n',
    '[filesystem]\nread = "/usr"\n',
    '[filesystem]\nwrite = ["/tmp"]\n',
    '[filesystem]\nread = ["/proc"]\n',
    '[filesystem]\nexec = ["/proc/self/exe"]\n',
    '[filesystem]\nread = ["/dev/"]\n',
    '[filesystem]\ntmp_size = 0\n',
    '[filesystem]\ntmp_size = "unlimited"\n',
    '[filesystem]\ntmp_size = "1KB"\n',
    '[filesystem]\nmount = ["/x"]\n',
    '[filesystem]\nwrite = ["${OUTPUT}/../../etc/cron.d"]\n',
    '[filesystem]\ndeny = ["/a/.."]\n',
    '[filesystem]\nallow_credentials = [".sshh"]\n',
    '[filesystem]\nallow_credentials = ".ssh"\n',
    '[network]\nmode = "internet"\n',
    '[network]\nmode = "allowlist"\nallow = ["pypi.org"]\n',
    '[network]\nmode = "allowlist"\nallow = ["pypi.org:https"]\n',
    '[network]\nmode = "allowlist"\nallow = "pypi.org:443"\n',
    '[network]\nmode = "allowlist"\ndns = "yes"\n',
    'network = "none"\n',
    '[limits]\nmemory = "0MiB"\n',
    '[limits]\nmemory = -1\n',
    '[limits]\nmemory = true\n',
    '[limits]\nmemory = 1.5\n',
    '[limits]\nwall = "10 days"\n',
    '[limits]\nwall = 0\n',
    '[limits]\nwall = "0s"\n',
    '[limits]\ncpu = "1S"\n',
    '[limits]\nprocesses = 0\n',
    '[limits]\nprocesses = 2.0\n',
    '[limits]\nprocesses = "10"\n',
    '[limits]\nstack = "8M"\n',
    '[syscalls]\nprofile = "none"\n',
    '[syscalls]\nallow = ["Open"]\n',
    '[syscalls]\non_violation = "trap"\n',
    '[audit]\nfiles = "yes"\n',
    '[env]\nkeep = ["A-B"]\n',
    '[env]\nset = { A = 1 }\n',
    '[env]\nset = { "1A" = "x" }\n',
    '[env]\nunset = ["A"]\n',
]

LOADER_ONLY = [   # rejected by the loader only: beyond what a schema can say
    '[syscalls]\nallow = ["no_such_syscall"]\n',
    '[syscalls]\nallow = ["ptrace"]\ndeny = ["ptrace"]\n',
    '[filesystem]\ntmp_size = "1.3K"\n',
    'extends = ["no_such_policy_anywhere"]\n',
    '[filesystem]\nread = ["//proc"]\n',
]


@pytest.mark.parametrize("text", GOOD)
def test_good_samples_accepted_by_both(text):
    validate(tomllib.loads(text), SCHEMA)
    assert loader_accepts(text)


@pytest.mark.parametrize("text", BAD)
def test_bad_samples_rejected_by_both(text):
    assert not _valid(tomllib.loads(text), SCHEMA), "the schema accepts it"
    assert not loader_accepts(text), "the loader accepts it"


@pytest.mark.parametrize("text", LOADER_ONLY)
def test_loader_is_stricter_where_documented(text):
    assert _valid(tomllib.loads(text), SCHEMA)
    assert not loader_accepts(text)


# Kind (spec.py) -> the schema fragment that must describe it.
EXPECTED = {
    "string": {"type": "string"},
    "bool": {"type": "boolean"},
    "path_list": {"$ref": "#/$defs/pathList"},
    "size": {"$ref": "#/$defs/size"},
    "limit_size": {"$ref": "#/$defs/limitSize"},
    "limit_duration": {"$ref": "#/$defs/limitDuration"},
    "limit_count": {"$ref": "#/$defs/limitCount"},
    "count": {"type": "integer", "minimum": 1},
    "syscall_list": {"$ref": "#/$defs/syscallList"},
    "credential_list": {"$ref": "#/$defs/credentialList"},
}


def _strip(fragment: dict) -> dict:
    return {k: v for k, v in fragment.items() if k not in ANNOTATIONS}


def test_schema_keys_are_the_loaders_keys():
    props = SCHEMA["properties"]
    assert set(props) == set(TOP) | set(TABLES)
    for table, keys in TABLES.items():
        assert set(props[table]["properties"]) == set(keys), table
        assert props[table]["additionalProperties"] is False
    assert SCHEMA["additionalProperties"] is False


def test_schema_kinds_match_the_loaders_kinds():
    def frag(table, key):
        return _strip(SCHEMA["properties"][key] if table is None else SCHEMA["properties"][table]["properties"][key])

    for table, keys in [(None, TOP), *TABLES.items()]:
        for key, kind in keys.items():
            f = frag(table, key)
            if kind.name == "enum":
                assert sorted(f["enum"]) == sorted(kind.choices), (table, key)
            elif kind.name == "path_list" and table == "filesystem" and key != "deny":
                assert f == {"$ref": "#/$defs/allowPathList"}, (table, key)
            elif kind.name in EXPECTED:
                assert f == EXPECTED[kind.name], (table, key, f)
            elif kind.name == "name_list":
                assert f["type"] == "array" and f["items"]["type"] == "string"
            elif kind.name == "envname_list":
                assert f == {"type": "array", "items": {"$ref": "#/$defs/envName"}}
            elif kind.name == "env_table":
                assert f["type"] == "object" and f["additionalProperties"] == {"type": "string"}
            elif kind.name == "net_allow_list":   # the pattern: tests/test_netallow_policy.py
                assert f["type"] == "array" and set(f["items"]) == {"type", "pattern"}
            else:
                raise AssertionError(f"kind {kind.name} of {table}.{key} has no schema check")


def test_validator_itself_can_fail():
    with pytest.raises(Invalid):
        validate({"limits": {"memory": "lots"}}, SCHEMA)
    with pytest.raises(AssertionError):
        validate(1, {"maxLength": 3})
