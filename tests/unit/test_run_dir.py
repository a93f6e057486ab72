"""A run directory's lock and launch history (trainer/run_dir.py): one writer at a time, stale locks
(a dead process, an old heartbeat, a lock cut short) taken over with a warning, every launch's
config kept."""
import json
import socket
import subprocess
import sys
import time

import pytest
from etils import epath

from trainer import run_dir


def _holder(**kw):
    return {"host": socket.gethostname(), "pid": 1, "token": "x", "started": time.time(),
            "heartbeat": time.time(), "command": "python -m trainer.main --model_dir=r", **kw}


def test_a_second_writer_is_refused_until_the_first_releases(tmp_path):
    d = epath.Path(tmp_path)
    first = run_dir.RunLock(d)
    first.acquire()
    holder = json.loads((d / "LOCK").read_text())
    assert holder["pid"] > 0 and holder["token"] == first.token
    with pytest.raises(run_dir.RunLockedError, match=r"is being written by another run: pid \d+ on .*LOCK"):
        run_dir.RunLock(d).acquire()
    first.release()
    assert not (d / "LOCK").exists()
    with run_dir.RunLock(d):
        assert (d / "LOCK").exists()


def test_stale_locks_are_taken_over_and_live_ones_kept(tmp_path, caplog):
    d = epath.Path(tmp_path)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    cases = [
        (_holder(pid=gone.pid), "is no longer running"),
        (_holder(host="another-host", heartbeat=time.time() - 3600), "last wrote its heartbeat"),
        (None, "an unreadable lock"),
    ]
    for holder, why in cases:
        (d / "LOCK").write_text(json.dumps(holder) if holder else '{"host": "h", "pi')
        caplog.clear()
        with caplog.at_level("WARNING"):
            with run_dir.RunLock(d) as lock:
                assert json.loads((d / "LOCK").read_text())["token"] == lock.token
        assert "Taking over the stale lock" in caplog.text and why in caplog.text
    # Alive: this very process, or another host's run with a fresh heartbeat.
    import os

    for holder in (_holder(pid=os.getpid()), _holder(host="another-host")):
        (d / "LOCK").write_text(json.dumps(holder))
        with pytest.raises(run_dir.RunLockedError, match="Wait for it to finish"):
            run_dir.RunLock(d).acquire()


def test_the_heartbeat_is_refreshed_while_held(tmp_path):
    d = epath.Path(tmp_path)
    with run_dir.RunLock(d, heartbeat=0.05):
        first = json.loads((d / "LOCK").read_text())["heartbeat"]
        time.sleep(0.3)
        assert json.loads((d / "LOCK").read_text())["heartbeat"] > first


def test_every_launch_keeps_its_config(tmp_path):
    d = epath.Path(tmp_path)
    a = run_dir.record_launch(d, "x = 1\n", 0)
    b = run_dir.record_launch(d, "x = 2\n", 40)
    assert [p.name for p in run_dir.launches(d)] == [a.name, b.name]
    assert a.name.startswith("0001-") and b.name.startswith("0002-") and b.name.endswith("-step40.gin")
    assert a.read_text().endswith("x = 1\n") and "resuming at step 40" in b.read_text()
    assert (d / "config.gin").read_text() == "x = 2\n"
