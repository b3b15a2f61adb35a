"""The Dagster UI, driven in headless Chromium: the asset graph shows the platform's assets, and a
checkpoint's materialization shows its adapter URI.

A real instance in a temp `DAGSTER_HOME` gets the data assets and a gold `srl_checkpoint` (tiny
model, one step) materialized through the real `Definitions`; then `dagster-webserver` serves that
instance on a loopback port and Playwright drives Debian's Chromium (no browser download).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from support import REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Debian's chromium is not installed (make test installs it with apt-get; it needs root)",
)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
GROUPS = {
    "data": ["expert_traces", "validated_traces", "srl_steps", "rlvr_problems"],
    "training": ["srl_checkpoint", "rlvr_checkpoint"],
    "evaluation": ["tier_eval"],
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ui(tiny_model_dir, tmp_path_factory):
    home = tmp_path_factory.mktemp("dagster-home")
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home),
           "SRL_ARTIFACT_ROOT": str(home / "artifacts"), "SRL_WORK_ROOT": str(home / "work")}
    run_config = {"ops": {
        "expert_traces": {"config": {"n": 30, "seed": 0}},
        "srl_checkpoint": {"config": {"base_model": str(tiny_model_dir), "max_steps": 1,
                                      "num_generations": 2, "prompts_per_step": 1,
                                      "max_completion_length": 8}},
    }}
    config_file = home / "run_config.yaml"
    import yaml

    config_file.write_text(yaml.safe_dump(run_config))
    dagster = str(Path(os.sys.executable).parent / "dagster")
    for select, extra in (("expert_traces,validated_traces,srl_steps", []),
                          ("srl_checkpoint", ["--partition", "gold"])):
        done = subprocess.run([dagster, "asset", "materialize", "-f", "definitions.py", "--select",
                               select, "-c", str(config_file), *extra], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    port = _free_port()
    server = subprocess.Popen(
        [str(Path(dagster).parent / "dagster-webserver"), "-w", "workspace.yaml", "-h",
         "127.0.0.1", "-p", str(port)], cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{base}/server_info", timeout=2)
            break
        except OSError:
            assert server.poll() is None, "dagster-webserver exited"
            assert time.monotonic() < deadline, "dagster-webserver did not answer in 120 s"
            time.sleep(0.5)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        yield base, page, home
        browser.close()
    server.terminate()
    server.wait(timeout=30)


def _dismiss_dialogs(page) -> None:
    skip = page.get_by_role("button", name="Skip")
    if skip.count():
        skip.first.click()


def test_asset_graph_shows_every_asset(ui, tmp_path):
    base, page, _ = ui
    page.goto(f"{base}/asset-groups", wait_until="networkidle")
    _dismiss_dialogs(page)
    for group in GROUPS:  # the global lineage shows one collapsed node per group
        page.get_by_text(group, exact=True).first.wait_for(timeout=30_000)
    for group, names in GROUPS.items():
        page.goto(f"{base}/locations/srl_platform/asset-groups/{group}", wait_until="networkidle")
        for name in names:
            page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
        page.screenshot(path=str(tmp_path / f"{group}.png"))


def test_checkpoint_materialization_shows_adapter_uri(ui, tmp_path):
    base, page, home = ui
    page.goto(f"{base}/assets/srl_checkpoint?partition=gold&view=events", wait_until="networkidle")
    _dismiss_dialogs(page)
    uri = (home / "artifacts" / "adapters" / "gold" / "srl").as_uri()
    page.get_by_text(uri).first.wait_for(timeout=30_000)
    page.screenshot(path=str(tmp_path / "checkpoint.png"))
