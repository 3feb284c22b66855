# Helpers of the preload's benchmarks (sourced by benches/preload.sh and
# benches/preload_pingpong.sh): medians, ratios, and the environment of a
# mode. The sourcing script sets LIB (the built library) and dir (its
# scratch directory) first.

median() { sort -g | awk '{a[NR]=$1} END { print a[int((NR+1)/2)] }'; }
# The median of the per-round ratios of two lists (same length, in order).
ratio() { # ours-list theirs-list
  paste -d' ' <(printf '%s\n' $1) <(printf '%s\n' $2) | awk '{ print $1/$2 }' | median
}

# env(1) arguments for a mode: plain, safe or fast (both sides
# accelerated in that mode), spin (fast, spinning up to 50 us in waits), or
# passthrough (loaded, naming another socket).
mode_env() { # mode socket
  case $1 in
    plain) echo "-u LD_PRELOAD" ;;
    safe) echo "LD_PRELOAD=$LIB PROCWIRE_ACCEL=$2 PROCWIRE_ACCEL_MODE=safe" ;;
    fast) echo "LD_PRELOAD=$LIB PROCWIRE_ACCEL=$2 PROCWIRE_ACCEL_MODE=fast" ;;
    spin) echo "LD_PRELOAD=$LIB PROCWIRE_ACCEL=$2 PROCWIRE_ACCEL_MODE=fast PROCWIRE_SPIN_US=50" ;;
    passthrough) echo "LD_PRELOAD=$LIB PROCWIRE_ACCEL=$dir/none.sock" ;;
  esac
}
