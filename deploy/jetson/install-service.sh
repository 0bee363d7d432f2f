#!/usr/bin/env bash
# deploy/jetson/install-service.sh — install the defectdet-inspect systemd service on the Jetson.
#
#   sudo deploy/jetson/install-service.sh --model /abs/path/model.int8.engine [--source URI]
#        [--user NAME] [--venv DIR] [--no-start]
#   sudo deploy/jetson/install-service.sh --uninstall
#   deploy/jetson/install-service.sh --root DIR ...     (stage the files under DIR; no systemctl)
#
# Writes (each file to a temp name, then renamed):
#   /etc/systemd/system/defectdet-inspect.service  from defectdet-inspect.service (@USER@, @GROUP@,
#                                                  @REPO@, @VENV@ filled in)
#   /etc/defectdet/defectdet.env                   from defectdet.env, only when missing; --model and
#                                                  --source update their lines in it
#   /etc/defectdet/inspect.yaml                    from configs/inspect.yaml, only when missing
# then `systemctl daemon-reload`, `enable` and (unless --no-start) `restart`. Re-running is safe:
# your edits of /etc/defectdet/* are kept. --uninstall stops, disables and removes the unit and
# keeps /etc/defectdet and /var/lib/defectdet (events and snapshots).
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true # bash 5.2: '&' in ${x//a/b} would mean the match

# shellcheck source=paths.sh
source "$(dirname "${BASH_SOURCE[0]}")/paths.sh"  # SCRIPT_DIR, REPO_ROOT, VENV
UNIT_NAME="defectdet-inspect.service"
DEST=""
RUN_USER="${SUDO_USER:-}"
MODEL=""
SOURCE=""
START=1
UNINSTALL=0

say() { printf 'install-service: %s\n' "$*"; }
warn() { printf 'install-service: warning: %s\n' "$*" >&2; }
die() { printf 'install-service: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

parse_args() {
    local given="$*"
    while (($#)); do
        case "$1" in
            --model | --source | --user | --venv | --root)
                [[ $# -ge 2 ]] || die "$1 needs a value"
                case "$1" in
                    --model) MODEL="$2" ;;
                    --source) SOURCE="$2" ;;
                    --user) RUN_USER="$2" ;;
                    --venv) VENV="$2" ;;
                    --root) DEST="$2" ;;
                esac
                shift ;;
            --no-start) START=0 ;;
            --uninstall) UNINSTALL=1 ;;
            -h | --help) usage; exit 0 ;;
            *) die "unknown option '$1' (see --help)" ;;
        esac
        shift
    done
    if [[ -z "$DEST" && "$(id -u)" -ne 0 ]]; then
        die "writing /etc/systemd/system needs root: sudo $0 $given"
    fi
    [[ -n "$RUN_USER" ]] || RUN_USER="$(stat -c %U "$REPO_ROOT")"
}

# A value that goes into the unit file: no whitespace (ExecStart splits there), no % (a systemd specifier).
unit_safe() {
    [[ "$2" =~ ^[^[:space:]%\"\'\\]+$ ]] || die "$1 '$2' contains a space, %, quote or backslash; the unit file cannot hold it (move it to a plain path)"
}

# A value that goes into the env file between double quotes (read by systemd and by bash).
env_safe() {
    [[ "$2" != *[\"\\\$\`]* && "$2" != *$'\n'* ]] || die "$1 '$2' contains a quote, backslash, \$ or backtick; the env file cannot hold it"
}

# Write stdin to $1 via a temp file in the same folder, then rename (never half a file).
write_file() {
    local target="$1" mode="$2" tmp
    mkdir -p "$(dirname "$target")"
    tmp="$(mktemp "$(dirname "$target")/.$(basename "$target").XXXXXX")"
    if ! cat >"$tmp" || ! chmod "$mode" "$tmp" || ! mv -f "$tmp" "$target"; then
        rm -f "$tmp"
        die "cannot write $target"
    fi
}

render_unit() {
    local group text
    id -u "$RUN_USER" >/dev/null 2>&1 || die "user '$RUN_USER' does not exist (pass --user NAME: the user that ran setup.sh)"
    group="$(id -gn "$RUN_USER")"
    [[ -x "$VENV/bin/defectdet" ]] || die "$VENV/bin/defectdet not found: run deploy/jetson/setup.sh first (or pass --venv DIR)"
    unit_safe "repository path" "$REPO_ROOT"
    unit_safe "venv path" "$VENV"
    unit_safe "user" "$RUN_USER"
    text="$(<"$SCRIPT_DIR/$UNIT_NAME")"
    text="${text//@USER@/$RUN_USER}"
    text="${text//@GROUP@/$group}"
    text="${text//@REPO@/$REPO_ROOT}"
    text="${text//@VENV@/$VENV}"
    [[ "$text" != *@[A-Z]*@* ]] || die "$SCRIPT_DIR/$UNIT_NAME: a placeholder was left unfilled"
    printf '%s\n' "$text" | write_file "$DEST/etc/systemd/system/$UNIT_NAME" 0644
    say "unit: $DEST/etc/systemd/system/$UNIT_NAME (User=$RUN_USER, ExecStart=$VENV/bin/defectdet inspect ...)"
}

# Replace the KEY="..." line of the env file (kept: every other line, your comments and edits).
set_env_value() {
    local file="$1" key="$2" value="$3" line out=""
    env_safe "$key" "$value"
    grep -q "^$key=" "$file" || die "$file has no $key= line; restore it from $SCRIPT_DIR/defectdet.env"
    while IFS= read -r line || [[ -n "$line" ]]; do
        if [[ "$line" == "$key="* ]]; then
            line="$key=\"$value\""
        fi
        out+="$line"$'\n'
    done <"$file"
    printf '%s' "$out" | write_file "$file" 0640
}

install_settings() {
    local etc="$DEST/etc/defectdet"
    if [[ -f "$etc/defectdet.env" ]]; then
        say "settings: $etc/defectdet.env exists - kept"
    else
        write_file "$etc/defectdet.env" 0640 <"$SCRIPT_DIR/defectdet.env"
        say "settings: $etc/defectdet.env (edit it, then: sudo systemctl restart ${UNIT_NAME%.service})"
    fi
    if [[ -n "$MODEL" ]]; then
        MODEL="$(realpath -m "$MODEL")"
        set_env_value "$etc/defectdet.env" DEFECTDET_MODEL "$MODEL"
    fi
    [[ -z "$SOURCE" ]] || set_env_value "$etc/defectdet.env" DEFECTDET_SOURCE "$SOURCE"
    if [[ -f "$etc/inspect.yaml" ]]; then
        say "settings: $etc/inspect.yaml exists - kept"
    else
        write_file "$etc/inspect.yaml" 0644 <"$REPO_ROOT/configs/inspect.yaml"
        say "settings: $etc/inspect.yaml (thresholds, ROI, snapshots, reject outputs)"
    fi
}

# Read the env file as the service will and say what would make the service fail at once.
check_settings() {
    local env="$DEST/etc/defectdet/defectdet.env" key
    local DEFECTDET_MODEL="" DEFECTDET_SOURCE="" DEFECTDET_OUT="" DEFECTDET_CONFIG="" DEFECTDET_ARGS=""
    # shellcheck disable=SC1090  # the env file is ours (KEY="value" lines)
    . "$env" || die "$env: cannot be read as KEY=\"value\" lines"
    for key in DEFECTDET_MODEL DEFECTDET_SOURCE DEFECTDET_OUT DEFECTDET_CONFIG; do
        [[ -n "${!key}" ]] || die "$env: $key is empty; every variable but DEFECTDET_ARGS needs a value"
    done
    [[ -n "$DEST" || -f "$DEFECTDET_MODEL" ]] ||
        warn "$DEFECTDET_MODEL (DEFECTDET_MODEL) does not exist yet: build it with deploy/jetson/build_engine.sh, or pass --model"
    local sidecar="${DEFECTDET_MODEL%.*}.json"
    [[ -n "$DEST" || -f "$sidecar" ]] || warn "$sidecar (the model's metadata) is missing beside the model"
    say "service will run: defectdet inspect --model $DEFECTDET_MODEL --source $DEFECTDET_SOURCE --out $DEFECTDET_OUT --config $DEFECTDET_CONFIG $DEFECTDET_ARGS"
}

start_service() {
    [[ -z "$DEST" ]] || { say "staged under $DEST (--root): systemctl not run"; return; }
    systemctl daemon-reload
    systemctl enable "$UNIT_NAME"
    if ((START)); then
        systemctl restart "$UNIT_NAME"
        say "started. Follow it with: journalctl -u ${UNIT_NAME%.service} -f"
    else
        say "enabled (starts at boot); start now with: sudo systemctl start ${UNIT_NAME%.service}"
    fi
}

uninstall() {
    local unit="$DEST/etc/systemd/system/$UNIT_NAME"
    if [[ -z "$DEST" ]]; then
        systemctl disable --now "$UNIT_NAME" 2>/dev/null || true
    fi
    rm -f "$unit"
    [[ -n "$DEST" ]] || systemctl daemon-reload
    say "removed $unit; kept $DEST/etc/defectdet (settings) and /var/lib/defectdet (events, snapshots)"
}

main() {
    parse_args "$@"
    if ((UNINSTALL)); then
        uninstall
        return
    fi
    render_unit
    install_settings
    check_settings
    start_service
}

# Run unless sourced (tests and debugging source the functions).
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
