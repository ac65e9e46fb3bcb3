"""Filesystem probe run INSIDE a sandbox: attempt each case, print what the kernel allowed.

Self-contained (standard library only): the tests pass this file's source to
``python -I -c`` because tests/ is not in the sandbox's view. argv[1] is a
JSON object {"setup": [...], "cases": [...]}; stdout gets one JSON object
{"setup": [...], "results": [...]}, one result per case in order:

    {"ok": bool, "errno": "EACCES" | None, ...identity evidence}

Identity evidence lets the host tell "the kernel gave access to the host's
object" from "an operation succeeded on some other object" (a mask, the
sandbox's own /tmp): ``head`` (first bytes read), ``ino`` (stat), ``rc`` and
``out`` (exec). Operations:

- read: a directory is listed (os.listdir); a file is opened O_RDONLY and read
- write: open(O_WRONLY|O_APPEND) of an existing file (no O_CREAT, no truncation),
  then the case's marker is appended
- create: open(O_WRONLY|O_CREAT|O_EXCL), the marker written
- delete: unlink
- exec: run the path (subprocess: fork + execve), capture rc and stdout
- metadata: stat (follows symlinks, like the engine's canonical path)
- link: os.link(src, path): a new hard link (not an engine operation)

Setup steps run first, e.g. copying an executable into the private /tmp.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys

HEAD = 200


def _err(exc: OSError) -> dict:
    return {"ok": False, "errno": errno.errorcode.get(exc.errno or 0, str(exc.errno))}


def attempt(case: dict) -> dict:
    op, path = case["op"], case["path"]
    try:
        if op == "read":
            if case.get("dir"):
                names = os.listdir(path)
                return {"ok": True, "errno": None, "entries": len(names)}
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                data = os.read(fd, HEAD)
            finally:
                os.close(fd)
            return {"ok": True, "errno": None, "head": data.decode("latin-1")}
        if op == "write":
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            try:
                os.write(fd, case["marker"].encode())
            finally:
                os.close(fd)
            return {"ok": True, "errno": None}
        if op == "create":
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, case["marker"].encode())
            finally:
                os.close(fd)
            return {"ok": True, "errno": None}
        if op == "delete":
            os.unlink(path)
            return {"ok": True, "errno": None}
        if op == "metadata":
            st = os.stat(path)
            return {"ok": True, "errno": None, "ino": st.st_ino}
        if op == "exec":
            proc = subprocess.run([path], stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=30)
            return {"ok": True, "errno": None, "rc": proc.returncode,
                    "out": proc.stdout.decode("latin-1")}
        if op == "link":
            os.link(case["src"], path)
            return {"ok": True, "errno": None}
        return {"ok": False, "errno": "PROBE: unknown op " + op}
    except OSError as exc:
        return _err(exc)


def setup(step: dict) -> str:
    try:
        if step["do"] == "copy_exec":
            shutil.copyfile(step["src"], step["dst"])
            os.chmod(step["dst"], 0o755)
        elif step["do"] == "write":
            with open(step["dst"], "w") as f:
                f.write(step["text"])
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))


def main() -> None:
    spec = json.loads(sys.argv[1])
    done = [setup(s) for s in spec.get("setup", [])]
    results = [attempt(c) for c in spec["cases"]]
    sys.stdout.write(json.dumps({"setup": done, "results": results}))


if __name__ == "__main__":
    main()
