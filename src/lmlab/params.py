"""Print ``conf/`` composed with its defaults as YAML: the content of ``params.yaml``.

    python -m lmlab.params > params.yaml      (what `make params` does)
"""

import sys

import yaml

from lmlab.config import build_config, compose


def render(overrides=()) -> str:
    raw = compose(list(overrides))
    build_config(raw)  # never write a params file that would not validate
    return yaml.safe_dump(raw, sort_keys=False)


if __name__ == "__main__":
    sys.stdout.write(render(sys.argv[1:]))
