"""The command shown with a minted token is pasted into a shell as it is: it must parse,
hold no placeholder, and hand `agentina install` exactly the values the page meant."""

import html
import re
import subprocess
from pathlib import Path

import pytest
from django.urls import reverse

from portal.install import install_command
from tests import factories

pytestmark = pytest.mark.django_db

FAKE_AGENTINA = """#!/bin/sh
for arg in "$@"; do printf '%s\\0' "$arg"; done > "$ARGV_FILE"
"""


def copied_commands(page: str) -> dict[str, str]:
    """What each "Copy command" button puts on the clipboard: the text of the element it
    names, trimmed (static/portal/portal.js), by the secret it enrolls."""
    commands = {}
    for button_target in re.findall(r'data-copy="#(install-\d+)"', page):
        element = re.search(rf'<pre[^>]* id="{button_target}"[^>]*>(.*?)</pre>', page, re.S)
        assert element, f"the button copies #{button_target}, which is not on the page"
        text = html.unescape(element.group(1)).strip()
        secret = re.search(r"agtn_act_[0-9A-Za-z]+", text)
        assert secret, text
        commands[secret.group(0)] = text
    return commands


def mint(client, role: str) -> dict[str, str]:
    response = client.post(
        reverse("portal:tokens"), {"count": 1, "role": role, "expires_in_days": 7}
    )
    assert response.status_code == 200
    return copied_commands(response.content.decode())


def paste(command: str, tmp_path: Path) -> list[str]:
    """Paste into bash with a fake `agentina` first on PATH; the arguments it was given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "agentina").write_text(FAKE_AGENTINA)
    (bin_dir / "agentina").chmod(0o755)
    argv_file = tmp_path / "argv"
    done = subprocess.run(
        ["bash"],
        input=command + "\n",
        capture_output=True,
        text=True,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "ARGV_FILE": str(argv_file)},
        cwd=tmp_path,
        check=False,
        timeout=10,
    )
    assert (done.returncode, done.stderr) == (0, "")
    return argv_file.read_text().split("\0")[:-1]


@pytest.mark.parametrize(("role", "expected_role"), [("tester", "tester"), ("", "coder")])
def test_the_copied_command_is_valid_shell_and_installs_a_service(
    owner, customer, tmp_path, role, expected_role
):
    factories.license(customer, max_agents=3)
    ((secret, command),) = mint(owner, role).items()
    assert "<" not in command and ">" not in command  # no placeholder left to fill
    checked = subprocess.run(
        ["bash", "-n"], input=command, capture_output=True, text=True, check=False
    )
    assert (checked.returncode, checked.stderr) == (0, "")
    assert "agentina run" not in command  # nothing left running in the foreground
    assert paste(command, tmp_path) == [
        "install",
        "--server",
        "http://testserver",
        "--token",
        secret,
        "--role",
        expected_role,
        "--zone",
        "",
    ]


def test_the_command_comes_with_the_htmx_mint_too(owner, customer):
    factories.license(customer, max_agents=3)
    response = owner.post(
        reverse("portal:tokens"),
        {"count": 2, "role": "coder", "expires_in_days": 7},
        HTTP_HX_REQUEST="true",
    )
    commands = copied_commands(response.content.decode())
    assert len(commands) == 2
    assert all(f"--token {secret}" in command for secret, command in commands.items())


def test_the_zone_the_customer_sets_reaches_the_agent(tmp_path):
    command = install_command(server="https://cp.example.com", token="agtn_act_x", role="coder")
    edited = command.replace("AGENTINA_ZONE=''", "AGENTINA_ZONE=eu-west-1a")
    assert paste(edited, tmp_path)[-2:] == ["--zone", "eu-west-1a"]


def test_every_value_is_quoted_whatever_it_holds(tmp_path):
    hostile = 'https://cp.example.com/$(touch pwned)\'; echo `id` "x"'
    argv = paste(install_command(server=hostile, token="agtn_act_x", role="coder"), tmp_path)
    assert argv[argv.index("--server") + 1] == hostile
    assert not (tmp_path / "pwned").exists()
