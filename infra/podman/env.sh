# Sourced by the podman scripts: a containers.conf that works on a host without a Docker engine,
# systemd or a cgroup v2 delegation (runc, cgroupfs, ulimits no higher than the host's own).
# A CONTAINERS_CONF already set is kept.
if [ -z "${CONTAINERS_CONF:-}" ]; then
  # podman's defaults are above what this kind of host allows (setrlimit is refused); nproc
  # above 32768 was refused too, even under the host's hard limit
  nofile=$(ulimit -Hn) nproc=$(ulimit -Hu)
  if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then nproc=32768; fi
  if [ "$nofile" = unlimited ]; then nofile=1048576; fi
  CONTAINERS_CONF=${TMPDIR:-/tmp}/slimgate-containers-$(id -u).conf
  cat > "$CONTAINERS_CONF" <<CONF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
  export CONTAINERS_CONF
fi
