"""The HTTP server under the viewer: cheroot, bounded bodies, per-client guards."""
