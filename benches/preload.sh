#!/usr/bin/env bash
# The preload on unmodified programs, against the same programs without
# it, in one run with rounds whose order of modes rotates:
#
# - socat moving 4 GiB over a Unix socket (/dev/zero to /dev/null), time,
#   both sides preloaded in safe mode ("socat_4gib_time") and in fast mode
#   ("fast_socat_4gib_time");
# - redis-server with redis-benchmark over its Unix socket, requests/s:
#   -c 50 -P 1 and -P 16 for get and set, and -c 1 -P 1 get, with both
#   sides preloaded in safe mode ("safe_") and in fast mode ("fast_"), and
#   -c 1 in fast mode with PROCWIRE_SPIN_US=50 ("spin_"); for every
#   redis case also the CPU seconds of both processes per 100k requests,
#   with and without, so that a gain is not bought with spinning and a
#   loss tells the library's cost from the host's noise;
# - the same -c 50 -P 1 get with the library loaded and PROCWIRE_ACCEL
#   naming no socket they use ("passthrough_"), three pairs per round.
#
# Prints each case's medians and one RATIO line per case: the median of the
# per-round ratios (preloaded over plain; time over time, rate over rate).
#
#   bash benches/preload.sh [ROUNDS] [REQUESTS]
#
# The -P 16 cases run ten times REQUESTS, so that each run lasts about as
# long as a -P 1 run (at 100,000 requests one would take 50 ms, inside
# the noise of a shared host).
#
# Installs socat, redis-server and redis-tools from Debian's packages if
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
N=${2:-200000}

need() { command -v "$1" >/dev/null 2>&1; }
if ! need socat || ! need redis-server || ! need redis-benchmark; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq socat redis-server redis-tools
fi
cargo build -q --release -p procwire-preload
LIB=$PWD/target/release/libprocwire_preload.so

dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT

# shellcheck source=benches/preload_lib.sh
. benches/preload_lib.sh

# Seconds socat takes to move 4 GiB in mode $1.
socat_time() {
  local s="$dir/socat.sock"; rm -f "$s"
  # shellcheck disable=SC2046
  env $(mode_env "$1" "$s") socat -u -b 262144 UNIX-LISTEN:"$s" OPEN:/dev/null &
  local server=$!
  for _ in $(seq 200); do [ -S "$s" ] && break; sleep 0.01; done
  local t0 t1
  t0=$(date +%s.%N)
  # shellcheck disable=SC2046
  env $(mode_env "$1" "$s") socat -u -b 262144 OPEN:/dev/zero,readbytes=4294967296 UNIX-CONNECT:"$s"
  wait "$server"
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
}

# CPU seconds (user + system) a process has used so far.
cpu_of() { # pid
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}

# "rps cpu" of redis-benchmark in mode $1 with arguments $2, against a
# redis-server started in the same mode: requests/s, and the CPU seconds
# of both processes per 100k requests.
redis_rps() { # mode args [requests]
  local n=${3:-$N}
  local s="$dir/redis.sock"; rm -f "$s"
  # shellcheck disable=SC2046
  env $(mode_env "$1" "$s") redis-server --port 0 --unixsocket "$s" --save "" --appendonly no \
    --daemonize no --dir "$dir" >/dev/null &
  local server=$!
  for _ in $(seq 200); do [ -S "$s" ] && break; sleep 0.01; done
  local before rps client after
  before=$(cpu_of "$server")
  # shellcheck disable=SC2046,SC2086
  client=$( { TIMEFORMAT='%U %S'; time env $(mode_env "$1" "$s") redis-benchmark -s "$s" -n "$n" $2 \
    --csv 2>/dev/null | awk -F'"' 'NR > 1 { print $4 }' | head -1 > "$dir/rps"; } 2>&1 )
  after=$(cpu_of "$server")
  rps=$(cat "$dir/rps")
  kill "$server"; wait "$server" 2>/dev/null || true
  awk -v r="$rps" -v c="$client" -v a="$before" -v b="$after" -v n="$n" \
    'BEGIN { split(c, t, " "); printf "%s %.3f\n", r, (t[1] + t[2] + b - a) * 100000 / n }'
}

declare -A ours theirs cpu_ours cpu_theirs
add() { # case value-ours value-theirs
  ours[$1]="${ours[$1]:-} $2"; theirs[$1]="${theirs[$1]:-} $3"
}
add_cpu() { # case cpu-ours cpu-theirs
  cpu_ours[$1]="${cpu_ours[$1]:-} $2"; cpu_theirs[$1]="${cpu_theirs[$1]:-} $3"
}
# The modes of round $1 in a rotating order, so that none always goes first.
order() { # round modes...
  local r=$1; shift
  local m=("$@") k=$(( r % $# ))
  echo "${m[@]:$k}" "${m[@]:0:$k}"
}
for r in $(seq "$ROUNDS"); do
  declare -A got
  for m in $(order "$r" plain safe fast); do got[$m]=$(socat_time $m); done
  add socat_4gib_time "${got[safe]}" "${got[plain]}"
  add fast_socat_4gib_time "${got[fast]}" "${got[plain]}"
  for c in "c50_p1_get:-c 50 -P 1 -t get" "c50_p1_set:-c 50 -P 1 -t set" \
           "c50_p16_get:-c 50 -P 16 -t get" "c50_p16_set:-c 50 -P 16 -t set" \
           "c1_p1_get:-c 1 -P 1 -t get"; do
    name=${c%%:*}; args=${c#*:}
    modes="plain safe fast"
    [ "$name" = c1_p1_get ] && modes="plain safe fast spin"
    n=$N
    case $name in *p16*) n=$((N * 10)) ;; esac
    # shellcheck disable=SC2086
    for m in $(order "$r" $modes); do got[$m]=$(redis_rps $m "$args" $n); done
    add "safe_redis_$name" "${got[safe]% *}" "${got[plain]% *}"
    add_cpu "safe_redis_$name" "${got[safe]#* }" "${got[plain]#* }"
    add "fast_redis_$name" "${got[fast]% *}" "${got[plain]% *}"
    add_cpu "fast_redis_$name" "${got[fast]#* }" "${got[plain]#* }"
    if [ "$name" = c1_p1_get ]; then
      add spin_redis_c1_p1_get "${got[spin]% *}" "${got[plain]% *}"
      add_cpu spin_redis_c1_p1_get "${got[spin]#* }" "${got[plain]#* }"
    fi
  done
  # Its goal is the tightest (2%), inside one pair's noise on a shared
  # host: three pairs per round.
  for k in 1 2 3; do
    for m in $(order "$((r + k))" plain passthrough); do got[$m]=$(redis_rps $m "-c 50 -P 1 -t get"); done
    add passthrough_redis_c50_p1_get "${got[passthrough]% *}" "${got[plain]% *}"
    add_cpu passthrough_redis_c50_p1_get "${got[passthrough]#* }" "${got[plain]#* }"
  done
done

cases=(socat_4gib_time safe_redis_c50_p1_get safe_redis_c50_p1_set safe_redis_c50_p16_get
  safe_redis_c50_p16_set safe_redis_c1_p1_get passthrough_redis_c50_p1_get
  fast_redis_c50_p1_get fast_redis_c50_p1_set fast_redis_c50_p16_get fast_redis_c50_p16_set
  fast_redis_c1_p1_get fast_socat_4gib_time spin_redis_c1_p1_get)
printf '%-30s %14s %14s %18s\n' case preloaded plain 'cpu-s/100k p/np'
for c in "${cases[@]}"; do
  cpu=""
  if [ -n "${cpu_ours[$c]:-}" ]; then
    cpu="$(printf '%s\n' ${cpu_ours[$c]} | median) / $(printf '%s\n' ${cpu_theirs[$c]} | median)"
  fi
  printf '%-30s %14s %14s %18s\n' "$c" "$(printf '%s\n' ${ours[$c]} | median)" \
    "$(printf '%s\n' ${theirs[$c]} | median)" "$cpu"
done
for c in "${cases[@]}"; do
  r=$(ratio "${ours[$c]}" "${theirs[$c]}")
  case $c in
    socat_4gib_time | fast_socat_4gib_time) goal="<= 0.5" ;;
    passthrough_*) goal=">= 0.98" ;;
    fast_redis_c50_p1_*) goal=">= 1.5" ;;
    fast_redis_c50_p16_*) goal=">= 1.15" ;;
    spin_*) goal="" ;;
    *) goal=">= 0.95" ;;
  esac
  if [ -z "$goal" ]; then
    # Opt-in spinning has no goal: its figure and CPU cost are printed.
    awk -v r="$r" -v c="$c" 'BEGIN { printf "spin: preload/%s = %.2f (cpu above)\n", c, r }'
    continue
  fi
  awk -v r="$r" -v c="$c" -v g="$goal" 'BEGIN { printf "RATIO preload/%s = %.2f goal %s\n", c, r, g }'
done
