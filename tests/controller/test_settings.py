"""Settings: flags > DISPATCH_* > config.toml > defaults; wrong values name the setting and fix."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from controller.cli import main
from controller.errors import ConfigError, FolderNotGranted
from controller.execution.folders import check_folder
from controller.settings import FolderGrant, Settings, load_settings
from controller.store.db import Database

REPO = Path(__file__).parents[2]


def env(tmp: Path, **values: str) -> dict[str, str]:
    return {
        "XDG_CONFIG_HOME": str(tmp / "xdg-config"),
        "XDG_DATA_HOME": str(tmp / "xdg-data"),
        **values,
    }


def test_defaults_use_the_xdg_data_directory(tmp_path: Path) -> None:
    settings = load_settings({}, env(tmp_path))
    assert settings.data_dir == tmp_path / "xdg-data" / "dispatch"
    assert (settings.host, settings.port, settings.max_concurrent_tasks) == ("127.0.0.1", 8420, 2)
    assert settings.sandbox_backend == "docker"
    assert settings.effective_database_url == f"sqlite:///{settings.data_dir / 'dispatch.db'}"


def test_a_data_directory_with_url_characters_keeps_its_database_there(tmp_path: Path) -> None:
    data_dir = tmp_path / "odd?name#here"
    settings = load_settings({"data_dir": data_dir}, env(tmp_path))
    url = make_url(settings.effective_database_url)
    # Unescaped, SQLite would open tmp_path/"odd" and take the rest for URL options.
    assert url.database == str(data_dir / "dispatch.db")
    data_dir.mkdir()
    database = Database(settings.effective_database_url)
    try:
        database.migrate()
    finally:
        database.dispose()
    assert (data_dir / "dispatch.db").is_file()


def test_flags_beat_environment_which_beats_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "xdg-config" / "dispatch" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('port = 9000\nhost = "0.0.0.0"\nmax_concurrent_tasks = 3\n')
    settings = load_settings(
        {"port": 9002}, env(tmp_path, DISPATCH_PORT="9001", DISPATCH_HOST="::1")
    )
    assert (settings.port, settings.host, settings.max_concurrent_tasks) == (9002, "::1", 3)
    assert settings.config_file == config
    assert load_settings({}, env(tmp_path, DISPATCH_PORT="9001")).port == 9001
    assert load_settings({}, env(tmp_path)).port == 9000


def test_database_url_from_the_environment(tmp_path: Path) -> None:
    url = "postgresql://dispatch@db/dispatch"
    assert load_settings({}, env(tmp_path, DISPATCH_DATABASE_URL=url)).effective_database_url == url


@pytest.mark.parametrize(
    ("flags", "environ", "named"),
    [
        ({}, {"DISPATCH_PORT": "eighty"}, "setting port (from DISPATCH_PORT)"),
        ({"port": 70000}, {}, "setting port (from --port) = 70000 must be between 1 and 65535"),
        ({}, {"DISPATCH_MAX_CONCURRENT_TASKS": "0"}, "max_concurrent_tasks (from DISPATCH_MAX"),
        ({}, {"DISPATCH_SANDBOX_BACKEND": "vmware"}, "use one of: docker, fake"),
        ({}, {"DISPATCH_DATABASE_URL": "mysql://x"}, "use postgresql://"),
        ({}, {"DISPATCH_LOG_LEVEL": "loud"}, "log_level"),
        ({}, {"DISPATCH_PUBLIC_URL": "example.org"}, "must start with http://"),
    ],
)
def test_wrong_values_name_the_setting_its_source_and_the_fix(
    tmp_path: Path, flags: dict[str, object], environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(")", r"\)")):
        load_settings(flags, env(tmp_path, **environ))


def test_config_file_mistakes_are_reported_with_the_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'prot'"):
        load_settings({}, env(tmp_path), config=config)
    config.write_text("port = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({}, env(tmp_path), config=config)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({}, env(tmp_path), config=tmp_path / "missing.toml")


def test_folder_grants_are_read_and_checked(tmp_path: Path) -> None:
    project = tmp_path / "p"
    (project / "docs").mkdir(parents=True)
    config = tmp_path / "conf" / "c.toml"
    config.parent.mkdir()
    config.write_text(
        f'[[folders]]\npath = "{project}"\nmode = "rw"\ngit_writable = true\n'
        f'[[folders]]\npath = "{project / "docs"}"\n'
    )
    settings = load_settings({}, env(tmp_path), config=config)
    assert settings.folders == (
        FolderGrant(project, "rw", git_writable=True),
        FolderGrant(project / "docs", "ro"),
    )
    for entry, message in [
        (f'path = "{project}"\nmode = "rwx"', "mode 'rwx'"),
        (f'path = "{tmp_path / "nope"}"', "does not exist"),
        ('path = "/etc"', "sensitive"),
        (f'path = "{tmp_path / "xdg-data" / "dispatch"}"', "sensitive"),
    ]:
        (tmp_path / "xdg-data" / "dispatch").mkdir(parents=True, exist_ok=True)
        config.write_text(f"[[folders]]\n{entry}\n")
        with pytest.raises(ConfigError, match=r"folders\[0\]") as caught:
            load_settings({}, env(tmp_path), config=config)
        assert message in str(caught.value)


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Settings().port = 1  # type: ignore[misc]


def test_serve_stops_at_start_up_naming_the_setting(tmp_path: Path) -> None:
    environ = {
        **os.environ,
        **env(tmp_path),
        "PYTHONPATH": str(REPO),
        "DISPATCH_MAX_CONCURRENT_TASKS": "lots",
    }
    result = subprocess.run(
        [sys.executable, "-m", "controller", "serve"],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "max_concurrent_tasks (from DISPATCH_MAX_CONCURRENT_TASKS)" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_folders_of_the_config_file_and_database_are_never_granted(tmp_path: Path) -> None:
    work = tmp_path / "work"
    conf, db_dir = work / "conf", work / "db"
    conf.mkdir(parents=True)
    db_dir.mkdir()
    config = conf / "dispatch.toml"
    database = f'database_url = "sqlite:///{db_dir / "dispatch.db"}"\n'
    for granted, holds in [(conf, "config file"), (work, "config file"), (db_dir, "database")]:
        config.write_text(f'{database}[[folders]]\npath = "{granted}"\nmode = "rw"\n')
        with pytest.raises(ConfigError) as caught:
            load_settings({}, env(tmp_path), config=config)
        assert f"'{granted}'" in str(caught.value) and holds in str(caught.value)
    # `dispatch serve --config` stops at start-up, naming the folder.
    config.write_text(f'[[folders]]\npath = "{conf}"\nmode = "rw"\n')
    result = CliRunner().invoke(main, ["serve", "--config", str(config)], env=env(tmp_path))
    assert result.exit_code == 2
    assert str(conf) in result.stderr and "config file" in result.stderr


def test_a_task_naming_the_config_or_database_folder_is_refused(tmp_path: Path) -> None:
    work = tmp_path / "work"
    conf, db_dir = work / "conf", work / "db"
    conf.mkdir(parents=True)
    db_dir.mkdir()
    config = conf / "dispatch.toml"
    config.write_text(f'database_url = "sqlite:///{db_dir / "dispatch.db"}"\n')
    settings = load_settings({"sandbox_backend": "fake"}, env(tmp_path), config=config)
    # Even under a grant wide enough to hold them (start-up refuses that; this is the backstop).
    settings = replace(settings, folders=(FolderGrant(work, "rw"),))
    for folder in (conf, db_dir):
        with pytest.raises(FolderNotGranted, match=str(folder)):
            check_folder(str(folder), "ro", settings)
    (work / "project").mkdir()
    assert check_folder(str(work / "project"), "rw", settings).host == work / "project"
