#!/usr/bin/env bash
# make image: the CPU image from the project's Dockerfile, with docker when an engine runs, else
# with buildah. When no registry for base images can be reached, the base is made here from
# Debian packages (mmdebstrap: python3.11 and venv, no pip beyond ensurepip's), and passed to the
# Dockerfile's PYTHON_IMAGE/RUNTIME_IMAGE. The host's pip configuration and CA bundle go into the
# build, so it works behind a proxy with its own certificate and takes torch from local wheels.
set -euo pipefail
cd "$(dirname "$0")/../.."
IMAGE=${IMAGE:-rnn-serve:latest}
BASE=${BASE_IMAGE:-localhost/rnn-serve-base:bookworm}
here=deploy/podman
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/$here/containers.conf}
export CONTAINERS_STORAGE_CONF=${CONTAINERS_STORAGE_CONF:-$PWD/$here/storage.conf}

if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    docker build -t "$IMAGE" "$@" .
    docker image ls "$IMAGE"
    exit 0
fi
for tool in buildah podman; do
    command -v "$tool" >/dev/null || { echo "make image needs docker, or buildah and podman (apt-get install buildah podman runc mmdebstrap)" >&2; exit 1; }
done

# The base: the official python image if a registry answers, else one made from Debian.
args=()
if ! podman image exists "$BASE"; then
    if timeout 20 podman pull -q docker.io/library/python:3.11-slim >/dev/null 2>&1; then
        BASE=docker.io/library/python:3.11-slim
    else
        command -v mmdebstrap >/dev/null || { echo "no registry answers and mmdebstrap is missing" >&2; exit 1; }
        tar=$(mktemp --suffix=.tar)
        trap 'rm -f "$tar"' EXIT
        # python3.11 and its venv (ensurepip brings pip into the venv); the links the
        # Dockerfile's runtime stage and python:3.11-slim users expect
        mmdebstrap --variant=minbase --include=python3.11,python3.11-venv,ca-certificates \
            --customize-hook='ln -sf /usr/bin/python3.11 "$1/usr/local/bin/python3.11"' \
            --customize-hook='ln -sf /usr/bin/python3.11 "$1/usr/bin/python"' \
            --customize-hook='ln -sf /usr/bin/python3.11 "$1/usr/local/bin/python"' \
            --customize-hook='rm -rf "$1/usr/share/doc" "$1/usr/share/man" "$1/var/cache/apt"/*.bin' \
            --format=tar bookworm "$tar" /etc/apt/sources.list.d/debian.sources
        podman import --change 'CMD ["python3.11"]' "$tar" "$BASE" >/dev/null
        echo "made the base $BASE from Debian bookworm (no registry answered)"
    fi
fi
args+=(--build-arg "PYTHON_IMAGE=$BASE" --build-arg "RUNTIME_IMAGE=$BASE")

# What pip uses on this host, inside the build: its configuration (find-links with the CPU
# torch wheel, extra indexes) merged into one file, the local folders it names, and the CA bundle
# its proxy needs.
pipconf=$(mktemp)
mapfile -t mounts < <(python3 - "$pipconf" <<'PY'
import configparser, os, pathlib, sys
merged = configparser.RawConfigParser()
for f in ("/etc/pip.conf", os.path.expanduser("~/.config/pip/pip.conf"),
          os.environ.get("PIP_CONFIG_FILE", "")):
    if f and os.path.isfile(f):
        merged.read(f)
with open(sys.argv[1], "w") as out:
    merged.write(out)
print(f"-v={sys.argv[1]}:/etc/pip.conf:ro")
folders = []
for section in merged.sections():
    for key in ("find-links", "extra-index-url", "index-url"):
        for value in merged.get(section, key, fallback="").split():
            path = pathlib.Path(value.removeprefix("file://"))
            if path.is_absolute() and path.exists():
                folders.append(str(path.parent if path.name == "simple" else path))
for folder in dict.fromkeys(folders):
    print(f"-v={folder}:{folder}:ro")
ca = "/etc/ssl/certs/ca-certificates.crt"
if os.path.isfile(ca):
    print(f"-v={ca}:{ca}:ro")
PY
)

buildah bud --isolation chroot --network host --layers=false --format docker -t "$IMAGE" \
    --build-arg TORCH_INDEX_URL=https://pypi.org/simple \
    "${args[@]}" "${mounts[@]}" "$@" .
rm -f "$pipconf"
size=$(podman image inspect "$IMAGE" --format '{{.Size}}')
echo "built $IMAGE: $((size / 1024 / 1024)) MiB"
