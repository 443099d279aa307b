#!/usr/bin/env bash
# keepalived's check of the local wtgate (vrrp_script chk_wtgate): exit 0 while
#   1. wtgate's listener accepts a TCP connection (a connection that sends nothing is neither
#      routed nor logged), and
#   2. its admin listener answers GET /stats with 200 within 2 s (the engine is there to answer),
# else 1, saying which on stderr (keepalived logs it). Install as /etc/keepalived/check-wtgate.sh,
# owned by root, mode 0755.
#
# Settings, from the environment (keepalived passes none, so the defaults are what it uses):
#   WTGATE_LISTEN       the listener to connect to           (default 127.0.0.1:80)
#   WTGATE_ADMIN        the admin listener                   (default http://127.0.0.1:8404)
#   WTGATE_ADMIN_TOKEN  the admin token                      (default: admin.token of WTGATE_CONFIG)
#   WTGATE_CONFIG       wtgate's config file                 (default /etc/wtgate/wtgate.toml)
set -u

listen=${WTGATE_LISTEN:-127.0.0.1:80}
admin=${WTGATE_ADMIN:-http://127.0.0.1:8404}
config=${WTGATE_CONFIG:-/etc/wtgate/wtgate.toml}
token=${WTGATE_ADMIN_TOKEN:-}
if [ -z "$token" ] && [ -r "$config" ]; then
    # The file's only key named token is [admin] token.
    token=$(sed -n 's/^[[:space:]]*token[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$config" | tail -n 1)
fi

host=${listen%:*}
port=${listen##*:}
# shellcheck disable=SC2016 # $1 and $2 are the inner bash's arguments
if ! timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null; then
    echo "check-wtgate: no connection to wtgate's listener $listen" >&2
    exit 1
fi

# The token goes to curl on stdin (-K -), not on its command line, which every local user sees.
status=$(
    {
        if [ -n "$token" ]; then
            printf 'header = "Authorization: Bearer %s"\n' "$token"
        fi
    } | curl --silent --max-time 2 --output /dev/null --write-out '%{http_code}' \
        --config - "$admin/stats"
)
if [ "$status" != 200 ]; then
    echo "check-wtgate: $admin/stats answered '${status:-nothing}', not 200" >&2
    exit 1
fi
exit 0
