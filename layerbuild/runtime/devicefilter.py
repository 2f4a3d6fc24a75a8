"""The device allow-list on cgroup v2: a BPF_PROG_TYPE_CGROUP_DEVICE program, attached to a cgroup.

cgroup v2 has no devices controller; the kernel asks a BPF program attached to the cgroup instead
(docker and runc do the same). The program is built here from the rules, instruction by instruction,
and loaded with the bpf(2) system call through ctypes: no compiler and no library needed. Its context
is `struct bpf_cgroup_dev_ctx {u32 access_type; u32 major; u32 minor;}` with `access_type` = access
<< 16 | type; it returns 1 to allow and 0 to deny.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Sequence

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}
BPF_PROG_LOAD, BPF_PROG_ATTACH = 5, 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
_TYPES = {"c": 2, "b": 1}  # BPF_DEVCG_DEV_CHAR, BPF_DEVCG_DEV_BLOCK
_ACCESS = {"m": 1, "r": 2, "w": 4}  # BPF_DEVCG_ACC_MKNOD, _READ, _WRITE
# Opcodes (class | op | source) of the few eBPF instructions the filter uses.
_LDX_W = 0x61  # dst = *(u32 *)(src + off)
_MOV64_X, _MOV64_K = 0xBF, 0xB7
_AND64_K, _RSH64_K = 0x57, 0x77
_JNE_K = 0x55  # if dst != imm: pc += off
_EXIT = 0x95

Rule = tuple[str, str, str, str]  # (type c|b, major or *, minor or *, access of "rwm")


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def program(rules: Sequence[Rule]) -> bytes:
    """The filter's instructions: allow when a rule matches, deny otherwise."""
    out = [
        _insn(_LDX_W, 2, 1, 0),  # r2 = access_type
        _insn(_MOV64_X, 3, 2),  # r3 = type (the low 16 bits)
        _insn(_AND64_K, 3, imm=0xFFFF),
        _insn(_RSH64_K, 2, imm=16),  # r2 = access
        _insn(_LDX_W, 4, 1, 4),  # r4 = major
        _insn(_LDX_W, 5, 1, 8),  # r5 = minor
    ]
    for rule in rules:
        out += _rule(*rule)
    out += [_insn(_MOV64_K, 0, imm=0), _insn(_EXIT)]
    return b"".join(out)


def _rule(kind: str, major: str, minor: str, access: str) -> list[bytes]:
    """One rule: each test that fails jumps to the next rule; if all pass, return 1 (allow)."""
    allowed = sum(_ACCESS[a] for a in set(access))
    tests: list[tuple[list[bytes], int, int]] = [([], 3, _TYPES[kind])]  # (setup, register, must equal)
    if allowed != 7:  # no access bit beyond the rule's: r1 = access & ~allowed must be 0
        tests.append(([_insn(_MOV64_X, 1, 2), _insn(_AND64_K, 1, imm=~allowed & 0xFFFF)], 1, 0))
    if major != "*":
        tests.append(([], 4, int(major)))
    if minor != "*":
        tests.append(([], 5, int(minor)))
    length = sum(len(setup) + 1 for setup, _, _ in tests) + 2
    out: list[bytes] = []
    for setup, reg, value in tests:
        out += setup
        out.append(_insn(_JNE_K, reg, off=length - len(out) - 1, imm=value))
    return [*out, _insn(_MOV64_K, 0, imm=1), _insn(_EXIT)]


def _bpf(cmd: int, attr: bytes) -> int:
    number = _SYS_BPF.get(os.uname().machine)
    if number is None:
        raise OSError(38, "bpf(2) is not known on this architecture")
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(attr, 128)
    result = libc.syscall(ctypes.c_long(number), ctypes.c_int(cmd), buf, ctypes.c_uint(128))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(result)


def attach(cgroup_dir: str, rules: Sequence[Rule]) -> None:
    """Load the filter for `rules` and attach it to the cgroup v2 directory; OSError if the kernel
    refuses (no BPF, no privilege). The attachment lives as long as the cgroup."""
    code = program(rules)
    insns = ctypes.create_string_buffer(code, len(code))
    license_ = ctypes.create_string_buffer(b"Apache-2.0")
    # union bpf_attr for BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, log_level, log_size, log_buf
    load = struct.pack("<IIQQIIQ", BPF_PROG_TYPE_CGROUP_DEVICE, len(code) // 8, ctypes.addressof(insns),
                       ctypes.addressof(license_), 0, 0, 0)
    prog = _bpf(BPF_PROG_LOAD, load)
    try:
        target = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            # For BPF_PROG_ATTACH: target_fd, attach_bpf_fd, attach_type, attach_flags
            _bpf(BPF_PROG_ATTACH, struct.pack("<IIII", target, prog, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI))
        finally:
            os.close(target)
    finally:
        os.close(prog)
