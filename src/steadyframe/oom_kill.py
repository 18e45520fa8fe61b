"""The kernel's OOM killer as a first-class failure: whom it should pick, and whether it struck.

Under a memory limit (a container's cgroup, or the machine's RAM) the kernel, not Python, ends a
process with SIGKILL. We ask it to pick a worker, never the server (``oom_score_adj``, proc(5)),
and tell a worker it killed from one killed otherwise by its OOM-kill counters: the cgroup's
(v2 ``memory.events``, v1 ``memory.oom_control``) and the system's (``/proc/vmstat``). The
kernel counts a kill before it sends the signal, so the count has risen when the death is seen.
Linux only; elsewhere every reading is None and nothing is claimed. No torch here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from steadyframe.logs import get_logger

log = get_logger("oom_kill")

# proc(5): -1000..1000. A worker at 1000 is the kernel's first choice in any OOM, ours or the system's.
WORKER_OOM_SCORE_ADJ = 1000
# The server asks for less than the default 0; unprivileged it may not go below its inherited
# minimum (usually 0: lowering needs CAP_SYS_RESOURCE), and then the workers' 1000 alone protects it.
SERVER_OOM_SCORE_ADJ = -500
# cgroup v1 writes "no limit" as a huge page-aligned number; anything above this is no limit.
_V1_UNLIMITED = 1 << 60

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC = Path("/proc")


# --- oom_score_adj --------------------------------------------------------------------------


def oom_score_adj(pid: int | str = "self", *, proc: Path = PROC) -> int | None:
    try:
        return int((proc / str(pid) / "oom_score_adj").read_text())
    except (OSError, ValueError):
        return None


def set_oom_score_adj(value: int, pid: int | str = "self", *, proc: Path = PROC) -> int | None:
    """Ask for ``value``; -> the value in effect afterwards (None when the file is unusable)."""
    try:
        (proc / str(pid) / "oom_score_adj").write_text(str(value))
    except PermissionError:
        pass  # below the inherited minimum without CAP_SYS_RESOURCE: keep what we have
    except OSError:
        return None
    return oom_score_adj(pid, proc=proc)


def protect_server(*, proc: Path = PROC) -> int | None:
    """Lower this (server) process's score as far as it is allowed; -> the value in effect."""
    current = oom_score_adj(proc=proc)
    if current is None or current <= SERVER_OOM_SCORE_ADJ:
        return current
    now = set_oom_score_adj(SERVER_OOM_SCORE_ADJ, proc=proc)
    if now is not None and now > SERVER_OOM_SCORE_ADJ:
        log.info(
            "server oom_score_adj stays %d (lowering it needs CAP_SYS_RESOURCE); workers get %d, so the "
            "kernel's OOM killer picks a worker first",
            now,
            WORKER_OOM_SCORE_ADJ,
        )
    return now


def expose_worker(pid: int, *, proc: Path = PROC) -> int | None:
    """Make worker ``pid`` the OOM killer's first choice (raising is always allowed)."""
    return set_oom_score_adj(WORKER_OOM_SCORE_ADJ, pid, proc=proc)


# --- the memory cgroup ----------------------------------------------------------------------


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _read_keyed(path: Path) -> dict[str, int]:
    """``key value`` lines (memory.events, memory.stat, memory.oom_control, /proc/vmstat)."""
    values: dict[str, int] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return values
    for line in lines:
        key, _, value = line.partition(" ")
        try:
            values[key] = int(value)
        except ValueError:
            continue
    return values


@dataclass(frozen=True)
class MemoryFiguresOfCgroup:
    """One reading of a memory cgroup, in bytes (None = not known)."""

    usage: int | None  # everything charged, page cache included
    anon: int | None  # process memory (RSS): what a leak or a ballast grows
    peak: int | None  # highest usage since the cgroup began (v2 memory.peak, v1 max_usage)
    swap: int | None
    limit: int | None  # the lowest limit on the way to the root; None = no limit
    oom_kills: int | None


@dataclass(frozen=True)
class MemoryCgroup:
    """The memory cgroup a process is in: its folder and the cgroup version."""

    path: Path
    version: int  # 1 or 2
    root: Path

    def oom_kills(self) -> int | None:
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        return _read_keyed(self.path / name).get("oom_kill")

    def limit(self) -> int | None:
        """The lowest memory limit on this cgroup and its ancestors (None = no limit)."""
        if self.version == 1:
            value = _read_keyed(self.path / "memory.stat").get("hierarchical_memory_limit")
            if value is None:
                value = _read_int(self.path / "memory.limit_in_bytes")
            return value if value is not None and value < _V1_UNLIMITED else None
        limits: list[int] = []
        folder = self.path
        while True:
            value = _read_int(folder / "memory.max")
            if value is not None:
                limits.append(value)
            if folder == self.root or self.root not in folder.parents:
                break
            folder = folder.parent
        return min(limits) if limits else None

    def figures(self) -> MemoryFiguresOfCgroup:
        stat = _read_keyed(self.path / "memory.stat")
        if self.version == 2:
            usage = _read_int(self.path / "memory.current")
            anon = stat.get("anon")
            peak = _read_int(self.path / "memory.peak")
            swap = _read_int(self.path / "memory.swap.current")
        else:
            usage = _read_int(self.path / "memory.usage_in_bytes")
            anon = stat.get("total_rss", stat.get("rss"))
            peak = _read_int(self.path / "memory.max_usage_in_bytes")
            swap = stat.get("total_swap", stat.get("swap"))
        return MemoryFiguresOfCgroup(usage, anon, peak, swap, self.limit(), self.oom_kills())


def memory_cgroup(pid: int | str = "self", *, root: Path = CGROUP_ROOT, proc: Path = PROC) -> MemoryCgroup | None:
    """The memory cgroup of ``pid`` from ``/proc/PID/cgroup``; None when there is none to read.

    v1 names the ``memory`` controller on its own line; v2 has one ``0::PATH`` line. Inside a
    container the cgroup's folder is mounted at the root, so the named path may not exist there:
    then the root itself is the process's cgroup.
    """
    try:
        lines = (proc / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return None
    v1_path = v2_path = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if "memory" in controllers.split(","):
            v1_path = path
        elif hierarchy == "0" and controllers == "":
            v2_path = path
    candidates: list[tuple[Path, int, Path]] = []
    if v1_path is not None:
        base = root / "memory"
        candidates += [(base / v1_path.lstrip("/"), 1, base), (base, 1, base)]
    if v2_path is not None:
        candidates += [(root / v2_path.lstrip("/"), 2, root), (root, 2, root)]
    for folder, version, base in candidates:
        marker = "memory.events" if version == 2 else "memory.oom_control"
        if (folder / marker).is_file():
            return MemoryCgroup(folder, version, base)
    return None


def system_oom_kills(*, proc: Path = PROC) -> int | None:
    """Every OOM kill on this machine since boot (``/proc/vmstat``, Linux 4.13+)."""
    return _read_keyed(proc / "vmstat").get("oom_kill")


def machine_ram_bytes(*, proc: Path = PROC) -> int | None:
    try:
        lines = (proc / "meminfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "MemTotal:" and fields[1].isdigit():
            return int(fields[1]) * 1024  # meminfo counts kB
    return None


def _gib(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB"


def describe_limit(cgroup: MemoryCgroup | None, *, proc: Path = PROC) -> str:
    """The memory limit the kernel enforces on this server, in words for a user."""
    limit = cgroup.limit() if cgroup is not None else None
    if limit is not None:
        return f"the memory limit of {_gib(limit)} on this server's container (cgroup)"
    ram = machine_ram_bytes(proc=proc)
    return f"this machine's {_gib(ram)} of RAM (no memory limit is set)" if ram else "this machine's RAM"


def oom_kill_description(limit_words: str) -> str:
    """How a pool words a worker the kernel killed for memory (continues "The worker ...")."""
    return f"was killed by the kernel's out-of-memory killer (SIGKILL) at {limit_words}"


def kernel_oom_advice(limit_words: str) -> str:
    """What a user can do after the kernel killed a job's worker for memory."""
    return (
        f"The job needed more than {limit_words}. Try fewer frames, a lower resolution, or turn off "
        "upscaling and interpolation; or give the server more memory (docker run --memory, "
        "compose mem_limit)."
    )


def oom_kill_counts(cgroup: MemoryCgroup | None, *, proc: Path = PROC) -> dict[str, int]:
    """The OOM-kill counters this process can see: its memory cgroup's (keyed by its folder, so
    two processes' readings compare only where they share a cgroup) and the system's."""
    counts = {"system": system_oom_kills(proc=proc)}
    if cgroup is not None:
        counts[f"cgroup:{cgroup.path}"] = cgroup.oom_kills()
    return {name: count for name, count in counts.items() if count is not None}


def counts_rose(before: dict[str, int], now: dict[str, int]) -> bool:
    """Whether any counter both readings hold went up from ``before`` to ``now``."""
    return any(count > before[name] for name, count in now.items() if name in before)


def node_oom_reading() -> dict[str, object]:
    """What a Ray node tells the head about kernel OOM kills: this process's counters and the
    limit the kernel enforces here, in words (JSON-able: it crosses the object store)."""
    cgroup = memory_cgroup()
    return {"counts": oom_kill_counts(cgroup), "limit": describe_limit(cgroup)}


class OomKillWatch:
    """Tells whether the kernel killed a process since the last look.

    It watches this process's memory cgroup and the whole system; ``claim`` is asked at every
    worker death and consumes what rose, so an old kill never explains a later death.
    """

    def __init__(self, *, root: Path = CGROUP_ROOT, proc: Path = PROC) -> None:
        self.proc = proc
        self.cgroup = memory_cgroup(root=root, proc=proc)
        self._seen = self._read()

    def _read(self) -> dict[str, int]:
        return oom_kill_counts(self.cgroup, proc=self.proc)

    @property
    def sources(self) -> list[str]:
        return sorted({name.split(":", 1)[0] for name in self._seen})  # "cgroup", "system"

    def claim(self) -> bool:
        """True when any counter rose since the last claim (a kill happened meanwhile)."""
        now = self._read()
        rose = counts_rose(self._seen, now)
        self._seen = now
        return rose

    def limit_words(self) -> str:
        return describe_limit(self.cgroup, proc=self.proc)


def main() -> None:  # pragma: no cover - `python -m steadyframe.oom_kill [PID]`: one JSON reading
    import sys

    pid = sys.argv[1] if len(sys.argv) > 1 else "self"
    cgroup = memory_cgroup(pid)
    figures = asdict(cgroup.figures()) if cgroup else {}
    print(json.dumps({"cgroup": str(cgroup.path) if cgroup else None, **figures, "system_oom_kills": system_oom_kills()}))


if __name__ == "__main__":  # pragma: no cover
    main()
