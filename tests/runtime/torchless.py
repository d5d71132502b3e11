"""Runs `vidsearch ARGS...` (or serves one API request), then says whether torch, torchvision or open_clip were
imported: `python torchless.py [--block] (cli ARGS... | api STORE MODEL QUERY)`.

--block makes those modules impossible to import, as in the core install.
The last line of output is JSON: {"rc": exit status, "imported": [training modules that were imported]}.
"""

import importlib.abc
import json
import sys

TRAINING = ("torch", "torchvision", "open_clip")


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in TRAINING:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def serve_one_request(store: str, model: str, query: str) -> int:
    import io
    from urllib.parse import urlencode
    from wsgiref.util import setup_testing_defaults

    from vidsearch.web.server import create_app

    app = create_app(store_dir=store, model=model)
    environ = {"PATH_INFO": "/api/search", "QUERY_STRING": urlencode({"q": query, "k": 3})}
    setup_testing_defaults(environ)
    environ["wsgi.input"] = io.BytesIO()
    status = []
    body = b"".join(app(environ, lambda code, headers, *_: status.append(code)))
    print(body.decode())
    return 0 if status[0].startswith("200") else 1


def main() -> None:
    args = sys.argv[1:]
    if args[0] == "--block":
        sys.meta_path.insert(0, Blocker())
        args = args[1:]
    if args[0] == "cli":
        from vidsearch.cli import main as cli

        rc = cli(args[1:])
    else:
        rc = serve_one_request(*args[1:])
    print(json.dumps({"rc": rc, "imported": sorted(m for m in TRAINING if m in sys.modules)}))


if __name__ == "__main__":
    main()
