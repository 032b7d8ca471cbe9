"""Write ``surgery/data/passes.json`` (the catalogue ``surgery passes`` reads) and ``docs/passes.md``.

    python scripts/build_pass_index.py          # rewrite both
    python scripts/build_pass_index.py --check  # exit 1 when either is out of date

Run it after adding or changing a pass; ``tests/surgery/test_catalog.py`` fails until you do.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def texts() -> dict[Path, str]:
    from surgery import catalog

    index = catalog.build()
    return {
        ROOT / "surgery" / "data" / "passes.json": json.dumps(index, indent=1, sort_keys=True)
        + "\n",
        ROOT / "docs" / "passes.md": catalog.render_markdown(index),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in texts().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            stale.append(path)
            if not args.check:
                path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print("out of date: " + ", ".join(str(p.relative_to(ROOT)) for p in stale), file=sys.stderr)
        return 1
    for path in stale:
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
