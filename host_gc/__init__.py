"""The host's garbage collector for dockerd (standard library only; runs on the hosts).

`plan` holds the decisions as pure functions (dockerd's documents and the
time in, what to remove out); `docker_api` is a small Engine API client on
dockerd's unix socket; `__main__` runs one collection (a systemd timer starts
it as root) and writes its metrics for the node exporter's textfile collector.
"""
