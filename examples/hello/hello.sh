#!/bin/sh
# Run inside the workspace by scripts/demo: shows where it runs and what it sees.
. /etc/os-release
echo "$GREETING"
echo "  system:    $PRETTY_NAME"
echo "  hostname:  $(hostname)"
echo "  user:      $(id -un) (uid $(id -u)), home $HOME"
echo "  folder:    $(pwd)"
echo "  created:   $(cat /root/created-at)"
echo "  processes: $(ls /proc | grep -c '^[0-9]') visible (its own pid namespace)"
echo "  network:   $(ls /sys/class/net | tr '\n' ' ')($(grep -m1 '^nameserver' /etc/resolv.conf | cut -d' ' -f2) is Warren's resolver and gateway)"
