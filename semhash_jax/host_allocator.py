"""Restart a binary under tcmalloc, whose reuse of freed memory speeds up XLA on CPUs.

XLA's CPU backend allocates the temporary buffer of a compiled program at every
call and frees it afterwards. glibc's malloc serves such large blocks with a
fresh mmap and unmaps them on free. So every call writes to new pages, and the
kernel zeroes and maps each one: the small CNN's training step on Fashion-MNIST
took about 19,700 page faults per step, and the ResNet-18 step 134,000.
tcmalloc keeps freed memory and hands it out again. The small CNN's step ran
1.3 to 1.6x as fast under it, ResNet-18's 1.13x (docs/benchmarks.md). glibc's
own settings (one arena, no mmap, no trimming) also stopped these faults, but
its heap fragmented. With a 128 MiB temporary buffer, the buffer's address moved
up at almost every call. The process grew to about 1.3 GB, where tcmalloc
needed 0.5 GB.

Only a process that starts with tcmalloc preloaded uses it for all its
allocations, so `restart_with_tcmalloc` replaces the running binary with the
same command line under LD_PRELOAD (os.execve: the process id stays). It runs
first thing in a binary's main, before any work is done.

SEMHASH_JAX_MALLOC chooses the allocator:
  tcmalloc   (the default) restart under tcmalloc when the library is installed
             (Debian: libtcmalloc-minimal4, which scripts/setup.sh installs).
  default    keep the C library's malloc.
  PATH       restart with this malloc library (a .so file) preloaded instead.
An allocator the user preloads already (LD_PRELOAD with tcmalloc, jemalloc or
mimalloc) is kept.
"""

import os
import sys
import sysconfig

from absl import logging

ENV_VARIABLE = "SEMHASH_JAX_MALLOC"
# Set in the restarted process to the preloaded library, so that a binary restarts once at most.
RESTARTED_VARIABLE = "SEMHASH_JAX_MALLOC_RESTARTED"
# tcmalloc settings of the restarted process, where the user has not set them:
# - gperftools reports every allocation above 1 GiB on stderr, which a ResNet-50
#   step's temporary buffer can pass: only above 1 TiB here.
# - At its default release rate, tcmalloc gives some freed pages back to the kernel:
#   a 128 MiB temporary buffer faulted its pages in again at 2 or 3 of 60 calls. At
#   rate 0 it keeps them, so the process keeps its peak size until it exits.
TCMALLOC_DEFAULTS = {
    "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(2**40),
    "TCMALLOC_RELEASE_RATE": "0",
}
TCMALLOC_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
_PRELOADED_ALLOCATORS = ("tcmalloc", "jemalloc", "mimalloc")
INSTALL_HINT = "apt-get install libtcmalloc-minimal4"


def library_dirs() -> list[str]:
    """Return the folders searched for tcmalloc: the Debian multiarch folder first."""
    multiarch = sysconfig.get_config_var("MULTIARCH")
    folders = [f"/usr/lib/{multiarch}"] if multiarch else []
    return folders + ["/usr/lib64", "/usr/lib", "/usr/local/lib"]


def find_tcmalloc(folders: list[str] | None = None) -> str | None:
    """Return the path of an installed tcmalloc library, or None."""
    for folder in library_dirs() if folders is None else folders:
        for name in TCMALLOC_NAMES:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    return None


def _is_shared_library(path: str) -> bool:
    """Return True when `path` starts with the ELF magic number, as shared libraries do."""
    try:
        with open(path, "rb") as file:
            return file.read(4) == b"\x7fELF"
    except OSError:
        return False


def preload_plan(environ, folders: list[str] | None = None) -> tuple[str | None, str]:
    """Return (the library to restart with, or None; the reason) for this environment.

    Raises ValueError when SEMHASH_JAX_MALLOC is neither a choice nor the path of
    a shared library.
    """
    choice = environ.get(ENV_VARIABLE, "").strip() or "tcmalloc"
    if environ.get(RESTARTED_VARIABLE):
        return None, f"running with {environ[RESTARTED_VARIABLE]} preloaded"
    if choice == "default":
        return None, f"the C library's malloc kept ({ENV_VARIABLE}=default)"
    preload = environ.get("LD_PRELOAD", "")
    if any(allocator in preload for allocator in _PRELOADED_ALLOCATORS):
        return None, f"the preloaded allocator kept (LD_PRELOAD={preload})"
    if not sys.platform.startswith("linux"):
        return None, f"the C library's malloc kept: LD_PRELOAD is for Linux, not {sys.platform}"
    if choice != "tcmalloc":
        if not os.path.isfile(choice):
            problem = "neither 'tcmalloc', 'default' nor an existing file"
        elif not _is_shared_library(choice):
            problem = "a file that is not a shared library"
        else:
            return choice, f"{ENV_VARIABLE}={choice}"
        example = find_tcmalloc(folders) or "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
        raise ValueError(
            f"Invalid {ENV_VARIABLE}={choice!r}: {problem}. Set it to 'tcmalloc' (the "
            f"default), 'default' (the C library's malloc) or the path of a malloc "
            f"library such as {example}."
        )
    library = find_tcmalloc(folders)
    if library is None:
        return None, (
            "the C library's malloc kept: tcmalloc is not installed. CPU training steps "
            f"ran 1.1 to 1.6x faster under it: {INSTALL_HINT} (docs/benchmarks.md)"
        )
    return library, "tcmalloc reuses freed memory (docs/benchmarks.md)"


def is_mapped(library: str, maps_path: str = "/proc/self/maps") -> bool:
    """Return True when this process has `library` (or the file it links to) mapped."""
    target = os.path.realpath(library)
    try:
        with open(maps_path) as maps:
            return any(line.rstrip().endswith(target) for line in maps)
    except OSError:
        return False


def restart_environment(environ, library: str) -> dict:
    """Return a copy of `environ` that preloads `library`, marks the restart and sets
    `TCMALLOC_DEFAULTS` where the user has not."""
    environment = dict(environ)
    preload = environ.get("LD_PRELOAD", "")
    environment["LD_PRELOAD"] = f"{library} {preload}".strip()
    environment[RESTARTED_VARIABLE] = library
    for name, value in TCMALLOC_DEFAULTS.items():
        environment.setdefault(name, value)
    return environment


def restart_with_tcmalloc() -> None:
    """Replace this process with the same command under tcmalloc when `preload_plan` returns a library.

    Returns (and logs why) when no restart is due, and in the restarted process
    logs whether the library really loaded. Raises ValueError for an invalid
    SEMHASH_JAX_MALLOC.
    """
    restarted_with = os.environ.get(RESTARTED_VARIABLE)
    if restarted_with and not is_mapped(restarted_with):
        logging.warning(
            "malloc: LD_PRELOAD=%s did not load (the dynamic loader's message is above), so "
            "this process runs with the C library's malloc.",
            restarted_with,
        )
        return
    library, reason = preload_plan(os.environ)
    if library is None:
        logging.info("malloc: %s.", reason)
        return
    command = [sys.executable] + sys.orig_argv[1:]
    logging.info("Restarting with %s preloaded: %s. Command: %s", library, reason, command)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command, restart_environment(os.environ, library))
