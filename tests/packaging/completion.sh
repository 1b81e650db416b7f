#!/usr/bin/env bash
# Bash completion (completions/pirec.bash) on sample command lines: `complete -p` names the
# function of every program, subcommands and options complete, config keys come from the schema
# (`pirec config defaults`), session directories from [session] output_dir, and every option a
# program's --help prints is offered.
# usage: completion.sh SOURCE_DIR BIN_DIR
set -u
src=${1:?usage: completion.sh SOURCE_DIR BIN_DIR}
bin=${2:?usage: completion.sh SOURCE_DIR BIN_DIR}
export PATH=$bin:$PATH
tmp=$(mktemp -d "${TMPDIR:-/tmp}/pirec-completion.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
_pirec_conf=$tmp/pirec.conf
# shellcheck source=/dev/null
. "$src/completions/pirec.bash"

# complete WORDS...: runs the function registered for WORDS[0] on the line, the last word being
# the one under the cursor; the candidates end up one per line in $got.
complete_line()
{
	COMP_WORDS=("$@")
	COMP_CWORD=$(($# - 1))
	COMP_LINE="$*"
	COMP_POINT=${#COMP_LINE}
	COMPREPLY=()
	local spec fn
	spec=$(complete -p "$1") || { echo "FAIL: complete -p $1: no completion"; fail=1; return; }
	fn=$(sed -n 's/.*-F \([^ ]*\) .*/\1/p' <<<"$spec")
	"$fn" "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
	got=$(printf '%s\n' "${COMPREPLY[@]}" | sort)
}

# run_line "LINE": complete_line on LINE as typed; a trailing blank puts the cursor on a new word.
run_line()
{
	local words
	read -ra words <<<"$1"
	[[ $1 == *" " ]] && words+=("")
	complete_line "${words[@]}"
}

# expect "LINE" WANTED...: every WANTED is among the candidates.
expect()
{
	local line=$1 w; shift
	run_line "$line"
	for w in "$@"; do
		grep -qxF -- "$w" <<<"$got" || { echo "FAIL: '$line' does not offer '$w' (got: $(echo $got))"; fail=1; }
	done
}

# absent "LINE" UNWANTED...: no UNWANTED among the candidates.
absent()
{
	local line=$1 w; shift
	run_line "$line"
	for w in "$@"; do
		grep -qxF -- "$w" <<<"$got" && { echo "FAIL: '$line' offers '$w'"; fail=1; }
	done
}

for p in pirec pirec-remux pirec-camera pirec-eyetracker pirec-notes pirec-audio pirec-eyesim pirec-web; do
	complete -p "$p" >/dev/null 2>&1 || { echo "FAIL: complete -p $p: not registered"; fail=1; }
done

expect "pirec " config record status start stop trial note reload fleet keys decrypt archive --version
expect "pirec fleet " status start stop trial note
expect "pirec fleet start --" --broker --group --label --session --lead --timeout --json
expect "pirec re" record reload
absent "pirec re" config status
expect "pirec config " check get set defaults reference
expect "pirec record --" --config --label --wait --socket --output-dir --recorder-dir
expect "pirec status --" --json --socket --timeout
expect "pirec keys " new
expect "pirec decrypt --" --key --out
expect "pirec archive --" --out --level --threads --verify

# config keys: from the schema, with the file's own camera instance
printf '[session]\noutput_dir = %s/sessions\n\n[camera.front]\nsource = lavfi\n' "$tmp" >"$_pirec_conf"
expect "pirec config get $_pirec_conf sess" session.output_dir session.label session.remux_after
expect "pirec config get $_pirec_conf camera.front.f" camera.front.fps
expect "pirec config set $_pirec_conf session.label x re" remux.format remux.jobs
absent "pirec config set $_pirec_conf session.label " session.output_dir session.label
pirec config defaults | grep -q '^\[remux\]' || { echo "FAIL: pirec config defaults has no [remux]"; fail=1; }

# pirec-remux: session directories of [session] output_dir, and options with their values
mkdir -p "$tmp/sessions/20261122T031500Z_pilot" "$tmp/sessions/20261123T090000Z"
expect "pirec-remux " "$tmp/sessions/20261122T031500Z_pilot" "$tmp/sessions/20261123T090000Z"
expect "pirec-remux $tmp/sessions/2026112" "$tmp/sessions/20261122T031500Z_pilot"
expect "pirec-remux --format " mp4 mkv
expect "pirec-remux --clock d" device

# every option in each program's --help is offered after "--" (or "-")
for p in pirec-remux pirec-camera pirec-eyetracker pirec-notes pirec-audio pirec-eyesim pirec-web; do
	[ -x "$bin/$p" ] || continue # pirec-web: not built without libwebsockets
	opts=$("$bin/$p" --help | grep -oE '(^|[^[:alnum:]-])--?[[:alpha:]][[:alnum:]-]*' | grep -oE -- '--?[[:alpha:]][[:alnum:]-]*' | sort -u)
	for o in $opts; do
		complete_line "$p" "${o:0:2}"
		grep -qxF -- "$o" <<<"$got" || { echo "FAIL: $p: --help prints $o, completion does not offer it"; fail=1; }
	done
done

[ $fail = 0 ] && echo "completion: ok"
exit $fail
