"""agentina: the reference agent for the Agentina Control Plane. It uses only the public
API (/api/v1) over HTTP, and imports nothing from the Control Plane's code."""

__version__ = "1.10.0"
