"""Compile a resolved syscall `Table` into a classic-BPF seccomp program, and run one.

Why not libseccomp's compiler: libseccomp 2.5.4 (Debian 12) cannot express
what the profiles need. It refuses two comparisons on the same argument
(EINVAL), refuses a rule whose action equals the default action (EACCES), and
when a syscall gets both argument-conditioned rules and an unconditional rule
it silently drops the conditioned ones (an "allow ioctl" erases "deny ioctl
TIOCSTI"). So "allow ioctl except TIOCSTI" (strict) and "deny personality
except these values" (default) cannot be written with it. The program here is
small and regular, and is checked against the Python evaluation of the same
table by `run()` (a BPF interpreter) in the tests. libseccomp still provides
the syscall name table.

Program layout (x86_64 only):

    ld arch; if arch != AUDIT_ARCH_X86_64: return BADARCH       (i386 int 0x80, ...)
    ld nr;   if nr >= 0x40000000 (unsigned): return BADARCH     (x32 ABI, garbage)
    binary search over segments of consecutive numbers with the same rule;
      unconditional rule -> return its action
      conditional rule   -> jump to its block: cases in order, each a chain of
                            masked 32-bit-half compares, else `otherwise`
    not found -> return the table's default action
"""
from __future__ import annotations

import struct
from typing import Callable

from sandbox.isolation.syscall_profiles import Cmp, Rule, Table

# linux/audit.h, linux/seccomp.h
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
X32_SYSCALL_BIT = 0x40000000
RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_TRAP = 0x00030000
RET_ERRNO = 0x00050000
RET_USER_NOTIF = 0x7FC00000
RET_LOG = 0x7FFC0000
RET_ALLOW = 0x7FFF0000
RET_ACTION_FULL = 0xFFFF0000
BPF_MAXINSNS = 4096

# classic BPF opcodes
LD_W_ABS = 0x20
ALU_AND_K = 0x54
JMP_JA = 0x05
JMP_JEQ_K = 0x15
JMP_JGT_K = 0x25
JMP_JGE_K = 0x35
JMP_JSET_K = 0x45
RET_K = 0x06

OFF_NR, OFF_ARCH, OFF_ARGS = 0, 4, 16
_INSN = struct.Struct("<HBBI")


def ret_errno(err: int) -> int:
    return RET_ERRNO | (err & 0xFFFF)


class _Label:
    __slots__ = ("pos",)

    def __init__(self) -> None:
        self.pos: int | None = None


class _Asm:
    """Instructions with symbolic jump targets, resolved by `assemble`."""

    def __init__(self) -> None:
        self.insns: list[list] = []

    def emit(self, code: int, k: int | _Label = 0, jt: int | _Label = 0,
             jf: int | _Label = 0) -> None:
        self.insns.append([code, jt, jf, k])

    def place(self, label: _Label) -> None:
        label.pos = len(self.insns)

    def assemble(self) -> bytes:
        out = bytearray()
        for i, (code, jt, jf, k) in enumerate(self.insns):
            def rel(x: int | _Label, limit: int) -> int:
                if not isinstance(x, _Label):
                    return x
                assert x.pos is not None, "unplaced label"
                off = x.pos - (i + 1)
                if not 0 <= off <= limit:
                    raise AssertionError(f"jump offset {off} out of range at {i}")
                return off
            if code == JMP_JA:
                k = rel(k, 0xFFFFFFFF)
            out += _INSN.pack(code, rel(jt, 255), rel(jf, 255), k)
        if len(self.insns) > BPF_MAXINSNS:
            raise ValueError(f"seccomp program too long ({len(self.insns)} instructions)")
        return bytes(out)


def _emit_cmp(asm: _Asm, c: Cmp, fail: _Label) -> None:
    base = OFF_ARGS + 8 * c.arg
    for off, mask, value in ((base + 4, c.mask >> 32, c.value >> 32),
                             (base, c.mask & 0xFFFFFFFF, c.value & 0xFFFFFFFF)):
        if mask == 0:
            continue
        asm.emit(LD_W_ABS, off)
        if mask != 0xFFFFFFFF:
            asm.emit(ALU_AND_K, mask)
        asm.emit(JMP_JEQ_K, value, 0, fail)


def _segments(entries: list[tuple[int, Rule]], action: Callable[[str], int]
              ) -> list[tuple[int, int, Rule]]:
    """Merge runs of consecutive numbers whose unconditional actions are equal."""
    out: list[tuple[int, int, Rule]] = []
    for nr, rule in entries:
        if (out and rule.unconditional and out[-1][2].unconditional and out[-1][1] == nr - 1
                and action(out[-1][2].otherwise) == action(rule.otherwise)):
            out[-1] = (out[-1][0], nr, out[-1][2])
        else:
            out.append((nr, nr, rule))
    return out


def compile_table(table: Table, action: Callable[[str], int], *,
                  badarch: int = RET_KILL_PROCESS) -> bytes:
    """The program for `table`; `action` maps an abstract action to a SECCOMP_RET value."""
    default = action(table.default)
    entries = sorted((nr, rule) for nr, rule in table.by_nr.items()
                     if not (rule.unconditional and action(rule.otherwise) == default))
    asm = _Asm()
    asm.emit(LD_W_ABS, OFF_ARCH)
    asm.emit(JMP_JEQ_K, AUDIT_ARCH_X86_64, 1, 0)
    asm.emit(RET_K, badarch)
    asm.emit(LD_W_ABS, OFF_NR)
    asm.emit(JMP_JGE_K, X32_SYSCALL_BIT, 0, 1)
    asm.emit(RET_K, badarch)
    blocks: list[tuple[_Label, Rule]] = []

    def target(rule: Rule) -> None:
        if rule.unconditional:
            asm.emit(RET_K, action(rule.otherwise))
        else:
            label = _Label()
            blocks.append((label, rule))
            asm.emit(JMP_JA, label)

    def dispatch(part: list[tuple[int, int, Rule]], low: int, high: int) -> None:
        """Code deciding nr, known to lie in [low, high), among the segments `part`."""
        if not part:
            asm.emit(RET_K, default)
            return
        if len(part) == 1:
            lo, hi, rule = part[0]
            miss = _Label()
            checked = False
            if lo > low:
                asm.emit(JMP_JGE_K, lo, 0, miss)
                checked = True
            if hi < high - 1:
                asm.emit(JMP_JGT_K, hi, miss, 0)
                checked = True
            target(rule)
            if checked:
                asm.place(miss)
                asm.emit(RET_K, default)
            return
        mid = len(part) // 2
        pivot = part[mid][0]
        right = _Label()
        asm.emit(JMP_JGE_K, pivot, 0, 1)   # nr >= pivot: take the `ja` to the right half
        asm.emit(JMP_JA, right)
        dispatch(part[:mid], low, pivot)
        asm.place(right)
        dispatch(part[mid:], pivot, high)

    dispatch(_segments(entries, action), 0, X32_SYSCALL_BIT)
    for label, rule in blocks:
        asm.place(label)
        for cmps, act in rule.cases:
            nxt = _Label()
            for c in cmps:
                _emit_cmp(asm, c, nxt)
            asm.emit(RET_K, action(act))
            asm.place(nxt)
        asm.emit(RET_K, action(rule.otherwise))
    return asm.assemble()


def run(program: bytes, nr: int, args: tuple[int, ...] | list[int] = (0,) * 6, *,
        arch: int = AUDIT_ARCH_X86_64, ip: int = 0) -> int:
    """Interpret `program` on one seccomp_data, as the kernel would. For tests and `explain`."""
    data = struct.pack("<iIQ6Q", nr, arch, ip, *[a & 0xFFFFFFFFFFFFFFFF for a in args])
    insns = [_INSN.unpack_from(program, i) for i in range(0, len(program), _INSN.size)]
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == LD_W_ABS:
            acc = struct.unpack_from("<I", data, k)[0]
        elif code == ALU_AND_K:
            acc &= k
        elif code == JMP_JA:
            pc += k
        elif code in (JMP_JEQ_K, JMP_JGT_K, JMP_JGE_K, JMP_JSET_K):
            hit = {JMP_JEQ_K: acc == k, JMP_JGT_K: acc > k, JMP_JGE_K: acc >= k,
                   JMP_JSET_K: bool(acc & k)}[code]
            pc += jt if hit else jf
        elif code == RET_K:
            return k
        else:
            raise ValueError(f"unsupported BPF opcode {code:#x} at {pc - 1}")


def describe(ret: int) -> str:
    """Human name of a SECCOMP_RET value (``errno(EPERM)``, ``notify``, ...)."""
    import errno as _errno
    base = ret & RET_ACTION_FULL
    if base == RET_ERRNO:
        return f"errno({_errno.errorcode.get(ret & 0xFFFF, ret & 0xFFFF)})"
    return {RET_KILL_PROCESS: "kill_process", RET_KILL_THREAD: "kill_thread", RET_TRAP: "trap",
            RET_USER_NOTIF: "notify", RET_LOG: "log", RET_ALLOW: "allow"}.get(base, hex(ret))
