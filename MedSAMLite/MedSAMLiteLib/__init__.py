"""MedSAMLite's core: the segmenters, their conversion, the engine process and the headless command."""


def one_line(error: BaseException) -> str:
    """An error as the one line a user is shown: its message's first line, or its type's name."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie does not): the engine watches Slicer with it, and stale
    scratch files named after a dead process are swept."""
    import os
    import sys

    if sys.platform == "win32":  # os.kill(pid, 0) would terminate it there
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        try:
            return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
