"""Docker HEALTHCHECK: exit 0 when the server's probe (argv[1], default /readyz) answers 200.

Probes need no token. Standard library only, so it costs a few MB for a moment, not an import of the app.
"""

import os
import sys
import urllib.error
import urllib.request

path = sys.argv[1] if len(sys.argv) > 1 else "/readyz"
url = f"http://127.0.0.1:{os.environ.get('STEADYFRAME_PORT', '7860')}{path}"
try:
    with urllib.request.urlopen(url, timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except (urllib.error.URLError, OSError) as exc:
    print(f"{url}: {exc}", file=sys.stderr)
    sys.exit(1)
