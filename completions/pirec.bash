# bash completion for pirec, pirec-remux, pirec-camera, pirec-eyetracker, pirec-notes, pirec-audio, pirec-eyesim, pirec-web
# Installed once per command name so bash-completion's on-demand loading finds it for each.
# Config keys come from the installed schema (`pirec config defaults`), so they never go stale;
# session directories come from [session] output_dir of /etc/pirec/pirec.conf.
# Works without the bash-completion package (plain compgen).

# Option tables: "--name" a flag, "--name=" takes a value, "=f" a file, "=d" a directory.
_pirec_opts_record="-c=f --config=f -l= --label= -w --wait --socket=f --output-dir=d --recorder-dir=d -h --help"
_pirec_opts_client="--json --label= --socket=f -c=f --timeout= -h --help"
_pirec_opts_fleet="-c=f --config=f --broker= --group= --label= --session= --lead= --timeout= --json -h --help"
_pirec_opts_keys="--out=f -h --help"
_pirec_opts_decrypt="--key=f --out=d -h --help"
_pirec_opts_archive="--out=f --level= --threads= --verify -h --help"
_pirec_opts_remux="--format= --clock= --cfr --write-timestamps --replace --allow-cut --dry-run --verify
 --timing=f --output=f --key=f -j= --jobs= --timeout= --json --progress-lines --live --join -h --help --version"
_pirec_opts_camera="--out=d --source= --size= --fps= --format= --name= --trial= --duration= --preset=
 --crf= --gop= --ring-ms= --rpicam-program=f --ffmpeg=f -c=f --config=f --protocol -h --help --version"
_pirec_opts_eyetracker="--address= --out=d --rtsp-port= --gaze-url= --world-url= --events-url=
 --no-gaze --no-world --no-events --trial= --duration= --reconnect-min= --reconnect-max= --json
 --protocol --name= -c=f --config=f -h --help --version"
_pirec_opts_notes="--protocol --name= -c=f --config=f -h --help --version"
_pirec_opts_audio="-D= --device= --rate= --channels= --format= --period-ms= --name= --trial= --duration= --out=d
 --protocol -c=f --config=f -h --help --version"
_pirec_opts_eyesim="--host= --http-port= --rtsp-port= --gaze-hz= --gaze-size= --fps= --size= --no-world
 --no-events --ffmpeg=f --loss= --malformed= --bad-sdp --chunked-status --disconnect-at=
 --disconnect-for= --drift-ppm= --sr-interval= --first-sr= --seed= --gaze-log=f --world-log=f
 --events-log=f --duration= --api-log=f --refuse-recording= --fail-events= --clock-offset= --echo-port=
 --no-time-echo --echo-silent -h --help --version"
_pirec_opts_web="-c=f --config=f --listen= --port= --socket=f --data-dir=d --static=d --token-file=f --url
 --hash-password -q --quiet -h --help --version"
_pirec_conf=${_pirec_conf:-/etc/pirec/pirec.conf}

# _pirec_complete_opts TABLE PREV CUR: completes an option or its value; returns 1 if PREV takes
# no value and CUR is not an option (the caller completes operands).
_pirec_complete_opts()
{
	local table=$1 prev=$2 cur=$3 o
	for o in $table; do
		case $o in
		"$prev=f") COMPREPLY=($(compgen -f -- "$cur")); return 0 ;;
		"$prev=d") COMPREPLY=($(compgen -d -- "$cur")); return 0 ;;
		"$prev=") _pirec_values "$prev" "$cur"; return 0 ;;
		esac
	done
	if [[ $cur == -* ]]; then
		local names=()
		for o in $table; do names+=("${o%%=*}"); done
		COMPREPLY=($(compgen -W "${names[*]}" -- "$cur"))
		return 0
	fi
	return 1
}

# Values of the options that take one of a few words.
_pirec_values()
{
	case $1 in
	--format) COMPREPLY=($(compgen -W "mp4 mkv mjpeg yuyv422 h264 yuv420" -- "$2")) ;;
	--clock) COMPREPLY=($(compgen -W "auto device mono wall" -- "$2")) ;;
	--source) COMPREPLY=($(compgen -W "lavfi:testsrc2 v4l2:/dev/video0 rpicam" -- "$2")) ;;
	--host) COMPREPLY=($(compgen -W "127.0.0.1 ::1" -- "$2")) ;;
	*) COMPREPLY=() ;;
	esac
}

# SECTION.KEY words for FILE: every key of the schema; instance sections ([camera.NAME],
# [gpio.NAME]) under the names FILE uses, and under the schema's example name.
_pirec_config_keys()
{
	local file=$1 defaults names
	defaults=$(pirec config defaults 2>/dev/null) || return
	names=$(sed -n 's/^\[\([a-z]*\.[A-Za-z0-9_-]*\)\].*/\1/p' "$file" 2>/dev/null)
	awk -v names="$names" '
		BEGIN { n = split(names, inst, "\n") }
		/^\[/ { sec = substr($0, 2, index($0, "]") - 2); next }
		/^[a-z_]+ =/ {
			key = $1
			if (index(sec, ".") == 0) { print sec "." key; next }
			kind = substr(sec, 1, index(sec, ".") - 1)
			print sec "." key
			for (i = 1; i <= n; i++)
				if (index(inst[i], kind ".") == 1 && inst[i] != sec) print inst[i] "." key
		}' <<<"$defaults" | sort -u
}

_pirec_config()
{
	local cur=$1 i=$2 sub=${COMP_WORDS[2]-}
	if (( i == 2 )); then
		COMPREPLY=($(compgen -W "check get set defaults reference --help" -- "$cur"))
	elif (( i == 3 )) && [[ $sub == check || $sub == get || $sub == set ]]; then
		COMPREPLY=($(compgen -f -- "$cur"))
	elif [[ $sub == get && i -eq 4 ]] || [[ $sub == set && $(( i % 2 )) -eq 0 ]]; then
		COMPREPLY=($(compgen -W "$(_pirec_config_keys "${COMP_WORDS[3]}")" -- "$cur"))
	fi
}

_pirec()
{
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} cmd=${COMP_WORDS[1]-}
	COMPREPLY=()
	if (( COMP_CWORD == 1 )); then
		COMPREPLY=($(compgen -W "config record status start stop trial note reload fleet keys decrypt archive -h --help --version" -- "$cur"))
		return
	fi
	case $cmd in
	config) _pirec_config "$cur" "$COMP_CWORD" ;;
	record) _pirec_complete_opts "$_pirec_opts_record" "$prev" "$cur" ;;
	status | start | stop | trial | note | reload) _pirec_complete_opts "$_pirec_opts_client" "$prev" "$cur" ;;
	fleet) _pirec_complete_opts "$_pirec_opts_fleet" "$prev" "$cur" ||
		{ ((COMP_CWORD == 2)) && COMPREPLY=($(compgen -W "status start stop trial note" -- "$cur")); } ;;
	keys) _pirec_complete_opts "$_pirec_opts_keys" "$prev" "$cur" || COMPREPLY=($(compgen -W "new" -- "$cur")) ;;
	decrypt) _pirec_complete_opts "$_pirec_opts_decrypt" "$prev" "$cur" || _pirec_sessions "$cur" ;;
	archive) _pirec_complete_opts "$_pirec_opts_archive" "$prev" "$cur" || _pirec_sessions "$cur" ;;
	esac
}

# Session directories: [session] output_dir's YYYYMMDDTHHMMSSZ[_LABEL] entries when nothing is
# typed yet (or a prefix of that directory), otherwise directories and videos under what is typed.
_pirec_sessions()
{
	local cur=$1 out
	out=$(pirec config get "$_pirec_conf" session.output_dir 2>/dev/null) || out=/var/lib/pirec/sessions
	if [[ -z $cur || ( $out/ == "$cur"* && $cur != "$out/"* ) ]]; then
		COMPREPLY=($(compgen -d -- "$out/") )
		[[ ${#COMPREPLY[@]} -gt 0 ]] && return
	fi
	local f
	COMPREPLY=($(compgen -d -- "$cur"))
	while IFS= read -r f; do
		case $f in *.mkv | *.h264 | *.mjpeg | *.mp4) COMPREPLY+=("$f") ;; esac
	done < <(compgen -f -- "$cur")
}

_pirec_remux()
{
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
	COMPREPLY=()
	_pirec_complete_opts "$_pirec_opts_remux" "$prev" "$cur" || _pirec_sessions "$cur"
}

# pirec-camera and the others: options, and a directory or file where one is expected.
_pirec_recorder()
{
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} table
	case ${1##*/} in
	pirec-camera) table=$_pirec_opts_camera ;;
	pirec-eyetracker) table=$_pirec_opts_eyetracker ;;
	pirec-notes) table=$_pirec_opts_notes ;;
	pirec-audio) table=$_pirec_opts_audio ;;
	pirec-web) table=$_pirec_opts_web ;;
	*) table=$_pirec_opts_eyesim ;;
	esac
	COMPREPLY=()
	_pirec_complete_opts "$table" "$prev" "$cur" || { [[ ${1##*/} == pirec-notes ]] && COMPREPLY=($(compgen -d -- "$cur")); }
}

complete -F _pirec pirec
complete -F _pirec_remux -o filenames pirec-remux
complete -F _pirec_recorder -o filenames pirec-camera pirec-eyetracker pirec-notes pirec-audio pirec-eyesim pirec-web
