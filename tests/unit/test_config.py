"""Config: the contract keys load; every mistake is one line naming the key, never a traceback."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from callrec.config import ConfigError, Retention, load

GOOD = """
[asterisk]
ari_url = "http://127.0.0.1:8088"
ari_username = "callrec"
ari_password = "ari-secret"
ari_app = "callrec"
ami_host = "127.0.0.1"
ami_port = 5038
ami_username = "callrec"
ami_secret = "ami-secret"
recordings_dir = "/var/spool/asterisk/callrec"
[database]
dsn = "postgresql://callrec@/callrec"
[metrics]
listen = "127.0.0.1:9870"
[registers.customer-service]
direction = "inbound"
retention = "6 months"
[registers.telesales]
direction = "outbound"
retention = "1 month"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "callrec.toml"
    p.write_text(text)
    return p


def test_contract_keys_load(tmp_path: Path) -> None:
    s = load(write(tmp_path, GOOD))
    assert s.asterisk.ami_port == 5038
    assert s.asterisk.recordings_dir == Path("/var/spool/asterisk/callrec")
    assert s.registers["customer-service"].retention == Retention(6, "month")
    assert s.registers["telesales"].direction == "outbound"
    assert s.metrics_listen == ("127.0.0.1", 9870)
    assert "ari-secret" not in repr(s) and "ami-secret" not in repr(s)


def test_secret_files(tmp_path: Path) -> None:
    (tmp_path / "ari").write_text("from-file\n")
    text = GOOD.replace('ari_password = "ari-secret"', f'ari_password_file = "{tmp_path / "ari"}"')
    assert load(write(tmp_path, text)).asterisk.ari_password == "from-file"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("ari_app", "ari_ap"), "asterisk.ari_ap: unknown key"),
        (('ami_username = "callrec"\n', ""), "asterisk.ami_username: missing"),
        (("ami_port = 5038", 'ami_port = "5038"'), "asterisk.ami_port: expected an integer"),
        (("ami_port = 5038", "ami_port = true"), "asterisk.ami_port: expected an integer"),
        (('"6 months"', '"6 monts"'), "registers.customer-service.retention: '6 monts' is not"),
        (('"6 months"', '"0 days"'), "registers.customer-service.retention"),
        (('"inbound"', '"both"'), 'registers.customer-service.direction: expected "inbound" or "outbound"'),
        (
            ('ami_secret = "ami-secret"', 'ami_secret_file = "/nonexistent/secret"'),
            "asterisk.ami_secret_file: cannot read /nonexistent/secret",
        ),
        (
            ('"/var/spool/asterisk/callrec"', '"spool/callrec"'),
            "asterisk.recordings_dir: must be an absolute",
        ),
        (('"/var/spool/asterisk/callrec"', '"/var/spool/a,b"'), "asterisk.recordings_dir: use only"),
        (('listen = "127.0.0.1:9870"', 'listen = "9870"'), 'metrics.listen: expected "host:port"'),
        (("[registers.telesales]", "[registers.Tele_Sales]"), "registers.'Tele_Sales'"),
        (('dsn = "postgresql://callrec@/callrec"', ""), "database.dsn: missing"),
        (("[metrics]", "[metric]"), "metric: unknown key"),
        (
            ("[metrics]", '[retention]\ninterval = "10 minuts"\n[metrics]'),
            "retention.interval: '10 minuts' is not",
        ),
        (("[metrics]", '[api]\nlisten = "nowhere"\n[metrics]'), 'api.listen: expected "host:port"'),
        (
            ("[metrics]", '[privacy]\nnumber_hmac_key = "k"\n[metrics]'),
            "privacy.number_hmac_key: unknown key",
        ),
        (
            ("[metrics]", '[daemon]\nstate_dir = "var/lib"\n[metrics]'),
            "daemon.state_dir: must be an absolute",
        ),
    ],
)
def test_mistakes_are_one_clear_line(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    old, new = change
    assert old in GOOD
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, GOOD.replace(old, new, 1)))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_optional_sections(tmp_path: Path) -> None:
    key = tmp_path / "hmac"
    key.write_text("k" * 32)
    extra = '[retention]\ninterval = "5 minutes"\n[api]\nenabled = false\n'
    extra += f'[privacy]\nnumber_hmac_key_file = "{key}"\n'
    s = load(write(tmp_path, GOOD.replace("[metrics]", extra + "[metrics]")))
    assert s.retention_interval == 300 and s.api_listen is None
    assert s.number_hmac_key == b"k" * 32 and "kkkk" not in repr(s)
    defaults = load(write(tmp_path, GOOD))
    assert defaults.api_listen == ("127.0.0.1", 9871) and defaults.number_hmac_key is None


def test_no_registers(tmp_path: Path) -> None:
    text = GOOD.split("[registers.customer-service]")[0]
    with pytest.raises(ConfigError, match="registers: none configured"):
        load(write(tmp_path, text))


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(write(tmp_path, "[asterisk\n"))
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load(tmp_path / "absent.toml")


def test_the_shipped_conffile_configures_nothing_and_says_so(tmp_path: Path) -> None:
    """config/callrec.toml is the package's /etc/callrec/callrec.toml (docs/install.md)."""
    shipped = Path(__file__).parents[2] / "config" / "callrec.toml"
    with pytest.raises(ConfigError, match=r"nothing is configured yet .* \[asterisk\], \[database\]"):
        load(shipped)
    # Its commented settings, switched on, are a working config (secrets where systemd puts them).
    on = [
        line[1:] if line.startswith("#") and not line.startswith(("##", "# ")) else line
        for line in shipped.read_text().splitlines()
        if line != "#"
    ]
    text = "\n".join(on).replace("/run/credentials/callrec.service", str(tmp_path))
    (tmp_path / "ari").write_text("pw")
    (tmp_path / "ami").write_text("pw")
    settings = load(write(tmp_path, text))
    assert list(settings.registers) == ["customer-service"]


def test_cli_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('"6 months"', '"half a year"'))
    res = subprocess.run(
        [sys.executable, "-m", "callrec.cli", "config", "--config", str(path)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(Path(__file__).parents[2] / "daemon")},
    )
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert res.stderr.startswith("callrec: config: registers.customer-service.retention")


def test_agi_mode_is_off_unless_asked_for(tmp_path: Path) -> None:
    assert load(write(tmp_path, GOOD)).agi_listen is None
    on = load(write(tmp_path, GOOD + '[agi]\nlisten = "127.0.0.1:4573"\n'))
    assert on.agi_listen == ("127.0.0.1", 4573)
    with pytest.raises(ConfigError, match=r"^agi\.listen: expected \"host:port\""):
        load(write(tmp_path, GOOD + '[agi]\nlisten = "4573"\n'))
    with pytest.raises(ConfigError, match=r"^agi\.port: unknown key"):
        load(write(tmp_path, GOOD + "[agi]\nport = 4573\n"))


async def test_a_dying_task_stops_the_daemon_and_marks_it_failed(tmp_path: Path) -> None:
    """Restart=on-failure restarts callrec only on a non-zero exit: a task that died must say so."""
    from callrec.app import App

    app = App(load(write(tmp_path, GOOD)))

    async def broken() -> None:
        raise RuntimeError("a bug")

    app._spawn(broken(), "broken")
    await asyncio.wait_for(app.stopping.wait(), 5)
    assert app.failed


def test_security_settings(tmp_path: Path) -> None:
    """Issue #15's keys: their defaults, and a clear line for a bad value."""
    defaults = load(write(tmp_path, GOOD))
    assert defaults.database_owner_dsn is None and defaults.trusted_proxies == frozenset()
    assert (defaults.dsar_searches_per_hour, defaults.audit_log_retention) == (30, "2 years")
    assert (defaults.session_lifetime, defaults.session_idle_timeout) == (12 * 3600, 30 * 60)
    extra = '[api]\ntrusted_proxies = ["127.0.0.1", "::1"]\nsession_idle_timeout = "10 minutes"\n'
    extra += '[privacy]\ndsar_searches_per_hour = 5\n[retention]\naudit_log = "7 years"\n'
    s = load(write(tmp_path, GOOD.replace("[metrics]", extra + "[metrics]")))
    assert s.trusted_proxies == {"127.0.0.1", "::1"} and s.session_idle_timeout == 600
    assert (s.dsar_searches_per_hour, s.audit_log_retention) == (5, "7 years")
    owner = load(
        write(tmp_path, GOOD.replace("[database]\n", '[database]\nowner_dsn = "postgresql://o@h/db"\n'))
    )
    assert owner.database_owner_dsn == "postgresql://o@h/db" and "o@h" not in repr(owner)
    for bad, message in [
        ('[api]\ntrusted_proxies = ["localhost"]\n', "api.trusted_proxies"),
        ('[retention]\naudit_log = "forever"\n', "retention.audit_log"),
        ("[privacy]\ndsar_searches_per_hour = 0\n", "privacy.dsar_searches_per_hour"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load(write(tmp_path, GOOD.replace("[metrics]", bad + "[metrics]")))
