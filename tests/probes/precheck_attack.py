"""Run in a fresh interpreter by tests/test_nested_precheck.py: the launcher's
peak RSS (VmHWM) around a run whose action plants a large .py file and asks
for a nested spawn importing it, while a bystander run goes on in parallel.

    precheck_attack.py CODE_PATHS(:-separated) MODULE SIZE PLANT_DIR
PLANT_DIR is granted for writing (${OUTPUT} is a private tmpfs until the run
ends: a planted file must be in a host tree to be seen mid-run).
Prints one JSON line.
"""
import dataclasses
import json
import sys
import threading

from sandbox.launcher.launcher import Launcher
from sandbox.policy.loader import load_policy


def hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


code_paths, module, size, plant = sys.argv[1].split(":"), sys.argv[2], int(sys.argv[3]), sys.argv[4]
pol = load_policy("default")
pol = pol.replace(filesystem=dataclasses.replace(pol.filesystem,
                                                 write=(*pol.filesystem.write, plant)))
launcher = Launcher(capture_output=True)
launcher.spawn(["/bin/true"], policy="default")  # warm: imports, fork server
before = hwm()
wf = {"name": "attack", "imports": ["plant_actions"],
      "stages": [{"id": "s", "actions": [{"name": "plant.and_nest",
                                            "params": {"size": size, "module": module,
                                                       "dir": plant}}]}]}
bystander = {}
t = threading.Thread(target=lambda: bystander.update(
    status=launcher.spawn(["/bin/sh", "-c", "echo hi"], policy="default").status))
t.start()
r = launcher.spawn(wf, policy=pol, code_paths=code_paths)
t.join()
print(json.dumps({"status": r.status, "reason": r.reason, "child": r.store.get("child"),
                  "grown": hwm() - before, "bystander": bystander.get("status")}))
