"""`python -m bot.probe [/healthz|/readyz]`: exit 0 when the running bot answers 200.

For container and orchestrator health checks: reads the same settings as the bot (env,
.env) to find its HTTP port, needs no curl in the image and no third-party package."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from bot.settings import Settings

TIMEOUT_S = 5


def probe_url(settings: Settings, path: str) -> str:
    host = settings.http_listen
    if host in ("0.0.0.0", "::", ""):  # listening everywhere: ask over loopback
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.http_port}{path}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else "/healthz"
    settings = Settings()
    if not settings.http_port:
        print("TRAVELBOT_HTTP_PORT is not set: the bot serves no health endpoint", file=sys.stderr)
        return 2
    url = probe_url(settings, path)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            print(response.read().decode(errors="replace"))
            return 0
    except urllib.error.HTTPError as exc:  # 503 from /readyz: print why
        print(exc.read().decode(errors="replace"), file=sys.stderr)
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
