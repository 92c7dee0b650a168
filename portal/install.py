"""The command a customer pastes on a host to enroll it with a freshly minted token. It is
valid shell exactly as copied: every value quoted, no placeholder; what the customer may
choose (the host's zone, the role of an any-role token) is a named variable set on its
own line, with a default that works. `agentina install` activates and runs the agent as
a systemd service."""

import shlex

from fleet.choices import AgentRole

DEFAULT_ROLE: str = AgentRole.CODER.value


def install_command(*, server: str, token: str, role: str) -> str:
    """For a token minted for `role` ("" for any role) on the Control Plane at `server`."""
    lines = ["AGENTINA_ZONE=''"]
    if role:
        role_flag = f"--role {shlex.quote(role)}"
    else:
        lines.append(f"AGENTINA_ROLE={shlex.quote(DEFAULT_ROLE)}")
        role_flag = '--role "$AGENTINA_ROLE"'
    lines += [
        "agentina install \\",
        f"    --server {shlex.quote(server)} \\",
        f"    --token {shlex.quote(token)} \\",
        f'    {role_flag} --zone "$AGENTINA_ZONE"',
    ]
    return "\n".join(lines)
