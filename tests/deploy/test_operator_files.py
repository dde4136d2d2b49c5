"""Checks for the operator files in deploy/: compose, Dockerfiles, systemd units, examples.

No container engine runs here: the compose file is checked statically, and every Flower
command line in it is parsed with the installed Flower 1.41 CLI parsers, so a flag that
flower-superlink, flower-supernode or flower-superexec would reject fails here first.
Every ``privatune`` command line in the guide and the units is parsed with privatune's
own CLI parser for the same reason.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
GUIDE = DEPLOY / "GUIDE.md"
EXAMPLES = DEPLOY / "examples"
UNITS = {
    "superlink": DEPLOY / "systemd" / "privatune-superlink.service",
    "node": DEPLOY / "systemd" / "privatune-node@.service",
}
OUR_DOCKERFILES = {
    (DEPLOY / "docker" / "serverapp.Dockerfile").resolve(),
    (DEPLOY / "docker" / "clientapp.Dockerfile").resolve(),
}
FLOWER_VERSION = "1.41.0"
ENV_VAR = "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"
DISABLE_FLAG = "--disable-runtime-dependency-installation"
LABELS = ["billing", "technical", "shipping", "account", "cancellation"]
NODE_KEYS = {
    "name",
    "data-path",
    "state-dir",
    "require-dp",
    "max-epsilon",
    "min-noise-multiplier",
    "require-secure-aggregation",
    "federated-evaluation",
}

# ${NAME:-default} / ${NAME-default} / ${NAME}; Compose's interpolation, defaults only.
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")


def _interpolate(text: str) -> str | None:
    """The value with every variable at its default; None if one has no default."""
    missing = False

    def sub(match: re.Match[str]) -> str:
        nonlocal missing
        if match.group(2) is None:
            missing = True
            return ""
        return match.group(3)

    out = _VAR.sub(sub, text)
    return None if missing else out


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _dockerfile(service: dict[str, Any]) -> Path:
    build = service["build"]
    context = build if isinstance(build, str) else build["context"]
    name = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    return (DEPLOY / context / name).resolve()


def _dockerfile_from(path: Path) -> str:
    froms = [
        line.split()[1]
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip().upper().startswith("FROM ")
    ]
    assert froms, f"{path}: no FROM line"
    return froms[0]


def _kind(service: dict[str, Any]) -> str:
    """superlink, supernode or superexec: which Flower command the container runs."""
    if "build" in service:
        text = _dockerfile(service).read_text(encoding="utf-8")
        assert 'ENTRYPOINT ["python", "-m", "deploy.superexec"]' in text
        return "superexec"
    image = service["image"]
    for kind in ("superlink", "supernode", "superexec"):
        if image.startswith(f"flwr/{kind}:"):
            return kind
    raise AssertionError(f"unknown image {image}")


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    if isinstance(command, str):
        command = shlex.split(command)
    out = []
    for item in command:
        value = _interpolate(str(item))
        assert value is not None, f"{item}: variable without a default"
        out.append(value)
    return out


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _volumes(service: dict[str, Any]) -> list[tuple[str | None, str]]:
    """(host, container) for each bind mount; host None for named volumes."""
    out = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            source, target = volume.get("source"), volume["target"]
            kind = volume.get("type", "bind")
        else:
            expanded = _interpolate(volume)
            assert expanded is not None, f"{volume}: variable without a default"
            parts = expanded.split(":")
            source, target = parts[0], parts[1]
            kind = "bind" if "/" in source or source.startswith(".") else "volume"
        out.append((source if kind == "bind" else None, target))
    return out


def _guide_created_paths() -> set[str]:
    """Repo-relative paths the guide's 'Host paths you create' list says a step creates."""
    text = GUIDE.read_text(encoding="utf-8")
    match = re.search(r"^### Host paths you create\n(.*?)(?=^#)", text, re.S | re.M)
    assert match, "GUIDE.md needs a '### Host paths you create' section"
    listed = set()
    for line in match.group(1).splitlines():
        if line.startswith("- "):
            listed.update(p for p in re.findall(r"`([^`]+)`", line) if "/" in p)
    return listed


def _flower_parser(kind: str):  # type: ignore[no-untyped-def]
    if kind == "superlink":
        from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink

        return _parse_args_run_superlink()
    if kind == "supernode":
        from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode

        return _parse_args_run_supernode()
    from flwr.supercore.cli.flower_superexec import _parse_args

    return _parse_args()


def _parse(parser, argv: list[str], where: str):  # type: ignore[no-untyped-def]
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:  # argparse reports the bad flag on stderr
        raise AssertionError(f"{where}: {argv} rejected by the parser") from exc


# ------------------------------------------------------------------------ compose


def test_compose_has_every_party(services: dict[str, dict[str, Any]]) -> None:
    kinds = {name: _kind(s) for name, s in services.items()}
    assert sorted(kinds.values()).count("superlink") == 1
    assert sorted(kinds.values()).count("supernode") >= 2
    profiles = {p for s in services.values() for p in s.get("profiles", [])}
    assert {"coordinator", "org1", "org2"} <= profiles


def test_images_are_pinned_or_built_from_our_dockerfiles(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        if "build" in service:
            dockerfile = _dockerfile(service)
            assert dockerfile in OUR_DOCKERFILES, f"{name}: builds {dockerfile}"
            assert dockerfile.is_file()
            assert (DEPLOY / service["build"]["context"]).resolve().is_dir()
        else:
            image = service["image"]
            assert re.fullmatch(
                rf"flwr/(superlink|supernode|superexec):{re.escape(FLOWER_VERSION)}(-[\w.]+)?",
                image,
            ), f"{name}: image {image} is not a Flower {FLOWER_VERSION} image"


@pytest.mark.parametrize("path", sorted(OUR_DOCKERFILES), ids=lambda p: p.name)
def test_dockerfiles_start_from_flower_and_install_the_project(path: Path) -> None:
    assert path.is_file()
    base = _dockerfile_from(path)
    assert re.fullmatch(rf"flwr/[a-z]+:{re.escape(FLOWER_VERSION)}(-[\w.]+)?", base), base
    text = path.read_text(encoding="utf-8")
    assert "torch==2.13.0" in text
    assert "https://download.pytorch.org/whl/cpu" in text
    assert f"{ENV_VAR}=1" in text
    assert "pip install /tmp/privatune" in text
    # Every COPY source is in the build context (the repository root).
    for line in text.splitlines():
        if line.startswith("COPY "):
            sources = [t for t in line.split()[1:-1] if not t.startswith("--")]
            for source in sources:
                assert (REPO / source).exists(), f"{path.name}: COPY {source} missing"


def test_relative_host_paths_exist_or_are_created_by_the_guide(
    services: dict[str, dict[str, Any]],
) -> None:
    created = _guide_created_paths()
    unexplained = []
    for name, service in services.items():
        for host, _ in _volumes(service):
            if host is None or host.startswith("/"):
                continue
            path = (DEPLOY / host).resolve()
            rel = path.relative_to(REPO).as_posix()
            if not path.exists() and rel not in created:
                unexplained.append(f"{name}: {host} ({rel})")
    assert not unexplained, f"neither in the repo nor created by a guide step: {unexplained}"
    for rel in created:  # what the guide promises to create must not be committed
        assert rel.startswith("deploy/"), rel


def test_runtime_dependency_installation_is_off_everywhere(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        command = _command(service)
        env = _environment(service)
        assert env.get(ENV_VAR) == "1" or DISABLE_FLAG in command, name
        assert not any(a.startswith("--allow-runtime-dependency") for a in command), name


def test_flower_accepts_every_command_line(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        kind = _kind(service)
        args = _parse(_flower_parser(kind), _command(service), f"compose {name}")
        if kind == "superlink":
            assert not args.insecure and args.ssl_certfile and args.enable_supernode_auth
            assert args.isolation == "process"
            assert not args.runtime_dependency_install
        elif kind == "supernode":
            assert not args.insecure and args.root_certificates
            assert args.auth_supernode_private_key and args.isolation == "process"
            assert not args.runtime_dependency_install
        else:
            assert not args.runtime_dependency_install


def test_files_named_in_commands_are_mounted(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        targets = {container for _, container in _volumes(service)}
        for arg in _command(service):
            value = arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else arg
            if value.startswith("/app/keys/"):
                assert value in targets, f"{name}: {value} is not mounted"


def test_superlink_publishes_the_fleet_port(services: dict[str, dict[str, Any]]) -> None:
    (superlink,) = [s for s in services.values() if _kind(s) == "superlink"]
    assert any(str(p).split(":")[-2:] == ["9092", "9092"] for p in superlink["ports"])


@pytest.mark.parametrize(("org", "node_file"), [("org1", "node.toml"), ("org2", "node2.toml")])
def test_node_config_paths_line_up_in_the_containers(
    services: dict[str, dict[str, Any]], org: str, node_file: str
) -> None:
    """The supernode names files the ClientApp opens in its own container, under /app."""
    policy = tomllib.loads((EXAMPLES / node_file).read_text(encoding="utf-8"))
    supernode, clientapp = services[f"supernode-{org}"], services[f"clientapp-{org}"]
    (node_config,) = [a for a in _command(supernode) if a.startswith("--node-config=")]
    pairs = dict(re.findall(r'(\S+?)="([^"]*)"', node_config.split("=", 1)[1]))
    mounts = dict((c, h) for h, c in _volumes(clientapp))
    assert pairs["node-config-file"] in mounts
    assert pairs["audit-log"] == f"/app/{policy['state-dir']}/audit.jsonl"
    assert f"/app/{policy['state-dir']}" in mounts  # ledger + audit log persist
    assert f"/app/{policy['data-path']}" in mounts  # the organisation's data
    assert (DEPLOY / mounts[f"/app/{policy['data-path']}"]).resolve() == (
        REPO / policy["data-path"]
    )


# ------------------------------------------------------------------------ systemd


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    return parser


@pytest.mark.parametrize("which", sorted(UNITS))
def test_systemd_units(which: str) -> None:
    path = UNITS[which]
    unit = _unit(path)
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    service = unit["Service"]
    for key in ("ExecStart", "Restart", "User"):
        assert service.get(key), f"{path.name}: no {key}"
    assert service["Restart"] == "on-failure"
    assert service["User"] not in ("root", "0")
    assert service["ExecStart"].startswith("/opt/privatune/.venv/bin/privatune ")
    for key, value in (
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
    ):
        assert service.get(key) == value, f"{path.name}: {key}"
    assert service.get("ReadWritePaths", "").startswith("/var/lib/privatune/")
    # Environment= may repeat; configparser keeps only the last, so read the lines.
    lines = path.read_text(encoding="utf-8").splitlines()
    assert f"Environment={ENV_VAR}=1" in lines
    if which == "node":
        assert "/etc/privatune/%i/node.toml" in service["ExecStart"]


@pytest.mark.parametrize("which", sorted(UNITS))
def test_unit_commands_parse_with_privatune(which: str) -> None:
    from privatune.cli import build_parser

    exec_start = _unit(UNITS[which])["Service"]["ExecStart"]
    line = (
        exec_start.replace("${PRIVATUNE_SUPERLINK}", "coordinator.example.org:9092")
        .replace("${PRIVATUNE_NODE_PORT}", "9094")
        .replace("%i", "org1")
    )
    argv = shlex.split(line)[1:]
    _parse(build_parser(), argv, UNITS[which].name)
    assert argv[:2] == (["coordinator", "start"] if which == "superlink" else ["node", "start"])


# ------------------------------------------------------------------------ the guide


def _guide_privatune_commands() -> list[list[str]]:
    """Every `privatune ...` command in the guide's shell blocks, as argv (no options
    shown as [optional] or <placeholder>)."""
    text = GUIDE.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            match = re.search(r"(?:^|\s)(?:\S*/)?\.venv/bin/privatune\s(.*)", line)
            if not match:
                continue
            tokens = shlex.split(match.group(1), comments=True)
            argv = []
            for token in tokens:
                if token in {"&", "&&", "|", ";", "2>&1"} or token.startswith(">"):
                    break
                argv.append(token.replace("$ORG", "org1").replace("$PWD", str(REPO)))
            if any(t.startswith(("[", "<")) for t in argv) or {"-h", "--help"} & set(argv):
                continue
            commands.append(argv)
    return commands


def test_guide_commands_parse_with_privatune() -> None:
    from privatune.cli import build_parser

    commands = _guide_privatune_commands()
    used = {tuple(argv[:2]) for argv in commands}
    for expected in [
        ("keys", "server"),
        ("keys", "node"),
        ("coordinator", "start"),
        ("coordinator", "register"),
        ("coordinator", "run"),
        ("node", "start"),
    ]:
        assert expected in used, f"the guide never shows `privatune {' '.join(expected)}`"
    for argv in commands:
        _parse(build_parser(), argv, "GUIDE.md")


def test_guide_points_at_the_operator_files() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    for name in (
        "deploy/compose.yaml",
        "deploy/docker/serverapp.Dockerfile",
        "deploy/docker/clientapp.Dockerfile",
        "privatune-superlink.service",
        "privatune-node@.service",
        "deploy/examples/node.toml",
        "deploy/examples/run.toml",
        "audit.jsonl",
        "metrics.jsonl",
    ):
        assert name in text, name
    for port in ("9092", "9093", "9094"):
        assert port in text


# ------------------------------------------------------------------------ examples


@pytest.mark.parametrize(
    ("file", "org"), [("node.toml", "org1"), ("node2.toml", "org2")], ids=["org1", "org2"]
)
def test_example_node_configs(file: str, org: str) -> None:
    from client.policy import NodePolicy

    data = tomllib.loads((EXAMPLES / file).read_text(encoding="utf-8"))
    # node.toml is the fully commented example: it shows every key a node accepts.
    every_key = {name.replace("_", "-") for name in NodePolicy.model_fields}
    assert set(data) == (every_key if file == "node.toml" else NODE_KEYS)
    assert data["name"] == org
    assert data["data-path"] == f"deploy/examples/data/{org}.jsonl"
    assert data["state-dir"] == f"runs/nodes/{org}"
    assert (REPO / data["data-path"]).is_file()
    assert data["require-dp"] is True and data["require-secure-aggregation"] is True
    policy = NodePolicy.model_validate(data)  # what `privatune node start` accepts
    assert policy.max_epsilon > 0


def test_example_run_config_loads_with_dp_and_secure_aggregation() -> None:
    from common.config import load_config
    from server.secagg import calibrate

    config = load_config(EXAMPLES / "run.toml")
    assert config.privacy.enabled
    assert config.privacy.target_epsilon or config.privacy.noise_multiplier
    assert config.secure_aggregation.enabled and config.secure_aggregation.fixed_weight
    assert config.data.labels == LABELS
    assert config.data.server_eval in ("", None)
    fed = config.federation
    assert (fed.num_clients, fed.clients_per_round, fed.min_clients, fed.rounds) == (2, 2, 2, 2)
    # Usable on real nodes: SecAgg+ needs no partition to size its weights.
    assert calibrate(config, largest_client=None).max_weight == 1.0


def test_example_data_files() -> None:
    seen: list[set[str]] = []
    for org in ("org1", "org2"):
        path = EXAMPLES / "data" / f"{org}.jsonl"
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert 50 <= len(rows) <= 70, f"{path}: {len(rows)} rows"
        for row in rows:
            assert set(row) == {"text", "label"}
            assert isinstance(row["text"], str) and row["text"].strip()
            assert row["label"] in LABELS
        assert {r["label"] for r in rows} == set(LABELS)
        seen.append({r["text"] for r in rows})
    assert not seen[0] & seen[1], "the two organisations share rows"
