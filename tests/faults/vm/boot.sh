# Run inside the VM by batchd-vmtest.service (see build-image.sh), as root, from the
# host's share: install batchd from the wheelhouse, run it as batchd.service under the
# real systemd with the project's unit, then run the scenarios. Lines the host reads
# start with "BATCHD-VM"; the figures go to the share's results.json.
share=/mnt/share
venv=/opt/batchd/venv
say() { echo "BATCHD-VM $*"; }
elapsed() { echo "$(cut -d' ' -f1 /proc/uptime)"; }

say "booted uptime=$(elapsed)"
python3 -m venv "$venv" \
  && "$venv/bin/pip" install --quiet --no-index --no-compile --disable-pip-version-check \
       --find-links "$share/wheelhouse" batchd \
  || { say "install failed"; exit 1; }
say "installed uptime=$(elapsed)"

useradd --system --home-dir /var/lib/batchd --shell /usr/sbin/nologin --groups video batchd
install -d /etc/batchd
install -m 0644 "$share/batchd.toml" /etc/batchd/batchd.toml
head -c 32 /dev/urandom | base64 > /etc/batchd/token
chmod 0600 /etc/batchd/token
install -m 0644 "$share/batchd.service" /etc/systemd/system/batchd.service
systemctl daemon-reload
# Type=notify: this returns once the daemon is ready (or has failed).
if ! systemctl start batchd.service; then
  say "batchd.service failed to start"
  journalctl -u batchd.service --no-pager > "$share/journal.txt" 2>&1
  exit 1
fi
say "started uptime=$(elapsed)"
# What check-config says from the service's own (delegated) cgroup, and from outside it.
leaf=/sys/fs/cgroup/system.slice/batchd.service/daemon
sh -c 'echo $$ > "$1/cgroup.procs" && exec runuser -u batchd -- "$2" check-config "$3"' \
  check "$leaf" "$venv/bin/batchd" /etc/batchd/batchd.toml \
  > "$share/check-config-delegated.txt" 2>&1
runuser -u batchd -- "$venv/bin/batchd" check-config /etc/batchd/batchd.toml \
  > "$share/check-config-plain.txt" 2>&1

"$venv/bin/python" "$share/scenarios.py" "$share/results.json" > "$share/scenarios.log" 2>&1
say "scenarios done rc=$? uptime=$(elapsed)"
journalctl -u batchd.service --no-pager -o cat > "$share/journal.txt" 2>&1
say "end"
