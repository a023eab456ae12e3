#!/bin/bash
# Run a command inside the guest (all its namespaces, its root).
: "${STATE:?}"
G=$(cat "$STATE/guest.pid")
exec nsenter -t "$G" -a --wdns=/ "$@"
