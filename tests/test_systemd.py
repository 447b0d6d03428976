"""The systemd units: rendered by install-system.sh, checked by systemd's own tools.

`systemd-analyze` comes with Debian's `systemd` package; CI installs it if it is
missing (`apt-get install -y --no-install-recommends systemd`). It does not
need systemd to be running.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ruvllm_edge import cli, config

ROOT = Path(__file__).resolve().parent.parent
INSTALLER = ROOT / "systemd" / "install-system.sh"
UNITS = ("ruvllm-edge.service", "ruvllm-edge-backup.service", "ruvllm-edge-backup.timer")
VENV = Path(sys.prefix)


def analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.fail("systemd-analyze not found: install Debian's `systemd` package "
                    "(apt-get install -y --no-install-recommends systemd)", pytrace=False)
    return exe


def parse_unit(path: Path) -> dict[str, list[str]]:
    """Key -> every value it is given (systemd keys may repeat), across sections."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def env_of(unit: dict[str, list[str]]) -> dict[str, str]:
    return dict(v.split("=", 1) for v in unit.get("Environment", []))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("units")
    proc = subprocess.run(["bash", str(INSTALLER), str(ROOT), str(VENV), "--render", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def service(rendered: Path) -> dict[str, list[str]]:
    return parse_unit(rendered / "ruvllm-edge.service")


def test_installer_is_valid_bash_and_refuses_bad_usage(tmp_path: Path) -> None:
    assert subprocess.run(["bash", "-n", str(INSTALLER)]).returncode == 0
    proc = subprocess.run(["bash", str(INSTALLER), str(ROOT)], capture_output=True, text=True)
    assert proc.returncode != 0 and "usage" in proc.stderr
    proc = subprocess.run(["bash", str(INSTALLER), str(ROOT), str(tmp_path)], capture_output=True,
                          text=True)
    assert proc.returncode != 0 and "run ./install.sh first" in proc.stderr


def test_systemd_analyze_verify_passes_without_warnings(rendered: Path) -> None:
    exe = analyze()
    env = dict(os.environ, SYSTEMD_UNIT_PATH=f"{rendered}:")   # picks up the drop-ins too
    proc = subprocess.run([exe, "verify", *(str(rendered / u) for u in UNITS)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


def test_systemd_analyze_verify_catches_a_typo(rendered: Path, tmp_path: Path) -> None:
    """The check above is only worth something if verify reports unit mistakes."""
    exe = analyze()
    bad = tmp_path / "ruvllm-edge.service"
    bad.write_text((rendered / "ruvllm-edge.service").read_text()
                   .replace("WatchdogSec=", "WatchdogSecs="))
    proc = subprocess.run([exe, "verify", str(bad)], capture_output=True, text=True, timeout=120)
    assert "WatchdogSecs" in proc.stderr


def test_security_exposure_is_low(rendered: Path) -> None:
    exe = analyze()
    proc = subprocess.run([exe, "security", "--offline=yes", "--no-pager",
                           str(rendered / "ruvllm-edge.service")],
                          capture_output=True, text=True, timeout=120)
    if "--offline" in proc.stderr and proc.returncode != 0:
        pytest.skip("this systemd-analyze has no offline security check (systemd < 250)")
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    assert m, proc.stdout[-2000:] + proc.stderr
    assert float(m.group(1)) <= 2.0, proc.stdout[-3000:]


def test_service_contract(service: dict[str, list[str]]) -> None:
    one = {k: v[-1] for k, v in service.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert int(one["WatchdogSec"]) >= 3 * 10      # the loop pings every 10 s
    assert one["Restart"] == "on-failure"
    assert one["ExecReload"].endswith("kill -HUP $MAINPID")
    assert one["User"] and one["User"] != "root" and one["Group"] == one["User"]
    for key in ("NoNewPrivileges", "PrivateTmp", "PrivateDevices", "RestrictNamespaces",
                "ProtectKernelTunables", "ProtectControlGroups", "LockPersonality"):
        assert one[key] == "yes", key
    assert one["ProtectSystem"] == "strict" and one["ProtectHome"] in ("yes", "read-only", "tmpfs")
    assert one["CapabilityBoundingSet"] == "" and one["AmbientCapabilities"] == ""
    assert set(one["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert service["SystemCallFilter"][0] == "@system-service"
    assert one.get("MemoryDenyWriteExecute", "no") == "no"   # numba / llama.cpp JIT
    exe = shlex.split(one["ExecStart"])
    assert Path(exe[0]).is_file() and exe[1:] == ["-m", "ruvllm_edge.cli", "serve"]


def test_memory_limits_follow_the_config_budget(service: dict[str, list[str]]) -> None:
    budget = config.load(ROOT / "config" / "edge.toml", env={}).system.max_memory_mb
    high = int(service["MemoryHigh"][-1].rstrip("M"))
    top = int(service["MemoryMax"][-1].rstrip("M"))
    assert high == budget == 2048
    assert budget < top <= budget * 1.5
    assert service["MemorySwapMax"] == ["0"]


def test_paths_are_writable_under_protect_system_strict(service: dict[str, list[str]]) -> None:
    one = {k: v[-1] for k, v in service.items()}
    env = env_of(service)
    state = f"/var/lib/{one['StateDirectory']}"
    cache = f"/var/cache/{one['CacheDirectory']}"
    assert env[config.ENV_DATA].startswith(state + "/")
    assert env["NUMBA_CACHE_DIR"].startswith((state + "/", cache + "/"))
    assert env[config.ENV_ENDPOINT] == f"ipc:///run/{one['RuntimeDirectory']}/{config.SOCKET_NAME}"
    assert env[config.ENV_CONFIG] == f"/etc/{one['ConfigurationDirectory']}/config.toml"
    assert Path(env[config.ENV_MODELS]) == ROOT / "models"
    # The daemon resolves exactly these paths from the unit's environment.
    cfg = config.load(ROOT / "config" / "edge.toml", env=env)
    assert cfg.endpoint() == "ipc:///run/ruvllm-edge/ruvllm-edge.sock"
    assert cfg.data_dir == "/var/lib/ruvllm-edge/data"
    assert "ReadWritePaths" in service and service["ReadWritePaths"][0].startswith("-/")
    # The start-up caches `ruvllm-edge warm` fills (install-system.sh) are the ones the
    # daemon reads: numba's under the cache dir, and the first-start routers in it.
    from ruvllm_edge.router import prior
    assert prior.default_cache_dir(env) == Path(cache)
    assert env["NUMBA_CACHE_DIR"].startswith(cache + "/")


def test_home_installs_get_a_read_only_bind_drop_in(rendered: Path) -> None:
    homes = ("/home/", "/root/", "/run/user/")
    paths = {str(ROOT), str(VENV), sys.base_prefix}
    expected = sorted(p for p in paths if (p + "/").startswith(homes))
    for unit in ("ruvllm-edge.service", "ruvllm-edge-backup.service"):
        drop = rendered / f"{unit}.d" / "10-home.conf"
        if not expected:
            assert not drop.exists()
            continue
        d = parse_unit(drop)
        assert d["ProtectHome"] == ["tmpfs"]
        assert set(expected) <= set(d["BindReadOnlyPaths"][0].split())


def test_backup_service_and_timer(rendered: Path) -> None:
    svc = parse_unit(rendered / "ruvllm-edge-backup.service")
    main = parse_unit(rendered / "ruvllm-edge.service")
    assert svc["Type"] == ["oneshot"] and svc["User"] == main["User"]
    assert svc["ReadWritePaths"] == main["ReadWritePaths"]
    assert "RuntimeDirectory" not in svc   # it would delete the daemon's socket dir on exit
    env = env_of(svc)
    assert {k: v for k, v in env.items() if k.startswith("RUVLLM")} == \
        {k: v for k, v in env_of(main).items() if k.startswith("RUVLLM")}
    args = shlex.split(svc["ExecStart"][0])
    assert args[1:3] == ["-m", "ruvllm_edge.cli"]
    ns = cli.build_parser().parse_args(args[3:])
    assert ns.func.__name__ == "cmd_backup"
    timer = parse_unit(rendered / "ruvllm-edge-backup.timer")
    assert timer["Persistent"] == ["true"] and timer["WantedBy"] == ["timers.target"]
    proc = subprocess.run([analyze(), "calendar", timer["OnCalendar"][0]], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "Next elapse" in proc.stdout
