"""python -m llava_star.methods [--flags]: the methods table (markdown), or every method flag."""
import argparse

from .table import flags, markdown


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m llava_star.methods", description=__doc__)
    p.add_argument("--flags", action="store_true",
                   help='print every method flag, one per line: "value FLAG" or "switch FLAG"')
    args = p.parse_args(argv)
    print("\n".join(flags()) if args.flags else markdown(), end="" if not args.flags else "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
