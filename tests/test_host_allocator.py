"""Tests of the restart under tcmalloc: the plan, the environment, a real restart, page faults."""

import json
import os
import subprocess
import sys

import pytest
from semhash_jax import host_allocator, platform

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTALLED = host_allocator.find_tcmalloc()
needs_tcmalloc = pytest.mark.skipif(
    INSTALLED is None, reason=f"tcmalloc is not installed ({host_allocator.INSTALL_HINT})"
)


ELF_HEADER = b"\x7fELF" + bytes(12)


@pytest.fixture
def fake_library_folder(tmp_path):
    (tmp_path / "libtcmalloc_minimal.so.4").write_bytes(ELF_HEADER)
    return [str(tmp_path)]


def test_plan_restarts_with_installed_tcmalloc(fake_library_folder):
    library, reason = host_allocator.preload_plan({}, fake_library_folder)
    assert library == os.path.join(fake_library_folder[0], "libtcmalloc_minimal.so.4")
    assert "reuses freed memory" in reason


def test_plan_prefers_the_minimal_library(tmp_path):
    for name in ("libtcmalloc.so.4", "libtcmalloc_minimal.so.4"):
        (tmp_path / name).write_bytes(b"")
    assert host_allocator.find_tcmalloc([str(tmp_path)]).endswith("libtcmalloc_minimal.so.4")


def test_plan_without_tcmalloc_gives_the_install_command(tmp_path):
    library, reason = host_allocator.preload_plan({}, [str(tmp_path)])
    assert library is None
    assert host_allocator.INSTALL_HINT in reason


@pytest.mark.parametrize(
    "environ, expected_reason",
    [
        ({"SEMHASH_JAX_MALLOC": "default"}, "SEMHASH_JAX_MALLOC=default"),
        ({"SEMHASH_JAX_MALLOC_RESTARTED": "/lib/x.so"}, "running with /lib/x.so preloaded"),
        ({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, "LD_PRELOAD=/usr/lib/libjemalloc.so.2"),
        ({"LD_PRELOAD": "libtcmalloc.so.4"}, "preloaded allocator kept"),
        # The restarted process does not restart again, whatever else is set.
        (
            {"SEMHASH_JAX_MALLOC_RESTARTED": "/lib/x.so", "SEMHASH_JAX_MALLOC": "/lib/x.so"},
            "running with",
        ),
    ],
)
def test_plan_keeps_malloc(environ, expected_reason, fake_library_folder):
    library, reason = host_allocator.preload_plan(environ, fake_library_folder)
    assert library is None
    assert expected_reason in reason


def test_plan_with_a_library_path(tmp_path):
    path = tmp_path / "libmymalloc.so"
    path.write_bytes(ELF_HEADER)
    library, _ = host_allocator.preload_plan({"SEMHASH_JAX_MALLOC": str(path)}, [])
    assert library == str(path)


def test_plan_rejects_a_missing_library(fake_library_folder):
    environ = {"SEMHASH_JAX_MALLOC": "/no/such.so"}
    with pytest.raises(ValueError) as error:
        host_allocator.preload_plan(environ, fake_library_folder)
    message = str(error.value)
    assert "Invalid SEMHASH_JAX_MALLOC='/no/such.so'" in message
    assert "neither 'tcmalloc', 'default' nor an existing file" in message
    # The example is the tcmalloc found on this machine.
    assert os.path.join(fake_library_folder[0], "libtcmalloc_minimal.so.4") in message


def test_plan_rejects_a_file_that_is_no_library(tmp_path):
    path = tmp_path / "notalib.so"
    path.write_text("not a library\n")
    with pytest.raises(ValueError, match="a file that is not a shared library"):
        host_allocator.preload_plan({"SEMHASH_JAX_MALLOC": str(path)}, [])


def test_is_mapped_reads_the_maps(tmp_path):
    library = tmp_path / "libtcmalloc_minimal.so.4.5.10"
    library.write_bytes(ELF_HEADER)
    link = tmp_path / "libtcmalloc_minimal.so.4"
    link.symlink_to(library.name)
    maps = tmp_path / "maps"
    maps.write_text(f"7f00-7f10 r-xp 00000000 08:01 42   {library}\n")
    assert host_allocator.is_mapped(str(link), str(maps))
    assert not host_allocator.is_mapped(str(tmp_path / "other.so"), str(maps))
    assert not host_allocator.is_mapped(str(link), str(tmp_path / "missing"))


def test_restart_environment():
    environment = host_allocator.restart_environment({"LD_PRELOAD": "/lib/other.so"}, "/lib/tc.so")
    assert environment["LD_PRELOAD"] == "/lib/tc.so /lib/other.so"
    assert environment["SEMHASH_JAX_MALLOC_RESTARTED"] == "/lib/tc.so"
    assert environment["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"] == str(2**40)
    assert environment["TCMALLOC_RELEASE_RATE"] == "0"
    user_threshold = host_allocator.restart_environment(
        {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": "5"}, "/lib/tc.so"
    )
    assert user_threshold["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"] == "5"
    assert user_threshold["LD_PRELOAD"] == "/lib/tc.so"


def test_restart_runs_the_same_command(monkeypatch, tmp_path):
    library = tmp_path / "libtcmalloc_minimal.so.4"
    library.write_bytes(ELF_HEADER)
    calls = []
    monkeypatch.setattr(host_allocator, "library_dirs", lambda: [str(tmp_path)])
    monkeypatch.setattr(host_allocator.os, "execve", lambda *args: calls.append(args))
    monkeypatch.setattr(platform, "_installed_accelerator_package", lambda: None)
    for name in ("SEMHASH_JAX_MALLOC", "SEMHASH_JAX_MALLOC_RESTARTED", "LD_PRELOAD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    platform.restart_with_tcmalloc()
    ((path, command, environment),) = calls
    assert path == sys.executable
    assert command == [sys.executable] + sys.orig_argv[1:]
    assert environment["LD_PRELOAD"] == str(library)
    # Accelerator hosts keep their malloc.
    monkeypatch.setattr(platform, "_installed_accelerator_package", lambda: "jax-cuda12-plugin")
    platform.restart_with_tcmalloc()
    monkeypatch.setattr(platform, "_installed_accelerator_package", lambda: None)
    monkeypatch.setenv("JAX_PLATFORMS", "tpu")
    platform.restart_with_tcmalloc()
    assert len(calls) == 1


def test_invalid_choice_exits_with_the_error(monkeypatch):
    monkeypatch.setattr(platform, "_installed_accelerator_package", lambda: None)
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    monkeypatch.delenv("SEMHASH_JAX_MALLOC_RESTARTED", raising=False)
    monkeypatch.setenv("SEMHASH_JAX_MALLOC", "tcmallocc")
    with pytest.raises(SystemExit, match="^Error: Invalid SEMHASH_JAX_MALLOC='tcmallocc'"):
        platform.restart_with_tcmalloc()


def test_failed_preload_is_reported(monkeypatch, caplog):
    # The restarted process, whose LD_PRELOAD the loader ignored: no second restart.
    monkeypatch.setenv("SEMHASH_JAX_MALLOC_RESTARTED", "/no/such/libtcmalloc.so")
    monkeypatch.setattr(host_allocator.os, "execve", lambda *args: pytest.fail("restarted"))
    with caplog.at_level("INFO"):
        host_allocator.restart_with_tcmalloc()
    assert "LD_PRELOAD=/no/such/libtcmalloc.so did not load" in caplog.text
    assert "runs with the C library's malloc" in caplog.text


# Prints its process id, restarts, and reports what the restarted process runs with,
# and the page faults of each of 30 calls that write 128 MiB of temporary buffers
# (32,768 pages of 4 KiB).
_SCRIPT = """
import json, os, resource, sys
print("started", os.getpid(), flush=True)
from semhash_jax import platform
platform.restart_with_tcmalloc()
import jax, jax.numpy as jnp

@jax.jit
def function(x):
    y = jnp.tanh(x)  # two temporary buffers of 64 MiB: tanh(x) and its reversal
    return (y * y[::-1]).sum()

x = jnp.ones((4096, 4096), jnp.float32)
temporary = function.lower(x).compile().memory_analysis().temp_size_in_bytes
faults = []
for _ in range(30):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    function(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
with open("/proc/self/maps") as maps:
    preloaded = "tcmalloc" in maps.read()
print(json.dumps({"pid": os.getpid(), "tcmalloc": preloaded, "argv": sys.argv[1:],
                  "temporary_bytes": temporary, "faults": faults}))
"""
PAGES = 128 * 2**20 // 4096


def _run(choice: str) -> tuple[list[str], dict]:
    environment = {**os.environ, "SEMHASH_JAX_MALLOC": choice, "JAX_PLATFORMS": "cpu"}
    for name in ("SEMHASH_JAX_MALLOC_RESTARTED", "LD_PRELOAD"):
        environment.pop(name, None)
    completed = subprocess.run(
        [sys.executable, "-c", _SCRIPT, "first", "second"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    lines = completed.stdout.strip().splitlines()
    return [line for line in lines if line.startswith("started")], json.loads(lines[-1])


def _transparent_huge_pages_always() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as setting:
            return "[always]" in setting.read()
    except OSError:
        return False


@needs_tcmalloc
def test_restart_under_tcmalloc_reuses_memory():
    starts, report = _run("tcmalloc")
    # The same process (os.execve) ran the script twice, the second time under tcmalloc.
    assert starts == [f"started {report['pid']}"] * 2
    assert report["tcmalloc"] is True
    assert report["argv"] == ["first", "second"]
    assert report["temporary_bytes"] >= 128 * 2**20
    # New pages at the first call, and at the first call that allocated before the
    # previous call had freed its buffer. After that, tcmalloc holds both blocks.
    # (With transparent huge pages always on, even those calls fault few times.)
    faulting_calls = [count for count in report["faults"] if count > 0.05 * PAGES]
    assert len(faulting_calls) <= 3, report["faults"]


def test_glibc_malloc_faults_in_new_pages():
    starts, report = _run("default")
    assert len(starts) == 1
    assert report["tcmalloc"] is False
    if _transparent_huge_pages_always():
        pytest.skip("with transparent huge pages always on, one fault maps 2 MiB")
    # glibc maps blocks above 32 MiB afresh at every call, so every page faults.
    assert all(count >= 0.9 * PAGES for count in report["faults"]), report["faults"]
