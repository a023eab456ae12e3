"""`pip install ./python` without an index, as python/README.md says: Debian's
setuptools as the build backend (--no-build-isolation), into a throwaway
venv. A copy of python/ is installed, so the build leaves nothing in the
checkout."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import textwrap

from conftest import PYROOT, PYTHON
from pytest_snakepit import require

CHECK = textwrap.dedent("""
    import importlib.metadata as md, json, sys
    import snakepit_worker, snakepit_worker.client, snakepit_worker.cli, pytest_snakepit
    d = md.distribution("snakepit-python")
    lic = [f for f in d.files if f.name == "LICENSE"]
    print(json.dumps({
        "module": snakepit_worker.client.__file__,
        "license": d.metadata["License"],
        "classifiers": d.metadata.get_all("Classifier"),
        "pytest11": [e.value for e in md.entry_points(group="pytest11") if e.name == "pytest_snakepit"],
        "license_file": lic[0].read_text() if lic else None,
    }))
""")


def test_pip_install_without_index(tmp_path):
    # find_spec, not import: setuptools' distutils hack refuses to load in a
    # process that already imported the stdlib's distutils.
    missing = [m for m in ("pip", "setuptools", "wheel") if importlib.util.find_spec(m) is None]
    require(not missing, f"Debian packages python3-{', python3-'.join(missing)} missing")
    src = tmp_path / "python"
    shutil.copytree(PYROOT, src, symlinks=False,
                    ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info", ".pytest_cache"))
    venv = tmp_path / "venv"
    subprocess.run([PYTHON, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    vpy = str(venv / "bin" / "python")
    # No PIP_* settings (PIP_FIND_LINKS would be a local index) and no
    # PYTHONPATH (the checkout's python/ must not be what gets imported).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    res = subprocess.run([vpy, "-m", "pip", "install", "--no-build-isolation", "--no-index",
                          "--disable-pip-version-check", "./python"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    # From outside any checkout: the installed copy, not python/ on a path.
    res = subprocess.run([vpy, "-c", CHECK], cwd="/", env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["module"].startswith(str(venv)), got["module"]
    assert got["license"] == "Apache-2.0"
    assert "License :: OSI Approved :: Apache Software License" in got["classifiers"]
    assert got["pytest11"] == ["pytest_snakepit"]
    with open(os.path.join(os.path.dirname(PYROOT), "LICENSE")) as f:
        assert got["license_file"] == f.read()
