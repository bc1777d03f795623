"""Every CLI error path ends in one line on stderr and exit code 2, and a finished run is never lost: when the output
cannot be written the record goes to a fallback next to the config (or a temp dir) that the message names."""
import errno
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import workbench as wb
import workbench_cli as cli

CONFIG = """
[problem]
name = "quadratic"
[train]
optimizer = "gd"
lr = 0.1
steps = 7
"""
SWEEP = CONFIG + '[sweep]\ngrid = { lr = [0.1, 0.2] }\nscheduler = "synchronous"\n'
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def one_line(capsys) -> str:
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert err, "nothing on stderr"
    assert "\n" not in err and err.startswith("error:") and "Traceback" not in err, err
    return err


def fallback_of(err: str) -> Path:
    m = re.search(r"saved to (\S+\.nc) instead", err)
    assert m, err
    return Path(m.group(1))


@pytest.fixture
def cfg(tmp_path):
    p = tmp_path / "exp.toml"
    p.write_text(CONFIG)
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- bad arguments -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,needle", [
    ([], "required"),
    (["bake"], "bake"),
    (["list"], "what"),
    (["run"], "config"),
    (["run", "CFG", "-o"], "-o"),
    (["run", "CFG", "--nope"], "--nope"),
    (["sweep", "CFG", "--workers", "0"], "--workers must be an integer in [1, 1024]; got 0"),
    (["sweep", "CFG", "--workers", "-3"], "--workers"),
    (["sweep", "CFG", "--workers", "two"], "--workers"),
    (["sweep", "CFG", "--workers", "5000"], "[1, 1024]"),
    (["sweep", "CFG", "--connect-timeout", "0"], "--connect-timeout"),
    (["app", "--port", "-1"], "--port"),
    (["app", "--port", "http"], "--port"),
    (["app", "--max-memory", "0"], "--max-memory"),
    (["app", "--max-memory", "lots"], "--max-memory"),
])
def test_bad_arguments_one_line_exit_2(cfg, capsys, argv, needle):
    argv = [str(cfg) if a == "CFG" else a for a in argv]
    assert cli.main(argv) == 2
    assert needle in one_line(capsys)


def test_workers_zero_is_rejected_not_ignored(tmp_path, capsys):
    # before: `args.workers or ...` dropped 0 and the sweep ran on the default cluster
    cfg = tmp_path / "sw.toml"
    cfg.write_text(SWEEP)
    out = tmp_path / "sw.nc"
    assert cli.main(["sweep", str(cfg), "-o", str(out), "-q", "--workers", "0"]) == 2
    assert "--workers" in one_line(capsys) and not out.exists()
    cfg.write_text(SWEEP.replace('scheduler = "synchronous"', "n_workers = 0"))
    assert cli.main(["sweep", str(cfg), "-o", str(out), "-q"]) == 2
    assert "n_workers" in one_line(capsys) and not out.exists()


# -- config files ------------------------------------------------------------------------------------------
def test_config_that_is_a_directory(tmp_path, capsys):
    assert cli.main(["run", str(tmp_path), "-o", str(tmp_path / "o.nc")]) == 2
    assert "is a directory" in one_line(capsys)
    assert cli.main(["sweep", str(tmp_path), "-o", str(tmp_path / "o.nc")]) == 2
    assert "is a directory" in one_line(capsys)


def test_missing_config(tmp_path, capsys):
    assert cli.main(["run", str(tmp_path / "nope.toml"), "-o", str(tmp_path / "o.nc")]) == 2
    assert "does not exist" in one_line(capsys)


@pytest.mark.parametrize("data", [b"\xff\xfe[\x00p\x00", "[problem]\nname = \"quadratic\"  # caf\xe9\n".encode("latin-1")])
@pytest.mark.parametrize("cmd", ["run", "sweep"])
def test_non_utf8_config(tmp_path, capsys, data, cmd):
    p = tmp_path / "latin.toml"
    p.write_bytes(data)
    assert cli.main([cmd, str(p), "-o", str(tmp_path / "o.nc"), "-q"]) == 2
    err = one_line(capsys)
    assert "not UTF-8" in err and "latin.toml" in err and not (tmp_path / "o.nc").exists()


@pytest.mark.skipif(IS_ROOT, reason="root reads a chmod 000 file anyway; the directory and non-UTF-8 cases "
                                    "cover unreadable configs there")
def test_unreadable_config(cfg, tmp_path, capsys):
    cfg.chmod(0)
    try:
        assert cli.main(["run", str(cfg), "-o", str(tmp_path / "o.nc")]) == 2
        assert "cannot be read" in one_line(capsys)
    finally:
        cfg.chmod(0o644)


# -- unwritable output: the finished run is saved elsewhere -----------------------------------------------------
def test_run_output_is_a_directory_saves_a_fallback(cfg, tmp_path, capsys):
    outdir = tmp_path / "out_is_a_dir"
    outdir.mkdir()
    assert cli.main(["run", str(cfg), "-o", str(outdir), "-q"]) == 2
    err = one_line(capsys)
    assert str(outdir) in err and "directory" in err
    fb = fallback_of(err)
    assert fb.parent == cfg.parent.resolve() and fb.name.startswith("exp.") and fb.is_file()
    rec = wb.load(fb)
    assert rec.sizes["step"] == 7 and rec.attrs["status"] == "finished"
    assert list(outdir.iterdir()) == []


def test_sweep_output_is_a_directory_saves_a_fallback(tmp_path, capsys):
    cfg = tmp_path / "sw.toml"
    cfg.write_text(SWEEP)
    outdir = tmp_path / "sweep_dir.nc"       # -o X.nc: the combined record only; here X.nc is a directory
    outdir.mkdir()
    assert cli.main(["sweep", str(cfg), "-o", str(outdir), "-q"]) == 2
    rec = wb.load(fallback_of(one_line(capsys)))
    assert rec.loss.dims == ("lr", "step") and rec.sizes["lr"] == 2


def test_fallback_not_writable_either_goes_to_a_temp_dir(cfg, tmp_path, capsys, monkeypatch):
    """Output and the config's folder both refuse the write (as on a read-only filesystem): a new temp dir."""
    real_save = wb.save
    refused = []

    def save(record, path):
        if Path(tempfile.gettempdir()).resolve() in Path(path).resolve().parents and \
                tmp_path.resolve() not in Path(path).resolve().parents:
            return real_save(record, path)
        refused.append(str(path))
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(wb, "save", save)
    out = tmp_path / "o.nc"
    assert cli.main(["run", str(cfg), "-o", str(out), "-q"]) == 2
    err = one_line(capsys)
    assert "Read-only file system" in err and len(refused) == 2
    fb = fallback_of(err)
    assert fb.is_file() and tmp_path.resolve() not in fb.resolve().parents
    try:
        assert wb.load(fb).sizes["step"] == 7
    finally:
        fb.unlink()
        fb.parent.rmdir()


def test_nothing_writable_is_still_one_line(cfg, tmp_path, capsys, monkeypatch):
    def save(record, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(wb, "save", save)
    assert cli.main(["run", str(cfg), "-o", str(tmp_path / "o.nc"), "-q"]) == 2
    err = one_line(capsys)
    assert "No space left on device" in err and "lost" in err


@pytest.fixture
def readonly_dir(tmp_path):
    """A read-only tmpfs (root only; skipped where mounting is not permitted)."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True).returncode
    if ok != 0:
        pytest.skip("cannot mount a tmpfs here (not root, or no mount permission in this container)")
    try:
        (mnt / "exp.toml").write_text(CONFIG)
        if subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount the tmpfs read-only here")
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_read_only_filesystem(readonly_dir, tmp_path, capsys):
    # the output on the read-only filesystem: fallback next to the config (writable)
    cfg = tmp_path / "exp.toml"
    cfg.write_text(CONFIG)
    assert cli.main(["run", str(cfg), "-o", str(readonly_dir / "o.nc"), "-q"]) == 2
    fb = fallback_of(one_line(capsys))
    assert fb.parent == tmp_path.resolve() and wb.load(fb).sizes["step"] == 7
    # the config on it too: a temp dir
    assert cli.main(["run", str(readonly_dir / "exp.toml"), "-o", str(readonly_dir / "o.nc"), "-q"]) == 2
    fb = fallback_of(one_line(capsys))
    assert readonly_dir not in fb.parents and wb.load(fb).sizes["step"] == 7
    fb.unlink()
    fb.parent.rmdir()


# -- app: busy port, bad address ------------------------------------------------------------------------------
def test_app_busy_port(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert cli.main(["app", "--port", str(port), "--results-dir", str(tmp_path / "r")]) == 2
    err = one_line(capsys)
    assert str(port) in err and "in use" in err


@pytest.mark.parametrize("address", ["999.1.2.3", "no such host.invalid", "192.0.2.1", ""])
def test_app_bad_address(tmp_path, capsys, address):
    # 192.0.2.1 (TEST-NET-1) is a valid address that is not this machine's: binding fails, nothing is sent
    assert cli.main(["app", "--address", address, "--port", str(free_port()),
                     "--results-dir", str(tmp_path / "r")]) == 2
    err = one_line(capsys)
    assert "address" in err or "listen" in err


# -- sweep: unreachable scheduler -------------------------------------------------------------------------------
@pytest.mark.parametrize("scheduler,needle", [
    ("tcp://127.0.0.1:{port}", "cannot reach"),
    ("tcp://127.0.0.1:notaport", "not an address"),
    ("nonsense", "scheduler"),
])
def test_sweep_unreachable_or_bad_scheduler(tmp_path, capsys, scheduler, needle):
    cfg = tmp_path / "sw.toml"
    cfg.write_text(SWEEP.replace('scheduler = "synchronous"\n', ""))
    out = tmp_path / "sw.nc"
    sched = scheduler.format(port=free_port())     # nothing listens there: refused at once
    assert cli.main(["sweep", str(cfg), "-o", str(out), "-q", "--scheduler", sched, "--connect-timeout", "2"]) == 2
    assert needle in one_line(capsys) and not out.exists()


# -- real processes: the exit codes a shell sees ----------------------------------------------------------------
def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "workbench_cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_subprocess_unwritable_output_exit_2_and_fallback(cfg, tmp_path):
    outdir = tmp_path / "d"
    outdir.mkdir()
    proc = _cli("run", str(cfg), "-o", str(outdir), "-q", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert wb.load(fallback_of(err)).sizes["step"] == 7


def test_subprocess_busy_port_and_non_utf8_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe\x00")
    proc = _cli("run", str(bad), "-o", str(tmp_path / "o.nc"), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "UTF-8" in proc.stderr, proc.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = _cli("app", "--port", str(port), "--results-dir", str(tmp_path / "r"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr and str(port) in proc.stderr
