"""The embedded mitmproxy: run it, trust it, point a child process at it."""
