"""The Dockerfile, checked without Docker (these machines have no daemon and reach no registry):
its COPY sources are in the build context, its install step is the README's, its entry point is
the console script, its HEALTHCHECK is answered by a real server on the port it exposes, and (slow)
the README's install step run on the COPYed files in a fresh virtual environment gives a
`pipeflow serve` that answers that probe."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
from helpers import PREDICT, sample_rows, start_server, wait_until

from pipeflow.testing import free_port

ROOT = Path(__file__).parents[2]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines = [
        line
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def only(name: str) -> str:
    (found,) = [rest for word, rest in instructions() if word == name]
    return found


def ignored(relative: str) -> bool:
    """Whether .dockerignore keeps ``relative`` (or a folder above it) out of the context."""
    patterns = [
        p.strip()
        for p in (ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    parts = Path(relative).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatchcase(
                prefix.rsplit("/", 1)[-1], pattern[3:]
            ):
                return True
    return False


def copies() -> list[tuple[list[str], str]]:
    out = []
    for word, rest in instructions():
        if word == "COPY":
            *sources, dest = shlex.split(rest)
            assert not any(s.startswith("--from") for s in sources)
            out.append(([s for s in sources if not s.startswith("--")], dest))
    return out


def install_step() -> tuple[str, list[str]]:
    """(the folder the RUN cds into, the pip install arguments) of the Dockerfile."""
    for word, rest in instructions():
        if word == "RUN" and "pip install" in rest:
            steps = [s.strip() for s in rest.split("&&")]
            (folder,) = [s.split()[1] for s in steps if s.startswith("cd ") and s != "cd /"]
            (pip,) = [s for s in steps if s.startswith("pip install")]
            return folder, [a for a in shlex.split(pip) if a != "${EXTRA_PACKAGES}"]
    raise AssertionError("no RUN pip install in the Dockerfile")


def readme_install() -> list[str]:
    section = (ROOT / "README.md").read_text().split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    (line,) = [line for line in block.splitlines() if line.startswith("pip install")]
    return shlex.split(line)


def healthcheck() -> tuple[list[str], str]:
    """The HEALTHCHECK command (exec form) and the URL it opens."""
    command = json.loads(only("HEALTHCHECK").split("CMD", 1)[1])
    (url,) = re.findall(r"'(http://[^']+)'", " ".join(command))
    return command, url


def build_context(where: Path) -> Path:
    """The COPY instructions carried out under ``where`` (which stands for the image's /), with
    .dockerignore applied: the folder the install step then runs in."""
    for sources, dest in copies():
        target = where / dest.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                shutil.copytree(
                    path,
                    target,
                    dirs_exist_ok=True,
                    ignore=lambda d, names: [
                        n for n in names if ignored(os.path.relpath(Path(d) / n, ROOT))
                    ],
                )
            else:
                shutil.copy(path, target / path.name)
    folder, _ = install_step()
    return where / folder.lstrip("/")


def test_every_copy_source_is_in_the_build_context_and_the_install_finds_it(
    tmp_path: Path,
) -> None:
    assert copies()
    for sources, dest in copies():
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert not ignored(source.rstrip("/")), f"COPY {source}: excluded by .dockerignore"
            if (ROOT / source).is_dir():
                assert dest.endswith("/"), f"COPY {source} {dest}: a folder into a folder/"
    source = build_context(tmp_path)  # the COPYs carried out: what the install step runs in
    _, args = install_step()
    for arg in args[2:]:
        project = source / arg.split("[", 1)[0]
        assert (project / "pyproject.toml").is_file(), f"pip install {arg}: not copied"
    assert (source / "README.md").is_file()  # pyproject.toml's readme


def test_the_install_step_is_the_readme_s() -> None:
    _, args = install_step()
    assert args == readme_install()
    assert args[:2] == ["pip", "install"] and "./plugins/pipeflow-sql" in args
    extras = re.search(r"\[(.*)\]", args[2]).group(1).split(",")
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert set(extras) <= set(optional) and {"postgres", "s3"} <= set(extras)


def test_the_entrypoint_is_the_console_script_and_the_port_the_server_s_default() -> None:
    from pipeflow.cli import _parser

    assert json.loads(only("ENTRYPOINT")) == ["pipeflow"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["pipeflow"] == "pipeflow.cli:main"
    default = _parser().parse_args(["serve", "m@production"]).port
    _, url = healthcheck()
    assert int(only("EXPOSE")) == default == httpx.URL(url).port
    command = json.loads(only("CMD"))
    assert command[0] == "serve"


def run_healthcheck(python: str, port: int) -> int:
    command, url = healthcheck()
    assert command[0] == "python"
    argv = [python, *command[1:]]
    argv = [a.replace(url, url.replace(":8000/", f":{port}/")) for a in argv]
    return subprocess.run(argv, capture_output=True, timeout=30).returncode


def test_the_healthcheck_is_answered_by_the_server_while_it_serves_and_fails_after(
    trained: Path, tmp_path: Path
) -> None:
    served = start_server(trained, "tumours@production", "--audit-dir", str(tmp_path / "audit"))
    port = httpx.URL(served.url).port
    try:
        assert run_healthcheck(sys.executable, port) == 0
    finally:
        served.stop()
    assert run_healthcheck(sys.executable, port) != 0


def uv_beside_this_python() -> str | None:
    """The ``uv`` that ``make install-test`` installs into the test venv (None without it)."""
    return shutil.which("uv", path=str(Path(sys.executable).parent))


@pytest.mark.slow
def test_the_readme_install_on_the_copied_files_in_a_fresh_venv_serves(
    trained: Path, tmp_path: Path
) -> None:
    """The image's build without Docker: the COPYs into a folder, a fresh virtual environment of
    this Python (3.11, as the base image), the install step run there from the package index,
    then the installed `pipeflow serve` answering the HEALTHCHECK, /ready and a prediction.

    The step's arguments go to ``uv pip install`` where ``make install-test`` installed uv beside
    this Python (the same requirements, resolved from the package index, the wheels from the
    cache that install filled: seconds, where pip took over a minute), else to pip."""
    source = build_context(tmp_path / "image")
    assert not (source / "tests").exists() and (source / "pipeflow" / "ui" / "static").is_dir()
    venv = tmp_path / "venv"
    uv = uv_beside_this_python()
    no_pip = ["--without-pip"] if uv else []  # uv installs into it; nothing there runs pip
    subprocess.run([sys.executable, "-m", "venv", *no_pip, str(venv)], check=True, timeout=120)
    python, pipeflow = str(venv / "bin" / "python"), str(venv / "bin" / "pipeflow")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _, args = install_step()
    installed = subprocess.run(
        [uv, *args, "--python", python, "-q"] if uv else [python, "-m", *args, "-q"],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    shutil.rmtree(source)  # as the image does: nothing may run from the source folder
    # run from elsewhere than the repository: `python -c` puts the working directory first on
    # sys.path, and the repository's pipeflow/ would shadow the installed one
    away = {"env": env, "cwd": tmp_path}
    version = subprocess.run([pipeflow, "--version"], **away, capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("pipeflow "), version
    where = subprocess.run(
        [python, "-c", "import pipeflow, pipeflow_sql, s3fs, psycopg; print(pipeflow.__file__)"],
        **away,
        capture_output=True,
        text=True,
    )
    assert where.returncode == 0 and where.stdout.startswith(str(venv)), where
    port = free_port()
    log = tmp_path / "serve.log"
    proc = subprocess.Popen(
        [pipeflow, "serve", "tumours@production", "--store", str(trained / ".pipeflow")]
        + ["--audit-dir", str(tmp_path / "audit"), "--port", str(port)],
        **away,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: run_healthcheck(python, port) == 0, 120, "the HEALTHCHECK", proc, log)
        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.get("/ready").json()["status"] == "ready"
            answer = c.post(PREDICT, json=sample_rows(trained, 2))
            assert answer.status_code == 200 and len(answer.json()["predictions"]) == 2
    finally:
        proc.terminate()
        proc.wait(30)
