"""Serves a folder of wheels on loopback for `docker build --network host`, so the build's pip reads
them with `--find-links` instead of the wheels travelling in the build context and a layer.

    python scripts/serve_wheelhouse.py FOLDER PORT_FILE [PORT]   # binds 127.0.0.1, writes the port

PORT is tried first (any free port when it is taken): the build's pip gets the address as a build
argument, and a build argument that changes misses Docker's layer cache, so a stable address keeps
an unchanged torch layer cached between builds.

http.server rather than a package: a directory listing is all pip's --find-links needs.
"""

from __future__ import annotations

import errno
import functools
import http.server
import os
import sys
from pathlib import Path


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass  # pip fetches every wheel once; a line per request would bury the build's output


def main() -> None:
    folder, port_file = Path(sys.argv[1]), Path(sys.argv[2])
    preferred = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    handler = functools.partial(QuietHandler, directory=str(folder))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", preferred), handler)
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    with server:
        partial = port_file.with_name(port_file.name + ".partial")
        partial.write_text(str(server.server_address[1]))
        os.replace(partial, port_file)  # the reader never sees a half-written port
        server.serve_forever()


if __name__ == "__main__":
    main()
