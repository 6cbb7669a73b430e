"""Who may use the web app, and which files each client may touch: sign-in credentials (never printed), the rule
that serving beyond this machine needs them, and per-user folders so that one user never sees another's runs."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cdvideo.data.files import file_stem, inside
from cdvideo.errors import CdvideoError

AUTH_ENV = "CDVIDEO_UI_AUTH"  # user:password, several separated by commas
MAX_FILE_SIZE = "200mb"  # per upload (Gradio's max_file_size)
MAX_VIDEO_SECONDS = 120  # a video subject longer than this is refused before it is decoded
MAX_VIDEO_SIDE = 4096  # pixels on the long side


def is_loopback(host: str) -> bool:
    """Whether `host` serves this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def parse_credentials(lines: list[str], where: str) -> list[tuple[str, str]]:
    """`user:password` entries -> pairs; an error names the source and line, never the password."""
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, sep, password = line.strip().partition(":")
        if not sep or not user or not password:
            raise CdvideoError(f"{where} entry {n}: expected user:password (a user name, a colon, a password)")
        check_user(user, f"{where} entry {n}")
        out.append((user, password))
    return out


def check_user(user: str, where: str) -> None:
    if not all(c.isalnum() or c in "-_." for c in user) or user.startswith("."):
        raise CdvideoError(f"{where}: user name {user!r}: use letters, digits and - _ .")


def credentials(auth: list[str], auth_file: str | None) -> list[tuple[str, str]]:
    """Every credential given by --auth, --auth-file and the CDVIDEO_UI_AUTH variable."""
    creds = parse_credentials(list(auth or []), "--auth")
    if auth_file:
        path = Path(auth_file).expanduser()
        if not path.is_file():
            raise CdvideoError(f"--auth-file {auth_file}: file not found")
        creds += parse_credentials(path.read_text().splitlines(), f"--auth-file {auth_file}")
    if os.environ.get(AUTH_ENV):
        creds += parse_credentials(os.environ[AUTH_ENV].split(","), AUTH_ENV)
    return creds


def check_serving(host: str, share: bool, creds: list, no_auth: bool) -> str | None:
    """Refuse to serve beyond loopback without sign-in; the warning to print when --no-auth says to anyway."""
    if is_loopback(host) and not share:
        return None
    where = "a public share link" if share else f"--host {host} (the network)"
    if creds:
        return None
    if not no_auth:
        raise CdvideoError(f"{where} needs sign-in: give --auth user:password, --auth-file FILE (one user:password a "
                           f"line) or {AUTH_ENV}=user:password; --no-auth serves without it")
    return f"warning: serving {where} with --no-auth: anyone who reaches it can train, render and read its files"


@dataclass(frozen=True)
class Client:
    """One caller: who owns its jobs, where its outputs go, which folders its pickers may read."""
    owner: str
    folder: Path
    readable: tuple[Path, ...]
    tab: str = ""  # the browser tab's id (a signed-in user's tabs share owner and folder)

    def readable_path(self, path: str, key: str) -> str:
        """`path` if it resolves (symlinks followed) inside a readable folder, else the one-line error."""
        return str(inside(path, list(self.readable), key))


class Access:
    """The app's root, the extra folders named with --allow-dir, and each signed-in user's folder inside root."""

    def __init__(self, root: Path, allow_dirs: list[str] = ()):
        self.root = Path(root)
        self.allow = tuple(Path(d).expanduser().resolve() for d in allow_dirs)
        for d in self.allow:
            if not d.is_dir():
                raise CdvideoError(f"--allow-dir {d}: not a folder")
        self._secret: bytes | None = None

    def client(self, tab: str, user: str | None) -> Client:
        """A signed-in user owns its jobs on every tab, in a folder of its own (its name has a secret part, so no
        other user can guess a download's path); without sign-in each tab owns its jobs, in the root."""
        if not user:
            return Client(tab or "anonymous", self.root, (self.root, *self.allow), tab)
        tag = hashlib.sha256(self.secret() + user.encode()).hexdigest()[:16]
        folder = self.root / "users" / f"{file_stem(user)}-{tag}"
        return Client(f"user:{user}", folder, (folder, *self.allow), tab)

    def secret(self) -> bytes:
        if self._secret is None:
            path = self.root / ".secret"
            if not path.is_file():
                self.root.mkdir(parents=True, exist_ok=True)
                try:
                    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                except FileExistsError:  # another request made it first
                    fd = None
                if fd is not None:
                    with os.fdopen(fd, "wb") as f:
                        f.write(secrets.token_bytes(32))
            self._secret = path.read_bytes()
        return self._secret
