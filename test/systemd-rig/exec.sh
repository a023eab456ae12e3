#!/bin/bash
# Run a command inside the guest (all its namespaces, its root), with the
# guest's own PATH rather than whatever the host shell had.
: "${STATE:?}"
G=$(cat "$STATE/guest.pid")
exec nsenter -t "$G" -a --wdns=/ /usr/bin/env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
