"""Settings: defaults < config.toml in home < GENFOUNDRY_* environment < overrides."""

from __future__ import annotations

import pytest

from genfoundry.core.errors import ConfigError
from genfoundry.core.settings import DEFAULT_HOST, DEFAULT_PORT, load_settings


def write_config(home, text: str):
    path = home / "config.toml"
    path.write_text(text)
    return path


def test_defaults_when_nothing_is_set(tmp_path):
    settings = load_settings(home=tmp_path, environ={})
    assert settings.home == tmp_path
    assert (settings.host, settings.port) == (DEFAULT_HOST, DEFAULT_PORT)
    assert settings.log_content is True
    assert settings.database_url is None


def test_config_file_overrides_defaults(tmp_path):
    write_config(tmp_path, 'port = 9001\nhost = "0.0.0.0"\nlog_content = false\n')
    settings = load_settings(home=tmp_path, environ={})
    assert (settings.port, settings.host, settings.log_content) == (9001, "0.0.0.0", False)


def test_environment_overrides_config_file(tmp_path):
    write_config(tmp_path, 'port = 9001\nhost = "0.0.0.0"\n')
    settings = load_settings(home=tmp_path, environ={"GENFOUNDRY_PORT": "9002"})
    assert settings.port == 9002
    assert settings.host == "0.0.0.0"  # not in the environment: the file still wins over defaults


def test_overrides_beat_environment_and_none_means_unset(tmp_path):
    write_config(tmp_path, "port = 9001\nmax_queue = 3\n")
    settings = load_settings(home=tmp_path, environ={"GENFOUNDRY_PORT": "9002"},
                             overrides={"port": 9003, "max_queue": None})
    assert settings.port == 9003
    assert settings.max_queue == 3


def test_empty_environment_variable_is_ignored(tmp_path):
    settings = load_settings(home=tmp_path, environ={"GENFOUNDRY_PORT": ""})
    assert settings.port == DEFAULT_PORT


def test_environment_value_is_converted(tmp_path):
    settings = load_settings(home=tmp_path, environ={"GENFOUNDRY_LOG_CONTENT": "false",
                                                     "GENFOUNDRY_REQUEST_TIMEOUT": "2.5"})
    assert settings.log_content is False
    assert settings.request_timeout == 2.5


def test_home_comes_from_environment_when_not_given(tmp_path):
    settings = load_settings(environ={"GENFOUNDRY_HOME": str(tmp_path)})
    assert settings.home == tmp_path


def test_invalid_toml_names_the_file(tmp_path):
    path = write_config(tmp_path, "port = = 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(home=tmp_path, environ={})
    assert str(path) in info.value.message
    assert "TOML" in info.value.message


def test_unknown_key_in_config_file(tmp_path):
    write_config(tmp_path, "prot = 9000\n")
    with pytest.raises(ConfigError, match="prot"):
        load_settings(home=tmp_path, environ={})


@pytest.mark.parametrize("source", ["file", "env", "override"])
def test_invalid_value_is_a_config_error(tmp_path, source):
    environ, overrides = {}, {}
    if source == "file":
        write_config(tmp_path, "port = -1\n")
    elif source == "env":
        environ = {"GENFOUNDRY_PORT": "-1"}
    else:
        overrides = {"port": -1}
    with pytest.raises(ConfigError, match="port"):
        load_settings(home=tmp_path, environ=environ, overrides=overrides)


def test_resolved_database_url_defaults_to_sqlite_in_home(tmp_path):
    settings = load_settings(home=tmp_path, environ={})
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'genfoundry.db'}"


def test_database_url_setting_wins(tmp_path):
    url = "postgresql+psycopg://me@db/gf"
    settings = load_settings(home=tmp_path, environ={"GENFOUNDRY_DATABASE_URL": url})
    assert settings.resolved_database_url == url


def test_ensure_home_creates_folders(tmp_path):
    settings = load_settings(home=tmp_path / "new", environ={})
    settings.ensure_home()
    assert settings.models_dir.is_dir()
    assert (settings.home / "runs").is_dir()
