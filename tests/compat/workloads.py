"""Everyday workloads that untrusted actions, agent tool calls, CI steps and graders run.

Each workload is a bash script run from a fresh copy of its work directory
(``files``), with optional stdin. The same script runs directly, under
``sandbox exec`` with each built-in policy, and under bubblewrap; the
harness compares exit status and normalised stdout with the direct run.

Scripts write only below ``$T`` (a fresh ``mktemp -d``), the work directory,
or where the workload is about (a venv, a build tree), so a direct run
leaves nothing behind. They never reach the network.
"""
from __future__ import annotations

from dataclasses import dataclass, field

T = 'T=$(mktemp -d); trap "rm -rf $T" EXIT; '


@dataclass(frozen=True)
class Workload:
    name: str
    script: str
    what: str
    stdin: bytes | None = None
    files: dict[str, str] = field(default_factory=dict)
    needs: tuple[str, ...] = ()          # commands that must exist on the host
    executable: tuple[str, ...] = ()     # files of `files` made executable (mode 0755)


HELLO_C = '#include <stdio.h>\nint main(void){puts("hello from c");return 0;}\n'
MAKEFILE = "all: hello\n\t./hello\nhello: hello.c\n\tgcc -o hello hello.c\nclean:\n\trm -f hello\n"
HELLO_JAVA = ('public class Hello { public static void main(String[] a) '
              '{ System.out.println("hello from java"); } }\n')
PKG_SETUP = ("from setuptools import setup\n"
             "setup(name='hellopkg', version='1.0', py_modules=['hellopkg'],\n"
             "      entry_points={'console_scripts': ['hellopkg=hellopkg:main']})\n")
PKG_MOD = "def main():\n    print('hello from a console script')\n"
TEST_PY = "def test_add():\n    assert 1 + 1 == 2\n\ndef test_str():\n    assert 'a'.upper() == 'A'\n"

WORKLOADS: list[Workload] = [
    # -- shell basics and pipelines
    Workload("pipeline", "printf 'b\\na\\nb\\nc\\n' | sort | uniq -c | awk '{print $2\"=\"$1}'",
             "sort | uniq -c | awk"),
    Workload("stdin-cat", "cat", "piped stdin reaches the program", stdin=b"hello stdin\n"),
    Workload("stdin-grader", "python3 -c 'import sys; print(sum(int(x) for x in sys.stdin.read().split()))'",
             "a grader feeding numbers on stdin", stdin=b"1 2 3\n4 5\n"),
    Workload("stdin-wc", "wc -l", "wc -l on stdin", stdin=b"a\nb\nc\n"),
    Workload("read-loop", "while read -r a b; do echo \"$b $a\"; done",
             "bash read loop over stdin", stdin=b"1 one\n2 two\n"),
    Workload("yes-head", "yes | head -n 2; echo \"status ${PIPESTATUS[0]}\"",
             "SIGPIPE ends the writer of a closed pipe"),
    Workload("kill-self-term", "kill -TERM $$; echo still alive", "a shell that signals itself"),
    Workload("kill-self-9", "kill -9 $$; echo still alive", "kill -9 $$"),
    Workload("die-idiom", "die() { echo dying; kill $$; }; die; echo after", "bash die() idiom"),
    Workload("abort", "python3 -c 'import os; os.abort()'", "abort() is SIGABRT"),
    Workload("trap-term", "trap 'echo trapped; exit 3' TERM; kill -TERM $$; sleep 1; echo no",
             "a trap on a signal sent to itself"),
    Workload("orphans", "for i in $(seq 1 200); do (sleep 0.01 &) ; done; sleep 0.5; "
             "for i in $(seq 1 50); do /bin/true || echo fork-failed; done; echo done",
             "200 orphaned grandchildren are reaped"),
    Workload("timeout-cmd", "timeout 0.5 sleep 5; echo \"rc=$?\"", "coreutils timeout"),
    Workload("subshell-exit", "(exit 7); echo \"rc=$?\"; sh -c 'exit 3'; echo \"rc=$?\"",
             "exit codes of subshells"),
    # -- environment and identity
    Workload("env-user", "for v in USER LOGNAME SHELL HOME; do [ -n \"${!v}\" ] && echo \"$v set\" "
             "|| echo \"$v unset\"; done", "USER, LOGNAME, SHELL and HOME are set"),
    Workload("home-passwd", "[ \"$HOME\" = \"$(getent passwd $(id -u) | cut -d: -f6)\" ] "
             "&& echo consistent || echo inconsistent", "HOME agrees with passwd"),
    Workload("home-writable", "touch \"$HOME/.probe\" && echo writable && rm \"$HOME/.probe\"",
             "HOME is writable"),
    Workload("bash-u", "bash -u -c 'echo \"$USER\" >/dev/null && echo ok'", "bash -u with $USER"),
    Workload("tput", "TERM=${TERM:-xterm} tput colors >/dev/null && echo ok", "tput finds terminfo"),
    Workload("id", "id -u >/dev/null && id -un >/dev/null && echo ok", "id resolves the user"),
    Workload("hostname", "getent hosts \"$(hostname)\" >/dev/null && echo resolves",
             "the host name resolves"),
    Workload("ls-root", "ls / >/dev/null && echo listable", "/ is listable"),
    # -- the system view
    Workload("dpkg-list", "[ \"$(dpkg -l | grep -c '^ii')\" -gt 50 ] && echo many-packages",
             "dpkg -l lists installed packages", needs=("dpkg",)),
    Workload("dpkg-status", "dpkg -s coreutils | grep -q '^Status: install ok installed' && echo installed",
             "dpkg -s finds coreutils", needs=("dpkg",)),
    Workload("lscpu", "lscpu | grep -q '^CPU(s):' && echo ok", "lscpu reads /sys", needs=("lscpu",)),
    Workload("nproc", "[ \"$(nproc)\" -ge 1 ] && echo ok", "nproc"),
    Workload("cgroup-visible", "[ -r /sys/fs/cgroup ] && echo visible", "the cgroup tree is visible"),
    Workload("dev-files", "head -c 4 /dev/zero | od -An -tx1 | tr -d ' \\n'; echo; "
             "head -c 16 /dev/urandom | wc -c; echo x > /dev/null && echo null-ok",
             "/dev/null, /dev/zero, /dev/urandom"),
    Workload("pty", "python3 -c 'import os, pty; m, s = pty.openpty(); os.write(s, b\"x\\n\"); "
             "print(os.read(m, 10).strip())'", "pty.openpty()"),
    Workload("script-cmd", "script -qec 'echo in-a-pty' /dev/null | tr -d '\\r'",
             "script runs a command under a pty", needs=("script",)),
    Workload("date-tz", "TZ=UTC date -d @0 +%Y-%m-%d", "date with TZ"),
    # -- files in the work directory and in temp space
    Workload("read-workdir", "sha256sum data.txt | cut -c1-16", "read a file of the work dir",
             files={"data.txt": "payload\n"}),
    Workload("tmp-write", T + "echo hi > $T/f && cat $T/f && mkfifo $T/p && echo fifo-ok",
             "write and mkfifo in temp space"),
    Workload("tar-gzip", T + "tar czf $T/x.tgz data.txt && tar tzf $T/x.tgz",
             "tar and gzip", files={"data.txt": "x\n"}),
    Workload("find-count", "find . -type f | sort", "find in the work dir",
             files={"a/1": "1", "a/2": "2", "b/3": "3"}),
    Workload("many-files", T + "for i in $(seq 1 2000); do echo $i > $T/$i; done; "
             "cat $T/* | wc -l", "write and read 2000 small files"),
    Workload("workdir-write", "echo new > created.txt && cat created.txt",
             "write into the work directory"),
    Workload("git-init", "git init -q repo && cd repo && git config user.email a@b && "
             "git config user.name a && echo x > f && git add f && git commit -qm init && "
             "git log --format=%s", "git init and commit in the work dir", needs=("git",)),
    Workload("make-intree", "make -s && make -s clean", "an in-tree make",
             files={"hello.c": HELLO_C, "Makefile": MAKEFILE}, needs=("make", "gcc")),
    Workload("run-script", "chmod +x run2.sh 2>/dev/null; ./run2.sh", "./script in the work dir",
             files={"run2.sh": "#!/bin/sh\necho from run2\n"}),
    Workload("run-exec", "./run3.sh && ./bin/tool", "an executable script and program of the work dir",
             files={"run3.sh": "#!/bin/sh\necho from run3\n",
                    "bin/tool": "#!/bin/bash\necho from tool\n"},
             executable=("run3.sh", "bin/tool")),
    # -- toolchains
    Workload("gcc-run", T + "gcc -o $T/h hello.c && $T/h", "compile and run in temp space",
             files={"hello.c": HELLO_C}, needs=("gcc",)),
    Workload("java", T + "javac -d $T Hello.java && java -Xmx64m -cp $T Hello",
             "javac and java", files={"Hello.java": HELLO_JAVA}, needs=("javac", "java")),
    Workload("node", "node -e 'console.log([1,2,3].map(x => x * 2).join(\",\"))'",
             "node one-liner", needs=("node",)),
    Workload("perl", "perl -e 'print join(\",\", map { $_ * 2 } 1..3), \"\\n\"'", "perl"),
    Workload("sqlite-cli", T + "sqlite3 $T/db 'create table t(x); insert into t values (1),(2); "
             "select sum(x) from t;'", "sqlite3 CLI on a file", needs=("sqlite3",)),
    Workload("python-sqlite", T + "python3 -c 'import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
             "c.execute(\"create table t(x)\"); c.execute(\"insert into t values (41)\"); "
             "print(c.execute(\"select x+1 from t\").fetchone()[0])' $T/db", "python sqlite3"),
    Workload("venv-pip", T + "python3 -m venv $T/v && . $T/v/bin/activate && "
             "[ \"$(command -v pip)\" = \"$T/v/bin/pip\" ] && echo venv-pip || echo system-pip",
             "an activated venv runs its own pip"),
    Workload("pip-local", T + "python3 -m venv $T/v && $T/v/bin/pip install -q --no-index "
             "--no-build-isolation ./pkg 2>/dev/null && $T/v/bin/hellopkg",
             "pip install of a local package and its console script",
             files={"pkg/setup.py": PKG_SETUP, "pkg/hellopkg.py": PKG_MOD}),
    Workload("unittest", "python3 -m unittest -q test_x 2>&1 | tail -n 1", "python -m unittest",
             files={"test_x.py": "import unittest\nclass T(unittest.TestCase):\n"
                    "    def test_a(self):\n        self.assertEqual(1 + 1, 2)\n"}),
    Workload("pytest", "\"$PY\" -m pytest -q -p no:cacheprovider test_y.py 2>&1 | tail -n 1 | "
             "sed 's/ in .*//'", "pytest in the work dir", files={"test_y.py": TEST_PY}),
    Workload("multiprocessing", "python3 -c 'import multiprocessing as m\n"
             "if __name__ == \"__main__\":\n    print(sum(m.Pool(4).map(abs, range(-50, 50))))'",
             "multiprocessing.Pool"),
    Workload("threads-100", "python3 -c 'import threading; r = []; "
             "ts = [threading.Thread(target=r.append, args=(i,)) for i in range(100)]; "
             "[t.start() for t in ts]; [t.join() for t in ts]; print(len(r))'", "100 threads"),
    Workload("ctypes", "python3 -c 'import ctypes; print(ctypes.CDLL(None).getpid() > 0)'",
             "ctypes loads libc"),
    Workload("subprocess", "python3 -c 'import subprocess; "
             "print(subprocess.run([\"echo\", \"child\"], capture_output=True, text=True).stdout.strip())'",
             "subprocess from python"),
    Workload("unix-socket", T + "python3 -c 'import socket, sys, os\n"
             "p = os.path.join(sys.argv[1], \"s\"); s = socket.socket(socket.AF_UNIX); s.bind(p); s.listen()\n"
             "c = socket.socket(socket.AF_UNIX); c.connect(p); a, _ = s.accept(); c.sendall(b\"ping\")\n"
             "print(a.recv(4).decode())' $T", "a UNIX socket the program binds itself"),
    Workload("loopback-tcp", "python3 -c 'import socket\n"
             "s = socket.socket(); s.bind((\"127.0.0.1\", 0)); s.listen()\n"
             "c = socket.create_connection(s.getsockname()); a, _ = s.accept(); c.sendall(b\"pong\")\n"
             "print(a.recv(4).decode())'", "a loopback TCP server and client"),
    Workload("ulimit", "ulimit -n >/dev/null && echo ok", "ulimit"),
    Workload("wget-unreachable", "wget -q -O- http://127.0.0.1:1/; echo \"rc=$?\"",
             "a client meets a closed port (or no network) and gives up at once",
             needs=("wget",)),
    # -- shared memory, locks, job control, big streams
    Workload("shm", "python3 -c 'from multiprocessing import shared_memory as s\n"
             "m = s.SharedMemory(create=True, size=10); m.buf[0] = 7; print(m.buf[0])\n"
             "m.close(); m.unlink()'", "POSIX shared memory in /dev/shm"),
    Workload("semaphore", "python3 -c 'import multiprocessing as m; l = m.Lock(); l.acquire(); "
             "print(\"locked\")'", "a POSIX semaphore (multiprocessing.Lock)"),
    Workload("flock", T + "flock $T/l -c 'echo locked'", "flock on a temp file", needs=("flock",)),
    Workload("sort-spill", "seq 1 300000 | sort -rn -S 100K | head -n 1",
             "sort spills to its temp files"),
    Workload("xargs-parallel", "seq 1 20 | xargs -P4 -n1 echo | sort -n | tail -n 1",
             "xargs -P runs four at a time"),
    Workload("job-control", "set -m; sleep 0.1 & fg %1 >/dev/null; echo \"rc=$?\"",
             "bash job control without a terminal"),
    Workload("setsid", "setsid -w sh -c 'echo in-a-new-session'", "setsid", needs=("setsid",)),
    Workload("stdout-3mb", "head -c 3000000 /dev/zero | tr '\\0' a | md5sum | cut -c1-8",
             "3 MB through a pipe"),
    Workload("stdin-3mb", "md5sum | cut -c1-8", "3 MB of stdin", stdin=b"x" * 3_000_000),
    Workload("ssh-keygen", T + "ssh-keygen -q -t ed25519 -N '' -f $T/k && ls $T | sort",
             "ssh-keygen writes a key pair", needs=("ssh-keygen",)),
    Workload("jq", "echo '{\"a\": [1, 2, 3]}' | jq -c '.a | map(. * 2)'", "jq", needs=("jq",)),
]
