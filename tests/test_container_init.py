"""The SageMaker container's init (`sagemaker_jobs.CONTAINER_INIT`) run for real around a process
chain shaped like a SageMaker job's: a shell script (the SDK's sm_train.sh) runs a Python driver, which
runs the trainer. SIGTERM to the init must reach the trainer, and the init must wait for the
trainer's checkpoint even though the shell and the driver die of the same signal at once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from srl_platform.sagemaker_jobs import CONTAINER_INIT

TRAINER = """
import signal, sys, time
from pathlib import Path
out = Path(sys.argv[1])
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
(out / "started").write_text("")
while not stop:
    time.sleep(0.01)
time.sleep(1.0)  # finishing the step and writing the checkpoint
(out / "checkpointed").write_text("")
sys.exit(75)
"""


def test_sigterm_reaches_the_trainer_and_the_init_waits_for_its_checkpoint(tmp_path: Path):
    (tmp_path / "trainer.py").write_text(TRAINER)
    driver = f"import subprocess, sys; sys.exit(subprocess.call([sys.executable, {str(tmp_path / 'trainer.py')!r}, {str(tmp_path)!r}]))"
    (tmp_path / "sm_train.sh").write_text(f"{sys.executable} -c {driver!r}\n")
    # Its own session, as PID 1 has in a container (the init signals its whole process group).
    init = subprocess.Popen([sys.executable if arg == "python3" else arg for arg in CONTAINER_INIT]
                            + ["/bin/bash", str(tmp_path / "sm_train.sh")], start_new_session=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists():
        assert init.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)

    init.send_signal(signal.SIGTERM)
    init.wait(timeout=60)

    assert (tmp_path / "checkpointed").exists()  # the init outlived the shell and driver


def test_the_init_exits_with_the_entrypoint_status(tmp_path: Path):
    status = subprocess.run([sys.executable if arg == "python3" else arg for arg in CONTAINER_INIT]
                            + ["/bin/bash", "-c", "exit 3"], start_new_session=True, timeout=60)
    assert status.returncode == 3
